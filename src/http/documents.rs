//! The read-only runtime API: only published content, straight from the database.
//!
//! * `GET /documents/{document}`: the current version's collated content (its body when
//!   it was not collated), `ETag: "<version id>"`, 304 on a matching `If-None-Match`;
//!   404 when the document has no current version (never published), 410 when the
//!   current version is a tombstone (the document was deleted).
//! * `GET /documents/{document}/versions/{n}`: the same, but 200 only while version `n`
//!   is the current one; 404 otherwise (410 when the document is deleted).
//!
//! Document names may contain `/` (`physics/chapter-1`), written as is or
//! percent-encoded. The path is split on the raw (still encoded) text: a trailing
//! `/versions/{digits}` selects a version, so a document whose own name ends like that
//! is reached by encoding its slashes (`a%2Fversions%2F3`). A name no document can have
//! (not UTF-8, a NUL, longer than `postpub.publish` accepts) is simply not found: 404,
//! without asking the database.
//!
//! Content up to `INLINE_BYTES` comes with the first query; larger content is streamed
//! from the database in chunks (`CHUNK_BYTES`, `sql/queries/document_chunks.sql`), so a
//! read holds a chunk in memory, not the document.

use std::pin::Pin;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use percent_encoding::percent_decode_str;
use tokio_postgres::types::ToSql;

use super::{error, AppState};
use crate::db::{self, sql};

/// How long a request waits for the database before answering 503 (and a stream for its
/// next chunk before it is cut off).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest content sent from the first query; larger content is streamed.
pub(crate) const INLINE_BYTES: i64 = 1 << 20;

/// Bytes per streamed chunk.
pub(crate) const CHUNK_BYTES: i32 = 256 << 10;

/// Longest document name `postpub.publish` accepts (`sql/0006_input_limits.sql`).
pub(crate) const MAX_DOCUMENT_BYTES: usize = 1024;

/// Where the API lives.
pub(crate) const PREFIX: &str = "/documents/";

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    document: String,
    version: Option<i64>,
}

/// Why a path names no document.
#[derive(Debug, PartialEq, Eq)]
enum BadPath {
    /// Nothing after the prefix (400).
    Empty,
    /// A name no document can have (404).
    NoSuchName(&'static str),
}

/// Splits a raw request path into the document and the optional version number.
fn parse(path: &str) -> Result<Target, BadPath> {
    let raw = path.strip_prefix(PREFIX).unwrap_or("");
    let (doc, version) = match raw.rsplit_once("/versions/") {
        Some((doc, n))
            if !doc.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            // Digits only, so a parse failure can only be an overflow: no such version.
            (doc, Some(n.parse::<i64>().unwrap_or(i64::MAX)))
        }
        _ => (raw, None),
    };
    let document = percent_decode_str(doc)
        .decode_utf8()
        .map_err(|_| BadPath::NoSuchName("is not UTF-8 once percent-decoded"))?
        .into_owned();
    if document.is_empty() {
        return Err(BadPath::Empty);
    }
    if document.contains('\0') {
        return Err(BadPath::NoSuchName("contains a NUL character"));
    }
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(BadPath::NoSuchName("is longer than 1024 bytes"));
    }
    Ok(Target { document, version })
}

/// Version ids in an `If-None-Match` header (`"12"`, `W/"12"`, lists), and whether it
/// was `*` (any current version matches).
fn if_none_match(headers: &HeaderMap) -> (Vec<i64>, bool) {
    let mut ids = Vec::new();
    let mut any = false;
    for value in headers.get_all(header::IF_NONE_MATCH) {
        let Ok(value) = value.to_str() else { continue };
        for tag in value.split(',').map(str::trim) {
            if tag == "*" {
                any = true;
            }
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            if let Some(id) = tag
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .and_then(|t| t.parse::<i64>().ok())
            {
                ids.push(id);
            }
        }
    }
    (ids, any)
}

/// The row `current_document.sql` returns.
struct Current {
    id: i64,
    version: i32,
    is_tombstone: bool,
    /// The content, when it is to be sent and small enough to come inline.
    content: Option<String>,
    /// Its size, when it is to be sent.
    bytes: Option<i64>,
    /// A tombstone that deleted a published document (410; else 404).
    was_live: bool,
}

async fn current(
    state: &AppState,
    document: &str,
    have: &[i64],
    version: Option<i64>,
) -> Result<Option<Current>, db::Error> {
    let client = db::get(&state.pool, &state.target).await?;
    let stmt = client
        .prepare_cached(sql::CURRENT_DOCUMENT)
        .await
        .map_err(db::Error::query("preparing the document query"))?;
    let row = client
        .query_opt(&stmt, &[&document, &have, &version, &INLINE_BYTES])
        .await
        .map_err(db::Error::query("reading the current version"))?;
    Ok(row.map(|r| Current {
        id: r.get(0),
        version: r.get(1),
        is_tombstone: r.get(2),
        content: r.get(3),
        bytes: r.get(4),
        was_live: r.get(5),
    }))
}

/// `GET /documents/{document}` and `GET /documents/{document}/versions/{n}`.
pub(crate) async fn handler(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let target = match parse(uri.path()) {
        Ok(t) => t,
        Err(BadPath::Empty) => {
            return error(
                StatusCode::BAD_REQUEST,
                "no document name after /documents/",
            )
        }
        Err(BadPath::NoSuchName(why)) => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("no document has such a name: it {why}"),
            )
        }
    };
    let (have, any) = if_none_match(&headers);
    let doc = &target.document;
    let found = match tokio::time::timeout(
        QUERY_TIMEOUT,
        current(&state, doc, &have, target.version),
    )
    .await
    {
        Ok(Ok(found)) => found,
        // A name the database cannot compare (an encoding it refuses): no such document.
        Ok(Err(e)) if e.sqlstate().is_some_and(|c| c.starts_with("22")) => None,
        Ok(Err(e)) => {
            tracing::warn!(document = %doc, error = %e, "runtime API: database error");
            return unavailable(&state);
        }
        Err(_) => return unavailable(&state),
    };
    let cur = match servable(doc, found, target.version) {
        Ok(cur) => cur,
        Err((status, why)) => return error(status, &why),
    };
    let etag = format!("\"{}\"", cur.id);
    let mut headers = HeaderMap::new();
    // Built from digits and quotes only.
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-postpub-version", HeaderValue::from(cur.version));
    if any || have.contains(&cur.id) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    let body = match (cur.content, cur.bytes) {
        (Some(content), _) => Body::from(content),
        (None, Some(bytes)) => {
            match tokio::time::timeout(QUERY_TIMEOUT, stream(&state, cur.id, bytes)).await {
                Ok(Ok(body)) => {
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes));
                    body
                }
                Ok(Err(e)) => {
                    tracing::warn!(document = %doc, error = %e, "runtime API: database error");
                    return unavailable(&state);
                }
                Err(_) => return unavailable(&state),
            }
        }
        (None, None) => Body::empty(),
    };
    (StatusCode::OK, headers, body).into_response()
}

/// The current version when it may be served (for `version`, when given), else the
/// answer: 404 never published (a deletion of a never-published document included) or
/// another version asked for, 410 deleted.
fn servable(
    doc: &str,
    found: Option<Current>,
    version: Option<i64>,
) -> Result<Current, (StatusCode, String)> {
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            format!("document {doc:?} has no published version"),
        )
    };
    let Some(cur) = found else {
        return Err(not_found());
    };
    if cur.is_tombstone {
        if !cur.was_live {
            return Err(not_found());
        }
        return Err((
            StatusCode::GONE,
            format!("document {doc:?} was deleted (version {})", cur.version),
        ));
    }
    match version {
        Some(n) if i64::from(cur.version) != n => Err((
            StatusCode::NOT_FOUND,
            format!(
                "version {n} of document {doc:?} is not current (version {} is)",
                cur.version
            ),
        )),
        _ => Ok(cur),
    }
}

/// 503 naming the database, never a statement's error text.
fn unavailable(state: &AppState) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!(
            "the database at {} did not answer in time or failed; try again",
            state.target
        ),
    )
}

/// Starts streaming the content of version `id` (`bytes` long) on a connection of the
/// stream pool, which the body holds until it is sent.
async fn stream(state: &AppState, id: i64, bytes: i64) -> Result<Body, db::Error> {
    let client = db::get(&state.streams, &state.target).await?;
    let stmt = client
        .prepare_cached(sql::DOCUMENT_CHUNKS)
        .await
        .map_err(db::Error::query("preparing the document stream"))?;
    let params: [&(dyn ToSql + Sync); 2] = [&id, &CHUNK_BYTES];
    let rows = client
        .query_raw(&stmt, params)
        .await
        .map_err(db::Error::query("streaming the document"))?;
    let chunks = Chunks {
        client: Some(client),
        rows: Box::pin(rows),
        next: 1,
        end: bytes,
    };
    Ok(Body::from_stream(futures_util::stream::unfold(
        chunks,
        |mut c| async move {
            let item = c.next().await?;
            Some((item, c))
        },
    )))
}

/// A document streaming out of the database, chunk by chunk.
struct Chunks {
    /// The connection the rows come over; `None` once the stream is done.
    client: Option<deadpool_postgres::Object>,
    rows: Pin<Box<tokio_postgres::RowStream>>,
    /// 1-based offset of the next chunk.
    next: i64,
    /// Size of the content.
    end: i64,
}

impl Chunks {
    /// The next chunk; `None` after the last one or after an error.
    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        self.client.as_ref()?;
        let row = match tokio::time::timeout(QUERY_TIMEOUT, self.rows.next()).await {
            Ok(Some(Ok(row))) => row,
            Ok(None) if self.next > self.end => {
                // Complete: the connection goes back to the pool.
                self.client = None;
                return None;
            }
            Ok(None) => return Some(Err(self.fail("the content ended early"))),
            Ok(Some(Err(e))) => return Some(Err(self.fail(&db::describe(&e)))),
            Err(_) => return Some(Err(self.fail("the database stopped sending it"))),
        };
        let offset: i64 = row.get(0);
        let chunk: &[u8] = row.get(1);
        if offset != self.next || chunk.is_empty() {
            return Some(Err(self.fail("its chunks came out of order")));
        }
        self.next += chunk.len() as i64;
        Some(Ok(Bytes::copy_from_slice(chunk)))
    }

    /// Ends the stream with an error (the client sees a cut-off body, never a wrong one).
    fn fail(&mut self, why: &str) -> std::io::Error {
        tracing::warn!(error = why, "runtime API: streaming a document failed");
        self.drop_connection();
        std::io::Error::other(format!("streaming the document failed: {why}"))
    }

    /// A connection in the middle of a result is not reusable: it leaves the pool.
    fn drop_connection(&mut self) {
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        // The client went away mid-stream.
        self.drop_connection();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(document: &str, version: Option<i64>) -> Target {
        Target {
            document: document.to_owned(),
            version,
        }
    }

    #[test]
    fn slashes_may_be_plain_or_encoded() {
        assert_eq!(
            parse("/documents/physics/chapter-1"),
            Ok(t("physics/chapter-1", None))
        );
        assert_eq!(
            parse("/documents/physics%2Fchapter-1"),
            Ok(t("physics/chapter-1", None))
        );
        assert_eq!(parse("/documents/caf%C3%A9"), Ok(t("café", None)));
    }

    #[test]
    fn a_trailing_versions_segment_selects_a_version() {
        assert_eq!(
            parse("/documents/physics/chapter-1/versions/3"),
            Ok(t("physics/chapter-1", Some(3)))
        );
        assert_eq!(
            parse("/documents/a/versions/x"),
            Ok(t("a/versions/x", None))
        );
        assert_eq!(
            parse("/documents/a%2Fversions%2F3"),
            Ok(t("a/versions/3", None))
        );
        assert_eq!(
            parse("/documents/a/versions/99999999999999999999"),
            Ok(t("a", Some(i64::MAX)))
        );
        assert_eq!(parse("/documents/"), Err(BadPath::Empty));
    }

    #[test]
    fn names_no_document_can_have_are_not_found() {
        for path in [
            "/documents/%FF",
            "/documents/a%00b",
            "/documents/a%00b/versions/1",
        ] {
            assert!(matches!(parse(path), Err(BadPath::NoSuchName(_))), "{path}");
        }
        let long = format!("/documents/{}", "a".repeat(MAX_DOCUMENT_BYTES + 1));
        assert!(matches!(parse(&long), Err(BadPath::NoSuchName(_))));
        let longest = format!("/documents/{}", "a".repeat(MAX_DOCUMENT_BYTES));
        assert!(parse(&longest).is_ok());
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"12\", W/\"13\", \"x\""),
        );
        assert_eq!(if_none_match(&h), (vec![12, 13], false));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert_eq!(if_none_match(&h), (vec![], true));
    }
}
