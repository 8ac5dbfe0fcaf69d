//! `/metrics` in the Prometheus (OpenMetrics text) format. Two sources:
//! * what the services do, counted from the daemon's [`Event`] stream by [`Recorder`]
//!   (outcomes, step durations, claim latency, listener reconnects, lease rescues);
//! * what is in the database, read at scrape time with one cheap query
//!   (`sql/queries/metrics_backlog.sql`: backlog per state, oldest pending age, outbox
//!   pending/parked), so several daemons on one database all report the same backlog.
//!   One reading serves every scrape for `BACKLOG_TTL` (1 s), and only one scrape at a time
//!   reads: hundreds of scrapers at once cost one query, not hundreds of waits for the
//!   pool. A reading that cannot get a connection because the pool is busy says nothing
//!   about the database: the previous figures (and `postpub_database_up`) stay.
//!
//! Every name starts with `postpub_`. The registry belongs to one daemon (not a process
//! global), so several daemons in one test process do not mix their counts.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::db::{self, sql, State as VersionState};
use crate::event::Event;

/// How long a scrape waits for the database before reporting `postpub_database_up 0`.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one backlog reading serves scrapes.
pub(crate) const BACKLOG_TTL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// One daemon's metrics.
pub struct Metrics {
    registry: Registry,
    /// Finished versions by outcome: `current`, `errored`, `superseded`, `retried`
    /// (back to post-publication: a transient failure or a release at shutdown), `lost`
    /// (the lease was no longer ours; nothing written).
    processed: Family<OutcomeLabels, Counter>,
    /// Duration of each pipeline step (`pipeline` is the whole pipeline of one version).
    step_seconds: HistogramFamily<StepLabels>,
    /// From a version's commit to its claim.
    claim_latency: Histogram,
    listener_reconnects: Counter,
    listener_connected: Gauge,
    rescues: Counter,
    /// Events the recorder missed because it fell behind (counts are then low).
    events_dropped: Counter,
    backlog: Family<StateLabels, Gauge>,
    oldest_pending: Gauge<f64, AtomicU64>,
    outbox: Family<StateLabels, Gauge>,
    outbox_oldest: Gauge<f64, AtomicU64>,
    database_up: Gauge,
    ready: Gauge,
    /// The last backlog reading; its lock makes scrapes read one at a time.
    reading: tokio::sync::Mutex<Reading>,
}

/// What the last backlog reading found.
#[derive(Default)]
struct Reading {
    /// When it was taken (`None`: never).
    at: Option<Instant>,
    /// The figures, while the database answers.
    backlog: Option<Backlog>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family (so each shows up from the first scrape).
    ///
    /// Over 80 lines on purpose: it is the catalogue of every metric, name and help text
    /// side by side in registration order; split up, the list a reader checks against
    /// `/metrics` would be scattered over several functions.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("postpub");
        let processed = Family::<OutcomeLabels, Counter>::default();
        r.register(
            "versions_processed",
            "Versions whose outcome was recorded, by outcome (current, errored, superseded, retried, lost)",
            processed.clone(),
        );
        let step_seconds: HistogramFamily<StepLabels> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.5, 16)));
        r.register(
            "step_duration_seconds",
            "Duration of each pipeline step; step=\"pipeline\" is a version's whole pipeline",
            step_seconds.clone(),
        );
        let claim_latency = Histogram::new(exponential_buckets(0.001, 3.0, 14));
        r.register(
            "claim_latency_seconds",
            "Time from a version's commit to its claim by a daemon",
            claim_latency.clone(),
        );
        let listener_reconnects = Counter::default();
        r.register(
            "listener_reconnects",
            "Times the LISTEN connection was re-established after a loss",
            listener_reconnects.clone(),
        );
        let listener_connected = Gauge::default();
        r.register(
            "listener_connected",
            "1 while the LISTEN connection is up",
            listener_connected.clone(),
        );
        let rescues = Counter::default();
        r.register(
            "lease_rescues",
            "Versions this daemon took back after their lease expired",
            rescues.clone(),
        );
        let events_dropped = Counter::default();
        r.register(
            "metrics_events_dropped",
            "Service events the metrics recorder missed because it fell behind",
            events_dropped.clone(),
        );
        let backlog = Family::<StateLabels, Gauge>::default();
        r.register(
            "backlog_versions",
            "Versions waiting (post-publication), in progress (processing) or failed (errored), read from the database at scrape time",
            backlog.clone(),
        );
        let oldest_pending = Gauge::<f64, AtomicU64>::default();
        r.register(
            "oldest_pending_age_seconds",
            "Age of the oldest post-publication version (0 when none)",
            oldest_pending.clone(),
        );
        let outbox = Family::<StateLabels, Gauge>::default();
        r.register(
            "outbox_events",
            "Undelivered outbox events: pending (being retried) or parked (waiting for an operator)",
            outbox.clone(),
        );
        let outbox_oldest = Gauge::<f64, AtomicU64>::default();
        r.register(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest pending outbox event (0 when none)",
            outbox_oldest.clone(),
        );
        let database_up = Gauge::default();
        r.register(
            "database_up",
            "1 when the scrape-time database query succeeded",
            database_up.clone(),
        );
        let ready = Gauge::default();
        r.register(
            "ready",
            "1 while the daemon is ready (database checked, LISTEN active, not stopping)",
            ready.clone(),
        );
        r.register(
            "build",
            "The running postpub",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Self {
            registry: r,
            processed,
            step_seconds,
            claim_latency,
            listener_reconnects,
            listener_connected,
            rescues,
            events_dropped,
            backlog,
            oldest_pending,
            outbox,
            outbox_oldest,
            database_up,
            ready,
            reading: tokio::sync::Mutex::new(Reading::default()),
        }
    }

    /// Counts one event.
    pub fn observe(&self, event: &Event) {
        match event {
            Event::ListenerConnected { reconnects } => {
                if *reconnects > 0 {
                    self.listener_reconnects.inc();
                }
                self.listener_connected.set(1);
            }
            Event::ListenerLost { .. } => {
                self.listener_connected.set(0);
            }
            Event::Claimed { wait_s, .. } => self.claim_latency.observe(wait_s.max(0.0)),
            Event::StepRan { step, seconds } => self
                .step_seconds
                .get_or_create(&StepLabels { step })
                .observe(*seconds),
            Event::Finished { state, .. } => {
                let outcome = match state {
                    VersionState::Current => "current",
                    VersionState::Errored => "errored",
                    VersionState::Superseded => "superseded",
                    VersionState::PostPublication => "retried",
                    // Not outcomes _finish produces; counted under their own name.
                    other => other.as_str(),
                };
                self.processed
                    .get_or_create(&OutcomeLabels { outcome })
                    .inc();
            }
            Event::LeaseLost { .. } => {
                self.processed
                    .get_or_create(&OutcomeLabels { outcome: "lost" })
                    .inc();
            }
            Event::Rescued { .. } => {
                self.rescues.inc();
            }
            // Events added by other services are not metrics (yet).
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    /// Reads the database gauges (at most every [`BACKLOG_TTL`]), then renders everything.
    pub(crate) async fn render(&self, state: &AppState) -> String {
        self.ready.set(i64::from(*state.ready.borrow()));
        {
            let mut reading = self.reading.lock().await;
            let fresh = reading.at.is_some_and(|at| at.elapsed() < BACKLOG_TTL);
            if !fresh {
                match read_backlog(state).await {
                    Read::Ok(b) => reading.backlog = Some(b),
                    Read::Down(reason) => {
                        tracing::warn!(error = %reason, "metrics: cannot read the backlog");
                        reading.backlog = None;
                    }
                    Read::Busy => {
                        tracing::debug!(
                            "metrics: every connection busy; keeping the last backlog reading"
                        );
                    }
                }
                reading.at = Some(Instant::now());
            }
            self.show(reading.backlog.as_ref());
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Sets the database gauges from a reading; stale numbers would look current, so
    /// none are shown while the database is down.
    fn show(&self, backlog: Option<&Backlog>) {
        let Some(b) = backlog else {
            self.database_up.set(0);
            self.backlog.clear();
            self.outbox.clear();
            return;
        };
        self.database_up.set(1);
        for (name, n) in [
            (VersionState::PostPublication, b.pending),
            (VersionState::Processing, b.processing),
            (VersionState::Errored, b.errored),
        ] {
            self.backlog
                .get_or_create(&StateLabels {
                    state: name.as_str(),
                })
                .set(n);
        }
        self.oldest_pending.set(b.oldest_pending_s);
        self.outbox
            .get_or_create(&StateLabels { state: "pending" })
            .set(b.outbox_pending);
        self.outbox
            .get_or_create(&StateLabels { state: "parked" })
            .set(b.outbox_parked);
        self.outbox_oldest.set(b.outbox_oldest_s);
    }
}

/// One attempt at reading the backlog.
enum Read {
    Ok(Backlog),
    /// The database failed or did not answer.
    Down(String),
    /// No connection was free in time: the pool is busy with requests, which says
    /// nothing about the database.
    Busy,
}

async fn read_backlog(state: &AppState) -> Read {
    let client =
        match tokio::time::timeout(SCRAPE_TIMEOUT, db::get(&state.pool, &state.target)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Read::Down(e.to_string()),
            Err(_) => {
                let st = state.pool.status();
                return if st.available == 0 && st.size >= st.max_size {
                    Read::Busy
                } else {
                    Read::Down("no connection within the scrape timeout".to_owned())
                };
            }
        };
    match tokio::time::timeout(SCRAPE_TIMEOUT, backlog(&client)).await {
        Ok(Ok(b)) => Read::Ok(b),
        Ok(Err(e)) => Read::Down(e.to_string()),
        Err(_) => Read::Down("no answer within the scrape timeout".to_owned()),
    }
}

#[derive(Clone)]
struct Backlog {
    pending: i64,
    processing: i64,
    errored: i64,
    oldest_pending_s: f64,
    outbox_pending: i64,
    outbox_parked: i64,
    outbox_oldest_s: f64,
}

async fn backlog(client: &deadpool_postgres::Object) -> Result<Backlog, db::Error> {
    let stmt = client
        .prepare_cached(sql::METRICS_BACKLOG)
        .await
        .map_err(db::Error::query("preparing the backlog query"))?;
    let r = client
        .query_one(&stmt, &[])
        .await
        .map_err(db::Error::query("reading the backlog"))?;
    Ok(Backlog {
        pending: r.get(0),
        processing: r.get(1),
        errored: r.get(2),
        oldest_pending_s: r.get(3),
        outbox_pending: r.get(4),
        outbox_parked: r.get(5),
        outbox_oldest_s: r.get(6),
    })
}

/// `GET /metrics`.
pub(crate) async fn handler(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(&state).await;
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Feeds the daemon's events into its [`Metrics`].
pub struct Recorder {
    /// Where the counts go.
    pub metrics: std::sync::Arc<Metrics>,
    /// Subscribed before the services start, so nothing is missed.
    pub events: broadcast::Receiver<Event>,
}

impl Recorder {
    /// Counts events until cancelled.
    pub async fn run(mut self, cancel: CancellationToken) {
        tracing::debug!("metrics recorder started");
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                e = self.events.recv() => match e {
                    Ok(e) => self.metrics.observe(&e),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.metrics.events_dropped.inc_by(n);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        tracing::debug!("metrics recorder stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).expect("encodes");
        out
    }

    #[test]
    fn events_become_prefixed_metrics() {
        let m = Metrics::new();
        m.observe(&Event::Finished {
            version_id: 1,
            document: "d".into(),
            state: VersionState::Current,
        });
        m.observe(&Event::LeaseLost {
            version_id: 2,
            document: "d".into(),
        });
        m.observe(&Event::StepRan {
            step: "validate",
            seconds: 0.01,
        });
        m.observe(&Event::ListenerConnected { reconnects: 2 });
        m.observe(&Event::Rescued {
            version_id: 3,
            document: "d".into(),
        });
        let out = text(&m);
        for line in [
            "postpub_versions_processed_total{outcome=\"current\"} 1",
            "postpub_versions_processed_total{outcome=\"lost\"} 1",
            "postpub_step_duration_seconds_count{step=\"validate\"} 1",
            "postpub_listener_reconnects_total 1",
            "postpub_lease_rescues_total 1",
            "postpub_listener_connected 1",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
        for l in out.lines().filter(|l| !l.starts_with('#')) {
            assert!(l.starts_with("postpub_"), "unprefixed: {l}");
        }
    }
}
