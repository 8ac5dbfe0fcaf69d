//! `postpub run`: checks the database, then starts the services (listener, worker,
//! rescuer, outbox relay) under one task tracker and stops them in order when the shutdown
//! token fires. `postpub relay` ([`relay`]) runs the listener and the relay alone.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::db::{self, migrate};
use crate::event::Events;
use crate::listener::{Listener, Wakeups};
use crate::outbox::Relay;
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
    /// An outbox sink could not be set up.
    #[error(transparent)]
    Outbox(#[from] crate::outbox::Error),
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
    {
        let client = db::get(&pool, &target).await?;
        migrate::check(&client).await?;
    }
    let pipeline = Arc::new(Pipeline::from_config(&cfg.pipeline).map_err(StartError::Pipeline)?);
    let actor = actor_id();
    let wakeups = Wakeups::default();
    let (listening_tx, mut listening) = watch::channel(false);
    let relay = Relay::from_config(
        &cfg,
        pool.clone(),
        target.clone(),
        wakeups.outbox.clone(),
        events.clone(),
    )?;
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
    tracker.spawn(relay.run(shutdown.soft.clone(), shutdown.hard.clone()));
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
    tracing::info!("postpub stopped");
    Ok(())
}

/// `postpub relay`: only the listener and the outbox relay, until `shutdown.soft` fires.
/// `ready` turns true once the database is checked and LISTEN is active.
pub async fn relay(
    cfg: Config,
    shutdown: Shutdown,
    events: Events,
    ready: watch::Sender<bool>,
) -> Result<(), StartError> {
    let (pool, target) = db::pool(&cfg.database)?;
    {
        let client = db::get(&pool, &target).await?;
        migrate::check(&client).await?;
    }
    let wakeups = Wakeups::default();
    let (listening_tx, mut listening) = watch::channel(false);
    let relay = Relay::from_config(
        &cfg,
        pool.clone(),
        target.clone(),
        wakeups.outbox.clone(),
        events.clone(),
    )?;
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
    tracker.spawn(relay.run(shutdown.soft.clone(), shutdown.hard.clone()));
    tracing::info!(database = %target, sinks = ?cfg.outbox.sink_names(), "postpub relay started");
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
    tracing::info!("postpub relay stopped");
    Ok(())
}
