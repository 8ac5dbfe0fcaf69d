//! The outbox relay: delivers the events that `postpub.publish` and `postpub._finish` write
//! to `postpub.outbox` (in the transaction that makes a version current) to the configured
//! sinks, one file per sink ([`nats`], [`webhook`], [`kafka`], [`amqp`]).
//!
//! Guarantees, and who keeps them:
//! * never lost: an event leaves the table only through retention, once every sink has
//!   acknowledged it; a relay that dies before recording an acknowledgement sends the event
//!   again (same event id: JetStream drops the duplicate, webhooks see the same
//!   `Idempotency-Key`). At least once, deduplicable.
//! * per-document order: the claim (`postpub._relay_claim`, `sql/0005_outbox.sql`) hands
//!   out an event only while every earlier event of its document is delivered, and this
//!   module sends one document's events strictly one after the other, stopping at the first
//!   that is not acknowledged by every sink.
//! * several relays at once: rows are locked `FOR UPDATE SKIP LOCKED` in the transaction
//!   that records the outcomes; locks die with the connection.
//!
//! Each round is one transaction: claim, send (documents in parallel), record, commit.
//! Failures are tracked per (event, sink): a sink that acknowledged is not sent the event
//! again when another sink fails. Transient failures retry with exponential backoff and
//! jitter (`outbox.backoff`); permanent ones park the event until an operator requeues it
//! (`postpub requeue --event`). This module leaves the SQL rules to SQL and the wire
//! protocols to the sinks.

pub mod amqp;
pub mod kafka;
pub mod nats;
pub mod webhook;

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_postgres::Transaction;
use futures_util::future::{join_all, BoxFuture};
use tokio::sync::{watch, Notify};
use tokio_postgres::Row;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::backoff::{BackoffConfig, DbRetry};
use crate::config::{Config, ConfigError, OutboxConfig, SinkConfig};
use crate::db::row::FromRow;
use crate::db::{self, sql};
use crate::event::Event;
use crate::service::Base;
use crate::shutdown::Shutdown;

/// Delivered events deleted per purge statement (small batches keep locks and WAL short).
const PURGE_BATCH: i32 = 1000;

/// How often delivered events past `outbox.retention` are looked for.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Why a sink did not take an event, and so what happens next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// May succeed later (connection refused, timeout, 5xx): retried with backoff.
    #[error("{0}")]
    Transient(String),
    /// Transient, and the sink said when to come back (HTTP `Retry-After`): the next
    /// attempt waits at least `after`.
    #[error("{reason}")]
    RetryAfter { reason: String, after: Duration },
    /// Will fail the same way every time (4xx, too large): the event is parked until an
    /// operator requeues it.
    #[error("{0}")]
    Permanent(String),
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A sink's configuration cannot work (see [`validate`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A sink could not be set up from its configuration.
    #[error("outbox sink {sink}: {reason}")]
    Setup {
        /// The sink's name.
        sink: String,
        /// What went wrong.
        reason: String,
    },
}

/// A key of one sink's table that cannot be used; each sink's file checks its own
/// (`nats::validate`, `webhook::validate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The key within the sink's table (`url`).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl Invalid {
    fn new(field: &'static str, problem: impl Into<String>) -> Invalid {
        Invalid {
            field,
            problem: problem.into(),
        }
    }
}

/// Checks every `[[outbox.sinks]]` table with its sink's rules; the error names the sink
/// by index (`outbox.sinks[1].url`). [`Config::load`] checks what all sinks share (names,
/// batch size, backoff); the CLI calls both, and building the sinks checks again.
pub fn validate(cfg: &OutboxConfig) -> Result<(), ConfigError> {
    for (i, sink) in cfg.sinks.iter().enumerate() {
        let checked = match sink {
            SinkConfig::Nats(n) => nats::validate(n),
            SinkConfig::Webhook(w) => webhook::validate(w),
            SinkConfig::Kafka(k) => kafka::validate(k),
            SinkConfig::Amqp(a) => amqp::validate(a),
        };
        checked.map_err(|e| ConfigError::Sink {
            key: format!("outbox.sinks[{i}].{}", e.field),
            problem: e.problem,
        })?;
    }
    Ok(())
}

/// A sink's acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The sink already had this event id (JetStream's duplicate detection).
    pub duplicate: bool,
}

/// An event on its way to the sinks, serialised once.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// `postpub.outbox.event_id`: the id consumers deduplicate on.
    pub event_id: Uuid,
    /// Document name.
    pub document: String,
    /// `published` or `deleted`.
    pub kind: String,
    /// Version number within the document (from the payload).
    pub version: Option<i64>,
    /// The event JSON.
    pub json: Bytes,
    /// The event JSON with `body`, when some sink sets `include_body`.
    pub json_with_body: Option<Bytes>,
}

impl Outgoing {
    /// The JSON a sink sends: with the body when it asks for it (and there is one).
    pub fn json_for(&self, include_body: bool) -> &Bytes {
        match (&self.json_with_body, include_body) {
            (Some(with), true) => with,
            _ => &self.json,
        }
    }
}

/// A destination for events. Its name and whether it wants bodies are configuration
/// (`[[outbox.sinks]]`), which the relay reads itself; a sink only delivers.
pub trait Sink: Send + Sync {
    /// Sends one event and waits for the acknowledgement.
    fn deliver<'a>(&'a self, event: &'a Outgoing) -> BoxFuture<'a, Result<Ack, SinkError>>;
}

/// Builds the sinks of `[[outbox.sinks]]`, in order, under their resolved names.
pub fn sinks_from_config(cfg: &Config) -> Result<Vec<Arc<dyn Sink>>, Error> {
    validate(&cfg.outbox)?;
    let names = cfg.outbox.sink_names();
    cfg.outbox
        .sinks
        .iter()
        .zip(names)
        .map(|(s, name)| -> Result<Arc<dyn Sink>, Error> {
            Ok(match s {
                SinkConfig::Nats(n) => Arc::new(nats::NatsSink::new(name, n.clone())),
                SinkConfig::Webhook(w) => Arc::new(webhook::WebhookSink::new(name, w)?),
                SinkConfig::Kafka(k) => Arc::new(kafka::KafkaSink::new(name, k.clone())?),
                SinkConfig::Amqp(a) => Arc::new(amqp::AmqpSink::new(name, a.clone())?),
            })
        })
        .collect()
}

/// The relay service.
pub struct Relay {
    base: Base,
    /// Where events go, in configuration order.
    sinks: Vec<Arc<dyn Sink>>,
    /// Their names, as passed to SQL (an event is delivered once all of them acknowledged).
    names: Vec<String>,
    /// Whether any of them wants the version's content (the claim reads it only then).
    with_body: bool,
    /// Events claimed per round.
    batch_size: usize,
    /// Retry delays after failures.
    backoff: BackoffConfig,
    /// Delivered events older than this are deleted.
    retention: Duration,
    /// Fallback poll when no notification arrives.
    poll_interval: Duration,
    /// Woken by the listener on `outbox` notifications.
    wake: Arc<Notify>,
    /// The configuration in force: a reload (SIGHUP) that changes `[outbox]` rebuilds the
    /// sinks between rounds; a round in progress finishes with the sinks it started with.
    config: watch::Receiver<Arc<Config>>,
    /// False once the configuration's sender is gone (no reload can come any more).
    reloads_open: bool,
}

impl Relay {
    /// A relay for the sinks of `config`'s `[outbox]` (none: it waits for a reload that
    /// adds some), polling every `worker.poll_interval`. A caller without reloads passes
    /// a receiver whose sender is gone.
    pub fn new(
        config: watch::Receiver<Arc<Config>>,
        base: &Base,
        wake: Arc<Notify>,
    ) -> Result<Relay, Error> {
        let cfg = config.borrow().clone();
        Ok(Relay {
            base: base.clone(),
            sinks: sinks_from_config(&cfg)?,
            names: cfg.outbox.sink_names(),
            with_body: cfg.outbox.sinks.iter().any(SinkConfig::include_body),
            batch_size: cfg.outbox.batch_size,
            backoff: cfg.outbox.backoff.clone(),
            retention: cfg.outbox.retention,
            poll_interval: cfg.worker.poll_interval,
            wake,
            config,
            reloads_open: true,
        })
    }

    /// Applies a reloaded configuration; on error the running sinks stay.
    fn reload(&mut self) {
        let cfg = self.config.borrow_and_update().clone();
        match sinks_from_config(&cfg) {
            Ok(sinks) => {
                self.sinks = sinks;
                self.names = cfg.outbox.sink_names();
                self.with_body = cfg.outbox.sinks.iter().any(SinkConfig::include_body);
                self.batch_size = cfg.outbox.batch_size;
                self.backoff = cfg.outbox.backoff.clone();
                self.retention = cfg.outbox.retention;
                tracing::info!(sinks = ?self.names, "outbox settings reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "reloaded outbox sinks cannot be built; keeping the running ones")
            }
        }
    }

    /// Resolves when a new configuration arrives; never, once reloads cannot come.
    async fn reloaded(config: &mut watch::Receiver<Arc<Config>>, open: &mut bool) {
        if *open && config.changed().await.is_ok() {
            return;
        }
        *open = false;
        std::future::pending::<()>().await
    }

    /// Delivers until `shutdown.soft` is cancelled (the round in progress is finished and
    /// recorded) or `shutdown.hard` is (the round is dropped, its transaction rolled back:
    /// its events are sent again later, with the same ids). Never fails: a failed round is
    /// tried again.
    pub async fn run(mut self, shutdown: Shutdown) -> Result<(), Infallible> {
        let Shutdown { soft, hard } = shutdown;
        tracing::debug!("relay started");
        let mut poll = tokio::time::interval(self.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        let mut next_purge = Instant::now();
        let mut retry = DbRetry::default();
        // When failed deliveries this relay scheduled become due (others' are found by the
        // poll).
        let mut retries: BTreeSet<Instant> = BTreeSet::new();
        let mut announced = false;
        while !soft.is_cancelled() {
            if self.sinks.is_empty() {
                // Nothing to deliver to; only a reload can change that.
                tracing::info!("no outbox sinks configured; events stay in postpub.outbox");
                tokio::select! {
                    biased;
                    _ = soft.cancelled() => break,
                    _ = Self::reloaded(&mut self.config, &mut self.reloads_open) => {
                        self.reload();
                        announced = false;
                    }
                }
                continue;
            }
            if !announced {
                tracing::info!(sinks = ?self.names, "outbox relay delivering");
                announced = true;
            }
            if Instant::now() >= next_purge {
                self.purge(&soft).await;
                next_purge = Instant::now() + PURGE_INTERVAL.min(self.poll_interval * 12);
            }
            let round = tokio::select! {
                biased;
                _ = hard.cancelled() => break,
                r = self.round() => r,
            };
            let now = Instant::now();
            retries = retries.split_off(&now);
            match round {
                Ok(r) => {
                    retry.reset();
                    retries.extend(r.retries.iter().map(|d| now + *d));
                    if r.delivered > 0 {
                        // Progress: the next events of those documents may be deliverable.
                        if self.config.has_changed().unwrap_or(false) {
                            self.reload();
                            announced = false;
                        }
                        continue;
                    }
                }
                Err(e) => {
                    db::retire_sessions_after(&e);
                    tracing::warn!(error = %e, retry_in_ms = retry.pause().as_millis() as u64, "outbox round failed");
                    if !retry.wait(&soft).await {
                        break;
                    }
                    continue;
                }
            }
            let next_retry = retries.first().copied();
            let reload = tokio::select! {
                biased;
                _ = soft.cancelled() => break,
                _ = Self::reloaded(&mut self.config, &mut self.reloads_open) => true,
                _ = self.wake.notified() => false,
                _ = poll.tick() => false,
                _ = sleep_until(next_retry) => false,
            };
            if reload {
                self.reload();
                announced = false;
            }
        }
        tracing::debug!("relay stopped");
        Ok(())
    }

    /// One transaction: claim, send, record, commit; then report.
    async fn round(&self) -> Result<Round, db::Error> {
        let mut client = db::get(&self.base.pool, &self.base.target).await?;
        let tx = client
            .transaction()
            .await
            .map_err(db::Error::query("starting an outbox transaction"))?;
        let t0 = Instant::now();
        let claimed = self.claim(&tx).await?;
        if claimed.is_empty() {
            tx.commit()
                .await
                .map_err(db::Error::query("ending an empty outbox round"))?;
            return Ok(Round::default());
        }
        let (n_claimed, t_claim) = (claimed.len(), t0.elapsed());
        let chains = by_document(claimed);
        let attempts: Vec<Attempt> = join_all(chains.iter().map(|c| self.deliver_chain(c)))
            .await
            .into_iter()
            .flatten()
            .collect();
        let t_send = t0.elapsed();
        let recorded = self.record(&tx, &attempts).await?;
        tx.commit()
            .await
            .map_err(db::Error::query("committing outbox deliveries"))?;
        tracing::debug!(
            claimed = n_claimed,
            documents = chains.len(),
            attempts = attempts.len(),
            delivered = recorded,
            claim_ms = t_claim.as_millis() as u64,
            send_ms = (t_send - t_claim).as_millis() as u64,
            record_ms = (t0.elapsed() - t_send).as_millis() as u64,
            "outbox round"
        );

        let mut round = Round::default();
        for a in &attempts {
            match &a.outcome {
                Verdict::Delivered { duplicate } => {
                    tracing::debug!(event_id = %a.event_id, document = %a.document, sink = %self.names[a.sink], duplicate, "event delivered");
                    let _ = self.base.events.send(Event::Delivered {
                        event_id: a.event_id,
                        document: a.document.clone(),
                        sink: self.names[a.sink].clone(),
                        duplicate: *duplicate,
                    });
                }
                Verdict::Retry { error, after } => {
                    round.retries.push(*after);
                    tracing::warn!(event_id = %a.event_id, document = %a.document, sink = %self.names[a.sink], attempt = a.attempt, retry_in_ms = after.as_millis() as u64, error = %error, "delivery failed; will retry");
                    let _ = self.base.events.send(Event::DeliveryFailed {
                        event_id: a.event_id,
                        document: a.document.clone(),
                        sink: self.names[a.sink].clone(),
                        attempt: a.attempt,
                        error: error.clone(),
                        retry_in_s: after.as_secs_f64(),
                    });
                }
                Verdict::Settled => {}
                Verdict::Park { reason } => {
                    tracing::error!(event_id = %a.event_id, document = %a.document, sink = %self.names[a.sink], reason = %reason, "event parked: the sink refused it; fix the cause, then `postpub requeue --event {}`", a.event_id);
                    let _ = self.base.events.send(Event::Parked {
                        event_id: a.event_id,
                        document: a.document.clone(),
                        sink: self.names[a.sink].clone(),
                        reason: reason.clone(),
                    });
                }
            }
        }
        round.delivered = recorded;
        Ok(round)
    }

    /// Locks the next deliverable events and turns them into [`Pending`] items.
    async fn claim(&self, tx: &Transaction<'_>) -> Result<Vec<Pending>, db::Error> {
        let stmt = tx
            .prepare_cached(sql::CLAIM_EVENTS)
            .await
            .map_err(db::Error::query("preparing the outbox claim"))?;
        let limit = i32::try_from(self.batch_size).unwrap_or(i32::MAX);
        let rows = tx
            .query(&stmt, &[&self.names, &limit, &self.with_body])
            .await
            .map_err(db::Error::query("claiming outbox events"))?;
        let claimed: Vec<ClaimRow> = db::row::all(&rows, "reading claimed outbox events")?;
        Ok(claimed.into_iter().map(ClaimRow::into_pending).collect())
    }

    /// Sends one document's claimed events in order, each to every sink still owed it,
    /// stopping at the first event not acknowledged by all of them.
    async fn deliver_chain(&self, chain: &[Pending]) -> Vec<Attempt> {
        let mut out = Vec::new();
        for c in chain {
            let mut waiting = false;
            let mut tries = Vec::new();
            for (i, sink) in self.sinks.iter().enumerate() {
                match c.state.get(&self.names[i]) {
                    Some(s) if s.delivered => {}
                    Some(s) if !s.due => waiting = true,
                    s => {
                        let attempt = s.map_or(0, |s| s.attempts).saturating_add(1);
                        tries.push(async move { (i, attempt, sink.deliver(&c.event).await) });
                    }
                }
            }
            if tries.is_empty() && !waiting {
                // Every configured sink has it (a sink that still owed it was removed from
                // the configuration): record that, or it would stay undelivered forever.
                out.push(Attempt {
                    id: c.id,
                    event_id: c.event.event_id,
                    document: c.event.document.clone(),
                    sink: 0,
                    attempt: 0,
                    outcome: Verdict::Settled,
                });
                continue;
            }
            let mut complete = !waiting;
            for (sink, attempt, result) in join_all(tries).await {
                let outcome = match result {
                    Ok(ack) => Verdict::Delivered {
                        duplicate: ack.duplicate,
                    },
                    Err(e) => {
                        complete = false;
                        // The backoff's delay, or longer when the sink asked for it.
                        let retry = |error: String, at_least: Duration| {
                            let n = u32::try_from(attempt).unwrap_or(1);
                            Verdict::Retry {
                                error,
                                after: self.backoff.delay(n).max(at_least),
                            }
                        };
                        match e {
                            SinkError::Transient(error) => retry(error, Duration::ZERO),
                            SinkError::RetryAfter { reason, after } => retry(reason, after),
                            SinkError::Permanent(reason) => Verdict::Park { reason },
                        }
                    }
                };
                out.push(Attempt {
                    id: c.id,
                    event_id: c.event.event_id,
                    document: c.event.document.clone(),
                    sink,
                    attempt,
                    outcome,
                });
            }
            if !complete {
                // A later event of this document must not overtake this one.
                break;
            }
        }
        out
    }

    /// Records every attempt in the round's transaction; returns how many events are now
    /// delivered to every sink.
    async fn record(&self, tx: &Transaction<'_>, attempts: &[Attempt]) -> Result<usize, db::Error> {
        if attempts.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(attempts.len());
        let mut sinks = Vec::with_capacity(attempts.len());
        let mut outcomes = Vec::with_capacity(attempts.len());
        let mut errors: Vec<Option<String>> = Vec::with_capacity(attempts.len());
        let mut retry_s: Vec<Option<f64>> = Vec::with_capacity(attempts.len());
        for a in attempts {
            ids.push(a.id);
            sinks.push(self.names[a.sink].as_str());
            match &a.outcome {
                Verdict::Delivered { .. } => {
                    outcomes.push("delivered");
                    errors.push(None);
                    retry_s.push(None);
                }
                Verdict::Retry { error, after } => {
                    outcomes.push("retry");
                    errors.push(Some(error.clone()));
                    retry_s.push(Some(after.as_secs_f64()));
                }
                Verdict::Park { reason } => {
                    outcomes.push("park");
                    errors.push(Some(reason.clone()));
                    retry_s.push(None);
                }
                Verdict::Settled => {
                    outcomes.push("settled");
                    errors.push(None);
                    retry_s.push(None);
                }
            }
        }
        let stmt = tx
            .prepare_cached(sql::RECORD_DELIVERIES)
            .await
            .map_err(db::Error::query("preparing the delivery record"))?;
        let rows = tx
            .query(
                &stmt,
                &[&self.names, &ids, &sinks, &outcomes, &errors, &retry_s],
            )
            .await
            .map_err(db::Error::query("recording deliveries"))?;
        let recorded: Vec<Recorded> = db::row::all(&rows, "reading recorded deliveries")?;
        Ok(recorded.iter().filter(|r| r.delivered).count())
    }

    /// Deletes delivered events past retention, in small batches.
    async fn purge(&self, cancel: &CancellationToken) {
        let retention = self.retention.as_secs_f64();
        let mut total = 0i64;
        while !cancel.is_cancelled() {
            match self.purge_batch(retention).await {
                Ok(n) => {
                    total += i64::from(n);
                    if n < PURGE_BATCH {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "deleting delivered outbox events failed");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(
                deleted = total,
                retention = %humantime::format_duration(self.retention),
                "delivered outbox events past retention deleted"
            );
        }
    }

    async fn purge_batch(&self, retention_s: f64) -> Result<i32, db::Error> {
        let client = db::get(&self.base.pool, &self.base.target).await?;
        let stmt = client
            .prepare_cached(sql::PURGE_DELIVERED)
            .await
            .map_err(db::Error::query("preparing the outbox purge"))?;
        let row = client
            .query_one(&stmt, &[&retention_s, &PURGE_BATCH])
            .await
            .map_err(db::Error::query("deleting delivered outbox events"))?;
        row.try_get("deleted")
            .map_err(db::Error::query("reading the purge count"))
    }
}

/// What a round did.
#[derive(Debug, Default)]
struct Round {
    /// Events now delivered to every sink.
    delivered: usize,
    /// Delays of the retries scheduled.
    retries: Vec<Duration>,
}

/// A claimed event with what each sink already did with it.
struct Pending {
    id: i64,
    event: Outgoing,
    /// By sink name; a sink without an entry was never tried.
    state: HashMap<String, SinkState>,
}

#[derive(Debug, Clone, Copy)]
struct SinkState {
    delivered: bool,
    due: bool,
    attempts: i32,
}

/// A row of `claim_events.sql`: an event and, in parallel arrays, what each sink already
/// did with it.
struct ClaimRow {
    id: i64,
    event_id: Uuid,
    document: String,
    kind: String,
    payload: serde_json::Value,
    body: Option<String>,
    d_sinks: Vec<String>,
    d_delivered: Vec<bool>,
    d_due: Vec<bool>,
    d_attempts: Vec<i32>,
}

impl FromRow for ClaimRow {
    fn from_row(r: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(ClaimRow {
            id: r.try_get("id")?,
            event_id: r.try_get("event_id")?,
            document: r.try_get("document")?,
            kind: r.try_get("kind")?,
            payload: r.try_get("payload")?,
            body: r.try_get("body")?,
            d_sinks: r.try_get("d_sinks")?,
            d_delivered: r.try_get("d_delivered")?,
            d_due: r.try_get("d_due")?,
            d_attempts: r.try_get("d_attempts")?,
        })
    }
}

impl ClaimRow {
    fn into_pending(self) -> Pending {
        let mut state = HashMap::new();
        for (i, sink) in self.d_sinks.into_iter().enumerate() {
            state.insert(
                sink,
                SinkState {
                    delivered: self.d_delivered.get(i).copied().unwrap_or(false),
                    due: self.d_due.get(i).copied().unwrap_or(true),
                    attempts: self.d_attempts.get(i).copied().unwrap_or(0),
                },
            );
        }
        let event = outgoing(
            self.event_id,
            self.document,
            self.kind,
            self.payload,
            self.body,
        );
        Pending {
            id: self.id,
            event,
            state,
        }
    }
}

/// A row of `record_deliveries.sql`.
struct Recorded {
    /// The event is now delivered to every sink.
    delivered: bool,
}

impl FromRow for Recorded {
    fn from_row(r: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Recorded {
            delivered: r.try_get("delivered")?,
        })
    }
}

/// One (event, sink) try and how it went.
struct Attempt {
    id: i64,
    event_id: Uuid,
    document: String,
    /// Index into the relay's sinks.
    sink: usize,
    /// Tries of this event at this sink, this one included.
    attempt: i32,
    outcome: Verdict,
}

enum Verdict {
    Delivered {
        duplicate: bool,
    },
    Retry {
        error: String,
        after: Duration,
    },
    Park {
        reason: String,
    },
    /// Nothing to send: every configured sink already acknowledged the event.
    Settled,
}

/// Splits the claim (ordered by document, then id) into one chain per document.
fn by_document(claimed: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut chains: Vec<Vec<Pending>> = Vec::new();
    for c in claimed {
        match chains.last_mut() {
            Some(chain) if chain[0].event.document == c.event.document => chain.push(c),
            _ => chains.push(vec![c]),
        }
    }
    chains
}

/// The event JSON (SPEC: `event_id`, `kind`, `document`, `version`, `version_id`,
/// `published_at`, and `body` for sinks with `include_body`), from the stored payload.
fn outgoing(
    event_id: Uuid,
    document: String,
    kind: String,
    payload: serde_json::Value,
    body: Option<String>,
) -> Outgoing {
    let mut map = match payload {
        serde_json::Value::Object(m) => m,
        // Written by postpub's own SQL, so always an object; rebuild the keys we know
        // rather than send something else.
        _ => serde_json::Map::new(),
    };
    map.insert("event_id".into(), event_id.to_string().into());
    map.insert("kind".into(), kind.clone().into());
    map.insert("document".into(), document.clone().into());
    let version = map.get("version").and_then(serde_json::Value::as_i64);
    let json = Bytes::from(serde_json::Value::Object(map.clone()).to_string());
    let json_with_body = body.map(|b| {
        map.insert("body".into(), b.into());
        Bytes::from(serde_json::Value::Object(map).to_string())
    });
    Outgoing {
        event_id,
        document,
        kind,
        version,
        json,
        json_with_body,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// One line for an error and its causes (library errors often keep the reason in a source).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{env, write};

    fn claimed(id: i64, document: &str) -> Pending {
        Pending {
            id,
            event: outgoing(
                Uuid::new_v4(),
                document.to_owned(),
                "published".to_owned(),
                serde_json::json!({"version": id}),
                None,
            ),
            state: HashMap::new(),
        }
    }

    #[test]
    fn the_claim_is_split_into_one_chain_per_document_in_order() {
        let chains = by_document(vec![
            claimed(1, "a"),
            claimed(4, "a"),
            claimed(2, "b"),
            claimed(3, "c"),
            claimed(5, "c"),
        ]);
        let ids: Vec<Vec<i64>> = chains
            .iter()
            .map(|c| c.iter().map(|x| x.id).collect())
            .collect();
        assert_eq!(ids, vec![vec![1, 4], vec![2], vec![3, 5]]);
    }

    #[test]
    fn the_event_json_has_the_spec_keys_and_the_body_only_on_request() {
        let id = Uuid::new_v4();
        let o = outgoing(
            id,
            "book".into(),
            "published".into(),
            serde_json::json!({"event_id": id, "kind": "published", "document": "book",
                               "version": 3, "version_id": 42,
                               "published_at": "2024-01-01T00:00:00+00:00"}),
            Some("<p>x</p>".into()),
        );
        let plain: serde_json::Value = serde_json::from_slice(o.json_for(false)).expect("json");
        let with: serde_json::Value = serde_json::from_slice(o.json_for(true)).expect("json");
        for key in [
            "event_id",
            "kind",
            "document",
            "version",
            "version_id",
            "published_at",
        ] {
            assert!(plain.get(key).is_some(), "{key} missing");
        }
        assert_eq!(plain["event_id"], id.to_string());
        assert!(plain.get("body").is_none());
        assert_eq!(with["body"], "<p>x</p>");
        assert_eq!(o.version, Some(3));
    }

    #[test]
    fn sink_problems_name_the_sink_and_key() {
        for (text, key) in [
            ("[[outbox.sinks]]\nkind = \"nats\"\n", "outbox.sinks[0].url"),
            (
                "[[outbox.sinks]]\nkind = \"nats\"\nurl = \"nats://h:4222\"\n[[outbox.sinks]]\nkind = \"webhook\"\nurl = \"ftp://h/x\"\n",
                "outbox.sinks[1].url",
            ),
            (
                "[[outbox.sinks]]\nkind = \"webhook\"\nurl = \"http://h/x\"\nsecret = \"\"\n",
                "outbox.sinks[0].secret",
            ),
            (
                "[[outbox.sinks]]\nkind = \"nats\"\nurl = \"nats://h:4222\"\nsubject = \"{document}.x\"\n",
                "outbox.sinks[0].subject",
            ),
            (
                "[[outbox.sinks]]\nkind = \"nats\"\nurl = \"nats://h:4222\"\nsubject = \"a.{title}\"\n",
                "outbox.sinks[0].subject",
            ),
            (
                "[[outbox.sinks]]\nkind = \"nats\"\nurl = \"nats://h:4222\"\nstream = \"a.b\"\n",
                "outbox.sinks[0].stream",
            ),
            (
                "[[outbox.sinks]]\nkind = \"nats\"\nname = \"x\"\nurl = \"nats://h:1\"\n[[outbox.sinks]]\nkind = \"webhook\"\nname = \"x\"\nurl = \"http://h/\"\n",
                "outbox.sinks[1].name",
            ),
            ("[outbox]\nbatch_size = 0\n", "outbox.batch_size"),
            (
                "[[outbox.sinks]]\nkind = \"kafka\"\n",
                "outbox.sinks[0].brokers",
            ),
            (
                "[[outbox.sinks]]\nkind = \"kafka\"\nbrokers = \"h:9092\"\nsasl_mechanism = \"PLAIN\"\n",
                "outbox.sinks[0].sasl_credentials_file",
            ),
            (
                "[[outbox.sinks]]\nkind = \"amqp\"\nurl = \"amqp://h\"\nrouting_key = \"{title}\"\n",
                "outbox.sinks[0].routing_key",
            ),
            (
                "[[outbox.sinks]]\nkind = \"nats\"\nurl = \"nats://h:4222\"\ncredentials_file = \"/nonexistent/x.creds\"\n",
                "outbox.sinks[0].credentials_file cannot read /nonexistent/x.creds",
            ),
            (
                "[[outbox.sinks]]\nkind = \"nats\"\nurl = \"nats://h:4222\"\nnkey_seed_file = \"Cargo.toml\"\n",
                "outbox.sinks[0].nkey_seed_file Cargo.toml does not hold an NKey seed",
            ),
            (
                "[[outbox.sinks]]\nkind = \"nats\"\nurl = \"nats://h:4222\"\ntls_cert_file = \"Cargo.toml\"\n",
                "outbox.sinks[0].tls_cert_file",
            ),
            (
                "[[outbox.sinks]]\nkind = \"nats\"\nurl = \"nats://h:4222\"\ncredentials_file = \"Cargo.toml\"\nnkey_seed_file = \"Cargo.toml\"\n",
                "outbox.sinks[0].nkey_seed_file",
            ),
        ] {
            let f = write(text);
            let err = Config::load(Some(&f.0), env(&[]), None)
                .and_then(|c| validate(&c.outbox))
                .expect_err(text);
            assert!(err.to_string().contains(key), "{text}: {err}");
            assert!(matches!(err, ConfigError::Sink { .. }), "{text}: {err:?}");
        }
        // Wrong kind and unknown keys are refused by the parser, naming what is wrong.
        for (text, word) in [
            ("[[outbox.sinks]]\nkind = \"mqtt\"\n", "mqtt"),
            (
                "[[outbox.sinks]]\nkind = \"webhook\"\nurl = \"http://h/\"\nstream = \"S\"\n",
                "stream",
            ),
        ] {
            let f = write(text);
            let err = Config::load(Some(&f.0), env(&[]), None).expect_err(text);
            assert!(err.to_string().contains(word), "{text}: {err}");
        }
    }
}
