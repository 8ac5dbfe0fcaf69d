//! The claim loop: takes up to `batch_size` versions whenever this daemon holds fewer than
//! `concurrency`, starts each (inline when nothing needs doing, else on its own task), and
//! otherwise waits for a wake-up, a reload or the fallback poll. A reload of `[worker]` or
//! `[pipeline]` is applied between claims without dropping work in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::claim::{self, Claimed, Outcome};
use super::process::Processor;
use super::registry::{Done, InFlight, Registry};
use super::slots::Slots;
use crate::backoff::DbRetry;
use crate::config::{Config, WorkerConfig};
use crate::db;
use crate::event::Event;
use crate::pipeline::BuildError;
use crate::service::Base;

/// The claim loop's view of the configuration, rebuilt on reload.
pub(super) struct Settings {
    pub(super) worker: WorkerConfig,
    pub(super) process: Arc<Processor>,
}

impl Settings {
    pub(super) fn new(cfg: &Config, base: &Base) -> Result<Settings, BuildError> {
        Ok(Settings {
            worker: cfg.worker.clone(),
            process: Arc::new(Processor::new(cfg, base)?),
        })
    }
}

/// The claim loop and what it hands work to.
pub(super) struct ClaimLoop {
    pub(super) base: Base,
    /// The claim loop's own connection (asynchronous commit: see `db::CLAIM_SESSION`).
    pub(super) claim_pool: Pool,
    pub(super) config: watch::Receiver<Arc<Config>>,
    /// Woken by the listener (and by the finisher when slots free up).
    pub(super) wake: Arc<Notify>,
    /// Whether the last claim succeeded (see `Worker::claiming`).
    pub(super) claiming: watch::Sender<bool>,
    pub(super) registry: Registry,
    pub(super) done: mpsc::UnboundedSender<Done>,
    /// The version tasks.
    pub(super) tasks: TaskTracker,
    /// Cancels work in flight (the shutdown's hard token).
    pub(super) hard: CancellationToken,
    pub(super) slots: Slots,
    pub(super) settings: Settings,
}

impl ClaimLoop {
    /// Claims until `soft` is cancelled; returns the drain's deadline when the stop came
    /// during a claim (it started then).
    pub(super) async fn run(&mut self, soft: &CancellationToken) -> Option<tokio::time::Instant> {
        let mut poll = interval(self.settings.worker.poll_interval);
        let mut retry = DbRetry::default();
        // Set when a wait below was ended by a reload (`changed()` marks it seen).
        let mut reloaded = false;
        // False once the configuration sender is gone (no more reloads can come).
        let mut reloads_open = true;
        // Set when the stop arrived during a claim: the drain's deadline started then.
        let mut stop_deadline = None;
        // Take free slots, claim that many, start them; wait only when a claim came back
        // short.
        loop {
            if std::mem::take(&mut reloaded) || self.config.has_changed().unwrap_or(false) {
                if let Some(period) = self.reload() {
                    poll = interval(period);
                }
            }
            self.slots.retire();
            let first = tokio::select! {
                biased;
                _ = soft.cancelled() => break,
                r = self.config.changed(), if reloads_open => {
                    match r {
                        Ok(()) => reloaded = true,
                        Err(_) => reloads_open = false,
                    }
                    continue;
                }
                p = self.slots.sem.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break, // closed: only on shutdown
                },
            };
            let mut permits = self.more_slots(first);
            let want = permits.len();
            let Some(claim) = self.claim_or_stop(want, soft, &mut stop_deadline).await else {
                break;
            };
            let claimed = match claim {
                Ok(c) => {
                    retry.reset();
                    self.claiming
                        .send_if_modified(|ok| !std::mem::replace(ok, true));
                    c
                }
                Err(e) => {
                    drop(permits);
                    self.claiming
                        .send_if_modified(|ok| std::mem::replace(ok, false));
                    // A read-only or lost session stays so: the next claim gets a new one.
                    let retired = db::retire_sessions_after(&e);
                    tracing::warn!(error = %e, retry_in_ms = retry.pause().as_millis() as u64, new_sessions = retired, "claim failed");
                    if !retry.wait(soft).await {
                        break;
                    }
                    continue;
                }
            };
            let got = claimed.len();
            for (c, slot) in claimed.into_iter().zip(permits.drain(..)) {
                self.start(c, slot, got);
            }
            drop(permits);
            if got == want {
                continue; // a full batch: there is probably more
            }
            tokio::select! {
                biased;
                _ = soft.cancelled() => break,
                r = self.config.changed(), if reloads_open => match r {
                    Ok(()) => reloaded = true,
                    Err(_) => reloads_open = false,
                },
                _ = self.wake.notified() => {}
                _ = poll.tick() => {}
            }
        }
        stop_deadline
    }

    /// `first` and as many more free slots as a batch takes.
    fn more_slots(&self, first: OwnedSemaphorePermit) -> Vec<OwnedSemaphorePermit> {
        let mut permits = vec![first];
        while permits.len() < self.settings.worker.batch_size {
            match self.slots.sem.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        permits
    }

    /// Applies the configuration in the watch; returns the new poll interval when it
    /// changed. A pipeline that cannot be built leaves the previous settings in force.
    fn reload(&mut self) -> Option<Duration> {
        let cfg = self.config.borrow_and_update().clone();
        let new = match Settings::new(&cfg, &self.base) {
            Ok(new) => new,
            Err(e) => {
                tracing::error!(error = %e, "reloaded pipeline cannot be built; keeping the previous one");
                return None;
            }
        };
        let old = std::mem::replace(&mut self.settings, new);
        let new = &self.settings;
        self.slots.resize(new.worker.concurrency);
        if new.process.max_body_bytes != old.process.max_body_bytes {
            self.store_max_body_bytes(new.process.max_body_bytes);
        }
        tracing::info!(
            concurrency = new.worker.concurrency,
            batch_size = new.worker.batch_size,
            steps = ?new.process.pipeline.names(),
            "worker settings reloaded"
        );
        (new.worker.poll_interval != old.worker.poll_interval).then_some(new.worker.poll_interval)
    }

    /// One claim of `want` versions. When the stop comes during it, its answer is still
    /// awaited, within the drain's deadline, so that what it claimed is started and then
    /// finished or released like the rest; `None` when the server does not answer in that
    /// time (a stalled server): if it commits later, its versions come back when their
    /// leases expire.
    async fn claim_or_stop(
        &self,
        want: usize,
        soft: &CancellationToken,
        stop_deadline: &mut Option<tokio::time::Instant>,
    ) -> Option<Result<Vec<Claimed>, db::Error>> {
        let claim = self.claim(want, self.settings.worker.lease);
        tokio::pin!(claim);
        tokio::select! {
            r = &mut claim => Some(r),
            _ = soft.cancelled() => {
                let deadline =
                    tokio::time::Instant::now() + self.settings.worker.shutdown_timeout;
                *stop_deadline = Some(deadline);
                tokio::time::timeout_at(deadline, &mut claim).await.ok()
            }
        }
    }

    /// Writes a reloaded `pipeline.max_body_bytes` where `postpub.publish` reads it, in
    /// the background (a failure is only logged: the previous limit stays).
    fn store_max_body_bytes(&self, bytes: u64) {
        let (pool, target) = (self.base.pool.clone(), self.base.target.clone());
        tokio::spawn(async move {
            let stored = async {
                let client = db::get(&pool, &target).await?;
                db::migrate::set_max_body_bytes(&**client, bytes).await
            };
            if let Err(e) = stored.await {
                tracing::warn!(error = %e, "could not store the reloaded pipeline.max_body_bytes");
            }
        });
    }

    async fn claim(&self, n: usize, lease: Duration) -> Result<Vec<Claimed>, db::Error> {
        let started = Instant::now();
        let client = db::get(&self.claim_pool, &self.base.target).await?;
        let claimed = claim::claim_batch(&client, &self.base.actor, n, lease).await?;
        tracing::debug!(
            asked = n,
            claimed = claimed.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "claim"
        );
        Ok(claimed)
    }

    /// Starts work on a claimed version: inline when nothing needs doing (tombstones, a
    /// pipeline of no-ops), otherwise on its own task.
    /// `claim_size` is how many versions the claim that took this one returned (they share
    /// its token).
    fn start(&self, c: Claimed, slot: OwnedSemaphorePermit, claim_size: usize) {
        let instant = c.is_tombstone || self.settings.process.instant();
        // A child token per version is work (the parent keeps a list of them); only a
        // version that runs on its own task can be stopped.
        let cancel = (!instant).then(|| self.hard.child_token());
        self.registry.lock().insert(
            c.id,
            InFlight {
                token: c.token,
                document: c.document.clone(),
                cancel: cancel.clone(),
            },
        );
        let _ = self.base.events.send(Event::Claimed {
            version_id: c.id,
            document: c.document.clone(),
            attempt: c.attempts,
            wait_s: std::time::SystemTime::now()
                .duration_since(c.created_at)
                .unwrap_or_default()
                .as_secs_f64(),
        });
        let Some(cancel) = cancel else {
            tracing::debug!(version_id = c.id, document = %c.document, attempt = c.attempts, "claimed");
            let _ = self.done.send(Done {
                id: c.id,
                token: c.token,
                claim_size,
                document: c.document,
                version: c.version,
                outcome: Outcome::Publish {
                    collated: None,
                    warnings: Vec::new(),
                },
                _slot: slot,
            });
            return;
        };
        let span = tracing::info_span!("version", version_id = c.id, document = %c.document);
        let done = self.done.clone();
        let process = self.settings.process.clone();
        self.tasks.spawn(
            async move {
                tracing::debug!(attempt = c.attempts, "claimed");
                let outcome = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => Outcome::Release,
                    o = process.process(&c) => o,
                };
                let _ = done.send(Done {
                    id: c.id,
                    token: c.token,
                    claim_size,
                    document: c.document,
                    version: c.version,
                    outcome,
                    _slot: slot,
                });
            }
            .instrument(span),
        );
    }
}

/// A poll ticker whose first tick is one period away.
fn interval(period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}
