//! Bakes run in bake processes (issue 19): a recipe that exhausts memory, a bake process
//! killed or frozen, errors that version alone, in one attempt, with a reason naming the
//! cause and the limit; the daemon stays up, its memory stays flat, and other versions
//! keep flowing. The daemon is the real binary, so "still alive" means its process.

mod common;

use std::time::{Duration, Instant};

use common::outcome as row;
use common::process::{self, Proc};
use common::{assert_settled, wait_until, TestDb};
use tokio_postgres::Client;

/// The canonical bomb: each `div` doubles string `s`, 40 times (2^40 bytes).
const BOMB_CSS: &str =
    "div { string-set: s string(s) string(s) \"x\"; } body::after { content: string(s); }";

fn bomb_body() -> String {
    format!("<html><body>{}</body></html>", "<div>a</div>".repeat(40))
}

const NOTE_CSS: &str =
    "div::after { content: pending(notes); class: notes; }\np.note { move-to: notes; }";
const NOTE_BODY: &str = "<html><body><div><p class=\"note\">n</p><p>text</p></div></body></html>";

/// A daemon (the binary) with the collate step and a 256 MB limit per bake process.
/// `[pipeline.collate]` budgets that never stop a bake before the memory limit does.
const UNBOUNDED_BUDGETS: &str = "growth_factor = 10000\nmax_nodes_extra = 1000000000000\n\
     max_text_extra_bytes = 1000000000000\nmax_output_extra_bytes = 1000000000000";

fn daemon(db: &TestDb, collate: &str) -> Proc {
    Proc::start(&format!(
        "{}\n[pipeline.collate]\nmax_memory_bytes = {}\n{collate}\n",
        process::config(
            &db.url,
            "concurrency = 4\nmax_attempts = 3\nlease = \"5s\"\npoll_interval = \"500ms\"",
            "steps = [\"validate\", \"collate\"]",
            "",
        ),
        256 << 20
    ))
}

async fn settled(c: &Client, ids: &[i64]) -> bool {
    for id in ids {
        if matches!(
            row(c, *id).await.0.as_str(),
            "post-publication" | "processing"
        ) {
            return false;
        }
    }
    true
}

/// The bake processes of `daemon` (its children running `postpub bake-server`).
fn bake_processes(daemon: &Proc) -> Vec<u32> {
    let parent = daemon.pid().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        if fields.get(1) != Some(&parent.as_str()) || fields.first() == Some(&"Z") {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("bake-server") {
            pids.push(pid);
        }
    }
    pids
}

/// Publishes a normal version and waits until it is current.
async fn publish_current(db: &TestDb, c: &Client, document: &str) -> i64 {
    let id = db.publish(c, document, NOTE_BODY, Some(NOTE_CSS)).await;
    wait_until(
        Duration::from_secs(20),
        "a normal version current",
        || async {
            let (state, _, error) = row(c, id).await;
            assert_ne!(state, "errored", "{document}: {error}");
            state == "current"
        },
    )
    .await;
    id
}

/// Stops the daemon with SIGTERM; it must exit 0.
async fn stop(mut d: Proc) {
    assert!(d.running(), "the daemon is up");
    d.signal("-TERM");
    assert!(
        d.wait_exit(Duration::from_secs(20)).await.success(),
        "{}",
        d.logs()
    );
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_errors_its_version_once_and_the_daemon_and_other_versions_go_on() {
    let (db, c) = TestDb::with_client().await;
    // Budgets far above the memory limit: the bomb slips past them (as something the
    // budgets do not foresee would) and meets the bake process's address-space limit.
    let mut d = daemon(&db, UNBOUNDED_BUDGETS);
    // Warm up: a bake process started, the daemon at its working size.
    publish_current(&db, &c, "warm").await;
    let baseline = d.rss();
    let started = Instant::now();
    let bomb = db.publish(&c, "bomb", &bomb_body(), Some(BOMB_CSS)).await;
    let mut good = Vec::new();
    for i in 0..8 {
        good.push(
            db.publish(&c, &format!("good-{i}"), NOTE_BODY, Some(NOTE_CSS))
                .await,
        );
    }
    let mut all = good.clone();
    all.push(bomb);
    wait_until(Duration::from_secs(60), "every version settled", || {
        settled(&c, &all)
    })
    .await;
    let took = started.elapsed();
    let (state, attempts, error) = row(&c, bomb).await;
    println!(
        "bomb: {state} after {attempts} attempt(s) in {:.2}s: {error}",
        took.as_secs_f64()
    );
    assert_eq!(state, "errored");
    assert_eq!(attempts, 1, "errored at the first attempt, never retried");
    assert!(
        error.contains("pipeline.collate.max_memory_bytes") && error.contains("268435456"),
        "the reason names the limit: {error}"
    );
    assert!(
        error.contains("ran out of memory") && error.contains("memory allocation of"),
        "the reason names the cause: {error}"
    );
    for id in &good {
        let (state, _, error) = row(&c, *id).await;
        assert_eq!(state, "current", "{error}");
    }
    assert!(d.running(), "the daemon survived the bomb");
    let peak = d.peak_rss();
    println!(
        "daemon RSS: {} MB before the bomb, peak {} MB",
        baseline >> 20,
        peak >> 20
    );
    // The bomb's gigabytes were never the daemon's.
    assert!(
        peak < baseline + (64 << 20),
        "peak {peak} over baseline {baseline}"
    );
    // Work goes on with a fresh bake process.
    publish_current(&db, &c, "after").await;
    stop(d).await;
    assert_settled(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_of_the_bomb_each_error_once_and_the_rest_flows() {
    let (db, c) = TestDb::with_client().await;
    let mut d = daemon(&db, "");
    let body = format!(
        "<html><body>{}</body></html>",
        "<div id=\"d\" class=\"c\">a</div>".repeat(40)
    );
    // Strings doubled per element through attr(), content() and a counter.
    let mut bombs = Vec::new();
    for (i, css) in [
        "div { string-set: s string(s) string(s) attr(id); } body::after { content: string(s); }",
        "div { string-set: s content() string(s) string(s); } body::after { content: string(s); }",
        "div { counter-increment: n; string-set: s string(s) string(s) counter(n); } body::after { content: string(s); }",
    ]
    .into_iter()
    .enumerate()
    {
        bombs.push(db.publish(&c, &format!("bomb-{i}"), &body, Some(css)).await);
    }
    let good = db.publish(&c, "good", NOTE_BODY, Some(NOTE_CSS)).await;
    let mut all = bombs.clone();
    all.push(good);
    wait_until(Duration::from_secs(60), "every version settled", || {
        settled(&c, &all)
    })
    .await;
    for id in bombs {
        let (state, attempts, error) = row(&c, id).await;
        assert_eq!((state.as_str(), attempts), ("errored", 1), "{error}");
        // Stopped by the bake process's limit, or by the baker's own budgets first.
        assert!(
            error.contains("max_memory_bytes") || error.contains("limit"),
            "{error}"
        );
        assert!(!error.contains("stack backtrace"), "one line: {error}");
    }
    assert_eq!(row(&c, good).await.0, "current");
    assert!(d.running(), "the daemon is up");
    stop(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_bake_is_killed_at_the_timeout_and_a_killed_idle_one_is_replaced() {
    let (db, c) = TestDb::with_client().await;
    let d = daemon(&db, "timeout = \"2s\"");
    publish_current(&db, &c, "warm").await;
    let idle = bake_processes(&d);
    assert_eq!(idle.len(), 1, "one bake process, idle: {idle:?}");

    // Frozen: it never answers; the timeout kills it and errors that version alone.
    signal(idle[0], "-STOP");
    let frozen = db.publish(&c, "frozen", NOTE_BODY, Some(NOTE_CSS)).await;
    wait_until(
        Duration::from_secs(20),
        "the frozen bake settled",
        || async { settled(&c, &[frozen]).await },
    )
    .await;
    let (state, attempts, error) = row(&c, frozen).await;
    assert_eq!((state.as_str(), attempts), ("errored", 1), "{error}");
    assert!(
        error.contains("pipeline.collate.timeout (2s)") && error.contains("killed"),
        "{error}"
    );
    wait_until(
        Duration::from_secs(5),
        "the frozen process gone",
        || async { !bake_processes(&d).contains(&idle[0]) },
    )
    .await;

    // Killed while idle: not blamed on the next version, which gets a new process.
    publish_current(&db, &c, "next").await;
    let fresh = bake_processes(&d);
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    signal(fresh[0], "-KILL");
    publish_current(&db, &c, "after-kill").await;

    let pids = bake_processes(&d);
    stop(d).await;
    // The daemon's bake processes end with it.
    wait_until(
        Duration::from_secs(5),
        "bake processes gone with the daemon",
        || async {
            pids.iter().all(|p| {
                !std::path::Path::new(&format!("/proc/{p}/cmdline")).exists()
                    || std::fs::read_to_string(format!("/proc/{p}/stat"))
                        .is_ok_and(|s| s.contains(") Z"))
            })
        },
    )
    .await;
    assert_settled(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bake_process_killed_mid_bake_errors_that_version_naming_the_signal() {
    let (db, c) = TestDb::with_client().await;
    // A bake that takes a while: many elements, each numbered.
    let css = "section { counter-increment: s; } section::before { content: counter(s); }";
    let body = format!(
        "<html><body>{}</body></html>",
        "<section><p>x</p></section>".repeat(200_000)
    );
    let mut d = daemon(&db, "timeout = \"60s\"");
    let v = db.publish(&c, "slow", &body, Some(css)).await;
    wait_until(
        Duration::from_secs(20),
        "a bake process at work",
        || async { !bake_processes(&d).is_empty() && row(&c, v).await.0 == "processing" },
    )
    .await;
    for pid in bake_processes(&d) {
        signal(pid, "-KILL");
    }
    wait_until(Duration::from_secs(30), "the version settled", || async {
        settled(&c, &[v]).await
    })
    .await;
    // The bake takes seconds (3.4 s for this book with a debug `postpub bake`), so the
    // kill lands in the middle of it.
    let (state, attempts, error) = row(&c, v).await;
    assert_eq!((state.as_str(), attempts), ("errored", 1), "{error}");
    assert!(
        error.contains("SIGKILL") && error.contains("max_memory_bytes"),
        "{error}"
    );
    assert!(d.running(), "the daemon is up");
    stop(d).await;
}
