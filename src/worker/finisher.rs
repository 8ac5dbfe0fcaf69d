//! The finisher: records outcomes in one `postpub._finish` call per batch (whatever has
//! accumulated while the previous call ran), reports them, and frees their slots. A
//! document locked by an application that is publishing to it is tried again shortly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::{mpsc, watch, Notify};

use super::claim::{self, Finish, Finished, Outcome};
use super::registry::{Done, Registry};
use crate::config::Config;
use crate::db::{self, State};
use crate::event::Event;
use crate::service::Base;

/// The queue of outcomes, shared by the finishers.
pub(super) type Queue = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Done>>>;

/// Records outcomes in batches.
pub(super) struct Finisher {
    base: Base,
    /// For `worker.batch_size`, which a reload may change.
    config: watch::Receiver<Arc<Config>>,
    registry: Registry,
    /// Woken once slots are free again.
    wake: Arc<Notify>,
}

impl Finisher {
    pub(super) fn new(
        base: &Base,
        config: &watch::Receiver<Arc<Config>>,
        registry: &Registry,
        wake: &Arc<Notify>,
    ) -> Finisher {
        Finisher {
            base: base.clone(),
            config: config.clone(),
            registry: registry.clone(),
            wake: wake.clone(),
        }
    }

    /// Takes whatever has accumulated (up to a batch) and records it; several finishers
    /// share one queue, each holding the receiver only while it collects a batch. Ends
    /// once every sender is gone and the queue is empty: that is its stop signal.
    pub(super) async fn run(self, rx: Queue) {
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
                    let mut results: FxHashMap<i64, Finished> = results.into_iter().collect();
                    let mut waiting = Vec::new();
                    let mut tokens = FxHashSet::default();
                    // Per claim, the versions this call finished and the claim's size: a
                    // claim finished whole in one call had its row deleted by the call.
                    let mut finished: FxHashMap<i64, (usize, usize)> = FxHashMap::default();
                    let mut recorded = Vec::with_capacity(batch.len());
                    for d in batch {
                        match results.remove(&d.id) {
                            Some(f) => recorded.push((d, f)),
                            None => waiting.push(d),
                        }
                    }
                    // No longer held: out of the registry under one lock for the batch.
                    {
                        let mut held = self.registry.lock();
                        for (d, _) in &recorded {
                            held.remove(&d.id);
                        }
                    }
                    for (d, f) in recorded {
                        tokens.insert(d.token);
                        if matches!(f, Finished::State(_)) {
                            finished.entry(d.token).or_insert((0, d.claim_size)).0 += 1;
                        }
                        self.report(&d, f);
                    }
                    self.wake.notify_one();
                    tokens.retain(|t| finished.get(t).is_none_or(|(n, size)| n != size));
                    self.release_claims(tokens).await;
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
                document: &d.document,
                version: d.version,
                outcome: &d.outcome,
            })
            .collect();
        let started = Instant::now();
        let client = db::get(&self.base.pool, &self.base.target).await?;
        let done = claim::finish_batch(&client, &self.base.actor, &finishes).await?;
        tracing::debug!(
            batch = finishes.len(),
            finished = done.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "finish"
        );
        Ok(done)
    }

    /// Releases the claims none of whose versions this daemon still holds, so that their
    /// rows go now rather than when the rescuer finds them expired (a claim finished whole
    /// by one `_finish` call is released by that call). Best effort: a claim left behind
    /// costs the rescuer one look once its lease has ended.
    async fn release_claims(&self, mut tokens: FxHashSet<i64>) {
        {
            let held = self.registry.lock();
            for f in held.values() {
                tokens.remove(&f.token);
            }
        }
        if tokens.is_empty() {
            return;
        }
        let tokens: Vec<i64> = tokens.into_iter().collect();
        let released = async {
            let client = db::get(&self.base.pool, &self.base.target).await?;
            claim::release_claims(&client, &tokens).await
        };
        if let Err(e) = released.await {
            db::retire_sessions_after(&e);
            tracing::debug!(error = %e, claims = tokens.len(), "releasing finished claims failed; the rescuer will");
        }
    }

    /// Logs and announces an outcome (the version is already out of the registry).
    fn report(&self, d: &Done, f: Finished) {
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
                let _ = self.base.events.send(Event::Finished {
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
                let _ = self.base.events.send(Event::LeaseLost {
                    version_id: id,
                    document: d.document.clone(),
                });
            }
        }
    }
}
