//! Facts about one client connection that handlers and the access log
//! may see, without knowing the front end that owns the connection:
//! who is on either end ([`ConnInfo`]; behind a load balancer, who the
//! client is: [`forwarded`]), and the hand-over clock of one streamed
//! response ([`ConsumerWatch`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub mod forwarded;

/// Facts about one client connection (and, once a trusted proxy's
/// `X-Forwarded-*` headers are applied, one request on it).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer: the client, or the proxy in front of it.
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Who the request is from (`REMOTE_ADDR`, the access log, `[[access]]`
    /// rules): the peer, or the source a PROXY protocol header or a
    /// trusted proxy's `X-Forwarded-For` names.
    pub client: Client,
    /// The client's scheme is https (`HTTPS`, `REQUEST_SCHEME`): TLS on
    /// this connection, or a trusted proxy says so.
    pub https: bool,
}

impl ConnInfo {
    /// A connection whose client is its TCP peer.
    pub fn direct(peer: SocketAddr, local: SocketAddr, tls: bool) -> ConnInfo {
        ConnInfo {
            peer,
            local,
            client: Client::from(peer),
            https: tls,
        }
    }
}

/// The client's address. `port` is `None` when only an address is known
/// (an `X-Forwarded-For` hop without one): `REMOTE_PORT` is then unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl From<SocketAddr> for Client {
    fn from(addr: SocketAddr) -> Client {
        Client {
            ip: addr.ip().to_canonical(),
            port: Some(addr.port()),
        }
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.ip, self.port) {
            (ip, Some(port)) => SocketAddr::new(ip, port).fmt(f),
            (ip, None) => ip.fmt(f),
        }
    }
}

/// "Since when" something has been waiting, as milliseconds after an
/// epoch plus one, in one atomic (0: not waiting). Cheap to set from a
/// body's poll, read by the connection's timer.
#[derive(Debug, Default)]
pub struct WaitingSince(AtomicU64);

impl WaitingSince {
    /// Waiting from now on.
    pub fn start(&self, epoch: Instant) {
        self.0
            .store(epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
    }

    /// Waiting from now on, unless already waiting.
    pub fn start_if_idle(&self, epoch: Instant) {
        if !self.is_waiting() {
            self.start(epoch);
        }
    }

    /// No longer waiting.
    pub fn stop(&self) {
        if self.is_waiting() {
            self.0.store(0, Ordering::Relaxed);
        }
    }

    pub fn is_waiting(&self) -> bool {
        self.0.load(Ordering::Relaxed) != 0
    }

    /// How long it has waited at `now` (zero if it is not waiting).
    pub fn waited(&self, epoch: Instant, now: Instant) -> Duration {
        match self.0.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => now.saturating_duration_since(epoch + Duration::from_millis(since - 1)),
        }
    }
}

/// When a response body last handed the front end a frame that it has
/// not yet come back for. A body waiting on a silent upstream was asked
/// (and said "not yet"), so it never counts as stalled; only a consumer
/// that stopped asking does (HTTP/2: no WINDOW_UPDATE).
#[derive(Debug)]
pub struct ConsumerWatch {
    handed: WaitingSince,
    /// The connection's epoch, which the clock counts from.
    epoch: Instant,
}

impl ConsumerWatch {
    pub fn new(epoch: Instant) -> ConsumerWatch {
        ConsumerWatch {
            handed: WaitingSince::default(),
            epoch,
        }
    }

    /// The body is being asked for more.
    pub fn asked(&self) {
        self.handed.stop();
    }

    /// The body handed over a data frame.
    pub fn handed(&self) {
        self.handed.start(self.epoch);
    }

    /// How long the last hand-over has waited for the consumer at `now`.
    pub fn waited(&self, now: Instant) -> Duration {
        self.handed.waited(self.epoch, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_consumer_that_asks_again_is_not_waiting() {
        let epoch = Instant::now();
        let watch = ConsumerWatch::new(epoch);
        assert_eq!(watch.waited(Instant::now()), Duration::ZERO);
        watch.handed();
        tokio::time::advance(Duration::from_secs(3)).await;
        let waited = watch.waited(Instant::now());
        assert!(
            waited >= Duration::from_secs(3) - Duration::from_millis(1),
            "{waited:?}"
        );
        watch.asked();
        assert_eq!(watch.waited(Instant::now()), Duration::ZERO);
    }
}
