//! The long run (ignored by default): three daemon processes on a throwaway cluster under a
//! steady stream of publishes and deletes, with a fault every few seconds — `kill -9` of a
//! daemon (restarted), PostgreSQL restarted fast or immediate, the server paused, every
//! backend terminated. At the end nothing is lost, stuck or doubled.
//!
//! ```text
//! POSTPUB_SOAK_SECS=600 cargo test --release --test soak -- --ignored --nocapture
//! ```
//! (default 600 s; `POSTPUB_SOAK_SEED` repeats a run's sequence of faults).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::process::{self, Proc};
use common::{assert_nothing_lost, wait_settled, Script};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DAEMONS: usize = 3;

/// The worker settings of the daemons.
const WORKER: &str = "concurrency = 8\nbatch_size = 8\nlease = \"3s\"\npoll_interval = \"1s\"\n\
         max_attempts = 10\nbackoff = { initial = \"100ms\", max = \"1s\" }\nshutdown_timeout = \"5s\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long soak: POSTPUB_SOAK_SECS=600 cargo test --release --test soak -- --ignored --nocapture"]
async fn soak_under_repeated_crashes_restarts_and_stalls_loses_and_doubles_nothing() {
    let secs: u64 = std::env::var("POSTPUB_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let seed: u64 = std::env::var("POSTPUB_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("soak for {secs}s, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let cluster = Cluster::start().await;
    let script = Script::new("body=$(cat); sleep 0.1; printf '%s' \"$body\"");
    let daemon = || process::start_validate_and_command(&cluster.url(), WORKER, &script);
    let mut daemons: Vec<Proc> = (0..DAEMONS).map(|_| daemon()).collect();

    // The publisher: a version (or a deletion) every 10 ms over 200 documents, through
    // every outage; acknowledged ids are remembered.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new((Vec::<i64>::new(), 0u64)));
    let publisher = {
        let (url, stop, acked) = (cluster.url(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut client: Option<tokio_postgres::Client> = None;
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                // The publishing rate (the scenario), not a wait.
                tokio::time::sleep(Duration::from_millis(10)).await;
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    client = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                        Ok((c, conn)) => {
                            tokio::spawn(conn);
                            Some(c)
                        }
                        Err(_) => continue,
                    };
                }
                let Some(c) = client.as_ref() else { continue };
                n += 1;
                let doc = format!("soak-{}", (n * 7919) % 200);
                let r = tokio::time::timeout(Duration::from_secs(10), async {
                    if n.is_multiple_of(13) {
                        c.query_one("select postpub.delete($1)", &[&doc]).await
                    } else {
                        c.query_one(
                            "select postpub.publish($1, $2, 'p {}')",
                            &[&doc, &format!("<p>{n}</p>")],
                        )
                        .await
                    }
                })
                .await;
                let mut a = acked.lock().unwrap();
                match r {
                    Ok(Ok(row)) => a.0.push(row.get(0)),
                    Ok(Err(_)) => a.1 += 1,
                    Err(_) => {
                        a.1 += 1;
                        client = None; // stalled: start over on a fresh connection
                    }
                }
            }
        })
    };

    let started = Instant::now();
    let mut faults = std::collections::BTreeMap::<&str, u32>::new();
    while started.elapsed() < Duration::from_secs(secs) {
        // The scenario: a random quiet spell between two faults.
        tokio::time::sleep(Duration::from_millis(rng.random_range(2000..6000))).await;
        let fault = match rng.random_range(0..5) {
            0 => {
                let i = rng.random_range(0..daemons.len());
                daemons[i].kill9();
                daemons[i] = daemon();
                "kill -9 a daemon"
            }
            1 => {
                cluster.restart("fast").await;
                "restart -m fast"
            }
            2 => {
                cluster.restart("immediate").await;
                "restart -m immediate"
            }
            3 => {
                cluster.pause();
                // The scenario: the server stays paused for a random while.
                tokio::time::sleep(Duration::from_millis(rng.random_range(1000..5000))).await;
                cluster.resume();
                "pause the server"
            }
            _ => {
                let admin = cluster.admin().await;
                let _ = admin
                    .execute(
                        "select pg_terminate_backend(pid) from pg_stat_activity
                          where datname = 'postpub' and pid <> pg_backend_pid()",
                        &[],
                    )
                    .await;
                "terminate every backend"
            }
        };
        *faults.entry(fault).or_default() += 1;
    }
    stop.store(true, Ordering::Relaxed);
    publisher.await.expect("publisher");

    let c = cluster.client().await;
    wait_settled(&c, Duration::from_secs(120)).await;
    for d in &mut daemons {
        d.signal("-TERM");
        assert!(d.wait_exit(Duration::from_secs(30)).await.success());
    }
    let (ids, refused) = acked.lock().unwrap().clone();
    let acc = assert_nothing_lost(&c, &ids).await;
    let errored = common::count(
        &c,
        "select count(*) from postpub.versions where state = 'errored'",
    )
    .await;
    println!(
        "faults {faults:?}; {} publishes acknowledged, {refused} refused; {acc:?}; errored {errored}",
        ids.len()
    );
    assert_eq!(errored, 0, "a version errored because of the faults");
}
