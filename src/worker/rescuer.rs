//! The rescuer: a maintenance loop that takes back versions whose lease expired (their
//! daemon died or stalled) so that any running daemon can claim them again.
//!
//! It runs in every daemon at least every `min(poll_interval, lease / 2)`; rows another
//! transaction holds are skipped, so rescuers never wait for each other or for a finish.

use std::convert::Infallible;
use std::time::Duration;

use super::claim;
use crate::config::WorkerConfig;
use crate::db;
use crate::event::Event;
use crate::service::Base;
use crate::shutdown::Shutdown;

/// The rescue loop.
pub struct Rescuer {
    base: Base,
    /// How often to look.
    interval: Duration,
    /// A version rescued after this many claims is errored instead of retried.
    max_attempts: u32,
}

impl Rescuer {
    /// A rescuer for `[worker]`: every `rescue_interval()`, erroring versions rescued
    /// `max_attempts` times.
    pub fn new(cfg: &WorkerConfig, base: &Base) -> Rescuer {
        Rescuer {
            base: base.clone(),
            interval: cfg.rescue_interval(),
            max_attempts: cfg.max_attempts,
        }
    }

    /// Runs until `shutdown.soft`; never fails (a failed rescue is tried again next time).
    pub async fn run(self, shutdown: Shutdown) -> Result<(), Infallible> {
        let cancel = shutdown.soft;
        tracing::debug!(
            interval_ms = self.interval.as_millis() as u64,
            "rescuer started"
        );
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            // A rescue the server does not answer (stalled) must not hold up the stop;
            // abandoning it is safe: it is one transaction, committed or not.
            let rescued = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                r = self.rescue() => r,
            };
            match rescued {
                Ok(rescued) => {
                    for r in rescued {
                        tracing::warn!(
                            version_id = r.id,
                            document = %r.document,
                            held_by = r.held_by.as_deref().unwrap_or("?"),
                            state = %r.state,
                            "lease expired; version taken back"
                        );
                        let _ = self.base.events.send(Event::Rescued {
                            version_id: r.id,
                            document: r.document,
                        });
                    }
                }
                Err(e) => {
                    db::retire_sessions_after(&e);
                    tracing::warn!(error = %e, "rescuing expired leases failed");
                }
            }
        }
        tracing::debug!("rescuer stopped");
        Ok(())
    }

    async fn rescue(&self) -> Result<Vec<claim::Rescued>, db::Error> {
        let client = db::get(&self.base.pool, &self.base.target).await?;
        claim::rescue_expired(&client, &self.base.actor, self.max_attempts).await
    }
}
