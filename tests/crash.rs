//! A daemon process killed with `kill -9` in the middle of a step: its leases expire and
//! another daemon rescues and publishes the versions, each exactly once.

mod common;

use std::time::{Duration, Instant};

use common::process::{self, Proc};
use common::{assert_nothing_lost, held_by, wait_until, Daemon, Script, TestDb};
use postpub::event::Event;

/// Sleeps on the first attempt (the daemon is killed meanwhile), passes the body through
/// on the next. Records its pid so the test can end the orphaned `sleep`.
const STEP: &str = r#"body=$(cat)
echo $$ >> "$(dirname "$0")/pids"
[ "$POSTPUB_ATTEMPT" = 1 ] && exec sleep 120
printf '%s' "$body""#;

/// Ends the steps the killed daemon left behind (orphans of our own test, by pid).
fn end_orphans(script: &Script) {
    let pids = std::fs::read_to_string(script.dir.join("pids")).unwrap_or_default();
    for pid in pids.lines().filter_map(|p| p.trim().parse::<u32>().ok()) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).starts_with("sleep") {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_step_has_its_versions_rescued_by_another_after_the_lease() {
    let (db, c) = TestDb::with_client().await;
    let script = Script::new(STEP);
    let lease = Duration::from_secs(2);
    let mut a = Proc::start(&process::config(
        &db.url,
        "concurrency = 4\nlease = \"2s\"\npoll_interval = \"500ms\"",
        "steps = [\"command\"]",
        &format!("program = \"{}\"\ntimeout = \"5m\"", script.program()),
    ));
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            db.publish(&c, &format!("crash-{i}"), "<p>x</p>", Some("p {}"))
                .await,
        );
    }
    let held_by_a = format!(":{}:", a.pid());
    wait_until(Duration::from_secs(15), "daemon A holds all 4", || async {
        held_by(&c, a.pid()).await == 4
    })
    .await;

    // B starts with nothing to claim: everything is A's.
    let mut cfg = db.command_config(&script);
    cfg.worker.lease = lease;
    let cfg_rescue_interval = cfg.worker.rescue_interval();
    let mut b = Daemon::start(cfg).await;

    let lease_left: f64 = c
        .query_one(
            "select extract(epoch from max(locked_until) - clock_timestamp())::float8 from postpub.versions",
            &[],
        )
        .await
        .expect("lease left")
        .get(0);
    let killed = Instant::now();
    a.kill9();
    b.wait_event(Duration::from_secs(15), |e| {
        matches!(e, Event::Rescued { .. })
    })
    .await;
    let rescued_after = killed.elapsed();
    wait_until(Duration::from_secs(20), "all 4 current", || async {
        db.counts(&c).await.get("current") == Some(&4)
    })
    .await;
    let current_after = killed.elapsed();
    println!(
        "kill -9 with {lease_left:.2}s of lease left -> first rescue {:.2}s, -> all 4 current {:.2}s \
         (lease {lease:?}, renewed every {:?}, rescue every {:?})",
        rescued_after.as_secs_f64(),
        current_after.as_secs_f64(),
        lease / 3,
        cfg_rescue_interval
    );
    // Not before the lease could have run out (it was renewed at most lease/3 before the
    // kill), and not long after it did.
    assert!(
        rescued_after >= lease * 2 / 3 - Duration::from_millis(100),
        "rescued {rescued_after:?} after the kill: before the lease expired"
    );
    assert!(
        current_after < Duration::from_secs(15),
        "took {current_after:?}"
    );
    for id in &ids {
        let r = c
            .query_one(
                "select v.attempts,
                        (select why from postpub.transitions t where t.version_id = v.id
                          and t.from_state = 'processing' order by t.id limit 1)
                   from postpub.versions v where v.id = $1",
                &[id],
            )
            .await
            .expect("row");
        assert_eq!(r.get::<_, i32>(0), 2, "claimed by A, then by B");
        let why: String = r.get(1);
        assert!(
            why.contains("lease expired while") && why.contains(&held_by_a),
            "{why}"
        );
    }
    let acc = assert_nothing_lost(&c, &ids).await;
    assert_eq!((acc.claims, acc.reclaims), (8, 4), "{acc:?}");
    b.stop().await;
    end_orphans(&script);
}
