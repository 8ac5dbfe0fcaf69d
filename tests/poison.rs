//! Poison inputs: each bad version ends errored with a reason an operator can act on,
//! input PostgreSQL text cannot hold is refused by `postpub.publish` itself, the daemon
//! (the real binary, so its memory can be read) stays small, and good documents published
//! alongside keep flowing.

mod common;

use std::time::{Duration, Instant};

use common::outcome as row;
use common::process::{self, Proc};
use common::{assert_settled, held_by, wait_until, Script, TestDb};
use tokio_postgres::Client;

/// Hangs on HANG, floods stdout on FLOOD, passes everything else through. `exec`, so the
/// daemon's kill reaches the program itself, not a shell around it.
const STEP: &str = r#"body=$(cat)
echo $$ >> "$(dirname "$0")/pids"
case "$body" in
  *HANG*) exec sleep 600 ;;
  *FLOOD*) exec yes ;;
esac
printf '%s' "$body""#;

const MAX_OUTPUT_BYTES: u64 = 8 * 1024 * 1024;
const MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;

async fn versions_and_documents(c: &Client) -> (i64, i64) {
    let r = c
        .query_one(
            "select (select count(*) from postpub.versions), (select count(*) from postpub.documents)",
            &[],
        )
        .await
        .expect("counts");
    (r.get(0), r.get(1))
}

#[tokio::test]
async fn text_postgresql_cannot_hold_is_refused_by_publish_and_nothing_is_written() {
    let (_db, c) = TestDb::with_client().await;
    let before = versions_and_documents(&c).await;
    // (how it is sent, statement, SQLSTATE, message fragment)
    let cases: [(&str, &str, &str, &str); 5] = [
        (
            "an escaped NUL in a string literal",
            r"select postpub.publish('nul', E'<p>a\000b</p>', 'p {}')",
            "22021",
            "0x00",
        ),
        (
            "chr(0)",
            "select postpub.publish('nul', '<p>a' || chr(0) || 'b</p>', 'p {}')",
            "54000",
            "null character not permitted",
        ),
        (
            "a Unicode escape for NUL",
            r"select postpub.publish('nul', U&'<p>a\0000b</p>', 'p {}')",
            "42601",
            "invalid Unicode escape value",
        ),
        (
            "invalid UTF-8 bytes",
            r"select postpub.publish('bad-utf8', convert_from('\xff'::bytea, 'UTF8'), 'p {}')",
            "22021",
            "0xff",
        ),
        (
            "a NUL inside otherwise valid UTF-8",
            r"select postpub.publish('bad-utf8', convert_from('\x3c703e00'::bytea, 'UTF8'), 'p {}')",
            "22021",
            "0x00",
        ),
    ];
    for (what, sql, state, fragment) in cases {
        let e = c
            .execute(sql, &[])
            .await
            .expect_err(&format!("{what} must be refused"));
        let code = common::ops::sqlstate(&e);
        let msg = postpub::db::describe(&e);
        assert!(code.starts_with(state), "{what}: {msg}");
        assert!(msg.contains(fragment), "{what}: {msg}");
        println!("{what}: refused: {msg}");
    }
    // The same through a bind parameter, as an application would send it.
    let e = c
        .execute(
            "select postpub.publish($1, $2, 'p {}')",
            &[&"nul-param", &"<p>a\0b</p>"],
        )
        .await
        .expect_err("a NUL in a parameter must be refused");
    assert_eq!(
        common::ops::sqlstate(&e),
        "22021",
        "{}",
        postpub::db::describe(&e)
    );
    println!(
        "a NUL in a bind parameter: refused: {}",
        postpub::db::describe(&e)
    );
    assert_eq!(
        versions_and_documents(&c).await,
        before,
        "nothing is written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_versions_end_errored_with_a_reason_while_good_ones_flow_and_memory_stays_bounded() {
    let (db, c) = TestDb::with_client().await;
    let script = Script::new(STEP);
    let mut daemon = Proc::start(&process::config(
        &db.url,
        "concurrency = 4\nbatch_size = 4\nlease = \"5s\"\npoll_interval = \"500ms\"\n\
         max_attempts = 2\nbackoff = { initial = \"100ms\", max = \"200ms\" }",
        &format!("steps = [\"validate\", \"command\"]\nmax_body_bytes = {MAX_BODY_BYTES}"),
        &format!(
            "program = \"{}\"\ntimeout = \"1s\"\nmax_output_bytes = {MAX_OUTPUT_BYTES}",
            script.program()
        ),
    ));
    let t0 = Instant::now();
    let recipe = Some("p {}");
    let hang = db.publish(&c, "hang", "<p>HANG</p>", recipe).await;
    let flood = db.publish(&c, "flood", "<p>FLOOD</p>", recipe).await;
    let malformed = db
        .publish(&c, "malformed", "<div><p>unclosed</div>", recipe)
        .await;
    let nul_ref = db.publish(&c, "nul-ref", "<p>a&#0;b</p>", recipe).await;
    let huge = common::count(
        &c,
        "select postpub.publish('huge', '<p>' || repeat('x', 50 * 1024 * 1024) || '</p>', 'p {}')",
    )
    .await;
    // Good documents alongside, while the poison is being processed.
    let mut good = Vec::new();
    for i in 0..20 {
        good.push(
            db.publish(&c, &format!("good-{i}"), "<p>fine</p>", recipe)
                .await,
        );
    }
    wait_until(Duration::from_secs(30), "the good ones current", || async {
        let mut all = true;
        for id in &good {
            all &= db.state(&c, *id).await == "current";
        }
        all
    })
    .await;
    let good_after = t0.elapsed();
    wait_until(Duration::from_secs(30), "everything settled", || async {
        db.pending(&c).await == 0
    })
    .await;
    let peak = daemon.peak_rss();

    let expect: [(&str, i64, i32, &[&str]); 5] = [
        (
            "a step that hangs",
            hang,
            2,
            &[
                "gave up after 2 attempts",
                "step command",
                "timed out after 1s",
            ],
        ),
        (
            "a step that prints without end",
            flood,
            1,
            &[
                "step command",
                "wrote more than 8388608 bytes",
                "max_output_bytes",
            ],
        ),
        (
            "malformed HTML",
            malformed,
            1,
            &[
                "step validate",
                "malformed HTML at line 1",
                "</div> closes <p>",
            ],
        ),
        (
            "an HTML-escaped NUL",
            nul_ref,
            1,
            &["step validate", "malformed HTML at line 1"],
        ),
        (
            "a 50 MB body",
            huge,
            1,
            &[
                "body is 52428807 bytes",
                "more than pipeline.max_body_bytes (33554432)",
            ],
        ),
    ];
    for (what, id, attempts, fragments) in expect {
        let (state, a, error) = row(&c, id).await;
        println!("{what}: {state} after {a} attempt(s): {error}");
        assert_eq!(
            (state.as_str(), a),
            ("errored", attempts),
            "{what}: {error}"
        );
        for f in fragments {
            assert!(error.contains(f), "{what}: {error:?} lacks {f:?}");
        }
    }
    println!(
        "20 good documents current {:.2}s after the poison was published; daemon peak RSS {:.1} MB",
        good_after.as_secs_f64(),
        peak as f64 / 1e6
    );
    // Neither the 50 MB body nor more than max_output_bytes of output was ever held: a
    // loaded 50 MB body alone would take the daemon past this.
    assert!(peak > 0, "could not read VmHWM");
    assert!(
        peak < 60 * 1024 * 1024,
        "peak RSS {:.1} MB",
        peak as f64 / 1e6
    );
    assert_settled(&c).await;
    daemon.signal("-TERM");
    assert!(daemon.wait_exit(Duration::from_secs(15)).await.success());
    // The programs killed for their timeout or their output are gone, not orphaned.
    let pids = std::fs::read_to_string(script.dir.join("pids")).expect("step pids");
    let left: Vec<&str> = pids
        .lines()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect();
    assert!(left.is_empty(), "steps still running: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_takes_longer_than_the_lease_to_validate_keeps_its_lease_on_one_cpu() {
    let (db, c) = TestDb::with_client().await;
    let cfg = |url: &str| {
        process::config(
            url,
            "concurrency = 4\nlease = \"2s\"\npoll_interval = \"500ms\"\nmax_attempts = 3",
            "steps = [\"validate\"]",
            "",
        )
    };
    // A one-CPU deployment (a container limited to one CPU gets one runtime thread).
    let mut a = Proc::start_with_env(&cfg(&db.url), &[("TOKIO_WORKER_THREADS", "1")]);
    // 16 MB of text: several seconds of validation in a debug build, 0.5 s in release.
    let big = common::count(
        &c,
        "select postpub.publish('big', '<p>' || repeat('x', 16 * 1024 * 1024) || '</p>', 'p {}')",
    )
    .await;
    let t0 = Instant::now();
    wait_until(Duration::from_secs(15), "A holds it", || async {
        held_by(&c, a.pid()).await == 1
    })
    .await;
    // B would rescue it the moment A's lease ran out.
    let mut b = Proc::start(&cfg(&db.url));
    wait_until(Duration::from_secs(120), "settled", || async {
        db.pending(&c).await == 0
    })
    .await;
    let (state, attempts, error) = row(&c, big).await;
    println!(
        "16 MB validated on a one-thread daemon, settled in {:.2}s: {state} after {attempts} attempt(s) {error}",
        t0.elapsed().as_secs_f64()
    );
    let rescues: i64 = c
        .query_one(
            "select count(*) from postpub.transitions where version_id = $1 and why like 'lease expired%'",
            &[&big],
        )
        .await
        .expect("audit")
        .get(0);
    assert_eq!(
        (state.as_str(), attempts, rescues),
        ("current", 1, 0),
        "the validation starved the lease renewal: {error}"
    );
    assert_settled(&c).await;
    for d in [&mut a, &mut b] {
        d.signal("-TERM");
        assert!(d.wait_exit(Duration::from_secs(15)).await.success());
    }
}
