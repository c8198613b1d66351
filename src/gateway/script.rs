//! The one script lookup for CGI and FastCGI: a URL path walked segment
//! by segment under a directory through the static resolver
//! (`static_files::resolve`: `openat2(RESOLVE_BENEATH)`, symlinks only
//! where `follow_symlinks` lets them lead) — one path-safety model for
//! every file a request names. The first segment that is not a directory
//! is the script; the rest of the path is `PATH_INFO`.
//!
//! Each step is opened (`O_PATH`: nothing is read, no read permission is
//! needed) and `fstat`ed, so what is checked — a regular file, its mode,
//! where it really is — is the file that was opened, not what a second
//! lookup of the same path finds after a rename.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::config::FollowSymlinks;
use crate::error::Error;
use crate::static_files::resolve::{Access, Found, OpenError, Resolver};

/// Where a walk ended.
pub enum Walked {
    /// The first segment that is not a directory: a regular file, the
    /// segment at index `at`.
    Script { found: Found, at: usize },
    /// Every segment is a directory (or there is none): this one.
    Dir(PathBuf),
}

/// Why a walk found no script.
#[derive(Debug)]
pub enum WalkError {
    /// Missing, refused, or leading out of the directory.
    Open(OpenError),
    /// Not a regular file (a FIFO, a socket, a device).
    NotRegular(PathBuf),
}

/// A resolver for the scripts under `dir` (canonical): only `follow`
/// decides where a symlink may lead; nothing in it is hidden.
pub fn scripts_in(dir: &Path, follow: FollowSymlinks) -> io::Result<Resolver> {
    Resolver::new(dir.to_path_buf(), None, Vec::new(), follow)
}

/// Walk `segments` (decoded, plain names) under `resolver`'s root.
pub fn walk(resolver: &Resolver, segments: &[String]) -> Result<Walked, WalkError> {
    let mut rel = PathBuf::new();
    for (at, seg) in segments.iter().enumerate() {
        if seg.contains('/') {
            // An encoded slash kept in a segment: no file has that name.
            return Err(WalkError::Open(Error::NotFound.into()));
        }
        rel.push(seg);
        let found = resolver
            .open_as(&rel, Access::Look)
            .map_err(WalkError::Open)?;
        if found.meta.is_dir() {
            continue;
        }
        if !found.meta.is_file() {
            return Err(WalkError::NotRegular(rel));
        }
        return Ok(Walked::Script { found, at });
    }
    Ok(Walked::Dir(rel))
}

/// Open `rel` (an index name in a directory the walk ended in) the same
/// way: a regular file, or why not.
pub fn open_file(resolver: &Resolver, rel: &Path) -> Result<Found, WalkError> {
    let found = resolver
        .open_as(rel, Access::Look)
        .map_err(WalkError::Open)?;
    if !found.meta.is_file() {
        return Err(WalkError::NotRegular(rel.to_path_buf()));
    }
    Ok(found)
}

/// Where the opened file really is (its canonical path when it was
/// opened, as the kernel has it: no second lookup by name).
pub fn opened_path(found: &Found) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", found.file.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn segs(path: &str) -> Vec<String> {
        path.split('/')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    #[test]
    fn one_walk_for_both_with_the_symlink_policy() {
        let tmp = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(tmp.path()).unwrap();
        let root = base.join("root");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/s.php"), "x").unwrap();
        fs::write(base.join("outside.php"), "x").unwrap();
        symlink("a/b/s.php", root.join("inner.php")).unwrap();
        symlink(base.join("outside.php"), root.join("out.php")).unwrap();
        let fifo = std::ffi::CString::new(root.join("fifo").into_os_string().into_encoded_bytes())
            .unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);

        let no = scripts_in(&root, FollowSymlinks::No).unwrap();
        let Ok(Walked::Script { found, at }) = walk(&no, &segs("/a/b/s.php/x/y")) else {
            panic!("a script");
        };
        assert_eq!((at, found.rel.as_path()), (2, Path::new("a/b/s.php")));
        assert!(matches!(walk(&no, &segs("/a/b")), Ok(Walked::Dir(d)) if d == Path::new("a/b")));
        assert!(matches!(
            walk(&no, &segs("/fifo")),
            Err(WalkError::NotRegular(_))
        ));
        assert!(matches!(
            walk(&no, &segs("/out.php")),
            Err(WalkError::Open(OpenError::LeadsOut))
        ));
        assert!(matches!(
            walk(&no, &["a/b".to_string(), "s.php".to_string()]),
            Err(WalkError::Open(OpenError::Refused(Error::NotFound)))
        ));
        // A symlink inside: the opened file's real path is the target's.
        let Ok(Walked::Script { found, .. }) = walk(&no, &segs("/inner.php")) else {
            panic!("a script through an inner symlink");
        };
        assert_eq!(opened_path(&found).unwrap(), root.join("a/b/s.php"));
        // `follow_symlinks = true` lets it out.
        let yes = scripts_in(&root, FollowSymlinks::Yes).unwrap();
        let Ok(Walked::Script { found, .. }) = walk(&yes, &segs("/out.php")) else {
            panic!("allowed out");
        };
        assert_eq!(opened_path(&found).unwrap(), base.join("outside.php"));
    }
}
