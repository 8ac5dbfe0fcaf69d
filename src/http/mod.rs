//! The HTTP server (`[http] listen`, loopback by default): `/healthz`, `/readyz`
//! ([`health`]), `/metrics` ([`metrics`]) and the read-only runtime API
//! `/documents/{document}` ([`documents`]).
//!
//! It only reads. Binding happens before the daemon starts its services ([`bind`]), so an
//! address in use stops `postpub run` at once (exit 1, the address in the message) rather
//! than leaving a daemon nobody can watch. Every error body is JSON: `{"error": "…"}`.
//! Idle, half-sent and unread connections are closed (`conn`).

mod conn;
pub mod documents;
pub mod health;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::Pool;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use metrics::{Metrics, Recorder};

/// Large documents streamed at once; each holds a database connection of its own while
/// it streams, so a slow download never blocks small reads, `/readyz` or `/metrics`.
pub const STREAMS: usize = 8;

/// `http.listen` could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (http.listen): {source}")]
pub struct BindError {
    /// The address as configured.
    pub addr: String,
    /// Why (in use, not a local address, permission denied, …).
    pub source: std::io::Error,
}

/// Binds `http.listen`.
pub async fn bind(addr: &str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError {
        addr: addr.to_owned(),
        source,
    })
}

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The HTTP server's own small pool, so API traffic cannot starve the worker.
    pool: Pool,
    /// Connections that stream large documents, apart from `pool` so that downloads
    /// never keep `/readyz`, `/metrics` or small reads waiting.
    streams: Pool,
    /// `host:port/db`, for messages.
    target: String,
    /// The daemon's readiness.
    ready: watch::Receiver<bool>,
    /// The daemon's metrics.
    metrics: Arc<Metrics>,
}

/// The HTTP service.
pub struct HttpServer {
    listener: TcpListener,
    state: AppState,
    /// The operator console, when `[console]` enables it.
    console: Option<crate::console::Console>,
}

impl HttpServer {
    /// A server on a bound listener, reading through `pool` (and `streams` for large
    /// documents).
    pub fn new(
        listener: TcpListener,
        pool: Pool,
        streams: Pool,
        target: String,
        ready: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            listener,
            state: AppState {
                pool,
                streams,
                target,
                ready,
                metrics,
            },
            console: None,
        }
    }

    /// Serves the operator console under `/console` as well.
    pub fn with_console(mut self, console: crate::console::Console) -> Self {
        self.console = Some(console);
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    fn router(state: AppState, console: Option<&crate::console::Console>) -> Router {
        let routes = match console {
            Some(c) => Router::new().merge(c.router()),
            None => Router::new(),
        };
        routes
            .route("/healthz", get(health::healthz))
            .route("/readyz", get(health::readyz))
            .route("/metrics", get(metrics::handler))
            .route("/documents/{*document}", get(documents::handler))
            .fallback(not_found)
            .with_state(state)
    }

    /// Serves until cancelled, then lets requests in progress finish.
    pub async fn run(self, cancel: CancellationToken) {
        let addr = self.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(addr = %addr, "http server listening");
        let app = Self::router(self.state, self.console.as_ref());
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(conn::HEADER_READ_TIMEOUT)
            .keep_alive(true);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut accept_backoff = Duration::from_millis(10);
        loop {
            let stream = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                r = self.listener.accept() => match r {
                    Ok((stream, _peer)) => stream,
                    Err(e) => {
                        // Out of file descriptors or similar: the listener itself is fine,
                        // so wait a little rather than spin.
                        tracing::warn!(addr = %addr, error = %e, "http accept failed");
                        tokio::time::sleep(accept_backoff).await;
                        accept_backoff = (accept_backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
            };
            accept_backoff = Duration::from_millis(10);
            let _ = stream.set_nodelay(true);
            let io = hyper_util::rt::TokioIo::new(conn::StallGuard::new(
                stream,
                conn::WRITE_STALL_TIMEOUT,
            ));
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            let connection = graceful.watch(http.serve_connection(io, service));
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "http connection closed");
                }
            });
        }
        // Requests in progress finish; idle connections are closed. The daemon bounds
        // this wait.
        graceful.shutdown().await;
        tracing::debug!("http server stopped");
    }
}

/// A JSON error body.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!(
            "no such endpoint {}: try /healthz, /readyz, /metrics, /documents/{{document}} or /console",
            uri.path()
        ),
    )
}
