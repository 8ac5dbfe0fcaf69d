//! What the console reads and changes, one statement each under `sql/queries/console_*.sql`
//! (STYLE §5), returning plain rows for the pages. Changes go through the SQL API
//! (`postpub.requeue_versions`, `requeue_matching`, `requeue_event_by` of
//! `sql/0007_console.sql`), which records the console user in the audit.
//!
//! Lists run as fresh statements (`query` with the text, not `prepare_cached`): PostgreSQL
//! then plans each with its parameters as constants, drops the filters that were not given
//! and uses the partial index of the state asked for. A cached generic plan would have to
//! serve every combination and scan.

use deadpool_postgres::Object;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::db::{self, Error};

macro_rules! query_file {
    ($name:ident, $file:literal) => {
        #[doc = concat!("See `sql/queries/", $file, "`.")]
        const $name: &str = include_str!(concat!("../../sql/queries/", $file));
    };
}
query_file!(OVERVIEW, "console_overview.sql");
query_file!(STATE_ESTIMATES, "console_state_estimates.sql");
query_file!(OUTBOX, "console_outbox.sql");
query_file!(OUTBOX_TOTALS, "console_outbox_totals.sql");
query_file!(DAEMONS, "console_daemons.sql");
query_file!(AUDIT, "console_audit.sql");
query_file!(VERSIONS, "console_versions.sql");
query_file!(COUNT_ERRORED, "console_count_errored.sql");
query_file!(REQUEUE_MATCHING, "console_requeue_matching.sql");
query_file!(REQUEUE_VERSIONS, "console_requeue_versions.sql");
query_file!(REQUEUE_EVENT, "console_requeue_event.sql");
query_file!(DOCUMENT_VERSIONS, "console_document_versions.sql");
query_file!(DOCUMENT_TRANSITIONS, "console_document_transitions.sql");
query_file!(DOCUMENT_EVENTS, "console_document_events.sql");
query_file!(VERSION_CONTENT, "console_version_content.sql");
query_file!(TOTAL_ESTIMATE, "console_total_estimate.sql");
query_file!(NARROW, "console_narrow.sql");

/// Counted exactly up to this many (then the page says "more than").
pub const COUNT_CAP: i64 = 10_000;

async fn rows(
    c: &Object,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    what: &'static str,
) -> Result<Vec<Row>, Error> {
    c.query(sql, params).await.map_err(db::Error::query(what))
}

/// The overview's figures.
pub struct Overview {
    /// Pending versions (capped at `COUNT_CAP + 1`).
    pub pending: i64,
    /// Versions being processed.
    pub processing: i64,
    /// Errored versions (capped at `COUNT_CAP + 1`).
    pub errored: i64,
    /// Seconds the longest-waiting due version has waited.
    pub oldest_pending_s: f64,
    /// The planner's estimate of all versions.
    pub total_estimate: i64,
    /// (state, estimated count) from the planner's statistics.
    pub estimates: Vec<(String, i64)>,
    /// (sink, retrying, parked) deliveries.
    pub sinks: Vec<(String, i64, i64)>,
    /// Undelivered events not parked, parked, oldest pending age.
    pub outbox: (i64, i64, f64),
    /// ("lease" | "conn", who, count, seconds).
    pub daemons: Vec<(String, String, i64, f64)>,
    /// Parked events: id, document, kind, rounds, reason, when.
    pub parked: Vec<(uuid::Uuid, String, String, i32, String, String)>,
    /// Latest console actions: at, actor, action, target, affected.
    pub audit: Vec<(String, String, String, String, i32)>,
}

/// Reads the overview.
pub async fn overview(c: &Object) -> Result<Overview, Error> {
    let o = c
        .query_one(OVERVIEW, &[])
        .await
        .map_err(db::Error::query("reading the backlog"))?;
    let t = c
        .query_one(OUTBOX_TOTALS, &[])
        .await
        .map_err(db::Error::query("reading the outbox backlog"))?;
    let estimates = rows(c, STATE_ESTIMATES, &[], "reading the state estimates").await?;
    let sinks = rows(c, OUTBOX, &[], "reading the outbox per sink").await?;
    let daemons = rows(c, DAEMONS, &[], "reading the daemons").await?;
    let parked = rows(
        c,
        db::sql::STATUS_PARKED,
        &[&20i64],
        "reading parked events",
    )
    .await?;
    let audit = rows(c, AUDIT, &[&10i64], "reading the audit").await?;
    Ok(Overview {
        pending: o.get(0),
        processing: o.get(1),
        errored: o.get(2),
        oldest_pending_s: o.get(3),
        total_estimate: o.get(4),
        estimates: estimates.iter().map(|r| (r.get(0), r.get(1))).collect(),
        sinks: sinks
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect(),
        outbox: (t.get(0), t.get(1), t.get(2)),
        daemons: daemons
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect(),
        parked: parked
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
            .collect(),
        audit: audit
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect(),
    })
}

/// The versions list's filter (from the query string).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// A state's SQL name, or "" for any.
    pub state: String,
    /// Document prefix or substring, "" for none.
    pub doc: String,
    /// `doc` is a substring rather than a prefix.
    pub contains: bool,
    /// Created at or after (any PostgreSQL timestamp text), "" for any.
    pub since: String,
    /// Created before, "" for any.
    pub until: String,
}

/// One row of the versions list.
pub struct VersionRow {
    /// Version id.
    pub id: i64,
    /// Document.
    pub document: String,
    /// Version number.
    pub version: i32,
    /// State.
    pub state: String,
    /// Claims used.
    pub attempts: i32,
    /// Last error, "" for none.
    pub last_error: String,
    /// A deletion.
    pub tombstone: bool,
    /// Created (text).
    pub created: String,
    /// State last changed (text).
    pub changed: String,
}

/// One page of versions matching `f`, with ids below `before`.
pub async fn versions(
    c: &Object,
    f: &Filter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<VersionRow>, Error> {
    let prefix = !f.contains;
    let narrow = narrow(c, f).await?;
    let r = rows(
        c,
        VERSIONS,
        &[
            &f.state, &f.doc, &prefix, &f.since, &f.until, &before, &limit, &narrow,
        ],
        "listing versions",
    )
    .await?;
    Ok(r.iter()
        .map(|r| VersionRow {
            id: r.get(0),
            document: r.get(1),
            version: r.get(2),
            state: r.get(3),
            attempts: r.get(4),
            last_error: r.get(5),
            tombstone: r.get(6),
            created: r.get(7),
            changed: r.get(8),
        })
        .collect())
}

/// The planner's estimate of all versions.
pub async fn total_estimate(c: &Object) -> Result<i64, Error> {
    Ok(c.query_one(TOTAL_ESTIMATE, &[])
        .await
        .map_err(db::Error::query("reading the table estimate"))?
        .get(0))
}

/// Whether `f` selects few enough rows to find them first and sort them: a substring
/// (at most 1000 documents), a prefix of at most 1000 documents, or a state (pending,
/// errored, …) with at most 10,000 versions.
async fn narrow(c: &Object, f: &Filter) -> Result<bool, Error> {
    if f.contains && !f.doc.is_empty() {
        return Ok(true);
    }
    let prefix = if f.contains { "" } else { f.doc.as_str() };
    let r = c
        .query_one(NARROW, &[&prefix, &f.state])
        .await
        .map_err(db::Error::query("sizing the filter"))?;
    let (docs, in_state): (i64, i64) = (r.get(0), r.get(1));
    Ok((!prefix.is_empty() && docs <= 1000) || (!f.state.is_empty() && in_state <= COUNT_CAP))
}

/// Errored versions matching a prefix filter (what requeue-matching would requeue).
pub async fn count_errored(c: &Object, f: &Filter) -> Result<i64, Error> {
    Ok(c.query_one(COUNT_ERRORED, &[&f.doc, &f.since, &f.until])
        .await
        .map_err(db::Error::query("counting errored versions"))?
        .get(0))
}

/// Requeues every errored version matching a prefix filter as `actor`.
pub async fn requeue_matching(c: &Object, f: &Filter, actor: &str) -> Result<i32, Error> {
    Ok(
        c.query_one(REQUEUE_MATCHING, &[&f.doc, &f.since, &f.until, &actor])
            .await
            .map_err(db::Error::query("requeueing the matching versions"))?
            .get(0),
    )
}

/// Requeues the errored versions among `ids` as `actor`; returns those requeued.
pub async fn requeue_versions(c: &Object, ids: &[i64], actor: &str) -> Result<Vec<i64>, Error> {
    let r = rows(c, REQUEUE_VERSIONS, &[&ids, &actor], "requeueing versions").await?;
    Ok(r.iter().map(|r| r.get(0)).collect())
}

/// Requeues a parked outbox event as `actor`.
pub async fn requeue_event(c: &Object, id: uuid::Uuid, actor: &str) -> Result<(), Error> {
    c.query_one(REQUEUE_EVENT, &[&id, &actor])
        .await
        .map_err(db::Error::query("requeueing the outbox event"))?;
    Ok(())
}

/// A version on the document page.
pub struct DocVersion {
    /// The common columns.
    pub row: VersionRow,
    /// Lease holder, "" for none.
    pub locked_by: String,
    /// Body size.
    pub bytes: i64,
    /// Has collated output.
    pub collated: bool,
}

/// A state change.
pub struct Transition {
    /// Version id.
    pub version_id: i64,
    /// From ("" = created).
    pub from: String,
    /// To.
    pub to: String,
    /// When.
    pub at: String,
    /// Who.
    pub by: String,
    /// Why.
    pub why: String,
}

/// An outbox event with what each sink did with it.
pub struct OutboxEvent {
    /// Event id.
    pub event_id: uuid::Uuid,
    /// published | deleted.
    pub kind: String,
    /// The version announced.
    pub version_id: i64,
    /// Written, delivered ("" not yet), parked ("" no).
    pub times: (String, String, String),
    /// Delivery rounds.
    pub attempts: i32,
    /// Last error.
    pub last_error: String,
    /// (sink, delivered, parked, attempts, error) per sink tried.
    pub sinks: Vec<(String, String, String, i32, String)>,
}

/// Everything the document page shows, or `None` when the document has no version.
pub struct Document {
    /// Newest first.
    pub versions: Vec<DocVersion>,
    /// Newest first.
    pub transitions: Vec<Transition>,
    /// Newest first.
    pub events: Vec<OutboxEvent>,
}

/// Reads document `name`.
pub async fn document(c: &Object, name: &str) -> Result<Option<Document>, Error> {
    let vs = rows(c, DOCUMENT_VERSIONS, &[&name], "reading the versions").await?;
    if vs.is_empty() {
        return Ok(None);
    }
    let versions: Vec<DocVersion> = vs
        .iter()
        .map(|r| DocVersion {
            row: VersionRow {
                id: r.get(0),
                document: name.to_owned(),
                version: r.get(1),
                state: r.get(2),
                attempts: r.get(3),
                last_error: r.get(4),
                tombstone: r.get(5),
                created: r.get(6),
                changed: r.get(7),
            },
            locked_by: r.get(8),
            bytes: r.get(9),
            collated: r.get(10),
        })
        .collect();
    let ids: Vec<i64> = versions.iter().map(|v| v.row.id).collect();
    let ts = rows(c, DOCUMENT_TRANSITIONS, &[&ids], "reading the transitions").await?;
    let transitions = ts
        .iter()
        .map(|r| Transition {
            version_id: r.get(0),
            from: r.get(1),
            to: r.get(2),
            at: r.get(3),
            by: r.get(4),
            why: r.get(5),
        })
        .collect();
    let es = rows(c, DOCUMENT_EVENTS, &[&name], "reading the outbox events").await?;
    let mut events: Vec<OutboxEvent> = Vec::new();
    for r in &es {
        let id: uuid::Uuid = r.get(0);
        if events.last().is_none_or(|e| e.event_id != id) {
            events.push(OutboxEvent {
                event_id: id,
                kind: r.get(1),
                version_id: r.get(2),
                times: (r.get(3), r.get(4), r.get(5)),
                attempts: r.get(6),
                last_error: r.get(7),
                sinks: Vec::new(),
            });
        }
        let sink: String = r.get(8);
        if let (Some(e), false) = (events.last_mut(), sink.is_empty()) {
            e.sinks
                .push((sink, r.get(9), r.get(10), r.get(11), r.get(12)));
        }
    }
    Ok(Some(Document {
        versions,
        transitions,
        events,
    }))
}

/// A version's document, body and collated output.
pub async fn content(
    c: &Object,
    id: i64,
) -> Result<Option<(String, String, Option<String>)>, Error> {
    let r = rows(c, VERSION_CONTENT, &[&id], "reading the version's content").await?;
    Ok(r.first().map(|r| (r.get(0), r.get(1), r.get(2))))
}
