//! The LISTEN connection: losing it loses nothing.

mod common;

use std::time::Duration;

use common::{wait_until, Daemon, TestDb};
use postpub::event::Event;

#[tokio::test]
async fn killing_the_listeners_backend_loses_nothing() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let mut cfg = db.config();
    cfg.worker.poll_interval = Duration::from_secs(60); // only LISTEN can wake it in time
    let mut d = Daemon::start(cfg).await;
    let warm = db.publish(&c, "warm", "<p>x</p>", Some("p {}")).await;
    wait_until(Duration::from_secs(5), "warm-up current", || async {
        db.state(&c, warm).await == "current"
    })
    .await;

    for round in 1..=3u64 {
        let killed: i64 = c
            .query_one(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity
                  where datname = current_database() and pid <> pg_backend_pid()
                    and query ilike 'listen%'",
                &[],
            )
            .await
            .expect("terminate")
            .get(0);
        assert_eq!(killed, 1, "the listener's backend");
        // Published while the listener is down: its notification goes nowhere.
        let ids = [
            db.publish(&c, &format!("lost-{round}-a"), "<p>a</p>", Some("p {}"))
                .await,
            db.publish(&c, &format!("lost-{round}-b"), "<p>b</p>", Some("p {}"))
                .await,
        ];
        d.wait_event(
            Duration::from_secs(10),
            |e| matches!(e, Event::ListenerConnected { reconnects } if *reconnects >= round),
        )
        .await;
        wait_until(
            Duration::from_secs(5),
            "versions published during the outage",
            || async {
                db.state(&c, ids[0]).await == "current" && db.state(&c, ids[1]).await == "current"
            },
        )
        .await;
    }
    db.assert_invariants(&c).await;
    d.stop().await;
}

#[tokio::test]
async fn terminating_every_backend_of_the_daemon_loses_nothing() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let mut cfg = db.config();
    cfg.worker.poll_interval = Duration::from_secs(60);
    let d = Daemon::start(cfg).await;
    let warm = db.publish(&c, "warm", "<p>x</p>", Some("p {}")).await;
    wait_until(Duration::from_secs(5), "warm-up current", || async {
        db.state(&c, warm).await == "current"
    })
    .await;
    c.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity
          where datname = current_database() and pid <> pg_backend_pid()",
        &[],
    )
    .await
    .expect("terminate");
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            db.publish(&c, &format!("after-{i}"), "<p>x</p>", Some("p {}"))
                .await,
        );
    }
    wait_until(Duration::from_secs(15), "all 5 current", || async {
        let mut all = true;
        for id in &ids {
            all &= db.state(&c, *id).await == "current";
        }
        all
    })
    .await;
    db.assert_invariants(&c).await;
    d.stop().await;
}
