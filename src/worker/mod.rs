//! The worker: claims versions in batches, runs the pipeline on each, and records the
//! outcomes in batches, while renewing the leases it holds.
//!
//! Three loops share one in-flight registry ([`registry`]), one file each:
//! * the claim loop ([`claimer`]) takes up to `batch_size` versions whenever this daemon holds fewer
//!   than `concurrency`, and otherwise waits for a notification, a finished batch or the
//!   fallback poll;
//! * the finisher ([`finisher`]) records outcomes in one `postpub._finish` call per batch (whatever has
//!   accumulated while the previous call ran), and frees the slots;
//! * the renewer ([`renewer`]) extends every held lease each `lease / 3`, and cancels work whose lease
//!   was lost.
//!
//! Each claimed version runs in [`process`]; [`slots`] is the concurrency limit;
//! [`claim`] wraps the SQL; [`rescuer`] is the separate loop that takes back expired
//! leases.
//!
//! Shutdown (STYLE §4): the soft token stops claiming; in-flight work gets
//! `shutdown_timeout` to finish; then the hard token cancels it and it is released back to
//! post-publication with the attempt not counted.

pub mod claim;
mod claimer;
mod finisher;
mod process;
mod registry;
mod renewer;
pub mod rescuer;
mod slots;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::service::Base;
use crate::shutdown::Shutdown;
use claimer::{ClaimLoop, Settings};
use finisher::Finisher;
use registry::{Done, Registry};
use renewer::Renewer;
use slots::Slots;

/// How long the finisher may keep trying after the hard deadline before leaving the rest
/// to lease expiry.
const RELEASE_GRACE: Duration = Duration::from_secs(5);

/// Finish calls in flight at once: while one batch commits, the next is being written, so
/// finishing keeps up with a claim loop that claims a batch per round trip.
const FINISHERS: usize = 2;

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured pipeline cannot be built (the daemon checks this before it starts
    /// the worker, so only a library caller sees it).
    #[error("pipeline: {0}")]
    Pipeline(#[from] crate::pipeline::BuildError),
}

/// The worker service: the claim loop, its finishers and its renewer.
pub struct Worker {
    base: Base,
    claim_pool: Pool,
    /// The configuration in force; a reload (SIGHUP) sends a new one here, and the worker
    /// applies `[worker]` and `[pipeline]` without dropping in-flight work.
    config: watch::Receiver<Arc<Config>>,
    wake: Arc<Notify>,
    claiming: watch::Sender<bool>,
}

impl Worker {
    /// A worker following `config` (its `[worker]` and `[pipeline]` sections), claiming
    /// on `claim_pool` (one connection with asynchronous commit: see
    /// `db::CLAIM_SESSION`), woken by `wake` (the listener, and its own finisher).
    pub fn new(
        base: &Base,
        claim_pool: Pool,
        config: watch::Receiver<Arc<Config>>,
        wake: Arc<Notify>,
    ) -> Worker {
        Worker {
            base: base.clone(),
            claim_pool,
            config,
            wake,
            claiming: watch::Sender::new(true),
        }
    }

    /// Whether the last claim succeeded: the daemon is not ready while claims fail (a
    /// read-only or unreachable database), however healthy LISTEN looks.
    pub fn claiming(&self) -> watch::Receiver<bool> {
        self.claiming.subscribe()
    }

    /// Runs until `shutdown.soft` is cancelled and in-flight work is finished or
    /// released; `shutdown.hard` (cancelled by the caller, or by this drain once
    /// `shutdown_timeout` passed) cancels work in flight.
    pub async fn run(mut self, shutdown: Shutdown) -> Result<(), Error> {
        tracing::debug!(actor = %self.base.actor, "worker started");
        let initial = self.config.borrow_and_update().clone();
        let settings = Settings::new(&initial, &self.base)?;
        let registry = Registry::default();
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Done>();
        let done_rx = Arc::new(tokio::sync::Mutex::new(done_rx));
        let finishers = TaskTracker::new();
        for _ in 0..FINISHERS {
            let finisher = Finisher::new(&self.base, &self.config, &registry, &self.wake);
            finishers.spawn(finisher.run(done_rx.clone()));
        }
        finishers.close();
        let renew_stop = CancellationToken::new();
        let renewer =
            tokio::spawn(Renewer::new(&self.base, &self.config, &registry).run(renew_stop.clone()));
        let mut claimer = ClaimLoop {
            slots: Slots::new(settings.worker.concurrency),
            base: self.base,
            claim_pool: self.claim_pool,
            config: self.config,
            wake: self.wake,
            claiming: self.claiming,
            registry,
            done: done_tx,
            tasks: TaskTracker::new(),
            hard: shutdown.hard.clone(),
            settings,
        };
        let stop_deadline = claimer.run(&shutdown.soft).await;
        drain(claimer, stop_deadline, finishers).await;
        renew_stop.cancel();
        let _ = renewer.await;
        tracing::debug!("worker stopped");
        Ok(())
    }
}

/// The stop: in-flight work gets `shutdown_timeout` to finish (from `stop_deadline` when
/// the stop came during a claim); then the hard token cancels it and it is released
/// back with the attempt not counted; the finishers record what is left.
async fn drain(
    claimer: ClaimLoop,
    stop_deadline: Option<tokio::time::Instant>,
    finishers: TaskTracker,
) {
    // Phase 1: let in-flight work finish (every slot back means every outcome recorded).
    let timeout = claimer.settings.worker.shutdown_timeout;
    let in_flight = claimer.slots.in_flight();
    if in_flight > 0 {
        tracing::info!(in_flight, timeout = %humantime::format_duration(timeout), "waiting for in-flight versions");
    }
    let deadline = stop_deadline.unwrap_or_else(|| tokio::time::Instant::now() + timeout);
    let phase1 = tokio::time::timeout_at(deadline, claimer.slots.all_back()).await;
    // Everything after phase 1 shares one grace period, so a stop is bounded by
    // `shutdown_timeout + RELEASE_GRACE` even when the server answers nothing.
    let grace_end = tokio::time::Instant::now() + RELEASE_GRACE;
    if phase1.is_err() {
        // Phase 2: cancel what still runs; its tasks release their versions.
        tracing::warn!(
            in_flight = claimer.slots.in_flight(),
            "shutdown timeout reached; releasing unfinished versions"
        );
        claimer.hard.cancel();
        if tokio::time::timeout_at(grace_end, claimer.slots.all_back())
            .await
            .is_err()
        {
            tracing::warn!(
                unreleased = claimer.slots.in_flight(),
                "could not record every release; those versions return when their lease expires"
            );
        }
    }
    let tasks = claimer.tasks.clone();
    tasks.close();
    drop(claimer);
    if tokio::time::timeout_at(grace_end, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some version tasks did not stop in time");
    }
    // The finishers end once every sender is gone and their queues are empty (or the
    // database is unreachable: then leases expire and another daemon rescues).
    if tokio::time::timeout_at(grace_end, finishers.wait())
        .await
        .is_err()
    {
        tracing::warn!("finisher did not drain in time");
    }
}
