//! The outbox relay against a real nats-server (JetStream, one private server per test on a
//! free port with its own store) and a real HTTP receiver: order, outages, crashes,
//! refusals, several relays, several sinks, retention.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::ops::free_port;
use common::sinks::{
    all_delivered, assert_once_in_order as assert_complete_and_ordered, config, events_by_id,
    undelivered,
};
use common::{wait_until, Daemon, TestDb};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use postpub::config::{Config, NatsSinkConfig, SinkConfig, WebhookSinkConfig};
use postpub::event::{self, Event};
use postpub::outbox::Relay;
use postpub::shutdown::Shutdown;
use tokio::sync::Notify;
use tokio_postgres::Client;
use uuid::Uuid;

// ---------------------------------------------------------------- nats-server

/// A private nats-server with JetStream; stopped and its store removed when dropped.
struct NatsServer {
    port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl NatsServer {
    async fn start() -> NatsServer {
        let mut s = NatsServer::not_started();
        s.restart().await;
        s
    }

    /// A server with `conf` (nats-server configuration syntax) added to its settings.
    async fn start_with(conf: &str) -> NatsServer {
        let mut s = NatsServer::not_started();
        std::fs::write(s.dir.join("server.conf"), conf).expect("write server.conf");
        s.restart().await;
        s
    }

    /// A port and a store, no server yet (`restart` starts it).
    fn not_started() -> NatsServer {
        let dir = std::env::temp_dir().join(format!("postpub-nats-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("nats store dir");
        NatsServer {
            port: free_port(),
            dir,
            child: None,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port and store.
    async fn restart(&mut self) {
        let bin = [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "nats-server",
        ]
        .into_iter()
        .find(|b| !b.starts_with('/') || std::path::Path::new(b).exists())
        .unwrap_or("nats-server");
        let mut cmd = std::process::Command::new(bin);
        // Extra settings (authorization, tls) from `server.conf` when a test wrote one.
        let conf = self.dir.join("server.conf");
        if conf.exists() {
            cmd.arg("-c").arg(&conf);
        }
        let child = cmd
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (apt-get install nats-server): {e}"));
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_until(Duration::from_secs(10), "nats-server listening", || async {
            tokio::net::TcpStream::connect(&addr).await.is_ok()
        })
        .await;
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(self.url()).await.expect("connect nats");
        async_nats::jetstream::new(client)
    }

    /// The message ids (`Nats-Msg-Id`) of `stream`, in stream order.
    async fn msg_ids(&self, stream: &str) -> Vec<String> {
        let msgs = self.messages(stream).await;
        msgs.into_iter().map(|m| m.msg_id).collect()
    }

    /// Every message of `stream`, in stream order.
    async fn messages(&self, stream: &str) -> Vec<StreamMsg> {
        use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
        let js = self.jetstream().await;
        let mut s = js.get_stream(stream).await.expect("stream exists");
        let n = s.info().await.expect("stream info").state.messages as usize;
        let consumer = s
            .create_consumer(pull::Config {
                ack_policy: AckPolicy::None,
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .expect("consumer");
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let mut batch = consumer
                .batch()
                .max_messages(1000)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .expect("batch");
            while let Some(m) = batch.next().await {
                let m = m.expect("message");
                let id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default();
                let json: serde_json::Value =
                    serde_json::from_slice(&m.payload).expect("message is JSON");
                out.push(StreamMsg {
                    subject: m.subject.to_string(),
                    msg_id: id,
                    json,
                });
            }
        }
        out
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct StreamMsg {
    subject: String,
    msg_id: String,
    json: serde_json::Value,
}

// ---------------------------------------------------------------- webhook receiver

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    key: String,
    signature: Option<String>,
    raw: Bytes,
    json: serde_json::Value,
    status: u16,
    at: std::time::Instant,
}

#[derive(Default)]
struct HookState {
    requests: Mutex<Vec<Received>>,
    /// Status answered per document (default 200).
    status: Mutex<HashMap<String, u16>>,
    /// Status answered for every document unless `status` says otherwise.
    default_status: Mutex<u16>,
    /// `Retry-After` sent with every non-2xx answer, if any.
    retry_after: Mutex<Option<String>>,
}

/// An HTTP server that records every POST and answers what it is told to.
struct Hook {
    addr: SocketAddr,
    state: Arc<HookState>,
    task: tokio::task::JoinHandle<()>,
}

impl Hook {
    async fn start() -> Hook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(HookState::default());
        *state.default_status.lock().expect("lock") = 200;
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Hook { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn answer(&self, document: &str, status: u16) {
        self.state
            .status
            .lock()
            .expect("lock")
            .insert(document.to_owned(), status);
    }

    fn retry_after(&self, value: &str) {
        *self.state.retry_after.lock().expect("lock") = Some(value.to_owned());
    }

    fn answer_all(&self, status: u16) {
        *self.state.default_status.lock().expect("lock") = status;
    }

    fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// The requests it acknowledged (2xx).
    fn accepted(&self) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.status < 300)
            .collect()
    }

    /// Checks that it accepted every event of `events` once, each document's in order.
    fn assert_got_all(&self, what: &str, events: &HashMap<String, (String, i64)>) {
        let keys: Vec<String> = self.accepted().into_iter().map(|r| r.key).collect();
        assert_complete_and_ordered(what, &keys, events);
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    state: Arc<HookState>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let key = header("idempotency-key").unwrap_or_default();
    let signature = header("x-postpub-signature");
    let raw = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
    let document = json["document"].as_str().unwrap_or_default().to_owned();
    let status = state
        .status
        .lock()
        .expect("lock")
        .get(&document)
        .copied()
        .unwrap_or(*state.default_status.lock().expect("lock"));
    state.requests.lock().expect("lock").push(Received {
        key,
        signature,
        raw,
        json,
        status,
        at: std::time::Instant::now(),
    });
    let body = if status < 300 {
        "ok".to_owned()
    } else {
        format!("refused document {document}")
    };
    let mut answer = hyper::Response::builder().status(status);
    if status >= 300 {
        if let Some(v) = state.retry_after.lock().expect("lock").as_deref() {
            answer = answer.header("retry-after", v);
        }
    }
    Ok(answer
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default())
}

// ---------------------------------------------------------------- fixtures

fn nats_sink(url: &str, stream: &str) -> SinkConfig {
    SinkConfig::Nats(NatsSinkConfig {
        url: url.to_owned(),
        stream: stream.to_owned(),
        ack_timeout: Duration::from_secs(1),
        ..NatsSinkConfig::default()
    })
}

fn webhook_sink(name: &str, url: &str) -> WebhookSinkConfig {
    WebhookSinkConfig {
        name: name.to_owned(),
        url: url.to_owned(),
        timeout: Duration::from_secs(2),
        ..WebhookSinkConfig::default()
    }
}

/// A relay of its own (no worker), so a test can abort it like a crash.
fn spawn_relay(cfg: &Config, events: event::Events) -> (tokio::task::JoinHandle<()>, Arc<Notify>) {
    let (pool, target) = postpub::db::pool(&cfg.database).expect("pool");
    let wake = Arc::new(Notify::new());
    let base = postpub::service::Base {
        pool,
        target,
        actor: "test-relay".to_owned(),
        events,
    };
    let config = tokio::sync::watch::channel(Arc::new(cfg.clone())).1;
    let relay = Relay::new(config, &base, wake.clone()).expect("relay");
    let shutdown = Shutdown::new();
    let handle = tokio::spawn(async move {
        let _ = relay.run(shutdown).await;
    });
    (handle, wake)
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_over_a_hundred_documents_reach_jetstream_in_order() {
    let (db, c) = TestDb::with_client().await;
    let nats = NatsServer::start().await;
    c.batch_execute(
        "select count(postpub.publish('doc-' || (i % 100), '<p>' || i || '</p>'))
           from generate_series(1, 10000) i",
    )
    .await
    .expect("publish 10000");
    let events = events_by_id(&c).await;
    assert_eq!(events.len(), 10_000);

    let t0 = Instant::now();
    let d = Daemon::start(config(&db, vec![nats_sink(&nats.url(), "POSTPUB")])).await;
    all_delivered(&c, Duration::from_secs(60), "every event delivered").await;
    let took = t0.elapsed();
    eprintln!(
        "relay: 10000 events to JetStream in {took:?} ({:.0} events/s, {} build, incl. startup)",
        10_000.0 / took.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    d.stop().await;

    let msgs = nats.messages("POSTPUB").await;
    let ids: Vec<String> = msgs.iter().map(|m| m.msg_id.clone()).collect();
    assert_complete_and_ordered("stream", &ids, &events);
    // The JSON carries the event, and the subject is postpub.<kind>.<document>.
    let m = &msgs[0];
    assert_eq!(m.json["event_id"], m.msg_id.as_str());
    let doc = m.json["document"].as_str().expect("document");
    assert_eq!(m.subject, format!("postpub.published.{doc}"));
    for key in ["kind", "version", "version_id", "published_at"] {
        assert!(
            m.json.get(key).is_some(),
            "event JSON lacks {key}: {}",
            m.json
        );
    }
    assert!(m.json.get("body").is_none(), "no body unless include_body");
    let left = common::count(
        &c,
        "select count(*) from postpub.outbox_deliveries where delivered_at is null",
    )
    .await;
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_delays_events_but_loses_and_duplicates_none() {
    let (db, c) = TestDb::with_client().await;
    let mut nats = NatsServer::start().await;
    let mut d = Daemon::start(config(&db, vec![nats_sink(&nats.url(), "POSTPUB")])).await;
    db.publish(&c, "warm-up", "<p>w</p>", None).await;
    all_delivered(&c, Duration::from_secs(10), "warm-up delivered").await;

    nats.stop();
    c.batch_execute(
        "select count(postpub.publish('outage-' || (i % 10), '<p>' || i || '</p>'))
           from generate_series(1, 1000) i",
    )
    .await
    .expect("publish 1000 during the outage");
    d.wait_event(Duration::from_secs(10), |e| {
        matches!(e, Event::DeliveryFailed { .. })
    })
    .await;
    assert!(
        undelivered(&c).await >= 1000,
        "nothing delivered while down"
    );
    let (failed, retry): (i64, i64) = {
        let r = c
            .query_one(
                "select count(*) filter (where attempts > 0), count(*) filter (where last_error is not null)
                   from postpub.outbox where delivered_at is null",
                &[],
            )
            .await
            .expect("retry state");
        (r.get(0), r.get(1))
    };
    assert!(
        failed >= 1 && retry >= 1,
        "failures are recorded for a retry"
    );
    // Only heads are tried: later events of a document wait for the first.
    let tried_beyond_head = common::count(
        &c,
        "select count(*) from postpub.outbox o where o.attempts > 0 and exists
               (select 1 from postpub.outbox p where p.document = o.document and p.id < o.id
                  and p.delivered_at is null)",
    )
    .await;
    assert_eq!(
        tried_beyond_head, 0,
        "an event was tried before an earlier one of its document"
    );

    nats.restart().await;
    all_delivered(
        &c,
        Duration::from_secs(30),
        "every event delivered after the outage",
    )
    .await;
    d.stop().await;

    let events = events_by_id(&c).await;
    let ids = nats.msg_ids("POSTPUB").await;
    assert_complete_and_ordered("stream after the outage", &ids, &events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_before_recording_resends_and_jetstream_drops_the_duplicate() {
    let (db, c) = TestDb::with_client().await;
    let nats = NatsServer::start().await;
    let hook = Hook::start().await;
    let cfg = config(
        &db,
        vec![
            nats_sink(&nats.url(), "POSTPUB"),
            SinkConfig::Webhook(webhook_sink("hook", &hook.url())),
        ],
    );

    // Recording a delivery inserts into outbox_deliveries: hold that table so the relay
    // sends, gets both acknowledgements, and then hangs before it can record them.
    let mut blocker = db.client().await;
    let tx = blocker.transaction().await.expect("tx");
    tx.batch_execute("lock table postpub.outbox_deliveries in exclusive mode")
        .await
        .expect("lock");

    let (relay, wake) = spawn_relay(&cfg, event::channel());
    db.publish(&c, "crash", "<p>c</p>", None).await;
    wake.notify_one();
    let js = nats.jetstream().await;
    wait_until(
        Duration::from_secs(10),
        "the event in the stream",
        || async {
            match js.get_stream("POSTPUB").await {
                Ok(mut s) => s
                    .info()
                    .await
                    .map(|i| i.state.messages == 1)
                    .unwrap_or(false),
                Err(_) => false,
            }
        },
    )
    .await;
    wait_until(Duration::from_secs(10), "the webhook request", || async {
        hook.accepted().len() == 1
    })
    .await;

    // The crash: the task is gone and so is its database session.
    relay.abort();
    let _ = relay.await;
    c.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity
          where datname = current_database() and application_name = 'postpub'",
        &[],
    )
    .await
    .expect("terminate the relay's session");
    tx.rollback().await.expect("unlock");
    assert_eq!(
        undelivered(&c).await,
        1,
        "the acknowledgement was never recorded"
    );

    let mut d = Daemon::start(cfg).await;
    let dup = d
        .wait_event(
            Duration::from_secs(10),
            |e| matches!(e, Event::Delivered { sink, .. } if sink == "nats-0"),
        )
        .await;
    assert!(
        matches!(
            dup,
            Event::Delivered {
                duplicate: true,
                ..
            }
        ),
        "JetStream's PubAck says duplicate: {dup:?}"
    );
    all_delivered(&c, Duration::from_secs(10), "recorded as delivered").await;
    d.stop().await;

    assert_eq!(
        nats.messages("POSTPUB").await.len(),
        1,
        "the stream dropped the resend"
    );
    let got = hook.accepted();
    assert_eq!(got.len(), 2, "the webhook got the event twice");
    assert_eq!(got[0].key, got[1].key, "with the same Idempotency-Key");
    let event_id: String = c
        .query_one("select event_id::text from postpub.outbox", &[])
        .await
        .expect("event")
        .get(0);
    assert_eq!(got[0].key, event_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_is_parked_without_blocking_other_documents_until_requeued() {
    let (db, c) = TestDb::with_client().await;
    let hook = Hook::start().await;
    hook.answer("bad", 400);
    let mut sink = webhook_sink("hook", &hook.url());
    sink.secret = Some("s3cret".to_owned());
    sink.include_body = true;
    let mut d = Daemon::start(config(&db, vec![SinkConfig::Webhook(sink)])).await;

    db.publish(&c, "bad", "<p>bad 1</p>", None).await;
    db.publish(&c, "bad", "<p>bad 2</p>", None).await;
    let parked = d
        .wait_event(Duration::from_secs(10), |e| {
            matches!(e, Event::Parked { .. })
        })
        .await;
    let Event::Parked {
        event_id, reason, ..
    } = parked
    else {
        unreachable!()
    };
    assert!(reason.contains("400"), "{reason}");
    for i in 0..5 {
        db.publish(&c, &format!("good-{i}"), "<p>good</p>", None)
            .await;
    }
    wait_until(
        Duration::from_secs(10),
        "the other documents delivered",
        || async { hook.accepted().len() == 5 },
    )
    .await;
    // Still parked, with the reason; the next event of its document waits behind it.
    let row = c
        .query_one(
            "select parked_at is not null, last_error from postpub.outbox where event_id = $1",
            &[&event_id],
        )
        .await
        .expect("parked row");
    assert!(row.get::<_, bool>(0));
    let last_error: String = row.get(1);
    assert!(
        last_error.contains("sink hook") && last_error.contains("400"),
        "{last_error}"
    );
    assert!(
        hook.requests()
            .iter()
            .all(|r| r.json["body"] != "<p>bad 2</p>"),
        "bad v2 was sent while v1 is parked"
    );
    let status = postpub::admin::status(&c, 10).await.expect("status");
    assert_eq!(status.outbox_parked, 1);
    assert_eq!(status.parked[0].event_id, event_id);
    assert!(status.render().contains(&event_id.to_string()));
    // Only a parked event can be requeued.
    let second: Uuid = c
        .query_one(
            "select event_id from postpub.outbox where document = 'bad' order by id desc limit 1",
            &[],
        )
        .await
        .expect("second")
        .get(0);
    let msg = common::refused(&c, "select postpub.requeue_event($1)", &[&second]).await;
    assert!(msg.contains("is not parked"), "{msg}");

    // Fixed on the receiver's side; the operator requeues from the command line.
    hook.answer("bad", 200);
    let out = std::process::Command::new(common::bin())
        .args([
            "requeue",
            "--event",
            &event_id.to_string(),
            "--database-url",
            &db.url,
        ])
        .output()
        .expect("run postpub requeue");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    all_delivered(&c, Duration::from_secs(10), "bad v1 and v2 delivered").await;
    d.stop().await;

    let bad: Vec<Received> = hook
        .accepted()
        .into_iter()
        .filter(|r| r.json["document"] == "bad")
        .collect();
    let bodies: Vec<&str> = bad
        .iter()
        .map(|r| r.json["body"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        bodies,
        ["<p>bad 1</p>", "<p>bad 2</p>"],
        "in order, with the body"
    );
    assert_eq!(bad[0].key, event_id.to_string());
    for r in hook.requests() {
        assert_eq!(
            r.signature.as_deref(),
            Some(postpub::outbox::webhook::signature(b"s3cret", &r.raw).as_str()),
            "signed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_share_the_work_without_sending_an_event_twice_or_out_of_order() {
    let (db, c) = TestDb::with_client().await;
    let hook = Hook::start().await;
    let mut cfg = config(
        &db,
        vec![SinkConfig::Webhook(webhook_sink("hook", &hook.url()))],
    );
    cfg.outbox.batch_size = 16; // many small rounds, so the relays interleave
    c.batch_execute(
        "select count(postpub.publish('pair-' || (i % 20), '<p>' || i || '</p>'))
           from generate_series(1, 600) i",
    )
    .await
    .expect("publish 600");
    let a = Daemon::start(cfg.clone()).await;
    let b = Daemon::start(cfg).await;
    all_delivered(&c, Duration::from_secs(30), "every event delivered").await;
    a.stop().await;
    b.stop().await;
    hook.assert_got_all("webhook", &events_by_id(&c).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_does_not_make_the_others_receive_events_twice() {
    let (db, c) = TestDb::with_client().await;
    let good = Hook::start().await;
    let flaky = Hook::start().await;
    flaky.answer_all(503);
    let mut d = Daemon::start(config(
        &db,
        vec![
            SinkConfig::Webhook(webhook_sink("good", &good.url())),
            SinkConfig::Webhook(webhook_sink("flaky", &flaky.url())),
        ],
    ))
    .await;
    for i in 0..3 {
        db.publish(&c, "multi", &format!("<p>{i}</p>"), None).await;
    }
    db.publish(&c, "other", "<p>o</p>", None).await;
    for _ in 0..3 {
        d.wait_event(
            Duration::from_secs(10),
            |e| matches!(e, Event::DeliveryFailed { sink, .. } if sink == "flaky"),
        )
        .await;
    }
    // The good sink has the heads; nothing is delivered until both have them.
    assert_eq!(undelivered(&c).await, 4);
    flaky.answer_all(200);
    all_delivered(&c, Duration::from_secs(10), "every event delivered").await;
    d.stop().await;
    let events = events_by_id(&c).await;
    for hook in [&good, &flaky] {
        hook.assert_got_all("each sink", &events);
    }
    let tries = common::count(
        &c,
        "select max(attempts)::bigint from postpub.outbox_deliveries where sink = 'good'",
    )
    .await;
    assert_eq!(tries, 1, "the good sink was tried once per event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sinks_events_stay_in_the_table_untouched() {
    let (db, c) = TestDb::with_client().await;
    let d = Daemon::start(config(&db, vec![])).await;
    // Through the worker, so the daemon has certainly been running a while.
    let id = db
        .publish(&c, "kept", "<p>k</p>", Some("p { color: inherit; }"))
        .await;
    wait_until(Duration::from_secs(10), "current", || async {
        db.state(&c, id).await == "current"
    })
    .await;
    d.stop().await;
    let row = c
        .query_one(
            "select count(*) filter (where delivered_at is null and attempts = 0),
                    (select count(*) from postpub.outbox_deliveries)
               from postpub.outbox",
            &[],
        )
        .await
        .expect("outbox");
    assert_eq!(
        row.get::<_, i64>(0),
        1,
        "the event is readable, undelivered"
    );
    assert_eq!(row.get::<_, i64>(1), 0, "and nobody tried to deliver it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_events_are_deleted_after_retention_and_undelivered_ones_kept() {
    let (db, c) = TestDb::with_client().await;
    let hook = Hook::start().await;
    hook.answer("stuck", 400);
    let mut cfg = config(
        &db,
        vec![SinkConfig::Webhook(webhook_sink("hook", &hook.url()))],
    );
    cfg.outbox.retention = Duration::from_millis(500);
    cfg.worker.poll_interval = Duration::from_millis(50); // purge every 12 polls
    let d = Daemon::start(cfg).await;
    for i in 0..20 {
        db.publish(&c, &format!("r-{i}"), "<p>r</p>", None).await;
    }
    db.publish(&c, "stuck", "<p>s</p>", None).await;
    wait_until(
        Duration::from_secs(15),
        "delivered events deleted",
        || async {
            let n = common::count(&c, "select count(*) from postpub.outbox").await;
            n == 1
        },
    )
    .await;
    d.stop().await;
    let left: String = c
        .query_one(
            "select document from postpub.outbox where parked_at is not null",
            &[],
        )
        .await
        .expect("the parked event is kept")
        .get(0);
    assert_eq!(left, "stuck");
    let orphans = common::count(
        &c,
        "select count(*) from postpub.outbox_deliveries d
              where not exists (select 1 from postpub.outbox o where o.id = d.outbox_id)",
    )
    .await;
    assert_eq!(orphans, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_names_become_one_escaped_subject_token_per_kind() {
    let (db, c) = TestDb::with_client().await;
    let nats = NatsServer::start().await;
    let d = Daemon::start(config(&db, vec![nats_sink(&nats.url(), "POSTPUB")])).await;
    let doc = "books/a.b c*>é";
    db.publish(&c, doc, "<p>1</p>", None).await;
    db.delete(&c, doc).await; // through the worker: a `deleted` event
    wait_until(Duration::from_secs(10), "both events delivered", || async {
        let n = common::count(
            &c,
            "select count(*) from postpub.outbox where delivered_at is not null",
        )
        .await;
        n == 2
    })
    .await;
    d.stop().await;
    let msgs = nats.messages("POSTPUB").await;
    let subjects: Vec<&str> = msgs.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "postpub.published.books/a%2Eb%20c%2A%3E%C3%A9",
            "postpub.deleted.books/a%2Eb%20c%2A%3E%C3%A9"
        ]
    );
    assert_eq!(msgs[1].json["kind"], "deleted");
    assert_eq!(
        msgs[1].json["document"], doc,
        "the JSON keeps the real name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_sink_settles_the_events_only_it_still_owed() {
    let (db, c) = TestDb::with_client().await;
    let kept = Hook::start().await;
    let removed = Hook::start().await;
    removed.answer_all(503);
    let keep = SinkConfig::Webhook(webhook_sink("kept", &kept.url()));
    let mut d = Daemon::start(config(
        &db,
        vec![
            keep.clone(),
            SinkConfig::Webhook(webhook_sink("removed", &removed.url())),
        ],
    ))
    .await;
    db.publish(&c, "s", "<p>1</p>", None).await;
    d.wait_event(
        Duration::from_secs(10),
        |e| matches!(e, Event::DeliveryFailed { sink, .. } if sink == "removed"),
    )
    .await;
    d.stop().await;
    assert_eq!(kept.accepted().len(), 1);
    assert_eq!(undelivered(&c).await, 1);

    let d = Daemon::start(config(&db, vec![keep])).await;
    db.publish(&c, "s", "<p>2</p>", None).await;
    all_delivered(&c, Duration::from_secs(10), "both events delivered").await;
    d.stop().await;
    kept.assert_got_all("the kept sink", &events_by_id(&c).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_started_while_nats_is_down_delivers_once_it_is_up() {
    let (db, c) = TestDb::with_client().await;
    let mut nats = NatsServer::not_started();
    let mut d = Daemon::start(config(&db, vec![nats_sink(&nats.url(), "POSTPUB")])).await;
    for i in 0..3 {
        db.publish(&c, &format!("early-{i}"), "<p>e</p>", None)
            .await;
    }
    let failed = d
        .wait_event(Duration::from_secs(10), |e| {
            matches!(e, Event::DeliveryFailed { .. })
        })
        .await;
    assert!(
        matches!(&failed, Event::DeliveryFailed { error, .. } if error.contains("cannot connect to NATS")),
        "{failed:?}"
    );
    nats.restart().await;
    all_delivered(&c, Duration::from_secs(15), "delivered once NATS is up").await;
    d.stop().await;
    let ids = nats.msg_ids("POSTPUB").await;
    assert_complete_and_ordered("stream", &ids, &events_by_id(&c).await);
}

/// A receiver that answers 429 with `Retry-After: 2` is left alone for 2 s, although the
/// backoff alone would have retried within 400 ms; the wait is visible in the event's
/// `last_error`, and the event is delivered once the receiver accepts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_retry_after_is_honoured() {
    let (db, c) = TestDb::with_client().await;
    let hook = Hook::start().await;
    hook.answer_all(429);
    hook.retry_after("2");
    let d = Daemon::start(config(
        &db,
        vec![SinkConfig::Webhook(webhook_sink("hook", &hook.url()))],
    ))
    .await;
    db.publish(&c, "slow", "<p>s</p>", None).await;
    let error = || async {
        c.query_opt(
            "select coalesce(last_error, '') from postpub.outbox_deliveries where sink = 'hook'",
            &[],
        )
        .await
        .expect("delivery row")
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_default()
    };
    wait_until(Duration::from_secs(10), "the refusal recorded", || async {
        !error().await.is_empty()
    })
    .await;
    let error = error().await;
    assert!(
        error.contains("429") && error.contains("Retry-After: 2s"),
        "{error}"
    );
    hook.answer_all(200);
    all_delivered(&c, Duration::from_secs(10), "delivered").await;
    d.stop().await;
    let requests = hook.requests();
    assert_eq!(requests.len(), 2, "one refusal, one delivery: {requests:?}");
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "retried after {waited:?}, before the 2 s the receiver asked for"
    );
}

// ---------------------------------------------------------------- NATS security

/// Delivery state of the only event: (delivered, last error of the sink).
async fn only_event(c: &Client) -> (bool, String) {
    let row = c
        .query_one(
            "select o.delivered_at is not null,
                    coalesce((select d.last_error from postpub.outbox_deliveries d
                               where d.outbox_id = o.id), '')
               from postpub.outbox o",
            &[],
        )
        .await
        .expect("the event");
    (row.get(0), row.get(1))
}

/// Runs a daemon with `sink` until it has recorded a failed delivery of the only event;
/// returns the reason, after checking that nothing was delivered.
async fn refusal_with(db: &TestDb, c: &Client, sink: SinkConfig) -> String {
    let d = Daemon::start(config(db, vec![sink])).await;
    wait_until(Duration::from_secs(10), "a refusal recorded", || async {
        !only_event(c).await.1.is_empty()
    })
    .await;
    d.stop().await;
    let (delivered, error) = only_event(c).await;
    assert!(!delivered, "delivered although refused: {error}");
    error
}

/// Runs a daemon with `sink` until the only event is delivered.
async fn delivery_with(db: &TestDb, c: &Client, sink: SinkConfig) {
    let d = Daemon::start(config(db, vec![sink])).await;
    wait_until(Duration::from_secs(10), "delivered", || async {
        only_event(c).await.0
    })
    .await;
    d.stop().await;
}

/// A NATS sink for `server`'s stream with `secure` applied to its settings.
fn nats_sink_with(
    server: &NatsServer,
    stream: &str,
    secure: impl FnOnce(&mut NatsSinkConfig),
) -> SinkConfig {
    let mut sink = nats_sink(&server.url(), stream);
    if let SinkConfig::Nats(n) = &mut sink {
        secure(n);
    }
    sink
}

/// A server that requires an NKey user: without the seed the event is not delivered and
/// the reason says why; with `nkey_seed_file` it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_requiring_an_nkey_gets_events_from_a_sink_with_the_seed() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("seed");
    let server = NatsServer::start_with(&format!(
        "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
        user.public_key()
    ))
    .await;
    let (db, c) = TestDb::with_client().await;
    db.publish(&c, "secret", "<p>s</p>", None).await;

    let error = refusal_with(&db, &c, nats_sink(&server.url(), "SECURE")).await;
    assert!(
        error.contains("cannot connect to NATS") && error.to_lowercase().contains("author"),
        "{error}"
    );

    let seed_file = server.dir.join("postpub.nk");
    std::fs::write(&seed_file, format!("{seed}\n")).expect("seed file");
    let sink = nats_sink_with(&server, "SECURE", |n| n.nkey_seed_file = Some(seed_file));
    delivery_with(&db, &c, sink).await;
}

/// A server that only speaks TLS, with a certificate from a CA of the test's own: the
/// sink trusts it through `tls_ca_file`; a sink that does not know the CA is refused
/// with a reason naming the certificate problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_nats_server_gets_events_from_a_sink_that_trusts_its_ca() {
    let dir = std::env::temp_dir().join(format!("postpub-tls-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("tls dir");
    let (ca, ca_key) = common::certs::make_ca("postpub test CA");
    let (cert, key) = common::certs::server_cert(&ca, &ca_key);
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("pem");
        path
    };
    let ca_file = write("ca.pem", ca.pem());
    let cert_file = write("server.pem", cert.pem());
    let key_file = write("server-key.pem", key.serialize_pem());
    let server = NatsServer::start_with(&format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\" }}\n",
        cert_file.display(),
        key_file.display()
    ))
    .await;
    let (db, c) = TestDb::with_client().await;
    db.publish(&c, "private", "<p>p</p>", None).await;

    let untrusting = nats_sink_with(&server, "TLS", |n| n.tls_required = true);
    let error = refusal_with(&db, &c, untrusting).await;
    assert!(error.contains("cannot connect to NATS"), "{error}");

    let trusting = nats_sink_with(&server, "TLS", |n| {
        n.tls_required = true;
        n.tls_ca_file = Some(ca_file);
    });
    delivery_with(&db, &c, trusting).await;
    let _ = std::fs::remove_dir_all(&dir);
}
