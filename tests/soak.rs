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
use common::{assert_settled, claims, wait_until, Script};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DAEMONS: usize = 3;

fn daemon(cluster: &Cluster, script: &Script) -> Proc {
    Proc::start(&process::config(
        &cluster.url(),
        "concurrency = 8\nbatch_size = 8\nlease = \"3s\"\npoll_interval = \"1s\"\n\
         max_attempts = 10\nbackoff = { initial = \"100ms\", max = \"1s\" }\nshutdown_timeout = \"5s\"",
        "steps = [\"validate\", \"command\"]",
        &format!("program = \"{}\"\ntimeout = \"30s\"", script.program()),
    ))
}

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
    let mut daemons: Vec<Proc> = (0..DAEMONS).map(|_| daemon(&cluster, &script)).collect();

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
        tokio::time::sleep(Duration::from_millis(rng.random_range(2000..6000))).await;
        let fault = match rng.random_range(0..5) {
            0 => {
                let i = rng.random_range(0..daemons.len());
                daemons[i].kill9();
                daemons[i] = daemon(&cluster, &script);
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
    wait_until(Duration::from_secs(120), "everything settled", || async {
        c.query_one(
            "select count(*) from postpub.versions where state in ('post-publication', 'processing')",
            &[],
        )
        .await
        .map(|r| r.get::<_, i64>(0) == 0)
        .unwrap_or(false)
    })
    .await;
    for d in &mut daemons {
        d.signal("-TERM");
        assert!(d.wait_exit(Duration::from_secs(30)).success());
    }
    let (ids, refused) = acked.lock().unwrap().clone();
    let found: i64 = c
        .query_one(
            "select count(*) from postpub.versions where id = any($1)",
            &[&ids],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(found, ids.len() as i64, "an acknowledged publish was lost");
    assert_settled(&c).await;
    let acc = claims(&c).await;
    let errored: i64 = c
        .query_one(
            "select count(*) from postpub.versions where state = 'errored'",
            &[],
        )
        .await
        .expect("errored")
        .get(0);
    println!(
        "faults {faults:?}; {} publishes acknowledged, {refused} refused; {acc:?}; errored {errored}",
        ids.len()
    );
    assert_eq!(acc.duplicates, 0, "{acc:?}");
    assert_eq!(acc.published_not_once, 0, "{acc:?}");
    assert_eq!(errored, 0, "a version errored because of the faults");
}
