//! The worker: claims versions in batches, runs the pipeline on each, and records the
//! outcomes in batches, while renewing the leases it holds.
//!
//! Three loops share one in-flight registry:
//! * the claim loop takes up to `batch_size` versions whenever this daemon holds fewer
//!   than `concurrency`, and otherwise waits for a notification, a finished batch or the
//!   fallback poll;
//! * the finisher records outcomes in one `postpub._finish` call per batch (whatever has
//!   accumulated while the previous call ran), and frees the slots;
//! * the renewer extends every held lease each `lease / 3`, and cancels work whose lease
//!   was lost.
//!
//! Shutdown (STYLE §4): the soft token stops claiming; in-flight work gets
//! `shutdown_timeout` to finish; then the hard token cancels it and it is released back to
//! post-publication with the attempt not counted.

pub mod claim;
pub mod rescuer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::backoff::BackoffConfig;
use crate::config::{Config, WorkerConfig};
use crate::db::{self, sql, State};
use crate::event::{Event, Events};
use crate::pipeline::{Pipeline, RecipeSource, Work};
use claim::{Claimed, Finish, Finished, Outcome};

/// How long the finisher may keep trying after the hard deadline before leaving the rest
/// to lease expiry.
const RELEASE_GRACE: Duration = Duration::from_secs(5);

/// Finish calls in flight at once: while one batch commits, the next is being written, so
/// finishing keeps up with a claim loop that claims a batch per round trip.
const FINISHERS: usize = 2;

/// Recipes kept in memory; recipes never change, so the cache never goes stale.
const RECIPE_CACHE_SIZE: usize = 256;

/// The worker service.
pub struct Worker {
    /// Work pool.
    pub pool: Pool,
    /// The claim loop's own connection (asynchronous commit: see `db::CLAIM_SESSION`).
    pub claim_pool: Pool,
    /// `host:port/db` of the pool, for messages.
    pub target: String,
    /// Who we are in `locked_by` and the audit trail.
    pub actor: String,
    /// The configuration in force; a reload (SIGHUP) sends a new one here, and the worker
    /// applies `[worker]` and `[pipeline]` without dropping in-flight work.
    pub config: watch::Receiver<Arc<Config>>,
    /// Woken by the listener (and by the finisher when slots free up).
    pub wake: Arc<Notify>,
    /// Reports claims and outcomes.
    pub events: Events,
    /// Whether the last claim succeeded: the daemon is not ready while claims fail
    /// (a read-only or unreachable database), however healthy LISTEN looks.
    pub claiming: watch::Sender<bool>,
}

/// One claimed version this daemon is working on.
struct InFlight {
    token: i64,
    document: String,
    /// Cancelled when the lease is lost or on hard shutdown.
    cancel: CancellationToken,
}

/// Versions held by this daemon, by id.
#[derive(Clone, Default)]
struct Registry(Arc<Mutex<HashMap<i64, InFlight>>>);

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, InFlight>> {
        // A panic while holding this lock would be a bug elsewhere; the map itself is
        // still consistent (single inserts/removes), so keep going with it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An outcome on its way to the finisher, with the slot it frees once recorded.
struct Done {
    id: i64,
    token: i64,
    document: String,
    outcome: Outcome,
    _slot: OwnedSemaphorePermit,
}

/// Recipes by id, shared across reloads (recipes never change).
type RecipeCache = Arc<Mutex<HashMap<i64, Arc<RecipeSource>>>>;

/// What processing needs, shared by every version's task. A reload builds a new one;
/// tasks already running keep the one they started with.
struct Context {
    pool: Pool,
    target: String,
    pipeline: Arc<Pipeline>,
    max_body_bytes: u64,
    max_attempts: u32,
    backoff: BackoffConfig,
    recipes: RecipeCache,
    events: Events,
}

/// The claim loop's view of the configuration, rebuilt on reload.
struct Settings {
    worker: WorkerConfig,
    ctx: Arc<Context>,
    /// No step reads the body: versions finish without a task of their own.
    instant: bool,
}

/// The concurrency limit, adjustable while versions are in flight.
struct Slots {
    sem: Arc<Semaphore>,
    /// Permits in existence (held or available).
    total: usize,
    /// Permits still to retire after a decrease (retired as they come back).
    debt: usize,
}

impl Slots {
    fn new(n: usize) -> Self {
        Self {
            sem: Arc::new(Semaphore::new(n)),
            total: n,
            debt: 0,
        }
    }

    fn resize(&mut self, to: usize) {
        let current = self.total - self.debt;
        if to > current {
            let add = (to - current).saturating_sub(self.debt);
            let cancel = (to - current).min(self.debt);
            self.debt -= cancel;
            self.sem.add_permits(add);
            self.total += add;
        } else {
            self.debt += current - to;
        }
        self.retire();
    }

    fn retire(&mut self) {
        if self.debt > 0 {
            let n = self.sem.forget_permits(self.debt);
            self.debt -= n;
            self.total -= n;
        }
    }

    fn in_flight(&self) -> usize {
        self.total - self.sem.available_permits()
    }

    async fn all_back(&self) {
        let all = u32::try_from(self.total).unwrap_or(u32::MAX);
        let _ = self.sem.acquire_many(all).await;
    }
}

impl Worker {
    fn settings(&self, cfg: &Config, recipes: &RecipeCache) -> Result<Settings, String> {
        let pipeline =
            Arc::new(Pipeline::from_config(&cfg.pipeline)?.with_events(self.events.clone()));
        Ok(Settings {
            worker: cfg.worker.clone(),
            instant: !pipeline.needs_body(),
            ctx: Arc::new(Context {
                pool: self.pool.clone(),
                target: self.target.clone(),
                pipeline,
                max_body_bytes: cfg.pipeline.max_body_bytes,
                max_attempts: cfg.worker.max_attempts,
                backoff: cfg.worker.backoff.clone(),
                recipes: recipes.clone(),
                events: self.events.clone(),
            }),
        })
    }

    /// Runs until `soft` is cancelled and in-flight work is finished or released.
    pub async fn run(mut self, soft: CancellationToken, hard: CancellationToken) {
        tracing::debug!(actor = %self.actor, "worker started");
        let recipes = RecipeCache::default();
        let initial = self.config.borrow_and_update().clone();
        let mut settings = match self.settings(&initial, &recipes) {
            Ok(s) => s,
            Err(e) => {
                // The daemon builds the same pipeline before it starts the worker.
                tracing::error!(error = %e, "pipeline cannot be built; worker not started");
                return;
            }
        };
        let mut slots = Slots::new(settings.worker.concurrency);
        let registry = Registry::default();
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Done>();
        let tasks = TaskTracker::new();

        let done_rx = Arc::new(tokio::sync::Mutex::new(done_rx));
        let finishers = TaskTracker::new();
        for _ in 0..FINISHERS {
            finishers.spawn(
                Finisher {
                    pool: self.pool.clone(),
                    target: self.target.clone(),
                    actor: self.actor.clone(),
                    config: self.config.clone(),
                    registry: registry.clone(),
                    wake: self.wake.clone(),
                    events: self.events.clone(),
                }
                .run(done_rx.clone()),
            );
        }
        finishers.close();
        let renew_stop = CancellationToken::new();
        let renewer = tokio::spawn(
            Renewer {
                pool: self.pool.clone(),
                target: self.target.clone(),
                config: self.config.clone(),
                registry: registry.clone(),
            }
            .run(renew_stop.clone()),
        );

        let mut poll = interval(settings.worker.poll_interval);
        let mut db_backoff = Duration::from_millis(100);
        // Set when a wait below was ended by a reload (`changed()` marks it seen).
        let mut reloaded = false;
        // False once the configuration sender is gone (no more reloads can come).
        let mut reloads_open = true;
        // Set when the stop arrived during a claim: the drain's deadline started then.
        let mut stop_deadline: Option<tokio::time::Instant> = None;
        // The claim loop: take free slots, claim that many, start them; wait only when a
        // claim came back short.
        'claiming: loop {
            if std::mem::take(&mut reloaded) || self.config.has_changed().unwrap_or(false) {
                let cfg = self.config.borrow_and_update().clone();
                match self.settings(&cfg, &recipes) {
                    Ok(new) => {
                        if new.worker.poll_interval != settings.worker.poll_interval {
                            poll = interval(new.worker.poll_interval);
                        }
                        slots.resize(new.worker.concurrency);
                        if new.ctx.max_body_bytes != settings.ctx.max_body_bytes {
                            self.store_max_body_bytes(new.ctx.max_body_bytes);
                        }
                        tracing::info!(
                            concurrency = new.worker.concurrency,
                            batch_size = new.worker.batch_size,
                            steps = ?new.ctx.pipeline.names(),
                            "worker settings reloaded"
                        );
                        settings = new;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reloaded pipeline cannot be built; keeping the previous one")
                    }
                }
            }
            slots.retire();
            let first = tokio::select! {
                biased;
                _ = soft.cancelled() => break 'claiming,
                r = self.config.changed(), if reloads_open => {
                    match r {
                        Ok(()) => reloaded = true,
                        Err(_) => reloads_open = false,
                    }
                    continue 'claiming;
                }
                p = slots.sem.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break 'claiming, // closed: only on shutdown
                },
            };
            let mut permits = vec![first];
            while permits.len() < settings.worker.batch_size {
                match slots.sem.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let want = permits.len();
            let claim = {
                let claim = self.claim(want, settings.worker.lease);
                tokio::pin!(claim);
                tokio::select! {
                    r = &mut claim => r,
                    _ = soft.cancelled() => {
                        // The stop came during a claim. Its answer is still awaited, within
                        // the drain's deadline, so that what it claimed is started and then
                        // finished or released like the rest. Only a claim the server does
                        // not answer in that time (a stalled server) is abandoned: if it
                        // commits later, its versions come back when their leases expire.
                        let deadline =
                            tokio::time::Instant::now() + settings.worker.shutdown_timeout;
                        stop_deadline = Some(deadline);
                        match tokio::time::timeout_at(deadline, &mut claim).await {
                            Ok(r) => r,
                            Err(_) => break 'claiming,
                        }
                    }
                }
            };
            let claimed = match claim {
                Ok(c) => {
                    db_backoff = Duration::from_millis(100);
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
                    tracing::warn!(error = %e, retry_in_ms = db_backoff.as_millis() as u64, new_sessions = retired, "claim failed");
                    tokio::select! {
                        biased;
                        _ = soft.cancelled() => break 'claiming,
                        _ = tokio::time::sleep(db_backoff) => {}
                    }
                    db_backoff = (db_backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            let got = claimed.len();
            for (c, slot) in claimed.into_iter().zip(permits.drain(..)) {
                self.start(c, slot, &hard, &registry, &done_tx, &tasks, &settings);
            }
            drop(permits);
            if got == want {
                continue; // a full batch: there is probably more
            }
            tokio::select! {
                biased;
                _ = soft.cancelled() => break 'claiming,
                r = self.config.changed(), if reloads_open => match r {
                    Ok(()) => reloaded = true,
                    Err(_) => reloads_open = false,
                },
                _ = self.wake.notified() => {}
                _ = poll.tick() => {}
            }
        }

        // Phase 1: let in-flight work finish (every slot back means every outcome recorded).
        let timeout = settings.worker.shutdown_timeout;
        let in_flight = slots.in_flight();
        if in_flight > 0 {
            tracing::info!(in_flight, timeout = %humantime::format_duration(timeout), "waiting for in-flight versions");
        }
        let deadline = stop_deadline.unwrap_or_else(|| tokio::time::Instant::now() + timeout);
        let phase1 = tokio::time::timeout_at(deadline, slots.all_back()).await;
        // Everything after phase 1 shares one grace period, so a stop is bounded by
        // `shutdown_timeout + RELEASE_GRACE` even when the server answers nothing.
        let grace_end = tokio::time::Instant::now() + RELEASE_GRACE;
        if phase1.is_err() {
            // Phase 2: cancel what still runs; its tasks release their versions.
            tracing::warn!(
                in_flight = slots.in_flight(),
                "shutdown timeout reached; releasing unfinished versions"
            );
            hard.cancel();
            if tokio::time::timeout_at(grace_end, slots.all_back())
                .await
                .is_err()
            {
                tracing::warn!(
                    unreleased = slots.in_flight(),
                    "could not record every release; those versions return when their lease expires"
                );
            }
        }
        tasks.close();
        drop(done_tx);
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
        renew_stop.cancel();
        let _ = renewer.await;
        tracing::debug!("worker stopped");
    }

    /// Writes a reloaded `pipeline.max_body_bytes` where `postpub.publish` reads it, in
    /// the background (a failure is only logged: the previous limit stays).
    fn store_max_body_bytes(&self, bytes: u64) {
        let (pool, target) = (self.pool.clone(), self.target.clone());
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
        let client = db::get(&self.claim_pool, &self.target).await?;
        let claimed = claim::claim_batch(&client, &self.actor, n, lease).await?;
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
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        c: Claimed,
        slot: OwnedSemaphorePermit,
        hard: &CancellationToken,
        registry: &Registry,
        done_tx: &mpsc::UnboundedSender<Done>,
        tasks: &TaskTracker,
        settings: &Settings,
    ) {
        let cancel = hard.child_token();
        registry.lock().insert(
            c.id,
            InFlight {
                token: c.token,
                document: c.document.clone(),
                cancel: cancel.clone(),
            },
        );
        let _ = self.events.send(Event::Claimed {
            version_id: c.id,
            document: c.document.clone(),
            attempt: c.attempts,
            wait_s: std::time::SystemTime::now()
                .duration_since(c.created_at)
                .unwrap_or_default()
                .as_secs_f64(),
        });
        if c.is_tombstone || settings.instant {
            tracing::debug!(version_id = c.id, document = %c.document, attempt = c.attempts, "claimed");
            let _ = done_tx.send(Done {
                id: c.id,
                token: c.token,
                document: c.document,
                outcome: Outcome::Publish {
                    collated: None,
                    warnings: Vec::new(),
                },
                _slot: slot,
            });
            return;
        }
        let span = tracing::info_span!("version", version_id = c.id, document = %c.document);
        let done_tx = done_tx.clone();
        let ctx = settings.ctx.clone();
        tasks.spawn(
            async move {
                tracing::debug!(attempt = c.attempts, "claimed");
                let outcome = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => Outcome::Release,
                    o = ctx.process(&c) => o,
                };
                let _ = done_tx.send(Done {
                    id: c.id,
                    token: c.token,
                    document: c.document,
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

impl Context {
    /// Loads what the pipeline needs, runs it, and decides the outcome.
    async fn process(&self, c: &Claimed) -> Outcome {
        if c.body_bytes as u64 > self.max_body_bytes {
            return Outcome::Error(format!(
                "body is {} bytes, more than pipeline.max_body_bytes ({})",
                c.body_bytes, self.max_body_bytes
            ));
        }
        let mut work = match self.load(c).await {
            Ok(w) => w,
            Err(e) => return self.transient(c, format!("loading the version: {e}")),
        };
        let started = Instant::now();
        match self.pipeline.run(&mut work).await {
            Ok(()) => {
                let _ = self.events.send(Event::StepRan {
                    step: "pipeline",
                    seconds: started.elapsed().as_secs_f64(),
                });
                Outcome::Publish {
                    collated: work.transformed.then_some(work.body),
                    warnings: work.warnings,
                }
            }
            Err(e) if e.is_transient() => self.transient(c, e.to_string()),
            Err(e) => Outcome::Error(e.to_string()),
        }
    }

    /// A transient failure: retry with backoff, or give up after `max_attempts` claims.
    fn transient(&self, c: &Claimed, error: String) -> Outcome {
        let attempt = u32::try_from(c.attempts).unwrap_or(0);
        if attempt >= self.max_attempts {
            Outcome::Error(format!("gave up after {attempt} attempts: {error}"))
        } else {
            let after = self.backoff.delay(attempt);
            tracing::info!(attempt, retry_in_ms = after.as_millis() as u64, error = %error, "transient failure; will retry");
            Outcome::Retry { error, after }
        }
    }

    async fn load(&self, c: &Claimed) -> Result<Work, db::Error> {
        let client = db::get(&self.pool, &self.target).await?;
        let stmt = client
            .prepare_cached(sql::FETCH_BODY)
            .await
            .map_err(db::Error::query("preparing the body fetch"))?;
        let row = client
            .query_one(&stmt, &[&c.id])
            .await
            .map_err(db::Error::query("loading the body"))?;
        let body: String = row.get(0);
        let recipe = match c.recipe_id {
            Some(id) if self.pipeline.needs_recipe() => Some(self.recipe(&client, id).await?),
            _ => None,
        };
        Ok(Work {
            version_id: c.id,
            document: c.document.clone(),
            version: c.version,
            attempt: c.attempts,
            body,
            recipe,
            transformed: false,
            warnings: Vec::new(),
        })
    }

    async fn recipe(
        &self,
        client: &deadpool_postgres::Client,
        id: i64,
    ) -> Result<Arc<RecipeSource>, db::Error> {
        if let Some(r) = self.recipes_lock().get(&id) {
            return Ok(r.clone());
        }
        let stmt = client
            .prepare_cached(sql::FETCH_RECIPE)
            .await
            .map_err(db::Error::query("preparing the recipe fetch"))?;
        let row = client
            .query_one(&stmt, &[&id])
            .await
            .map_err(db::Error::query("loading the recipe"))?;
        let recipe = Arc::new(RecipeSource {
            id,
            css: row.get(0),
        });
        let mut cache = self.recipes_lock();
        if cache.len() >= RECIPE_CACHE_SIZE {
            cache.clear();
        }
        cache.insert(id, recipe.clone());
        Ok(recipe)
    }

    fn recipes_lock(&self) -> MutexGuard<'_, HashMap<i64, Arc<RecipeSource>>> {
        self.recipes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Records outcomes in batches.
struct Finisher {
    pool: Pool,
    target: String,
    actor: String,
    /// For `worker.batch_size`, which a reload may change.
    config: watch::Receiver<Arc<Config>>,
    registry: Registry,
    wake: Arc<Notify>,
    events: Events,
}

impl Finisher {
    /// Takes whatever has accumulated (up to a batch) and records it; several finishers
    /// share one queue, each holding the receiver only while it collects a batch.
    async fn run(self, rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Done>>>) {
        let mut queue: Vec<Done> = Vec::new();
        let mut backoff = Duration::from_millis(50);
        loop {
            let batch_size = self.config.borrow().worker.batch_size;
            // Wait on the shared queue only with nothing of our own to retry: a finisher
            // holding versions whose documents were busy must not sit behind another one
            // that is waiting for new work.
            let mut rx = if queue.is_empty() {
                let mut rx = rx.lock().await;
                match rx.recv().await {
                    Some(d) => queue.push(d),
                    None => return,
                }
                Some(rx)
            } else {
                rx.try_lock().ok()
            };
            if let Some(rx) = rx.as_mut() {
                while queue.len() < batch_size {
                    match rx.try_recv() {
                        Ok(d) => queue.push(d),
                        Err(_) => break,
                    }
                }
            }
            drop(rx);
            let take = queue.len().min(batch_size);
            let batch: Vec<Done> = queue.drain(..take).collect();
            match self.finish(&batch).await {
                Ok(results) => {
                    backoff = Duration::from_millis(50);
                    let mut results: HashMap<i64, Finished> = results.into_iter().collect();
                    let mut waiting = Vec::new();
                    for d in batch {
                        match results.remove(&d.id) {
                            Some(f) => self.report(&d, f),
                            None => waiting.push(d),
                        }
                    }
                    self.wake.notify_one();
                    if !waiting.is_empty() {
                        // Their documents are locked by an application transaction that is
                        // publishing to them; try again shortly.
                        tracing::debug!(count = waiting.len(), "documents busy; finishing later");
                        queue.extend(waiting);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                Err(e) => {
                    let retired = db::retire_sessions_after(&e);
                    tracing::warn!(error = %e, count = batch.len(), retry_in_ms = backoff.as_millis() as u64, new_sessions = retired, "recording outcomes failed; will retry");
                    queue.splice(0..0, batch);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn finish(&self, batch: &[Done]) -> Result<Vec<(i64, Finished)>, db::Error> {
        let finishes: Vec<Finish> = batch
            .iter()
            .map(|d| Finish {
                id: d.id,
                token: d.token,
                outcome: d.outcome.clone(),
            })
            .collect();
        let started = Instant::now();
        let client = db::get(&self.pool, &self.target).await?;
        let done = claim::finish_batch(&client, &self.actor, &finishes).await?;
        tracing::debug!(
            batch = finishes.len(),
            finished = done.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "finish"
        );
        Ok(done)
    }

    fn report(&self, d: &Done, f: Finished) {
        self.registry.lock().remove(&d.id);
        let (id, document) = (d.id, d.document.as_str());
        match f {
            Finished::State(state) => {
                match (&d.outcome, state) {
                    (Outcome::Error(e), _) => {
                        tracing::warn!(version_id = id, document, error = %e, "version errored")
                    }
                    (Outcome::Retry { .. }, _) => {
                        tracing::debug!(version_id = id, document, "version will be retried")
                    }
                    (Outcome::Release, _) => {
                        tracing::info!(version_id = id, document, "version released")
                    }
                    (_, State::Current) => {
                        tracing::info!(version_id = id, document, "version is current")
                    }
                    (_, state) => {
                        tracing::info!(version_id = id, document, %state, "version finished")
                    }
                }
                let _ = self.events.send(Event::Finished {
                    version_id: id,
                    document: d.document.clone(),
                    state,
                });
            }
            Finished::Lost => {
                tracing::warn!(
                    version_id = id,
                    document,
                    "lease lost before the outcome was recorded; nothing written"
                );
                let _ = self.events.send(Event::LeaseLost {
                    version_id: id,
                    document: d.document.clone(),
                });
            }
        }
    }
}

/// Keeps held leases alive.
struct Renewer {
    pool: Pool,
    target: String,
    /// For `worker.lease`, which a reload may change.
    config: watch::Receiver<Arc<Config>>,
    registry: Registry,
}

impl Renewer {
    async fn run(self, stop: CancellationToken) {
        loop {
            let (lease, every) = {
                let cfg = self.config.borrow();
                (cfg.worker.lease, cfg.worker.renew_interval())
            };
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let held: Vec<(i64, i64)> = self
                .registry
                .lock()
                .iter()
                .map(|(id, f)| (*id, f.token))
                .collect();
            if held.is_empty() {
                continue;
            }
            let renewal = async {
                let client = db::get(&self.pool, &self.target).await?;
                claim::renew_leases(&client, &held, lease).await
            };
            // A renewal the server does not answer (stalled) must not hold up the stop.
            let renewed = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                r = renewal => r,
            };
            match renewed {
                Ok(renewed) => {
                    let registry = self.registry.lock();
                    for (id, _) in held.iter().filter(|(id, _)| !renewed.contains(id)) {
                        // Either finished a moment ago (then this is a no-op) or rescued
                        // by another daemon: stop working on it; the finish is fenced.
                        if let Some(f) = registry.get(id) {
                            tracing::debug!(version_id = id, document = %f.document, "lease not renewed; cancelling its work");
                            f.cancel.cancel();
                        }
                    }
                }
                Err(e) => {
                    db::retire_sessions_after(&e);
                    tracing::warn!(error = %e, held = held.len(), "renewing leases failed");
                }
            }
        }
    }
}
