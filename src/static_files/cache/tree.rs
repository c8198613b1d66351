//! The watched directories of the open-file cache, as a tree below the
//! root, and which cache slots depend on which names in them.
//!
//! A directory is in the tree (and watched) while some slot depends on a
//! name in it or in a directory below it; the last one gone, it is pruned
//! and its watch removed. An event for directory D and child name C
//! reaches the slots that depend on C in D, those that depend on any name
//! in D (directory indexes), and everything below D/C; an event on D
//! itself (deleted, moved, unmounted, its watch gone) reaches everything
//! below D.
//!
//! The same directory may be in the tree under two paths (a bind mount, or
//! a rename whose event is still queued): the kernel gives both the same
//! watch descriptor, so a descriptor maps to a list of nodes and is removed
//! with the last of them.

use std::collections::HashMap;
use std::io;

/// A cache slot (`cache.rs`).
pub type Slot = usize;

pub type NodeId = usize;

/// The root directory's node: never pruned.
pub const ROOT: NodeId = 0;

/// What a slot depends on in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dep {
    /// One name (the file, or a sibling that may appear).
    Name(NodeId, Box<str>),
    /// Any name: a directory index, which a new or removed index file
    /// (of any of the configured names) or sibling would change.
    Any(NodeId),
}

/// Adds and removes watches (inotify in `watch.rs`; a fake in tests).
pub trait Watches {
    /// Watch the directory at `segments` below the root, as the fast path
    /// would reach it: its watch descriptor, and whether it lies on a file
    /// system whose changes inotify may miss (NFS, FUSE, …).
    fn add(&self, segments: &[String]) -> Result<(i32, bool), AddError>;
    fn remove(&self, wd: i32);
}

#[derive(Debug)]
pub enum AddError {
    /// The path is not a directory the fast path reaches (now): nothing
    /// below it can be cached.
    Path(io::Error),
    /// The watch itself failed (`ENOSPC`: no watches left): changes can
    /// no longer be watched.
    Watch(io::Error),
}

struct Node {
    parent: NodeId,
    /// The name in the parent.
    name: Box<str>,
    wd: i32,
    /// On a file system inotify does not fully see (inherited downwards).
    remote: bool,
    dirs: HashMap<Box<str>, NodeId>,
    names: HashMap<Box<str>, Vec<Slot>>,
    any: Vec<Slot>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.names.is_empty() && self.any.is_empty()
    }
}

pub struct Tree {
    nodes: Vec<Option<Node>>,
    free: Vec<NodeId>,
    by_wd: HashMap<i32, Vec<NodeId>>,
}

impl Tree {
    pub fn new(root_wd: i32, remote: bool) -> Tree {
        let root = Node {
            parent: ROOT,
            name: "".into(),
            wd: root_wd,
            remote,
            dirs: HashMap::new(),
            names: HashMap::new(),
            any: Vec::new(),
        };
        Tree {
            nodes: vec![Some(root)],
            free: Vec::new(),
            by_wd: HashMap::from([(root_wd, vec![ROOT])]),
        }
    }

    pub fn root_wd(&self) -> i32 {
        self.node(ROOT).map_or(-1, |n| n.wd)
    }

    fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes.get_mut(id).and_then(Option::as_mut)
    }

    /// The node of the directory `segments` below the root, made and
    /// watched as needed, top down: each new watch is added while its
    /// parent is already watched, so a directory swapped meanwhile is seen
    /// as an event in the parent.
    pub fn dir(&mut self, segments: &[String], w: &dyn Watches) -> Result<NodeId, AddError> {
        let mut at = ROOT;
        for (depth, name) in segments.iter().enumerate() {
            let existing = self
                .node(at)
                .and_then(|n| n.dirs.get(name.as_str()).copied());
            if let Some(child) = existing {
                at = child;
                continue;
            }
            let (wd, remote) = match w.add(&segments[..=depth]) {
                Ok(added) => added,
                Err(e) => {
                    self.prune(at, w);
                    return Err(e);
                }
            };
            let parent_remote = self.node(at).is_some_and(|n| n.remote);
            let node = Node {
                parent: at,
                name: name.as_str().into(),
                wd,
                remote: remote || parent_remote,
                dirs: HashMap::new(),
                names: HashMap::new(),
                any: Vec::new(),
            };
            let id = match self.free.pop() {
                Some(id) => {
                    self.nodes[id] = Some(node);
                    id
                }
                None => {
                    self.nodes.push(Some(node));
                    self.nodes.len() - 1
                }
            };
            if let Some(parent) = self.node_mut(at) {
                parent.dirs.insert(name.as_str().into(), id);
            }
            self.by_wd.entry(wd).or_default().push(id);
            at = id;
        }
        Ok(at)
    }

    /// Whether `id` lies on a file system whose changes may go unseen.
    pub fn remote(&self, id: NodeId) -> bool {
        self.node(id).is_none_or(|n| n.remote)
    }

    pub fn add(&mut self, dep: &Dep, slot: Slot) {
        match dep {
            Dep::Name(id, name) => {
                if let Some(n) = self.node_mut(*id) {
                    n.names.entry(name.clone()).or_default().push(slot);
                }
            }
            Dep::Any(id) => {
                if let Some(n) = self.node_mut(*id) {
                    n.any.push(slot);
                }
            }
        }
    }

    /// Undo [`add`](Self::add), pruning what is left empty.
    pub fn remove(&mut self, dep: &Dep, slot: Slot, w: &dyn Watches) {
        let id = match dep {
            Dep::Name(id, name) => {
                let Some(n) = self.node_mut(*id) else { return };
                if let Some(slots) = n.names.get_mut(name) {
                    slots.retain(|s| *s != slot);
                    if slots.is_empty() {
                        n.names.remove(name);
                    }
                }
                *id
            }
            Dep::Any(id) => {
                let Some(n) = self.node_mut(*id) else { return };
                n.any.retain(|s| *s != slot);
                *id
            }
        };
        self.prune(id, w);
    }

    /// Remove `id` and then its parents while they are empty (never the
    /// root), with their watches.
    pub fn prune(&mut self, mut id: NodeId, w: &dyn Watches) {
        while id != ROOT && self.node(id).is_some_and(Node::is_empty) {
            let Some(node) = self.nodes[id].take() else {
                return;
            };
            self.free.push(id);
            if let Some(parent) = self.node_mut(node.parent) {
                parent.dirs.remove(&node.name);
            }
            if let Some(ids) = self.by_wd.get_mut(&node.wd) {
                ids.retain(|n| *n != id);
                if ids.is_empty() {
                    self.by_wd.remove(&node.wd);
                    w.remove(node.wd);
                }
            }
            id = node.parent;
        }
    }

    /// The slots an event for child `name` of the directory watched as
    /// `wd` reaches (`name` None: an event on the directory itself).
    pub fn reached(&self, wd: i32, name: Option<&[u8]>) -> Vec<Slot> {
        let mut out = Vec::new();
        for &id in self.by_wd.get(&wd).into_iter().flatten() {
            let Some(node) = self.node(id) else { continue };
            let Some(name) = name else {
                self.collect_below(id, &mut out);
                continue;
            };
            out.extend_from_slice(&node.any);
            // A name that is not UTF-8 is no request path's: only `any`.
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            if let Some(slots) = node.names.get(name) {
                out.extend_from_slice(slots);
            }
            if let Some(&child) = node.dirs.get(name) {
                self.collect_below(child, &mut out);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Every slot that depends on something at or below `id`.
    fn collect_below(&self, id: NodeId, out: &mut Vec<Slot>) {
        let mut stack = vec![id];
        while let Some(id) = stack.pop() {
            let Some(node) = self.node(id) else { continue };
            out.extend_from_slice(&node.any);
            out.extend(node.names.values().flatten());
            stack.extend(node.dirs.values());
        }
    }

    /// Every watch descriptor in use (to remove them all).
    pub fn watches(&self) -> Vec<i32> {
        self.by_wd.keys().copied().collect()
    }

    /// The path of `id` below the root (for tests and logs).
    #[cfg(test)]
    pub fn path(&self, mut id: NodeId) -> std::path::PathBuf {
        let mut names = Vec::new();
        while id != ROOT {
            let Some(n) = self.node(id) else { break };
            names.push(n.name.to_string());
            id = n.parent;
        }
        names.iter().rev().collect()
    }

    /// Directories in the tree, the root included.
    pub fn len(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::path::PathBuf;

    /// Watches as a list: the path of each descriptor; a path through
    /// "missing" cannot be watched.
    #[derive(Default)]
    struct Fake {
        watched: RefCell<Vec<(i32, String)>>,
        next: RefCell<i32>,
    }

    impl Watches for Fake {
        fn add(&self, segments: &[String]) -> Result<(i32, bool), AddError> {
            let path = segments.join("/");
            if path.split('/').any(|s| s == "missing") {
                return Err(AddError::Path(io::ErrorKind::NotFound.into()));
            }
            *self.next.borrow_mut() += 1;
            let wd = *self.next.borrow();
            self.watched.borrow_mut().push((wd, path));
            Ok((wd, segments[0] == "nfs"))
        }
        fn remove(&self, wd: i32) {
            self.watched.borrow_mut().retain(|(w, _)| *w != wd);
        }
    }

    fn segs(p: &str) -> Vec<String> {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    fn wd_of(w: &Fake, path: &str) -> i32 {
        w.watched
            .borrow()
            .iter()
            .find(|(_, p)| p == path)
            .map(|(wd, _)| *wd)
            .unwrap()
    }

    #[test]
    fn events_reach_exactly_the_slots_below_them() {
        let w = Fake::default();
        let mut t = Tree::new(0, false);
        let a = t.dir(&segs("a"), &w).unwrap();
        let ab = t.dir(&segs("a/b"), &w).unwrap();
        assert_eq!(t.path(ab), PathBuf::from("a/b"));
        t.add(&Dep::Name(ROOT, "top.txt".into()), 1);
        t.add(&Dep::Name(a, "x.txt".into()), 2);
        t.add(&Dep::Name(a, "x.txt.gz".into()), 2);
        t.add(&Dep::Name(ab, "y.txt".into()), 3);
        t.add(&Dep::Any(ab), 4);
        let (wa, wab) = (wd_of(&w, "a"), wd_of(&w, "a/b"));
        assert_eq!(t.reached(0, Some(b"top.txt")), vec![1]);
        assert_eq!(t.reached(0, Some(b"a")), vec![2, 3, 4]);
        assert_eq!(t.reached(0, Some(b"other")), Vec::<Slot>::new());
        assert_eq!(t.reached(wa, Some(b"x.txt.gz")), vec![2]);
        assert_eq!(t.reached(wa, Some(b"b")), vec![3, 4]);
        assert_eq!(t.reached(wab, Some(b"new-index.html")), vec![4]);
        assert_eq!(t.reached(wab, Some(b"y.txt")), vec![3, 4]);
        assert_eq!(t.reached(wab, Some(&[0xff][..])), vec![4]);
        assert_eq!(t.reached(wa, None), vec![2, 3, 4]);
        assert_eq!(t.reached(0, None), vec![1, 2, 3, 4]);
        assert_eq!(t.reached(999, Some(b"x")), Vec::<Slot>::new());
    }

    #[test]
    fn empty_directories_are_pruned_with_their_watches() {
        let w = Fake::default();
        let mut t = Tree::new(0, false);
        let abc = t.dir(&segs("a/b/c"), &w).unwrap();
        let a = t.dir(&segs("a"), &w).unwrap();
        assert_eq!(w.watched.borrow().len(), 3);
        let x = Dep::Name(abc, "x".into());
        let y = Dep::Name(a, "y".into());
        t.add(&x, 7);
        t.add(&y, 8);
        t.remove(&x, 7, &w);
        // a/b and a/b/c went; a stays for slot 8.
        let left: Vec<String> = w.watched.borrow().iter().map(|(_, p)| p.clone()).collect();
        assert_eq!(left, vec!["a".to_string()]);
        t.remove(&y, 8, &w);
        assert!(w.watched.borrow().is_empty());
        assert_eq!(t.len(), 1);
        // A failed watch leaves nothing behind either.
        assert!(matches!(
            t.dir(&segs("missing/z"), &w),
            Err(AddError::Path(_))
        ));
        let _ = t.dir(&segs("d"), &w).unwrap();
        assert!(matches!(
            t.dir(&segs("d/missing"), &w),
            Err(AddError::Path(_))
        ));
        assert!(w.watched.borrow().is_empty(), "{:?}", w.watched.borrow());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_remote_parent_makes_its_subdirectories_remote() {
        let w = Fake::default();
        let mut t = Tree::new(0, false);
        let local = t.dir(&segs("a/b"), &w).unwrap();
        let nfs = t.dir(&segs("nfs/b"), &w).unwrap();
        assert!(!t.remote(local));
        assert!(t.remote(nfs));
    }

    #[test]
    fn one_directory_under_two_paths_keeps_its_watch_until_both_go() {
        struct Same;
        impl Watches for Same {
            fn add(&self, _: &[String]) -> Result<(i32, bool), AddError> {
                Ok((5, false))
            }
            fn remove(&self, wd: i32) {
                panic!("removed {wd}");
            }
        }
        let mut t = Tree::new(0, false);
        let a = t.dir(&segs("a"), &Same).unwrap();
        let b = t.dir(&segs("b"), &Same).unwrap();
        t.add(&Dep::Name(a, "x".into()), 1);
        t.add(&Dep::Name(b, "x".into()), 2);
        assert_eq!(t.reached(5, Some(b"x")), vec![1, 2]);
        t.remove(&Dep::Name(a, "x".into()), 1, &Same);
        assert_eq!(t.reached(5, Some(b"x")), vec![2]);
    }
}
