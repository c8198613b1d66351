//! The supervisor task of one pool: it owns every worker process and
//! generation, and moves them through their states — reap, restart with
//! back-off, promote, switch to a candidate, retire, stop. Woken by worker
//! exits, probe results, control messages (reload, stop) and a 250 ms
//! tick that also polls the watched files and the request budget.

use std::io;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, Notify};

mod replace;

use super::slot::{backoff, GenerationState, Slot};
use super::{Control, Generation, Shared, WorkerStatus, FAIL_AFTER, MIN_UPTIME, TERM_GRACE};
use crate::config::{BackendAddr, SpawnRoute};
use crate::fastcgi::pool::{Backend, Balancer};
use crate::fastcgi::worker::{self, Worker};

/// How often the supervisor looks at its workers, files and counters.
const TICK: Duration = Duration::from_millis(250);
/// How long a candidate generation may take to answer the probe.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before retrying a replacement whose workers would not start.
const RETRY_REPLACE: Duration = Duration::from_secs(30);

/// A generation being started to replace the serving one.
struct Candidate {
    gen: GenerationState,
    why: String,
    probe: oneshot::Receiver<io::Result<()>>,
    _probe_task: AbortOnDrop,
}

/// The probe task dies with its candidate.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) struct Supervisor {
    shared: Arc<Shared>,
    spec: SpawnRoute,
    runtime_dir: PathBuf,
    index: usize,
    drain_limit: Duration,
    current: Option<GenerationState>,
    candidate: Option<Candidate>,
    retiring: Vec<GenerationState>,
    /// Consecutive workers of the serving generation that died young.
    fast_failures: u32,
    next_gen: u32,
    /// Woken by worker exits and probe results.
    exited: Arc<Notify>,
    /// Watched files as last acted upon.
    mtimes: Vec<Option<(SystemTime, u64)>>,
    /// A replacement asked for while another was under way.
    pending: Option<String>,
    /// No replacement for recycling before this (after one failed).
    replace_after: Instant,
    /// Worker restarts in serving generations, for the status page.
    restarts: u64,
    /// Requests answered by generations already stopped.
    served_before: u64,
    control: mpsc::Receiver<Control>,
}

fn file_stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Supervisor {
    /// The first generation, then the task that supervises the pool.
    pub(super) fn start(
        spec: SpawnRoute,
        shared: Arc<Shared>,
        control: mpsc::Receiver<Control>,
        runtime_dir: &Path,
        index: usize,
        drain_limit: Duration,
    ) -> io::Result<()> {
        let mut sup = Supervisor {
            shared,
            mtimes: spec.watch.iter().map(|p| file_stamp(p)).collect(),
            spec,
            runtime_dir: runtime_dir.to_path_buf(),
            index,
            drain_limit,
            current: None,
            candidate: None,
            retiring: Vec::new(),
            fast_failures: 0,
            next_gen: 1,
            exited: Arc::new(Notify::new()),
            pending: None,
            replace_after: Instant::now(),
            restarts: 0,
            served_before: 0,
            control,
        };
        let gen = sup.new_generation()?;
        *sup.shared.write_current() = gen.shared.clone();
        sup.current = Some(gen);
        tokio::spawn(sup.run());
        Ok(())
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = self.mtimes.clone();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    seen = self.watch(seen);
                }
                _ = self.exited.notified() => {}
                msg = self.control.recv() => match msg {
                    Some(Control::Reload(why)) => self.pending = Some(why.to_string()),
                    Some(Control::Stop { grace, done }) => {
                        self.stop(grace).await;
                        let _ = done.send(());
                        return;
                    }
                    // Every handle dropped (a configuration replaced by a
                    // reload let go of it): stop in order, not by SIGKILL.
                    None => return self.stop(self.drain_limit.min(TERM_GRACE)).await,
                },
            }
            self.step();
        }
    }

    /// One pass over everything: reap, restart, promote, switch, retire.
    fn step(&mut self) {
        self.reap();
        self.tend_current();
        self.advance_candidate();
        self.advance_retiring();
        self.maybe_replace();
        self.publish_status();
    }

    /// Refresh the snapshot the status page reads.
    fn publish_status(&self) {
        let gens = self.current.iter().chain(&self.retiring);
        let mut workers = Vec::new();
        // The serving generation's count is read live by `status()`.
        let mut requests = self.served_before;
        for gen in gens.chain(self.candidate.as_ref().map(|c| &c.gen)) {
            if self.current.as_ref().is_none_or(|c| c.id != gen.id) {
                requests += gen.requests();
            }
            for slot in &gen.slots {
                let (pid, state, uptime_secs) = slot.describe();
                workers.push(WorkerStatus {
                    pid,
                    state,
                    generation: gen.id,
                    uptime_secs,
                });
            }
        }
        let mut status = self.shared.status.lock().unwrap_or_else(|p| p.into_inner());
        status.generation = self.current.as_ref().map_or(0, |g| g.id);
        status.workers = workers;
        status.restarts = self.restarts;
        status.requests = requests;
    }

    fn label(&self) -> &str {
        &self.shared.label
    }

    fn new_generation(&mut self) -> io::Result<GenerationState> {
        let id = self.next_gen;
        self.next_gen += 1;
        let socket = self.runtime_dir.join(format!("p{}.g{id}.sock", self.index));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)?;
        let backend = Backend::exact(
            BackendAddr::Unix(socket.clone()),
            self.spec.workers as usize,
        );
        let mut gen = GenerationState {
            id,
            shared: Some(Arc::new(Generation {
                balancer: Balancer::new(vec![backend]),
                users: AtomicUsize::new(0),
            })),
            listener: Some(listener),
            socket,
            slots: Vec::new(),
            retiring_since: None,
        };
        for _ in 0..self.spec.workers {
            let slot = self.start_worker(&gen);
            gen.slots.push(slot);
        }
        Ok(gen)
    }

    fn start_worker(&mut self, gen: &GenerationState) -> Slot {
        let Some(listener) = &gen.listener else {
            return Slot::Exited;
        };
        match Worker::spawn(&self.spec, listener, self.label(), self.exited.clone()) {
            Ok(w) => {
                tracing::info!(
                    "{}: worker pid {} started (generation {})",
                    self.label(),
                    w.pid,
                    gen.id
                );
                Slot::Starting(w)
            }
            Err(e) => {
                self.fast_failures += 1;
                let wait = backoff(self.fast_failures);
                tracing::error!(
                    "{}: cannot start {}: {e}; retrying in {:.2}s",
                    self.label(),
                    self.spec.program.display(),
                    wait.as_secs_f64()
                );
                Slot::Backoff(Instant::now() + wait)
            }
        }
    }

    /// Reap every exited worker and decide what its slot becomes.
    fn reap(&mut self) {
        if let Some(mut gen) = self.current.take() {
            for i in 0..gen.slots.len() {
                let Some(w) = gen.slots[i].worker_mut() else {
                    continue;
                };
                let Some(status) = w.try_reap() else { continue };
                let (pid, up) = (w.pid, w.uptime().as_secs_f64());
                gen.slots[i] = match gen.slots[i] {
                    Slot::Starting(_) => self.failed_at_start(pid, status, up),
                    Slot::Running(_) => {
                        tracing::warn!(
                            "{}: worker pid {pid} exited ({status}) after {up:.0}s; restarting",
                            self.label()
                        );
                        Slot::Backoff(Instant::now())
                    }
                    _ => Slot::Exited,
                };
            }
            self.current = Some(gen);
        }
        let label = &self.shared.label;
        let others = self.candidate.iter_mut().map(|c| &mut c.gen);
        for gen in others.chain(self.retiring.iter_mut()) {
            for slot in &mut gen.slots {
                let Some(w) = slot.worker_mut() else { continue };
                if let Some(status) = w.try_reap() {
                    tracing::debug!(
                        "{label}: worker pid {} of generation {} exited ({status})",
                        w.pid,
                        gen.id
                    );
                    *slot = Slot::Exited;
                }
            }
        }
    }

    /// A worker of the serving generation died young: back off.
    fn failed_at_start(&mut self, pid: u32, status: std::process::ExitStatus, up: f64) -> Slot {
        self.fast_failures += 1;
        let wait = backoff(self.fast_failures);
        tracing::warn!(
            "{}: worker pid {pid} exited at start ({status}, after {up:.2}s); restarting in {:.2}s",
            self.label(),
            wait.as_secs_f64()
        );
        self.set_last_failure(format!("worker pid {pid} exited at start ({status})"));
        Slot::Backoff(Instant::now() + wait)
    }

    fn set_last_failure(&self, why: String) {
        let mut f = self
            .shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        f.0 = why;
    }

    /// Serving generation: promote survivors, restart due slots, and
    /// declare the pool failing (or healthy again).
    fn tend_current(&mut self) {
        let Some(mut gen) = self.current.take() else {
            return;
        };
        let now = Instant::now();
        for i in 0..gen.slots.len() {
            match &gen.slots[i] {
                Slot::Starting(w) if w.uptime() >= MIN_UPTIME => {
                    if let Slot::Starting(w) = std::mem::replace(&mut gen.slots[i], Slot::Exited) {
                        gen.slots[i] = Slot::Running(w);
                    }
                    self.fast_failures = 0;
                }
                Slot::Backoff(at) if *at <= now => {
                    self.restarts += 1;
                    gen.slots[i] = self.start_worker(&gen);
                }
                _ => {}
            }
        }
        let running = gen.slots.iter().any(|s| matches!(s, Slot::Running(_)));
        if running || self.fast_failures < FAIL_AFTER {
            if self.shared.failing.swap(false, Ordering::Relaxed) {
                tracing::info!("{}: workers are up again", self.label());
            }
        } else {
            let next = gen.slots.iter().filter_map(|s| match s {
                Slot::Backoff(at) => Some(*at),
                _ => None,
            });
            let next = next.min().unwrap_or(now);
            let last = self
                .shared
                .failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .clone();
            if !self.shared.failing.load(Ordering::Relaxed) {
                tracing::error!(
                    "{}: workers keep exiting at start ({} in a row; last: {last}); answering 503 until one stays up; check the command and its log lines above",
                    self.label(),
                    self.fast_failures
                );
            }
            self.shared.set_failing(Some((last, next)));
        }
        self.current = Some(gen);
    }

    /// Shutdown: close connections, SIGTERM all, SIGKILL after `grace`.
    async fn stop(&mut self, grace: Duration) {
        *self.shared.write_current() = None;
        let kill_at = Instant::now() + grace;
        let mut gens: Vec<GenerationState> = self.retiring.drain(..).collect();
        gens.extend(self.current.take());
        gens.extend(self.candidate.take().map(|c| c.gen));
        for gen in &mut gens {
            gen.stop(kill_at);
        }
        while gens.iter().any(|g| g.live() > 0) && Instant::now() < kill_at {
            for gen in &mut gens {
                for slot in &mut gen.slots {
                    if slot.worker_mut().is_some_and(|w| w.try_reap().is_some()) {
                        *slot = Slot::Exited;
                    }
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), self.exited.notified()).await;
        }
        for gen in &mut gens {
            for slot in &mut gen.slots {
                if let Some(w) = slot.worker_mut() {
                    if !w.is_reaped() {
                        tracing::warn!(
                            "{}: worker pid {} ignored SIGTERM; killed",
                            self.label(),
                            w.pid
                        );
                    }
                    w.kill_and_reap().await;
                }
            }
        }
        tracing::info!("{}: all workers stopped", self.label());
    }
}
