//! Automatic HTTPS (ACME, RFC 8555): certificates for the configured
//! names from any ACME CA, obtained at start when none is stored, renewed
//! in the background at two-thirds of their lifetime, swapped into the
//! TLS listener without touching open connections. Owns the HTTP-01
//! tokens the router answers at `/.well-known/acme-challenge/`, the
//! TLS-ALPN-01 certificates (`resolver.rs`), what is kept on disk
//! (`store.rs`) and one order (`order.rs`).
//!
//! A failed order is retried with a jittered, doubling back-off (from 2
//! seconds up to an hour), so a CA that is down at start delays HTTPS
//! only; plain HTTP serves all along.

mod order;
mod resolver;
mod store;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio_rustls::TlsAcceptor;

use crate::config::acme::{AcmeConfig, Challenge};
use crate::config::Config;
pub use store::{private_dir, CertInfo};

/// The longest single sleep before the renewal time is looked at again
/// (a suspended machine or a changed clock is noticed within this).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// ACME for one server: the settings, the certificates and their state.
pub struct Acme {
    settings: AcmeConfig,
    challenge: Challenge,
    certs: Vec<Managed>,
    /// HTTP-01: token → key authorization, while an order is under way.
    tokens: Mutex<HashMap<String, String>>,
    resolver: Arc<resolver::Resolver>,
    account: tokio::sync::Mutex<Option<instant_acme::Account>>,
    /// The first TLS listener's port, for the HTTPS redirect.
    https_port: u16,
}

/// One certificate and what the status page says about it.
struct Managed {
    names: Vec<String>,
    state: Mutex<CertState>,
}

#[derive(Default)]
struct CertState {
    info: Option<CertInfo>,
    /// When to renew (unix seconds; jittered once per certificate).
    renew_at: i64,
    /// The last order's outcome: when, and the error if it failed.
    last: Option<(u64, Result<(), String>)>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A random fraction in [0, 1) (std's per-process random hash keys).
fn random_fraction() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(unix_now());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl Acme {
    /// ACME for `config`, with the stored certificates loaded; `None`
    /// when no name asks for one.
    pub fn new(config: &Config) -> Option<Arc<Acme>> {
        let settings = config.acme.clone()?;
        let resolver = Arc::new(resolver::Resolver::default());
        let certs = settings
            .certs
            .iter()
            .map(|names| {
                let managed = Managed {
                    names: names.clone(),
                    state: Mutex::default(),
                };
                if let Some(loaded) = store::load(&settings, names) {
                    tracing::info!(
                        "acme: using the stored certificate for {} (serial {}, expires in {} days)",
                        names.join(", "),
                        loaded.info.serial,
                        (loaded.info.not_after - unix_now()) / 86400
                    );
                    resolver.install(names, loaded.key);
                    managed.set_info(loaded.info, false);
                }
                managed
            })
            .collect();
        let https_port = config
            .listen
            .iter()
            .find(|l| l.tls)
            .map_or(443, |l| l.addr.port());
        Some(Arc::new(Acme {
            challenge: settings.challenge_for(&config.listen),
            settings,
            certs,
            tokens: Mutex::default(),
            resolver,
            account: tokio::sync::Mutex::new(None),
            https_port,
        }))
    }

    /// The acceptor for the TLS listeners: certificates from here.
    pub fn acceptor(&self) -> TlsAcceptor {
        crate::tls::acceptor_with_resolver(self.resolver.clone())
    }

    /// Keep every certificate: obtain the missing ones now, renew the
    /// others when due. Call once, inside the runtime.
    pub fn start(self: &Arc<Self>) {
        for i in 0..self.certs.len() {
            tokio::spawn(keep(self.clone(), i));
        }
    }

    /// HTTP-01: the key authorization for `token`, while it is awaited.
    pub fn http01(&self, token: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.get(token).cloned()
    }

    /// Where plain HTTP for `host` goes instead, when it should.
    pub fn https_redirect_port(&self, host: &str) -> Option<u16> {
        (self.settings.https_redirect && self.settings.covers(host)).then_some(self.https_port)
    }

    /// The status page's `acme` list.
    pub fn status(&self) -> Value {
        let now = unix_now();
        let certs: Vec<Value> = self
            .certs
            .iter()
            .map(|m| {
                let state = m.state.lock().unwrap_or_else(|p| p.into_inner());
                let info = state.info.as_ref();
                let last = state.last.as_ref().map(|(at, result)| {
                    json!({"at_unix": at, "ok": result.is_ok(), "error": result.as_ref().err()})
                });
                json!({
                    "names": m.names,
                    "issuer": info.map(|i| i.issuer.clone()),
                    "serial": info.map(|i| i.serial.clone()),
                    "not_after_unix": info.map(|i| i.not_after),
                    "expires_in_secs": info.map(|i| i.not_after - now),
                    "renew_at_unix": info.map(|_| state.renew_at),
                    "last_renewal": last,
                })
            })
            .collect();
        Value::from(certs)
    }
}

impl Managed {
    /// A certificate now in use: renew at two-thirds of its lifetime,
    /// less up to 1/30 of it (so many servers do not ask at once). A
    /// `fresh` one (just issued) is kept at least a tenth of its lifetime,
    /// whatever its dates say, so a CA's odd dates cannot make us order
    /// again and again.
    fn set_info(&self, info: CertInfo, fresh: bool) {
        let life = (info.not_after - info.not_before).max(0);
        let jitter = (life as f64 / 30.0 * random_fraction()) as i64;
        let mut renew_at = info.not_before + life * 2 / 3 - jitter;
        if fresh {
            renew_at = renew_at.max(unix_now() + (life / 10).max(1));
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.renew_at = renew_at;
        state.info = Some(info);
    }

    /// Seconds until renewal; 0 when due or when there is no certificate.
    fn until_renewal(&self) -> i64 {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.info {
            Some(_) => (state.renew_at - unix_now()).max(0),
            None => 0,
        }
    }

    fn record(&self, result: Result<(), String>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.last = Some((unix_now() as u64, result));
    }
}

/// Certificate `i`'s life: wait until due, order, install; on failure
/// retry after a jittered, doubling delay.
async fn keep(acme: Arc<Acme>, i: usize) {
    let managed = &acme.certs[i];
    let names = managed.names.join(", ");
    let mut failures = 0u32;
    loop {
        let wait = managed.until_renewal();
        if wait > 0 {
            tokio::time::sleep(Duration::from_secs(wait as u64).min(MAX_SLEEP)).await;
            continue;
        }
        tracing::info!(
            "acme: ordering a certificate for {names} from {}",
            acme.settings.directory
        );
        match obtain(&acme, i).await {
            Ok(info) => {
                failures = 0;
                tracing::info!(
                    "acme: certificate for {names} issued by {} (serial {}), now serving it",
                    info.issuer,
                    info.serial
                );
                managed.set_info(info, true);
                managed.record(Ok(()));
            }
            Err(e) => {
                failures += 1;
                let delay = retry_delay(failures);
                tracing::warn!(
                    "acme: no certificate for {names} (attempt {failures}): {e}; retrying in {}s",
                    delay.as_secs()
                );
                managed.record(Err(e));
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// 2 s after the first failure, doubling to an hour, ±25%.
fn retry_delay(failures: u32) -> Duration {
    let base = 2f64 * 2f64.powi(failures.saturating_sub(1).min(16) as i32);
    let base = base.min(MAX_SLEEP.as_secs_f64());
    Duration::from_secs_f64(base * (0.75 + random_fraction() / 2.0))
}

/// Order, save and install a certificate for certificate `i`'s names.
async fn obtain(acme: &Acme, i: usize) -> Result<CertInfo, String> {
    let names = &acme.certs[i].names;
    let (chain, key) = order::issue(acme, names).await?;
    let loaded = store::parse(chain.as_bytes(), key.as_bytes())?;
    if let Err(e) = store::save(&acme.settings, names, &chain, &key) {
        // Serve it anyway; the next start orders again.
        tracing::warn!("acme: cannot store the certificate for {names:?}: {e}");
    }
    acme.resolver.install(names, loaded.key);
    Ok(loaded.info)
}

/// `acme_dir`, made (0700) before cgihost drops root, and given to the
/// user it runs as (`owner`), who renews into it.
pub fn prepare_dir(config: &Config, owner: Option<(u32, u32)>) -> Result<(), String> {
    let Some(settings) = &config.acme else {
        return Ok(());
    };
    let dir = &settings.dir;
    let fail = |e: std::io::Error| format!("acme_dir {}: {e}", dir.display());
    private_dir(dir).map_err(fail)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_seconds_to_an_hour() {
        let first = retry_delay(1).as_secs_f64();
        assert!((1.5..=2.5).contains(&first), "{first}");
        let tenth = retry_delay(10).as_secs_f64();
        assert!((768.0..=1280.0).contains(&tenth), "{tenth}");
        assert!(retry_delay(40) <= MAX_SLEEP.mul_f64(1.25));
    }
}
