//! The units a config file writes, as types that check themselves while
//! the file is parsed (so a bad value is reported with its file, line and
//! key like any other parse error): [`Seconds`] (whole seconds, 1 s to a
//! year, so `now + timeout` can never overflow) and [`Size`] (bytes, or
//! `512K`, `64M`, `10G` in powers of 1024).

use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::{parse_size, MAX_TIMEOUT};

/// A timeout in whole seconds, at least 1, at most a year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = u64::deserialize(d)?;
        let max = MAX_TIMEOUT.as_secs();
        match secs {
            0 => Err(de::Error::custom("must be at least 1 second")),
            s if s > max => Err(de::Error::custom(format!("at most {max} seconds (a year)"))),
            s => Ok(Seconds(Duration::from_secs(s))),
        }
    }
}

impl From<Seconds> for Duration {
    fn from(s: Seconds) -> Duration {
        s.0
    }
}

/// A size in bytes: a number, or a string with a K, M or G suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Bytes(u64),
            Text(String),
        }
        match Written::deserialize(d)? {
            Written::Bytes(n) => Ok(Size(n)),
            Written::Text(s) => parse_size(&s).map(Size).map_err(de::Error::custom),
        }
    }
}

impl From<Size> for u64 {
    fn from(s: Size) -> u64 {
        s.0
    }
}

impl From<Size> for usize {
    fn from(s: Size) -> usize {
        usize::try_from(s.0).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        t: Option<Seconds>,
        s: Option<Size>,
    }

    #[test]
    fn units_check_themselves_while_parsing() {
        let ok: T = toml::from_str("t = 5\ns = \"2K\"").unwrap();
        assert_eq!(ok.t, Some(Seconds(Duration::from_secs(5))));
        assert_eq!(ok.s, Some(Size(2048)));
        let ok: T = toml::from_str("s = 7").unwrap();
        assert_eq!(ok.s, Some(Size(7)));
        for (text, why) in [
            ("t = 0", "at least 1 second"),
            ("t = 99999999999", "at most"),
            ("s = \"10X\"", ""),
            ("t = \"5\"", ""),
        ] {
            let e = toml::from_str::<T>(text).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains(why)),
                "{text}: {e:?}"
            );
        }
    }
}
