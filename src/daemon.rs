//! `postpub run`: checks the database, then starts the services (listener, worker,
//! rescuer) under one task tracker and stops them in order when the shutdown token fires.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::db::{self, migrate};
use crate::event::Events;
use crate::listener::{Listener, Wakeups};
use crate::pipeline::Pipeline;
use crate::shutdown::Shutdown;
use crate::worker::rescuer::Rescuer;
use crate::worker::Worker;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database is unreachable or not migrated.
    #[error(transparent)]
    Db(#[from] db::Error),
    /// The pipeline could not be built.
    #[error("pipeline: {0}")]
    Pipeline(String),
}

/// This daemon's name in leases and the audit trail: host, process and a random suffix
/// (several daemons may share a process in tests).
pub fn actor_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &suffix[..6])
}

/// Runs the daemon until `shutdown.soft` fires and in-flight work is settled. `ready`
/// turns true once the database is checked and LISTEN is active.
pub async fn run(
    cfg: Config,
    shutdown: Shutdown,
    events: Events,
    ready: watch::Sender<bool>,
) -> Result<(), StartError> {
    let (pool, target) = db::pool(&cfg.database)?;
    let (claim_pool, _) = db::pool_with(&cfg.database, 1, Some(db::CLAIM_SESSION))?;
    {
        let client = db::get(&pool, &target).await?;
        migrate::check(&client).await?;
    }
    let pipeline = Arc::new(Pipeline::from_config(&cfg.pipeline).map_err(StartError::Pipeline)?);
    let actor = actor_id();
    let wakeups = Wakeups::default();
    let (listening_tx, mut listening) = watch::channel(false);
    let tracker = TaskTracker::new();

    tracker.spawn(
        Listener::new(
            cfg.database.listen_url().to_owned(),
            cfg.database.connect_timeout,
            cfg.worker.poll_interval,
            wakeups.clone(),
            listening_tx,
            events.clone(),
        )
        .run(shutdown.soft.clone()),
    );
    tracker.spawn(
        Rescuer {
            pool: pool.clone(),
            target: target.clone(),
            actor: actor.clone(),
            interval: cfg.worker.rescue_interval(),
            max_attempts: cfg.worker.max_attempts,
            events: events.clone(),
        }
        .run(shutdown.soft.clone()),
    );
    tracker.spawn(
        Worker {
            pool: pool.clone(),
            claim_pool: claim_pool.clone(),
            target: target.clone(),
            actor: actor.clone(),
            cfg: cfg.worker.clone(),
            pipeline_cfg: cfg.pipeline.clone(),
            pipeline: pipeline.clone(),
            wake: wakeups.versions.clone(),
            events: events.clone(),
        }
        .run(shutdown.soft.clone(), shutdown.hard.clone()),
    );
    tracing::info!(
        actor = %actor,
        database = %target,
        steps = ?pipeline.names(),
        concurrency = cfg.worker.concurrency,
        "postpub started"
    );

    tokio::select! {
        biased;
        _ = shutdown.soft.cancelled() => {}
        r = listening.wait_for(|l| *l) => {
            if r.is_ok() {
                ready.send_replace(true);
            }
        }
    }
    shutdown.soft.cancelled().await;
    ready.send_replace(false);
    tracker.close();
    tracker.wait().await;
    pool.close();
    claim_pool.close();
    tracing::info!("postpub stopped");
    Ok(())
}
