//! Finding the CGI program for a URL: `/cgi-bin/a/tool.py/x/y` walks
//! `cgi-bin/a/tool.py` segment by segment (`gateway::script`: beneath the
//! CGI directory, no symlink out of it); the first regular file is the
//! script, the rest is `PATH_INFO`.
//!
//! Missing → 404; a directory, a file that is not executable, or a path
//! that resolves (through a symlink) outside the CGI directory → 403.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::FollowSymlinks;
use crate::error::Error;
use crate::gateway::script::{self, WalkError, Walked};
use crate::static_files::resolve::OpenError;
use crate::uri_path::{join_url, PathError};

/// The program a request runs, and how its URL splits around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiTarget {
    /// Canonical path of the program.
    pub program: PathBuf,
    /// Decoded URL path of the program (`/cgi-bin/a/tool.py`).
    pub script_name: String,
    /// Decoded path after the program (`/x/y`), or empty.
    pub path_info: String,
    /// The file name starts with `nph-`: its output is the raw HTTP response.
    pub nph: bool,
}

impl From<PathError> for Error {
    fn from(e: PathError) -> Error {
        match e {
            PathError::BadRequest(why) => Error::BadRequest(format!("bad request path: {why}")),
            PathError::Forbidden(why) => Error::Forbidden(format!("refused request path: {why}")),
            PathError::Hidden => Error::NotFound,
        }
    }
}

/// Resolve `rest` (the decoded segments after the CGI prefix) inside
/// `canonical_dir`. `trailing_slash`: the URL ended in `/`.
pub fn resolve(
    prefix: &str,
    rest: &[String],
    trailing_slash: bool,
    canonical_dir: &Path,
) -> Result<CgiTarget, Error> {
    let named = || canonical_dir.join(join_url(rest).trim_start_matches('/'));
    let scripts = script::scripts_in(canonical_dir, FollowSymlinks::No)
        .map_err(|e| Error::Internal(format!("open {}: {e}", canonical_dir.display())))?;
    let (found, i) = match script::walk(&scripts, rest) {
        Ok(Walked::Script { found, at }) => (found, at),
        Ok(Walked::Dir(_)) => {
            return Err(Error::Forbidden(format!(
                "{} is a directory",
                named().display()
            )))
        }
        Err(WalkError::NotRegular(rel)) => {
            return Err(Error::Forbidden(format!(
                "{} is not a regular file",
                canonical_dir.join(rel).display()
            )))
        }
        Err(WalkError::Open(OpenError::LeadsOut)) => {
            return Err(Error::Forbidden(format!(
                "{} leads outside the CGI directory",
                named().display()
            )))
        }
        Err(WalkError::Open(OpenError::Refused(e))) => return Err(e),
    };
    let program = script::opened_path(&found)
        .map_err(|e| Error::Internal(format!("path of {}: {e}", found.rel.display())))?;
    if !program.starts_with(canonical_dir) {
        return Err(Error::Forbidden(format!(
            "{} leads outside the CGI directory",
            named().display()
        )));
    }
    if found.meta.permissions().mode() & 0o111 == 0 {
        return Err(Error::Forbidden(format!(
            "{} is not executable",
            program.display()
        )));
    }
    let mut path_info = join_url(&rest[i + 1..]);
    if trailing_slash {
        path_info.push('/');
    }
    Ok(CgiTarget {
        program,
        script_name: format!("{}{}", prefix.trim_end_matches('/'), join_url(&rest[..=i])),
        path_info,
        nph: rest[i].starts_with("nph-"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir_all(root.join("sub/deeper")).unwrap();
        for (p, mode) in [
            ("tool.py", 0o755),
            ("sub/deeper/x.sh", 0o755),
            ("plain.txt", 0o644),
        ] {
            fs::write(root.join(p), "#!/bin/sh\n").unwrap();
            fs::set_permissions(root.join(p), fs::Permissions::from_mode(mode)).unwrap();
        }
        std::os::unix::fs::symlink("/bin/sh", root.join("escape")).unwrap();
        (dir, root)
    }

    fn resolve_raw(prefix: &str, raw: &str, root: &Path) -> Result<CgiTarget, Error> {
        let p = crate::uri_path::SafePath::parse(if raw.is_empty() { "/" } else { raw })?;
        resolve(prefix, &p.segments, p.trailing_slash, root)
    }

    #[test]
    fn splits_script_and_path_info() {
        let (_d, root) = setup();
        let t = resolve_raw("/cgi-bin", "/tool.py/a/b", &root).unwrap();
        assert_eq!(t.script_name, "/cgi-bin/tool.py");
        assert_eq!(t.path_info, "/a/b");
        let t = resolve_raw("/cgi-bin", "/sub/deeper/x.sh", &root).unwrap();
        assert_eq!(t.script_name, "/cgi-bin/sub/deeper/x.sh");
        assert_eq!(t.path_info, "");
        let t = resolve_raw("/cgi-bin", "/tool.py/a%20b/", &root).unwrap();
        assert_eq!(t.path_info, "/a b/");
    }

    #[test]
    fn refuses_what_it_must() {
        let (_d, root) = setup();
        let status = |r: &str| {
            resolve_raw("/cgi-bin", r, &root)
                .unwrap_err()
                .status()
                .as_u16()
        };
        assert_eq!(status("/missing"), 404);
        assert_eq!(status("/sub"), 403);
        assert_eq!(status("/sub/"), 403);
        assert_eq!(status(""), 403);
        assert_eq!(status("/plain.txt"), 403);
        assert_eq!(status("/escape"), 403);
        assert_eq!(status("/sub/%2e%2e/tool.py"), 403);
        assert_eq!(status("/.hidden"), 404);
    }
}
