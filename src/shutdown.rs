//! Signals: SIGTERM/SIGINT start a graceful shutdown (a second one forces it); SIGHUP asks
//! for a configuration reload. One root token is cancelled; services watch it.

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The tokens a daemon shuts down with.
#[derive(Clone, Default)]
pub struct Shutdown {
    /// Stop claiming; let in-flight work finish within `shutdown_timeout`.
    pub soft: CancellationToken,
    /// Stop in-flight work now and release it.
    pub hard: CancellationToken,
}

impl Shutdown {
    /// Fresh, uncancelled tokens.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Installs the signal handlers. Returns the task reading them and a channel that counts
/// SIGHUPs (a reload is wanted whenever it changes).
pub fn install(shutdown: Shutdown) -> std::io::Result<(JoinHandle<()>, watch::Receiver<u64>)> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let (reload_tx, reload_rx) = watch::channel(0u64);
    let task = tokio::spawn(async move {
        while let Some(sig) = signals.next().await {
            match sig {
                SIGHUP => {
                    tracing::info!("SIGHUP received; reloading configuration");
                    reload_tx.send_modify(|n| *n += 1);
                }
                _ if shutdown.soft.is_cancelled() => {
                    tracing::warn!(
                        signal = sig,
                        "second stop signal; releasing in-flight work now"
                    );
                    shutdown.hard.cancel();
                }
                _ => {
                    tracing::info!(
                        signal = sig,
                        "stop signal received; finishing in-flight work"
                    );
                    shutdown.soft.cancel();
                }
            }
        }
    });
    Ok((task, reload_rx))
}
