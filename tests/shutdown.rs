//! Signals to the real binary: SIGTERM finishes or releases in-flight work, exits 0, and
//! leaves nothing in processing.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, wait_until, Proc, Script, TestDb};

fn start(db: &TestDb, script: &Script, shutdown_timeout: &str, dir: &std::path::Path) -> Proc {
    let cfg = format!(
        "[database]\nurl = \"{}\"\n[worker]\nconcurrency = 4\nshutdown_timeout = \"{shutdown_timeout}\"\npoll_interval = \"500ms\"\n\
         [pipeline]\nsteps = [\"command\"]\n[pipeline.command]\nprogram = \"{}\"\ntimeout = \"60s\"\n[http]\nlisten = \"\"\n",
        db.url,
        script.program()
    );
    let path = dir.join("postpub.toml");
    std::fs::write(&path, cfg).expect("config");
    Proc::new(
        Command::new(bin())
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn postpub"),
    )
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
    child.signal("-TERM");
    let status = child.wait_exit(Duration::from_secs(15)).await;
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
    child.signal("-TERM");
    let status = child.wait_exit(Duration::from_secs(10)).await;
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
