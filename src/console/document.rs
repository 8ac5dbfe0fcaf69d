//! The document page (versions, attempts, errors, transitions, a diff between two
//! versions, the collated output previewed, the outbox events per sink) and the preview
//! route, the one place that serves published HTML as HTML, inside a sandbox.

use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup};

use super::access::Principal;
use super::diff::{self, Line};
use super::pages::requeue_event_button;
use super::store::{self, DocVersion, Document, VersionRow};
use super::view::{self, csrf, document_href, page};
use super::{first, Failure, PageRequest};

/// The versions table inside the requeue form: a checkbox and a button for each errored
/// version (operators only). `with_document` adds the document column.
pub(super) fn versions_form(
    rows: &[VersionRow],
    who: &Principal,
    token: &str,
    back: &str,
    with_document: bool,
) -> Markup {
    let can = who.is_operator();
    let any_errored = rows.iter().any(|r| r.state == "errored");
    let table = html! {
        table {
            thead { tr {
                @if can { th scope="col" { @if any_errored { input #select-all type="checkbox" aria-label="Select every errored version on this page"; } } }
                th.num scope="col" { "Id" }
                @if with_document { th scope="col" { "Document" } }
                th scope="col" { "Version" } th scope="col" { "State" } th.num scope="col" { "Attempts" }
                th scope="col" { "Error" } th scope="col" { "Created" } th scope="col" { "Changed" }
                @if can { th scope="col" { "Action" } }
            } }
            tbody { @for r in rows { (version_row(r, can, with_document)) } }
        }
    };
    html! {
        @if rows.is_empty() { p { "No versions match." } }
        @else if !can { (table) }
        @else {
            form method="post" action="/console/requeue" {
                (csrf(token))
                input type="hidden" name="back" value=(back);
                (table)
                @if any_errored {
                    button type="submit" { "Requeue selected" }
                }
            }
        }
    }
}

fn version_row(r: &VersionRow, can: bool, with_document: bool) -> Markup {
    let errored = r.state == "errored";
    html! {
        tr {
            @if can { td { @if errored {
                input type="checkbox" name="id" value=(r.id) aria-label=(format!("Select version {}", r.id));
            } } }
            td.num { (r.id) }
            @if with_document { td { a href=(document_href(&r.document)) { (r.document) } } }
            td { "v" (r.version) @if r.tombstone { " (deletion)" } }
            td { (view::state(r.id, &r.state)) }
            td.num { (r.attempts) }
            td { @if !r.last_error.is_empty() { (view::error(&r.last_error)) } }
            td { (r.created) } td { (r.changed) }
            @if can { td { @if errored {
                button.secondary type="submit" name="one" value=(r.id) aria-label=(format!("Requeue version {}", r.id)) { "Requeue" }
            } } }
        }
    }
}

/// `GET /console/document?name=D[&a=ID&b=ID]`.
pub(super) async fn handler(p: PageRequest) -> Result<Response, Failure> {
    let PageRequest { c, who, query: q } = p;
    let m = first(&q);
    let name = m
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Failure::BadRequest("which document? /console/document?name=…".to_owned()))?
        .to_string();
    let id = |k: &str| -> Result<Option<i64>, Failure> {
        m.get(k)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    Failure::BadRequest(format!("{k} must be a version id, not {v:?}"))
                })
            })
            .transpose()
    };
    let (a, b) = (id("a")?, id("b")?);
    let msg = m.get("msg").map(|s| s.to_string());
    let client = c.client().await?;
    let doc = store::document(&client, &name).await?.ok_or_else(|| {
        Failure::NotFound(format!(
            "no version of document {name:?} was ever published"
        ))
    })?;
    let diffed = match (a, b) {
        (Some(a), Some(b)) => Some(diff_of(&client, &name, a, b).await?),
        _ => None,
    };
    let token = c.inner.access.csrf_token(&who);
    let here = document_href(&name);
    let rows: Vec<VersionRow> = doc.versions.iter().map(|v| clone_row(&v.row)).collect();
    let body = html! {
        h2 { "Versions" }
        (versions_form(&rows, &who, &token, &here, false))
        (details(&doc.versions))
        (preview(&doc.versions))
        (diff_form(&name, &doc.versions, a, b))
        @if let Some(d) = diffed { (d) }
        (transitions(&doc))
        (events(&doc, &who, &token, &here))
    };
    let title = format!("Document {name}");
    Ok(Html(page(&title, &who, msg.as_deref(), body).into_string()).into_response())
}

fn clone_row(r: &VersionRow) -> VersionRow {
    VersionRow {
        id: r.id,
        document: r.document.clone(),
        version: r.version,
        state: r.state.clone(),
        attempts: r.attempts,
        last_error: r.last_error.clone(),
        tombstone: r.tombstone,
        created: r.created.clone(),
        changed: r.changed.clone(),
    }
}

fn details(vs: &[DocVersion]) -> Markup {
    html! {
        table {
            caption.note { "Storage and leases" }
            thead { tr { th scope="col" { "Version" } th.num scope="col" { "Body bytes" } th scope="col" { "Collated" } th scope="col" { "Lease held by" } th scope="col" { "Preview" } } }
            tbody { @for v in vs { tr {
                td { "v" (v.row.version) " (#" (v.row.id) ")" }
                td.num { (v.bytes) }
                td { @if v.collated { "yes" } @else { "no" } }
                td { (v.locked_by) }
                td { @if !v.row.tombstone { a href=(format!("/console/preview/{}", v.row.id)) { "open preview" } } }
            } } }
        }
    }
}

/// The current version (else the newest with a body) in a sandboxed frame.
fn preview(vs: &[DocVersion]) -> Markup {
    let shown = vs
        .iter()
        .find(|v| v.row.state == "current" && !v.row.tombstone)
        .or_else(|| vs.iter().find(|v| !v.row.tombstone));
    html! {
        h2 { "Preview" }
        @if let Some(v) = shown {
            p.note { "v" (v.row.version) " (" (v.row.state) "), "
                @if v.collated { "collated output" } @else { "body as published" }
                ", shown in a sandbox: its scripts do not run." }
            iframe.preview sandbox="" src=(format!("/console/preview/{}", v.row.id))
                title=(format!("Preview of version {}", v.row.id)) {}
        } @else { p { "Nothing to preview: the document is deleted." } }
    }
}

fn diff_form(name: &str, vs: &[DocVersion], a: Option<i64>, b: Option<i64>) -> Markup {
    let (da, db) = (
        a.or(vs.get(1).map(|v| v.row.id)),
        b.or(vs.first().map(|v| v.row.id)),
    );
    html! {
        h2 { "Compare two versions" }
        @if vs.len() < 2 { p { "Only one version so far." } } @else {
            form method="get" action="/console/document" {
                input type="hidden" name="name" value=(name);
                fieldset {
                    legend { "Diff of the bodies" }
                    label { "From" select name="a" { @for v in vs { option value=(v.row.id) selected[da == Some(v.row.id)] { "v" (v.row.version) } } } }
                    label { "To" select name="b" { @for v in vs { option value=(v.row.id) selected[db == Some(v.row.id)] { "v" (v.row.version) } } } }
                    button type="submit" { "Compare" }
                }
            }
        }
    }
}

async fn diff_of(
    client: &deadpool_postgres::Object,
    name: &str,
    a: i64,
    b: i64,
) -> Result<Markup, Failure> {
    let body = |v: Option<(String, String, Option<String>)>, id: i64| match v {
        Some((doc, body, _)) if doc == name => Ok(body),
        _ => Err(Failure::NotFound(format!(
            "document {name:?} has no version #{id}"
        ))),
    };
    let old = body(store::content(client, a).await?, a)?;
    let new = body(store::content(client, b).await?, b)?;
    let lines = diff::diff(&old, &new);
    let changed = lines.iter().filter(|l| !matches!(l, Line::Same(_))).count();
    Ok(html! {
        p { (changed) " lines differ between #" (a) " and #" (b) "." }
        div.diff role="region" aria-label="Diff" tabindex="0" {
            @for l in &lines { @match l {
                Line::Same(t) => div.same { (t) },
                Line::Removed(t) => div.del { (t) },
                Line::Added(t) => div.add { (t) },
            } }
        }
    })
}

fn transitions(doc: &Document) -> Markup {
    html! {
        h2 { "Transitions" }
        table {
            thead { tr { th scope="col" { "At" } th.num scope="col" { "Version" } th scope="col" { "From" } th scope="col" { "To" } th scope="col" { "By" } th scope="col" { "Why" } } }
            tbody { @for t in &doc.transitions { tr {
                td { (t.at) } td.num { "#" (t.version_id) }
                td { @if t.from.is_empty() { "(published)" } @else { (t.from) } }
                td { span class=(format!("state s-{}", t.to)) { (t.to) } }
                td { (t.by) } td { @if !t.why.is_empty() { (view::error(&t.why)) } }
            } } }
        }
    }
}

fn events(doc: &Document, who: &Principal, token: &str, back: &str) -> Markup {
    html! {
        h2 { "Outbox events" }
        @if doc.events.is_empty() { p { "No events (yet, or delivered and purged after outbox.retention)." } } @else {
            table {
                thead { tr { th scope="col" { "Event" } th scope="col" { "Kind" } th.num scope="col" { "Version" } th scope="col" { "Written" } th scope="col" { "State" } th scope="col" { "Per sink" } } }
                tbody { @for e in &doc.events { tr {
                    td { code { (e.event_id) } } td { (e.kind) } td.num { "#" (e.version_id) } td { (e.times.0) }
                    td {
                        @if !e.times.1.is_empty() { span.state.s-delivered { "delivered" } " " (e.times.1) }
                        @else if !e.times.2.is_empty() {
                            span.state.s-parked { "parked" } " " (e.times.2) " "
                            (requeue_event_button(e.event_id, who, token, back))
                        } @else { span.state { "pending" } " (" (e.attempts) " rounds)" }
                        @if !e.last_error.is_empty() { br; span.reason { (e.last_error) } }
                    }
                    td { ul { @for (sink, delivered, parked, attempts, err) in &e.sinks { li {
                        strong { (sink) } ": "
                        @if !delivered.is_empty() { "delivered " (delivered) }
                        @else if !parked.is_empty() { "parked " (parked) }
                        @else { "pending" }
                        " (" (attempts) " attempts)"
                        @if !err.is_empty() { " " span.reason { (err) } }
                    } } } }
                } } }
            }
        }
    }
}

/// `GET /console/preview/{id}`: a version's collated output (or body) as HTML, under
/// the sandbox policy the console's guard sets for this route.
pub(super) async fn preview_handler(
    p: PageRequest,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let c = p.c;
    let id: i64 = id
        .parse()
        .map_err(|_| Failure::NotFound(format!("no version {id:?}")))?;
    let client = c.client().await?;
    let (_, body, collated) = store::content(&client, id)
        .await?
        .ok_or_else(|| Failure::NotFound(format!("no version #{id}")))?;
    Ok((
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        collated.unwrap_or(body),
    )
        .into_response())
}
