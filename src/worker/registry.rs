//! What this daemon holds: the versions in flight (shared by the claim loop, the finisher
//! and the renewer) and the outcomes on their way to the finisher.

use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxHashMap;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::claim::Outcome;

/// One claimed version this daemon is working on.
pub(super) struct InFlight {
    pub(super) token: i64,
    pub(super) document: String,
    /// Cancelled when the lease is lost or on hard shutdown; none for a version finished
    /// as it is claimed (a tombstone, a pipeline of no-ops), which has nothing to stop.
    pub(super) cancel: Option<CancellationToken>,
}

/// Versions held by this daemon, by id. Every claimed version goes in and out once, so
/// the map hashes with FxHash: SipHash was a tenth of the daemon's CPU in a drain, and the
/// keys are the database's ids, not input an attacker chooses.
#[derive(Clone, Default)]
pub(super) struct Registry(Arc<Mutex<FxHashMap<i64, InFlight>>>);

impl Registry {
    pub(super) fn lock(&self) -> MutexGuard<'_, FxHashMap<i64, InFlight>> {
        // A panic while holding this lock would be a bug elsewhere; the map itself is
        // still consistent (single inserts/removes), so keep going with it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An outcome on its way to the finisher, with the slot it frees once recorded.
pub(super) struct Done {
    pub(super) id: i64,
    pub(super) token: i64,
    /// How many versions the claim with this token took.
    pub(super) claim_size: usize,
    pub(super) document: String,
    pub(super) version: i32,
    pub(super) outcome: Outcome,
    pub(super) _slot: OwnedSemaphorePermit,
}
