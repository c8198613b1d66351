//! Tests of the open-file cache: bounds, eviction, events, fallbacks.

use super::*;
use crate::config::FollowSymlinks;
use crate::static_files::resolve::Resolved;
use crate::static_files::{Looked, StaticFiles};
use rustix::fs::inotify::ReadFlags;

fn limits(entries: usize) -> CacheLimits {
    CacheLimits {
        entries,
        bytes: 1 << 20,
        watch: true,
    }
}

fn files(entries: usize) -> (tempfile::TempDir, StaticFiles) {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    for name in ["a", "b", "c", "d", "e"] {
        std::fs::write(root.join(name), name).unwrap();
    }
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/x"), "x").unwrap();
    let index = vec!["index.html".to_string()];
    let sf = StaticFiles::new(
        root,
        None,
        None,
        index,
        FollowSymlinks::No,
        Some(limits(entries)),
    );
    (tmp, sf.unwrap())
}

fn look(sf: &StaticFiles, path: &str) -> Arc<Entry> {
    match sf.lookup(&SafePath::parse(path).unwrap()) {
        Ok(Looked::File(entry)) => entry,
        _ => panic!("{path} not found"),
    }
}

fn cached(sf: &StaticFiles, key: &str) -> bool {
    let st = sf.cache.as_ref().unwrap().shared.state.read().unwrap();
    st.map
        .get(key)
        .is_some_and(|s| matches!(st.slots[*s].state, SlotState::Ready(_)))
}

fn drain(cache: &OpenFileCache) {
    let Some(Some(w)) = cache.shared.watcher.get() else {
        panic!("not watching");
    };
    let e = cache.shared.drain(w.fd.get_ref());
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
}

/// The file changes between its open and the entry's insertion: the
/// event drops the placeholder, and the stale entry is not cached.
#[tokio::test]
async fn a_change_between_open_and_insertion_keeps_the_file_out() {
    let (tmp, sf) = files(10);
    let cache = sf.cache.as_ref().unwrap();
    for (path, change) in [("/a", "a"), ("/sub/x", "sub")] {
        let safe = SafePath::parse(path).unwrap();
        let ticket = cache.begin(&safe, path).unwrap();
        assert_eq!(ticket.form(), Form::Watched);
        let Ok(Resolved::File(found)) = sf.resolver.resolve(&safe) else {
            panic!("{path}");
        };
        // A rename-replace of the file, or of its directory.
        let target = tmp.path().join(change);
        let moved = tmp.path().join(format!("{change}.old"));
        std::fs::rename(&target, &moved).unwrap();
        std::fs::rename(&moved, &target).unwrap();
        drain(cache);
        let (entry, cacheable) = Entry::build(found, ticket.form(), &sf.resolver, SMALL);
        assert!(cacheable);
        ticket.complete(Arc::new(entry));
        assert!(!cached(&sf, path), "{path} cached after a change");
        // The next request caches it.
        look(&sf, path);
        assert!(cached(&sf, path), "{path}");
    }
}

#[tokio::test]
async fn a_queue_overflow_drops_everything_and_every_watch() {
    let (_tmp, sf) = files(10);
    for path in ["/a", "/b", "/sub/x"] {
        look(&sf, path);
    }
    let cache = sf.cache.as_ref().unwrap();
    let before = cache.stats();
    assert_eq!((before.entries, before.dirs, before.watching), (3, 2, true));
    cache.shared.apply(&[Event {
        wd: -1,
        mask: ReadFlags::QUEUE_OVERFLOW,
        name: None,
    }]);
    let after = cache.stats();
    assert_eq!((after.entries, after.fds, after.dirs), (0, 0, 1));
    assert!(after.watching);
    look(&sf, "/sub/x");
    assert!(cached(&sf, "/sub/x"));
}

/// CLOCK: an entry used since the hand last passed gets a second
/// chance; descriptors never exceed the limit.
#[tokio::test]
async fn clock_gives_used_entries_a_second_chance() {
    let (_tmp, sf) = files(3);
    for path in ["/a", "/b", "/c"] {
        look(&sf, path);
    }
    // Everything was just used: one round clears the bits, then the
    // next in the hand's order goes.
    look(&sf, "/d");
    let left: Vec<&str> = ["/a", "/b", "/c"]
        .into_iter()
        .filter(|p| cached(&sf, p))
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    let (used, unused) = (left[0], left[1]);
    look(&sf, used);
    look(&sf, "/e");
    assert!(cached(&sf, used), "used since the hand passed");
    assert!(!cached(&sf, unused));
    assert!(cached(&sf, "/d") && cached(&sf, "/e"));
    assert_eq!(sf.cache_stats().map(|s| s.fds), Some(3));
}

/// Without a runtime there is no reactor to read events on: every hit
/// is checked instead, and still sees changes.
#[test]
fn without_a_runtime_hits_are_checked() {
    let (tmp, sf) = files(10);
    look(&sf, "/a");
    let stats = sf.cache_stats().unwrap();
    assert_eq!((stats.entries, stats.watching), (1, false));
    assert_eq!(look(&sf, "/a").main.bytes.as_deref(), Some(&b"a"[..]));
    std::fs::write(tmp.path().join("a"), "changed").unwrap();
    assert_eq!(look(&sf, "/a").main.bytes.as_deref(), Some(&b"changed"[..]));
}
