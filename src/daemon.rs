//! `postpub run`: checks the database, then starts the services (listener, worker,
//! rescuer, outbox relay) under one task tracker and stops them in order when the shutdown
//! token fires. The HTTP server and the metrics recorder run beside them and stop last, so
//! health and metrics stay visible while in-flight work drains. `postpub relay` ([`relay`])
//! runs the listener and the relay alone.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError};
use crate::console::Console;
use crate::db::{self, migrate};
use crate::event::Events;
use crate::http::{self, HttpServer, Metrics, Recorder};
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
    /// `http.listen` could not be bound.
    #[error(transparent)]
    Http(#[from] http::BindError),
    /// An outbox sink could not be set up.
    #[error(transparent)]
    Outbox(#[from] crate::outbox::Error),
}

/// How long the HTTP server may take to finish its requests once the services stopped.
const HTTP_STOP_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The LISTEN service of `run` and `relay`: the direct URL, checked every poll interval.
fn listener(
    cfg: &Config,
    wakeups: &Wakeups,
    ready: watch::Sender<bool>,
    events: &Events,
) -> Listener {
    Listener::new(
        cfg.database.listen_url().to_owned(),
        cfg.database.connect_timeout,
        cfg.worker.poll_interval,
        wakeups.clone(),
        ready,
        events.clone(),
    )
}

/// How the daemon re-reads its configuration when asked (SIGHUP).
pub struct Reload {
    /// Changes once per request.
    pub requests: watch::Receiver<u64>,
    /// Reads and validates the configuration again (same file, environment and flags).
    pub load: Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
}

/// Runs the daemon without configuration reloads (tests, demo, bench).
pub async fn run(
    cfg: Config,
    shutdown: Shutdown,
    events: Events,
    ready: watch::Sender<bool>,
) -> Result<(), StartError> {
    run_with_reload(cfg, shutdown, events, ready, None).await
}

/// Runs the daemon until `shutdown.soft` fires and in-flight work is settled. `ready`
/// turns true once the database is checked and LISTEN is active, follows the LISTEN
/// connection after that (false while it reconnects), and turns false for good when the
/// shutdown starts.
pub async fn run_with_reload(
    cfg: Config,
    shutdown: Shutdown,
    events: Events,
    ready: watch::Sender<bool>,
    reload: Option<Reload>,
) -> Result<(), StartError> {
    let (pool, target) = db::pool(&cfg.database)?;
    let (claim_pool, _) = db::pool_with(&cfg.database, 1, Some(db::CLAIM_SESSION))?;
    {
        let client = db::get(&pool, &target).await?;
        migrate::check(&client).await?;
        // Not fatal: a database that refuses writes now (read-only for a while) is retried
        // like any other; publish() keeps the previous limit meanwhile.
        if let Err(e) = migrate::set_max_body_bytes(&**client, cfg.pipeline.max_body_bytes).await {
            tracing::warn!(error = %e, "could not store pipeline.max_body_bytes for postpub.publish");
        }
    }
    let http_listener = match cfg.http.listen.trim() {
        "" => None,
        addr => Some(http::bind(addr).await?),
    };
    let pipeline = Arc::new(
        Pipeline::from_config(&cfg.pipeline)
            .map_err(StartError::Pipeline)?
            .with_events(events.clone()),
    );
    let actor = actor_id();
    let (config_tx, config_rx) = watch::channel(Arc::new(cfg.clone()));
    let wakeups = Wakeups::default();
    let (listening_tx, listening) = watch::channel(false);
    let (claiming_tx, claiming) = watch::channel(true);
    let relay = Relay::from_config(
        &cfg,
        pool.clone(),
        target.clone(),
        wakeups.outbox.clone(),
        events.clone(),
    )?
    .with_reloads(config_rx.clone());
    let tracker = TaskTracker::new();

    // The edge (metrics, HTTP) outlives the services: its own token and tracker.
    let edge_stop = CancellationToken::new();
    let edge = TaskTracker::new();
    let metrics = Arc::new(Metrics::new());
    edge.spawn(
        Recorder {
            metrics: metrics.clone(),
            events: events.subscribe(),
        }
        .run(edge_stop.clone()),
    );
    if let Some(listener) = http_listener {
        // A small pool of its own: API and scrape traffic never waits behind the worker.
        let http_db = crate::config::DatabaseConfig {
            pool_size: (cfg.database.pool_size / 4).max(2),
            ..cfg.database.clone()
        };
        let (http_pool, _) = db::pool(&http_db)?;
        let (stream_pool, _) = db::pool_with(&cfg.database, http::STREAMS, None)?;
        let mut server = HttpServer::new(
            listener,
            http_pool.clone(),
            stream_pool,
            target.clone(),
            ready.subscribe(),
            metrics,
        );
        if cfg.console.enabled {
            let console = Console::new(&cfg, http_pool, target.clone(), events.clone());
            edge.spawn(console.clone().record(edge_stop.clone()));
            server = server.with_console(console);
        }
        edge.spawn(server.run(edge_stop.clone()));
    }

    tracker.spawn(listener(&cfg, &wakeups, listening_tx, &events).run(shutdown.soft.clone()));
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
            config: config_rx.clone(),
            wake: wakeups.versions.clone(),
            events: events.clone(),
            claiming: claiming_tx,
        }
        .run(shutdown.soft.clone(), shutdown.hard.clone()),
    );
    tracker.spawn(relay.run(shutdown.soft.clone(), shutdown.hard.clone()));
    if let Some(reload) = reload {
        tracker.spawn(reloader(reload, config_tx, shutdown.soft.clone()));
    }
    tracing::info!(
        actor = %actor,
        database = %target,
        steps = ?pipeline.names(),
        concurrency = cfg.worker.concurrency,
        "postpub started"
    );

    follow_readiness(listening, claiming, &ready, &shutdown.soft).await;
    ready.send_replace(false);
    tracker.close();
    tracker.wait().await;
    edge_stop.cancel();
    edge.close();
    if tokio::time::timeout(HTTP_STOP_TIMEOUT, edge.wait())
        .await
        .is_err()
    {
        tracing::warn!("http requests still running at exit were cut off");
    }
    pool.close();
    claim_pool.close();
    tracing::info!("postpub stopped");
    Ok(())
}

/// Ready while the LISTEN connection is up (the listener checks the database with it)
/// and claims succeed (a read-only database answers LISTEN and `select 1`, not claims),
/// until `stop`.
async fn follow_readiness(
    mut listening: watch::Receiver<bool>,
    mut claiming: watch::Receiver<bool>,
    ready: &watch::Sender<bool>,
    stop: &CancellationToken,
) {
    let mut open = (true, true);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = listening.changed(), if open.0 => if r.is_err() { open.0 = false },
            r = claiming.changed(), if open.1 => if r.is_err() { open.1 = false },
        }
        let up = *listening.borrow_and_update() && *claiming.borrow_and_update();
        ready.send_replace(up);
    }
}

/// Applies configuration reloads: `log.level`, `[worker]`, `[pipeline]` (and what other
/// services read from the watch) take effect; keys that need new connections or sockets
/// (`[database]`, `[http]`, `log.format`) keep their running values, with a warning. An
/// invalid file is refused with one error line and changes nothing.
async fn reloader(
    mut reload: Reload,
    config: watch::Sender<Arc<Config>>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = reload.requests.changed() => if r.is_err() { return },
        }
        crate::systemd::reloading();
        match (reload.load)() {
            Ok(new) => {
                let old = config.borrow().clone();
                let mut applied = new;
                for (key, differs) in [
                    ("database", applied.database != old.database),
                    ("http", applied.http != old.http),
                    ("console", applied.console != old.console),
                    ("log.format", applied.log.format != old.log.format),
                ] {
                    if differs {
                        tracing::warn!(
                            key,
                            "changed in the configuration file; takes effect at the next restart"
                        );
                    }
                }
                applied.database = old.database.clone();
                applied.http = old.http.clone();
                applied.console = old.console.clone();
                applied.log.format = old.log.format;
                if applied.log.level != old.log.level {
                    if let Err(e) = crate::logging::set_level(&applied.log.level) {
                        tracing::warn!(error = %e, "log level not changed");
                    }
                }
                config.send_replace(Arc::new(applied));
                tracing::info!("configuration reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
            }
        }
        crate::systemd::reloaded();
    }
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
    tracker.spawn(listener(&cfg, &wakeups, listening_tx, &events).run(shutdown.soft.clone()));
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
