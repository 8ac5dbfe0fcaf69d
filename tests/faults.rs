//! Database faults that hit the daemon's sessions, not the server (issue 19): the database
//! made read-only for new sessions (`alter database … set default_transaction_read_only`,
//! what a failover onto a standby looks like), the daemon's backends shut down by an
//! administrator mid-claim and mid-finish (57P01), and connections dropped while idle.
//! Each ends in recovery: pending versions become current within seconds of the database
//! taking writes again, and `/readyz` answers 503 while claims fail. Everything happens in
//! the test's own database on the shared server (no cluster restart needed).

mod common;

use std::time::{Duration, Instant};

use common::ops::get;
use common::{assert_settled, holds_for, wait_until, Daemon, Script, TestDb};
use tokio_postgres::Client;

/// A daemon with HTTP on a free port and the given pipeline.
async fn daemon(db: &TestDb, steps: &[&str], program: Option<&Script>) -> (Daemon, u16) {
    let mut cfg = db.config();
    cfg.pipeline.steps = steps.iter().map(|s| s.to_string()).collect();
    if let Some(script) = program {
        cfg.pipeline.command.program = script.program();
    }
    let (d, port) = Daemon::start_with_http(cfg).await;
    wait_until(Duration::from_secs(10), "/readyz 200", || async {
        get(port, "/readyz", &[]).await.status == 200
    })
    .await;
    (d, port)
}

/// Whether a backend of the test database running a statement like `pattern` waits for
/// a lock.
async fn waits_on_lock(c: &Client, pattern: &str) -> bool {
    c.query_one(
        "select count(*) from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock'
            and query ilike $1",
        &[&pattern],
    )
    .await
    .expect("lock waiters")
    .get::<_, i64>(0)
        > 0
}

/// Terminates the backends of the test database that wait for a lock; returns how many.
async fn terminate_lock_waiters(c: &Client) -> i64 {
    c.query_one(
        "select count(pg_terminate_backend(pid)) from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock'",
        &[],
    )
    .await
    .expect("terminate lock waiters")
    .get(0)
}

/// Terminates every backend of the test database but `c`'s own; returns how many.
async fn terminate_others(c: &Client) -> i64 {
    c.query_one(
        "select count(pg_terminate_backend(pid)) from pg_stat_activity
          where datname = current_database() and pid <> pg_backend_pid()",
        &[],
    )
    .await
    .expect("terminate backends")
    .get(0)
}

async fn states(c: &Client, ids: &[i64]) -> Vec<String> {
    c.query(
        "select state::text from postpub.versions where id = any($1) order by id",
        &[&ids],
    )
    .await
    .expect("states")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn all_current(c: &Client, ids: &[i64]) -> bool {
    states(c, ids).await.iter().all(|s| s == "current")
}

async fn publish_n(db: &TestDb, c: &Client, prefix: &str, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            db.publish(c, &format!("{prefix}{i}"), "<p>x</p>", Some("p {}"))
                .await,
        );
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_read_only_for_ten_seconds_recovers_within_seconds_and_readyz_says_so() {
    let (db, c) = TestDb::with_client().await;
    let (d, port) = daemon(&db, &["validate"], None).await;
    let before = publish_n(&db, &c, "before-", 5).await;
    wait_until(
        Duration::from_secs(10),
        "the first versions current",
        || all_current(&c, &before),
    )
    .await;

    // New sessions of this database are read-only; the daemon's are made new.
    c.batch_execute(&format!(
        "alter database {} set default_transaction_read_only = on",
        db.name
    ))
    .await
    .expect("read-only on");
    let killed = terminate_others(&c).await;
    assert!(killed > 0, "the daemon had backends");
    // This session predates the setting: it still writes, like an application whose
    // connection was not cut.
    let during = publish_n(&db, &c, "during-", 5).await;
    wait_until(
        Duration::from_secs(15),
        "/readyz 503 while claims fail",
        || async { get(port, "/readyz", &[]).await.status == 503 },
    )
    .await;
    let r = get(port, "/readyz", &[]).await;
    assert!(r.error().contains("claims are failing"), "{r:?}");
    // The fault lasts 10 s; all that time nothing is claimed and the daemon says unready.
    holds_for(
        Duration::from_secs(10),
        Duration::from_millis(250),
        "unready and nothing claimed on a read-only database",
        || async {
            assert_eq!(
                get(port, "/readyz", &[]).await.status,
                503,
                "ready on a read-only database"
            );
            let s = states(&c, &during).await;
            assert!(s.iter().all(|s| s == "post-publication"), "{s:?}");
            true
        },
    )
    .await;
    c.batch_execute(&format!(
        "alter database {} reset default_transaction_read_only",
        db.name
    ))
    .await
    .expect("read-only off");
    let writable = Instant::now();
    wait_until(
        Duration::from_secs(15),
        "the pending versions current",
        || all_current(&c, &during),
    )
    .await;
    let recovered = writable.elapsed();
    wait_until(Duration::from_secs(10), "/readyz 200 again", || async {
        get(port, "/readyz", &[]).await.status == 200
    })
    .await;
    println!(
        "read-only for 10 s: pending versions current {:.2}s after the database was writable, ready {:.2}s after",
        recovered.as_secs_f64(),
        writable.elapsed().as_secs_f64()
    );
    // "Within seconds": the claim loop's retry delay is at most 5 s.
    assert!(recovered < Duration::from_secs(8), "{recovered:?}");
    let after = publish_n(&db, &c, "after-", 3).await;
    wait_until(Duration::from_secs(10), "new versions current", || {
        all_current(&c, &after)
    })
    .await;
    d.stop().await;
    assert_settled(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_shutting_down_a_claim_in_progress_is_recovered_from() {
    let (db, c) = TestDb::with_client().await;
    let (d, port) = daemon(&db, &["validate"], None).await;
    // Versions claimable two seconds from now: published (and their audit rows written)
    // before the lock below, claimed after it.
    let mut p = db.client().await;
    let ptx = p.transaction().await.expect("tx");
    let mut ids = Vec::new();
    for i in 0..3 {
        let id: i64 = ptx
            .query_one(
                "select postpub.publish($1, '<p>x</p>', 'p {}')",
                &[&format!("claimed-{i}")],
            )
            .await
            .expect("publish")
            .get(0);
        ids.push(id);
    }
    ptx.execute(
        "update postpub.versions set run_after = now() + interval '2 seconds' where id = any($1)",
        &[&ids],
    )
    .await
    .expect("delay");
    ptx.commit().await.expect("commit");
    // The claim then waits on this lock (it writes its claim's row), until its backend is
    // terminated: 57P01 in the middle of the claim statement.
    let mut lock = db.client().await;
    let tx = lock.transaction().await.expect("tx");
    tx.batch_execute("lock table postpub.claims in exclusive mode")
        .await
        .expect("lock");
    wait_until(
        Duration::from_secs(10),
        "the claim waiting on the lock",
        || waits_on_lock(&c, "%_claim%"),
    )
    .await;
    let killed = terminate_lock_waiters(&c).await;
    assert!(killed > 0);
    tx.rollback().await.expect("release the lock");
    wait_until(Duration::from_secs(15), "the versions current", || {
        all_current(&c, &ids)
    })
    .await;
    wait_until(Duration::from_secs(10), "/readyz 200", || async {
        get(port, "/readyz", &[]).await.status == 200
    })
    .await;
    d.stop().await;
    assert_settled(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_shutting_down_a_finish_in_progress_is_recovered_from() {
    let (db, c) = TestDb::with_client().await;
    // The step waits for a file, so the test can take the lock between claim and finish.
    let script = Script::new(
        "body=$(cat); while [ ! -e \"$(dirname \"$0\")/go\" ]; do sleep 0.05; done; printf '%s' \"$body\"",
    );
    let (d, port) = daemon(&db, &["command"], Some(&script)).await;
    let ids = publish_n(&db, &c, "finished-", 2).await;
    wait_until(Duration::from_secs(10), "both claimed", || async {
        states(&c, &ids).await.iter().all(|s| s == "processing")
    })
    .await;
    let mut lock = db.client().await;
    let tx = lock.transaction().await.expect("tx");
    // The finish writes the outbox event of each publish.
    tx.batch_execute("lock table postpub.outbox in exclusive mode")
        .await
        .expect("lock");
    std::fs::write(script.dir.join("go"), "").expect("go");
    wait_until(
        Duration::from_secs(10),
        "the finish waiting on the lock",
        || waits_on_lock(&c, "%_finish%"),
    )
    .await;
    assert!(terminate_lock_waiters(&c).await > 0);
    tx.rollback().await.expect("release the lock");
    wait_until(Duration::from_secs(15), "the versions current", || {
        all_current(&c, &ids)
    })
    .await;
    assert_eq!(get(port, "/readyz", &[]).await.status, 200);
    d.stop().await;
    assert_settled(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_lost_while_idle_are_replaced_and_work_goes_on() {
    let (db, c) = TestDb::with_client().await;
    let (d, port) = daemon(&db, &["validate"], None).await;
    for round in 0..3 {
        // Every daemon connection idle (listener, pools) is cut at once.
        assert!(terminate_others(&c).await > 0);
        let ids = publish_n(&db, &c, &format!("round{round}-"), 3).await;
        let t0 = Instant::now();
        wait_until(Duration::from_secs(15), "the versions current", || {
            all_current(&c, &ids)
        })
        .await;
        println!(
            "round {round}: current {:.2}s after the cut",
            t0.elapsed().as_secs_f64()
        );
    }
    wait_until(Duration::from_secs(10), "/readyz 200", || async {
        get(port, "/readyz", &[]).await.status == 200
    })
    .await;
    d.stop().await;
    assert_settled(&c).await;
}
