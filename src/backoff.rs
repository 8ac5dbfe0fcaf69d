//! Retry delays: exponential backoff with jitter, shared by the worker (failed versions)
//! and the outbox relay (failed deliveries). A leaf: it knows no other module of ours, so
//! both can use it without knowing each other.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Exponential backoff bounds: `initial * 2^(attempt-1)`, capped at `max`, with jitter.
/// `worker.backoff` and `outbox.backoff` in the configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// Delay after the first transient failure.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Longest delay.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(600),
        }
    }
}

impl BackoffConfig {
    /// Delay before retry number `attempt` (1-based), with fresh jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        retry_delay(attempt, self, rand::random::<f64>())
    }
}

/// Delay before retry number `attempt` (1-based): `initial * 2^(attempt-1)`, capped at
/// `max`, then scaled by a jitter factor in [0.5, 1.0) so that versions failing together
/// do not retry together. `unit` is a uniform random number in [0, 1).
pub fn retry_delay(attempt: u32, backoff: &BackoffConfig, unit: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let base = backoff
        .initial
        .checked_mul(1u32 << exp)
        .unwrap_or(backoff.max)
        .min(backoff.max);
    base.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// The pause after a failed database round trip of a service loop: 100 ms, doubling up to
/// 5 s, back to 100 ms after a success.
#[derive(Debug)]
pub struct DbRetry {
    next: Duration,
}

impl Default for DbRetry {
    fn default() -> Self {
        Self {
            next: DB_RETRY_FIRST,
        }
    }
}

const DB_RETRY_FIRST: Duration = Duration::from_millis(100);
const DB_RETRY_MAX: Duration = Duration::from_secs(5);

impl DbRetry {
    /// A success: the next failure waits the shortest pause again.
    pub fn reset(&mut self) {
        self.next = DB_RETRY_FIRST;
    }

    /// The pause the next [`DbRetry::wait`] takes.
    pub fn pause(&self) -> Duration {
        self.next
    }

    /// Waits the pause (doubling the next one); `false` when `stop` came first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let pause = self.next;
        self.next = (self.next * 2).min(DB_RETRY_MAX);
        tokio::select! {
            biased;
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(initial_ms: u64, max_ms: u64) -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_millis(max_ms),
        }
    }

    #[test]
    fn retry_delays_double_up_to_the_maximum() {
        let b = backoff(100, 1000);
        let full = |n| retry_delay(n, &b, 0.999_999_9);
        assert!(full(1) <= Duration::from_millis(100) && full(1) > Duration::from_millis(99));
        assert!(full(2) > Duration::from_millis(199));
        assert!(full(4) > Duration::from_millis(799));
        assert_eq!(retry_delay(5, &b, 1.0), Duration::from_millis(1000));
        assert_eq!(retry_delay(60, &b, 1.0), Duration::from_millis(1000));
    }

    #[test]
    fn jitter_keeps_at_least_half_the_delay() {
        let b = backoff(1000, 600_000);
        assert_eq!(retry_delay(1, &b, 0.0), Duration::from_millis(500));
        for u in [0.0, 0.25, 0.5, 0.99] {
            let d = retry_delay(3, &b, u);
            assert!(d >= Duration::from_millis(2000) && d <= Duration::from_millis(4000));
        }
    }
}
