//! Step failures: transient ones are retried with backoff until max_attempts, permanent
//! ones error at once, and an operator's requeue brings a version back.

mod common;

use std::time::Duration;

use common::outcome as row;
use common::{wait_until, Daemon, Script, TestDb};

const RECIPE: &str = "p { color: inherit; }";

/// Fails permanently on PERMANENT until a `fixed` file appears, transiently on TRANSIENT.
const STEP: &str = r#"body=$(cat)
case "$body" in
  *PERMANENT*) [ -e "$(dirname "$0")/fixed" ] || { echo "permanent failure requested" >&2; exit 1; } ;;
  *TRANSIENT*) echo "transient failure requested" >&2; exit 75 ;;
esac
printf '%s' "$body""#;

#[tokio::test]
async fn transient_failures_retry_until_max_attempts_and_permanent_ones_error_at_once() {
    let (db, c) = TestDb::with_client().await;
    let script = Script::new(STEP);
    let mut cfg = db.config();
    cfg.pipeline.steps = vec!["validate".into(), "command".into()];
    cfg.pipeline.command.program = script.program();
    cfg.worker.max_attempts = 3;
    let d = Daemon::start(cfg).await;

    let perm = db
        .publish(&c, "perm", "<p>PERMANENT</p>", Some(RECIPE))
        .await;
    let trans = db
        .publish(&c, "trans", "<p>TRANSIENT</p>", Some(RECIPE))
        .await;
    let ok = db.publish(&c, "ok", "<p>fine</p>", Some(RECIPE)).await;
    let bad = db
        .publish(&c, "bad", "<div><p>unclosed</div>", Some(RECIPE))
        .await;
    wait_until(Duration::from_secs(15), "everything settled", || async {
        db.pending(&c).await == 0
    })
    .await;

    let (s, a, e) = row(&c, perm).await;
    assert_eq!((s.as_str(), a), ("errored", 1), "{e}");
    assert!(
        e.contains("step command") && e.contains("exited 1: permanent failure requested"),
        "{e}"
    );
    let (s, a, e) = row(&c, trans).await;
    assert_eq!((s.as_str(), a), ("errored", 3), "{e}");
    assert!(
        e.contains("gave up after 3 attempts") && e.contains("exited 75"),
        "{e}"
    );
    let retries: i64 = c
        .query_one(
            "select count(*) from postpub.transitions where version_id = $1 and why like 'retry in %'",
            &[&trans],
        )
        .await
        .expect("audit")
        .get(0);
    assert_eq!(retries, 2, "two retries before giving up");
    assert_eq!(row(&c, ok).await.0, "current");
    let (s, a, e) = row(&c, bad).await;
    assert_eq!((s.as_str(), a), ("errored", 1));
    assert!(e.contains("step validate: malformed HTML at line 1"), "{e}");

    // Fix the cause, requeue: it goes through.
    std::fs::write(script.dir.join("fixed"), "").expect("fix");
    c.execute("select postpub.requeue($1)", &[&perm])
        .await
        .expect("requeue");
    wait_until(
        Duration::from_secs(10),
        "requeued version current",
        || async { row(&c, perm).await.0 == "current" },
    )
    .await;
    assert_eq!(
        row(&c, perm).await.1,
        1,
        "requeue reset the attempts before the new claim"
    );
    db.assert_invariants(&c).await;
    d.stop().await;
}

#[tokio::test]
async fn errored_versions_do_not_block_newer_ones_and_requeue_errored_counts() {
    let (db, c) = TestDb::with_client().await;
    let mut cfg = db.config();
    cfg.pipeline.steps = vec!["validate".into()];
    let d = Daemon::start(cfg).await;
    let bad = db.publish(&c, "doc", "<p>broken", Some(RECIPE)).await;
    wait_until(Duration::from_secs(10), "errored", || async {
        row(&c, bad).await.0 == "errored"
    })
    .await;
    let good = db.publish(&c, "doc", "<p>fixed</p>", Some(RECIPE)).await;
    wait_until(Duration::from_secs(10), "newer current", || async {
        row(&c, good).await.0 == "current"
    })
    .await;
    // Requeueing the old errored one now supersedes it: it is older than the current.
    let n: i32 = c
        .query_one("select postpub.requeue_errored('doc')", &[])
        .await
        .expect("requeue_errored")
        .get(0);
    assert_eq!(n, 1);
    wait_until(Duration::from_secs(10), "old one superseded", || async {
        row(&c, bad).await.0 == "superseded"
    })
    .await;
    assert_eq!(row(&c, good).await.0, "current");
    db.assert_invariants(&c).await;
    d.stop().await;
}

#[tokio::test]
async fn requeue_of_a_version_that_is_not_errored_is_refused_clearly() {
    let (db, c) = TestDb::with_client().await;
    let v = db.publish(&c, "doc", "<p>x</p>", None).await;
    let msg = common::refused(&c, "select postpub.requeue($1)", &[&v]).await;
    assert!(msg.contains("is current, not errored"), "{msg}");
    let msg = common::refused(&c, "select postpub.requeue(999999)", &[]).await;
    assert!(msg.contains("does not exist"), "{msg}");
}

#[tokio::test]
async fn a_body_over_the_size_limit_is_errored_without_being_loaded() {
    let (db, c) = TestDb::with_client().await;
    let mut cfg = db.config();
    cfg.pipeline.steps = vec!["validate".into()];
    cfg.pipeline.max_body_bytes = 1000;
    let d = Daemon::start(cfg).await;
    let big = format!("<p>{}</p>", "x".repeat(2000));
    let v = db.publish(&c, "big", &big, Some(RECIPE)).await;
    wait_until(Duration::from_secs(10), "errored", || async {
        row(&c, v).await.0 == "errored"
    })
    .await;
    let (_, a, e) = row(&c, v).await;
    assert_eq!(a, 1);
    assert!(
        e.contains("more than pipeline.max_body_bytes (1000)"),
        "{e}"
    );
    d.stop().await;
}
