//! The operator console at `/console` on the daemon's HTTP server: the backlog and its
//! age, throughput and errors over the last hour, the outbox per sink and its parked
//! events, the daemons alive, every version with filters, each document's history with
//! diffs and a sandboxed preview, and requeueing (one, a selection, everything matching a
//! filter, a parked event), each recorded in the audit with who did it.
//!
//! Server-rendered HTML ([`view`], maud) with one small stylesheet and script embedded in
//! the binary; reading works without JavaScript, which only adds live updates
//! ([`live`], server-sent events from the daemon's event stream) and "select all".
//!
//! Safety: who may do what is [`access`] (loopback without credentials, otherwise a token
//! or users, read-only or operator); every POST needs the page's CSRF token; published
//! content is untrusted HTML, so it is escaped everywhere except on `/console/preview/…`,
//! which is served with `Content-Security-Policy: sandbox` into a sandboxed iframe. Every
//! response carries the security headers of [`secure`].
//!
//! It reads through the HTTP server's pool ([`store`]) and owns no loop but the history
//! recorder ([`Console::record`]); the HTTP module mounts [`Console::router`].

pub mod access;
mod actions;
pub mod bench;
pub mod diff;
mod document;
pub mod live;
mod pages;
mod store;
mod view;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use deadpool_postgres::{Object, Pool};
use maud::html;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db;
use crate::event::Events;
use access::{Access, Principal};

/// The console's shared state.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    /// The HTTP server's pool: console reads never wait behind the worker.
    pool: Pool,
    /// `host:port/db`, for messages.
    target: String,
    access: Access,
    /// The daemon's events: live updates and the history.
    events: Events,
    history: live::History,
    /// The configured outbox sinks, shown even before they have a delivery.
    sinks: Vec<String>,
    /// Cancelled when the daemon's edge stops: live streams end, so the HTTP server's
    /// graceful shutdown does not wait for pages that stay open.
    stop: CancellationToken,
}

impl Console {
    /// A console for the daemon configured by `cfg`, reading through `pool`.
    pub fn new(cfg: &Config, pool: Pool, target: String, events: Events) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                target,
                access: Access::new(&cfg.console),
                events,
                history: live::History::default(),
                sinks: cfg.outbox.sink_names(),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// Records the history of the charts until cancelled (subscribe before the services
    /// start to miss nothing).
    pub async fn record(self, cancel: CancellationToken) {
        let rx = self.inner.events.subscribe();
        // The same token ends the live streams.
        let stop = self.inner.stop.clone();
        let ends_streams = cancel.clone();
        tokio::spawn(async move {
            ends_streams.cancelled().await;
            stop.cancel();
        });
        self.inner.history.record(rx, cancel).await;
    }

    /// The `/console` routes, for any outer router state.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        Router::new()
            .route("/console", get(pages::overview))
            .route("/console/", get(pages::overview))
            .route("/console/versions", get(pages::versions))
            .route(
                "/console/requeue-matching",
                get(pages::confirm_matching).post(actions::requeue_matching),
            )
            .route("/console/document", get(document::handler))
            .route("/console/preview/{id}", get(document::preview_handler))
            .route("/console/requeue", post(actions::requeue))
            .route("/console/requeue-event", post(actions::requeue_event))
            .route("/console/live", get(live_stream))
            .route("/console/assets/{name}", get(asset))
            .route("/console/{*rest}", get(not_found).post(not_found))
            .layer(middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self.clone())
    }

    async fn client(&self) -> Result<Object, Failure> {
        Ok(db::get(&self.inner.pool, &self.inner.target).await?)
    }
}

/// Authenticates every request and puts the security headers on every response.
async fn guard(State(c): State<Console>, mut req: Request, next: Next) -> Response {
    let preview = req.uri().path().starts_with("/console/preview/");
    let mut resp = match c.inner.access.authenticate(req.headers()) {
        Ok(who) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Err(access::Refusal::Unauthenticated) => {
            let mut r = (
                StatusCode::UNAUTHORIZED,
                "the postpub console needs credentials: a configured user, or a token as Bearer or as the Basic password\n",
            )
                .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"postpub console\", charset=\"UTF-8\""),
            );
            r
        }
    };
    secure(resp.headers_mut(), preview);
    resp
}

/// The page policy: only our own script, style, images and frames; nothing framed by
/// others; forms post only here.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The preview policy: a sandbox (no script, no same-origin access, no forms), the
/// document's own inline styles and data: images, framed only by the console.
const PREVIEW_CSP: &str = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; base-uri 'none'; form-action 'none'";

/// Security headers for every console response.
fn secure(h: &mut HeaderMap, preview: bool) {
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        if preview { PREVIEW_CSP } else { PAGE_CSP },
    );
    set(
        h,
        header::X_FRAME_OPTIONS,
        if preview { "SAMEORIGIN" } else { "DENY" },
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // Not no-referrer: browsers then send `Origin: null` on our own form posts.
    set(h, header::REFERRER_POLICY, "same-origin");
    set(h, header::CACHE_CONTROL, "no-store");
    set(
        h,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        h,
        header::HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
}

/// Why a console request failed; rendered as a short HTML page.
#[derive(Debug)]
pub(crate) enum Failure {
    /// 404.
    NotFound(String),
    /// 400: a filter or form value that cannot be used.
    BadRequest(String),
    /// 403: read-only user, or CSRF.
    Forbidden(String),
    /// The database refused or failed.
    Db(db::Error),
}

impl From<db::Error> for Failure {
    fn from(e: db::Error) -> Self {
        Failure::Db(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, msg) = match self {
            Failure::NotFound(m) => (StatusCode::NOT_FOUND, m),
            Failure::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            Failure::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            Failure::Db(e) => (db_status(&e), e.to_string()),
        };
        let body = html! {
            (maud::DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { (status.as_u16()) " · postpub console" }
                    link rel="stylesheet" href="/console/assets/console.css";
                }
                body { main {
                    h1 { (status.canonical_reason().unwrap_or("Error")) }
                    p.flash.bad { (msg) }
                    p { a href="/console" { "Back to the overview" } }
                } }
            }
        };
        (status, axum::response::Html(body.into_string())).into_response()
    }
}

/// The status of a database failure: the caller's mistake (bad input, not allowed, gone,
/// wrong state) or the database's.
fn db_status(e: &db::Error) -> StatusCode {
    match e.sqlstate() {
        Some(s) if s.starts_with("22") => StatusCode::BAD_REQUEST,
        Some("42501") => StatusCode::FORBIDDEN,
        Some("P0002") => StatusCode::NOT_FOUND,
        Some("55000") => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// What a GET page starts from: the console, who asks, the query string's pairs.
pub(crate) struct PageRequest {
    c: Console,
    who: Principal,
    query: Vec<(String, String)>,
}

impl FromRequestParts<Console> for PageRequest {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, c: &Console) -> Result<Self, Failure> {
        let who = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| Failure::Forbidden("not authenticated".to_owned()))?;
        Ok(PageRequest {
            c: c.clone(),
            who,
            query: pairs(parts.uri.query().unwrap_or("").as_bytes()),
        })
    }
}

/// What a POST starts from, once it passed the checks every POST passes (an operator,
/// the form's CSRF token, this origin): who, the form, a connection.
pub(crate) struct PostRequest {
    who: Principal,
    form: Vec<(String, String)>,
    client: Object,
}

impl FromRequest<Console> for PostRequest {
    type Rejection = Failure;

    async fn from_request(req: Request, c: &Console) -> Result<Self, Failure> {
        let (mut parts, body) = req.into_parts();
        let page = PageRequest::from_request_parts(&mut parts, c).await?;
        let body = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|e| Failure::BadRequest(format!("reading the form: {e}")))?;
        let form = pairs(&body);
        actions::allowed(c, &page.who, &parts.headers, &form)?;
        Ok(PostRequest {
            client: c.client().await?,
            who: page.who,
            form,
        })
    }
}

/// The largest form accepted (a page of selected versions is far below).
const MAX_FORM_BYTES: usize = 256 * 1024;

/// A query string or form body as (key, value) pairs.
pub(crate) fn pairs(raw: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(raw).into_owned().collect()
}

/// The first value of each key.
pub(crate) fn first(pairs: &[(String, String)]) -> HashMap<&str, &str> {
    let mut m = HashMap::new();
    for (k, v) in pairs {
        m.entry(k.as_str()).or_insert(v.as_str());
    }
    m
}

async fn live_stream(State(c): State<Console>) -> Response {
    live::stream(c.inner.events.subscribe(), c.inner.stop.clone()).into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    let (ctype, body) = match name.as_str() {
        "console.css" => (
            "text/css; charset=utf-8",
            include_str!("assets/console.css"),
        ),
        "console.js" => (
            "text/javascript; charset=utf-8",
            include_str!("assets/console.js"),
        ),
        _ => return Failure::NotFound(format!("no console asset {name}")).into_response(),
    };
    ([(header::CONTENT_TYPE, ctype)], body).into_response()
}

async fn not_found(uri: axum::http::Uri, Extension(_who): Extension<Principal>) -> Response {
    Failure::NotFound(format!(
        "no console page {}: try /console, /console/versions or /console/document?name=…",
        uri.path()
    ))
    .into_response()
}
