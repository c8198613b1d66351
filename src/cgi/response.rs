//! The CGI response header block (RFC 3875 §6): finding where it ends,
//! parsing it, and deciding what kind of response it is. Shared by CGI and
//! FastCGI — one parser, two transports.
//!
//! Accepted: `Name: value` lines ended by LF or CRLF, a blank line after the
//! last one. `Status: NNN reason`, `Location:` and `Content-Type:` are
//! understood; other headers pass through, except hop-by-hop ones the server
//! owns (`Connection`, `Transfer-Encoding`, …).

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// Where the header block ends in `buf`: `(header_bytes, body_start)`.
/// The header bytes exclude the blank line. Handles LF, CRLF and mixes.
pub fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    if buf.starts_with(b"\r\n") {
        return Some((0, 2));
    }
    if buf.starts_with(b"\n") {
        return Some((0, 1));
    }
    let mut i = 0;
    while let Some(off) = memchr(b'\n', &buf[i..]) {
        let nl = i + off;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some((nl + 1, nl + 2)),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some((nl + 1, nl + 3)),
            _ => i = nl + 1,
        }
    }
    None
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// A parsed header block.
#[derive(Debug, Default)]
pub struct CgiHead {
    /// From `Status:` (code, reason phrase as sent).
    pub status: Option<(StatusCode, Option<String>)>,
    pub location: Option<String>,
    pub has_content_type: bool,
    /// From `Content-Length`: how long the body is.
    pub content_length: Option<u64>,
    /// Every header to send to the client (Content-Type and Location included).
    pub headers: HeaderMap,
}

/// What the script asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Disposition {
    /// An ordinary document (status defaults to 200).
    Document,
    /// `Location: /path` without `Status`: serve that path internally as a GET.
    LocalRedirect(String),
    /// `Location: scheme://…` without `Status`: 302 to the client.
    ClientRedirect,
}

/// Headers the server owns; a script may not set them.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
    )
}

/// Parse the header block (without its terminating blank line).
pub fn parse_head(block: &[u8]) -> Result<CgiHead, String> {
    let mut head = CgiHead::default();
    for raw_line in block.split(|&b| b == b'\n') {
        let line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
        if line.is_empty() {
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err("folded (continuation) header line".into());
        }
        let colon = memchr(b':', line).ok_or_else(|| {
            format!(
                "header line without ':': {:?}",
                String::from_utf8_lossy(&line[..line.len().min(60)])
            )
        })?;
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| {
            format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(&line[..colon])
            )
        })?;
        let value = trim(&line[colon + 1..]);
        let value = HeaderValue::from_bytes(value)
            .map_err(|_| format!("invalid value for header {name}"))?;
        match name.as_str() {
            "status" => head.status = Some(parse_status(&value)?),
            "location" => {
                let loc = value
                    .to_str()
                    .map_err(|_| "Location is not ASCII".to_string())?;
                head.location = Some(loc.to_string());
                head.headers.append(name, value);
            }
            "content-type" => {
                head.has_content_type = true;
                head.headers.insert(name, value);
            }
            "content-length" => {
                head.content_length = value.to_str().ok().and_then(|v| v.parse().ok());
                head.headers.append(name, value);
            }
            _ if is_hop_by_hop(&name) => {}
            _ => {
                head.headers.append(name, value);
            }
        }
    }
    Ok(head)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

fn parse_status(v: &HeaderValue) -> Result<(StatusCode, Option<String>), String> {
    let s = v.to_str().map_err(|_| "Status is not ASCII".to_string())?;
    let (code, reason) = match s.split_once(' ') {
        Some((c, r)) => (c, Some(r.trim().to_string()).filter(|r| !r.is_empty())),
        None => (s, None),
    };
    if code.len() != 3 {
        return Err(format!("bad Status {s:?}"));
    }
    let code = code
        .parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .filter(|c| c.as_u16() >= 200)
        .ok_or_else(|| format!("bad Status {s:?}"))?;
    Ok((code, reason))
}

impl CgiHead {
    /// Classify per RFC 3875 §6.2, or explain why the output is not a valid
    /// CGI response.
    pub fn disposition(&self) -> Result<Disposition, String> {
        if let Some(loc) = &self.location {
            if self.status.is_none() {
                if loc.starts_with('/') && !loc.starts_with("//") {
                    return Ok(Disposition::LocalRedirect(loc.clone()));
                }
                if loc.contains("://") {
                    return Ok(Disposition::ClientRedirect);
                }
                return Err(format!(
                    "Location {loc:?} is neither a /path nor an absolute URL"
                ));
            }
            return Ok(Disposition::Document);
        }
        let bodyless_status = self
            .status
            .as_ref()
            .is_some_and(|(s, _)| *s == StatusCode::NO_CONTENT || *s == StatusCode::NOT_MODIFIED);
        if !self.has_content_type && !bodyless_status {
            return Err("no Content-Type, Location or Status header in the script's output".into());
        }
        Ok(Disposition::Document)
    }

    /// The status to send for a document or client redirect.
    pub fn response_status(&self, disposition: &Disposition) -> StatusCode {
        match (&self.status, disposition) {
            (Some((s, _)), _) => *s,
            (None, Disposition::ClientRedirect) => StatusCode::FOUND,
            (None, _) => StatusCode::OK,
        }
    }
}

/// A header block classified, ready to become a response.
pub enum Classified {
    /// `Location: /path` with no Status: serve that path internally.
    LocalRedirect(String),
    /// A document or client redirect: status, reason phrase if the script
    /// gave its own, headers, and the body's length when it is declared.
    Respond {
        status: StatusCode,
        reason: Option<String>,
        headers: HeaderMap,
        length: Option<u64>,
    },
}

/// Parse and classify a header block (CGI and FastCGI alike).
pub fn classify(block: &[u8]) -> Result<Classified, String> {
    let head = parse_head(block)?;
    let disposition = head.disposition()?;
    if let Disposition::LocalRedirect(location) = disposition {
        return Ok(Classified::LocalRedirect(location));
    }
    let status = head.response_status(&disposition);
    let reason = head.status.and_then(|(_, r)| r);
    Ok(Classified::Respond {
        status,
        reason,
        headers: head.headers,
        length: head.content_length,
    })
}

/// The response for a classified head and a streaming body. A reason
/// phrase that differs from the standard one (`Status: 403 Go Away`) is
/// kept.
pub fn build_response(
    status: StatusCode,
    reason: Option<String>,
    headers: HeaderMap,
    body: crate::body::Body,
) -> http::Response<crate::body::Body> {
    let mut resp = http::Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    if let Some(reason) = reason.filter(|r| Some(r.as_str()) != status.canonical_reason()) {
        if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(bytes::Bytes::from(reason)) {
            resp.extensions_mut().insert(phrase);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_end_with_lf_crlf_and_mixed() {
        assert_eq!(find_head_end(b"A: b\n\nbody"), Some((5, 6)));
        assert_eq!(find_head_end(b"A: b\r\n\r\nbody"), Some((6, 8)));
        assert_eq!(find_head_end(b"A: b\r\n\nbody"), Some((6, 7)));
        assert_eq!(find_head_end(b"\r\nbody"), Some((0, 2)));
        assert_eq!(find_head_end(b"A: b\r\nC: d\r\n"), None);
    }

    #[test]
    fn parses_status_location_and_passthrough() {
        let h = parse_head(b"Status: 403 Go Away\r\nContent-Type: text/plain\r\nX-A: 1\r\nX-A: 2\r\nConnection: close").unwrap();
        assert_eq!(
            h.status,
            Some((StatusCode::FORBIDDEN, Some("Go Away".into())))
        );
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        assert!(h.headers.get("connection").is_none());
        assert_eq!(h.disposition().unwrap(), Disposition::Document);

        let h = parse_head(b"Location: /other?x=1").unwrap();
        assert_eq!(
            h.disposition().unwrap(),
            Disposition::LocalRedirect("/other?x=1".into())
        );
        let h = parse_head(b"Location: https://example.org/").unwrap();
        assert_eq!(h.disposition().unwrap(), Disposition::ClientRedirect);
        assert_eq!(
            h.response_status(&Disposition::ClientRedirect),
            StatusCode::FOUND
        );
    }

    #[test]
    fn rejects_bad_blocks() {
        assert!(parse_head(b"no colon here").is_err());
        assert!(parse_head(b"Status: 2000 x\nContent-Type: a/b").is_err());
        assert!(parse_head(b"Status: 099\nContent-Type: a/b").is_err());
        assert!(parse_head(b"Bad Name: x").is_err());
        assert!(parse_head(b"X-A: 1\n  folded").is_err());
        assert!(parse_head(b"X-Only: 1").unwrap().disposition().is_err());
        assert!(parse_head(b"Status: 204").unwrap().disposition().is_ok());
    }
}
