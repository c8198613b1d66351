//! The `Range` request header (RFC 9110 §14): parsing byte-range sets and
//! deciding, against a file's size, between the full body, one part (206)
//! and "unsatisfiable" (416).
//!
//! Multiple ranges: a set that is satisfiable in more than one place is
//! answered with the whole file (200), never as `multipart/byteranges`.
//! RFC 9110 §14.2 allows a server to ignore `Range`; the full body is what
//! every client can use, and it rules out the "many overlapping ranges"
//! amplification attack (Apache's CVE-2011-3192) by construction. Clients
//! that really fetch several ranges (PDF viewers, download managers) fall
//! back to single-range requests or use the full body.

/// One `first-last` / `first-` / `-suffix` element, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    /// `a-b` (`last` inclusive) or `a-` (`last` = None).
    From { first: u64, last: Option<u64> },
    /// `-n`: the final n bytes.
    Suffix(u64),
}

/// What a (syntactically valid) range set asks of a file of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send the whole file (several satisfiable ranges).
    Full,
    /// Send `start..end` (end exclusive) as a 206.
    Part { start: u64, end: u64 },
    /// Nothing of the file is selected: 416.
    Unsatisfiable,
}

/// Parse a `Range` value. `None` means "ignore the header" (RFC 9110 §14.2:
/// an unknown unit or a malformed set is ignored, not an error).
pub fn parse(value: &str) -> Option<Vec<Spec>> {
    let (unit, set) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    // Empty list elements (`0-1, ,5-6`) are allowed by the list syntax.
    for element in set.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        specs.push(parse_spec(element)?);
    }
    (!specs.is_empty()).then_some(specs)
}

fn parse_spec(s: &str) -> Option<Spec> {
    let (first, last) = s.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return Some(Spec::Suffix(digits(last)?));
    }
    let first = digits(first)?;
    if last.is_empty() {
        return Some(Spec::From { first, last: None });
    }
    let last = digits(last)?;
    // `5-3` is invalid syntax, which makes the whole header ignorable.
    (last >= first).then_some(Spec::From {
        first,
        last: Some(last),
    })
}

/// Only ASCII digits: `u64::from_str` would also take a leading `+`.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Spec {
    /// The bytes `start..end` this element selects in a file of `size`
    /// bytes, or None when it selects nothing.
    fn bounds(self, size: u64) -> Option<(u64, u64)> {
        match self {
            Spec::From { first, .. } if first >= size => None,
            Spec::From { first, last } => {
                let end = last.map_or(size, |l| l.saturating_add(1).min(size));
                Some((first, end))
            }
            Spec::Suffix(0) => None,
            Spec::Suffix(_) if size == 0 => None,
            Spec::Suffix(n) => Some((size - n.min(size), size)),
        }
    }
}

/// Apply a parsed range set to a file of `size` bytes.
pub fn decide(specs: &[Spec], size: u64) -> Decision {
    let mut satisfiable = specs.iter().filter_map(|s| s.bounds(size));
    match (satisfiable.next(), satisfiable.next()) {
        (None, _) => Decision::Unsatisfiable,
        (Some((start, end)), None) => Decision::Part { start, end },
        (Some(_), Some(_)) => Decision::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;

    #[test]
    fn decisions_for_a_100_byte_file() {
        let table: &[(&str, Option<Decision>)] = &[
            ("bytes=0-9", Some(Part { start: 0, end: 10 })),
            (
                "bytes=10-",
                Some(Part {
                    start: 10,
                    end: 100,
                }),
            ),
            (
                "bytes=-10",
                Some(Part {
                    start: 90,
                    end: 100,
                }),
            ),
            ("bytes=-1000", Some(Part { start: 0, end: 100 })),
            (
                "bytes=90-1000",
                Some(Part {
                    start: 90,
                    end: 100,
                }),
            ),
            (
                "bytes=99-99",
                Some(Part {
                    start: 99,
                    end: 100,
                }),
            ),
            ("BYTES = 5 - 6", Some(Part { start: 5, end: 7 })),
            ("bytes=0-0, ,", Some(Part { start: 0, end: 1 })),
            ("bytes=100-", Some(Unsatisfiable)),
            ("bytes=100-200", Some(Unsatisfiable)),
            ("bytes=-0", Some(Unsatisfiable)),
            ("bytes=200-300,-0", Some(Unsatisfiable)),
            ("bytes=0-1,5-6", Some(Full)),
            ("bytes=0-1,200-300", Some(Part { start: 0, end: 2 })),
            (
                "bytes=0-18446744073709551615",
                Some(Part { start: 0, end: 100 }),
            ),
            // Ignored headers (None): wrong unit or malformed.
            ("items=0-1", None),
            ("bytes=", None),
            ("bytes=5-3", None),
            ("bytes=a-b", None),
            ("bytes=+1-2", None),
            ("bytes=-", None),
            ("bytes=1", None),
            ("bytes=0-1,x", None),
            ("bytes=99999999999999999999-", None),
            ("0-10", None),
        ];
        for (header, want) in table {
            let got = parse(header).map(|specs| decide(&specs, 100));
            assert_eq!(got, *want, "{header}");
        }
    }

    #[test]
    fn empty_file_is_never_satisfiable() {
        for h in ["bytes=0-", "bytes=-5", "bytes=0-0"] {
            assert_eq!(decide(&parse(h).unwrap(), 0), Unsatisfiable, "{h}");
        }
    }

    #[test]
    fn every_part_lies_inside_the_file() {
        // Property over a grid: a Part is non-empty and within 0..size.
        for size in [0u64, 1, 2, 7, 100] {
            for a in 0..=size + 2 {
                for b in a..=size + 2 {
                    for h in [
                        format!("bytes={a}-{b}"),
                        format!("bytes={a}-"),
                        format!("bytes=-{b}"),
                    ] {
                        if let Some(Part { start, end }) = parse(&h).map(|s| decide(&s, size)) {
                            assert!(start < end && end <= size, "{h} size {size}");
                        }
                    }
                }
            }
        }
    }
}
