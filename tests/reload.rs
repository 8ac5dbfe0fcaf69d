//! SIGHUP reloads the configuration of a running `postpub run`: concurrency, pipeline and
//! log level change without dropping in-flight work; an invalid file is refused and the
//! running configuration stays.

mod common;

use std::time::Duration;

use common::process::Proc;
use common::{holds_for, processing, wait_until, Script, TestDb};

fn config(db: &TestDb, script: &Script, concurrency: usize, steps: &str, level: &str) -> String {
    format!(
        "[database]\nurl = \"{}\"\n[worker]\nconcurrency = {concurrency}\npoll_interval = \"200ms\"\n\
         [pipeline]\nsteps = {steps}\n[pipeline.command]\nprogram = \"{}\"\n\
         [http]\nlisten = \"\"\n[log]\nlevel = \"{level}\"\n",
        db.url,
        script.program()
    )
}

#[tokio::test]
async fn sighup_applies_a_valid_config_and_refuses_an_invalid_one() {
    let (db, c) = TestDb::with_client().await;
    let script = Script::new("body=$(cat); sleep 0.4; printf '%s' \"$body\"");
    let mut child = Proc::start(&config(&db, &script, 1, "[\"command\"]", "info"));

    let mut ids = Vec::new();
    for i in 0..9 {
        ids.push(
            db.publish(&c, &format!("doc-{i}"), "<p>x</p>", Some("p {}"))
                .await,
        );
    }
    // concurrency = 1: one at a time.
    holds_for(
        Duration::from_millis(800),
        Duration::from_millis(20),
        "at most one version processing with concurrency 1",
        || async { processing(&c).await <= 1 },
    )
    .await;

    // Reload: concurrency 3, a validate step in front, debug logging.
    child.rewrite_config(&config(
        &db,
        &script,
        3,
        "[\"validate\", \"command\"]",
        "debug",
    ));
    child.signal("-HUP");
    wait_until(
        Duration::from_secs(10),
        "the reload to be applied",
        || async { child.logs().contains("configuration reloaded") },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "three versions processing at once",
        || async { processing(&c).await == 3 },
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
    assert!(
        child.logs().contains("DEBUG"),
        "log.level = debug took effect"
    );

    // An invalid file is refused; the running configuration (with validate) stays.
    child.rewrite_config("[worker]\nconcurrency = \"lots\"\n");
    let refused_before = child.logs().matches("configuration reload refused").count();
    child.signal("-HUP");
    wait_until(
        Duration::from_secs(10),
        "the refusal to be logged",
        || async { child.logs().matches("configuration reload refused").count() > refused_before },
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
