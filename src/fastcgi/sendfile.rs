//! `x_sendfile` (SPEC.md "Sites and rules"): a script of a route that
//! lists directories answers with `X-Sendfile: /abs/path` (lighttpd,
//! Apache mod_xsendfile) or `X-Accel-Redirect: /abs/path` (nginx), having
//! checked access itself; cgihost then sends that file as it sends
//! static files — ranges, validators, compression, sendfile — keeping the
//! script's other headers. The header never reaches the client.
//!
//! The path must lie in one of the route's directories and resolves
//! through the static resolver rooted there (no `..`, no dot-files, no
//! symlink out): anything else is a 502 with a log line, never a file.

use std::path::{Component, Path, PathBuf};

use http::{header, HeaderMap, HeaderName, Response};

use crate::body::Body;
use crate::config::{ConfigError, FollowSymlinks};
use crate::error::Error;
use crate::static_files::StaticFiles;
use crate::uri_path::SafePath;

const X_SENDFILE: HeaderName = HeaderName::from_static("x-sendfile");
const X_ACCEL_REDIRECT: HeaderName = HeaderName::from_static("x-accel-redirect");

/// The directories a route's scripts may hand files from.
pub struct SendFileDirs {
    dirs: Vec<(PathBuf, StaticFiles)>,
}

impl SendFileDirs {
    /// `dirs` are canonical (checked with the config).
    pub fn new(dirs: &[PathBuf], cache_control: Option<&str>) -> Result<SendFileDirs, ConfigError> {
        let dirs = dirs
            .iter()
            .map(|d| {
                let statics = StaticFiles::new(
                    d.clone(),
                    None,
                    cache_control,
                    Vec::new(),
                    FollowSymlinks::No,
                    // Scripts name files anywhere in these directories:
                    // resolved afresh each time, not cached.
                    None,
                )
                .map_err(|e| ConfigError(format!("x_sendfile: {}: {e}", d.display())))?;
                Ok((d.clone(), statics))
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(SendFileDirs { dirs })
    }

    /// The file a script named, taken out of its headers (both header
    /// names are removed whatever happens next).
    pub fn take_target(headers: &mut HeaderMap) -> Option<Result<String, Error>> {
        let sendfile = headers.remove(X_SENDFILE);
        let accel = headers.remove(X_ACCEL_REDIRECT);
        let value = sendfile.or(accel)?;
        Some(
            value
                .to_str()
                .map(str::to_string)
                .map_err(|_| Error::BadGateway("X-Sendfile: not a text path".into())),
        )
    }

    /// Serve `target` for the request in `parts`, with the script's other
    /// `headers` kept (its `Content-Type` wins over the file's).
    pub async fn serve(
        &self,
        target: &str,
        parts: &http::request::Parts,
        script_headers: HeaderMap,
        tag: &str,
    ) -> Result<Response<Body>, Error> {
        let refuse = |why: &str| Error::BadGateway(format!("{tag}: X-Sendfile {target:?}: {why}"));
        let path = Path::new(target);
        let clean = path.is_absolute()
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !clean {
            return Err(refuse("not a clean absolute path"));
        }
        let Some((dir, statics)) = self.dirs.iter().find(|(d, _)| path.starts_with(d)) else {
            return Err(refuse("outside the route's x_sendfile directories"));
        };
        let segments: Option<Vec<String>> = path
            .strip_prefix(dir)
            .map_err(|_| refuse("outside the route's x_sendfile directories"))?
            .components()
            .map(|c| c.as_os_str().to_str().map(str::to_string))
            .collect();
        let segments = segments.ok_or_else(|| refuse("not UTF-8"))?;
        if segments.is_empty() || segments.iter().any(|s| s.starts_with('.')) {
            return Err(refuse("a directory or a dot-file"));
        }
        let rel = SafePath {
            segments,
            trailing_slash: false,
        };
        let mut resp = statics
            .serve(&parts.method, &rel, &parts.uri, &parts.headers)
            .await?;
        merge_script_headers(resp.headers_mut(), script_headers);
        Ok(resp)
    }
}

/// The script's headers over the file's, except those that describe the
/// bytes (length, range, coding, validators), which are the file's.
fn merge_script_headers(file: &mut HeaderMap, script: HeaderMap) {
    let mut last = None;
    for (name, value) in script {
        let name = match name {
            Some(n) => {
                last = Some(n.clone());
                n
            }
            None => match &last {
                Some(n) => n.clone(),
                None => continue,
            },
        };
        let the_files = matches!(
            name,
            header::CONTENT_LENGTH
                | header::CONTENT_RANGE
                | header::CONTENT_ENCODING
                | header::TRANSFER_ENCODING
                | header::ETAG
                | header::LAST_MODIFIED
                | header::ACCEPT_RANGES
                | header::VARY
        );
        if the_files {
            continue;
        }
        if name == header::CONTENT_TYPE {
            file.insert(name, value);
        } else {
            file.append(name, value);
        }
    }
}
