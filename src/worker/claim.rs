//! Claim, finish and lease renewal: thin typed wrappers around the SQL functions in
//! `sql/0003_worker.sql`, which hold the rules (one version per document, supersede,
//! fencing). Each call is one statement and one round trip for a whole batch.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use deadpool_postgres::Client;
use tokio_postgres::Row;

use crate::db::row::{self, FromRow};
use crate::db::{sql, Error, State};

/// A version this daemon now holds a lease on.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// `postpub.versions.id`.
    pub id: i64,
    /// Document name.
    pub document: String,
    /// Version number within the document.
    pub version: i32,
    /// A deletion: skips the steps, goes straight to the publish step.
    pub is_tombstone: bool,
    /// Recipe to collate with, if any.
    pub recipe_id: Option<i64>,
    /// Claims so far, this one included.
    pub attempts: i32,
    /// Fencing token: finishing succeeds only while the lease still carries it.
    pub token: i64,
    /// Body size, checked against `pipeline.max_body_bytes` before loading it.
    pub body_bytes: i32,
    /// When it was published (the publishing transaction's start).
    pub created_at: SystemTime,
}

/// Claims up to `limit` versions for `actor`.
pub async fn claim_batch(
    client: &Client,
    actor: &str,
    limit: usize,
    lease: Duration,
) -> Result<Vec<Claimed>, Error> {
    let stmt = client
        .prepare_cached(sql::CLAIM_BATCH)
        .await
        .map_err(Error::query("preparing the claim"))?;
    let limit = i32::try_from(limit).unwrap_or(i32::MAX);
    // A fresh random fencing token per claim: unique even across a database crash, which
    // could hand out the same transaction id twice.
    let token: i64 = rand::random();
    let row = client
        .query_one(&stmt, &[&actor, &limit, &lease.as_secs_f64(), &token])
        .await
        .map_err(Error::query("claiming versions"))?;
    let c: ClaimedArrays = row::one(&row, "reading claimed versions")?;
    let n = c.ids.len();
    let lengths = [
        c.documents.len(),
        c.versions.len(),
        c.tombstones.len(),
        c.recipe_ids.len(),
        c.attempts.len(),
        c.tokens.len(),
        c.body_bytes.len(),
        c.created_at.len(),
    ];
    if lengths.iter().any(|&l| l != n) {
        return Err(Error::Shape {
            what: "reading claimed versions",
            reason: format!("{n} ids but columns of {lengths:?} elements"),
        });
    }
    // Every column has n elements (checked above); the owned ones are moved out.
    let claimed = c.documents.into_iter().zip(c.created_at).enumerate();
    Ok(claimed
        .map(|(i, (document, created_at))| Claimed {
            id: c.ids[i],
            document,
            version: c.versions[i],
            is_tombstone: c.tombstones[i],
            recipe_id: c.recipe_ids[i],
            attempts: c.attempts[i],
            token: c.tokens[i],
            body_bytes: c.body_bytes[i],
            created_at,
        })
        .collect())
}

/// The row of `claim_batch.sql`: one array per column, one element per claimed version.
struct ClaimedArrays {
    ids: Vec<i64>,
    documents: Vec<String>,
    versions: Vec<i32>,
    tombstones: Vec<bool>,
    recipe_ids: Vec<Option<i64>>,
    attempts: Vec<i32>,
    tokens: Vec<i64>,
    body_bytes: Vec<i32>,
    created_at: Vec<SystemTime>,
}

impl FromRow for ClaimedArrays {
    fn from_row(r: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(ClaimedArrays {
            ids: r.try_get("version_ids")?,
            documents: r.try_get("documents")?,
            versions: r.try_get("versions")?,
            tombstones: r.try_get("tombstones")?,
            recipe_ids: r.try_get("recipe_ids")?,
            attempts: r.try_get("attempts")?,
            tokens: r.try_get("lease_tokens")?,
            body_bytes: r.try_get("body_bytes")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

/// What happens to a claimed version.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Make it current (or superseded, if a newer version already is).
    Publish {
        /// New content to store as the collated output, when a step produced some.
        collated: Option<String>,
        /// Warnings of the steps, stored with the collated output.
        warnings: Vec<String>,
    },
    /// Errored now, with this reason.
    Error(String),
    /// Back to post-publication, claimable again after `after`.
    Retry {
        /// The transient failure.
        error: String,
        /// Backoff delay.
        after: Duration,
    },
    /// Back to post-publication now, the attempt not counted (shutdown).
    Release,
}

impl Outcome {
    fn sql_name(&self) -> &'static str {
        match self {
            Outcome::Publish { .. } => "publish",
            Outcome::Error(_) => "error",
            Outcome::Retry { .. } => "retry",
            Outcome::Release => "release",
        }
    }
}

/// An outcome to record for one claimed version.
#[derive(Debug, Clone, Copy)]
pub struct Finish<'a> {
    /// Version id.
    pub id: i64,
    /// The token it was claimed with.
    pub token: i64,
    /// Its document and version number, as the claim returned them: the finish locks the
    /// document without reading the version row first (sql/0013_finish_by_document.sql).
    pub document: &'a str,
    /// See `document`.
    pub version: i32,
    /// What to record.
    pub outcome: &'a Outcome,
}

/// What recording an outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// The version is now in this state.
    State(State),
    /// The lease is no longer ours (expired and rescued, maybe re-claimed): nothing written.
    Lost,
}

/// Records outcomes in one transaction. Versions missing from the result could not be
/// finished yet (their document is locked by an application transaction): retry them.
pub async fn finish_batch(
    client: &Client,
    actor: &str,
    batch: &[Finish<'_>],
) -> Result<Vec<(i64, Finished)>, Error> {
    let n = batch.len();
    let mut ids = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut documents = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut outcomes = Vec::with_capacity(n);
    let mut errors: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut retry_s = Vec::with_capacity(n);
    let mut collated: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut warnings: Vec<Option<String>> = Vec::with_capacity(n);
    for f in batch {
        ids.push(f.id);
        tokens.push(f.token);
        documents.push(f.document);
        versions.push(f.version);
        outcomes.push(f.outcome.sql_name());
        let (err, after, coll, warn) = match f.outcome {
            Outcome::Publish { collated, warnings } => (
                None,
                0.0,
                collated.as_deref(),
                (!warnings.is_empty()).then(|| warnings.join("\n")),
            ),
            Outcome::Error(e) => (Some(e.as_str()), 0.0, None, None),
            Outcome::Retry { error, after } => {
                (Some(error.as_str()), after.as_secs_f64(), None, None)
            }
            Outcome::Release => (None, 0.0, None, None),
        };
        errors.push(err);
        retry_s.push(after);
        collated.push(coll);
        warnings.push(warn);
    }
    // A column no version of the batch uses goes as an empty array (the SQL pads it with
    // nulls): a batch of plain publishes sends ids, tokens and outcomes only.
    unused_as_empty(&mut errors, Option::is_none);
    unused_as_empty(&mut retry_s, |s| *s == 0.0);
    unused_as_empty(&mut collated, Option::is_none);
    unused_as_empty(&mut warnings, Option::is_none);
    let stmt = client
        .prepare_cached(sql::FINISH_BATCH)
        .await
        .map_err(Error::query("preparing the finish"))?;
    let row = client
        .query_one(
            &stmt,
            &[
                &actor, &ids, &tokens, &outcomes, &errors, &retry_s, &collated, &warnings,
                &documents, &versions,
            ],
        )
        .await
        .map_err(Error::query("finishing versions"))?;
    let FinishRow {
        version_ids,
        results,
    } = row::one(&row, "reading finished versions")?;
    if version_ids.len() != results.len() {
        return Err(Error::Shape {
            what: "reading finished versions",
            reason: format!("{} ids but {} results", version_ids.len(), results.len()),
        });
    }
    let mut out = Vec::with_capacity(version_ids.len());
    for (id, result) in version_ids.into_iter().zip(results) {
        let finished = if result == "lost" {
            Finished::Lost
        } else {
            match result.parse::<State>() {
                Ok(s) => Finished::State(s),
                // Only reachable if the SQL and this binary disagree; treat as not finished
                // so the version is retried rather than forgotten.
                Err(e) => {
                    tracing::error!(version_id = id, error = %e, "finish returned an unknown state");
                    continue;
                }
            }
        };
        out.push((id, finished));
    }
    Ok(out)
}

/// Empties `column` when `unused` holds for every element of it.
fn unused_as_empty<T>(column: &mut Vec<T>, unused: impl Fn(&T) -> bool) {
    if column.iter().all(unused) {
        column.clear();
    }
}

/// A row of `finish_batch.sql`.
struct FinishRow {
    version_ids: Vec<i64>,
    /// Per version: the new state, or `lost`.
    results: Vec<String>,
}

impl FromRow for FinishRow {
    fn from_row(r: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(FinishRow {
            version_ids: r.try_get("version_ids")?,
            results: r.try_get("results")?,
        })
    }
}

/// A row of `renew_leases.sql`: a lease still held.
struct Renewed {
    id: i64,
}

impl FromRow for Renewed {
    fn from_row(r: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Renewed {
            id: r.try_get("id")?,
        })
    }
}

/// Extends the leases this daemon holds; returns the ids still held.
pub async fn renew_leases(
    client: &Client,
    held: &[(i64, i64)],
    lease: Duration,
) -> Result<HashSet<i64>, Error> {
    let ids: Vec<i64> = held.iter().map(|h| h.0).collect();
    let tokens: Vec<i64> = held.iter().map(|h| h.1).collect();
    let stmt = client
        .prepare_cached(sql::RENEW_LEASES)
        .await
        .map_err(Error::query("preparing the lease renewal"))?;
    let rows = client
        .query(&stmt, &[&ids, &tokens, &lease.as_secs_f64()])
        .await
        .map_err(Error::query("renewing leases"))?;
    let renewed: Vec<Renewed> = row::all(&rows, "reading renewed leases")?;
    Ok(renewed.into_iter().map(|r| r.id).collect())
}

/// Releases the rows of claims whose versions are all finished (see
/// `postpub._release_claims`: a token some version still carries keeps its row).
pub async fn release_claims(client: &Client, tokens: &[i64]) -> Result<(), Error> {
    let stmt = client
        .prepare_cached(sql::RELEASE_CLAIMS)
        .await
        .map_err(Error::query("preparing the claim release"))?;
    client
        .execute(&stmt, &[&tokens])
        .await
        .map_err(Error::query("releasing finished claims"))?;
    Ok(())
}

/// A version whose expired lease was taken back.
#[derive(Debug, Clone)]
pub struct Rescued {
    /// Version id.
    pub id: i64,
    /// Document name.
    pub document: String,
    /// Its new state (post-publication, or errored when out of attempts).
    pub state: String,
    /// Who held the lease.
    pub held_by: Option<String>,
}

/// Takes back every expired lease.
pub async fn rescue_expired(
    client: &Client,
    actor: &str,
    max_attempts: u32,
) -> Result<Vec<Rescued>, Error> {
    let stmt = client
        .prepare_cached(sql::RESCUE_EXPIRED)
        .await
        .map_err(Error::query("preparing the lease rescue"))?;
    let max = i32::try_from(max_attempts).unwrap_or(i32::MAX);
    let rows = client
        .query(&stmt, &[&actor, &max])
        .await
        .map_err(Error::query("rescuing expired leases"))?;
    row::all(&rows, "reading rescued versions")
}

impl FromRow for Rescued {
    fn from_row(r: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Rescued {
            id: r.try_get("version_id")?,
            document: r.try_get("document")?,
            state: r.try_get("state")?,
            held_by: r.try_get("held_by")?,
        })
    }
}
