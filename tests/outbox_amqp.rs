//! The AMQP sink against the real rabbitmq-server on 127.0.0.1:5672 (started by `.ci/run`
//! when it is down; user guest, vhost `/`). Each test uses exchange and queue names of its
//! own and deletes them at the end. Outages are made by a TCP proxy between the relay and the
//! broker, cut and restored (the broker is shared and keeps what it confirmed; a private
//! rabbitmq-server takes ~20s to start here).

mod common;

use std::time::{Duration, Instant};

use common::proxy::TcpProxy;
use common::sinks::{
    assert_once_in_order, config, events_by_id, idle_outage, refusal_with, undelivered,
};
use common::{wait_until, Daemon, TestDb};
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use postpub::config::AmqpSinkConfig;
use postpub::config::SinkConfig;
use uuid::Uuid;

const BROKER: &str = "127.0.0.1:5672";
const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A channel on the shared broker; its absence is a failure that says what to do.
async fn channel() -> (Connection, Channel) {
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| {
            panic!("no rabbitmq-server at {BROKER} as guest ({e}): .ci/run starts it (service rabbitmq-server start)")
        });
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

/// An exchange and a queue of the test's own, deleted by [`Names::remove`].
struct Names {
    exchange: String,
    queue: String,
}

impl Names {
    fn new(what: &str) -> Names {
        let id = Uuid::new_v4().simple().to_string();
        Names {
            exchange: format!("postpub-test-{what}-{id}"),
            queue: format!("postpub-test-{what}-q-{id}"),
        }
    }

    /// A durable topic exchange; with `bind`, a queue bound to it with `#`.
    async fn declare(&self, ch: &Channel, bind: bool) {
        ch.exchange_declare(
            self.exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare exchange");
        if bind {
            self.bind(ch).await;
        }
    }

    async fn bind(&self, ch: &Channel) {
        ch.queue_declare(
            self.queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare queue");
        ch.queue_bind(
            self.queue.as_str().into(),
            self.exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    }

    async fn remove(&self, ch: &Channel) {
        let _ = ch
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = ch
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }

    fn sink(&self, url: &str) -> AmqpSinkConfig {
        AmqpSinkConfig {
            url: url.to_owned(),
            exchange: self.exchange.clone(),
            queue: self.queue.clone(),
            ack_timeout: Duration::from_secs(2),
            ..AmqpSinkConfig::default()
        }
    }
}

struct Got {
    message_id: String,
    routing_key: String,
    persistent: bool,
    headers: FieldTable,
    json: serde_json::Value,
}

/// Takes up to `want` messages from `queue` (waiting up to 10s for them).
async fn take(ch: &Channel, queue: &str, want: usize) -> Vec<Got> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < want && Instant::now() < deadline {
        let m = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        let Some(m) = m else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let d = m.delivery;
        out.push(Got {
            message_id: d
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            routing_key: d.routing_key.to_string(),
            persistent: *d.properties.delivery_mode() == Some(2),
            headers: d.properties.headers().clone().unwrap_or_default(),
            json: serde_json::from_slice(&d.data).expect("JSON body"),
        });
    }
    out
}

fn header(h: &FieldTable, key: &str) -> String {
    match h.inner().get(key) {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("header {key}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_rabbitmq_persistent_with_their_ids_in_order() {
    common::init_logs();
    let (_conn, ch) = channel().await;
    let names = Names::new("order");
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "select count(postpub.publish('doc-' || (i % 30), '<p>' || i || '</p>'))
           from generate_series(1, 1500) i",
    )
    .await
    .expect("publish 1500");
    let events = events_by_id(&c).await;

    // The sink declares the exchange and the queue itself.
    let mut sink = names.sink(URL);
    sink.declare = true;
    let t0 = Instant::now();
    let d = Daemon::start(config(&db, vec![SinkConfig::Amqp(sink)])).await;
    wait_until(Duration::from_secs(60), "every event delivered", || async {
        undelivered(&c).await == 0
    })
    .await;
    let took = t0.elapsed();
    eprintln!(
        "relay: 1500 events to RabbitMQ in {took:?} ({:.0} events/s, {} build, incl. startup)",
        1500.0 / took.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    d.stop().await;

    let got = take(&ch, &names.queue, events.len() + 1).await;
    names.remove(&ch).await;
    let ids: Vec<String> = got.iter().map(|g| g.message_id.clone()).collect();
    assert_once_in_order("queue", &ids, &events);
    for g in &got {
        let (doc, _) = &events[&g.message_id];
        assert!(g.persistent, "delivery_mode 2");
        assert_eq!(g.routing_key, format!("published.{doc}"));
        assert_eq!(header(&g.headers, "kind"), "published");
        assert_eq!(&header(&g.headers, "document"), doc);
        assert_eq!(g.json["event_id"], g.message_id.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_delays_events_but_loses_and_duplicates_none() {
    common::init_logs();
    let (_conn, ch) = channel().await;
    let names = Names::new("outage");
    names.declare(&ch, true).await;
    let proxy = TcpProxy::start(BROKER.parse().expect("addr")).await;
    let db = TestDb::new().await;
    let c = db.client().await;
    let url = format!("amqp://guest:guest@{}/%2f", proxy.addr());
    let mut d = Daemon::start(config(&db, vec![SinkConfig::Amqp(names.sink(&url))])).await;
    idle_outage(&db, &c, &mut d, &proxy).await;
    d.stop().await;

    let events = events_by_id(&c).await;
    let got = take(&ch, &names.queue, events.len() + 1).await;
    names.remove(&ch).await;
    let ids: Vec<String> = got.into_iter().map(|g| g.message_id).collect();
    assert_once_in_order("queue after the outage", &ids, &events);
}

/// `mandatory`: an exchange without a bound queue returns the message; that is a failure
/// (retried, in case the binding comes), not a silent ack. Once bound, it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_event_is_retried_until_a_queue_is_bound() {
    let (_conn, ch) = channel().await;
    let names = Names::new("unroutable");
    names.declare(&ch, false).await;
    let db = TestDb::new().await;
    let c = db.client().await;
    db.publish(&c, "lonely", "<p>l</p>", None).await;
    let (parked, reason) = refusal_with(&db, &c, SinkConfig::Amqp(names.sink(URL))).await;
    assert!(!parked, "retried, not parked: {reason}");
    assert!(reason.contains("unroutable"), "{reason}");

    names.bind(&ch).await;
    let d = Daemon::start(config(&db, vec![SinkConfig::Amqp(names.sink(URL))])).await;
    wait_until(Duration::from_secs(20), "delivered once bound", || async {
        undelivered(&c).await == 0
    })
    .await;
    d.stop().await;
    assert_eq!(take(&ch, &names.queue, 1).await.len(), 1);
    names.remove(&ch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_give_one_clear_line() {
    let db = TestDb::new().await;
    let c = db.client().await;
    db.publish(&c, "secret", "<p>s</p>", None).await;
    let names = Names::new("creds");
    let sink = names.sink("amqp://guest:not-the-password@127.0.0.1:5672/%2f");
    let (parked, reason) = refusal_with(&db, &c, SinkConfig::Amqp(sink)).await;
    assert!(!parked, "credentials can be fixed: retried, not parked");
    assert!(!reason.contains('\n'), "one line: {reason}");
    assert!(
        !reason.contains("not-the-password"),
        "no password: {reason}"
    );
    assert!(reason.contains("ACCESS_REFUSED"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_max_message_bytes_is_parked_with_the_reason() {
    let (_conn, ch) = channel().await;
    let names = Names::new("large");
    names.declare(&ch, true).await;
    let db = TestDb::new().await;
    let c = db.client().await;
    db.publish(&c, "big", &format!("<p>{}</p>", "x".repeat(5000)), None)
        .await;
    let mut sink = names.sink(URL);
    sink.include_body = true;
    sink.max_message_bytes = 2000;
    let (parked, reason) = refusal_with(&db, &c, SinkConfig::Amqp(sink)).await;
    names.remove(&ch).await;
    assert!(parked, "parked, not retried: {reason}");
    assert!(reason.contains("max_message_bytes = 2000"), "{reason}");
}
