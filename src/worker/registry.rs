//! What this daemon holds: the versions in flight (shared by the claim loop, the finisher
//! and the renewer) and the outcomes on their way to the finisher.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::claim::Outcome;

/// One claimed version this daemon is working on.
pub(super) struct InFlight {
    pub(super) token: i64,
    pub(super) document: String,
    /// Cancelled when the lease is lost or on hard shutdown.
    pub(super) cancel: CancellationToken,
}

/// Versions held by this daemon, by id.
#[derive(Clone, Default)]
pub(super) struct Registry(Arc<Mutex<HashMap<i64, InFlight>>>);

impl Registry {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<i64, InFlight>> {
        // A panic while holding this lock would be a bug elsewhere; the map itself is
        // still consistent (single inserts/removes), so keep going with it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An outcome on its way to the finisher, with the slot it frees once recorded.
pub(super) struct Done {
    pub(super) id: i64,
    pub(super) token: i64,
    pub(super) document: String,
    pub(super) outcome: Outcome,
    pub(super) _slot: OwnedSemaphorePermit,
}
