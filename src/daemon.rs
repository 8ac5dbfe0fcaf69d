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

use deadpool_postgres::Pool;

use crate::config::{Config, ConfigError};
use crate::console::Console;
use crate::db::{self, migrate};
use crate::event::Events;
use crate::http::{self, HttpServer, Metrics, Recorder};
use crate::listener::{Listener, Wakeups};
use crate::outbox::Relay;
use crate::pipeline::Pipeline;
use crate::service::Base;
use crate::shutdown::Shutdown;
use crate::systemd;
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
    Pipeline(#[from] crate::pipeline::BuildError),
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
/// shutdown starts. systemd hears of all this through the notifier (a no-op outside
/// systemd).
pub async fn run_with_reload(
    cfg: Config,
    shutdown: Shutdown,
    events: Events,
    ready: watch::Sender<bool>,
    reload: Option<Reload>,
) -> Result<(), StartError> {
    // Stops with this function, whichever way it returns.
    let notifier_done = CancellationToken::new();
    tokio::spawn(
        systemd::Notifier::new(ready.subscribe(), shutdown.soft.clone()).run(notifier_done.clone()),
    );
    let _notifier = notifier_done.drop_guard();
    let (pool, target) = open(&cfg, true).await?;
    let (claim_pool, _) = db::pool_with(&cfg.database, 1, Some(db::CLAIM_SESSION))?;
    let http_listener = match cfg.http.listen.trim() {
        "" => None,
        addr => Some(http::bind(addr).await?),
    };
    let pipeline = Pipeline::from_config(&cfg.pipeline)?;
    let base = Base {
        pool: pool.clone(),
        target: target.clone(),
        actor: actor_id(),
        events: events.clone(),
    };
    let (config_tx, config_rx) = watch::channel(Arc::new(cfg.clone()));
    let wakeups = Wakeups::default();
    let relay = Relay::new(config_rx.clone(), &base, wakeups.outbox.clone())?;
    let edge = Edge::start(&cfg, http_listener, &target, &ready, &events)?;

    let listener = Listener::new(&cfg, &wakeups, &events);
    let listening = listener.listening();
    let worker = Worker::new(
        &base,
        claim_pool.clone(),
        config_rx,
        wakeups.versions.clone(),
    );
    let claiming = worker.claiming();
    let tracker = TaskTracker::new();
    spawn(&tracker, "listener", listener.run(shutdown.clone()));
    spawn(
        &tracker,
        "rescuer",
        Rescuer::new(&cfg.worker, &base).run(shutdown.clone()),
    );
    spawn(&tracker, "worker", worker.run(shutdown.clone()));
    spawn(&tracker, "relay", relay.run(shutdown.clone()));
    if let Some(reload) = reload {
        tracker.spawn(reloader(reload, config_tx, shutdown.soft.clone()));
    }
    tracing::info!(
        actor = %base.actor,
        database = %target,
        steps = ?pipeline.names(),
        concurrency = cfg.worker.concurrency,
        "postpub started"
    );

    follow_readiness(listening, claiming, &ready, &shutdown.soft).await;
    ready.send_replace(false);
    tracker.close();
    tracker.wait().await;
    edge.stop().await;
    pool.close();
    claim_pool.close();
    tracing::info!("postpub stopped");
    Ok(())
}

/// The work pool, after checking the schema (and, for `run`, storing
/// `pipeline.max_body_bytes` where `postpub.publish` reads it).
async fn open(cfg: &Config, store_limits: bool) -> Result<(Pool, String), StartError> {
    let (pool, target) = db::pool(&cfg.database)?;
    let client = db::get(&pool, &target).await?;
    migrate::check(&client).await?;
    // Not fatal: a database that refuses writes now (read-only for a while) is retried
    // like any other; publish() keeps the previous limit meanwhile.
    if store_limits {
        if let Err(e) = migrate::set_max_body_bytes(&**client, cfg.pipeline.max_body_bytes).await {
            tracing::warn!(error = %e, "could not store pipeline.max_body_bytes for postpub.publish");
        }
    }
    drop(client);
    Ok((pool, target))
}

/// Runs a service on `tracker`; a service that fails says so in the log (the others go
/// on, and the daemon's readiness shows what is missing).
fn spawn<E: std::fmt::Display>(
    tracker: &TaskTracker,
    name: &'static str,
    service: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
) {
    tracker.spawn(async move {
        if let Err(e) = service.await {
            tracing::error!(service = name, error = %e, "service stopped with an error");
        }
    });
}

/// The metrics recorder and the HTTP server: they outlive the services (their own token
/// and tracker), so health and metrics stay visible while in-flight work drains.
struct Edge {
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Edge {
    fn start(
        cfg: &Config,
        listener: Option<tokio::net::TcpListener>,
        target: &str,
        ready: &watch::Sender<bool>,
        events: &Events,
    ) -> Result<Edge, StartError> {
        let edge = Edge {
            stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        // Metrics only where they can be scraped: counting every claim and finish costs a
        // tenth of the daemon's CPU in a drain.
        let Some(listener) = listener else {
            return Ok(edge);
        };
        let metrics = Arc::new(Metrics::new());
        edge.tracker.spawn(
            Recorder {
                metrics: metrics.clone(),
                events: events.subscribe(),
            }
            .run(edge.stop.clone()),
        );
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
            target.to_owned(),
            ready.subscribe(),
            metrics,
        );
        if cfg.console.enabled {
            let console = Console::new(cfg, http_pool, target.to_owned(), events.clone());
            edge.tracker
                .spawn(console.clone().record(edge.stop.clone()));
            server = server.with_console(console);
        }
        edge.tracker.spawn(server.run(edge.stop.clone()));
        Ok(edge)
    }

    /// Stops the edge once the services stopped.
    async fn stop(self) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(HTTP_STOP_TIMEOUT, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("http requests still running at exit were cut off");
        }
    }
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
async fn reloader(mut reload: Reload, config: watch::Sender<Arc<Config>>, stop: CancellationToken) {
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
    ready: watch::Sender<bool>,
) -> Result<(), StartError> {
    // Nothing here counts events (no metrics endpoint); the services still report.
    let events = crate::event::channel();
    let (pool, target) = open(&cfg, false).await?;
    let base = Base {
        pool: pool.clone(),
        target: target.clone(),
        actor: actor_id(),
        events: events.clone(),
    };
    let wakeups = Wakeups::default();
    // No reloads here: the sender goes at once.
    let config = watch::channel(Arc::new(cfg.clone())).1;
    let relay = Relay::new(config, &base, wakeups.outbox.clone())?;
    let listener = Listener::new(&cfg, &wakeups, &events);
    let mut listening = listener.listening();
    let tracker = TaskTracker::new();
    spawn(&tracker, "listener", listener.run(shutdown.clone()));
    spawn(&tracker, "relay", relay.run(shutdown.clone()));
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
