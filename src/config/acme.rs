//! Automatic HTTPS settings (`acme_*` keys, `[[site]] acme = true`,
//! `--acme-domain`): which names get a certificate from which ACME CA,
//! where account and certificates are kept, and which challenge proves
//! control of a name. The certificates themselves are `crate::acme`'s.

use std::path::PathBuf;

use super::file::FileConfig;
use super::site_file::FileSite;
use super::{err, ConfigError, Listen};

/// Let's Encrypt's production directory: the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Where the account key and certificates persist by default.
pub const DEFAULT_ACME_DIR: &str = "/var/lib/cgihost/acme";

/// How the CA is to check that we hold a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// A token at `/.well-known/acme-challenge/` on a plain listener (port 80).
    Http01,
    /// A validation certificate on the TLS listener (port 443, ALPN `acme-tls/1`).
    TlsAlpn01,
}

/// The ACME settings; present when at least one name wants a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// One entry per certificate: its names (the first names its files).
    pub certs: Vec<Vec<String>>,
    pub email: Option<String>,
    pub directory: String,
    /// A PEM file holding the CA's root, for a private or test CA.
    pub ca_root: Option<PathBuf>,
    pub dir: PathBuf,
    /// `None`: HTTP-01 when a plain listener exists, else TLS-ALPN-01.
    pub challenge: Option<Challenge>,
    /// Plain HTTP to a name with a certificate gets a 308 to HTTPS.
    pub https_redirect: bool,
}

impl AcmeConfig {
    fn new() -> AcmeConfig {
        AcmeConfig {
            certs: Vec::new(),
            email: None,
            directory: LETS_ENCRYPT.into(),
            ca_root: None,
            dir: DEFAULT_ACME_DIR.into(),
            challenge: None,
            https_redirect: true,
        }
    }

    /// The challenge to use with these listeners.
    pub fn challenge_for(&self, listen: &[Listen]) -> Challenge {
        self.challenge.unwrap_or(if listen.iter().any(|l| !l.tls) {
            Challenge::Http01
        } else {
            Challenge::TlsAlpn01
        })
    }

    /// Whether `host` (no port, any letter case) has a certificate here.
    pub fn covers(&self, host: &str) -> bool {
        self.certs
            .iter()
            .flatten()
            .any(|n| n.eq_ignore_ascii_case(host))
    }

    /// `--acme-domain`: one more certificate for the default site.
    pub fn add_flag_names(
        acme: &mut Option<AcmeConfig>,
        names: &[String],
    ) -> Result<(), ConfigError> {
        if names.is_empty() {
            return Ok(());
        }
        let names = checked_names("--acme-domain", names.iter().map(String::as_str))?;
        acme.get_or_insert_with(AcmeConfig::new).certs.push(names);
        Ok(())
    }
}

/// The file's `acme_*` keys and each `[[site]] acme = true`.
pub(super) fn from_file(
    f: &FileConfig,
    sites: &[FileSite],
) -> Result<Option<AcmeConfig>, ConfigError> {
    let mut acme = AcmeConfig::new();
    if !f.acme_domains.is_empty() {
        let names = checked_names("acme_domains", f.acme_domains.iter().map(String::as_str))?;
        acme.certs.push(names);
    }
    for (i, site) in sites.iter().enumerate() {
        if site.acme == Some(true) {
            let key = format!("site[{i}].hosts");
            acme.certs
                .push(checked_names(&key, site.hosts.iter().map(String::as_str))?);
        }
    }
    let set_any = f.acme_email.is_some()
        || f.acme_directory.is_some()
        || f.acme_ca_root.is_some()
        || f.acme_dir.is_some()
        || f.acme_challenge.is_some();
    if acme.certs.is_empty() {
        if set_any {
            return err(
                "acme_*: no names to certify (set acme_domains or a [[site]]'s acme = true)",
            );
        }
        return Ok(None);
    }
    acme.email = f.acme_email.clone();
    if let Some(d) = &f.acme_directory {
        if !d.starts_with("https://") {
            return err(format!("acme_directory: '{d}' is not an https:// URL"));
        }
        acme.directory = d.clone();
    }
    acme.ca_root = f.acme_ca_root.clone();
    if let Some(dir) = &f.acme_dir {
        acme.dir = dir.clone();
    }
    acme.challenge = match f.acme_challenge.as_deref() {
        None => None,
        Some("http-01") => Some(Challenge::Http01),
        Some("tls-alpn-01") => Some(Challenge::TlsAlpn01),
        Some(other) => {
            return err(format!(
                "acme_challenge: '{other}' is neither http-01 nor tls-alpn-01"
            ))
        }
    };
    acme.https_redirect = f.https_redirect.unwrap_or(true);
    Ok(Some(acme))
}

/// Host names a CA can check over HTTP-01 or TLS-ALPN-01: no wildcard,
/// no IP address, no port; lower-cased.
fn checked_names<'a>(
    key: &str,
    names: impl Iterator<Item = &'a str>,
) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let lower = name.to_ascii_lowercase();
        let plain = !lower.is_empty()
            && lower.contains(|c: char| c.is_ascii_alphabetic())
            && lower
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !plain {
            return err(format!(
                "{key}: '{name}' cannot get an ACME certificate (a plain DNS name is needed: no wildcard, address or port)"
            ));
        }
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    if out.is_empty() {
        return err(format!("{key}: no names to certify"));
    }
    Ok(out)
}

/// The checks that need the merged settings: a TLS listener, and no
/// `tls_cert` beside ACME.
pub(super) fn check(
    acme: &AcmeConfig,
    listen: &[Listen],
    tls_files: bool,
) -> Result<(), ConfigError> {
    if tls_files {
        return err("tls_cert and acme: use one or the other");
    }
    if !listen.iter().any(|l| l.tls) {
        return err("acme: needs a TLS listener ([[listen]] with tls = true)");
    }
    if acme.challenge == Some(Challenge::Http01) && listen.iter().all(|l| l.tls) {
        return err("acme_challenge = \"http-01\": needs a plain (tls = false) listener");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_dns_names_are_certified() {
        let ok = checked_names(
            "k",
            ["Example.org", "www.example.org", "example.org"].into_iter(),
        );
        assert_eq!(ok.unwrap(), ["example.org", "www.example.org"]);
        for bad in ["*.example.org", "127.0.0.1", "example.org:443", "", "a..b"] {
            assert!(checked_names("k", [bad].into_iter()).is_err(), "{bad}");
        }
    }
}
