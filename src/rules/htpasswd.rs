//! HTTP Basic authentication: htpasswd files and the `Authorization` header.
//!
//! [`Htpasswd::load`] reads a file once; [`Htpasswd::verify`] checks a user
//! and password against it; [`basic_credentials`] takes the user and
//! password out of an `Authorization: Basic …` header.
//!
//! # The file
//! One `user:hash` a line; anything after a further `:` is a comment and
//! ignored (as Apache ignores it). Blank lines and lines starting with `#`
//! are skipped, surrounding whitespace and a CR before the LF are trimmed.
//! A user named twice is an error. The hash kinds are the ones Apache's
//! `htpasswd` and `openssl passwd` write:
//!
//! | prefix | kind | written by |
//! | --- | --- | --- |
//! | `$2y$`, `$2b$`, `$2a$` | bcrypt | `htpasswd -B` (`$2y$`); libxcrypt (`$2b$`) |
//! | `$apr1$` | Apache MD5-crypt | `htpasswd -m` (its default), `openssl passwd -apr1` |
//! | `$1$` | MD5-crypt | `openssl passwd -1` |
//! | `$5$`, `$6$` (with or without `rounds=N$`) | SHA-256/512-crypt | `htpasswd -2` / `-5`, `openssl passwd -5` / `-6` |
//! | `{SHA}` | unsalted SHA-1, base64 | `htpasswd -s` |
//!
//! Plaintext (`htpasswd -p`) and crypt(3) DES (`htpasswd -d`) lines are
//! refused when the file is loaded: both are insecure. So is every other
//! kind (`$2x$`, yescrypt `$y$`, …), and htdigest files (`user:realm:md5`),
//! whose second field is not a hash. Every error names the file and line
//! and never repeats the hash field, which may be a plaintext password.
//!
//! # Timing
//! Digests are compared in constant time (`subtle`; bcrypt's own check uses
//! it too). An unknown user costs what a wrong password costs: see
//! [`Htpasswd::verify`].

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64ct::{Base64, Encoding};
use md5::Digest;
use sha1::Sha1;
use sha_crypt::Params;
use subtle::ConstantTimeEq;

/// An htpasswd file, loaded and parsed once.
#[derive(Clone)]
pub struct Htpasswd {
    users: HashMap<String, Hash>,
    /// Checked in place of an unknown user's hash, the answer thrown away.
    /// It is the file's own costliest hash (bcrypt cost, SHA-crypt rounds),
    /// so a user who is not there costs as much as a wrong password for the
    /// costliest user who is: the time of a failure does not tell whether
    /// the name exists. (A dummy of a fixed kind, say bcrypt at cost 10,
    /// would be slower than every user of a `{SHA}` file, which would then
    /// give names away by being fast; a file's own hash never is.) Users
    /// with cheaper hashes than the costliest still fail faster: padding
    /// every check to the costliest would only hide the kind of a known
    /// user's hash, which the admin chose. `None` for a file with no users,
    /// where there is nothing to tell apart.
    decoy: Option<Hash>,
}

/// One parsed hash. Digests are stored as the hash string encodes them
/// (crypt's transposed byte order for MD5- and SHA-crypt), so checking a
/// password is computing, transposing and comparing.
#[derive(Clone)]
enum Hash {
    /// `$2y$` / `$2b$` / `$2a$`, validated when loaded; `bcrypt::verify`
    /// splits the 60 bytes again on each check (a few string slices).
    Bcrypt { hash: String, cost: u32 },
    /// `$apr1$` / `$1$`: the magic is part of what is hashed.
    Md5Crypt {
        magic: &'static str,
        salt: String,
        digest: [u8; 16],
    },
    /// `$5$`
    Sha256Crypt {
        params: Params,
        rounds: u32,
        salt: String,
        digest: [u8; 32],
    },
    /// `$6$`
    Sha512Crypt {
        params: Params,
        rounds: u32,
        salt: String,
        digest: [u8; 64],
    },
    /// `{SHA}`: SHA-1 of the password, no salt.
    Sha1([u8; 20]),
}

impl Htpasswd {
    /// Read and parse; Err names the file, the line number and what is wrong
    /// (unknown hash kind, malformed line, unreadable file).
    pub fn load(path: &Path) -> Result<Htpasswd, String> {
        let origin = path.display().to_string();
        let bytes =
            std::fs::read(path).map_err(|e| format!("{origin}: cannot read htpasswd file: {e}"))?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            format!("{origin}:{line}: not valid UTF-8")
        })?;
        Htpasswd::parse(text, &origin)
    }

    /// Parse an htpasswd file's text; `origin` (the file's name) begins every
    /// error message.
    pub fn parse(text: &str, origin: &str) -> Result<Htpasswd, String> {
        let mut users: HashMap<String, Hash> = HashMap::new();
        let mut lines_of: HashMap<String, usize> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |what: &str| format!("{origin}:{number}: {what}");
            let Some((user, rest)) = line.split_once(':') else {
                return Err(at("not a `user:hash` line (no colon)"));
            };
            if user.is_empty() {
                return Err(at("empty user name"));
            }
            // Apache reads the hash up to the next colon and ignores the rest.
            let (field, trailing) = match rest.split_once(':') {
                Some((field, trailing)) => (field, Some(trailing)),
                None => (rest, None),
            };
            let hash = parse_hash(field).map_err(|what| {
                let hint = match trailing {
                    Some(t) if t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        " (this looks like an htdigest file, `user:realm:md5`; \
                         digest authentication is not supported)"
                    }
                    _ => "",
                };
                at(&format!("user {user:?}: {what}{hint}"))
            })?;
            if let Some(first) = lines_of.get(user) {
                return Err(at(&format!(
                    "user {user:?} is already defined on line {first}"
                )));
            }
            lines_of.insert(user.to_owned(), number);
            users.insert(user.to_owned(), hash);
        }
        let decoy = users.values().max_by_key(|h| h.work()).cloned();
        Ok(Htpasswd { users, decoy })
    }

    /// true only for a known user with the right password.
    ///
    /// An unknown user's password is checked against the decoy hash (see
    /// the field's comment) and the answer discarded, so both failures take
    /// the same time.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match (self.users.get(user), &self.decoy) {
            (Some(hash), _) => hash.verify(password),
            (None, Some(decoy)) => {
                // Kept from being optimised away, and false whatever it says.
                let _ = std::hint::black_box(decoy.verify(password));
                false
            }
            (None, None) => false,
        }
    }
}

/// The user names, never the hashes.
impl fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.users.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Htpasswd").field("users", &names).finish()
    }
}

/// `Authorization: Basic …` → (user, password). None for any other scheme,
/// bad base64, no colon, non-UTF-8 user, empty user.
///
/// The scheme is case-insensitive (RFC 7617); the token must be padded
/// standard base64. The user is everything before the first colon, the
/// password (any bytes, possibly empty or containing colons) everything
/// after it.
pub fn basic_credentials(header: &http::HeaderValue) -> Option<(String, Vec<u8>)> {
    let value = header.as_bytes().trim_ascii();
    let split = value.iter().position(|&b| b == b' ' || b == b'\t')?;
    let (scheme, token) = value.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let token = std::str::from_utf8(token.trim_ascii()).ok()?;
    // base64ct decodes in constant time: the token carries the password.
    let decoded = Base64::decode_vec(token).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let (user, password) = decoded.split_at(colon);
    let user = std::str::from_utf8(user).ok()?;
    if user.is_empty() {
        return None;
    }
    Some((user.to_owned(), password[1..].to_vec()))
}

impl Hash {
    fn verify(&self, password: &[u8]) -> bool {
        match self {
            // Err only for a malformed hash or cost, both refused at load.
            Hash::Bcrypt { hash, .. } => bcrypt::verify(password, hash).unwrap_or(false),
            Hash::Md5Crypt {
                magic,
                salt,
                digest,
            } => md5_crypt(password, magic.as_bytes(), salt.as_bytes())
                .as_slice()
                .ct_eq(digest.as_slice())
                .into(),
            Hash::Sha256Crypt {
                params,
                salt,
                digest,
                ..
            } => {
                let raw = sha_crypt::sha256_crypt(password, salt.as_bytes(), *params);
                transpose(&raw, &SHA256_CRYPT_ORDER)
                    .as_slice()
                    .ct_eq(digest.as_slice())
                    .into()
            }
            Hash::Sha512Crypt {
                params,
                salt,
                digest,
                ..
            } => {
                let raw = sha_crypt::sha512_crypt(password, salt.as_bytes(), *params);
                transpose(&raw, &SHA512_CRYPT_ORDER)
                    .as_slice()
                    .ct_eq(digest.as_slice())
                    .into()
            }
            Hash::Sha1(digest) => Sha1::digest(password)
                .as_slice()
                .ct_eq(digest.as_slice())
                .into(),
        }
    }

    /// Rough cost of one check in nanoseconds, as measured here with the
    /// crates optimised; only the order matters (choosing the decoy).
    fn work(&self) -> u64 {
        match self {
            // bcrypt cost 4: ~1.2 ms; each step up doubles it.
            Hash::Bcrypt { cost, .. } => 75_000u64.saturating_mul(1u64 << (*cost).min(40)),
            // 1000 rounds of MD5.
            Hash::Md5Crypt { .. } => 300_000,
            // 5000 rounds: ~0.8 ms (SHA-256), ~2.3 ms (SHA-512).
            Hash::Sha256Crypt { rounds, .. } => u64::from(*rounds) * 160,
            Hash::Sha512Crypt { rounds, .. } => u64::from(*rounds) * 460,
            Hash::Sha1(_) => 1_000,
        }
    }
}

/// Parse the hash field of a line; Err says what is wrong without quoting
/// the field.
fn parse_hash(field: &str) -> Result<Hash, String> {
    if let Some(b64) = field.strip_prefix("{SHA}") {
        let mut digest = [0u8; 20];
        return match Base64::decode(b64, &mut digest) {
            Ok(d) if d.len() == 20 => Ok(Hash::Sha1(digest)),
            _ => Err("malformed {SHA} hash (expected base64 of a 20-byte SHA-1 digest)".into()),
        };
    }
    if let Some(rest) = field.strip_prefix("$apr1$") {
        return parse_md5_crypt("$apr1$", rest);
    }
    if let Some(rest) = field.strip_prefix("$1$") {
        return parse_md5_crypt("$1$", rest);
    }
    if let Some(rest) = field.strip_prefix("$5$") {
        let (params, rounds, salt, digest) = parse_sha_crypt::<32>(rest, "$5$")?;
        return Ok(Hash::Sha256Crypt {
            params,
            rounds,
            salt,
            digest,
        });
    }
    if let Some(rest) = field.strip_prefix("$6$") {
        let (params, rounds, salt, digest) = parse_sha_crypt::<64>(rest, "$6$")?;
        return Ok(Hash::Sha512Crypt {
            params,
            rounds,
            salt,
            digest,
        });
    }
    if ["$2y$", "$2b$", "$2a$"]
        .iter()
        .any(|p| field.starts_with(p))
    {
        return parse_bcrypt(field);
    }
    if field.starts_with("$2x$") {
        return Err(
            "unsupported bcrypt variant $2x$ (hashes made with a known bug in \
                    crypt_blowfish); re-hash the password with `htpasswd -B`"
                .into(),
        );
    }
    if let Some(rest) = field.strip_prefix('$') {
        if let Some((id, _)) = rest.split_once('$') {
            if !id.is_empty()
                && id.len() <= 16
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(format!(
                    "unsupported hash kind ${id}$ (supported: bcrypt $2y$/$2b$/$2a$, \
                     $apr1$, $1$, $5$, $6$, {{SHA}})"
                ));
            }
        }
    }
    if field.len() == 13 && field.bytes().all(is_crypt_b64) {
        return Err(
            "crypt(3) DES hash (`htpasswd -d`): insecure and not supported; \
                    re-hash the password with `htpasswd -B`"
                .into(),
        );
    }
    Err(
        "not a supported password hash; if it is a plaintext password \
         (`htpasswd -p`): plaintext is insecure and not supported; \
         hash it with `htpasswd -B`"
            .into(),
    )
}

fn is_crypt_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

fn parse_bcrypt(field: &str) -> Result<Hash, String> {
    let malformed = || "malformed bcrypt hash (expected $2y$NN$ and 53 characters)".to_string();
    let parts: bcrypt::HashParts = field.parse().map_err(|_| malformed())?;
    let cost = parts.get_cost();
    if !(4..=31).contains(&cost) {
        return Err(format!("bcrypt cost {cost} out of range (4 to 31)"));
    }
    Ok(Hash::Bcrypt {
        hash: field.to_owned(),
        cost,
    })
}

/// `salt$digest` after the magic: a salt of at most 8 characters, 22 of
/// digest.
fn parse_md5_crypt(magic: &'static str, rest: &str) -> Result<Hash, String> {
    let malformed = || format!("malformed {magic} hash (expected {magic}SALT$ and 22 characters)");
    let (salt, encoded) = rest.split_once('$').ok_or_else(malformed)?;
    if salt.len() > 8 {
        return Err(malformed());
    }
    let digest = decode_crypt_b64::<16>(encoded).ok_or_else(malformed)?;
    Ok(Hash::Md5Crypt {
        magic,
        salt: salt.to_owned(),
        digest,
    })
}

/// `[rounds=N$]salt$digest` after `$5$` / `$6$`. Rounds outside 1000 to
/// 999999999 are refused, as libxcrypt (the crypt(3) htpasswd calls) refuses
/// them; a salt is at most 16 characters.
fn parse_sha_crypt<const N: usize>(
    rest: &str,
    magic: &str,
) -> Result<(Params, u32, String, [u8; N]), String> {
    let malformed = || format!("malformed {magic} hash");
    let mut fields = rest.split('$');
    let mut next = fields.next().ok_or_else(malformed)?;
    let mut rounds = Params::RECOMMENDED_ROUNDS;
    if let Some(n) = next.strip_prefix("rounds=") {
        rounds = n
            .parse::<u32>()
            .ok()
            .filter(|_| n.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("malformed {magic} hash: bad rounds="))?;
        next = fields.next().ok_or_else(malformed)?;
    }
    let params = Params::new(rounds).map_err(|_| {
        format!(
            "{magic} rounds={rounds} out of range ({} to {})",
            Params::ROUNDS_MIN,
            Params::ROUNDS_MAX
        )
    })?;
    let salt = next;
    if salt.len() > 16 {
        return Err(format!("malformed {magic} hash: salt longer than 16"));
    }
    let encoded = fields.next().ok_or_else(malformed)?;
    if fields.next().is_some() {
        return Err(malformed());
    }
    let digest = decode_crypt_b64::<N>(encoded).ok_or_else(malformed)?;
    Ok((params, rounds, salt.to_owned(), digest))
}

mod crypt;
use crypt::{decode_crypt_b64, md5_crypt, transpose, SHA256_CRYPT_ORDER, SHA512_CRYPT_ORDER};
#[cfg(test)]
mod tests;
