//! The CGI response header block (RFC 3875 §6): finding where it ends,
//! parsing it, and deciding what kind of response it is. Shared by CGI and
//! FastCGI — one parser, two transports.
//!
//! Accepted: `Name: value` lines ended by LF or CRLF, a blank line after the
//! last one. `Status: NNN reason`, `Location:` and `Content-Type:` are
//! understood; other headers pass through, except hop-by-hop ones the server
//! owns (`Connection`, `Transfer-Encoding`, …).
//!
//! `Content-Length` frames the body, so it is checked here: digits only;
//! repeated (`3, 3` or two lines) it is merged into one when every value is
//! the same (RFC 9110 §8.6), and anything else is an invalid response (502)
//! — passed on, it would make hyper close the connection without a byte,
//! or reach an HTTP/2 client as it is. A status that never has a body
//! (1xx, 204, 304) loses its `Content-Length` and any body.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// Where the header block ends in `buf`: `(header_bytes, body_start)`.
/// The header bytes exclude the blank line. Handles LF, CRLF and mixes.
pub fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    find_head_end_from(buf, 0)
}

/// [`find_head_end`], looking only at line ends from `from` on: the
/// caller knows no blank line starts before it.
pub fn find_head_end_from(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    if from == 0 && buf.starts_with(b"\r\n") {
        return Some((0, 2));
    }
    if from == 0 && buf.starts_with(b"\n") {
        return Some((0, 1));
    }
    let mut i = from.min(buf.len());
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
    /// From `Content-Length`: how long the body is (the header is in
    /// `headers` once, as this number).
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
                head.content_length = Some(parse_content_length(&value, head.content_length)?);
            }
            _ if is_hop_by_hop(&name) => {}
            _ => {
                head.headers.append(name, value);
            }
        }
    }
    if let Some(n) = head.content_length {
        head.headers
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(head)
}

/// One `Content-Length` line (`42`, or a list `42, 42`) on top of the
/// value of the lines before it: the length, or why the block is invalid.
fn parse_content_length(value: &HeaderValue, before: Option<u64>) -> Result<u64, String> {
    let shown = || String::from_utf8_lossy(value.as_bytes()).into_owned();
    let mut length = before;
    for member in value.as_bytes().split(|&b| b == b',') {
        let member = trim(member);
        let n = std::str::from_utf8(member)
            .ok()
            .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|m| m.parse::<u64>().ok())
            .ok_or_else(|| format!("Content-Length {:?} is not a length", shown()))?;
        match length {
            Some(l) if l != n => {
                return Err(format!("conflicting Content-Length values {l} and {n}"));
            }
            _ => length = Some(n),
        }
    }
    length.ok_or_else(|| "empty Content-Length".to_string())
}

/// Statuses whose responses never have a body (RFC 9110 §6.4.1).
pub fn never_has_body(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
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
    Ok(Classified::respond(
        status,
        reason,
        head.headers,
        head.content_length,
    ))
}

impl Classified {
    /// A response to send: a status that never has a body gets none, and
    /// no `Content-Length` (length 0: the body ends at once).
    pub fn respond(
        status: StatusCode,
        reason: Option<String>,
        mut headers: HeaderMap,
        content_length: Option<u64>,
    ) -> Classified {
        let length = if never_has_body(status) {
            headers.remove(http::header::CONTENT_LENGTH);
            Some(0)
        } else {
            content_length
        };
        Classified::Respond {
            status,
            reason,
            headers,
            length,
        }
    }
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
    fn content_length_is_digits_and_one_value() {
        let ct = "Content-Type: text/plain\n";
        for (block, want) in [
            ("Content-Length: 42", Some(42)),
            ("Content-Length: 042", Some(42)),
            ("Content-Length: 3\nContent-Length: 3", Some(3)),
            ("Content-Length: 3, 3", Some(3)),
            ("X-A: 1", None),
        ] {
            let h = parse_head(format!("{ct}{block}").as_bytes()).unwrap();
            assert_eq!(h.content_length, want, "{block}");
            let values: Vec<_> = h.headers.get_all("content-length").iter().collect();
            match want {
                Some(n) => assert_eq!(values, [&HeaderValue::from(n)], "{block}"),
                None => assert!(values.is_empty(), "{block}"),
            }
        }
        for block in [
            "Content-Length: abc",
            "Content-Length: -1",
            "Content-Length: +3",
            "Content-Length: 3 4",
            "Content-Length: 0x10",
            "Content-Length: ",
            "Content-Length: 3,",
            "Content-Length: 99999999999999999999999",
            "Content-Length: 3\nContent-Length: 4",
            "Content-Length: 3, 4",
        ] {
            let err = parse_head(format!("{ct}{block}").as_bytes()).unwrap_err();
            assert!(err.contains("Content-Length"), "{block}: {err}");
        }
    }

    #[test]
    fn statuses_without_a_body_lose_content_length() {
        for (block, status, length) in [
            ("Status: 204\nContent-Length: 5", 204, Some(0)),
            ("Status: 304\nContent-Length: 5\nETag: \"x\"", 304, Some(0)),
            (
                "Status: 200\nContent-Type: a/b\nContent-Length: 5",
                200,
                Some(5),
            ),
            ("Status: 404\nContent-Type: a/b", 404, None),
        ] {
            let Classified::Respond {
                status: s,
                headers,
                length: l,
                ..
            } = classify(block.as_bytes()).unwrap()
            else {
                panic!("{block}: not a response");
            };
            assert_eq!((s.as_u16(), l), (status, length), "{block}");
            assert_eq!(
                headers.contains_key("content-length"),
                status == 200,
                "{block}"
            );
        }
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
