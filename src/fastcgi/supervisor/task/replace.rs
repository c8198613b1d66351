//! Replacing a pool's generation without dropping a request: a reload or
//! an edited script file starts a candidate generation on a new socket;
//! once its workers answer the readiness probe, new requests switch to it
//! and the old one retires when its last request is done.

use std::time::Instant;

use super::*;

impl Supervisor {
    /// Start a candidate generation, unless one is under way.
    pub(super) fn begin_replacement(&mut self, why: String) {
        if self.candidate.is_some() || !self.retiring.is_empty() {
            self.pending = Some(why);
            return;
        }
        tracing::info!(
            "{}: {why}: starting generation {}",
            self.label(),
            self.next_gen
        );
        let gen = match self.new_generation() {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(
                    "{}: cannot create a socket in {}: {e}",
                    self.label(),
                    self.runtime_dir.display()
                );
                self.replace_after = Instant::now() + RETRY_REPLACE;
                return;
            }
        };
        let (tx, probe) = oneshot::channel();
        let socket = gen.socket.clone();
        let wake = self.exited.clone();
        let probe_task = tokio::spawn(async move {
            let _ = tx.send(worker::probe(&socket, READY_TIMEOUT).await);
            wake.notify_one();
        });
        self.candidate = Some(Candidate {
            gen,
            why,
            probe,
            _probe_task: AbortOnDrop(probe_task),
        });
    }

    /// Switch to the candidate once it answers; abandon it if it dies.
    pub(super) fn advance_candidate(&mut self) {
        let label = &self.shared.label;
        let Some(c) = self.candidate.as_mut() else {
            return;
        };
        let verdict = match c.probe.try_recv() {
            Ok(Ok(())) => Some(true),
            _ if c.gen.live() == 0 => Some(false),
            Ok(Err(e)) => {
                tracing::warn!(
                    "{label}: generation {} did not answer a probe ({e}); switching to it anyway",
                    c.gen.id
                );
                Some(true)
            }
            Err(oneshot::error::TryRecvError::Closed) => Some(c.gen.live() > 0),
            Err(oneshot::error::TryRecvError::Empty) => None,
        };
        match verdict {
            None => {}
            Some(true) => self.switch_to_candidate(),
            Some(false) => {
                let Some(mut c) = self.candidate.take() else {
                    return;
                };
                tracing::error!(
                    "{}: generation {} ({}) exited at start; generation {} keeps serving (fix the program; its log lines are above)",
                    self.label(),
                    c.gen.id,
                    c.why,
                    self.current.as_ref().map_or(0, |g| g.id)
                );
                c.gen.stop(Instant::now());
                self.retiring.push(c.gen);
                self.replace_after = Instant::now() + RETRY_REPLACE;
            }
        }
    }

    pub(super) fn switch_to_candidate(&mut self) {
        let Some(Candidate { mut gen, .. }) = self.candidate.take() else {
            return;
        };
        for slot in &mut gen.slots {
            if matches!(slot, Slot::Exited) {
                *slot = Slot::Backoff(Instant::now());
            }
        }
        *self.shared.write_current() = gen.shared.clone();
        self.fast_failures = 0;
        self.shared.set_failing(None);
        if let Some(mut old) = self.current.replace(gen) {
            tracing::info!(
                "{}: generation {} is serving; generation {} retires when its requests finish",
                self.label(),
                self.next_gen - 1,
                old.id
            );
            // Socket and listener stay until the generation stops:
            // requests that took it before the switch may still connect.
            old.retiring_since = Some(Instant::now());
            self.retiring.push(old);
        }
    }

    /// Retire drained generations; escalate to SIGKILL; forget the dead.
    pub(super) fn advance_retiring(&mut self) {
        let now = Instant::now();
        for gen in &mut self.retiring {
            let drained = gen.shared.as_ref().is_none_or(|g| g.idle());
            let overdue = gen
                .retiring_since
                .is_some_and(|t| now - t >= self.drain_limit);
            if gen.shared.is_some() && (drained || overdue) {
                self.served_before += gen.requests();
                gen.stop(now + TERM_GRACE);
            }
            for slot in &mut gen.slots {
                if let Slot::Stopping(w, at) = slot {
                    if *at <= now {
                        w.signal(libc::SIGKILL);
                    }
                }
            }
        }
        self.retiring.retain(|g| g.shared.is_some() || g.live() > 0);
    }

    /// Poll the watched files (debounced: a change counts once the file
    /// has looked the same for two ticks, so a half-written file is not
    /// loaded). Returns this tick's observation.
    pub(super) fn watch(
        &mut self,
        previous: Vec<Option<(SystemTime, u64)>>,
    ) -> Vec<Option<(SystemTime, u64)>> {
        if !self.spec.reload {
            return previous;
        }
        let now: Vec<_> = self.spec.watch.iter().map(|p| file_stamp(p)).collect();
        for (i, stamp) in now.iter().enumerate() {
            if *stamp != self.mtimes[i] && *stamp == previous[i] && stamp.is_some() {
                self.mtimes[i] = *stamp;
                let name = self.spec.watch[i].display().to_string();
                self.pending = Some(format!("reloading ({name} changed)"));
            }
        }
        now
    }

    /// A reload asked for, or the request budget used up: replace.
    pub(super) fn maybe_replace(&mut self) {
        if self.candidate.is_some() || !self.retiring.is_empty() {
            return;
        }
        if let Some(why) = self.pending.take() {
            return self.begin_replacement(why);
        }
        let budget = self
            .spec
            .max_requests
            .saturating_mul(self.spec.workers as u64);
        let used = self.current.as_ref().map_or(0, GenerationState::requests);
        if budget > 0 && used >= budget && Instant::now() >= self.replace_after {
            self.begin_replacement(format!(
                "recycling after {used} requests (max_requests = {})",
                self.spec.max_requests
            ));
        }
    }
}
