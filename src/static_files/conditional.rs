//! Validators and conditional requests (RFC 9110 §8.8 and §13): the `ETag`
//! and `Last-Modified` of a file, and the `If-Match`, `If-Unmodified-Since`,
//! `If-None-Match`, `If-Modified-Since` and `If-Range` decisions, evaluated
//! in the order of RFC 9110 §13.2.2.
//!
//! ETags are built from size and modification time (nanoseconds), like
//! nginx's, so they are computed without reading the file. They are strong:
//! a file rewritten with the same size within the same nanosecond is the
//! only blind spot. Each content coding gets its own tag (`-gz`, `-br`
//! suffix) because its bytes differ.

use std::time::{SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap, HeaderName, HeaderValue};

/// The validators of one representation (one file, one content coding),
/// with their header values made once (a cached file's are reused by
/// every response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// With its quotes: `"SIZE-SECS.NANOS"` in hex, e.g. `"1a-65f0c2a1.5"`.
    pub etag: String,
    pub modified: Option<SystemTime>,
    /// `etag` as a header value.
    etag_value: Option<HeaderValue>,
    /// `Last-Modified` as a header value.
    modified_value: Option<HeaderValue>,
}

impl Validators {
    /// `suffix` tells content codings apart: "" for identity, "-gz", "-br".
    pub fn new(len: u64, modified: Option<SystemTime>, suffix: &str) -> Validators {
        let d = modified
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let etag = format!(
            "\"{:x}-{:x}.{:x}{suffix}\"",
            len,
            d.as_secs(),
            d.subsec_nanos()
        );
        // `from_maybe_shared` takes the string's buffer instead of a copy.
        let modified_value = modified
            .map(httpdate::fmt_http_date)
            .and_then(|d| HeaderValue::from_maybe_shared(bytes::Bytes::from(d)).ok());
        Validators {
            etag_value: HeaderValue::from_str(&etag).ok(),
            etag,
            modified,
            modified_value,
        }
    }

    /// The modification time in whole seconds, the precision of HTTP dates.
    fn modified_secs(&self) -> Option<u64> {
        let d = self.modified?.duration_since(UNIX_EPOCH).ok()?;
        Some(d.as_secs())
    }

    /// Write `ETag` and `Last-Modified` into `headers`.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        if let Some(v) = &self.etag_value {
            headers.insert(header::ETAG, v.clone());
        }
        if let Some(v) = &self.modified_value {
            headers.insert(header::LAST_MODIFIED, v.clone());
        }
    }
}

/// What the preconditions say about a GET or HEAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Serve the representation (possibly a range of it).
    Proceed,
    /// 304: the client's copy is current.
    NotModified,
    /// 412: `If-Match` / `If-Unmodified-Since` failed.
    Failed,
}

/// Evaluate the preconditions of a GET/HEAD in RFC 9110 §13.2.2 order:
/// If-Match, else If-Unmodified-Since; then If-None-Match, else
/// If-Modified-Since. Unparseable dates make their header ignored.
pub fn evaluate(headers: &HeaderMap, v: &Validators) -> Precondition {
    if let Some(list) = text(headers, header::IF_MATCH) {
        if !tag_list_matches(&list, &v.etag, Comparison::Strong) {
            return Precondition::Failed;
        }
    } else if let Some(since) = date(headers, header::IF_UNMODIFIED_SINCE) {
        if v.modified_secs().is_some_and(|m| m > since) {
            return Precondition::Failed;
        }
    }
    if let Some(list) = text(headers, header::IF_NONE_MATCH) {
        if tag_list_matches(&list, &v.etag, Comparison::Weak) {
            return Precondition::NotModified;
        }
    } else if let Some(since) = date(headers, header::IF_MODIFIED_SINCE) {
        if v.modified_secs().is_some_and(|m| m <= since) {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// True when a `Range` may be honoured: no `If-Range`, or one that names
/// this representation exactly (strong ETag match, or the exact
/// `Last-Modified` date). Otherwise the whole file is sent (§13.1.5).
pub fn if_range_holds(headers: &HeaderMap, v: &Validators) -> bool {
    let Some(value) = text(headers, header::IF_RANGE) else {
        return true;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return tag_list_matches(value, &v.etag, Comparison::Strong) && !value.contains(',');
    }
    match (httpdate::parse_http_date(value), v.modified_secs()) {
        (Ok(d), Some(m)) => secs(d) == Some(m),
        _ => false,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Comparison {
    /// Both tags strong and equal (If-Match, If-Range).
    Strong,
    /// Equal once `W/` is ignored (If-None-Match).
    Weak,
}

/// Does a `*` or comma-separated entity-tag list contain `ours`? A list
/// that does not parse matches nothing.
fn tag_list_matches(list: &str, ours: &str, cmp: Comparison) -> bool {
    if list.trim() == "*" {
        return true;
    }
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return false;
        }
        let weak = rest.starts_with("W/");
        if weak {
            rest = &rest[2..];
        }
        // An opaque tag may contain commas, so cut at the closing quote.
        let Some(end) = rest
            .strip_prefix('"')
            .and_then(|r| r.find('"'))
            .map(|i| i + 2)
        else {
            return false;
        };
        let tag = &rest[..end];
        if tag == ours && (cmp == Comparison::Weak || !weak) {
            return true;
        }
        rest = &rest[end..];
    }
}

/// All values of a header joined with `, ` (a list may be split across
/// lines); None if absent or not text.
fn text(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?.to_str().ok()?.to_string();
    values.try_fold(first, |mut acc, v| {
        acc.push_str(", ");
        acc.push_str(v.to_str().ok()?);
        Some(acc)
    })
}

fn date(headers: &HeaderMap, name: HeaderName) -> Option<u64> {
    let v = headers.get(name)?.to_str().ok()?;
    secs(httpdate::parse_http_date(v).ok()?)
}

fn secs(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const T: u64 = 1_700_000_000;

    fn v() -> Validators {
        Validators::new(26, Some(UNIX_EPOCH + Duration::new(T, 5)), "")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, val) in pairs {
            h.append(*n, HeaderValue::from_str(val).unwrap());
        }
        h
    }

    fn date_at(s: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(s))
    }

    #[test]
    fn etags_differ_by_size_time_and_coding() {
        let m = Some(UNIX_EPOCH + Duration::new(T, 5));
        let tags = [
            Validators::new(26, m, "").etag,
            Validators::new(27, m, "").etag,
            Validators::new(26, Some(UNIX_EPOCH + Duration::new(T, 6)), "").etag,
            Validators::new(26, m, "-gz").etag,
            Validators::new(26, m, "-br").etag,
        ];
        for (i, a) in tags.iter().enumerate() {
            assert!(a.starts_with('"') && a.ends_with('"'), "{a}");
            for b in &tags[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn preconditions_in_rfc_order() {
        use Precondition::*;
        let tag = v().etag;
        let weak = format!("W/{tag}");
        let (before, same, after) = (date_at(T - 1), date_at(T), date_at(T + 1));
        let table: Vec<(Vec<(&'static str, &str)>, Precondition)> = vec![
            (vec![], Proceed),
            (vec![("if-none-match", &tag)], NotModified),
            (vec![("if-none-match", &weak)], NotModified),
            (vec![("if-none-match", "*")], NotModified),
            (vec![("if-none-match", "\"x\", \"y\"")], Proceed),
            (vec![("if-none-match", "\"x\"")], Proceed),
            (vec![("if-none-match", "garbage")], Proceed),
            (vec![("if-modified-since", &same)], NotModified),
            (vec![("if-modified-since", &after)], NotModified),
            (vec![("if-modified-since", &before)], Proceed),
            (vec![("if-modified-since", "not a date")], Proceed),
            // If-None-Match wins over If-Modified-Since, both ways.
            (
                vec![("if-none-match", "\"x\""), ("if-modified-since", &after)],
                Proceed,
            ),
            (
                vec![("if-none-match", &tag), ("if-modified-since", &before)],
                NotModified,
            ),
            (vec![("if-match", &tag)], Proceed),
            (vec![("if-match", "*")], Proceed),
            (vec![("if-match", &weak)], Failed),
            (vec![("if-match", "\"x\"")], Failed),
            (vec![("if-unmodified-since", &before)], Failed),
            (vec![("if-unmodified-since", &same)], Proceed),
            // If-Match wins over If-Unmodified-Since.
            (
                vec![("if-match", &tag), ("if-unmodified-since", &before)],
                Proceed,
            ),
            // A failed If-Match beats a matching If-None-Match.
            (vec![("if-match", "\"x\""), ("if-none-match", &tag)], Failed),
        ];
        for (pairs, want) in table {
            assert_eq!(evaluate(&headers(&pairs), &v()), want, "{pairs:?}");
        }
    }

    #[test]
    fn tag_lists_parse_quotes_commas_and_repeated_headers() {
        let tag = v().etag;
        let list = format!("\"a,b\", W/\"c\" ,{tag}");
        assert!(tag_list_matches(&list, &tag, Comparison::Strong));
        assert!(tag_list_matches("\"a,b\"", "\"a,b\"", Comparison::Strong));
        assert!(!tag_list_matches("\"a", "\"a\"", Comparison::Weak));
        let h = headers(&[("if-none-match", "\"x\""), ("if-none-match", &tag)]);
        assert_eq!(evaluate(&h, &v()), Precondition::NotModified);
    }

    #[test]
    fn if_range_needs_an_exact_strong_validator() {
        let tag = v().etag;
        let weak = format!("W/{tag}");
        let table: Vec<(&str, bool)> = vec![
            (&tag, true),
            (&weak, false),
            ("\"other\"", false),
            ("*", false),
            ("garbage", false),
        ];
        for (value, want) in table {
            let h = headers(&[("if-range", value)]);
            assert_eq!(if_range_holds(&h, &v()), want, "{value}");
        }
        let exact = date_at(T);
        let later = date_at(T + 1);
        assert!(if_range_holds(&headers(&[("if-range", &exact)]), &v()));
        assert!(!if_range_holds(&headers(&[("if-range", &later)]), &v()));
        assert!(if_range_holds(&HeaderMap::new(), &v()));
    }
}
