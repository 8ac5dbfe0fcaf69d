//! The renewer: extends every lease this daemon holds each `lease / 3`, and cancels the
//! work of a version whose lease was not renewed (another daemon rescued it; its finish
//! would be fenced anyway).

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::claim;
use super::registry::Registry;
use crate::config::Config;
use crate::db;
use crate::service::Base;

/// Keeps held leases alive.
pub(super) struct Renewer {
    base: Base,
    /// For `worker.lease`, which a reload may change.
    config: watch::Receiver<Arc<Config>>,
    registry: Registry,
}

impl Renewer {
    pub(super) fn new(
        base: &Base,
        config: &watch::Receiver<Arc<Config>>,
        registry: &Registry,
    ) -> Renewer {
        Renewer {
            base: base.clone(),
            config: config.clone(),
            registry: registry.clone(),
        }
    }

    /// Renews until `stop` (cancelled by the worker once nothing is held any more).
    pub(super) async fn run(self, stop: CancellationToken) {
        loop {
            let (lease, every) = {
                let cfg = self.config.borrow();
                (cfg.worker.lease, cfg.worker.renew_interval())
            };
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let held: Vec<(i64, i64)> = self
                .registry
                .lock()
                .iter()
                .map(|(id, f)| (*id, f.token))
                .collect();
            if held.is_empty() {
                continue;
            }
            let renewal = async {
                let client = db::get(&self.base.pool, &self.base.target).await?;
                claim::renew_leases(&client, &held, lease).await
            };
            // A renewal the server does not answer (stalled) must not hold up the stop.
            let renewed = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                r = renewal => r,
            };
            match renewed {
                Ok(renewed) => {
                    let registry = self.registry.lock();
                    for (id, _) in held.iter().filter(|(id, _)| !renewed.contains(id)) {
                        // Either finished a moment ago (then this is a no-op) or rescued
                        // by another daemon: stop working on it; the finish is fenced.
                        if let Some(f) = registry.get(id) {
                            tracing::debug!(version_id = id, document = %f.document, "lease not renewed; cancelling its work");
                            if let Some(cancel) = &f.cancel {
                                cancel.cancel();
                            }
                        }
                    }
                }
                Err(e) => {
                    db::retire_sessions_after(&e);
                    tracing::warn!(error = %e, held = held.len(), "renewing leases failed");
                }
            }
        }
    }
}
