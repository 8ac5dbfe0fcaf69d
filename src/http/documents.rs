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
//! is reached by encoding its slashes (`a%2Fversions%2F3`).

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;

use super::{error, AppState};
use crate::db::{self, sql};

/// How long a request waits for the database before answering 503.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the API lives.
pub(crate) const PREFIX: &str = "/documents/";

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    document: String,
    version: Option<i64>,
}

/// Splits a raw request path into the document and the optional version number.
fn parse(path: &str) -> Result<Target, String> {
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
        .map_err(|_| "the document name is not UTF-8 once percent-decoded".to_owned())?
        .into_owned();
    if document.is_empty() {
        return Err("no document name after /documents/".to_owned());
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
    content: Option<String>,
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
        .query_opt(&stmt, &[&document, &have, &version])
        .await
        .map_err(db::Error::query("reading the current version"))?;
    Ok(row.map(|r| Current {
        id: r.get(0),
        version: r.get(1),
        is_tombstone: r.get(2),
        content: r.get(3),
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
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
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
        Ok(Err(e)) => {
            tracing::warn!(document = %doc, error = %e, "runtime API: database error");
            return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
        }
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "the database at {} did not answer within {}",
                    state.target,
                    humantime::format_duration(QUERY_TIMEOUT)
                ),
            )
        }
    };
    let Some(cur) = found else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("document {doc:?} has no published version"),
        );
    };
    if cur.is_tombstone {
        return error(
            StatusCode::GONE,
            &format!("document {doc:?} was deleted (version {})", cur.version),
        );
    }
    if let Some(n) = target.version {
        if i64::from(cur.version) != n {
            return error(
                StatusCode::NOT_FOUND,
                &format!(
                    "version {n} of document {doc:?} is not current (version {} is)",
                    cur.version
                ),
            );
        }
    }
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
    (StatusCode::OK, headers, cur.content.unwrap_or_default()).into_response()
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
        assert!(parse("/documents/").is_err());
        assert!(parse("/documents/%FF").is_err());
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
