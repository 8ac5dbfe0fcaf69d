//! `/healthz` and `/readyz`: liveness of the process, readiness to do its job.
//!
//! Liveness is only "the process answers": restarting a daemon because its database is
//! down would not bring the database back. Readiness is "the daemon can work right now":
//! its LISTEN connection is up (the listener checks it every poll interval), its last
//! claim succeeded (a read-only database answers LISTEN and `select 1`, not claims), a
//! pooled connection answers `select 1`, and it is not shutting down.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::db;

/// How long `/readyz` waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: 200 while the process serves requests.
pub(crate) async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: 200 when the database and the listener are fine, 503 otherwise.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    if !*state.ready.borrow() {
        return not_ready(
            "the LISTEN connection is down, claims are failing (see the log), or the daemon is stopping",
        );
    }
    let ping = async {
        let client = db::get(&state.pool, &state.target).await?;
        client
            .simple_query("select 1")
            .await
            .map_err(db::Error::query("checking the database"))?;
        Ok::<_, db::Error>(())
    };
    match tokio::time::timeout(READY_TIMEOUT, ping).await {
        Ok(Ok(())) => Json(json!({ "status": "ready" })).into_response(),
        Ok(Err(e)) => not_ready(&e.to_string()),
        Err(_) => not_ready(&format!(
            "the database at {} did not answer within {}",
            state.target,
            humantime::format_duration(READY_TIMEOUT)
        )),
    }
}

fn not_ready(why: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": "not ready", "error": why })),
    )
        .into_response()
}
