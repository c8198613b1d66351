//! Which certificate a TLS handshake gets: the TLS-ALPN-01 validation
//! certificate when the client offers only ALPN `acme-tls/1` (RFC 8737,
//! the CA checking a name), else the issued certificate for the SNI name
//! (or the first one, for a client without SNI). With none issued yet the
//! handshake is refused, and a log line says why.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::tls::ACME_TLS_ALPN;

/// Served certificates and pending validation certificates.
#[derive(Debug, Default)]
pub(super) struct Resolver {
    /// Each certificate with its names.
    served: RwLock<Vec<(Vec<String>, Arc<CertifiedKey>)>>,
    /// TLS-ALPN-01 certificates by name, while an order is under way.
    validation: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// When the last "no certificate yet" line was said (unix seconds).
    last_refusal_log: AtomicU64,
}

impl Resolver {
    /// Serve `key` for `names` from now on (new handshakes only: open
    /// connections keep the certificate they started with).
    pub(super) fn install(&self, names: &[String], key: Arc<CertifiedKey>) {
        let mut served = self.served.write().unwrap_or_else(|p| p.into_inner());
        served.retain(|(n, _)| n != names);
        served.push((names.to_vec(), key));
    }

    pub(super) fn set_validation(&self, name: &str, key: Option<Arc<CertifiedKey>>) {
        let mut validation = self.validation.lock().unwrap_or_else(|p| p.into_inner());
        match key {
            Some(k) => validation.insert(name.to_string(), k),
            None => validation.remove(name),
        };
    }

    /// Say why a handshake is refused, at most every 10 seconds.
    fn refuse(&self, why: std::fmt::Arguments<'_>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_refusal_log.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .last_refusal_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!("TLS handshake refused: {why}");
        }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_ascii_lowercase);
        let validating = hello.alpn().is_some_and(|mut offered| {
            offered.next() == Some(ACME_TLS_ALPN) && offered.next().is_none()
        });
        if validating {
            let validation = self.validation.lock().unwrap_or_else(|p| p.into_inner());
            let key = name.as_ref().and_then(|n| validation.get(n)).cloned();
            if key.is_none() {
                self.refuse(format_args!(
                    "an acme-tls/1 check for {name:?}, which no order awaits"
                ));
            }
            return key;
        }
        let served = self.served.read().unwrap_or_else(|p| p.into_inner());
        let by_name = name
            .as_ref()
            .and_then(|n| served.iter().find(|(names, _)| names.contains(n)));
        let key = by_name.or(served.first()).map(|(_, k)| k.clone());
        if key.is_none() {
            self.refuse(format_args!(
                "no ACME certificate yet (for {}); issuance is under way or retrying, see the acme lines",
                name.as_deref().unwrap_or("a client without SNI")
            ));
        }
        key
    }
}
