//! The overview, the versions list and the requeue-matching confirmation.

use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup};

use super::access::Principal;
use super::store::{self, Filter, Overview, COUNT_CAP};
use super::view::{self, age, capped, chart, csrf, document_href, enc, page};
use super::{first, Failure, PageRequest};
use crate::db::State as VersionState;

/// Versions per page.
const PAGE: i64 = 50;

/// `GET /console`.
pub(super) async fn overview(p: PageRequest) -> Result<Response, Failure> {
    let PageRequest { c, who, query: q } = p;
    let msg = first(&q).get("msg").map(|s| s.to_string());
    let client = c.client().await?;
    let o = store::overview(&client).await?;
    let errors = client
        .query(crate::db::sql::STATUS_ERRORS, &[&10i64])
        .await
        .map_err(crate::db::Error::query("reading errored versions"))?;
    let errors: Vec<(i64, String, i32, String)> = errors
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(4)))
        .collect();
    let token = c.inner.access.csrf_token(&who);
    let minutes = c.inner.history.series();
    let body = html! {
        div.grid {
            section aria-labelledby="h-versions" { (versions_table(&o)) }
            section aria-labelledby="h-charts" {
                h2 #h-charts { "The last hour (this daemon)" }
                (chart("Versions per minute: made current (green), errored (red)", &minutes, |m| (m.current, m.errored)))
                (chart("Outbox per minute: delivered (green), failed or parked (red)", &minutes, |m| (m.delivered, m.failed_deliveries)))
                p.note { "Counted from this daemon's own events since it started; other daemons on the same database count their own." }
            }
        }
        section aria-labelledby="h-errors" {
            h2 #h-errors { "Latest errors" }
            (latest_errors(&errors, &who, &token))
            p { a href="/console/versions?state=errored" { "All errored versions" } }
        }
        div.grid {
            section aria-labelledby="h-outbox" { (outbox(&o, &c.inner.sinks)) }
            section aria-labelledby="h-daemons" { (daemons(&o)) }
        }
        section aria-labelledby="h-parked" { (parked(&o, &who, &token)) }
        div.grid {
            section aria-labelledby="h-live" {
                h2 #h-live { "Live" }
                ul #live aria-live="polite" {}
            }
            section aria-labelledby="h-audit" { (audit(&o)) }
        }
    };
    Ok(Html(page("Overview", &who, msg.as_deref(), body).into_string()).into_response())
}

fn versions_table(o: &Overview) -> Markup {
    let estimate = |s: &str| o.estimates.iter().find(|(n, _)| n == s).map(|(_, n)| *n);
    html! {
        h2 #h-versions { "Versions" }
        table {
            thead { tr { th scope="col" { "State" } th.num scope="col" { "Versions" } th scope="col" { "How counted" } } }
            tbody {
                @for s in VersionState::ALL {
                    @let name = s.as_str();
                    tr {
                        td { a href=(format!("/console/versions?state={}", enc(name))) { span class=(format!("state s-{name}")) { (name) } } }
                        @match s {
                            VersionState::PostPublication => { td.num { (capped(o.pending, COUNT_CAP)) } td { "exact" } }
                            VersionState::Processing => { td.num { (o.processing) } td { "exact" } }
                            VersionState::Errored => { td.num { (capped(o.errored, COUNT_CAP)) } td { "exact" } }
                            _ => {
                                td.num { @if let Some(n) = estimate(name) { "≈ " (n) } @else { "?" } }
                                td { "estimate" }
                            }
                        }
                    }
                }
            }
        }
        p { "Oldest pending version has waited " strong { (age(o.oldest_pending_s)) } "." }
        p.note {
            "≈: the planner's estimate from the last ANALYZE (about " (o.total_estimate)
            " versions in all); counting these states exactly would read the whole table. "
            "Pending and errored versions are counted exactly up to " (COUNT_CAP) "."
        }
    }
}

fn latest_errors(errors: &[(i64, String, i32, String)], who: &Principal, token: &str) -> Markup {
    html! {
        @if errors.is_empty() { p { "No errored versions." } } @else {
            table {
                thead { tr { th scope="col" { "Document" } th scope="col" { "Version" } th scope="col" { "Error" } th scope="col" { "Action" } } }
                tbody {
                    @for (id, doc, version, err) in errors {
                        tr {
                            td { a href=(document_href(doc)) { (doc) } }
                            td { "v" (version) " (#" (id) ") " (view::state(*id, "errored")) }
                            td { (view::error(err)) }
                            td { (requeue_one(*id, who, token, "/console")) }
                        }
                    }
                }
            }
        }
    }
}

/// A one-version requeue button (operators only).
pub(super) fn requeue_one(id: i64, who: &Principal, token: &str, back: &str) -> Markup {
    post_button(
        "/console/requeue",
        "one",
        &id.to_string(),
        "version",
        who,
        token,
        back,
    )
}

/// A form of one button posting `field=value` to `action` (operators only); `what`
/// names the thing for screen readers.
fn post_button(
    action: &str,
    field: &str,
    value: &str,
    what: &str,
    who: &Principal,
    token: &str,
    back: &str,
) -> Markup {
    html! {
        @if who.is_operator() {
            form.inline method="post" action=(action) {
                (csrf(token))
                input type="hidden" name="back" value=(back);
                button type="submit" name=(field) value=(value) aria-label=(format!("Requeue {what} {value}")) { "Requeue" }
            }
        } @else { span.note { "read-only" } }
    }
}

fn outbox(o: &Overview, configured: &[String]) -> Markup {
    let (pending, parked, oldest) = o.outbox;
    let mut sinks: Vec<(String, i64, i64)> = o.sinks.clone();
    for name in configured {
        if !sinks.iter().any(|(s, _, _)| s == name) {
            sinks.push((name.clone(), 0, 0));
        }
    }
    html! {
        h2 #h-outbox { "Outbox" }
        p { (pending) " undelivered events"
            @if pending > 0 { ", the oldest written " (age(oldest)) " ago" }
            "; " (parked) " parked." }
        @if sinks.is_empty() { p.note { "No sinks configured: events wait in postpub.outbox." } } @else {
            table {
                thead { tr { th scope="col" { "Sink" } th.num scope="col" { "Waiting for a retry" } th.num scope="col" { "Parked" } } }
                tbody { @for (s, retry, park) in &sinks { tr { td { (s) } td.num { (retry) } td.num { (park) } } } }
            }
        }
    }
}

fn daemons(o: &Overview) -> Markup {
    html! {
        h2 #h-daemons { "Daemons" }
        table {
            thead { tr { th scope="col" { "Seen as" } th scope="col" { "Who" } th.num scope="col" { "Holds" } th scope="col" { "" } } }
            tbody {
                @for (kind, who, n, secs) in &o.daemons {
                    tr {
                        @if kind == "lease" {
                            td { "leases" } td { (who) } td.num { (n) " versions" } td { "earliest lease ends in " (age(*secs)) }
                        } @else {
                            td { "connections" } td { (who) } td.num { (n) } td { "connected for " (age(*secs)) }
                        }
                    }
                }
            }
        }
        p.note { "Leases: versions each daemon is processing now. Connections: sessions named postpub in this database." }
    }
}

fn parked(o: &Overview, who: &Principal, token: &str) -> Markup {
    html! {
        h2 #h-parked { "Parked outbox events" }
        @if o.parked.is_empty() { p { "None." } } @else {
            table {
                thead { tr { th scope="col" { "Event" } th scope="col" { "Document" } th scope="col" { "Kind" } th.num scope="col" { "Rounds" } th scope="col" { "Reason" } th scope="col" { "Parked at" } th scope="col" { "Action" } } }
                tbody {
                    @for (id, doc, kind, rounds, reason, at) in &o.parked {
                        tr {
                            td { code { (id) } }
                            td { a href=(document_href(doc)) { (doc) } }
                            td { (kind) } td.num { (rounds) } td { span.reason { (reason) } } td { (at) }
                            td { (requeue_event_button(*id, who, token, "/console")) }
                        }
                    }
                }
            }
        }
    }
}

/// A parked event's requeue button (operators only).
pub(super) fn requeue_event_button(
    id: uuid::Uuid,
    who: &Principal,
    token: &str,
    back: &str,
) -> Markup {
    post_button(
        "/console/requeue-event",
        "event",
        &id.to_string(),
        "event",
        who,
        token,
        back,
    )
}

fn audit(o: &Overview) -> Markup {
    html! {
        h2 #h-audit { "Console actions" }
        @if o.audit.is_empty() { p { "None yet." } } @else {
            table {
                thead { tr { th scope="col" { "At" } th scope="col" { "Who" } th scope="col" { "Did" } th.num scope="col" { "Rows" } } }
                tbody { @for (at, actor, action, target, n) in &o.audit {
                    tr { td { (at) } td { (actor) } td { (action) " " span.reason { (target) } } td.num { (n) } }
                } }
            }
        }
    }
}

/// The filter of a query string.
pub(super) fn filter_of(q: &[(String, String)]) -> Filter {
    let m = first(q);
    let get = |k: &str| m.get(k).map(|s| s.trim().to_owned()).unwrap_or_default();
    Filter {
        state: get("state"),
        doc: get("doc"),
        contains: get("match") == "contains",
        since: get("since"),
        until: get("until"),
    }
}

/// The filter as a query string (without paging).
pub(super) fn filter_query(f: &Filter) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("state", &f.state),
        ("doc", &f.doc),
        ("since", &f.since),
        ("until", &f.until),
    ] {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    if f.contains {
        s.append_pair("match", "contains");
    }
    s.finish()
}

/// Checks the state name (any other text would reach the SQL cast as a 400 anyway, but
/// say which values exist).
fn check_state(f: &Filter) -> Result<(), Failure> {
    if f.state.is_empty() || VersionState::ALL.iter().any(|s| s.as_str() == f.state) {
        return Ok(());
    }
    Err(Failure::BadRequest(format!(
        "unknown state {:?}: one of {}",
        f.state,
        VersionState::ALL.map(|s| s.as_str()).join(", ")
    )))
}

/// `GET /console/versions`.
pub(super) async fn versions(p: PageRequest) -> Result<Response, Failure> {
    let PageRequest { c, who, query: q } = p;
    let f = filter_of(&q);
    check_state(&f)?;
    let m = first(&q);
    let before =
        match m.get("before") {
            None | Some(&"") => None,
            Some(b) => Some(b.parse::<i64>().map_err(|_| {
                Failure::BadRequest(format!("before must be a version id, not {b:?}"))
            })?),
        };
    let msg = m.get("msg").map(|s| s.to_string());
    let client = c.client().await?;
    let rows = store::versions(&client, &f, before, PAGE).await?;
    let total = store::total_estimate(&client).await?;
    let token = c.inner.access.csrf_token(&who);
    let here = format!("/console/versions?{}", filter_query(&f));
    let body = html! {
        (filter_form(&f))
        p.note { "About " (total) " versions in all (the planner's estimate; no page counts the table). Newest first, " (PAGE) " per page." }
        @if (f.state.is_empty() || f.state == "errored") && !f.contains && who.is_operator() {
            p { a href=(format!("/console/requeue-matching?{}", filter_query(&f))) { "Requeue every errored version matching this filter…" } }
        }
        (super::document::versions_form(&rows, &who, &token, &here, true))
        @if rows.len() as i64 == PAGE {
            @if let Some(last) = rows.last() {
                p { a rel="next" href=(format!("{here}&before={}", last.id)) { "Older versions →" } }
            }
        }
        @if before.is_some() { p { a href=(here) { "← Newest" } } }
    };
    Ok(Html(page("Versions", &who, msg.as_deref(), body).into_string()).into_response())
}

fn filter_form(f: &Filter) -> Markup {
    html! {
        form method="get" action="/console/versions" role="search" {
            fieldset {
                legend { "Filter" }
                label { "State"
                    select name="state" {
                        option value="" selected[f.state.is_empty()] { "any" }
                        @for s in VersionState::ALL {
                            option value=(s.as_str()) selected[f.state == s.as_str()] { (s.as_str()) }
                        }
                    }
                }
                label { "Document" input type="search" name="doc" value=(f.doc) placeholder="name or prefix"; }
                label { "Match"
                    select name="match" {
                        option value="prefix" selected[!f.contains] { "starts with" }
                        option value="contains" selected[f.contains] { "contains" }
                    }
                }
                label { "Created from" input type="datetime-local" name="since" value=(f.since); }
                label { "Created before" input type="datetime-local" name="until" value=(f.until); }
                button type="submit" { "Show" }
            }
        }
    }
}

/// `GET /console/requeue-matching`: how many errored versions the filter matches, and a
/// form to requeue them.
pub(super) async fn confirm_matching(p: PageRequest) -> Result<Response, Failure> {
    let PageRequest { c, who, query: q } = p;
    let f = filter_of(&q);
    if f.contains {
        return Err(Failure::BadRequest(
            "requeueing by filter takes a document prefix, not a substring".to_owned(),
        ));
    }
    let client = c.client().await?;
    let n = store::count_errored(&client, &f).await?;
    let token = c.inner.access.csrf_token(&who);
    let body = html! {
        p { "This requeues " strong { (n) " errored versions" }
            @if !f.doc.is_empty() { " whose document starts with " code { (f.doc) } }
            @if !f.since.is_empty() { ", created from " (f.since) }
            @if !f.until.is_empty() { ", created before " (f.until) }
            "." }
        @if who.is_operator() && n > 0 {
            form method="post" action="/console/requeue-matching" {
                (csrf(&token))
                input type="hidden" name="doc" value=(f.doc);
                input type="hidden" name="since" value=(f.since);
                input type="hidden" name="until" value=(f.until);
                input type="hidden" name="expected" value=(n);
                button type="submit" { "Requeue " (n) " versions" }
                " "
                a href=(format!("/console/versions?{}", filter_query(&Filter { state: "errored".into(), ..f.clone() }))) { "Cancel" }
            }
        } @else if n == 0 { p { a href="/console/versions?state=errored" { "Back" } } }
        @else { p.note { "Read-only access: requeueing needs an operator." } }
    };
    Ok(Html(page("Requeue matching versions", &who, None, body).into_string()).into_response())
}
