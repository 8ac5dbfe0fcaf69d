//! The console's POSTs: requeue one errored version or a selection, every errored version
//! matching a filter, a parked outbox event. Each needs an operator and the page's CSRF
//! token, goes through the SQL API that records the console user in the audit, and
//! answers with a redirect back to the page it came from, with what happened.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::access::Principal;
use super::pages::{filter_of, filter_query};
use super::store;
use super::view::enc;
use super::{first, Console, Failure, PostRequest};

/// The checks every POST passes (see [`super::PostRequest`]).
pub(super) fn allowed(
    c: &Console,
    who: &Principal,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<(), Failure> {
    let token = first(form).get("csrf").copied();
    if !c.inner.access.csrf_ok(who, headers, token) {
        return Err(Failure::Forbidden(
            "this form's CSRF token is missing or not valid (reload the page and try again)"
                .to_owned(),
        ));
    }
    if !who.is_operator() {
        return Err(Failure::Forbidden(format!(
            "{} has read-only access; requeueing needs an operator",
            who.name
        )));
    }
    Ok(())
}

/// A redirect to `back` (a console path, else the overview) with a message.
fn back_to(form: &[(String, String)], msg: &str) -> Response {
    let back = first(form)
        .get("back")
        .copied()
        .filter(|b| b.starts_with("/console") && !b.starts_with("//") && !b.contains(['\r', '\n']))
        .unwrap_or("/console");
    let sep = if back.contains('?') { '&' } else { '?' };
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, format!("{back}{sep}msg={}", enc(msg)))],
    )
        .into_response()
}

/// `POST /console/requeue`: `one=ID`, or every `id=ID` checked.
pub(super) async fn requeue(p: PostRequest) -> Result<Response, Failure> {
    let PostRequest { who, form, client } = p;
    let one = first(&form).get("one").map(|s| s.to_string());
    let raw: Vec<&str> = match &one {
        Some(id) => vec![id.as_str()],
        None => form
            .iter()
            .filter(|(k, _)| k == "id")
            .map(|(_, v)| v.as_str())
            .collect(),
    };
    let ids = raw
        .iter()
        .map(|v| v.parse::<i64>())
        .collect::<Result<Vec<i64>, _>>()
        .map_err(|_| Failure::BadRequest("version ids must be numbers".to_owned()))?;
    if ids.is_empty() {
        return Ok(back_to(
            &form,
            "Nothing selected: tick the versions to requeue.",
        ));
    }
    let done = store::requeue_versions(&client, &ids, &who.name).await?;
    tracing::info!(user = %who.name, asked = ids.len(), requeued = done.len(), "console: requeued versions");
    let skipped = ids.len() - done.len();
    let msg = match (done.len(), skipped) {
        (n, 0) => format!("Requeued {n} version(s)."),
        (n, s) => {
            format!("Requeued {n} version(s); {s} were no longer errored and were left alone.")
        }
    };
    Ok(back_to(&form, &msg))
}

/// `POST /console/requeue-matching`: every errored version matching the filter.
pub(super) async fn requeue_matching(p: PostRequest) -> Result<Response, Failure> {
    let PostRequest { who, form, client } = p;
    let mut f = filter_of(&form);
    f.contains = false;
    let n = store::requeue_matching(&client, &f, &who.name).await?;
    tracing::info!(user = %who.name, requeued = n, prefix = %f.doc, "console: requeued matching versions");
    f.state = "errored".to_owned();
    let expected = first(&form)
        .get("expected")
        .and_then(|e| e.parse::<i64>().ok());
    let msg = match expected {
        Some(e) if e != i64::from(n) => {
            format!("Requeued {n} version(s) ({e} were errored when you confirmed).")
        }
        _ => format!("Requeued {n} version(s)."),
    };
    let back = vec![(
        "back".to_owned(),
        format!("/console/versions?{}", filter_query(&f)),
    )];
    Ok(back_to(&back, &msg))
}

/// `POST /console/requeue-event`: `event=UUID`.
pub(super) async fn requeue_event(p: PostRequest) -> Result<Response, Failure> {
    let PostRequest { who, form, client } = p;
    let id = first(&form)
        .get("event")
        .and_then(|e| uuid::Uuid::parse_str(e).ok())
        .ok_or_else(|| Failure::BadRequest("event must be an outbox event id".to_owned()))?;
    store::requeue_event(&client, id, &who.name).await?;
    tracing::info!(user = %who.name, event_id = %id, "console: requeued a parked event");
    Ok(back_to(&form, &format!("Requeued event {id}.")))
}
