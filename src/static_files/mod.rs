//! Static files under `--root`: GET and HEAD, `/dir/` → `dir/index.html`,
//! `/dir` → 301 `/dir/`, no listings, no escape from the root.
//!
//! Steps: 1. the router hands over an already-safe decoded path
//! (`uri_path`); 2. `resolve` canonicalizes it and checks it is inside the
//! root and not inside the CGI directory (programs are never served as
//! source); 3. small files are sent from memory, large ones streamed in
//! chunks by `FileBody`.

mod file_body;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use http::{header, HeaderValue, Method, Response, StatusCode, Uri};

use crate::body::{self, Body};
use crate::error::Error;
use crate::uri_path::SafePath;
use file_body::FileBody;

/// Files up to this size are read whole; larger ones are streamed.
const SMALL_FILE: u64 = 64 * 1024;

pub struct StaticFiles {
    /// Canonical document root.
    root: PathBuf,
    /// Canonical CGI directory, never served as files.
    hidden_dir: Option<PathBuf>,
}

enum Resolved {
    File(PathBuf),
    /// A directory asked for without its trailing slash.
    AddSlash,
}

impl StaticFiles {
    pub fn new(root: PathBuf, hidden_dir: Option<PathBuf>) -> StaticFiles {
        StaticFiles { root, hidden_dir }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub async fn serve(
        &self,
        method: &Method,
        path: &SafePath,
        uri: &Uri,
    ) -> Result<Response<Body>, Error> {
        if method != Method::GET && method != Method::HEAD {
            return Err(Error::MethodNotAllowed("GET, HEAD"));
        }
        let file = match self.resolve(path)? {
            Resolved::AddSlash => return Ok(redirect_with_slash(uri)),
            Resolved::File(f) => f,
        };
        let opened = std::fs::File::open(&file).map_err(|_| Error::NotFound)?;
        let meta = opened
            .metadata()
            .map_err(|e| Error::Internal(format!("{}: {e}", file.display())))?;
        let len = meta.len();
        let body = if method == Method::HEAD {
            body::empty()
        } else if len <= SMALL_FILE {
            let mut data = Vec::with_capacity(len as usize);
            use std::io::Read;
            (&opened)
                .take(SMALL_FILE)
                .read_to_end(&mut data)
                .map_err(|e| Error::Internal(format!("reading {}: {e}", file.display())))?;
            body::full(data)
        } else {
            FileBody::new(tokio::fs::File::from_std(opened), len).boxed()
        };
        let mut resp = Response::new(body);
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, content_type(&file));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        if let Ok(mtime) = meta.modified() {
            if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(mtime)) {
                h.insert(header::LAST_MODIFIED, v);
            }
            if let Ok(v) = HeaderValue::from_str(&etag(len, mtime)) {
                h.insert(header::ETAG, v);
            }
        }
        Ok(resp)
    }

    fn resolve(&self, path: &SafePath) -> Result<Resolved, Error> {
        let joined = path.join_to(&self.root);
        let canonical = std::fs::canonicalize(&joined).map_err(|_| Error::NotFound)?;
        self.check_inside(&canonical)?;
        let meta = std::fs::metadata(&canonical).map_err(|_| Error::NotFound)?;
        if !meta.is_dir() {
            if path.trailing_slash {
                return Err(Error::NotFound);
            }
            return Ok(Resolved::File(canonical));
        }
        if !path.trailing_slash && !path.segments.is_empty() {
            return Ok(Resolved::AddSlash);
        }
        let index = std::fs::canonicalize(canonical.join("index.html")).map_err(|_| {
            Error::Forbidden(format!(
                "{}: no index.html (listings are off)",
                joined.display()
            ))
        })?;
        self.check_inside(&index)?;
        Ok(Resolved::File(index))
    }

    fn check_inside(&self, canonical: &Path) -> Result<(), Error> {
        if !canonical.starts_with(&self.root) {
            return Err(Error::NotFound);
        }
        if self
            .hidden_dir
            .as_ref()
            .is_some_and(|d| canonical.starts_with(d))
        {
            return Err(Error::NotFound);
        }
        Ok(())
    }
}

fn redirect_with_slash(uri: &Uri) -> Response<Body> {
    let mut location = format!("{}/", uri.path());
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

fn content_type(file: &Path) -> HeaderValue {
    let mime = mime_guess::from_path(file).first_or_octet_stream();
    let text = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            mime.subtype().as_str(),
            "javascript" | "json" | "xml" | "svg"
        );
    let value = if text && mime.get_param("charset").is_none() {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

fn etag(len: u64, mtime: SystemTime) -> String {
    let d = mtime
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format!("\"{:x}-{:x}{:x}\"", len, d.as_secs(), d.subsec_nanos())
}
