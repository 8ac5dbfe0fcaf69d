//! The LISTEN connection: losing it loses nothing.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{terminate_listeners, wait_until, Daemon, EventLog, TestDb};
use postpub::event::Event;

#[tokio::test]
async fn killing_the_listeners_backend_loses_nothing() {
    let (db, c) = TestDb::with_client().await;
    let mut cfg = db.config();
    cfg.worker.poll_interval = Duration::from_secs(60); // only LISTEN can wake it in time
    let mut d = Daemon::start(cfg).await;
    let warm = db.publish(&c, "warm", "<p>x</p>", Some("p {}")).await;
    wait_until(Duration::from_secs(5), "warm-up current", || async {
        db.state(&c, warm).await == "current"
    })
    .await;

    for round in 1..=3u64 {
        assert_eq!(terminate_listeners(&c).await, 1, "the listener's backend");
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
    let (db, c) = TestDb::with_client().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_comes_back_quickly_however_often_its_backend_is_terminated() {
    let (db, c) = TestDb::with_client().await;
    let mut cfg = db.config();
    cfg.worker.poll_interval = Duration::from_secs(60); // only LISTEN can wake it in time
    cfg.worker.concurrency = 8;
    cfg.pipeline.steps = vec!["validate".into()];
    let mut d = Daemon::start(cfg).await;
    let log = EventLog::default();
    log.follow(&mut d);
    wait_until(
        Duration::from_secs(5),
        "the first connect in the log",
        || async { !log.tally().listener_connected.is_empty() },
    )
    .await;

    // Load: a stream of publishes on another connection the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (url, stop) = (db.url.clone(), stop.clone());
        tokio::spawn(async move {
            let c = common::connect(&url).await;
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                c.execute(
                    "select postpub.publish('load-' || ($1::int % 50), '<p>x</p>', 'p {}')",
                    &[&(n as i32)],
                )
                .await
                .expect("publish");
                // The publishing rate (the scenario), not a wait.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            n
        })
    };

    let mut worst = Duration::ZERO;
    for round in 1..=10usize {
        let before = log.tally().listener_connected.len();
        let t0 = Instant::now();
        assert_eq!(
            terminate_listeners(&c).await,
            1,
            "round {round}: the listener's backend"
        );
        wait_until(Duration::from_secs(30), "the listener back", || async {
            log.tally().listener_connected.len() > before
        })
        .await;
        let back = t0.elapsed();
        worst = worst.max(back);
        // Published after the reconnect: only a notification on the new LISTEN wakes the
        // daemon before the 60 s poll.
        let probe = db
            .publish(&c, &format!("probe-{round}"), "<p>p</p>", Some("p {}"))
            .await;
        let t1 = Instant::now();
        wait_until(Duration::from_secs(5), "the probe current", || async {
            db.state(&c, probe).await == "current"
        })
        .await;
        println!(
            "termination {round}: listening again after {:.2}s, probe current after {:.2}s",
            back.as_secs_f64(),
            t1.elapsed().as_secs_f64()
        );
    }
    stop.store(true, Ordering::Relaxed);
    let n = publisher.await.expect("publisher");
    wait_until(Duration::from_secs(20), "the stream settled", || async {
        db.pending(&c).await == 0
    })
    .await;
    assert!(
        worst < Duration::from_secs(3),
        "a reconnect took {worst:?}: the backoff must start over after a good connection"
    );
    println!("{n} publishes during 10 terminations");
    common::assert_processed_once(&c).await;
    d.stop().await;
}
