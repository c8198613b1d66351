//! TLS for HTTPS listeners: load a PEM certificate chain and private key
//! into a rustls server configuration (ring provider, TLS 1.2 and 1.3) that
//! offers HTTP/2 and HTTP/1.1 by ALPN.
//!
//! The files are read once, when cgihost starts (as root, before it drops
//! privileges, so a key readable only by root works); `--check-config`
//! loads them too, so a bad key is caught before a restart.

use std::path::Path;
use std::sync::Arc;

use rustls::server::ResolvesServerCert;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, TlsFiles};

/// ALPN protocols we offer, in order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// RFC 8737: the protocol an ACME CA offers, alone, to check a name.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// An acceptor whose certificates come from `resolver` (ACME), which
/// also accepts `acme-tls/1` (chosen only when a client offers nothing
/// else we speak).
pub fn acceptor_with_resolver(resolver: Arc<dyn ResolvesServerCert>) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| ServerConfig::builder())
        .with_no_client_auth();
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = ALPN
        .iter()
        .chain([&ACME_TLS_ALPN])
        .map(|p| p.to_vec())
        .collect();
    TlsAcceptor::from(Arc::new(config))
}

/// Build the acceptor for `files`; the error names the file and the problem.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ConfigError> {
    let certs = load_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        ConfigError(format!(
            "tls_key {}: no usable private key: {e}",
            files.key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            ConfigError(format!(
                "tls_cert {} / tls_key {}: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bad = |e: &dyn std::fmt::Display| ConfigError(format!("tls_cert {}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no CERTIFICATE block in the file"));
    }
    Ok(certs)
}
