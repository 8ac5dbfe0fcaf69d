//! What the console shows live, fed by the daemon's own [`Event`] stream (the one metrics
//! count): a per-minute history of outcomes for the charts, and the server-sent events of
//! `/console/live`. Nothing here queries the database: a hundred open pages cost a hundred
//! broadcast receivers, not a hundred pollers.
//!
//! Each stream sends at most one message per [`COALESCE`], listing the versions and
//! events that changed meanwhile (at most [`MAX_ITEMS`]), so a drain of thousands per
//! second stays a few small messages per second per page.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::db::State;
use crate::event::Event;

/// How long a stream gathers changes before it sends them.
pub const COALESCE: Duration = Duration::from_millis(500);

/// Changes per message, at most (the rest are counted, not listed).
pub const MAX_ITEMS: usize = 50;

/// Minutes of history kept for the charts.
pub const MINUTES: usize = 60;

/// Outcomes in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Minute {
    /// Minutes since the epoch.
    pub at: u64,
    /// Versions made current.
    pub current: u64,
    /// Versions errored.
    pub errored: u64,
    /// Outbox deliveries acknowledged.
    pub delivered: u64,
    /// Outbox events parked, and delivery attempts that failed.
    pub failed_deliveries: u64,
}

/// The last [`MINUTES`] minutes of outcomes this daemon saw.
#[derive(Default)]
pub struct History {
    minutes: Mutex<VecDeque<Minute>>,
}

fn now_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

impl History {
    /// Counts one event.
    pub fn observe(&self, e: &Event) {
        self.observe_at(e, now_minute());
    }

    fn observe_at(&self, e: &Event, minute: u64) {
        let mut m = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        if m.back().is_none_or(|b| b.at != minute) {
            m.push_back(Minute {
                at: minute,
                ..Minute::default()
            });
            while m.len() > MINUTES {
                m.pop_front();
            }
        }
        let Some(b) = m.back_mut() else { return };
        match e {
            Event::Finished {
                state: State::Current,
                ..
            } => b.current += 1,
            Event::Finished {
                state: State::Errored,
                ..
            } => b.errored += 1,
            Event::Delivered { .. } => b.delivered += 1,
            Event::Parked { .. } | Event::DeliveryFailed { .. } => b.failed_deliveries += 1,
            _ => {}
        }
    }

    /// One entry per minute of the last [`MINUTES`], oldest first, zeros included.
    pub fn series(&self) -> Vec<Minute> {
        self.series_at(now_minute())
    }

    fn series_at(&self, now: u64) -> Vec<Minute> {
        let m = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        (0..MINUTES as u64)
            .rev()
            .map(|back| {
                let at = now.saturating_sub(back);
                m.iter().find(|x| x.at == at).copied().unwrap_or(Minute {
                    at,
                    ..Minute::default()
                })
            })
            .collect()
    }

    /// Records events until cancelled.
    pub async fn record(&self, mut events: broadcast::Receiver<Event>, cancel: CancellationToken) {
        tracing::debug!("console history started");
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                e = events.recv() => match e {
                    Ok(e) => self.observe(&e),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        tracing::debug!("console history stopped");
    }
}

/// One change as the page shows it.
fn item(e: &Event) -> Option<serde_json::Value> {
    Some(match e {
        Event::Claimed {
            version_id,
            document,
            ..
        } => json!({"version_id": version_id, "document": document, "state": "processing"}),
        Event::Finished {
            version_id,
            document,
            state,
        } => json!({"version_id": version_id, "document": document, "state": state.as_str()}),
        Event::Rescued {
            version_id,
            document,
        } => json!({"version_id": version_id, "document": document, "state": "post-publication"}),
        Event::Delivered { document, sink, .. } => {
            json!({"document": document, "sink": sink, "state": "delivered"})
        }
        Event::Parked { document, sink, .. } => {
            json!({"document": document, "sink": sink, "state": "parked"})
        }
        _ => return None,
    })
}

/// The `/console/live` stream: `update` messages `{"items": [...], "more": N}`, until
/// `stop`.
pub fn stream(
    events: broadcast::Receiver<Event>,
    stop: CancellationToken,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let s = futures_util::stream::unfold((events, stop), |(rx, stop)| async move {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => None,
            m = next_message(rx) => m,
        };
        next.map(|(msg, rx)| (Ok(msg), (rx, stop)))
    });
    Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The next message: waits for a change, then gathers for [`COALESCE`]. `None` once the
/// daemon's event channel closed.
async fn next_message(
    mut rx: broadcast::Receiver<Event>,
) -> Option<(SseEvent, broadcast::Receiver<Event>)> {
    let mut items = Vec::new();
    let mut more = 0u64;
    let deadline = loop {
        match rx.recv().await {
            Ok(e) => {
                if let Some(i) = item(&e) {
                    items.push(i);
                    break tokio::time::Instant::now() + COALESCE;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                more += n;
                break tokio::time::Instant::now() + COALESCE;
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    };
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => break,
            Ok(Ok(e)) => match item(&e) {
                Some(i) if items.len() < MAX_ITEMS => items.push(i),
                Some(_) => more += 1,
                None => {}
            },
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => more += n,
            Ok(Err(broadcast::error::RecvError::Closed)) => break,
        }
    }
    let data = json!({"items": items, "more": more}).to_string();
    Some((SseEvent::default().event("update").data(data), rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_buckets_per_minute_and_keeps_an_hour() {
        let h = History::default();
        let done = |state| Event::Finished {
            version_id: 1,
            document: "d".into(),
            state,
        };
        h.observe_at(&done(State::Current), 100);
        h.observe_at(&done(State::Current), 100);
        h.observe_at(&done(State::Errored), 101);
        let s = h.series_at(101);
        assert_eq!(s.len(), MINUTES);
        assert_eq!(s[MINUTES - 1].errored, 1);
        assert_eq!(s[MINUTES - 2].current, 2);
        h.observe_at(&done(State::Current), 1000);
        assert_eq!(h.series_at(1000).iter().map(|m| m.current).sum::<u64>(), 1);
    }
}
