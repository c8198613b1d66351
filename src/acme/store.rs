//! What ACME keeps on disk, under `acme_dir` (mode 0700): per CA
//! directory, the account (`account.json`) and each certificate's
//! `cert.pem` (the chain) and `key.pem` (0600), in a directory named
//! after its first name. Every file is written to a temporary name and
//! renamed into place, so a crash never leaves half a key.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::config::acme::AcmeConfig;

/// What the status page and the renewal clock need from a certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub names: Vec<String>,
    pub issuer: String,
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// A certificate ready to serve, and what it says.
pub(super) struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// The directory for this CA's account and certificates: the directory
/// URL made into a file name (`acme-v02.api.letsencrypt.org-directory`).
pub(super) fn ca_dir(settings: &AcmeConfig) -> PathBuf {
    let url = settings.directory.trim_start_matches("https://");
    let name: String = url
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    settings.dir.join(name.trim_matches('-'))
}

/// `dir` (0700, also when it existed) and its parents (the usual mode,
/// so the user cgihost runs as can reach `dir` under a root-made parent).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Write `bytes` to `path` atomically (a temporary file in the same
/// directory, synced, then renamed over it), with `mode`.
pub(super) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    private_dir(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

fn cert_dir(settings: &AcmeConfig, names: &[String]) -> PathBuf {
    ca_dir(settings).join(&names[0])
}

/// Save a new certificate's chain and key (the key first: a chain on
/// disk always has its key beside it).
pub(super) fn save(
    settings: &AcmeConfig,
    names: &[String],
    chain: &str,
    key: &str,
) -> std::io::Result<()> {
    let dir = cert_dir(settings, names);
    write_atomic(&dir.join("key.pem"), key.as_bytes(), 0o600)?;
    write_atomic(&dir.join("cert.pem"), chain.as_bytes(), 0o644)
}

/// The stored certificate for `names`, if there is one that covers them
/// all and matches its key. Errors are said and treated as "none".
pub(super) fn load(settings: &AcmeConfig, names: &[String]) -> Option<Loaded> {
    let dir = cert_dir(settings, names);
    let (chain, key) = match (
        std::fs::read(dir.join("cert.pem")),
        std::fs::read(dir.join("key.pem")),
    ) {
        (Ok(c), Ok(k)) => (c, k),
        _ => return None,
    };
    match parse(&chain, &key) {
        Ok(loaded) if names.iter().all(|n| loaded.info.names.contains(n)) => Some(loaded),
        Ok(_) => {
            tracing::info!(
                "acme: stored certificate in {} lacks some of {names:?}; ordering a new one",
                dir.display()
            );
            None
        }
        Err(e) => {
            tracing::warn!(
                "acme: stored certificate in {} is unusable ({e}); ordering a new one",
                dir.display()
            );
            None
        }
    }
}

/// A PEM chain and key made into a serving key, checked to match.
pub(super) fn parse(chain: &[u8], key: &[u8]) -> Result<Loaded, String> {
    let certs = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate chain: {e}"))?;
    let leaf = certs.first().ok_or("no certificate in the chain")?;
    let info = info(leaf)?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("key: {e}"))?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| format!("key: {e}"))?;
    let certified = CertifiedKey::new(certs, signer);
    certified
        .keys_match()
        .map_err(|e| format!("key and certificate: {e}"))?;
    Ok(Loaded {
        key: Arc::new(certified),
        info,
    })
}

fn info(leaf: &CertificateDer<'_>) -> Result<CertInfo, String> {
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| format!("certificate: {e}"))?;
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(CertInfo {
        names,
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}
