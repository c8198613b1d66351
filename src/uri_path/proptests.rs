//! Property tests for [`SafePath`]: whatever the raw path, no segment it
//! gives can name anything but a plain entry below the root.

use std::path::{Component, Path, PathBuf};

use proptest::prelude::*;

use super::*;

/// Pieces that path-safety bugs are made of: separators, dots in every
/// spelling, NUL, bad and truncated escapes, overlong UTF-8, unicode.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E".to_string()),
        Just("%2f".to_string()),
        Just("%2F".to_string()),
        Just("%5c".to_string()),
        Just("%5C".to_string()),
        Just("\\".to_string()),
        Just("%00".to_string()),
        Just("%".to_string()),
        Just("%2".to_string()),
        Just("%252e".to_string()),
        Just("%c0%ae".to_string()),
        Just("%c3%a9".to_string()),
        Just("%e2%80%ae".to_string()),
        Just("%c2%85".to_string()),
        Just("%c2%9b".to_string()),
        Just("%7f".to_string()),
        Just("%0a".to_string()),
        Just("%ff".to_string()),
        Just("é".to_string()),
        Just("日本".to_string()),
        Just(" ".to_string()),
        "[a-z]{1,3}",
        any::<u8>().prop_map(|b| format!("%{b:02x}")),
        any::<u8>().prop_map(|b| format!("%{b:02X}")),
        any::<char>().prop_map(String::from),
    ]
}

/// A path made of those pieces, usually starting with `/`.
fn structured() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(piece(), 0..16)).prop_map(|(slash, pieces)| {
        let mut s = if slash {
            "/".to_string()
        } else {
            String::new()
        };
        s.extend(pieces);
        s
    })
}

/// Any string, or any bytes taken as UTF-8 where they are (the request
/// line reaches `parse` as `&str`).
fn arbitrary() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        any::<String>().prop_map(|s| format!("/{s}")),
        prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| format!("/{}", String::from_utf8_lossy(&b))),
    ]
}

/// What every accepted path must satisfy, in either `encoded_slashes` mode.
fn check(raw: &str, keep: bool) -> Result<(), TestCaseError> {
    let Ok(path) = SafePath::parse_with(raw, keep) else {
        return Ok(());
    };
    prop_assert!(
        raw.starts_with('/'),
        "{raw:?}: accepted without a leading /"
    );
    prop_assert_eq!(path.trailing_slash, raw.len() > 1 && raw.ends_with('/'));
    for seg in &path.segments {
        prop_assert!(!seg.is_empty(), "{raw:?}: empty segment");
        prop_assert!(seg != "." && seg != "..", "{raw:?}: dot segment {seg:?}");
        prop_assert!(!seg.starts_with('.'), "{raw:?}: hidden segment {seg:?}");
        prop_assert!(!seg.contains('\\'), "{raw:?}: backslash in {seg:?}");
        // The ASCII controls (NUL included) are refused; see the report
        // on C1 controls (U+0080..U+009F), which pass today.
        prop_assert!(
            !seg.chars().any(char::is_control),
            "{raw:?}: control character in {seg:?}"
        );
        if keep {
            // A kept `%2F` never hides a dot segment or a dot-file.
            for part in seg.split('/') {
                prop_assert!(
                    part != ".." && !part.starts_with('.'),
                    "{raw:?}: {part:?} behind an encoded slash in {seg:?}"
                );
            }
        } else {
            prop_assert!(!seg.contains('/'), "{raw:?}: slash in {seg:?}");
        }
    }
    // Joined under a root (as the static resolver and the script walk do
    // with segments free of kept slashes), nothing leaves it.
    if !path.has_encoded_slash() {
        let root = Path::new("/srv/root");
        let mut joined = PathBuf::from(root);
        for seg in &path.segments {
            joined.push(seg);
        }
        prop_assert!(joined.starts_with(root), "{raw:?} → {joined:?}");
        let below: Vec<_> = joined.strip_prefix(root).unwrap().components().collect();
        prop_assert_eq!(below.len(), path.segments.len(), "{:?} → {:?}", raw, joined);
        prop_assert!(
            below.iter().all(|c| matches!(c, Component::Normal(_))),
            "{raw:?} → {joined:?}"
        );
        let rel: PathBuf = path.segments.iter().collect();
        prop_assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
    }
    Ok(())
}

/// What is accepted round-trips: encoded again and parsed, the same
/// segments (decoding happened once, and only once).
fn check_round_trip(raw: &str) -> Result<(), TestCaseError> {
    let Ok(path) = SafePath::parse(raw) else {
        return Ok(());
    };
    let again = path.to_encoded_url_path();
    let again = if again.is_empty() { "/".into() } else { again };
    let reparsed = SafePath::parse(&again);
    prop_assert_eq!(
        reparsed.as_ref().map(|p| &p.segments),
        Ok(&path.segments),
        "{:?} → {:?}",
        raw,
        again
    );
    prop_assert_eq!(path.to_rule_subject().starts_with('/'), true);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn structured_paths_never_escape(raw in structured()) {
        check(&raw, false)?;
        check(&raw, true)?;
        check_round_trip(&raw)?;
    }

    #[test]
    fn arbitrary_paths_never_escape(raw in arbitrary()) {
        check(&raw, false)?;
        check(&raw, true)?;
        check_round_trip(&raw)?;
    }

    /// The two modes differ only on encoded slashes: a path without
    /// `%2F` parses the same in both.
    #[test]
    fn modes_agree_without_encoded_slashes(raw in structured()) {
        let mut raw = raw;
        while let Some(at) = raw.to_ascii_lowercase().find("%2f") {
            raw.replace_range(at..at + 3, "x");
        }
        prop_assert_eq!(SafePath::parse_with(&raw, false), SafePath::parse_with(&raw, true));
    }
}
