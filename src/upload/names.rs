//! The names in an offloaded upload: what each file field becomes
//! (`F.name`, `F.path`, …), refusing client fields that look like those
//! (unforgeable metadata), and cleaning and encoding names and values.

use super::{Error, MAX_FILENAME};

/// What each file field `F` becomes: `F.name`, `F.path`, … in this order.
pub(super) const GENERATED: [&str; 5] = ["name", "path", "size", "content_type", "sha256"];

/// Could a handler take this client-chosen name for one cgihost generates?
/// Any name that ends in a generated suffix after `.` (as sent), or after
/// what PHP turns into `_` in variable names (`_` itself, `.`, a space, an
/// unmatched `[`), for any `F`, whether or not the request has a file
/// field `F`: a handler expecting a file field reads `F.path` either way.
/// Case is ignored.
pub(super) fn looks_generated(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    GENERATED.iter().any(|suffix| {
        lower
            .strip_suffix(suffix)
            .and_then(|rest| rest.chars().next_back())
            .is_some_and(|sep| matches!(sep, '.' | '_' | ' ' | '['))
    })
}

pub(super) fn forged(name: &str, what: &str) -> Error {
    Error::BadRequest(format!(
        "offloaded upload: {what} {name:?} could pass for the upload metadata cgihost \
         generates (F.name, F.path, F.size, F.content_type, F.sha256, or PHP's F_path …): refused"
    ))
}

/// The first query parameter whose (decoded) name looks generated: many
/// handlers (Python's `cgi.FieldStorage`, PHP's `$_REQUEST`) mix the query
/// into the form.
pub(super) fn forged_query_name(query: &str) -> Option<String> {
    query
        .split(['&', ';'])
        .map(|pair| form_decode(pair.split('=').next().unwrap_or("")))
        .find(|name| looks_generated(name))
}

/// application/x-www-form-urlencoded decoding (`+` is a space), lossy.
pub(super) fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    clean_text(&String::from_utf8_lossy(&out))
}

/// The client's file name without any path, control characters or NUL,
/// at most 255 bytes.
pub(super) fn clean_filename(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let mut name = clean_text(base);
    if name == "." || name == ".." {
        name.clear();
    }
    while name.len() > MAX_FILENAME {
        name.pop();
    }
    name
}

pub(super) fn clean_text(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

pub(super) fn append_pair(out: &mut Vec<u8>, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(b'&');
    }
    percent_encode(out, name);
    out.push(b'=');
    percent_encode(out, value);
}

/// application/x-www-form-urlencoded encoding (space as `+`).
pub(super) fn percent_encode(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(b),
            b' ' => out.push(b'+'),
            _ => out.extend_from_slice(format!("%{b:02X}").as_bytes()),
        }
    }
}
