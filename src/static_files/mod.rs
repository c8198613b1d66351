//! Static files under `--root`: GET and HEAD, validators and conditional
//! requests, single byte ranges, precompressed and on-the-fly gzip, and no
//! escape from the root.
//!
//! The pipeline of [`StaticFiles::serve`], one step per function:
//! 1. method: GET and HEAD only, else 405 with `Allow`;
//! 2. resolve (`resolve.rs`): the router's already-safe decoded path is
//!    opened beneath the root — a file, `dir/index.html`, or a 301 to
//!    `/dir/`; never outside the root, inside the CGI directory, a dot-file
//!    or a non-regular file;
//! 3. range wanted? (`range.rs` parses, `conditional.rs` checks `If-Range`
//!    against the identity file's validators): GET only;
//! 4. representation (`compression.rs`): identity when a range applies,
//!    else a precompressed `FILE.br`/`FILE.gz` sibling or on-the-fly gzip
//!    of a text file, as `Accept-Encoding` allows; each with its own ETag;
//! 5. preconditions (`conditional.rs`): 412, or 304 for the chosen
//!    representation;
//! 6. range decision: 206 for one range, 416 when nothing is satisfiable,
//!    the whole file for several (see `range.rs`);
//! 7. body (`file_body.rs`): small files in one read, larger ones streamed
//!    in chunks, gzipped as they stream when step 4 said so — or, when the
//!    front end sends files itself (`server/static_h1.rs`, with sendfile),
//!    no body but a [`FileRange`] for it to send.
//!
//! Step 2 (`lookup.rs`) goes through the open-file cache (`cache.rs`) when it is on: a
//! hit is an [`Entry`] with the file open, its validators and type made
//! and, for a small file, its bytes, so steps 3 to 7 make no system call.
//! A 200 of such bytes comes with a [`Memo`] (`memo.rs`), which lets the
//! front end answer the same request again without steps 1 to 7 while
//! the cache holds the same entry.

mod cache;
mod compression;
mod conditional;
mod entry;
mod file_body;
mod lookup;
mod memo;
mod range;
pub mod resolve;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};

use crate::body::{self, Body};
use crate::error::Error;
use crate::uri_path::SafePath;
use cache::OpenFileCache;
pub use cache::{CacheLimits, CacheStats};
use compression::{Accepted, Coding, GzipBody};
use conditional::{Precondition, Validators};
use entry::{Entry, Source};
use file_body::FileBody;
pub use file_body::{in_page_cache, read_append, read_now, shrank};
use lookup::Looked;
pub use memo::Memo;
use resolve::Resolver;

/// Files (or parts) up to this size are read in one `pread` on the worker
/// thread — page-cache fast, no trip to the blocking pool; larger ones are
/// streamed by `FileBody`.
const SMALL_FILE: u64 = 64 * 1024;

/// Input chunk for on-the-fly gzip: bounds the CPU one poll spends
/// compressing on a worker thread (about a millisecond).
const GZIP_CHUNK: usize = 64 * 1024;

/// For a caller that sends file bytes itself ([`StaticFiles::serve_sending_files`]):
/// the bytes an identity GET's body would have held; the body is empty and
/// `Content-Length` is already `len`. The file may be the open-file
/// cache's, shared: send with an offset, never move its position.
#[derive(Debug)]
pub struct FileRange {
    pub file: Arc<File>,
    pub offset: u64,
    pub len: u64,
}

/// What [`StaticFiles::serve_sending_files`] answers: the response, the
/// file bytes for the caller to send, and a [`Memo`] when the same request
/// may get the same answer again without the pipeline.
pub struct Sending {
    pub resp: Response<Body>,
    pub file: Option<FileRange>,
    pub memo: Option<Memo>,
}

pub struct StaticFiles {
    resolver: Resolver,
    cache: Option<OpenFileCache>,
    /// `Cache-Control` for file responses, if configured.
    cache_control: Option<HeaderValue>,
}

/// The bytes chosen for a response: which file, in which coding.
struct Representation {
    entry: Arc<Entry>,
    kind: Kind,
    /// The response depends on `Accept-Encoding` (`Vary`).
    vary: bool,
}

enum Kind {
    /// The file as it is.
    Identity,
    /// A `FILE.br` / `FILE.gz` sibling.
    Precompressed(Coding, Arc<Source>),
    /// The file gzipped while sending.
    GzipOnTheFly,
}

impl StaticFiles {
    /// `root` and `hidden_dir` (the CGI directory) must be canonical;
    /// `cache_control` was validated as a header value with the config;
    /// `cache`: the open-file cache's limits, None for no cache.
    pub fn new(
        root: PathBuf,
        hidden_dir: Option<PathBuf>,
        cache_control: Option<&str>,
        index: Vec<String>,
        follow: crate::config::FollowSymlinks,
        cache: Option<CacheLimits>,
    ) -> io::Result<StaticFiles> {
        let cache_control = cache_control
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let resolver = Resolver::new(root, hidden_dir, index, follow)?;
        let cache = cache.map(|limits| OpenFileCache::new(limits, resolver.root_dir().clone()));
        Ok(StaticFiles {
            resolver,
            cache,
            cache_control,
        })
    }

    pub fn root(&self) -> &Path {
        self.resolver.root()
    }

    /// What the open-file cache holds (None: no cache).
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(OpenFileCache::stats)
    }

    /// Whether `path` names something to serve (a file, or a directory
    /// with an index), without serving it.
    pub fn resolves(&self, path: &SafePath) -> Result<(), Error> {
        self.lookup(path).map(drop)
    }

    pub async fn serve(
        &self,
        method: &Method,
        path: &SafePath,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Response<Body>, Error> {
        Ok(self.answer(method, path, uri, headers, false)?.resp)
    }

    /// [`serve`](Self::serve), but the bytes of an identity GET come back
    /// as a [`FileRange`] for the caller to send (with sendfile) — unless
    /// the cache has them in memory: then they are the body (and a 200 of
    /// them comes with a [`Memo`]).
    pub fn serve_sending_files(
        &self,
        method: &Method,
        path: &SafePath,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Sending, Error> {
        self.answer(method, path, uri, headers, true)
    }

    fn answer(
        &self,
        method: &Method,
        path: &SafePath,
        uri: &Uri,
        headers: &HeaderMap,
        sends_files: bool,
    ) -> Result<Sending, Error> {
        if method != Method::GET && method != Method::HEAD {
            return Err(Error::MethodNotAllowed("GET, HEAD"));
        }
        let entry = match self.lookup(path)? {
            Looked::AddSlash => return Ok(Sending::response(redirect_with_slash(path, uri))),
            Looked::File(entry) => entry,
        };
        let ranges = requested_ranges(method, headers, &entry.main.validators);
        let rep = if ranges.is_some() {
            Representation::identity(entry)
        } else {
            self.negotiate(headers, entry)
        };
        match conditional::evaluate(headers, rep.validators()) {
            Precondition::Proceed => {}
            Precondition::NotModified => return Ok(Sending::response(self.not_modified(&rep))),
            Precondition::Failed => return Err(Error::PreconditionFailed),
        }
        let size = rep.source().found.meta.len();
        let part = match ranges.map(|specs| range::decide(&specs, size)) {
            Some(range::Decision::Unsatisfiable) => {
                return Err(Error::RangeNotSatisfiable { size });
            }
            Some(range::Decision::Part { start, end }) => Some((start, end)),
            Some(range::Decision::Full) | None => None,
        };
        let memo = match rep.kind {
            Kind::Identity if part.is_none() && sends_files => {
                Memo::new(lookup::cache_key(path), &rep.entry, None)
            }
            Kind::Precompressed(coding, _) if sends_files => {
                Memo::new(lookup::cache_key(path), &rep.entry, Some(coding))
            }
            _ => None,
        };
        let (resp, file) = self.respond(method, rep, part, sends_files)?;
        Ok(Sending { resp, file, memo })
    }

    /// Step 4: the best coding the client accepts and we can offer.
    fn negotiate(&self, headers: &HeaderMap, entry: Arc<Entry>) -> Representation {
        let accepted = Accepted::parse(headers);
        for coding in accepted.in_order() {
            if let Some(sibling) = entry.sibling(coding, &self.resolver) {
                return Representation {
                    entry,
                    kind: Kind::Precompressed(coding, sibling),
                    vary: true,
                };
            }
            let len = entry.main.found.meta.len();
            if coding == Coding::Gzip && entry.text && len >= compression::MIN_ON_THE_FLY {
                return Representation {
                    entry,
                    kind: Kind::GzipOnTheFly,
                    vary: true,
                };
            }
        }
        Representation::identity(entry)
    }

    /// Step 7: status, headers and body of a 200 or 206.
    fn respond(
        &self,
        method: &Method,
        rep: Representation,
        part: Option<(u64, u64)>,
        sends_files: bool,
    ) -> Result<(Response<Body>, Option<FileRange>), Error> {
        let source = rep.source();
        let size = source.found.meta.len();
        let (start, end) = part.unwrap_or((0, size));
        let gzip = matches!(rep.kind, Kind::GzipOnTheFly);
        let mut resp = Response::new(body::empty());
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, rep.entry.content_type.clone());
        if !gzip {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
        }
        if part.is_some() {
            let range = format!("bytes {start}-{}/{size}", end - 1);
            if let Ok(v) = HeaderValue::from_str(&range) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        if let Some(c) = rep.coding() {
            h.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(c.token()),
            );
        }
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        self.cache_headers(&rep, h);
        if part.is_some() {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        if method != Method::GET {
            return Ok((resp, None));
        }
        if gzip {
            *resp.body_mut() = GzipBody::wrap(file_body(source, 0, size, GZIP_CHUNK)?);
        } else if sends_files && source.bytes.is_none() {
            let file = FileRange {
                file: source.found.file.clone(),
                offset: start,
                len: end - start,
            };
            return Ok((resp, Some(file)));
        } else {
            *resp.body_mut() = file_body(source, start, end - start, file_body::CHUNK)?;
        }
        Ok((resp, None))
    }

    /// 304: the headers a 200 would have had that matter to a cache
    /// (RFC 9110 §15.4.5), no body.
    fn not_modified(&self, rep: &Representation) -> Response<Body> {
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        self.cache_headers(rep, resp.headers_mut());
        resp
    }

    /// `ETag`, `Last-Modified`, `Vary`, `Cache-Control`.
    fn cache_headers(&self, rep: &Representation, h: &mut HeaderMap) {
        rep.validators().insert_into(h);
        if rep.vary {
            h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        if let Some(cc) = &self.cache_control {
            h.insert(header::CACHE_CONTROL, cc.clone());
        }
    }
}

impl Sending {
    fn response(resp: Response<Body>) -> Sending {
        Sending {
            resp,
            file: None,
            memo: None,
        }
    }
}

impl Representation {
    /// The file as it is. `Vary` still goes on text files: another client
    /// may get them compressed.
    fn identity(entry: Arc<Entry>) -> Representation {
        let vary = entry.text;
        Representation {
            entry,
            kind: Kind::Identity,
            vary,
        }
    }

    /// The file whose bytes are sent.
    fn source(&self) -> &Source {
        match &self.kind {
            Kind::Precompressed(_, sibling) => sibling,
            Kind::Identity | Kind::GzipOnTheFly => &self.entry.main,
        }
    }

    /// Each coding has its own: a sibling is validated by its own size and
    /// time, on-the-fly gzip by the file's plus a suffix.
    fn validators(&self) -> &Validators {
        match &self.kind {
            Kind::Identity => &self.entry.main.validators,
            Kind::Precompressed(_, sibling) => &sibling.validators,
            Kind::GzipOnTheFly => self.entry.gzip_validators(),
        }
    }

    /// `Content-Encoding`; None for identity.
    fn coding(&self) -> Option<Coding> {
        match &self.kind {
            Kind::Identity => None,
            Kind::Precompressed(coding, _) => Some(*coding),
            Kind::GzipOnTheFly => Some(Coding::Gzip),
        }
    }
}

/// Step 3: the byte ranges to honour, if any. Only GET has ranges (RFC
/// 9110 §14.2); a malformed header or a failed `If-Range` means "send the
/// whole file".
fn requested_ranges(
    method: &Method,
    headers: &HeaderMap,
    identity: &Validators,
) -> Option<Vec<range::Spec>> {
    if method != Method::GET {
        return None;
    }
    let specs = range::parse(headers.get(header::RANGE)?.to_str().ok()?)?;
    conditional::if_range_holds(headers, identity).then_some(specs)
}

/// `len` bytes of `source` from `offset`: from its cached bytes, read now
/// when small, else streamed in `chunk`-sized reads.
fn file_body(source: &Source, offset: u64, len: u64, chunk: usize) -> Result<Body, Error> {
    if let Some(bytes) = &source.bytes {
        let range = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(offset + len).ok())
            .filter(|(start, end)| start <= end && *end <= bytes.len());
        let (start, end) =
            range.ok_or_else(|| Error::Internal("range outside a cached file".into()))?;
        return Ok(body::full(bytes.slice(start..end)));
    }
    let found = &source.found;
    if len <= SMALL_FILE {
        let bytes = file_body::read_now(&found.file, offset, len as usize)
            .map_err(|e| Error::Internal(format!("reading {}: {e}", found.rel.display())))?;
        return Ok(body::full(bytes));
    }
    Ok(FileBody::new(found.file.clone(), offset, len, chunk).boxed())
}

/// 301 to the directory `path` with a slash, built from the normalised
/// path, never the raw one: `GET //docs` must not answer `Location:
/// //docs/`, which a browser follows to the host `docs`.
fn redirect_with_slash(path: &SafePath, uri: &Uri) -> Response<Body> {
    let mut location = path.to_encoded_url_path();
    location.push('/');
    if let Some(q) = uri.query() {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// `Content-Type` from the extension, with `charset=utf-8` on text, and
/// whether the type is text (the types worth compressing).
fn content_type(file: &Path) -> (HeaderValue, bool) {
    let raw = file
        .extension()
        .and_then(|e| e.to_str())
        .and_then(|e| mime_guess::from_ext(e).first_raw())
        .unwrap_or("application/octet-stream");
    if !is_text(raw) {
        return (HeaderValue::from_static(raw), false);
    }
    let value = HeaderValue::from_str(&format!("{raw}; charset=utf-8"))
        .unwrap_or(HeaderValue::from_static("text/plain; charset=utf-8"));
    (value, true)
}

/// `text/*`, JavaScript, JSON, XML and SVG (also as `+json`/`+xml` suffix).
fn is_text(mime: &str) -> bool {
    let Some((kind, sub)) = mime.split_once('/') else {
        return false;
    };
    let (sub, suffix) = sub.split_once('+').unwrap_or((sub, ""));
    kind == "text"
        || matches!(sub, "javascript" | "json" | "xml" | "svg")
        || matches!(suffix, "json" | "xml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let table = [
            ("a.html", "text/html; charset=utf-8", true),
            ("a.css", "text/css; charset=utf-8", true),
            ("a.txt", "text/plain; charset=utf-8", true),
            ("a.json", "application/json; charset=utf-8", true),
            ("a.svg", "image/svg+xml; charset=utf-8", true),
            ("a.xml", "text/xml; charset=utf-8", true),
            ("a.png", "image/png", false),
            ("a.bin", "application/octet-stream", false),
            ("noext", "application/octet-stream", false),
            ("a.gz", "application/gzip", false),
        ];
        for (name, want, text) in table {
            let (v, t) = content_type(Path::new(name));
            assert_eq!((v.to_str().unwrap(), t), (want, text), "{name}");
        }
        let (js, text) = content_type(Path::new("a.js"));
        assert!(text && js.to_str().unwrap().ends_with("javascript; charset=utf-8"));
    }
}
