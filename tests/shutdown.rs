//! Signals to the real binary: SIGTERM finishes or releases in-flight work, exits 0, and
//! leaves nothing in processing.

mod common;

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::process::{self, Proc};
use common::{processing, wait_until, Script, TestDb};
use tokio_postgres::Client;

/// `postpub run` with `concurrency` slots and `script` as its one step.
fn start(db: &TestDb, script: &Script, concurrency: usize, shutdown_timeout: &str) -> Proc {
    Proc::start(&process::config(
        &db.url,
        &format!(
            "concurrency = {concurrency}\nshutdown_timeout = \"{shutdown_timeout}\"\npoll_interval = \"500ms\""
        ),
        "steps = [\"command\"]",
        &format!("program = \"{}\"\ntimeout = \"5m\"", script.program()),
    ))
}

/// Sends SIGTERM and waits for the exit: its status and how long it took.
async fn terminate(daemon: &mut Proc, within: Duration) -> (ExitStatus, Duration) {
    let t0 = Instant::now();
    daemon.signal("-TERM");
    let status = daemon.wait_exit(within).await;
    (status, t0.elapsed())
}

#[tokio::test]
async fn sigterm_during_work_finishes_it_and_leaves_nothing_processing() {
    let (db, c) = TestDb::with_client().await;
    let script = Script::new("body=$(cat); sleep 1; printf '%s' \"$body\"");
    let mut daemon = start(&db, &script, 4, "10s");
    for i in 0..8 {
        db.publish(&c, &format!("term-{i}"), "<p>x</p>", Some("p {}"))
            .await;
    }
    wait_until(Duration::from_secs(10), "work in flight", || async {
        processing(&c).await > 0
    })
    .await;
    let (status, took) = terminate(&mut daemon, Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let counts = db.counts(&c).await;
    assert_eq!(counts.get("processing"), None, "{counts:?}");
    assert!(
        counts.get("current").copied().unwrap_or(0) >= 4,
        "in-flight work finished: {counts:?}"
    );
    db.assert_invariants(&c).await;
}

#[tokio::test]
async fn work_still_running_at_the_shutdown_timeout_is_released_without_counting_the_attempt() {
    let (db, c) = TestDb::with_client().await;
    let script = Script::new("cat >/dev/null; sleep 30");
    let mut daemon = start(&db, &script, 4, "1s");
    let v = db.publish(&c, "slow", "<p>x</p>", Some("p {}")).await;
    wait_until(Duration::from_secs(10), "work in flight", || async {
        db.state(&c, v).await == "processing"
    })
    .await;
    let (status, took) = terminate(&mut daemon, Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let r = c
        .query_one(
            "select state::text, attempts, locked_by from postpub.versions where id = $1",
            &[&v],
        )
        .await
        .expect("row");
    assert_eq!(r.get::<_, String>(0), "post-publication");
    assert_eq!(r.get::<_, i32>(1), 0, "a released attempt is not counted");
    assert_eq!(r.get::<_, Option<String>>(2), None);
    db.assert_invariants(&c).await;
}

/// A daemon with 100 slots and `step`, 100 versions all in flight, then SIGTERM: the
/// database, the daemon (for its log), and its exit status and time.
async fn terminate_with_100_in_flight(
    step: &str,
    shutdown_timeout: &str,
) -> (TestDb, Client, Proc, ExitStatus, Duration) {
    let (db, c) = TestDb::with_client().await;
    let script = Script::new(step);
    let mut daemon = start(&db, &script, 100, shutdown_timeout);
    c.batch_execute(
        "select count(postpub.publish('load-' || i, '<p>' || i || '</p>', 'p {}')) from generate_series(1, 100) i",
    )
    .await
    .expect("publish 100");
    wait_until(Duration::from_secs(30), "100 in flight", || async {
        processing(&c).await == 100
    })
    .await;
    let (status, took) = terminate(&mut daemon, Duration::from_secs(20)).await;
    (db, c, daemon, status, took)
}

#[tokio::test]
async fn sigterm_with_100_versions_in_flight_finishes_them_within_the_shutdown_timeout() {
    let (db, c, daemon, status, took) =
        terminate_with_100_in_flight("body=$(cat); sleep 1; printf '%s' \"$body\"", "10s").await;
    println!("SIGTERM with 100 in flight (1 s steps): exited {status:?} after {took:.2?}");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}, over shutdown_timeout"
    );
    let counts = db.counts(&c).await;
    assert_eq!(counts.get("current"), Some(&100), "{counts:?}");
    common::assert_settled(&c).await;
    assert!(daemon
        .logs()
        .contains("waiting for in-flight versions in_flight=100"));
}

#[tokio::test]
async fn sigterm_with_100_versions_stuck_releases_them_all_within_the_shutdown_timeout() {
    let (db, c, _daemon, status, took) =
        terminate_with_100_in_flight("cat >/dev/null; exec sleep 60", "2s").await;
    println!(
        "SIGTERM with 100 stuck steps (shutdown_timeout 2s): exited {status:?} after {took:.2?}"
    );
    assert!(status.success(), "exit status {status:?}");
    // shutdown_timeout + the release grace (5 s), with room for a loaded machine.
    assert!(took < Duration::from_secs(7), "took {took:?}");
    let r = c
        .query_one(
            "select count(*) filter (where state = 'post-publication' and attempts = 0 and locked_by is null),
                    count(*)
               from postpub.versions",
            &[],
        )
        .await
        .expect("counts");
    assert_eq!(
        (r.get::<_, i64>(0), r.get::<_, i64>(1)),
        (100, 100),
        "every version released, its attempt not counted"
    );
    db.assert_invariants(&c).await;
}
