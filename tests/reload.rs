//! SIGHUP reloads the configuration of a running `postpub run`: concurrency, pipeline and
//! log level change without dropping in-flight work; an invalid file is refused and the
//! running configuration stays.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, wait_until, Proc, Script, TestDb};

fn config(db: &TestDb, script: &Script, concurrency: usize, steps: &str, level: &str) -> String {
    format!(
        "[database]\nurl = \"{}\"\n[worker]\nconcurrency = {concurrency}\npoll_interval = \"200ms\"\n\
         [pipeline]\nsteps = {steps}\n[pipeline.command]\nprogram = \"{}\"\n\
         [http]\nlisten = \"\"\n[log]\nlevel = \"{level}\"\n",
        db.url,
        script.program()
    )
}

fn log_has(path: &std::path::Path, needle: &str) -> bool {
    std::fs::read_to_string(path)
        .map(|s| s.contains(needle))
        .unwrap_or(false)
}

fn count_in_log(path: &std::path::Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.matches(needle).count())
        .unwrap_or(0)
}

#[tokio::test]
async fn sighup_applies_a_valid_config_and_refuses_an_invalid_one() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let script = Script::new("body=$(cat); sleep 0.4; printf '%s' \"$body\"");
    let cfg_path = script.dir.join("postpub.toml");
    let log_path = script.dir.join("postpub.log");
    std::fs::write(&cfg_path, config(&db, &script, 1, "[\"command\"]", "info")).expect("config");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Proc::new(
        Command::new(bin())
            .args(["run", "--config"])
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn"),
    );

    let mut ids = Vec::new();
    for i in 0..9 {
        ids.push(
            db.publish(&c, &format!("doc-{i}"), "<p>x</p>", Some("p {}"))
                .await,
        );
    }
    // concurrency = 1: one at a time.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(800) {
        let n = db.counts(&c).await.get("processing").copied().unwrap_or(0);
        assert!(n <= 1, "{n} versions processing with concurrency 1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Reload: concurrency 3, a validate step in front, debug logging.
    std::fs::write(
        &cfg_path,
        config(&db, &script, 3, "[\"validate\", \"command\"]", "debug"),
    )
    .expect("config");
    child.signal("-HUP");
    wait_until(
        Duration::from_secs(10),
        "the reload to be applied",
        || async { log_has(&log_path, "configuration reloaded") },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "three versions processing at once",
        || async { db.counts(&c).await.get("processing").copied().unwrap_or(0) == 3 },
    )
    .await;
    let bad = db
        .publish(&c, "malformed", "<div><p>x</div>", Some("p {}"))
        .await;
    wait_until(
        Duration::from_secs(15),
        "the malformed version errored by validate",
        || async { db.state(&c, bad).await == "errored" },
    )
    .await;
    assert!(log_has(&log_path, "DEBUG"), "log.level = debug took effect");

    // An invalid file is refused; the running configuration (with validate) stays.
    std::fs::write(&cfg_path, "[worker]\nconcurrency = \"lots\"\n").expect("config");
    let refused_before = count_in_log(&log_path, "configuration reload refused");
    child.signal("-HUP");
    wait_until(
        Duration::from_secs(10),
        "the refusal to be logged",
        || async { count_in_log(&log_path, "configuration reload refused") > refused_before },
    )
    .await;
    assert!(child.running(), "still running");
    let bad2 = db
        .publish(&c, "malformed-2", "<p>unclosed", Some("p {}"))
        .await;
    wait_until(
        Duration::from_secs(15),
        "validate still in force",
        || async { db.state(&c, bad2).await == "errored" },
    )
    .await;

    wait_until(
        Duration::from_secs(20),
        "every good version current",
        || async {
            let mut all = true;
            for id in &ids {
                all &= db.state(&c, *id).await == "current";
            }
            all
        },
    )
    .await;
    child.signal("-TERM");
    let status = child.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
    db.assert_invariants(&c).await;
}
