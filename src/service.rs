//! What the daemon hands every service it starts: the work pool, where it points (for
//! messages), who this daemon is, and where to report. One value instead of four
//! arguments to every constructor.

use deadpool_postgres::Pool;

use crate::event::Events;

/// The parts every service shares; cheap to clone.
#[derive(Clone)]
pub struct Base {
    /// Work pool.
    pub pool: Pool,
    /// `host:port/db` of the pool, for messages.
    pub target: String,
    /// This daemon's name in leases and the audit trail (`daemon::actor_id`).
    pub actor: String,
    /// Where services report what happened (tests wait on it; metrics count it).
    pub events: Events,
}
