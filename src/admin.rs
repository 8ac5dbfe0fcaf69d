//! What operators and scripts do from the command line: `status`, `requeue` (versions and
//! parked outbox events), `publish`.
//! Each is one call of the SQL API (`sql/queries/`), so the CLI can do nothing an
//! application with the same role could not do in SQL.

use std::fmt::Write as _;

use serde::Serialize;
use tokio_postgres::GenericClient;

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

/// Reads the status.
pub async fn status(client: &impl GenericClient, error_limit: i64) -> Result<Status, Error> {
    let mut st = Status::default();
    let rows = client
        .query(sql::STATUS_COUNTS, &[])
        .await
        .map_err(Error::query("counting versions"))?;
    for state in State::ALL {
        let row = rows.iter().find(|r| r.get::<_, &str>(0) == state.as_str());
        st.versions
            .push((state.as_str().to_owned(), row.map_or(0, |r| r.get(1))));
        if let (State::PostPublication, Some(r)) = (state, row) {
            st.oldest_pending_s = r.get(2);
        }
    }
    let o = client
        .query_one(sql::STATUS_OUTBOX, &[])
        .await
        .map_err(Error::query("counting outbox events"))?;
    st.outbox_undelivered = o.get(0);
    st.outbox_parked = o.get(1);
    st.outbox_oldest_s = o.get(2);
    st.outbox_retrying = o.get(3);
    st.outbox_delivered = o.get(4);
    let rows = client
        .query(sql::STATUS_PARKED, &[&error_limit])
        .await
        .map_err(Error::query("reading parked outbox events"))?;
    st.parked = rows
        .iter()
        .map(|r| ParkedEvent {
            event_id: r.get(0),
            document: r.get(1),
            kind: r.get(2),
            attempts: r.get(3),
            last_error: r.get(4),
            at: r.get(5),
        })
        .collect();
    let rows = client
        .query(sql::STATUS_ERRORS, &[&error_limit])
        .await
        .map_err(Error::query("reading errored versions"))?;
    st.errors = rows
        .iter()
        .map(|r| ErroredVersion {
            id: r.get(0),
            document: r.get(1),
            version: r.get(2),
            attempts: r.get(3),
            last_error: r.get(4),
            at: r.get(5),
        })
        .collect();
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
    Ok(client
        .query_one(sql::PUBLISH_VERSION, &[&document, &body, &recipe])
        .await
        .map_err(Error::query("publishing"))?
        .get(0))
}

/// `postpub.delete(document)`; returns the tombstone's version id.
pub async fn delete(client: &impl GenericClient, document: &str) -> Result<i64, Error> {
    Ok(client
        .query_one(sql::DELETE_DOCUMENT, &[&document])
        .await
        .map_err(Error::query("deleting"))?
        .get(0))
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
    Ok(client
        .query_one(sql::REQUEUE_ERRORED, &[&document])
        .await
        .map_err(Error::query("requeueing errored versions"))?
        .get(0))
}
