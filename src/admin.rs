//! What operators and scripts do from the command line: `status`, `requeue` (versions and
//! parked outbox events), `publish`.
//! Each is one call of the SQL API (`sql/queries/`), so the CLI can do nothing an
//! application with the same role could not do in SQL.

use std::fmt::Write as _;

use serde::Serialize;
use tokio_postgres::{GenericClient, Row};

use crate::db::row::{self, FromRow};
use crate::db::{sql, Error, State};

/// Versions per state and the oldest pending age.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Status {
    /// (state, count) for every state, zeros included.
    pub versions: Vec<(String, i64)>,
    /// Seconds since the oldest pending version was published.
    pub oldest_pending_s: Option<f64>,
    /// Outbox events not yet delivered (and not parked).
    pub outbox_undelivered: i64,
    /// Outbox events a sink refused; they wait for an operator.
    pub outbox_parked: i64,
    /// Seconds since the oldest undelivered event was written.
    pub outbox_oldest_s: f64,
    /// Undelivered events that failed at least once and wait for a retry.
    pub outbox_retrying: i64,
    /// Delivered events kept until `outbox.retention`.
    pub outbox_delivered: i64,
    /// The latest parked events with their reasons.
    pub parked: Vec<ParkedEvent>,
    /// The latest errored versions.
    pub errors: Vec<ErroredVersion>,
}

/// An errored version with its reason.
#[derive(Debug, Clone, Serialize)]
pub struct ErroredVersion {
    /// Version id (for `postpub requeue --id`).
    pub id: i64,
    /// Document name.
    pub document: String,
    /// Version number.
    pub version: i32,
    /// Claims used.
    pub attempts: i32,
    /// Why it failed.
    pub last_error: String,
    /// When it failed.
    pub at: String,
}

/// An outbox event a sink refused; `postpub requeue --event` sends it again.
#[derive(Debug, Clone, Serialize)]
pub struct ParkedEvent {
    /// `postpub.outbox.event_id`.
    pub event_id: uuid::Uuid,
    /// Document name.
    pub document: String,
    /// `published` or `deleted`.
    pub kind: String,
    /// Delivery rounds so far.
    pub attempts: i32,
    /// The sink's refusal (`sink NAME: …`).
    pub last_error: String,
    /// When it was parked.
    pub at: String,
}

/// A row of `status_counts.sql`.
struct StateCount {
    state: String,
    versions: i64,
    oldest_pending_s: Option<f64>,
}

impl FromRow for StateCount {
    fn from_row(r: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(StateCount {
            state: r.try_get("state")?,
            versions: r.try_get("versions")?,
            oldest_pending_s: r.try_get("oldest_pending_s")?,
        })
    }
}

/// The row of `status_outbox.sql`.
struct OutboxCounts {
    undelivered: i64,
    parked: i64,
    oldest_s: f64,
    retrying: i64,
    delivered: i64,
}

impl FromRow for OutboxCounts {
    fn from_row(r: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(OutboxCounts {
            undelivered: r.try_get("undelivered")?,
            parked: r.try_get("parked")?,
            oldest_s: r.try_get("oldest_s")?,
            retrying: r.try_get("retrying")?,
            delivered: r.try_get("delivered")?,
        })
    }
}

impl FromRow for ParkedEvent {
    fn from_row(r: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(ParkedEvent {
            event_id: r.try_get("event_id")?,
            document: r.try_get("document")?,
            kind: r.try_get("kind")?,
            attempts: r.try_get("attempts")?,
            last_error: r.try_get("last_error")?,
            at: r.try_get("at")?,
        })
    }
}

impl FromRow for ErroredVersion {
    fn from_row(r: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(ErroredVersion {
            id: r.try_get("id")?,
            document: r.try_get("document")?,
            version: r.try_get("version")?,
            attempts: r.try_get("attempts")?,
            last_error: r.try_get("last_error")?,
            at: r.try_get("at")?,
        })
    }
}

/// Reads the status.
pub async fn status(client: &impl GenericClient, error_limit: i64) -> Result<Status, Error> {
    let mut st = Status::default();
    let rows = client
        .query(sql::STATUS_COUNTS, &[])
        .await
        .map_err(Error::query("counting versions"))?;
    let counts: Vec<StateCount> = row::all(&rows, "reading version counts")?;
    for state in State::ALL {
        let count = counts.iter().find(|c| c.state == state.as_str());
        st.versions
            .push((state.as_str().to_owned(), count.map_or(0, |c| c.versions)));
        if let (State::PostPublication, Some(c)) = (state, count) {
            st.oldest_pending_s = c.oldest_pending_s;
        }
    }
    let o = client
        .query_one(sql::STATUS_OUTBOX, &[])
        .await
        .map_err(Error::query("counting outbox events"))?;
    let o: OutboxCounts = row::one(&o, "reading outbox counts")?;
    st.outbox_undelivered = o.undelivered;
    st.outbox_parked = o.parked;
    st.outbox_oldest_s = o.oldest_s;
    st.outbox_retrying = o.retrying;
    st.outbox_delivered = o.delivered;
    let rows = client
        .query(sql::STATUS_PARKED, &[&error_limit])
        .await
        .map_err(Error::query("reading parked outbox events"))?;
    st.parked = row::all(&rows, "reading parked outbox events")?;
    let rows = client
        .query(sql::STATUS_ERRORS, &[&error_limit])
        .await
        .map_err(Error::query("reading errored versions"))?;
    st.errors = row::all(&rows, "reading errored versions")?;
    Ok(st)
}

impl Status {
    /// The table `postpub status` prints.
    pub fn render(&self) -> String {
        let mut out = String::from("versions\n");
        for (state, n) in &self.versions {
            let _ = write!(out, "  {state:<18}{n:>10}");
            if state == "post-publication" {
                if let Some(age) = self.oldest_pending_s {
                    let _ = write!(out, "   oldest pending {}", human_age(age));
                }
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "outbox\n  {:<18}{:>10}{}\n  {:<18}{:>10}\n  {:<18}{:>10}\n  {:<18}{:>10}",
            "undelivered",
            self.outbox_undelivered,
            if self.outbox_undelivered > 0 {
                format!("   oldest {}", human_age(self.outbox_oldest_s))
            } else {
                String::new()
            },
            "  retrying",
            self.outbox_retrying,
            "parked",
            self.outbox_parked,
            "delivered",
            self.outbox_delivered
        );
        if !self.parked.is_empty() {
            out.push_str("parked events (postpub requeue --event ID)\n");
            for p in &self.parked {
                let _ = writeln!(
                    out,
                    "  {} {} {} (rounds {}, {}): {}",
                    p.event_id, p.document, p.kind, p.attempts, p.at, p.last_error
                );
            }
        }
        if self.errors.is_empty() {
            out.push_str("no errored versions\n");
        } else {
            out.push_str("latest errors (postpub requeue --id N)\n");
            for e in &self.errors {
                let _ = writeln!(
                    out,
                    "  #{} {} v{} (attempts {}, {}): {}",
                    e.id, e.document, e.version, e.attempts, e.at, e.last_error
                );
            }
        }
        out
    }
}

fn human_age(seconds: f64) -> String {
    let d = std::time::Duration::from_secs(seconds.max(0.0).round() as u64);
    humantime::format_duration(d).to_string()
}

/// `postpub.publish(document, body, recipe)`; returns the new version id.
pub async fn publish(
    client: &impl GenericClient,
    document: &str,
    body: &str,
    recipe: Option<&str>,
) -> Result<i64, Error> {
    client
        .query_one(sql::PUBLISH_VERSION, &[&document, &body, &recipe])
        .await
        .map_err(Error::query("publishing"))?
        .try_get("id")
        .map_err(Error::query("publishing"))
}

/// `postpub.delete(document)`; returns the tombstone's version id.
pub async fn delete(client: &impl GenericClient, document: &str) -> Result<i64, Error> {
    client
        .query_one(sql::DELETE_DOCUMENT, &[&document])
        .await
        .map_err(Error::query("deleting"))?
        .try_get("id")
        .map_err(Error::query("deleting"))
}

/// `postpub.requeue(id)`.
pub async fn requeue(client: &impl GenericClient, id: i64) -> Result<(), Error> {
    client
        .query_one(sql::REQUEUE_VERSION, &[&id])
        .await
        .map_err(Error::query("requeueing"))?;
    Ok(())
}

/// `postpub.requeue_event(event_id)`: a parked outbox event back to the relay.
pub async fn requeue_event(client: &impl GenericClient, event_id: uuid::Uuid) -> Result<(), Error> {
    client
        .query_one(sql::REQUEUE_EVENT, &[&event_id])
        .await
        .map_err(Error::query("requeueing the outbox event"))?;
    Ok(())
}

/// `postpub.requeue_errored(document)`; returns how many were requeued.
pub async fn requeue_errored(
    client: &impl GenericClient,
    document: Option<&str>,
) -> Result<i32, Error> {
    client
        .query_one(sql::REQUEUE_ERRORED, &[&document])
        .await
        .map_err(Error::query("requeueing errored versions"))?
        .try_get("requeued")
        .map_err(Error::query("requeueing errored versions"))
}
