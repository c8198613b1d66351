//! Step 2 of the static pipeline: a request path to its [`Entry`],
//! through the open-file cache when it is on (and into it, when the fast
//! path found the file), else resolved now.

use std::path::PathBuf;
use std::sync::Arc;

use super::cache::{self, OpenFileCache};
use super::entry::{Entry, Form};
use super::resolve::Resolved;
use super::StaticFiles;
use crate::error::Error;
use crate::uri_path::SafePath;

/// What step 2 found.
pub(super) enum Looked {
    File(Arc<Entry>),
    /// A directory asked for without its trailing slash.
    AddSlash,
}

impl StaticFiles {
    /// `path` as a regular file from the open-file cache (looked up, and
    /// cached, now if it is not there): where the file really is below the
    /// root. None: not a regular file this resolver serves, not cacheable
    /// (a symlink on the way), or no cache; the caller then looks itself.
    /// For the FastCGI script lookup, so that a script's existence costs no
    /// system call once cached (the cache is never stale: see `cache`).
    pub fn cached_file(&self, path: &SafePath) -> Option<PathBuf> {
        if self.cache.is_none() || path.has_encoded_slash() {
            return None;
        }
        match self.lookup(path) {
            Ok(Looked::File(entry))
                if entry.main.found.direct && entry.main.found.meta.is_file() =>
            {
                Some(entry.main.found.rel.clone())
            }
            _ => None,
        }
    }

    /// Step 2: the entry for `path`, from the cache or resolved now (and
    /// cached, when the fast path found it).
    pub(super) fn lookup(&self, path: &SafePath) -> Result<Looked, Error> {
        let Some(cache) = self.cache.as_ref().filter(|_| !path.has_encoded_slash()) else {
            return self.resolve_now(path, None);
        };
        let key = cache_key(path);
        if let Some(entry) = cache.get(&key) {
            return Ok(Looked::File(entry));
        }
        let ticket = cache.begin(path, &key);
        self.resolve_now(path, ticket)
    }

    fn resolve_now(&self, path: &SafePath, ticket: Option<cache::Ticket>) -> Result<Looked, Error> {
        let found = match self.resolver.resolve(path)? {
            Resolved::AddSlash => return Ok(Looked::AddSlash),
            Resolved::File(found) => found,
        };
        let form = match &ticket {
            Some(t) if found.direct => t.form(),
            _ => Form::Uncached,
        };
        let small = self.cache.as_ref().map_or(0, OpenFileCache::small);
        let (entry, cacheable) = Entry::build(found, form, &self.resolver, small);
        let entry = Arc::new(entry);
        if let Some(ticket) = ticket.filter(|_| cacheable) {
            ticket.complete(entry.clone());
        }
        Ok(Looked::File(entry))
    }
}

/// The cache's key for a request path: `/a/b.txt`; a directory (index)
/// request ends in `/`.
pub(super) fn cache_key(path: &SafePath) -> String {
    let mut key = String::with_capacity(64);
    for segment in &path.segments {
        key.push('/');
        key.push_str(segment);
    }
    if path.trailing_slash || path.segments.is_empty() {
        key.push('/');
    }
    key
}
