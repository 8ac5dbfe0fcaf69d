//! Signals to the real binary: SIGTERM finishes or releases in-flight work, exits 0, and
//! leaves nothing in processing.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{self, Proc};
use common::{bin, wait_until, Script, TestDb};

fn start(db: &TestDb, script: &Script, shutdown_timeout: &str, dir: &std::path::Path) -> Child {
    let cfg = format!(
        "[database]\nurl = \"{}\"\n[worker]\nconcurrency = 4\nshutdown_timeout = \"{shutdown_timeout}\"\npoll_interval = \"500ms\"\n\
         [pipeline]\nsteps = [\"command\"]\n[pipeline.command]\nprogram = \"{}\"\ntimeout = \"60s\"\n[http]\nlisten = \"\"\n",
        db.url,
        script.program()
    );
    let path = dir.join("postpub.toml");
    std::fs::write(&path, cfg).expect("config");
    Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn postpub")
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("postpub did not exit within {within:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn sigterm_during_work_finishes_it_and_leaves_nothing_processing() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let script = Script::new("body=$(cat); sleep 1; printf '%s' \"$body\"");
    let mut child = start(&db, &script, "10s", &script.dir);
    for i in 0..8 {
        db.publish(&c, &format!("term-{i}"), "<p>x</p>", Some("p {}"))
            .await;
    }
    wait_until(Duration::from_secs(10), "work in flight", || async {
        db.counts(&c).await.get("processing").copied().unwrap_or(0) > 0
    })
    .await;
    let t0 = Instant::now();
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));
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
    let db = TestDb::new().await;
    let c = db.client().await;
    let script = Script::new("cat >/dev/null; sleep 30");
    let mut child = start(&db, &script, "1s", &script.dir);
    let v = db.publish(&c, "slow", "<p>x</p>", Some("p {}")).await;
    wait_until(Duration::from_secs(10), "work in flight", || async {
        db.state(&c, v).await == "processing"
    })
    .await;
    let t0 = Instant::now();
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
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

/// `postpub run` with `concurrency` slots and a command step, as a child process.
fn start_loaded(db: &TestDb, script: &Script, concurrency: usize, shutdown_timeout: &str) -> Proc {
    Proc::start(&process::config(
        &db.url,
        &format!(
            "concurrency = {concurrency}\nshutdown_timeout = \"{shutdown_timeout}\"\npoll_interval = \"500ms\""
        ),
        "steps = [\"command\"]",
        &format!("program = \"{}\"\ntimeout = \"5m\"", script.program()),
    ))
}

async fn publish_100(c: &tokio_postgres::Client) {
    c.batch_execute(
        "select count(postpub.publish('load-' || i, '<p>' || i || '</p>', 'p {}')) from generate_series(1, 100) i",
    )
    .await
    .expect("publish 100");
}

async fn processing(db: &TestDb, c: &tokio_postgres::Client) -> i64 {
    db.counts(c).await.get("processing").copied().unwrap_or(0)
}

#[tokio::test]
async fn sigterm_with_100_versions_in_flight_finishes_them_within_the_shutdown_timeout() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let script = Script::new("body=$(cat); sleep 1; printf '%s' \"$body\"");
    let mut daemon = start_loaded(&db, &script, 100, "10s");
    publish_100(&c).await;
    wait_until(Duration::from_secs(30), "100 in flight", || async {
        processing(&db, &c).await == 100
    })
    .await;
    let t0 = Instant::now();
    daemon.signal("-TERM");
    let status = daemon.wait_exit(Duration::from_secs(20));
    let took = t0.elapsed();
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
    let db = TestDb::new().await;
    let c = db.client().await;
    let script = Script::new("cat >/dev/null; exec sleep 60");
    let mut daemon = start_loaded(&db, &script, 100, "2s");
    publish_100(&c).await;
    wait_until(Duration::from_secs(30), "100 in flight", || async {
        processing(&db, &c).await == 100
    })
    .await;
    let t0 = Instant::now();
    daemon.signal("-TERM");
    let status = daemon.wait_exit(Duration::from_secs(20));
    let took = t0.elapsed();
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
