//! The LISTEN connection: its own connection outside the pool (PgBouncer in transaction
//! mode would swallow notifications; `database.listen_url` points past it), turned into
//! wake-ups for the worker and the relay.
//!
//! A notification is only a hint. After every (re)connect this wakes everyone so they
//! rescan the tables: a notification sent while the connection was down is lost, the work
//! it announced is not. The connection is checked with a query every health interval, so a
//! stalled server or network is noticed even when no notification is due.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch, Notify};
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db;
use crate::event::{Event, Events};
use crate::shutdown::Shutdown;

/// Notification channel name (SPEC: *Names*).
pub const CHANNEL: &str = "postpub";

/// Who to wake for which payload.
#[derive(Clone, Default)]
pub struct Wakeups {
    /// Versions were inserted or requeued.
    pub versions: Arc<Notify>,
    /// Outbox events were written.
    pub outbox: Arc<Notify>,
}

impl Wakeups {
    /// Wakes both loops (after a reconnect: something may have been missed).
    pub fn all(&self) {
        self.versions.notify_one();
        self.outbox.notify_one();
    }

    fn payload(&self, payload: &str) {
        match payload {
            "outbox" => self.outbox.notify_one(),
            "versions" => self.versions.notify_one(),
            // An unknown hint (a newer schema, a manual NOTIFY): waking both is harmless.
            _ => self.all(),
        }
    }
}

/// The LISTEN service.
pub struct Listener {
    /// Where to connect (the direct URL when the pool goes through a pooler), resolved
    /// again at each reconnect so a rotated password file is read.
    spec: db::Spec,
    /// Connect timeout, also used for the health query.
    connect_timeout: Duration,
    /// How often the connection is checked with `select 1`.
    health_interval: Duration,
    /// Loops to wake.
    wakeups: Wakeups,
    /// `true` while LISTEN is active (readiness).
    ready: watch::Sender<bool>,
    /// Reports connects and losses.
    events: Events,
}

impl Listener {
    /// A listener on `database.listen_url()` (with its password file), checked every
    /// `worker.poll_interval`.
    pub fn new(cfg: &Config, wakeups: &Wakeups, events: &Events) -> Self {
        Self {
            spec: db::Spec::listen(&cfg.database),
            connect_timeout: cfg.database.connect_timeout,
            health_interval: cfg.worker.poll_interval,
            wakeups: wakeups.clone(),
            ready: watch::Sender::new(false),
            events: events.clone(),
        }
    }

    /// `true` while LISTEN is active (the daemon's readiness follows it).
    pub fn listening(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Listens until `shutdown.soft`, reconnecting with capped exponential backoff; never
    /// fails (a lost connection is made again).
    pub async fn run(self, shutdown: Shutdown) -> Result<(), Infallible> {
        let cancel = shutdown.soft;
        tracing::debug!("listener started");
        let mut reconnects = 0u64;
        let mut backoff = Duration::from_millis(100);
        while !cancel.is_cancelled() {
            match self.session(&cancel, reconnects).await {
                Ok(()) => break,
                Err(reason) => {
                    // A connection that got as far as LISTEN was a good one: this loss
                    // starts a new outage, so the backoff starts over. Without this it
                    // only ever grew, and after a few outages in a daemon's life every
                    // reconnect waited the full 10 s.
                    if self.ready.send_replace(false) {
                        backoff = Duration::from_millis(100);
                    }
                    if cancel.is_cancelled() {
                        break;
                    }
                    tracing::warn!(reason = %reason, retry_in_ms = backoff.as_millis() as u64, "listener connection lost; reconnecting");
                    let _ = self.events.send(Event::ListenerLost { reason });
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    reconnects += 1;
                }
            }
        }
        self.ready.send_replace(false);
        tracing::debug!("listener stopped");
        Ok(())
    }

    /// One connection's life: connect, LISTEN, wake everyone, forward notifications.
    /// Returns `Ok` when cancelled, `Err(reason)` when the connection is lost.
    async fn session(&self, cancel: &CancellationToken, reconnects: u64) -> Result<(), String> {
        let endpoint = self.spec.resolve().map_err(|e| e.to_string())?;
        let (client, mut connection) = endpoint.connect_raw().await.map_err(|e| e.to_string())?;
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(msg) = messages.next().await {
                match msg {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().to_owned()).is_err() {
                            return Ok(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(db::describe(&e)),
                }
            }
            Ok(())
        });
        let result = self.listen(&client, &mut rx, cancel, reconnects).await;
        drop(client);
        driver.abort();
        result
    }

    async fn listen(
        &self,
        client: &tokio_postgres::Client,
        rx: &mut mpsc::UnboundedReceiver<String>,
        cancel: &CancellationToken,
        reconnects: u64,
    ) -> Result<(), String> {
        tokio::time::timeout(self.connect_timeout, client.batch_execute("LISTEN postpub"))
            .await
            .map_err(|_| "LISTEN timed out".to_owned())?
            .map_err(|e| format!("LISTEN failed: {}", db::describe(&e)))?;
        self.ready.send_replace(true);
        self.wakeups.all();
        let _ = self.events.send(Event::ListenerConnected { reconnects });
        tracing::info!(channel = CHANNEL, reconnects, "listening for notifications");
        let mut health = tokio::time::interval(self.health_interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        health.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                n = rx.recv() => match n {
                    Some(payload) => {
                        self.wakeups.payload(&payload);
                        // Drain what is queued: one wake-up covers them all.
                        while let Ok(p) = rx.try_recv() {
                            self.wakeups.payload(&p);
                        }
                    }
                    None => return Err("the connection closed".to_owned()),
                },
                _ = health.tick() => {
                    match tokio::time::timeout(self.connect_timeout, client.simple_query("select 1")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(format!("health check failed: {}", db::describe(&e))),
                        Err(_) => return Err(format!("health check got no answer within {}", humantime::format_duration(self.connect_timeout))),
                    }
                }
            }
        }
    }
}
