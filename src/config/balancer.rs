//! Running behind a load balancer: whose `X-Forwarded-For` and
//! `X-Forwarded-Proto` count (`trusted_proxies`), the health endpoint
//! the balancer checks (`health_path`), and how long cgihost keeps
//! serving after SIGTERM with that endpoint failing, so the balancer stops
//! sending before the listeners close (`shutdown_delay`). PROXY protocol
//! is a listener's setting (`[[listen]] proxy_protocol`).

use std::time::Duration;

use ipnet::IpNet;

use super::file::FileConfig;
use super::site::parse_network;
use super::{err, status_path, ConfigError, MAX_TIMEOUT};

/// The load-balancer settings (top-level keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Balancer {
    /// Peers whose `X-Forwarded-For`/`-Proto` name the client and scheme.
    pub trusted_proxies: Vec<IpNet>,
    /// `/healthz`: 200 while serving, 503 once shutdown began.
    pub health_path: Option<String>,
    /// After SIGTERM/SIGINT: keep accepting and serving this long, the
    /// health endpoint answering 503, before the listeners close.
    pub shutdown_delay: Duration,
}

impl Balancer {
    /// The file's keys, where it sets them.
    pub(super) fn apply(&mut self, f: &mut FileConfig) -> Result<(), ConfigError> {
        if let Some(nets) = f.trusted_proxies.take() {
            self.trusted_proxies = nets
                .iter()
                .map(|n| parse_network(n).map_err(|e| ConfigError(format!("trusted_proxies: {e}"))))
                .collect::<Result<_, _>>()?;
        }
        if let Some(path) = f.health_path.take() {
            if path.trim_end_matches('/').is_empty() {
                return err("health_path: cannot take over /");
            }
            self.health_path = Some(status_path("health_path", &path)?);
        }
        if let Some(secs) = f.shutdown_delay.take() {
            if secs > MAX_TIMEOUT.as_secs() {
                return err(format!(
                    "shutdown_delay: at most {} seconds (a year)",
                    MAX_TIMEOUT.as_secs()
                ));
            }
            self.shutdown_delay = Duration::from_secs(secs);
        }
        Ok(())
    }

    /// The health endpoint must not hide the status page.
    pub(super) fn check(&self, status: Option<&str>) -> Result<(), ConfigError> {
        match (&self.health_path, status) {
            (Some(health), Some(status))
                if *health == status || *health == format!("{status}/metrics") =>
            {
                err(format!(
                    "health_path: '{health}' is a path of the status page ({status}) too"
                ))
            }
            _ => Ok(()),
        }
    }
}
