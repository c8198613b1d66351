//! Parsing a request head on the sendfile path: httparse (hyper's own
//! parser, same settings) into a bodiless `Request<()>`, or "not ours"
//! (anything hyper must answer), and the keep-alive rules by version.

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use super::super::host_problem;
use super::hot::{Answer, Probe, RawHead};
use super::MAX_HEADERS;

// Returned once per request and never stored: boxing the request would
// only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(super) enum Head {
    /// The request, its head's length, and its memo key if it has one
    /// (no memo was found under it).
    Complete(Request<()>, usize, Option<Box<[u8]>>),
    /// A memo answered it (see `hot.rs`).
    Hot(Answer, usize),
    Partial,
    /// Not a request this path takes: hyper will answer it.
    NotOurs,
}

#[cfg(test)]
pub(super) fn parse_head(input: &[u8]) -> Head {
    parse_head_probing(input, usize::MAX, |_| Probe::Miss(Box::default()))
}

/// Parse a head; a complete one of up to `max_len` bytes with a memo key
/// goes to `probe` first.
pub(super) fn parse_head_probing(
    input: &[u8],
    max_len: usize,
    probe: impl FnOnce(&RawHead) -> Probe,
) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(input) {
        Ok(httparse::Status::Complete(len)) => {
            let raw = RawHead::of(&parsed).filter(|_| len <= max_len);
            let key = match raw.as_ref().map(probe) {
                Some(Probe::Hit(answer)) => return Head::Hot(answer, len),
                Some(Probe::Miss(key)) => Some(key),
                None => None,
            };
            to_request(&parsed).map_or(Head::NotOurs, |req| Head::Complete(req, len, key))
        }
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(_) => Head::NotOurs,
    }
}

/// The request, if this path may answer it: a bodiless GET or HEAD, or a
/// request of any method with a `Content-Length` body (which the serve
/// loop keeps only when it goes to a CGI program: `upload_here`).
pub(super) fn to_request(parsed: &httparse::Request) -> Option<Request<()>> {
    let (method, version, target) = any_request_line(parsed)?;
    let uri = Uri::try_from(target).ok()?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        headers.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) || headers.contains_key(header::UPGRADE) {
        return None;
    }
    let reads = method == Method::GET || method == Method::HEAD;
    let length = body_length(&headers)?;
    match length {
        0 if reads => {}
        // A HEAD's answer has no body to follow the upload with.
        n if n > 0 && method != Method::HEAD => {}
        _ => return None,
    }
    // `Expect: 100-continue` on an HTTP/1.1 body is ours (`upload.rs`
    // sends the 100); any other expectation is hyper's to refuse (417).
    let expects = headers.get_all(header::EXPECT).iter().count();
    if expects > 0
        && (expects > 1
            || length == 0
            || version != Version::HTTP_11
            || !expects_continue(&headers))
    {
        return None;
    }
    // No Host, two, or a bad one: hyper's side answers 400.
    if host_problem(version, &headers).is_some() {
        return None;
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Some(req)
}

/// Whether the client waits for `100 Continue` before it sends its body.
pub(super) fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The body's length by `Content-Length` (0 without one); None when it
/// is not one plain number (several, or not digits: hyper's to judge).
pub(super) fn body_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(value) = values.next() else {
        return Some(0);
    };
    let digits = value.as_bytes();
    if values.next().is_some() || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // hyper's limit: its two largest values mean "unknown" and "chunked".
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (n <= u64::MAX - 2).then_some(n)
}

/// GET or HEAD, HTTP/1.1 or 1.0, an origin-form target: the request lines
/// this path takes without a body.
pub(super) fn request_line<'a>(
    parsed: &httparse::Request<'_, 'a>,
) -> Option<(Method, Version, &'a str)> {
    any_request_line(parsed).filter(|(method, ..)| method == Method::GET || method == Method::HEAD)
}

/// Any method, HTTP/1.1 or 1.0, an origin-form target.
fn any_request_line<'a>(parsed: &httparse::Request<'_, 'a>) -> Option<(Method, Version, &'a str)> {
    let method = match parsed.method? {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        other => Method::from_bytes(other.as_bytes()).ok()?,
    };
    let version = match parsed.version? {
        1 => Version::HTTP_11,
        0 => Version::HTTP_10,
        _ => return None,
    };
    let target = parsed.path.filter(|t| t.starts_with('/'))?;
    Some((method, version, target))
}

/// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 only when
/// asked for `keep-alive` and not told `close` (as hyper decides).
pub(super) fn wants_keep_alive<B>(req: &Request<B>) -> bool {
    let values = req.headers().get_all(header::CONNECTION);
    keeps_alive(
        req.version(),
        connection_tokens(values.iter().map(|v| v.as_bytes())),
    )
}

/// The keep-alive rule by version, given whether `Connection` said
/// `close` and `keep-alive`.
pub(super) fn keeps_alive(version: Version, (close, keep_alive): (bool, bool)) -> bool {
    match version {
        Version::HTTP_11 => !close,
        _ => keep_alive && !close,
    }
}

/// Whether `Connection` values hold the tokens `close` and `keep-alive`
/// (values that are not visible ASCII are skipped, as `to_str` would).
pub(super) fn connection_tokens<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> (bool, bool) {
    let (mut close, mut keep_alive) = (false, false);
    let texts = values
        .into_iter()
        .filter(|v| v.is_ascii())
        .filter_map(|v| std::str::from_utf8(v).ok());
    for token in texts.flat_map(|v| v.split(',')).map(str::trim) {
        close |= token.eq_ignore_ascii_case("close");
        keep_alive |= token.eq_ignore_ascii_case("keep-alive");
    }
    (close, keep_alive)
}
