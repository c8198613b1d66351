//! The open-file cache: per document root (or alias directory), the
//! [`Entry`] of each request path recently served — the open descriptor,
//! the metadata, validators and `Content-Type`, a small file's bytes and
//! its precompressed siblings — so that a hit costs no system call before
//! the socket write.
//!
//! **What is cached.** Only files the fast path opened (`openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`): with no symlink on the way,
//! the request path is the real path, and watching its directories sees
//! every change that could make it resolve differently. A path with a
//! symlink in it, or found by the slow path for any other reason, is
//! resolved afresh at every request, as without the cache. Neither are
//! errors, redirects or anything not found cached.
//!
//! **Never stale.** The directories on the path of each entry (the root
//! included) are watched with inotify (`cache/watch.rs`); an event for
//! directory D and name C drops every entry at or below D/C (and the
//! directory indexes of D, and everything below D when D itself is
//! deleted or moved; everything when the event queue overflows). An entry
//! is registered, as a placeholder, before its file is opened, so an event
//! between the open and the insertion drops the placeholder and the file
//! is not cached. The events are read by a task on tokio's reactor, and a
//! hit first checks the reactor's readiness of the inotify descriptor (an
//! atomic load, no system call) and reads the queued events itself when
//! there are any: a change made before a request's bytes arrived is seen
//! by that request, since the reactor reports the earlier readiness first.
//! (A request read from the socket without a wait for it, right behind the
//! previous response on the same connection, relies on the event task.)
//!
//! **When changes cannot be watched** — no inotify, no `/proc`, out of
//! inotify instances (`EMFILE`) or watches (`ENOSPC`), a network or FUSE
//! file system (whose other clients' changes inotify does not see), or
//! `open_file_cache_watch = false` — an entry is checked at each hit with
//! one `statx` of its path below the root (the last component not
//! followed): the same device, inode, size, modification and change time,
//! or it is dropped. Directory indexes and precompressed siblings are then
//! looked up per request (a new `index.html` or `FILE.gz` changes no
//! `statx` of the cached file). A file with other hard links is checked
//! the same way even when watched: it can be written under another name.
//!
//! **Bounded.** At most `open_file_cache_entries` open descriptors (an
//! entry holds one, plus one per precompressed sibling) and
//! `open_file_cache_bytes` of file contents; CLOCK eviction (a hit sets
//! the entry's bit, the hand clears it once before evicting).

mod state;
use state::NoWatches;
mod tree;
mod watch;

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockWriteGuard};

use tokio::io::Interest;
use tokio::sync::Notify;

use super::entry::{Entry, Form, Stamp};
use crate::uri_path::SafePath;
use tree::{AddError, Dep, Slot, Tree, Watches};
use watch::{Event, Watcher};

/// Files up to this size keep their bytes in the cache.
pub const SMALL: u64 = 16 * 1024;

/// The cache's bounds and how it notices changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Open descriptors held.
    pub entries: usize,
    /// Bytes of small files' contents held.
    pub bytes: u64,
    /// Watch directories with inotify; false: check each hit with `statx`.
    pub watch: bool,
}

impl CacheLimits {
    /// The `open_file_cache*` settings; None when the cache is off.
    pub fn from_config(c: &crate::config::Config) -> Option<CacheLimits> {
        c.open_file_cache.then_some(CacheLimits {
            entries: c.open_file_cache_entries,
            bytes: c.open_file_cache_bytes,
            watch: c.open_file_cache_watch,
        })
    }
}

/// What the cache holds, for tests and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub fds: usize,
    pub bytes: u64,
    /// Directories watched, the root included (0 when not watching).
    pub dirs: usize,
    pub watching: bool,
}

pub struct OpenFileCache {
    shared: Arc<Shared>,
}

struct Shared {
    limits: CacheLimits,
    /// The root directory, as the resolver has it open.
    root: Arc<File>,
    state: RwLock<State>,
    /// Changes are watched (else each hit is checked); once off, off.
    watching: AtomicBool,
    /// Started by the first cacheable miss (it needs tokio's reactor).
    watcher: OnceLock<Option<Watcher>>,
    /// The event read buffer; held while events are read and applied.
    reading: Mutex<Box<[MaybeUninit<u8>]>>,
    /// Ends the event task.
    stop: Notify,
}

#[derive(Default)]
struct State {
    map: HashMap<Arc<str>, Slot>,
    slots: Vec<SlotData>,
    free: Vec<Slot>,
    /// CLOCK's hand.
    hand: usize,
    fds: usize,
    bytes: u64,
    /// The watched directories, while watching.
    tree: Option<Tree>,
    next_token: u64,
}

#[derive(Default)]
struct SlotData {
    key: Option<Arc<str>>,
    state: SlotState,
    fds: usize,
    bytes: u64,
    deps: Vec<Dep>,
}

#[derive(Default)]
enum SlotState {
    #[default]
    Free,
    /// Registered before the file is opened; an event drops it.
    Pending(u64),
    Ready(Arc<Entry>),
}

/// A cacheable miss in progress: complete it with the entry, or drop it.
pub struct Ticket<'a> {
    shared: &'a Shared,
    slot: Slot,
    token: u64,
    form: Form,
    done: bool,
}

impl OpenFileCache {
    /// A cache of files below `root` (the resolver's root descriptor).
    pub fn new(limits: CacheLimits, root: Arc<File>) -> OpenFileCache {
        OpenFileCache {
            shared: Arc::new(Shared {
                limits,
                root,
                state: RwLock::new(State::default()),
                watching: AtomicBool::new(limits.watch),
                watcher: OnceLock::new(),
                reading: Mutex::new(vec![MaybeUninit::uninit(); watch::READ_BUFFER].into()),
                stop: Notify::new(),
            }),
        }
    }

    /// Files up to this size are cached with their bytes.
    pub fn small(&self) -> u64 {
        SMALL.min(self.shared.limits.bytes)
    }

    /// The entry cached for `key`, if it is still what the path names.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let sh = &*self.shared;
        sh.catch_up();
        let entry = {
            let st = sh.state.read().unwrap_or_else(PoisonError::into_inner);
            let slot = st.map.get(key)?;
            match &st.slots.get(*slot)?.state {
                SlotState::Ready(entry) => entry.clone(),
                _ => return None,
            }
        };
        if !entry.referenced.load(Ordering::Relaxed) {
            entry.referenced.store(true, Ordering::Relaxed);
        }
        if let Some(stamp) = entry.stamp {
            if Stamp::now(&sh.root, &entry.main.found.rel) != Some(stamp) {
                sh.forget(key, &entry);
                return None;
            }
        }
        Some(entry)
    }

    /// Start caching `path` (under `key`), before it is resolved; None when
    /// it cannot be cached (being cached by another request, a directory
    /// that is not there, an index while changes are not watched).
    pub fn begin(&self, path: &SafePath, key: &str) -> Option<Ticket<'_>> {
        self.start_watching();
        let sh = &*self.shared;
        let index = path.trailing_slash || path.segments.is_empty();
        let dirs = if index {
            &path.segments[..]
        } else {
            &path.segments[..path.segments.len() - 1]
        };
        let mut guard = sh.write();
        let st = &mut *guard;
        if st.map.contains_key(key) {
            return None;
        }
        sh.with_watches(|w| {
            if !st.evict(&sh.limits, 1, 0, None, w) {
                return None;
            }
            let mut form = Form::Checked;
            let mut deps = Vec::new();
            if let Some(tree) = st.tree.as_mut() {
                match tree.dir(dirs, w) {
                    Ok(node) if tree.remote(node) => tree.prune(node, w),
                    Ok(node) => {
                        form = Form::Watched;
                        deps = match path.segments.last() {
                            Some(name) if !index => ["", ".gz", ".br"]
                                .iter()
                                .map(|ext| Dep::Name(node, format!("{name}{ext}").into()))
                                .collect(),
                            _ => vec![Dep::Any(node)],
                        };
                    }
                    Err(AddError::Path(e)) => {
                        tracing::debug!("open-file cache: not caching {key}: {e}");
                        return None;
                    }
                    Err(AddError::Watch(e)) => {
                        sh.stop_watching_locked(st, w, &format!("adding a watch: {e}"))
                    }
                }
            }
            if index && form != Form::Watched {
                return None;
            }
            let token = st.next_token;
            st.next_token += 1;
            let slot = st.alloc(SlotData {
                key: Some(key.into()),
                state: SlotState::Pending(token),
                fds: 1,
                bytes: 0,
                deps,
            });
            Some(Ticket {
                shared: sh,
                slot,
                token,
                form,
                done: false,
            })
        })
    }

    pub fn stats(&self) -> CacheStats {
        let st = self
            .shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        CacheStats {
            entries: st.map.len(),
            fds: st.fds,
            bytes: st.bytes,
            dirs: st.tree.as_ref().map_or(0, Tree::len),
            watching: self.shared.watching.load(Ordering::Relaxed),
        }
    }

    /// The first time it is needed: inotify on the current runtime, the
    /// root watched, and the task that reads the events.
    fn start_watching(&self) {
        let sh = &*self.shared;
        if !sh.watching.load(Ordering::Relaxed) || sh.watcher.get().is_some() {
            return;
        }
        let mut failed = None;
        let mut started = false;
        let watcher = sh.watcher.get_or_init(|| match Watcher::start(&sh.root) {
            Ok(w) => {
                started = true;
                Some(w)
            }
            Err(e) => {
                failed = Some(e);
                None
            }
        });
        match (watcher, failed) {
            (Some(w), _) if started => {
                sh.write().tree = Some(Tree::new(w.root_wd, w.root_remote));
                tokio::spawn(read_events(self.shared.clone()));
            }
            (None, Some(e)) => sh.stop_watching(&format!("inotify: {e}")),
            _ => {}
        }
    }
}

impl Drop for OpenFileCache {
    fn drop(&mut self) {
        self.shared.stop.notify_one();
    }
}

/// The event task: read and apply events as they come, until the cache
/// is dropped or stops watching.
async fn read_events(shared: Arc<Shared>) {
    let Some(Some(w)) = shared.watcher.get() else {
        return;
    };
    while shared.watching.load(Ordering::Relaxed) {
        tokio::select! {
            _ = shared.stop.notified() => return,
            ready = w.fd.readable() => {
                let mut guard = match ready {
                    Ok(guard) => guard,
                    Err(e) => return shared.stop_watching(&format!("inotify: {e}")),
                };
                // `WouldBlock` (all read) clears the readiness.
                if let Ok(Err(e)) = guard.try_io(|fd| Err::<(), _>(shared.drain(fd.get_ref()))) {
                    return shared.stop_watching(&format!("reading inotify events: {e}"));
                }
            }
        }
    }
}

impl Shared {
    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn with_watches<R>(&self, f: impl FnOnce(&dyn Watches) -> R) -> R {
        match self.watcher.get() {
            Some(Some(w)) => f(&w.watches(&self.root)),
            _ => f(&NoWatches),
        }
    }

    /// Apply the events queued so far, if the reactor has seen any (no
    /// system call otherwise).
    fn catch_up(&self) {
        let Some(Some(w)) = self.watcher.get() else {
            return;
        };
        if !self.watching.load(Ordering::Relaxed) {
            return;
        }
        let read =
            w.fd.try_io(Interest::READABLE, |fd| Err::<(), _>(self.drain(fd)));
        if let Err(e) = read {
            if e.kind() != io::ErrorKind::WouldBlock {
                self.stop_watching(&format!("reading inotify events: {e}"));
            }
        }
    }

    /// Read and apply every queued event: `WouldBlock` once the queue is
    /// empty, or the read's error.
    fn drain(&self, fd: &OwnedFd) -> io::Error {
        let mut buf = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        watch::read_events(fd, &mut buf, |batch| self.apply(batch))
    }

    fn apply(&self, batch: &[Event]) {
        if batch.is_empty() {
            return;
        }
        let mut guard = self.write();
        let st = &mut *guard;
        self.with_watches(|w| {
            for ev in batch {
                let Some(tree) = st.tree.as_ref() else { return };
                let root_gone = ev.watch_gone() && ev.wd == tree.root_wd();
                let reached = if ev.overflow() {
                    (0..st.slots.len()).collect()
                } else if ev.watch_gone() || ev.on_directory() {
                    tree.reached(ev.wd, None)
                } else {
                    tree.reached(ev.wd, ev.name.as_deref())
                };
                for slot in reached {
                    st.remove(slot, w);
                }
                if root_gone {
                    self.stop_watching_locked(st, w, "the root's watch is gone");
                }
            }
        });
    }

    /// Drop `entry` from under `key` (a failed check), unless replaced.
    fn forget(&self, key: &str, entry: &Arc<Entry>) {
        let mut guard = self.write();
        let st = &mut *guard;
        let Some(&slot) = st.map.get(key) else { return };
        let same = matches!(&st.slots[slot].state, SlotState::Ready(e) if Arc::ptr_eq(e, entry));
        if same {
            self.with_watches(|w| st.remove(slot, w));
        }
    }

    fn stop_watching(&self, why: &str) {
        let mut guard = self.write();
        self.with_watches(|w| self.stop_watching_locked(&mut guard, w, why));
    }

    /// From now on, check each hit with `statx`: everything cached so far
    /// (watched, not checked) goes, and so do the watches.
    fn stop_watching_locked(&self, st: &mut State, w: &dyn Watches, why: &str) {
        if self.watching.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "open-file cache: {why}; each hit is now checked with statx instead of watched"
            );
        }
        if let Some(tree) = st.tree.take() {
            for wd in tree.watches() {
                w.remove(wd);
            }
        }
        *st = State {
            next_token: st.next_token,
            ..State::default()
        };
        self.stop.notify_one();
    }
}

#[cfg(test)]
mod tests;
