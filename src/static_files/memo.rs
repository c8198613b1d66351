//! Memos: a 200 whose body the open-file cache holds in memory, which a
//! front end may replay for the same request without running the
//! pipeline again, for as long as the cache still holds the same entry.
//!
//! The cache is never stale (see `cache.rs`): any change to the file, its
//! directories or its precompressed siblings drops the entry, and a new
//! one is a new allocation. So "the cache's entry for this key is the
//! very one the memo was made from" is exactly "the pipeline would answer
//! the same", given the same request headers (the front end keys memos by
//! everything of the request the pipeline reads: see
//! `server/static_h1/hot.rs`).
//!
//! A memo holds the entry weakly: it neither keeps a file open nor its
//! bytes in memory once the cache has let go (the cache's bounds hold),
//! and a weak pointer's allocation is not reused while the memo lives, so
//! comparing addresses is safe.

use std::sync::{Arc, Weak};

use bytes::Bytes;

use super::compression::Coding;
use super::entry::{Entry, Siblings};
use super::StaticFiles;

/// How to get the same body again while the cache entry is current.
pub struct Memo {
    key: String,
    entry: Weak<Entry>,
    /// The precompressed sibling sent; None: the file itself.
    coding: Option<Coding>,
}

impl Memo {
    /// A memo for the 200 the pipeline just made from `entry` (for `key`),
    /// sending `coding`'s bytes; None when the same request could get
    /// another answer with the entry unchanged: siblings looked up per
    /// request (changes not watched), or bytes not held in memory.
    pub(super) fn new(key: String, entry: &Arc<Entry>, coding: Option<Coding>) -> Option<Memo> {
        if !matches!(entry.siblings, Siblings::Known(_)) {
            return None;
        }
        let memo = Memo {
            key,
            entry: Arc::downgrade(entry),
            coding,
        };
        memo.bytes(entry)?;
        Some(memo)
    }

    fn bytes(&self, entry: &Entry) -> Option<Bytes> {
        match self.coding {
            None => entry.main.bytes.clone(),
            Some(c) => match &entry.siblings {
                Siblings::Known(known) => known[Siblings::slot(c)].as_ref()?.bytes.clone(),
                Siblings::PerRequest => None,
            },
        }
    }
}

impl StaticFiles {
    /// The body `memo` stands for, if the cache still holds the entry it
    /// was made from (checked as any hit is: pending change events read,
    /// `statx` for an entry that needs it). None: run the pipeline.
    pub fn replay(&self, memo: &Memo) -> Option<Bytes> {
        let entry = self.cache.as_ref()?.get(&memo.key)?;
        if !std::ptr::eq(Arc::as_ptr(&entry), memo.entry.as_ptr()) {
            return None;
        }
        memo.bytes(&entry)
    }
}
