//! Path → open file: the one place a request path meets the filesystem.
//! Nothing outside the document root, nothing inside the CGI directory, no
//! dot-file and nothing but regular files (and directories, for their
//! `index.html`) ever comes back from here.
//!
//! How, in order:
//! 1. the router already refused `..`, encoded separators, NUL, dot-files
//!    (`uri_path::SafePath`), so the path is a list of plain names;
//! 2. fast path: `openat2(root_fd, rel, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//!    — the kernel refuses to leave the root or follow any symlink, and the
//!    lexical path is then the real one, so the CGI-directory check is a
//!    prefix test. One syscall instead of a `realpath` walk per request;
//! 3. a path with a symlink in it (`ELOOP`), or a kernel without `openat2`,
//!    takes the slow path: canonicalize, check the canonical path is under
//!    the root, not under the CGI directory and free of dot components,
//!    then open exactly that path (still beneath the root fd, with no
//!    symlinks, so a symlink swapped in meanwhile cannot lead out).
//!
//! Files are opened `O_NONBLOCK` so that a FIFO in the root cannot block a
//! worker in `open`; anything not regular is then refused after `fstat`.
//!
//! [`Found::direct`] says which path found a file: only files the fast path
//! opened (no symlink anywhere on the way, so the request path is the real
//! path) may go into the open-file cache (`cache.rs`).

use std::ffi::CString;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::FollowSymlinks;
use crate::error::Error;
use crate::uri_path::SafePath;

/// Flags for every file we open for reading.
const OPEN_FLAGS: libc::c_int = libc::O_NONBLOCK | libc::O_NOCTTY;

/// What a lookup opens a file for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// To read it (a static file).
    Read,
    /// Only to look at it (`O_PATH`: a script to run, or a directory on
    /// the way to it — no read permission needed, nothing is read).
    Look,
}

impl Access {
    fn flags(self) -> libc::c_int {
        match self {
            Access::Read => OPEN_FLAGS,
            Access::Look => libc::O_PATH,
        }
    }
}

/// Why [`Resolver::open_as`] opened nothing.
#[derive(Debug)]
pub enum OpenError {
    /// The path leads (through a symlink) out of the root, and the
    /// `follow_symlinks` policy does not allow it.
    LeadsOut,
    Refused(Error),
}

impl From<Error> for OpenError {
    fn from(e: Error) -> OpenError {
        OpenError::Refused(e)
    }
}

impl From<OpenError> for Error {
    fn from(e: OpenError) -> Error {
        match e {
            OpenError::LeadsOut => Error::NotFound,
            OpenError::Refused(e) => e,
        }
    }
}

/// An open file and what `fstat` said about it.
pub struct Found {
    /// Shared by every response that sends from it: all reads give their
    /// offset (`pread`, `sendfile` with an offset), none moves the file
    /// position.
    pub file: Arc<File>,
    pub meta: Metadata,
    /// The path below the root as requested (its extension names the type).
    pub rel: PathBuf,
    /// Opened by the fast path: no symlink on the way, `rel` is the real
    /// path below the root.
    pub direct: bool,
}

// Built once per request and unpacked at once: boxing `Found` would only
// add an allocation to the hot path.
#[allow(clippy::large_enum_variant)]
pub enum Resolved {
    File(Found),
    /// A directory asked for without its trailing slash.
    AddSlash,
}

pub struct Resolver {
    /// Canonical document root.
    root: PathBuf,
    /// The root, opened once: every lookup is relative to this fd.
    root_dir: Arc<File>,
    /// Canonical CGI directory, never served as files.
    hidden: Option<PathBuf>,
    /// The CGI directory relative to the root, when it lies inside it.
    hidden_rel: Option<PathBuf>,
    /// Cleared once `openat2` turned out to be missing, so we stop trying.
    has_openat2: AtomicBool,
    /// What `/dir/` serves: the first of these that exists.
    index: Vec<String>,
    /// Whether a symlink may lead out of the root.
    follow: FollowSymlinks,
}

impl Resolver {
    /// `root` and `hidden` must be canonical.
    pub fn new(
        root: PathBuf,
        hidden: Option<PathBuf>,
        index: Vec<String>,
        follow: FollowSymlinks,
    ) -> io::Result<Resolver> {
        let root_dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&root)?;
        let hidden_rel = hidden
            .as_ref()
            .and_then(|h| h.strip_prefix(&root).ok())
            .map(Path::to_path_buf);
        Ok(Resolver {
            root,
            root_dir: Arc::new(root_dir),
            hidden,
            hidden_rel,
            has_openat2: AtomicBool::new(true),
            index,
            follow,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The root directory (an `O_PATH` descriptor) every lookup starts from.
    pub fn root_dir(&self) -> &Arc<File> {
        &self.root_dir
    }

    /// The file a request path names: the file itself, or the first index
    /// name that exists for `/dir/`; `/dir` asks for a redirect.
    pub fn resolve(&self, path: &SafePath) -> Result<Resolved, Error> {
        if path.has_encoded_slash() {
            return Err(Error::NotFound);
        }
        let rel: PathBuf = path.segments.iter().collect();
        let found = self.open(&rel)?;
        if found.meta.is_file() {
            if path.trailing_slash {
                return Err(Error::NotFound);
            }
            return Ok(Resolved::File(found));
        }
        if !found.meta.is_dir() {
            return Err(Error::NotFound); // FIFO, socket, device
        }
        if !path.trailing_slash && !path.segments.is_empty() {
            return Ok(Resolved::AddSlash);
        }
        for name in &self.index {
            match self.open(&rel.join(name)) {
                Ok(index) if index.meta.is_file() => return Ok(Resolved::File(index)),
                Ok(_) | Err(Error::NotFound) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::NoIndex(format!(
            "{}: no index file (listings are off)",
            self.root.join(&rel).display()
        )))
    }

    /// `FILE.ext` beside `of`, if it is a regular file under the same rules
    /// and not older than `of` (a stale `.gz` must not hide an edit).
    pub fn sibling(&self, of: &Found, ext: &str) -> Option<Found> {
        let mut name = of.rel.clone().into_os_string();
        name.push(".");
        name.push(ext);
        let sib = self.open(Path::new(&name)).ok()?;
        let fresh = match (sib.meta.modified(), of.meta.modified()) {
            (Ok(s), Ok(o)) => s >= o,
            _ => true,
        };
        (sib.meta.is_file() && fresh).then_some(sib)
    }

    /// Open `rel` (below the root) for reading, or say why not.
    fn open(&self, rel: &Path) -> Result<Found, Error> {
        self.open_as(rel, Access::Read).map_err(Error::from)
    }

    /// Open `rel` (below the root, plain names only) under this
    /// resolver's rules, for `access`, or say why not.
    pub fn open_as(&self, rel: &Path, access: Access) -> Result<Found, OpenError> {
        let (file, direct) = match self.openat2_beneath(rel, access) {
            Ok(_) if self.hidden_lexically(rel) => return Err(Error::NotFound.into()),
            Ok(file) => (file, true),
            Err(e) if needs_slow_path(&e) => (self.open_canonical(rel, access)?, false),
            Err(e) => return Err(io_error(e, rel).into()),
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::Internal(format!("fstat {}: {e}", rel.display())))?;
        Ok(Found {
            file: Arc::new(file),
            meta,
            rel: rel.to_path_buf(),
            direct,
        })
    }

    fn hidden_lexically(&self, rel: &Path) -> bool {
        self.hidden_rel.as_ref().is_some_and(|h| rel.starts_with(h))
    }

    /// The slow path: symlinks on the way, or no `openat2`.
    fn open_canonical(&self, rel: &Path, access: Access) -> Result<File, OpenError> {
        let joined = self.root.join(rel);
        let canonical = std::fs::canonicalize(&joined).map_err(|e| io_error(e, rel))?;
        let Ok(inside) = canonical.strip_prefix(&self.root) else {
            let may_leave = match self.follow {
                FollowSymlinks::No => false,
                FollowSymlinks::Yes => true,
                FollowSymlinks::Owner => crate::uri_path::owners_match(&self.root, &joined),
            };
            let hidden = self
                .hidden
                .as_ref()
                .is_some_and(|h| canonical.starts_with(h));
            if !may_leave || hidden {
                tracing::info!("{}: leads out of the root", joined.display());
                return Err(OpenError::LeadsOut);
            }
            // Allowed out by `follow_symlinks`: open what the link names.
            return OpenOptions::new()
                .read(true)
                .custom_flags(access.flags())
                .open(&canonical)
                .map_err(|e| io_error(e, rel).into());
        };
        let dotted = inside
            .components()
            .any(|c| matches!(c, Component::Normal(n) if n.as_bytes().starts_with(b".")));
        let hidden = self
            .hidden
            .as_ref()
            .is_some_and(|h| canonical.starts_with(h));
        if dotted || hidden {
            return Err(Error::NotFound.into());
        }
        let opened = match self.openat2_beneath(inside, access) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => OpenOptions::new()
                .read(true)
                .custom_flags(access.flags())
                .open(&canonical),
            opened => opened,
        };
        opened.map_err(|e| io_error(e, rel).into())
    }
}

/// `ELOOP`: a symlink is on the path (maybe a harmless one inside the
/// root); `EAGAIN`: the kernel saw a concurrent rename; `ENOSYS`/`EPERM`:
/// no `openat2` here (old kernel, seccomp filter).
fn needs_slow_path(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ELOOP | libc::EAGAIN | libc::ENOSYS | libc::EPERM)
    )
}

fn io_error(e: io::Error, rel: &Path) -> Error {
    match e.raw_os_error() {
        Some(libc::EACCES) => Error::Forbidden(format!("{}: {e}", rel.display())),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EIO) => {
            Error::Internal(format!("open {}: {e}", rel.display()))
        }
        // ENOENT, ENOTDIR, ELOOP, EXDEV (would leave the root), …
        _ => Error::NotFound,
    }
}

/// `struct open_how` of linux/openat2.h.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

impl Resolver {
    /// Open `rel` below the root for reading; the kernel refuses any
    /// symlink and any step out of the root. `ENOSYS` when `openat2` is
    /// unavailable.
    fn openat2_beneath(&self, rel: &Path, access: Access) -> io::Result<File> {
        if !self.has_openat2.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        let opened = openat2(&self.root_dir, rel, access.flags()).map(File::from);
        if let Err(e) = &opened {
            if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) {
                self.has_openat2.store(false, Ordering::Relaxed);
                return Err(io::Error::from_raw_os_error(libc::ENOSYS));
            }
        }
        opened
    }
}

/// The directory `rel` below `root` as an `O_PATH` descriptor, by the
/// fast path's rules (beneath the root, no symlink anywhere): the very
/// directory a file lookup through `rel` passes.
pub fn open_dir_beneath(root: &File, rel: &Path) -> io::Result<OwnedFd> {
    openat2(root, rel, libc::O_PATH | libc::O_DIRECTORY)
}

/// `openat2(dir, rel, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` with `O_RDONLY
/// | O_CLOEXEC | flags`.
fn openat2(dir: &File, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let name = CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | flags) as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
    };
    // SAFETY: valid fd, NUL-terminated name, `how` is a live open_how of
    // the size we pass; on success the kernel returns a new fd we own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn safe(p: &str) -> SafePath {
        SafePath::parse(p).unwrap()
    }

    fn body(r: Result<Resolved, Error>) -> Result<String, String> {
        match r {
            Ok(Resolved::File(f)) => Ok(std::fs::read_to_string(format!("/proc/self/fd/{}", {
                use std::os::fd::AsRawFd;
                f.file.as_raw_fd()
            }))
            .unwrap()),
            Ok(Resolved::AddSlash) => Err("301".into()),
            Err(e) => Err(e.status().as_str().to_string()),
        }
    }

    #[test]
    fn resolves_inside_and_refuses_outside() {
        check_table(true);
    }

    /// The same answers when the kernel has no `openat2`: the slow path
    /// for every lookup.
    #[test]
    fn same_answers_without_openat2() {
        check_table(false);
    }

    fn check_table(openat2: bool) {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let root = base.join("root");
        let cgi = root.join("cgi-bin");
        std::fs::create_dir_all(root.join("dir")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::create_dir_all(&cgi).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        std::fs::write(root.join("dir/index.html"), "index").unwrap();
        std::fs::write(root.join(".git/config"), "dot").unwrap();
        std::fs::write(cgi.join("x.sh"), "script").unwrap();
        std::fs::write(base.join("secret"), "secret").unwrap();
        symlink("a.txt", root.join("inner-link")).unwrap();
        symlink("../secret", root.join("out-link")).unwrap();
        symlink(base.join("secret"), root.join("abs-link")).unwrap();
        symlink("cgi-bin", root.join("cgi-link")).unwrap();
        symlink(".git", root.join("git-link")).unwrap();
        symlink("/etc", root.join("etc")).unwrap();
        let index = vec!["index.html".to_string(), "index.php".to_string()];
        let r = Resolver::new(root.clone(), Some(cgi), index, FollowSymlinks::No).unwrap();
        r.has_openat2.store(openat2, Ordering::Relaxed);
        let table: &[(&str, Result<&str, &str>)] = &[
            ("/a.txt", Ok("a")),
            ("/dir/", Ok("index")),
            ("/dir", Err("301")),
            ("/a.txt/", Err("404")),
            ("/empty/", Err("403")),
            ("/missing", Err("404")),
            ("/inner-link", Ok("a")),
            ("/out-link", Err("404")),
            ("/abs-link", Err("404")),
            ("/cgi-bin/x.sh", Err("404")),
            ("/cgi-link/x.sh", Err("404")),
            ("/git-link/config", Err("404")),
            ("/etc/passwd", Err("404")),
            ("/etc/hostname", Err("404")),
        ];
        for (p, want) in table {
            let got = body(r.resolve(&safe(p)));
            let got = got.as_deref().map_err(String::as_str);
            assert_eq!(got, *want, "{p}");
        }
    }
}
