//! Turning a request path into safe, decoded segments — the one place where
//! URL paths are percent-decoded, shared by the static file server and the
//! CGI script lookup.
//!
//! The rules, applied to each `/`-separated segment of the raw path:
//! 1. percent-decode exactly once (so `%252e` stays the literal `%2e`);
//! 2. the result must be UTF-8 (overlong forms such as `%c0%ae` are refused);
//! 3. an encoded `/` or `\` inside a segment, `..`, or a dot-file
//!    (`.git`, `.htpasswd`) is refused; NUL and control characters are a 400;
//! 4. empty and `.` segments are dropped.
//!
//! Callers still canonicalize the file they find and check it is under
//! their root, so a symlink cannot lead out either.

use std::path::Path;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Malformed: bad escape, invalid UTF-8, control character.
    BadRequest(&'static str),
    /// Tries to leave its root (`..`, encoded separators).
    Forbidden(&'static str),
    /// Hidden (dot-files): answered as if absent.
    Hidden,
}

/// A request path split into decoded segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafePath {
    pub segments: Vec<String>,
    /// The raw path ended in `/` (directory-style request).
    pub trailing_slash: bool,
}

impl SafePath {
    /// Parse a raw (still percent-encoded) URL path.
    pub fn parse(raw: &str) -> Result<SafePath, PathError> {
        Self::parse_with(raw, false)
    }

    /// As [`SafePath::parse`]; `keep_encoded_slashes` (`encoded_slashes =
    /// "keep"`): a `%2F` is part of its segment, never a separator — it
    /// stays encoded when the path is joined again ([`join_url`]) and no
    /// file name can contain it.
    pub fn parse_with(raw: &str, keep_encoded_slashes: bool) -> Result<SafePath, PathError> {
        if !raw.starts_with('/') {
            return Err(PathError::BadRequest("path must start with /"));
        }
        let mut segments = Vec::new();
        for raw_seg in raw.split('/') {
            let seg = decode_segment(raw_seg)?;
            match seg.as_str() {
                "" | "." => continue,
                ".." => return Err(PathError::Forbidden("'..' segment")),
                s if s.contains('\\') || (s.contains('/') && !keep_encoded_slashes) => {
                    return Err(PathError::Forbidden("encoded slash or backslash"))
                }
                s if s.contains('/')
                    && s.split('/')
                        .any(|part| part == ".." || part.starts_with('.')) =>
                {
                    return Err(PathError::Forbidden("dot segment behind an encoded slash"))
                }
                s if s.starts_with('.') => return Err(PathError::Hidden),
                _ => segments.push(seg),
            }
        }
        Ok(SafePath {
            segments,
            trailing_slash: raw.len() > 1 && raw.ends_with('/'),
        })
    }

    /// The decoded path as rules match it: `/a/b`, `/a/b/` for a
    /// directory-style request, `/` for the root.
    pub fn to_rule_subject(&self) -> String {
        let mut s = join_url(&self.segments);
        if self.trailing_slash || s.is_empty() {
            s.push('/');
        }
        s
    }

    /// A segment holds an encoded slash (`encoded_slashes = "keep"`): no
    /// file can have that name.
    pub fn has_encoded_slash(&self) -> bool {
        self.segments.iter().any(|s| s.contains('/'))
    }

    /// The normalised path as a URL path again, percent-encoded (`/a%20b`;
    /// empty for the root): what a `Location` built from a request path
    /// must use — the raw path may start with `//`, which a browser reads
    /// as a host (`//docs/` → `http://docs/`).
    pub fn to_encoded_url_path(&self) -> String {
        let mut s = String::new();
        for seg in &self.segments {
            s.push('/');
            push_encoded_segment(&mut s, seg);
        }
        s
    }
}

/// Append `seg` percent-encoded as a path segment: everything but RFC 3986
/// `pchar` (unreserved, sub-delims, `:` and `@`) is escaped.
fn push_encoded_segment(out: &mut String, seg: &str) {
    push_percent_encoded(out, seg, is_pchar);
}

/// RFC 3986 `pchar`: unreserved, sub-delims, `:` and `@`.
pub fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)
}

/// Append `text` with every byte `keep` refuses written as `%XX`.
pub fn push_percent_encoded(out: &mut String, text: &str, keep: impl Fn(u8) -> bool) {
    use std::fmt::Write as _;
    for &b in text.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// `["a","b"]` → `/a/b`; `[]` → `` (empty).
/// A kept encoded slash inside a segment is written `%2F` again.
pub fn join_url(segments: &[String]) -> String {
    let mut s = String::new();
    for seg in segments {
        s.push('/');
        if seg.contains('/') {
            s.push_str(&seg.replace('/', "%2F"));
        } else {
            s.push_str(seg);
        }
    }
    s
}

/// `file` (lexically under the canonical `root`) may be served under
/// `follow_symlinks = "owner"`: every symlink on the way has the owner of
/// what it points to (Apache's SymLinksIfOwnerMatch).
pub fn owners_match(root: &Path, file: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(rel) = file.strip_prefix(root) else {
        return false;
    };
    let mut at = root.to_path_buf();
    for part in rel.components() {
        at.push(part);
        let Ok(link) = std::fs::symlink_metadata(&at) else {
            return false;
        };
        if link.file_type().is_symlink() {
            match std::fs::metadata(&at) {
                Ok(target) if target.uid() == link.uid() => {}
                _ => return false,
            }
        }
    }
    true
}

fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or(PathError::BadRequest("truncated % escape"))?;
            let v = hex_pair(hex).ok_or(PathError::BadRequest("bad % escape"))?;
            out.push(v);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    if out.iter().any(|&c| c < 0x20 || c == 0x7f) {
        return Err(PathError::BadRequest("control character in path"));
    }
    let text = String::from_utf8(out).map_err(|_| PathError::BadRequest("path is not UTF-8"))?;
    // C1 controls too (U+0080–U+009F: `%C2%9B` is a terminal's CSI).
    if text.chars().any(char::is_control) {
        return Err(PathError::BadRequest("control character in path"));
    }
    Ok(text)
}

/// `s` percent-decoded as a CGI program or a FastCGI application reads
/// it, if decoding changes it: a `%` that starts no escape stays as it is
/// (where a path segment with one is refused, see `decode_segment`).
pub fn percent_decode_lenient(s: &str) -> Option<String> {
    if !s.contains('%') {
        return None;
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes.get(i + 1..i + 3).and_then(hex_pair) {
            Some(v) if bytes[i] == b'%' => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// `user@host:port` → `host:port`: userinfo is never part of the host.
pub fn without_userinfo(authority: &str) -> &str {
    authority.rsplit_once('@').map_or(authority, |(_, h)| h)
}

/// `host:port` → `host`; `[::1]:80` → `[::1]` (kept bracketed).
pub fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    }
}

fn hex_pair(h: &[u8]) -> Option<u8> {
    let d = |c: u8| (c as char).to_digit(16);
    Some((d(h[0])? * 16 + d(h[1])?) as u8)
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        SafePath::parse(p).unwrap().segments
    }

    #[test]
    fn hosts_and_lenient_decoding() {
        assert_eq!(without_port("Example.org:8080"), "Example.org");
        assert_eq!(without_port("[::1]:80"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
        assert_eq!(without_userinfo("u:p@a.example:81"), "a.example:81");
        assert_eq!(percent_decode_lenient("a=1"), None);
        assert_eq!(
            percent_decode_lenient("s=%67it%zz%4").as_deref(),
            Some("s=git%zz%4")
        );
    }

    #[test]
    fn decodes_once_and_normalises() {
        assert_eq!(segs("/a//b/./c%20d"), vec!["a", "b", "c d"]);
        assert_eq!(segs("/%252e%252e/x"), vec!["%2e%2e", "x"]);
        assert!(SafePath::parse("/dir/").unwrap().trailing_slash);
        assert!(!SafePath::parse("/").unwrap().trailing_slash);
    }

    #[test]
    fn encodes_back_to_a_url_path() {
        for (raw, want) in [
            ("//docs", "/docs"),
            ("///a//./b/", "/a/b"),
            ("/caf%C3%A9/a%20b", "/caf%C3%A9/a%20b"),
            ("/%252e%252e/q%3Fx%23y", "/%252e%252e/q%3Fx%23y"),
            ("/a,b;c=d:e@f~g", "/a,b;c=d:e@f~g"),
            ("/", ""),
        ] {
            let path = SafePath::parse(raw).unwrap();
            assert_eq!(path.to_encoded_url_path(), want, "{raw}");
            // What it encodes parses back to the same segments.
            if !want.is_empty() {
                assert_eq!(SafePath::parse(want).unwrap().segments, path.segments);
            }
        }
    }

    #[test]
    fn refuses_escapes() {
        use PathError::*;
        for p in [
            "/../etc/passwd",
            "/a/%2e%2e/b",
            "/a/.%2E/b",
            "/a%2fb",
            "/a%5cb",
            "/a%5C..%5Cb",
        ] {
            assert!(matches!(SafePath::parse(p), Err(Forbidden(_))), "{p}");
        }
        for p in [
            "/a%00b",
            "/a%0a",
            "/a%C2%9Bb",
            "/%c2%85",
            "/%c0%ae%c0%ae/x",
            "/%zz",
            "/a%2",
            "relative",
        ] {
            assert!(matches!(SafePath::parse(p), Err(BadRequest(_))), "{p}");
        }
        assert_eq!(SafePath::parse("/.git/config"), Err(Hidden));
        assert_eq!(SafePath::parse("/a/.htpasswd"), Err(Hidden));
    }
}
