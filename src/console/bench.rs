//! The measuring half of `postpub bench console` (the bench module fills the database):
//! serves the console alone on a loopback port and times each page as a client sees it,
//! full body read, over a kept-alive connection. The console's stylesheet is timed the
//! same way as the reference for what HTTP itself costs.

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db;

/// Why a measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The database.
    #[error(transparent)]
    Db(#[from] db::Error),
    /// The loopback listener.
    #[error("cannot listen on 127.0.0.1 for the console bench: {0}")]
    Bind(std::io::Error),
    /// A page did not answer 200.
    #[error("GET {path}: {problem}")]
    Page {
        /// The page.
        path: String,
        /// Status or transport error.
        problem: String,
    },
}

/// One page's timings in milliseconds.
#[derive(Debug, Clone)]
pub struct PageTime {
    /// Path and query.
    pub path: String,
    /// Median.
    pub p50_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Body size of the last response.
    pub bytes: usize,
}

/// Times each of `paths` `rounds` times (after one warm-up) against the database of `cfg`.
pub async fn time_pages(
    cfg: &Config,
    paths: &[String],
    rounds: usize,
) -> Result<Vec<PageTime>, BenchError> {
    let (pool, target) = db::pool(&cfg.database)?;
    let console = super::Console::new(cfg, pool.clone(), target, crate::event::channel());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(BenchError::Bind)?;
    let addr = listener.local_addr().map_err(BenchError::Bind)?;
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        let app = console.router::<()>();
        async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        }
    });
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for path in paths {
        let url = format!("http://{addr}{path}");
        let mut times = Vec::with_capacity(rounds);
        let mut bytes = 0;
        for round in 0..=rounds {
            let started = Instant::now();
            let fail = |problem: String| BenchError::Page {
                path: path.clone(),
                problem,
            };
            let r = client
                .get(&url)
                .send()
                .await
                .map_err(|e| fail(e.to_string()))?;
            if r.status() != 200 {
                return Err(fail(format!("status {}", r.status())));
            }
            bytes = r.bytes().await.map_err(|e| fail(e.to_string()))?.len();
            if round > 0 {
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        times.sort_by(f64::total_cmp);
        out.push(PageTime {
            path: path.clone(),
            p50_ms: times.get(times.len() / 2).copied().unwrap_or(0.0),
            max_ms: times.last().copied().unwrap_or(0.0),
            bytes,
        });
    }
    stop.cancel();
    let _ = server.await;
    pool.close();
    Ok(out)
}
