//! PostgreSQL itself goes away: restarted (fast and immediate shutdown) under a stream of
//! publishes, or paused (SIGSTOP) longer than the health-check timeout. Each test runs its
//! own throwaway cluster (tests/common/cluster.rs), never the shared server.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{
    assert_nothing_lost, assert_settled, reconnect, wait_settled, wait_until, Daemon, EventLog,
    Script,
};
use postpub::config::Config;
use tokio_postgres::Client;

/// One cluster-breaking test at a time: they are timing-sensitive and the machine is small.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A step that takes a moment, so that versions are in flight when the server goes.
const SLOW_STEP: &str = "body=$(cat); sleep 0.2; printf '%s' \"$body\"";

/// What a publisher did.
#[derive(Default)]
struct Published {
    /// Versions whose publish was acknowledged.
    ids: Vec<i64>,
    /// Publishes that failed (the server was down); a failure at commit may still have
    /// committed, so such versions are checked like any other, just not counted here.
    failed: u64,
}

/// Publishes (and sometimes deletes) versions of `docs` documents every `every`, through
/// outages, until `stop`; reconnects as needed.
fn publisher(
    url: String,
    docs: u32,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Published>>, tokio::task::JoinHandle<()>) {
    let out = Arc::new(Mutex::new(Published::default()));
    let o = out.clone();
    let h = tokio::spawn(async move {
        let mut client: Option<Client> = None;
        let mut n: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            // The publishing rate (the scenario), not a wait.
            tokio::time::sleep(every).await;
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                    Ok((c, conn)) => {
                        tokio::spawn(conn);
                        Some(c)
                    }
                    Err(_) => {
                        o.lock().unwrap().failed += 1;
                        continue;
                    }
                };
            }
            let Some(c) = client.as_ref() else { continue };
            n += 1;
            let doc = format!("stream-{}", (n * 7919) % u64::from(docs));
            let r = if n.is_multiple_of(10) {
                c.query_one("select postpub.delete($1)", &[&doc]).await
            } else {
                let body = format!("<p>{doc} #{n}</p>");
                c.query_one("select postpub.publish($1, $2, 'p {}')", &[&doc, &body])
                    .await
            };
            match r {
                Ok(row) => o.lock().unwrap().ids.push(row.get(0)),
                Err(_) => o.lock().unwrap().failed += 1,
            }
        }
    });
    (out, h)
}

async fn state(c: &Client, id: i64) -> Option<String> {
    c.query_opt(
        "select state::text from postpub.versions where id = $1",
        &[&id],
    )
    .await
    .ok()
    .flatten()
    .map(|r| r.get(0))
}

/// Waits until the stream has moved on: `n` more acknowledged publishes and more claims
/// by the daemons than when called (work builds up and flows).
async fn stream_moves_on(published: &Mutex<Published>, log: &EventLog, n: usize) {
    let acked = || published.lock().unwrap().ids.len();
    let claimed = || {
        log.tally()
            .claims
            .values()
            .map(|n| u64::from(*n))
            .sum::<u64>()
    };
    let (acked_before, claimed_before) = (acked(), claimed());
    wait_until(
        Duration::from_secs(30),
        &format!("{n} more publishes acknowledged and more claims"),
        || async { acked() >= acked_before + n && claimed() > claimed_before },
    )
    .await;
}

/// Recovery figures of one restart.
struct Recovery {
    /// `pg_ctl restart` until it accepts connections.
    server_down: Duration,
    /// Server back until every daemon listens again.
    listeners_back: Duration,
    /// Server back until a version published right then is current.
    first_current: Duration,
}

async fn restart_and_measure(
    cluster: &Cluster,
    log: &EventLog,
    daemons: usize,
    mode: &str,
    round: u32,
) -> Recovery {
    let before = log.tally().listener_connected.len();
    let t0 = Instant::now();
    cluster.restart(mode).await;
    let up = Instant::now();
    let c = reconnect(&cluster.url()).await;
    let probe: i64 = c
        .query_one(
            "select postpub.publish($1, '<p>probe</p>', 'p {}')",
            &[&format!("probe-{round}")],
        )
        .await
        .expect("publish the probe")
        .get(0);
    wait_until(
        Duration::from_secs(30),
        "the probe published after the restart to be current",
        || async { state(&c, probe).await.as_deref() == Some("current") },
    )
    .await;
    let first_current = up.elapsed();
    wait_until(
        Duration::from_secs(30),
        "every daemon listening again",
        || async { log.tally().listener_connected.len() >= before + daemons },
    )
    .await;
    let last_listener = *log
        .tally()
        .listener_connected
        .iter()
        .max()
        .expect("reconnects");
    Recovery {
        server_down: up - t0,
        listeners_back: last_listener.saturating_duration_since(up),
        first_current,
    }
}

fn cluster_config(cluster: &Cluster, script: &Script) -> Config {
    let mut cfg = cluster.config();
    cfg.worker.concurrency = 8;
    cfg.worker.batch_size = 8;
    cfg.pipeline.steps = vec!["validate".into(), "command".into()];
    cfg.pipeline.command.program = script.program();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarts_fast_and_immediate_under_load_lose_and_double_nothing() {
    let _serial = SERIAL.lock().await;
    common::init_logs();
    let cluster = Cluster::start().await;
    let script = Script::new(SLOW_STEP);
    let cfg = cluster_config(&cluster, &script);
    let log = EventLog::default();
    let mut daemons = Vec::new();
    for _ in 0..4 {
        let mut d = Daemon::start(cfg.clone()).await;
        log.follow(&mut d);
        daemons.push(d);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (published, publishing) =
        publisher(cluster.url(), 60, Duration::from_millis(15), stop.clone());

    let mut figures = Vec::new();
    for (round, mode) in [(1, "fast"), (2, "immediate"), (3, "fast"), (4, "immediate")] {
        // Work builds up and flows before each restart.
        stream_moves_on(&published, &log, 100).await;
        let r = restart_and_measure(&cluster, &log, daemons.len(), mode, round).await;
        println!(
            "restart -m {mode:<9}: server back after {:.2}s; then all 4 daemons listening after {:.2}s, \
             a version published then current after {:.2}s",
            r.server_down.as_secs_f64(),
            r.listeners_back.as_secs_f64(),
            r.first_current.as_secs_f64()
        );
        figures.push((mode, r));
    }
    stream_moves_on(&published, &log, 50).await;
    stop.store(true, Ordering::Relaxed);
    publishing.await.expect("publisher");

    let c = reconnect(&cluster.url()).await;
    wait_settled(&c, Duration::from_secs(60)).await;
    for d in daemons {
        d.stop().await;
    }
    let (ids, failed) = {
        let p = published.lock().unwrap();
        (p.ids.clone(), p.failed)
    };
    let acc = assert_nothing_lost(&c, &ids).await;
    let tally = log.tally();
    let event_claims: u64 = tally.claims.values().map(|n| u64::from(*n)).sum();
    println!(
        "{} publishes acknowledged, {failed} refused during the outages; {} versions in all, {} claimed; \
         claims: {} in the audit trail ({} reclaims after a retry/rescue/release, duplicates {}), \
         {event_claims} reported by the daemons (claims lost with the server: {}); rescued {}, fenced off {}",
        ids.len(),
        acc.versions,
        acc.claimed,
        acc.claims,
        acc.reclaims,
        acc.duplicates,
        event_claims.saturating_sub(acc.claims as u64),
        tally.rescued,
        tally.lease_lost
    );
    assert_eq!(tally.lagged, 0, "the event log missed events");
    assert!(ids.len() > 300, "the stream kept publishing: {}", ids.len());
    for (mode, r) in &figures {
        assert!(
            r.first_current < Duration::from_secs(10),
            "-m {mode}: first version current only after {:?}",
            r.first_current
        );
        assert!(
            r.listeners_back < Duration::from_secs(10),
            "-m {mode}: listeners back only after {:?}",
            r.listeners_back
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_server_is_detected_by_the_health_check_and_work_resumes_after_sigcont() {
    let _serial = SERIAL.lock().await;
    common::init_logs();
    let cluster = Cluster::start().await;
    let script = Script::new(SLOW_STEP);
    let mut cfg = cluster_config(&cluster, &script);
    cfg.database.connect_timeout = Duration::from_secs(1); // the health check's timeout
    cfg.worker.lease = Duration::from_secs(3); // shorter than the stall: leases expire
    let log = EventLog::default();
    let mut daemons = Vec::new();
    for _ in 0..2 {
        let mut d = Daemon::start(cfg.clone()).await;
        log.follow(&mut d);
        daemons.push(d);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (published, publishing) =
        publisher(cluster.url(), 40, Duration::from_millis(20), stop.clone());
    let c0 = cluster.client().await;
    // Work builds up and flows before the stall.
    stream_moves_on(&published, &log, 100).await;

    // Longer than the health check's timeout (1 s), the lease (3 s) and the TCP keepalive
    // limit (10 s idle + 3 x 5 s): keepalives cannot see a paused server, whose kernel
    // still answers the probes, so the pool's connections should come through it.
    let stall = Duration::from_secs(30);
    let backends_before: Vec<i32> = c0
        .query(
            "select pid from pg_stat_activity where datname = current_database() and application_name = 'postpub'",
            &[],
        )
        .await
        .expect("backends")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost_before = log.tally().listener_lost;
    let connected_before = log.tally().listener_connected.len();
    cluster.pause();
    let paused = Instant::now();
    wait_until(
        stall - Duration::from_secs(1),
        "every daemon to notice the stall",
        || async { log.tally().listener_lost >= lost_before + daemons.len() as u64 },
    )
    .await;
    let noticed = paused.elapsed();
    for d in &daemons {
        assert!(!*d.ready.borrow(), "not ready while the server is stalled");
    }
    // The scenario: the server stays paused for the whole stall.
    tokio::time::sleep(stall.saturating_sub(paused.elapsed())).await;
    cluster.resume();
    let resumed = Instant::now();
    let c = reconnect(&cluster.url()).await;
    let probe = common::count(
        &c,
        "select postpub.publish('probe', '<p>probe</p>', 'p {}')",
    )
    .await;
    wait_until(Duration::from_secs(30), "the probe current", || async {
        state(&c, probe).await.as_deref() == Some("current")
    })
    .await;
    let first_current = resumed.elapsed();
    wait_until(Duration::from_secs(30), "both listening again", || async {
        log.tally().listener_connected.len() >= connected_before + daemons.len()
    })
    .await;
    let listening = resumed.elapsed();
    let survived: i64 = c
        .query_one(
            "select count(*) from pg_stat_activity where pid = any($1)",
            &[&backends_before],
        )
        .await
        .expect("backends")
        .get(0);
    println!(
        "{survived} of the daemons' {} connections from before the stall still open after it (the listeners reconnect)",
        backends_before.len()
    );
    println!(
        "server paused {stall:?}: stall noticed after {:.2}s (health check timeout 1s); after SIGCONT \
         a new version current in {:.2}s, both daemons listening again in {:.2}s",
        noticed.as_secs_f64(),
        first_current.as_secs_f64(),
        listening.as_secs_f64()
    );

    stream_moves_on(&published, &log, 50).await;
    stop.store(true, Ordering::Relaxed);
    publishing.await.expect("publisher");
    wait_settled(&c, Duration::from_secs(60)).await;
    for d in daemons {
        d.stop().await;
    }
    let ids = published.lock().unwrap().ids.clone();
    let acc = assert_nothing_lost(&c, &ids).await;
    let tally = log.tally();
    println!(
        "{} versions, {} claims ({} after a rescue/retry, duplicates {}); rescued {}, fenced off {}",
        acc.versions, acc.claims, acc.reclaims, acc.duplicates, tally.rescued, tally.lease_lost
    );
    assert!(
        noticed < Duration::from_secs(5),
        "noticed after {noticed:?}"
    );
    assert!(first_current < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_stops_within_its_shutdown_timeout_even_while_the_server_is_paused() {
    let _serial = SERIAL.lock().await;
    common::init_logs();
    let cluster = Cluster::start().await;
    // Versions stay in flight through the stall, and slots stay free, so the claim loop,
    // the renewer, the rescuer and the finisher are all waiting on the server.
    let script = Script::new("body=$(cat); sleep 3; printf '%s' \"$body\"");
    let mut cfg = cluster_config(&cluster, &script);
    cfg.database.connect_timeout = Duration::from_secs(1);
    cfg.worker.poll_interval = Duration::from_millis(200);
    cfg.worker.lease = Duration::from_secs(3); // renewals every second
    cfg.worker.shutdown_timeout = Duration::from_secs(2);
    let mut d = Daemon::start(cfg.clone()).await;
    let c = cluster.client().await;
    for i in 0..5 {
        c.execute(
            "select postpub.publish($1, '<p>x</p>', 'p {}')",
            &[&format!("doc-{i}")],
        )
        .await
        .expect("publish");
    }
    for _ in 0..5 {
        d.wait_event(Duration::from_secs(10), |e| {
            matches!(e, postpub::event::Event::Claimed { .. })
        })
        .await;
    }
    cluster.pause();
    // The scenario: 3 s into the stall (long enough for a poll, a rescue, a renewal and
    // the end of the steps to be waiting on the server), the stop is requested.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t0 = Instant::now();
    let stopping = tokio::spawn(d.stop());
    wait_until(
        Duration::from_secs(20),
        "the daemon to stop while the server is paused",
        || async { stopping.is_finished() },
    )
    .await;
    let took = t0.elapsed();
    cluster.resume();
    println!("stop requested 3s into a server stall; the daemon stopped after {took:.2?}");
    stopping.await.expect("the daemon stopped cleanly");
    // shutdown_timeout (2 s) + the release grace (5 s), with room for a loaded machine.
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");

    // What it held comes back through its leases (or its late release); another daemon
    // finishes everything.
    let d2 = Daemon::start(cfg).await;
    let c = reconnect(&cluster.url()).await;
    wait_settled(&c, Duration::from_secs(30)).await;
    assert_settled(&c).await;
    d2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_answered_after_the_stop_is_released_not_abandoned() {
    let _serial = SERIAL.lock().await;
    common::init_logs();
    let cluster = Cluster::start().await;
    let script = Script::new("body=$(cat); sleep 5; printf '%s' \"$body\"");
    let mut cfg = cluster_config(&cluster, &script);
    cfg.database.connect_timeout = Duration::from_secs(1);
    cfg.worker.poll_interval = Duration::from_millis(200);
    cfg.worker.shutdown_timeout = Duration::from_secs(3);
    let d = Daemon::start(cfg).await;
    let c = cluster.client().await;
    // A version that becomes claimable in 2 s (as after a retry's backoff), made in the
    // publishing transaction so that the daemon never sees it claimable earlier.
    c.batch_execute(
        "begin;
         select postpub.publish('later', '<p>x</p>', 'p {}');
         update postpub.versions set run_after = now() + interval '2 seconds' where document = 'later';
         commit;",
    )
    .await
    .expect("publish");
    // The scenario's timeline: 0.3 s running with nothing claimable; then paused, so the
    // daemon's next poll sends a claim that the server answers only after the stop was
    // requested (2.5 s later, when the version is claimable), and resumed 0.5 s after that.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.pause();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let t0 = Instant::now();
    let stopping = tokio::spawn(d.stop());
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.resume();
    stopping.await.expect("the daemon stopped cleanly");
    let took = t0.elapsed();
    let c = reconnect(&cluster.url()).await;
    let r = c
        .query_one(
            "select state::text, attempts, coalesce(locked_by, ''),
                    (select count(*) from postpub.transitions t where t.version_id = v.id and t.to_state = 'processing')
               from postpub.versions v where document = 'later'",
            &[],
        )
        .await
        .expect("row");
    let (state, attempts, locked_by, claims): (String, i32, String, i64) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    println!("stopped after {took:.2?}; the late-claimed version: {state}, attempts {attempts}, claims {claims}");
    assert_eq!(claims, 1, "the claim sent during the stall was answered");
    assert_eq!(
        (state.as_str(), attempts, locked_by.as_str()),
        ("post-publication", 0, ""),
        "claimed during the stop, then released (not left to its lease)"
    );
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    common::assert_invariants(&c).await;
}
