//! What the broker-sink tests (tests/outbox_kafka.rs, tests/outbox_amqp.rs) share: fast relay
//! settings, the outbox's state, and the check that a broker got every event once, each
//! document's in version order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use postpub::config::{Config, SinkConfig};
use tokio_postgres::Client;

use super::{wait_until, Daemon, TestDb};

/// Test settings with fast relay retries and the given sinks.
pub fn config(db: &TestDb, sinks: Vec<SinkConfig>) -> Config {
    let mut cfg = db.config();
    cfg.worker.poll_interval = Duration::from_millis(200);
    cfg.outbox.backoff.initial = Duration::from_millis(50);
    cfg.outbox.backoff.max = Duration::from_millis(400);
    cfg.outbox.sinks = sinks;
    cfg.validate().expect("test config is valid");
    cfg
}

pub async fn undelivered(c: &Client) -> i64 {
    c.query_one(
        "select count(*) from postpub.outbox where delivered_at is null",
        &[],
    )
    .await
    .expect("count undelivered")
    .get(0)
}

/// Waits until every event of the outbox was delivered.
pub async fn all_delivered(c: &Client, within: Duration, what: &str) {
    wait_until(within, what, || async { undelivered(c).await == 0 }).await
}

/// event_id -> (document, version) of every outbox event.
pub async fn events_by_id(c: &Client) -> HashMap<String, (String, i64)> {
    c.query(
        "select o.event_id::text, o.document, v.version::bigint
           from postpub.outbox o join postpub.versions v on v.id = o.version_id",
        &[],
    )
    .await
    .expect("outbox events")
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2))))
    .collect()
}

/// Checks that `ids` (in arrival order) holds every event exactly once, each document's in
/// version order.
pub fn assert_once_in_order(what: &str, ids: &[String], events: &HashMap<String, (String, i64)>) {
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{what}: an event arrived twice");
    assert_eq!(
        ids.len(),
        events.len(),
        "{what}: message count != event count"
    );
    let mut last: HashMap<&str, i64> = HashMap::new();
    for id in ids {
        let (doc, version) = events
            .get(id)
            .unwrap_or_else(|| panic!("{what}: unknown event id {id}"));
        let prev = last.insert(doc.as_str(), *version);
        assert!(
            prev.is_none_or(|p| p < *version),
            "{what}: {doc} v{version} arrived after v{prev:?}"
        );
    }
}

/// State of the only event: (delivered, parked, last error of its delivery).
pub async fn only_event(c: &Client) -> (bool, bool, String) {
    let row = c
        .query_one(
            "select o.delivered_at is not null, o.parked_at is not null,
                    coalesce((select d.last_error from postpub.outbox_deliveries d
                               where d.outbox_id = o.id), '')
               from postpub.outbox o",
            &[],
        )
        .await
        .expect("the event");
    (row.get(0), row.get(1), row.get(2))
}

/// Runs a daemon with `sink` until it has recorded a failed delivery of the only event;
/// returns (parked, reason) after checking that nothing was delivered.
pub async fn refusal_with(db: &TestDb, c: &Client, sink: SinkConfig) -> (bool, String) {
    let d = Daemon::start(config(db, vec![sink])).await;
    wait_until(Duration::from_secs(20), "a refusal recorded", || async {
        !only_event(c).await.2.is_empty()
    })
    .await;
    d.stop().await;
    let (delivered, parked, error) = only_event(c).await;
    assert!(!delivered, "delivered although refused: {error}");
    (parked, error)
}

/// Runs a daemon with `sink` until the only event is delivered.
pub async fn delivery_with(db: &TestDb, c: &Client, sink: SinkConfig) {
    let d = Daemon::start(config(db, vec![sink])).await;
    wait_until(Duration::from_secs(20), "delivered", || async {
        only_event(c).await.0
    })
    .await;
    d.stop().await;
}

/// How many events were tried although an earlier one of their document is undelivered
/// (the relay must try only each document's head).
pub async fn tried_beyond_head(c: &Client) -> i64 {
    c.query_one(
        "select count(*) from postpub.outbox o where o.attempts > 0 and exists
           (select 1 from postpub.outbox p where p.document = o.document and p.id < o.id
              and p.delivered_at is null)",
        &[],
    )
    .await
    .expect("order")
    .get(0)
}

/// An outage while idle: once a warm-up event is through, `proxy` (between the relay and
/// the broker) is cut; 300 events over 10 documents are published and wait (a failure is
/// recorded, only each document's head is tried); the line is restored and every event is
/// delivered.
pub async fn idle_outage(db: &TestDb, c: &Client, d: &mut Daemon, proxy: &super::proxy::TcpProxy) {
    db.publish(c, "warm-up", "<p>w</p>", None).await;
    wait_until(Duration::from_secs(20), "warm-up delivered", || async {
        undelivered(c).await == 0
    })
    .await;
    proxy.cut();
    c.batch_execute(
        "select count(postpub.publish('outage-' || (i % 10), '<p>' || i || '</p>'))
           from generate_series(1, 300) i",
    )
    .await
    .expect("publish during the outage");
    d.wait_event(Duration::from_secs(20), |e| {
        matches!(e, postpub::event::Event::DeliveryFailed { .. })
    })
    .await;
    assert!(undelivered(c).await >= 300, "nothing delivered while cut");
    assert_eq!(tried_beyond_head(c).await, 0, "only heads are tried");
    proxy.restore().await;
    wait_until(
        Duration::from_secs(60),
        "delivered after the outage",
        || async { undelivered(c).await == 0 },
    )
    .await;
}
