//! What the pipeline in `mod.rs` serves from: an [`Entry`] per request
//! path — the open file and its metadata, the validators and
//! `Content-Type` made once, and, for an entry the open-file cache keeps
//! (`cache.rs`), a small file's bytes and its precompressed siblings, so
//! that a hit needs no system call before the socket write.
//!
//! An uncached request builds its entry the same way and drops it with
//! the response ([`Form::Uncached`]: no bytes read ahead, siblings looked
//! up only when the client accepts their coding).

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::HeaderValue;

use super::compression::Coding;
use super::conditional::Validators;
use super::resolve::{Found, Resolver};

/// How an entry is built: for this request only, or to be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Uncached,
    /// Cached; its directory is watched, so a change drops it.
    Watched,
    /// Cached; each hit checks it with one `statx` (nothing watches it).
    Checked,
}

/// One file's bytes as a response sends them.
pub struct Source {
    pub found: Found,
    pub validators: Validators,
    /// The whole file, when small and cached: a hit writes it behind the
    /// response head, without reading the file.
    pub bytes: Option<Bytes>,
}

/// `FILE.br` and `FILE.gz`, the precompressed siblings.
pub enum Siblings {
    /// Looked up by each request that accepts their coding.
    PerRequest,
    /// Looked up when the entry was made (and watched since): br, gz.
    Known([Option<Arc<Source>>; 2]),
}

impl Siblings {
    pub(super) fn slot(coding: Coding) -> usize {
        match coding {
            Coding::Br => 0,
            Coding::Gzip => 1,
        }
    }
}

pub struct Entry {
    pub main: Source,
    pub content_type: HeaderValue,
    /// A text type (worth gzipping on the fly).
    pub text: bool,
    pub siblings: Siblings,
    /// The validators of the gzip-on-the-fly representation, made when
    /// first needed.
    gzip: OnceLock<Validators>,
    /// What `statx` must still say for a [`Form::Checked`] entry to be used.
    pub stamp: Option<Stamp>,
    /// CLOCK's bit (`cache.rs`): used since the hand last passed.
    pub referenced: AtomicBool,
}

/// The identity of a file's current contents, as `statx` reports them:
/// the same inode with the same size, modification and change times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    pub fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The regular file at `rel` below `root` now (one `statx`, the last
    /// component not followed); None if it is gone or not a regular file.
    pub fn now(root: &File, rel: &Path) -> Option<Stamp> {
        use rustix::fs::{statx, AtFlags, FileType, StatxFlags};
        let st = statx(
            root,
            rel,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::TYPE
                | StatxFlags::INO
                | StatxFlags::SIZE
                | StatxFlags::MTIME
                | StatxFlags::CTIME,
        )
        .ok()?;
        if FileType::from_raw_mode(u32::from(st.stx_mode)) != FileType::RegularFile {
            return None;
        }
        Some(Stamp {
            dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            size: st.stx_size,
            mtime: (st.stx_mtime.tv_sec, i64::from(st.stx_mtime.tv_nsec)),
            ctime: (st.stx_ctime.tv_sec, i64::from(st.stx_ctime.tv_nsec)),
        })
    }
}

impl Entry {
    /// The entry for `found` in `form`, and whether it may be cached in
    /// that form. `small`: files up to this size keep their bytes.
    ///
    /// Not cacheable: a file that cannot be read now (the request then
    /// reports the error as it would without the cache), a sibling reached
    /// through a symlink (its target is not watched), a sibling with other
    /// hard links (it can change under another name). A watched file with
    /// other hard links is checked at each hit instead.
    pub fn build(found: Found, form: Form, resolver: &Resolver, small: u64) -> (Entry, bool) {
        let form = match form {
            Form::Watched if found.meta.nlink() > 1 => Form::Checked,
            f => f,
        };
        let (content_type, text) = super::content_type(&found.rel);
        let stamp = (form == Form::Checked).then(|| Stamp::of(&found.meta));
        let mut cacheable = form != Form::Uncached;
        let mut siblings = Siblings::PerRequest;
        if form == Form::Watched {
            let mut known = [None, None];
            for coding in [Coding::Br, Coding::Gzip] {
                let Some(sib) = resolver.sibling(&found, coding.extension()) else {
                    continue;
                };
                cacheable &= sib.direct && sib.meta.nlink() == 1;
                let (source, read) = Source::new(sib, coding.etag_suffix(), small);
                cacheable &= read;
                known[Siblings::slot(coding)] = Some(Arc::new(source));
            }
            siblings = Siblings::Known(known);
        }
        let limit = if form == Form::Uncached { 0 } else { small };
        let (main, read) = Source::new(found, "", limit);
        cacheable &= read;
        let entry = Entry {
            main,
            content_type,
            text,
            siblings,
            gzip: OnceLock::new(),
            stamp,
            referenced: AtomicBool::new(true),
        };
        (entry, cacheable)
    }

    /// The `FILE.br`/`FILE.gz` beside this file, if any (and not older):
    /// as found when the entry was made, or looked up now.
    pub fn sibling(&self, coding: Coding, resolver: &Resolver) -> Option<Arc<Source>> {
        match &self.siblings {
            Siblings::Known(known) => known[Siblings::slot(coding)].clone(),
            Siblings::PerRequest => {
                let sib = resolver.sibling(&self.main.found, coding.extension())?;
                Some(Arc::new(Source::new(sib, coding.etag_suffix(), 0).0))
            }
        }
    }

    /// The validators of this file gzipped on the fly: the same bytes
    /// every time, so the identity validators plus a suffix.
    pub fn gzip_validators(&self) -> &Validators {
        self.gzip.get_or_init(|| {
            let m = &self.main.found.meta;
            Validators::new(m.len(), m.modified().ok(), Coding::Gzip.etag_suffix())
        })
    }

    /// Open descriptors this entry holds (the cache's entry limit counts
    /// these).
    pub fn fds(&self) -> usize {
        1 + match &self.siblings {
            Siblings::Known(known) => known.iter().flatten().count(),
            Siblings::PerRequest => 0,
        }
    }

    /// File bytes this entry holds in memory.
    pub fn bytes(&self) -> u64 {
        let len = |s: &Source| s.bytes.as_ref().map_or(0, |b| b.len() as u64);
        len(&self.main)
            + match &self.siblings {
                Siblings::Known(known) => known.iter().flatten().map(|s| len(s)).sum(),
                Siblings::PerRequest => 0,
            }
    }
}

impl Source {
    /// `found` with its validators (`suffix` tells codings apart) and, if
    /// it has at most `small` bytes, its contents; false if those could
    /// not be read.
    fn new(found: Found, suffix: &str, small: u64) -> (Source, bool) {
        let len = found.meta.len();
        let validators = Validators::new(len, found.meta.modified().ok(), suffix);
        let mut read = true;
        let bytes = if len <= small {
            let got = read_all(&found.file, len);
            read = got.is_ok();
            got.ok()
        } else {
            None
        };
        let source = Source {
            found,
            validators,
            bytes,
        };
        (source, read)
    }
}

fn read_all(file: &File, len: u64) -> io::Result<Bytes> {
    let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
    super::file_body::read_now(file, 0, len)
}
