//! The HTTP server (`[http] listen`, loopback by default): `/healthz`, `/readyz`
//! ([`health`]), `/metrics` ([`metrics`]) and the read-only runtime API
//! `/documents/{document}` ([`documents`]).
//!
//! It only reads. Binding happens before the daemon starts its services ([`bind`]), so an
//! address in use stops `postpub run` at once (exit 1, the address in the message) rather
//! than leaving a daemon nobody can watch. Every error body is JSON: `{"error": "…"}`.

pub mod documents;
pub mod health;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

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
}

impl HttpServer {
    /// A server on a bound listener, reading through `pool`.
    pub fn new(
        listener: TcpListener,
        pool: Pool,
        target: String,
        ready: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            listener,
            state: AppState {
                pool,
                target,
                ready,
                metrics,
            },
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    fn router(state: AppState) -> Router {
        Router::new()
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
        let app = Self::router(self.state);
        if let Err(e) = axum::serve(self.listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await
        {
            tracing::error!(addr = %addr, error = %e, "http server failed");
        }
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
            "no such endpoint {}: try /healthz, /readyz, /metrics or /documents/{{document}}",
            uri.path()
        ),
    )
}
