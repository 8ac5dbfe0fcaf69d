//! The database stops accepting writes for a while: read-only (`default_transaction_read_only`
//! through ALTER SYSTEM + reload) or full (a tablespace on a small tmpfs). The daemons log a
//! clear error, keep retrying, and finish everything once writes work again; no version is
//! lost or errored because of it. Each test runs its own throwaway cluster.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::process::{self, Proc};
use common::{assert_processed_once, count, processing, wait_settled, wait_until, Script};
use tokio_postgres::Client;

/// One test at a time: both break the server for a while.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SLOW_STEP: &str = "body=$(cat); sleep 0.3; printf '%s' \"$body\"";

/// The worker settings of the daemons.
const WORKER: &str = "concurrency = 8\nbatch_size = 8\nlease = \"3s\"\npoll_interval = \"500ms\"\n\
         max_attempts = 5\nbackoff = { initial = \"100ms\", max = \"1s\" }";

async fn publish_many(c: &Client, prefix: &str, n: i32) {
    c.execute(
        "select count(postpub.publish($1 || i, '<p>' || i || '</p>', 'p {}'))
           from generate_series(1, $2) i",
        &[&prefix, &n],
    )
    .await
    .unwrap_or_else(|e| panic!("publish {prefix}*: {e}"));
}

/// Waits until nothing is pending, then checks nothing was errored or doubled.
async fn settles_cleanly(c: &Client, what: &str) -> Duration {
    let t0 = Instant::now();
    wait_settled(c, Duration::from_secs(60)).await;
    let took = t0.elapsed();
    let errored = c
        .query(
            "select id, last_error from postpub.versions where state = 'errored'",
            &[],
        )
        .await
        .expect("errored");
    let errored: Vec<(i64, String)> = errored.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(errored.is_empty(), "errored because of {what}: {errored:?}");
    let acc = assert_processed_once(c).await;
    println!(
        "after {what}: settled {:.2}s after writes came back; {} versions, {} claims ({} after a retry/rescue/release)",
        took.as_secs_f64(),
        acc.versions,
        acc.claims,
        acc.reclaims
    );
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_is_retried_with_clear_errors_and_nothing_is_lost_or_errored() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start().await;
    let script = Script::new(SLOW_STEP);
    let c = cluster.client().await;
    let admin = cluster.admin().await;
    let daemons =
        [(); 2].map(|_| process::start_validate_and_command(&cluster.url(), WORKER, &script));
    wait_until(Duration::from_secs(15), "both daemons listening", || async {
        count(
            &c,
            "select count(*) from pg_stat_activity where datname = current_database() and query ilike 'listen%'",
        )
        .await
            == 2
    })
    .await;

    // Fewer than the 16 slots: the daemons hold free slots and will try to claim.
    publish_many(&c, "before-", 10).await;
    wait_until(Duration::from_secs(15), "work in flight", || async {
        processing(&c).await > 0
    })
    .await;
    // One statement per call: ALTER SYSTEM refuses a transaction block.
    for sql in [
        "alter system set default_transaction_read_only = on",
        "select pg_reload_conf()",
    ] {
        admin.batch_execute(sql).await.expect("read-only on");
    }
    // Our own session sees the new default too (once the server has reloaded): writes
    // are refused with a clear error.
    wait_until(
        Duration::from_secs(10),
        "the read-only default in effect",
        || async {
            c.query_one("show default_transaction_read_only", &[])
                .await
                .map(|r| r.get::<_, String>(0) == "on")
                .unwrap_or(false)
        },
    )
    .await;
    let refused = c
        .execute("select postpub.publish('refused', '<p>x</p>', 'p {}')", &[])
        .await
        .expect_err("a read-only database refuses a publish");
    assert_eq!(common::ops::sqlstate(&refused), "25006", "{refused}");
    // An application that insists (read-write session) still gets its versions in; their
    // NOTIFY wakes the daemons, which cannot claim them yet.
    c.batch_execute("set default_transaction_read_only = off")
        .await
        .expect("read-write session");
    publish_many(&c, "during-", 20).await;
    // The scenario: the database stays read-only for 5 s, longer than the 3 s lease.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stuck_in_errored = count(
        &c,
        "select count(*) from postpub.versions where state = 'errored'",
    )
    .await;
    for sql in [
        "alter system reset default_transaction_read_only",
        "select pg_reload_conf()",
    ] {
        admin.batch_execute(sql).await.expect("read-only off");
    }
    let took = settles_cleanly(&c, "5 s of read-only").await;
    assert_eq!(stuck_in_errored, 0);
    assert!(took < Duration::from_secs(20), "recovery took {took:?}");
    assert_eq!(
        count(
            &c,
            "select count(*) from postpub.versions where state = 'current'"
        )
        .await,
        30
    );
    let logs: String = daemons.iter().map(Proc::logs).collect();
    for needle in [
        "claim failed",
        "recording outcomes failed; will retry",
        "read-only transaction (SQLSTATE 25006)",
    ] {
        assert!(logs.contains(needle), "no {needle:?} in the logs:\n{logs}");
    }
    for line in logs.lines().filter(|l| l.contains("25006")).take(3) {
        println!("  log: {line}");
    }
    assert!(!logs.contains("panicked"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_retried_with_clear_errors_and_nothing_is_lost_or_errored() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start().await;
    let Some(disk) = cluster.small_disk("small", 8) else {
        println!("SKIPPED: cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)");
        return;
    };
    let c = cluster.client().await;
    // The claims, the outbox and the stored audit live on the small disk: every claim
    // (its claim's row), finish (an outbox event), rescue and publish (audit rows) appends
    // to one of them, so all of them need space there.
    let mut moves = vec![format!(
        "create tablespace small location '{}'",
        disk.display()
    )];
    for table in ["claims", "outbox", "transition_log"] {
        moves.push(format!(
            "alter table postpub.{table} set tablespace small;
             do $$ declare i text; begin
               for i in select indexname from pg_indexes
                         where schemaname = 'postpub' and tablename = '{table}' loop
                 execute format('alter index postpub.%I set tablespace small', i);
               end loop;
             end $$"
        ));
    }
    for sql in moves
        .into_iter()
        .chain(["create table public.filler (x text) tablespace small".to_owned()])
    {
        c.batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let script = Script::new(SLOW_STEP);
    let daemons =
        [(); 2].map(|_| process::start_validate_and_command(&cluster.url(), WORKER, &script));
    publish_many(&c, "before-", 40).await;
    wait_until(Duration::from_secs(15), "work in flight", || async {
        processing(&c).await > 0
    })
    .await;

    // Fill the disk: big rows, then small ones, until nothing fits.
    let mut full = None;
    for (rows, width) in [(500, 2000), (50, 2000), (100, 100), (20, 20)] {
        loop {
            let r = c
                .execute(
                    "insert into public.filler select repeat('x', $2) from generate_series(1, $1)",
                    &[&rows, &width],
                )
                .await;
            if let Err(e) = r {
                full = Some(e);
                break;
            }
        }
    }
    let full = full.expect("the disk filled up");
    assert_eq!(common::ops::sqlstate(&full), "53100", "{full}");
    let refused = c
        .execute("select postpub.publish('refused', '<p>x</p>', 'p {}')", &[])
        .await;
    println!(
        "disk full: {}; publish now: {}",
        postpub::db::describe(&full),
        match &refused {
            Ok(_) => "accepted (the last page still had room)".to_owned(),
            Err(e) => postpub::db::describe(e),
        }
    );
    // The scenario: the disk stays full for 5 s (longer than the 3 s lease).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let errored_meanwhile = count(
        &c,
        "select count(*) from postpub.versions where state = 'errored'",
    )
    .await;
    let logs_full: String = daemons.iter().map(Proc::logs).collect();
    c.batch_execute("drop table public.filler")
        .await
        .expect("free the disk");
    settles_cleanly(&c, "5 s of a full disk").await;
    assert_eq!(errored_meanwhile, 0);
    assert!(
        logs_full.contains("No space left on device") && logs_full.contains("SQLSTATE 53100"),
        "no clear disk-full error in the logs:\n{logs_full}"
    );
    for line in logs_full.lines().filter(|l| l.contains("53100")).take(3) {
        println!("  log: {line}");
    }
    assert!(!logs_full.contains("panicked"), "{logs_full}");
    drop(daemons);
}
