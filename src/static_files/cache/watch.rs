//! inotify for the open-file cache: one instance per cache, registered
//! with tokio's reactor, and the watches of the directories in the tree.
//!
//! A directory is watched as the fast path reaches it: opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` below the root's
//! descriptor and watched through `/proc/self/fd`, so the watch is on the
//! very directory a lookup passes, whatever symlink or rename is in its
//! path meanwhile.

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::tree::{AddError, Watches};
use crate::static_files::resolve::open_dir_beneath;

/// Every change to a directory's entries or to a file in it: written,
/// attributes (mode, times, link count), created, deleted, moved in or
/// out; and the directory itself deleted or moved.
fn mask() -> WatchFlags {
    WatchFlags::MODIFY
        | WatchFlags::ATTRIB
        | WatchFlags::CLOSE_WRITE
        | WatchFlags::MOVED_FROM
        | WatchFlags::MOVED_TO
        | WatchFlags::CREATE
        | WatchFlags::DELETE
        | WatchFlags::DELETE_SELF
        | WatchFlags::MOVE_SELF
        | WatchFlags::ONLYDIR
}

/// Read buffer: a few hundred events at a time.
pub const READ_BUFFER: usize = 16 * 1024;

pub struct Watcher {
    pub fd: AsyncFd<OwnedFd>,
    pub root_wd: i32,
    pub root_remote: bool,
}

impl Watcher {
    /// An inotify instance on tokio's reactor, watching the root. Fails
    /// outside a runtime, without inotify or `/proc`, or out of instances
    /// (`EMFILE`) or watches (`ENOSPC`).
    pub fn start(root: &File) -> io::Result<Watcher> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other("no tokio runtime to read events on"));
        }
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?;
        let root_wd = inotify::add_watch(&fd, proc_path(root.as_fd()), mask())?;
        let root_remote = on_remote_fs(root.as_fd());
        // SAFETY: the AsyncFd owns `fd`, which stays open (and the same
        // descriptor) until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Watcher {
            fd,
            root_wd,
            root_remote,
        })
    }

    /// The watches of the directories below `root`.
    pub fn watches<'a>(&'a self, root: &'a File) -> Inotify<'a> {
        Inotify {
            fd: self.fd.get_ref(),
            root,
        }
    }
}

pub struct Inotify<'a> {
    fd: &'a OwnedFd,
    root: &'a File,
}

impl Watches for Inotify<'_> {
    fn add(&self, segments: &[String]) -> Result<(i32, bool), AddError> {
        let rel: PathBuf = segments.iter().collect();
        let dir = open_dir_beneath(self.root, &rel).map_err(AddError::Path)?;
        let remote = on_remote_fs(dir.as_fd());
        match inotify::add_watch(self.fd, proc_path(dir.as_fd()), mask()) {
            Ok(wd) => Ok((wd, remote)),
            Err(e @ (rustix::io::Errno::NOSPC | rustix::io::Errno::NOMEM)) => {
                Err(AddError::Watch(e.into()))
            }
            Err(e) => Err(AddError::Path(e.into())),
        }
    }

    fn remove(&self, wd: i32) {
        // EINVAL when the kernel removed it already (directory deleted).
        let _ = inotify::remove_watch(self.fd, wd);
    }
}

fn proc_path(fd: std::os::fd::BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// One event, copied out of the read buffer.
#[derive(Debug)]
pub struct Event {
    pub wd: i32,
    pub mask: ReadFlags,
    pub name: Option<Box<[u8]>>,
}

impl Event {
    /// The queue overflowed: events were lost.
    pub fn overflow(&self) -> bool {
        self.mask.contains(ReadFlags::QUEUE_OVERFLOW)
    }

    /// The watch is gone (its directory deleted or unmounted, or removed).
    pub fn watch_gone(&self) -> bool {
        self.mask.contains(ReadFlags::IGNORED)
    }

    /// About the directory itself rather than a name in it.
    pub fn on_directory(&self) -> bool {
        self.name.is_none()
            || self
                .mask
                .intersects(ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF | ReadFlags::UNMOUNT)
    }
}

/// Read the events queued on `fd` in batches of one read each, handing
/// each batch to `apply`, until the queue is empty: then `WouldBlock`.
pub fn read_events(
    fd: &OwnedFd,
    buf: &mut [MaybeUninit<u8>],
    mut apply: impl FnMut(&[Event]),
) -> io::Error {
    let mut reader = inotify::Reader::new(fd, buf);
    let mut batch = Vec::new();
    loop {
        match reader.next() {
            Ok(ev) => {
                batch.push(Event {
                    wd: ev.wd(),
                    mask: ev.events(),
                    name: ev.file_name().map(|n| n.to_bytes().into()),
                });
                if reader.is_buffer_empty() {
                    apply(&batch);
                    batch.clear();
                }
            }
            Err(e) => {
                apply(&batch);
                return e.into();
            }
        }
    }
}

/// Whether `fd` lies on a file system where inotify does not see every
/// change (those made by other clients of a network or FUSE file system).
fn on_remote_fs(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    const REMOTE: &[u32] = &[
        0x6969,      // NFS
        0x517B,      // SMB
        0xFF53_4D42, // CIFS
        0xFE53_4D42, // SMB2
        0x6573_5546, // FUSE
        0x0102_1997, // 9P
        0x00C3_6400, // Ceph
        0x5346_414F, // AFS
        0x6B41_4653, // kAFS
        0x7375_7245, // Coda
        0x0116_1970, // GFS2
        0x7461_636F, // OCFS2
        0x0BD0_0BD0, // Lustre
    ];
    match rustix::fs::fstatfs(fd) {
        // f_type's width differs between architectures; magics are 32-bit.
        #[allow(clippy::unnecessary_cast)]
        Ok(st) => REMOTE.contains(&((st.f_type as u64 & 0xFFFF_FFFF) as u32)),
        // Cannot tell: check every hit rather than trust the watch.
        Err(_) => true,
    }
}
