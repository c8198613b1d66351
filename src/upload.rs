//! Upload offloading (`--upload-dir PREFIX=DIR`, `[[upload]]`): for
//! `multipart/form-data` requests under PREFIX, cgihost parses the body with
//! multer as it streams in, writes every file part straight to a new file in
//! DIR, and hands the handler (CGI or FastCGI) a small
//! `application/x-www-form-urlencoded` body instead, where each file field
//! `F` becomes `F.name`, `F.path`, `F.size`, `F.content_type`, `F.sha256`
//! and ordinary fields pass through unchanged.
//!
//! 1. files are created with O_EXCL, mode 0600, under unique names;
//! 2. limits: per file and per request (413), number of parts (413), size
//!    of the ordinary fields kept in memory (413); a malformed body is 400,
//!    and so are a preamble or a part header block over its cap
//!    (`framing`: multer would buffer those whole);
//! 3. generated names cannot be forged: a client field (or query
//!    parameter) whose name ends like one (`.path`, `_path`, …) is a 400;
//! 4. an [`UploadGuard`] owns every file created: on any failure, a client
//!    that goes away, or after the response (unless `keep`), what the handler
//!    did not move away is removed.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};

use crate::body::ReqBody;
use crate::error::Error;
use crate::uri_path::SafePath;

mod framing;
mod names;
use names::*;

pub use framing::Limits as FramingLimits;

/// One offloading rule.
#[derive(Debug, Clone)]
pub struct UploadRule {
    /// URL prefix (decoded segments; segment boundary).
    pub prefix: Vec<String>,
    pub dir: PathBuf,
    pub max_file: u64,
    pub max_request: u64,
    pub max_parts: usize,
    /// Caps on the preamble and on each part's header block.
    pub framing: FramingLimits,
    /// Leave files in place after the response.
    pub keep: bool,
}

/// Ordinary (non-file) fields are held in memory to build the new body; cap them.
const MAX_FIELDS_BYTES: usize = 1 << 20;
const MAX_FILENAME: usize = 255;

/// Removes the files of one request when dropped, unless kept.
#[derive(Debug, Default)]
pub struct UploadGuard {
    files: Vec<PathBuf>,
    keep: bool,
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for f in &self.files {
            // Already moved away by the handler: nothing to do.
            let _ = std::fs::remove_file(f);
        }
    }
}

impl UploadGuard {
    /// The handler ran: with `keep`, the files stay after the response.
    /// (Until then they are removed on any failure.)
    pub fn keep_if(mut self, keep: bool) -> UploadGuard {
        self.keep = keep;
        self
    }
}

/// The rule for `path`, if any (longest prefix wins).
pub fn rule_for<'a>(rules: &'a [UploadRule], path: &SafePath) -> Option<&'a UploadRule> {
    rules
        .iter()
        .filter(|r| path.segments.starts_with(&r.prefix))
        .max_by_key(|r| r.prefix.len())
}

/// Is this request a multipart form?
pub fn is_multipart<B>(req: &Request<B>) -> Option<String> {
    let ct = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    if !ct
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return None;
    }
    Some(ct.to_string())
}

/// Parse the multipart body into files in the rule's directory and return
/// the request rewritten with the urlencoded description, plus the guard
/// that owns the files.
pub async fn offload(
    req: Request<ReqBody>,
    content_type: &str,
    rule: &UploadRule,
) -> Result<(Request<ReqBody>, UploadGuard), Error> {
    let boundary = multer::parse_boundary(content_type).map_err(|e| {
        Error::BadRequest(format!("multipart upload without a usable boundary: {e}"))
    })?;
    if let Some(n) = http_body::Body::size_hint(req.body()).exact() {
        if n > rule.max_request {
            return Err(too_large(format!(
                "upload of {n} bytes over the request cap of {}",
                rule.max_request
            )));
        }
    }
    if let Some(name) = req.uri().query().and_then(forged_query_name) {
        return Err(forged(&name, "query parameter"));
    }
    let (parts, body) = req.into_parts();
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(rule.max_request)
            .per_field(rule.max_file),
    );
    // multer buffers the preamble and each part's header block whole:
    // cap them before it sees the bytes.
    let mut body = framing::Capped::new(body, framing::Framing::new(&boundary, rule.framing));
    // multer borrows the body: after the close delimiter it is read to its
    // end here (`drain_epilogue`).
    let mut multipart =
        multer::Multipart::with_constraints((&mut body).into_data_stream(), boundary, constraints);
    let mut guard = UploadGuard::default();
    let mut out = Vec::with_capacity(512);
    let mut fields_bytes = 0usize;
    let mut count = 0usize;
    while let Some(mut field) = multipart.next_field().await.map_err(multer_error)? {
        count += 1;
        if count > rule.max_parts {
            return Err(too_large(format!(
                "more than {} parts in a multipart upload",
                rule.max_parts
            )));
        }
        let name = clean_text(field.name().unwrap_or(""));
        match field.file_name().map(clean_filename) {
            Some(client_name) => {
                let stored = store_file(&mut field, rule, &mut guard).await?;
                let values = [
                    client_name.as_str(),
                    &stored.path.to_string_lossy(),
                    &stored.size.to_string(),
                    stored.content_type.as_str(),
                    stored.sha256.as_str(),
                ];
                for (suffix, value) in GENERATED.into_iter().zip(values) {
                    append_pair(&mut out, &format!("{name}.{suffix}"), value);
                }
            }
            None => {
                if looks_generated(&name) {
                    return Err(forged(&name, "form field"));
                }
                let value = read_field(&mut field, &mut fields_bytes).await?;
                append_pair(&mut out, &name, &String::from_utf8_lossy(&value));
            }
        }
    }
    drop(multipart);
    drain_epilogue(&mut body).await;
    Ok((urlencoded_request(parts, out), guard))
}

/// Bytes after the close delimiter read (and ignored) before the response.
const MAX_EPILOGUE: usize = 64 * 1024;
/// How long the end of the body may take to arrive after the close delimiter.
const EPILOGUE_WAIT: Duration = Duration::from_secs(2);

/// Read what follows the close delimiter — an epilogue (ignored, RFC 2046
/// §5.1.1), a chunked body's last chunk — before answering, so the
/// connection stays usable. multer stops reading at the delimiter; a body
/// left unfinished made hyper close the connection after the response,
/// and when the last chunk arrived while the response was being written it
/// did so without saying `Connection: close`, failing the client's next
/// request. Past `MAX_EPILOGUE` bytes or `EPILOGUE_WAIT`, the rest is left
/// unread (hyper then ends the connection).
async fn drain_epilogue(body: &mut framing::Capped) {
    let drain = async {
        let mut left = MAX_EPILOGUE;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                match left.checked_sub(data.len()) {
                    Some(rest) => left = rest,
                    None => return,
                }
            }
        }
    };
    let _ = tokio::time::timeout(EPILOGUE_WAIT, drain).await;
}

/// A file part, saved.
struct Stored {
    path: std::path::PathBuf,
    size: u64,
    content_type: String,
    sha256: String,
}

/// Save a file part to a new file in the rule's dir (the guard removes it
/// unless the handler moved it or the rule keeps it).
async fn store_file(
    field: &mut multer::Field<'_>,
    rule: &UploadRule,
    guard: &mut UploadGuard,
) -> Result<Stored, Error> {
    let content_type = field
        .content_type()
        .map(|m| m.to_string())
        .unwrap_or_default();
    let (path, file) = create_unique(&rule.dir)?;
    guard.files.push(path.clone());
    let (size, sha256) = store_field(field, file, &path).await?;
    Ok(Stored {
        path,
        size,
        content_type,
        sha256,
    })
}

/// An ordinary field's value, counted against the cap on all of them.
async fn read_field(
    field: &mut multer::Field<'_>,
    fields_bytes: &mut usize,
) -> Result<Vec<u8>, Error> {
    let mut value = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multer_error)? {
        *fields_bytes += chunk.len();
        if *fields_bytes > MAX_FIELDS_BYTES {
            return Err(too_large(format!(
                "ordinary form fields over {MAX_FIELDS_BYTES} bytes in an offloaded upload"
            )));
        }
        value.extend_from_slice(&chunk);
    }
    Ok(value)
}

/// The request the handler gets: the description, urlencoded.
fn urlencoded_request(mut parts: http::request::Parts, out: Vec<u8>) -> Request<ReqBody> {
    let body = Bytes::from(out);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    parts.headers.remove(header::TRANSFER_ENCODING);
    let body = Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync();
    Request::from_parts(parts, body)
}

/// Chunks in flight between the parser and the file writer (bounds memory).
const WRITER_QUEUE: usize = 2;

/// Write one file part to `file`, hashing it. The hashing and writing run on
/// a blocking thread fed through a small bounded queue, so they overlap with
/// parsing (sha256 is the most expensive step) and never block the runtime.
async fn store_field(
    field: &mut multer::Field<'_>,
    file: std::fs::File,
    path: &Path,
) -> Result<(u64, String), Error> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(WRITER_QUEUE);
    let writer = tokio::task::spawn_blocking(move || {
        let mut file = std::io::BufWriter::with_capacity(64 * 1024, file);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            size += chunk.len() as u64;
            hasher.update(&chunk);
            file.write_all(&chunk)?;
        }
        file.flush()?;
        let hash: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok::<_, std::io::Error>((size, hash))
    });
    let parsed = async {
        while let Some(chunk) = field.chunk().await.map_err(multer_error)? {
            if tx.send(chunk).await.is_err() {
                break; // the writer failed; its error is reported below
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Error::Internal(format!("upload writer: {e}")))?
        .map_err(|e| write_error(path, e));
    parsed?;
    written
}

fn too_large(why: String) -> Error {
    Error::PayloadTooLarge(why)
}

fn write_error(path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("writing upload {}: {e}", path.display()))
}

fn multer_error(e: multer::Error) -> Error {
    match e {
        multer::Error::FieldSizeExceeded { limit, .. } => too_large(format!(
            "an uploaded file is over the per-file cap of {limit} bytes"
        )),
        multer::Error::StreamSizeExceeded { limit } => {
            too_large(format!("upload over the request cap of {limit} bytes"))
        }
        multer::Error::StreamReadFailed(e) => match e.downcast_ref::<framing::FramingError>() {
            Some(capped) => Error::BadRequest(capped.0.clone()),
            None => Error::BadRequest(format!("malformed multipart upload: {e}")),
        },
        other => Error::BadRequest(format!("malformed multipart upload: {other}")),
    }
}

/// A new file in `dir`: unique name, O_EXCL, mode 0600.
fn create_unique(dir: &Path) -> Result<(PathBuf, std::fs::File), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for _ in 0..8 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let random = RandomState::new().hash_one(n);
        let path = dir.join(format!("upload-{random:016x}-{n}"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::Internal(format!(
                    "cannot create a file in upload dir {}: {e}",
                    dir.display()
                )))
            }
        }
    }
    Err(Error::Internal(format!(
        "no unique file name in {}",
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_lose_paths_and_control_characters() {
        assert_eq!(clean_filename("../../etc/passwd"), "passwd");
        assert_eq!(clean_filename("C:\\Users\\x\\photo.jpg"), "photo.jpg");
        assert_eq!(clean_filename("a\0b\nc.txt"), "abc.txt");
        assert_eq!(clean_filename(".."), "");
        assert_eq!(clean_filename(&"x".repeat(1000)).len(), 255);
    }

    #[test]
    fn generated_looking_names_are_caught() {
        for name in [
            "doc.path",
            "doc_path",
            "doc path",
            "doc[path",
            "a.b.sha256",
            "x_content_type",
            "X.Size",
            ".name",
            "_name",
            "first_name",
        ] {
            assert!(looks_generated(name), "{name}");
        }
        for name in [
            "path",
            "name",
            "docpath",
            "doc.paths",
            "content_type",
            "doc.mime",
            "",
        ] {
            assert!(!looks_generated(name), "{name}");
        }
        assert_eq!(
            forged_query_name("a=1&doc%2Epath=/etc/passwd"),
            Some("doc.path".into())
        );
        assert_eq!(forged_query_name("doc+path=x"), Some("doc path".into()));
        assert_eq!(forged_query_name("a=1&b=doc.path&c%"), None);
    }

    #[test]
    fn pairs_are_form_encoded() {
        let mut out = Vec::new();
        append_pair(&mut out, "doc.name", "a b&c=d/é");
        append_pair(&mut out, "n", "1");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "doc.name=a+b%26c%3Dd%2F%C3%A9&n=1"
        );
    }
}
