//! What the daemon's services report as they work, on one broadcast channel: tests wait
//! on these instead of sleeping, and metrics count them. Sending never blocks; a receiver
//! that falls behind loses the oldest events, never the daemon's progress.

use crate::db::State;

/// Something a service did.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The LISTEN connection is (again) active; a rescan follows.
    ListenerConnected {
        /// 0 on the first connection, then counts reconnects.
        reconnects: u64,
    },
    /// The LISTEN connection was lost.
    ListenerLost {
        /// Why.
        reason: String,
    },
    /// A version was claimed.
    Claimed {
        /// Version id.
        version_id: i64,
        /// Document name.
        document: String,
        /// Claims so far, this one included.
        attempt: i32,
        /// Seconds from the version's creation to this claim.
        wait_s: f64,
    },
    /// A step ran.
    StepRan {
        /// Step name.
        step: &'static str,
        /// How long it took.
        seconds: f64,
    },
    /// A claimed version's outcome was recorded.
    Finished {
        /// Version id.
        version_id: i64,
        /// Document name.
        document: String,
        /// Its new state.
        state: State,
    },
    /// A claimed version turned out to be someone else's (lease expired): nothing written.
    LeaseLost {
        /// Version id.
        version_id: i64,
        /// Document name.
        document: String,
    },
    /// An expired lease was taken back.
    Rescued {
        /// Version id.
        version_id: i64,
        /// Document name.
        document: String,
    },
    /// A sink acknowledged an outbox event (and the relay recorded it).
    Delivered {
        /// `postpub.outbox.event_id`.
        event_id: uuid::Uuid,
        /// Document name.
        document: String,
        /// The sink's name.
        sink: String,
        /// The sink already had it (JetStream's duplicate detection).
        duplicate: bool,
    },
    /// A delivery failed transiently; it is retried after a backoff.
    DeliveryFailed {
        /// `postpub.outbox.event_id`.
        event_id: uuid::Uuid,
        /// Document name.
        document: String,
        /// The sink's name.
        sink: String,
        /// Tries of this event at this sink, this one included.
        attempt: i32,
        /// What went wrong.
        error: String,
        /// Seconds until the next try.
        retry_in_s: f64,
    },
    /// A sink refused an event permanently: it is parked until an operator requeues it.
    Parked {
        /// `postpub.outbox.event_id`.
        event_id: uuid::Uuid,
        /// Document name.
        document: String,
        /// The sink's name.
        sink: String,
        /// The sink's refusal.
        reason: String,
    },
}

/// The sending side every service holds.
pub type Events = tokio::sync::broadcast::Sender<Event>;

/// A channel big enough that tests and metrics keep up under load.
pub fn channel() -> Events {
    tokio::sync::broadcast::channel(4096).0
}
