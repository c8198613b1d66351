//! Which script a `*.EXT` FastCGI route runs: the URL is walked segment by
//! segment under the document root (`gateway::script`: beneath the root,
//! symlinks out of it as `follow_symlinks` says); the first regular file
//! must have the route's extension, and the rest of the path is
//! `PATH_INFO`.
//!
//! This is what keeps `/uploads/x.jpg/y.php` away from PHP (the first file,
//! `x.jpg`, is not a `.php`; CVE-2019-11043 and the `cgi.fix_pathinfo`
//! class), and a script that does not exist is a 404 from the static
//! handler, never a request to the backend. The split is on decoded bytes,
//! case-sensitive: no Unicode case folding that could shift offsets.

use std::path::{Path, PathBuf};

use crate::config::FollowSymlinks;
use crate::gateway::script::{self, WalkError, Walked};
use crate::static_files::resolve::OpenError;
use crate::static_files::StaticFiles;
use crate::uri_path::{join_url, SafePath};

/// Where scripts are looked up: the site's root or an `[[alias]]` dir.
pub struct ScriptDir<'a> {
    /// Canonical directory.
    pub dir: &'a Path,
    /// The URL prefix it is served at (`""` for the root, `/phpmyadmin`).
    pub url_prefix: &'a str,
    /// Directory index names, in order.
    pub index: &'a [String],
    pub follow: FollowSymlinks,
    /// The static files of `dir`, whose open-file cache answers for a
    /// script that is a whole path (`/blog/index.php`, no `PATH_INFO`).
    pub files: Option<&'a StaticFiles>,
}

/// A script under the root and how the URL splits around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptTarget {
    /// Index of the route (extension) that matched.
    pub route: usize,
    /// `/blog/index.php`
    pub script_name: String,
    /// `/extra` or empty
    pub path_info: String,
    /// root + script_name
    pub filename: PathBuf,
}

/// Find the script for `path` (relative to `at`) among `extensions`
/// (route order), or `None` when this is not a FastCGI script request.
pub fn find(at: &ScriptDir, path: &SafePath, extensions: &[&str]) -> Option<ScriptTarget> {
    if !could_be_script(path, extensions) {
        return None;
    }
    if let Some(target) = cached(at, path, extensions) {
        return Some(target);
    }
    let scripts = script::scripts_in(at.dir, at.follow).ok()?;
    let rel = match script::walk(&scripts, &path.segments).ok()? {
        Walked::Script { found, at: i } => {
            let route = extensions
                .iter()
                .position(|ext| has_extension(&path.segments[i], ext))?;
            let mut path_info = join_url(&path.segments[i + 1..]);
            if path.trailing_slash {
                path_info.push('/');
            }
            return Some(ScriptTarget {
                route,
                script_name: format!("{}{}", at.url_prefix, join_url(&path.segments[..=i])),
                path_info,
                filename: at.dir.join(found.rel),
            });
        }
        Walked::Dir(rel) => rel,
    };
    // A directory: `/dir/` tries the index names in order, and the first
    // that exists decides (a script, or a static file: None); `/dir` is
    // left to the static handler's redirect.
    if !path.trailing_slash && !path.segments.is_empty() {
        return None;
    }
    let (index, found) = at.index.iter().find_map(|name| {
        match script::open_file(&scripts, &rel.join(name)) {
            Ok(found) => Some(Some((name, found))),
            // It exists, but leads where it may not: it decides, as nothing.
            Err(WalkError::Open(OpenError::LeadsOut)) => Some(None),
            Err(_) => None,
        }
    })??;
    let route = extensions
        .iter()
        .position(|ext| has_extension(index, ext))?;
    Some(ScriptTarget {
        route,
        script_name: format!("{}{}/{index}", at.url_prefix, join_url(&path.segments)),
        path_info: String::new(),
        filename: at.dir.join(found.rel),
    })
}

/// A script that is the whole of `path`, from the open-file cache: when
/// the whole path is a regular file, every segment before it is a
/// directory, so the walk would stop at the last one too. The static
/// resolver is the stricter (dot-files hidden), so what it finds the walk
/// finds; whatever it does not (a `PATH_INFO`, a symlink, a hidden name)
/// is left to the walk.
fn cached(at: &ScriptDir, path: &SafePath, extensions: &[&str]) -> Option<ScriptTarget> {
    let last = path.segments.last().filter(|_| !path.trailing_slash)?;
    let route = extensions.iter().position(|ext| has_extension(last, ext))?;
    let rel = at.files?.cached_file(path)?;
    Some(ScriptTarget {
        route,
        script_name: format!("{}{}", at.url_prefix, join_url(&path.segments)),
        path_info: String::new(),
        filename: at.dir.join(rel),
    })
}

/// Whether `find` could find a script for `path` at all: some segment has
/// a route's extension (the walk only takes a first file with one), or the
/// path names a directory whose index may be a script. Most requests on a
/// PHP site are for images, styles and scripts of the browser's: this
/// answers them without a system call, as nginx's `location ~ \.php$`
/// does, where the walk would open the root and stat the file each time.
fn could_be_script(path: &SafePath, extensions: &[&str]) -> bool {
    path.trailing_slash
        || path.segments.is_empty()
        || path
            .segments
            .iter()
            .any(|seg| extensions.iter().any(|ext| has_extension(seg, ext)))
}

/// `name` is a file name with the extension `ext` (and something before it).
pub fn has_extension(name: &str, ext: &str) -> bool {
    name.len() > ext.len() + 1
        && name.ends_with(ext)
        && name.as_bytes()[name.len() - ext.len() - 1] == b'.'
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn splits_at_the_first_file_and_refuses_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir_all(root.join("blog")).unwrap();
        fs::create_dir_all(root.join("uploads")).unwrap();
        fs::write(root.join("blog/index.php"), "<?php").unwrap();
        fs::write(root.join("uploads/x.jpg"), "jpeg").unwrap();
        fs::write(root.join("a.php"), "<?php").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("evil.php")).unwrap();
        let index = ["index.html".to_string(), "index.php".to_string()];
        let at = ScriptDir {
            dir: &root,
            url_prefix: "",
            index: &index,
            follow: FollowSymlinks::No,
            files: None,
        };
        let find = |p: &str| find(&at, &SafePath::parse(p).unwrap(), &["php"]);

        let t = find("/blog/index.php/extra/x").unwrap();
        assert_eq!(
            (t.script_name.as_str(), t.path_info.as_str()),
            ("/blog/index.php", "/extra/x")
        );
        assert_eq!(t.filename, root.join("blog/index.php"));
        let t = find("/blog/").unwrap();
        assert_eq!(
            (t.script_name.as_str(), t.path_info.as_str()),
            ("/blog/index.php", "")
        );
        assert_eq!(find("/blog"), None, "left to the static redirect");
        assert_eq!(find("/uploads/x.jpg/y.php"), None);
        assert_eq!(find("/missing.php"), None);
        assert_eq!(find("/evil.php"), None, "symlink out of the root");
        assert_eq!(find("/a.php").unwrap().path_info, "");
        assert_eq!(find("/A.PHP"), None);
        // A directory named like a script is walked into.
        fs::create_dir_all(root.join("lib.php")).unwrap();
        fs::write(root.join("lib.php/x.txt"), "x").unwrap();
        assert_eq!(find("/lib.php/x.txt"), None);
        assert!(!could_be_script(
            &SafePath::parse("/img/logo.png").unwrap(),
            &["php"]
        ));
        assert!(could_be_script(
            &SafePath::parse("/lib.php/x.txt").unwrap(),
            &["php"]
        ));
        assert!(could_be_script(
            &SafePath::parse("/blog/").unwrap(),
            &["php"]
        ));
        assert!(could_be_script(&SafePath::parse("/").unwrap(), &["php"]));
        assert!(!has_extension(".php", "php"));
        assert!(!has_extension("xphp", "php"));
    }
}
