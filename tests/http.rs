//! The HTTP server: health, readiness, metrics and the read-only document API, against an
//! in-process daemon; binding failure against the real binary.

mod common;

use std::process::Command;
use std::time::Duration;

use common::ops::get;
use common::{bin, wait_until, Daemon, Script, TestDb};

/// A daemon serving HTTP on a free port; `steps` as given.
async fn daemon_with_http(db: &TestDb, steps: &[&str]) -> (Daemon, u16) {
    let mut cfg = db.config();
    cfg.pipeline.steps = steps.iter().map(|s| s.to_string()).collect();
    Daemon::start_with_http(cfg).await
}

#[tokio::test]
async fn healthz_and_readyz_answer_200_when_the_daemon_is_ready() {
    let db = TestDb::new().await;
    let (d, port) = daemon_with_http(&db, &["noop"]).await;
    let h = get(port, "/healthz", &[]).await;
    assert_eq!(h.status, 200, "{h:?}");
    let r = get(port, "/readyz", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("ready"), "{r:?}");
    let nf = get(port, "/nothing-here", &[]).await;
    assert_eq!(nf.status, 404);
    assert!(nf.error().contains("/nothing-here"), "{nf:?}");
    d.stop().await;
}

#[tokio::test]
async fn readyz_is_503_while_draining_and_healthz_stays_200() {
    let (db, c) = TestDb::with_client().await;
    let script = Script::new("body=$(cat); sleep 3; printf '%s' \"$body\"");
    let (d, port) = Daemon::start_with_http(db.command_config(&script)).await;
    let v = db.publish(&c, "slow", "<p>x</p>", Some("p {}")).await;
    wait_until(Duration::from_secs(10), "version in flight", || async {
        db.state(&c, v).await == "processing"
    })
    .await;
    d.shutdown.soft.cancel();
    wait_until(Duration::from_secs(5), "readyz 503", || async {
        get(port, "/readyz", &[]).await.status == 503
    })
    .await;
    let r = get(port, "/readyz", &[]).await;
    assert!(r.error().contains("stopping"), "{r:?}");
    assert_eq!(get(port, "/healthz", &[]).await.status, 200);
    d.stop().await;
    assert_eq!(db.state(&c, v).await, "current", "in-flight work finished");
}

#[tokio::test]
async fn metrics_expose_every_family_with_the_postpub_prefix() {
    let (db, c) = TestDb::with_client().await;
    let (mut d, port) = daemon_with_http(&db, &["validate"]).await;
    let ok = db.publish(&c, "m/ok", "<p>fine</p>", Some("p {}")).await;
    let bad = db
        .publish(&c, "m/bad", "<div><p>open</div>", Some("p {}"))
        .await;
    wait_until(Duration::from_secs(10), "both settled", || async {
        db.state(&c, ok).await == "current" && db.state(&c, bad).await == "errored"
    })
    .await;
    // Counted from events, which the recorder sees a moment after the database changed.
    d.wait_event(Duration::from_secs(5), |e| {
        matches!(e, postpub::event::Event::Finished { version_id, .. } if *version_id == bad || *version_id == ok)
    })
    .await;
    let m = common::wait_for(
        Duration::from_secs(5),
        "both outcomes counted in /metrics",
        || async {
            let m = get(port, "/metrics", &[]).await;
            let counted = m.body.contains("outcome=\"errored\"} 1")
                && m.body.contains("outcome=\"current\"} 1");
            counted.then_some(m)
        },
    )
    .await;
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type").unwrap_or("").contains("text"),
        "{m:?}"
    );
    for family in [
        "postpub_versions_processed_total{outcome=\"current\"} 1",
        "postpub_versions_processed_total{outcome=\"errored\"} 1",
        "postpub_step_duration_seconds_bucket{",
        "postpub_step_duration_seconds_count{step=\"validate\"} 2",
        "postpub_backlog_versions{state=\"post-publication\"} 0",
        "postpub_backlog_versions{state=\"errored\"} 1",
        "postpub_backlog_versions{state=\"processing\"} 0",
        "postpub_oldest_pending_age_seconds ",
        "postpub_claim_latency_seconds_count 2",
        "postpub_outbox_events{state=\"pending\"} 1",
        "postpub_outbox_events{state=\"parked\"} 0",
        "postpub_outbox_oldest_pending_age_seconds ",
        "postpub_listener_reconnects_total 0",
        "postpub_lease_rescues_total 0",
        "postpub_database_up 1",
        "postpub_ready 1",
    ] {
        assert!(m.body.contains(family), "missing {family:?} in\n{}", m.body);
    }
    for line in m.body.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("postpub_"), "unprefixed metric: {line}");
    }
    d.stop().await;
}

#[tokio::test]
async fn metrics_count_listener_reconnects_and_lease_rescues() {
    let (db, c) = TestDb::with_client().await;
    let mut cfg = db.config();
    // The listener's last query stays `LISTEN postpub` (no health check in between), so
    // its backend can be found; the rescuer still runs every lease / 2.
    cfg.worker.poll_interval = Duration::from_secs(60);
    let (mut d, port) = Daemon::start_with_http(cfg).await;
    // A version some other daemon claimed and abandoned: its lease already expired. (Its
    // claim updates the row by id once it holds the document lock, which the faking
    // UPDATE does not take: hence made in the publishing transaction.)
    let v = db.publish_abandoned(&c, "abandoned").await;
    d.wait_event(
        Duration::from_secs(30),
        |e| matches!(e, postpub::event::Event::Rescued { version_id, .. } if *version_id == v),
    )
    .await;
    common::terminate_listeners(&c).await;
    d.wait_event(Duration::from_secs(30), |e| {
        matches!(
            e,
            postpub::event::Event::ListenerConnected { reconnects } if *reconnects >= 1
        )
    })
    .await;
    wait_until(Duration::from_secs(5), "counters in /metrics", || async {
        let m = get(port, "/metrics", &[]).await.body;
        m.contains("postpub_lease_rescues_total 1")
            && m.contains("postpub_listener_reconnects_total 1")
    })
    .await;
    d.stop().await;
}

#[tokio::test]
async fn documents_are_served_with_etags_and_only_while_current() {
    let (db, c) = TestDb::with_client().await;
    let (d, port) = daemon_with_http(&db, &["noop"]).await;

    let v1 = db
        .publish(&c, "physics/chapter-1", "<p>one</p>", None)
        .await;
    let r = get(port, "/documents/physics/chapter-1", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "<p>one</p>");
    assert_eq!(r.header("etag"), Some(format!("\"{v1}\"").as_str()));
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    // The same document with its slash percent-encoded.
    let enc = get(port, "/documents/physics%2Fchapter-1", &[]).await;
    assert_eq!((enc.status, enc.body.as_str()), (200, "<p>one</p>"));

    // Conditional GET.
    let etag = r.header("etag").expect("etag").to_owned();
    let nm = get(
        port,
        "/documents/physics/chapter-1",
        &[("If-None-Match", &etag)],
    )
    .await;
    assert_eq!(nm.status, 304, "{nm:?}");
    assert!(nm.body.is_empty());
    assert_eq!(nm.header("etag"), Some(etag.as_str()));
    let other = get(
        port,
        "/documents/physics/chapter-1",
        &[("If-None-Match", "\"999999\"")],
    )
    .await;
    assert_eq!(other.status, 200);

    // versions/{n}: only the current one.
    let r1 = get(port, "/documents/physics/chapter-1/versions/1", &[]).await;
    assert_eq!((r1.status, r1.body.as_str()), (200, "<p>one</p>"));
    let r2 = get(port, "/documents/physics/chapter-1/versions/2", &[]).await;
    assert_eq!(r2.status, 404);
    assert!(r2.error().contains("not current"), "{r2:?}");

    let v2 = db
        .publish(&c, "physics/chapter-1", "<p>two</p>", None)
        .await;
    let r = get(port, "/documents/physics/chapter-1", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "<p>two</p>"));
    assert_eq!(r.header("etag"), Some(format!("\"{v2}\"").as_str()));
    // The old ETag no longer matches: the new content comes back.
    let stale = get(
        port,
        "/documents/physics/chapter-1",
        &[("If-None-Match", &etag)],
    )
    .await;
    assert_eq!((stale.status, stale.body.as_str()), (200, "<p>two</p>"));
    let archived = get(port, "/documents/physics/chapter-1/versions/1", &[]).await;
    assert_eq!(archived.status, 404, "{archived:?}");
    assert_eq!(
        get(port, "/documents/physics/chapter-1/versions/2", &[])
            .await
            .status,
        200
    );

    // Never published: 404 with a JSON error.
    let unknown = get(port, "/documents/no/such/doc", &[]).await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.error().contains("no/such/doc"), "{unknown:?}");

    // Deleted: 410, for the document and for any of its versions.
    let tomb = db.delete(&c, "physics/chapter-1").await;
    wait_until(Duration::from_secs(10), "tombstone current", || async {
        db.state(&c, tomb).await == "current"
    })
    .await;
    let gone = get(port, "/documents/physics/chapter-1", &[]).await;
    assert_eq!(gone.status, 410, "{gone:?}");
    assert!(gone.error().contains("deleted"), "{gone:?}");
    assert_eq!(
        get(port, "/documents/physics/chapter-1/versions/2", &[])
            .await
            .status,
        410
    );
    d.stop().await;
}

#[tokio::test]
async fn collated_content_is_served_and_unfinished_versions_are_not() {
    let (db, c) = TestDb::with_client().await;
    let script = Script::new("tr a-z A-Z");
    let (d, port) = Daemon::start_with_http(db.command_config(&script)).await;

    // Errored versions never reach the API.
    c.batch_execute(
        "insert into postpub.documents (document, last_version) values ('waiting', 1);
         insert into postpub.versions (document, version, body, state, last_error)
         values ('waiting', 1, '<p>no</p>', 'errored', 'test');",
    )
    .await
    .expect("an errored version");
    assert_eq!(get(port, "/documents/waiting", &[]).await.status, 404);

    let v = db.publish(&c, "baked", "<p>quiet</p>", Some("p {}")).await;
    wait_until(Duration::from_secs(10), "collated", || async {
        db.state(&c, v).await == "current"
    })
    .await;
    let r = get(port, "/documents/baked", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "<P>QUIET</P>"), "{r:?}");
    d.stop().await;
}

#[tokio::test]
async fn a_port_in_use_is_fatal_exit_1_naming_the_address() {
    let db = TestDb::new().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = std::env::temp_dir().join(format!("postpub-bind-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("postpub.toml");
    std::fs::write(
        &path,
        format!(
            "[database]\nurl = \"{}\"\n[pipeline]\nsteps = [\"noop\"]\n[http]\nlisten = \"{addr}\"\n",
            db.url
        ),
    )
    .expect("config");
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run postpub");
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains(&addr), "{line}");
    assert!(!err.contains("panicked"), "{err}");
    drop(taken);
}

#[test]
fn a_malformed_listen_address_is_a_configuration_error() {
    let out = Command::new(bin())
        .args(["run", "--database-url", "postgres://postgres@127.0.0.1:1/x"])
        .env("POSTPUB__HTTP__LISTEN", "9187")
        .output()
        .expect("run postpub");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("http.listen"), "{err}");
}
