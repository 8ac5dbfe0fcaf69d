//! The systemd side of `postpub run` (`Type=notify`): `READY=1` once the daemon is ready
//! (database checked, schema version right, LISTEN active), `WATCHDOG=1` at half of
//! `WATCHDOG_USEC` while the daemon is healthy, `RELOADING=1` then `READY=1` around a
//! configuration reload, `STOPPING=1` when a stop signal arrives.
//!
//! Every function is a no-op without `NOTIFY_SOCKET`, so the daemon runs the same outside
//! systemd. What "ready" and "healthy" mean is decided by the daemon (its `ready` watch,
//! which `daemon::run` keeps); this module only speaks the protocol.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long the daemon may be unready (LISTEN connection down: database unreachable or
/// restarting) before the watchdog pings stop and systemd restarts the service. Short
/// outages are ridden out by the listener's own reconnects.
pub const UNHEALTHY_GRACE: Duration = Duration::from_secs(60);

fn send(states: &[NotifyState<'_>]) {
    // `false`: keep NOTIFY_SOCKET in the environment; removing variables from a running
    // multi-threaded process is not sound, and NotifyAccess=main ignores child processes.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// `READY=1` with a status line: startup finished, or a reload was applied.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1`: a configuration reload started. [`reloaded`] must follow.
pub fn reloading() {
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("reloading the configuration"),
    ];
    // systemd (Type=notify-reload, and newer versions generally) wants the reload's start
    // time; without a monotonic clock the message is still valid.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// `READY=1` after a reload: call it once the new configuration is in force (or was
/// refused and the old one kept).
pub fn reloaded() {
    ready("configuration reloaded; processing versions");
}

/// `STOPPING=1`: a stop signal arrived; in-flight work is being finished.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing in-flight versions"),
    ]);
}

/// `STATUS=…`, shown by `systemctl status`.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// `WATCHDOG=1`.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC` when systemd asks for it for
/// this process (`WATCHDOG_PID`), `None` otherwise.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec) / 2)
    } else {
        None
    }
}

/// The notifier loop: follows the daemon's readiness and the stop signal. Reloads are
/// announced by the daemon's reloader itself ([`reloading`], [`reloaded`]), around the
/// actual reload.
pub struct Notifier {
    /// The daemon's readiness (true while the database is reachable and LISTEN active).
    ready: watch::Receiver<bool>,
    /// The stop signal (the daemon's soft shutdown token).
    stop: CancellationToken,
    /// Ping interval ([`watchdog_interval`]); `None` sends no pings.
    watchdog: Option<Duration>,
    /// How long the daemon may be unready before pings stop ([`UNHEALTHY_GRACE`]).
    grace: Duration,
}

impl Notifier {
    /// A notifier following `ready` until `stop`, pinging as `WATCHDOG_USEC` asks.
    pub fn new(ready: watch::Receiver<bool>, stop: CancellationToken) -> Notifier {
        Notifier {
            ready,
            stop,
            watchdog: watchdog_interval(),
            grace: UNHEALTHY_GRACE,
        }
    }

    /// Runs until `done` is cancelled (after the daemon returned). Pings continue while
    /// the daemon drains after a stop signal: the stop is bounded by `TimeoutStopSec`.
    pub async fn run(mut self, done: CancellationToken) {
        tracing::debug!(watchdog_ms = ?self.watchdog.map(|d| d.as_millis()), "notifier started");
        let mut tick = tokio::time::interval(self.watchdog.unwrap_or(Duration::from_secs(3600)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut announced = false;
        let mut draining = false;
        let mut ready_open = true;
        let mut last_ready = Instant::now();
        let mut was_ready = false;
        loop {
            tokio::select! {
                biased;
                _ = done.cancelled() => break,
                _ = self.stop.cancelled(), if !draining => {
                    draining = true;
                    stopping();
                }
                r = self.ready.changed(), if ready_open => {
                    if r.is_err() {
                        // The daemon returned and dropped the sender; `done` follows.
                        ready_open = false;
                        continue;
                    }
                    let is_ready = *self.ready.borrow_and_update();
                    if is_ready {
                        last_ready = Instant::now();
                    }
                    if draining || is_ready == was_ready {
                        continue;
                    }
                    was_ready = is_ready;
                    if is_ready && !announced {
                        announced = true;
                        ready("listening; processing versions");
                    } else if is_ready {
                        status("listening again; processing versions");
                    } else {
                        status("database connection lost; reconnecting");
                    }
                }
                _ = tick.tick(), if self.watchdog.is_some() => {
                    if *self.ready.borrow() {
                        last_ready = Instant::now();
                    }
                    // Nothing before READY=1: systemd arms the watchdog only then.
                    if !announced && !draining {
                        continue;
                    }
                    if draining || last_ready.elapsed() < self.grace {
                        watchdog();
                    } else {
                        tracing::warn!(
                            unready_s = last_ready.elapsed().as_secs(),
                            "not ready for too long; withholding the systemd watchdog ping"
                        );
                    }
                }
            }
        }
        tracing::debug!("notifier stopped");
    }
}
