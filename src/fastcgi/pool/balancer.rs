//! Balancing over a route's backends: fewest requests in flight first,
//! failover past backends that refuse, a wait for a slot when all are at
//! their cap, and a probe of the backend due soonest when all are down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{Backend, CheckoutError, Lease};

/// The backends of one route, balanced by fewest requests in flight
/// (round-robin among equals).
pub struct Balancer {
    backends: Vec<Arc<Backend>>,
    next: AtomicUsize,
}

impl Balancer {
    pub fn new(backends: Vec<Arc<Backend>>) -> Balancer {
        Balancer {
            backends,
            next: AtomicUsize::new(0),
        }
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// Try the backend whose back-off ends first, if no other request is
    /// probing it already.
    async fn probe(&self, connect_timeout: Duration) -> Option<Lease> {
        let b = self.backends.iter().min_by_key(|b| b.health().retry_at)?;
        if b.probing.swap(true, Ordering::AcqRel) {
            return None;
        }
        let lease = b.try_checkout(connect_timeout).await;
        b.probing.store(false, Ordering::Release);
        lease.ok().flatten()
    }

    /// A connection from the best available backend.
    pub async fn checkout(
        &self,
        connect_timeout: Duration,
        wait: Duration,
    ) -> Result<Lease, CheckoutError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.backends.len();
        let mut order: Vec<&Arc<Backend>> =
            (0..n).map(|i| &self.backends[(start + i) % n]).collect();
        order.sort_by_key(|b| b.in_flight.load(Ordering::Relaxed));
        let mut tried_any = false;
        let mut reachable = Vec::new();
        for b in order.iter().filter(|b| b.available()) {
            tried_any = true;
            match b.try_checkout(connect_timeout).await {
                Ok(Some(lease)) => return Ok(lease),
                Ok(None) => reachable.push(*b),
                Err(_) => continue, // marked down; try the next one
            }
        }
        if let Some(b) = reachable.first() {
            let deadline = tokio::time::Instant::now() + wait;
            return match b.checkout_waiting(connect_timeout, deadline).await {
                Ok(Some(lease)) => Ok(lease),
                Ok(None) => Err(CheckoutError::Busy),
                Err(e) => Err(CheckoutError::AllDown(format!("{}: {e}", b.name()))),
            };
        }
        if !tried_any {
            // Every backend is in back-off. As nginx does with a lone
            // upstream, one request at a time still tries the one due
            // soonest, so service returns the moment it is back rather
            // than when the back-off ends.
            if let Some(lease) = self.probe(connect_timeout).await {
                return Ok(lease);
            }
        }
        let why = self
            .backends
            .iter()
            .map(|b| format!("{}: {}", b.name(), b.last_error()))
            .collect::<Vec<_>>()
            .join("; ");
        Err(CheckoutError::AllDown(if tried_any {
            why
        } else {
            format!("all in back-off ({why})")
        }))
    }
}
