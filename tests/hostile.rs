//! Hostile and unlucky input at the edges (issue 19): names and bodies `postpub.publish`
//! must refuse with a clear error of its own, names the runtime API cannot serve, XHTML
//! with an XML declaration, clients that hold connections open or scrape all at once, and
//! large documents read in parallel. Each test failed before its fix.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::ops::{free_port, get};
use common::process::{self, Proc};
use common::{bin, wait_until, Daemon, TestDb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::Client;

/// The server's message and SQLSTATE of a statement that must fail.
async fn refusal(
    c: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> (String, String) {
    let e = c
        .query(sql, params)
        .await
        .expect_err("the statement must be refused");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e:?}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

#[tokio::test]
async fn names_of_only_white_space_are_refused_by_publish_delete_and_capture() {
    let (db, c) = TestDb::with_client().await;
    c.batch_execute(
        "create table app_pages (name text, body text);
         create trigger _500_capture after insert on app_pages
           for each row execute function postpub.capture('name', 'body');",
    )
    .await
    .expect("capture table");
    for name in [
        "\t",
        "\n",
        " \t\r\n ",
        "\u{a0}",
        "\u{3000}",
        "\u{2003}\u{2028}",
        "\u{feff}",
    ] {
        for (sql, what) in [
            ("select postpub.publish($1, '<p/>')", "postpub.publish"),
            (
                "select postpub.publish($1, '<p/>', 'p {}')",
                "postpub.publish",
            ),
            ("select postpub.delete($1)", "postpub.delete"),
            (
                "insert into app_pages values ($1, '<p/>')",
                "postpub.publish",
            ),
        ] {
            let (code, msg) = refusal(&c, sql, &[&name]).await;
            assert_eq!(code, "22023", "{name:?} {sql}: {msg}");
            assert!(
                msg.contains(what) && msg.contains("non-empty name"),
                "{name:?} {sql}: {msg}"
            );
        }
    }
    // White space around a real name is the name's business.
    db.publish(&c, " a\tname ", "<p/>", None).await;
    let versions = common::count(&c, "select count(*) from postpub.versions").await;
    assert_eq!(versions, 1, "nothing else was written");
}

#[tokio::test]
async fn over_long_names_are_refused_with_our_message_and_the_limit_is_inclusive() {
    let (db, c) = TestDb::with_client().await;
    for name in ["x".repeat(1025), "é".repeat(513), "y".repeat(1 << 20)] {
        for sql in [
            "select postpub.publish($1, '<p/>')",
            "select postpub.delete($1)",
        ] {
            let (code, msg) = refusal(&c, sql, &[&name]).await;
            assert_eq!(code, "22023", "{msg}");
            assert!(
                msg.contains("more than the maximum of 1024 bytes")
                    && msg.contains(&format!("{} bytes long", name.len())),
                "{msg}"
            );
            assert!(
                msg.len() < 300,
                "the message quotes only the name's start: {msg}"
            );
            assert!(!msg.contains("index row"), "{msg}");
        }
    }
    let longest = "z".repeat(1024);
    db.publish(&c, &longest, "<p/>", None).await;
    db.delete(&c, &"é".repeat(512)).await;
}

#[tokio::test]
async fn publish_without_a_recipe_enforces_the_daemons_max_body_bytes() {
    let (db, c) = TestDb::with_client().await;
    let mut cfg = db.config();
    cfg.pipeline.max_body_bytes = 1000;
    cfg.pipeline.steps = vec!["validate".into()];
    // `run` stores its limit where publish() reads it.
    let d = Daemon::start(cfg).await;
    let big = format!("<p>{}</p>", "x".repeat(1000));
    let (code, msg) = refusal(&c, "select postpub.publish('big', $1)", &[&big]).await;
    assert_eq!(code, "54000", "{msg}");
    assert!(
        msg.contains("1007 bytes")
            && msg.contains("1000")
            && msg.contains("pipeline.max_body_bytes"),
        "{msg}"
    );
    db.publish(&c, "small", "<p>fits</p>", None).await;
    // With a recipe the daemon checks it, and errors the version with the reason.
    let v = db.publish(&c, "big-with-recipe", &big, Some("p {}")).await;
    wait_until(
        Duration::from_secs(10),
        "the big version errored",
        || async { db.state(&c, v).await == "errored" },
    )
    .await;
    d.stop().await;

    // `migrate` stores the configured limit too.
    let toml = std::env::temp_dir().join(format!("postpub-hostile-{}.toml", db.name));
    std::fs::write(&toml, "[pipeline]\nmax_body_bytes = 5000\n").expect("config");
    let out = Command::new(bin())
        .args(["--config"])
        .arg(&toml)
        .args(["--database-url", &db.url, "migrate"])
        .output()
        .expect("migrate");
    let _ = std::fs::remove_file(&toml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    db.publish(&c, "big", &big, None).await;
    db.assert_invariants(&c).await;

    // Only the daemon's role may set the limit.
    let publisher = common::ops::LoginRole::new("postpub_publisher").await;
    let worker = common::ops::LoginRole::new("postpub_worker").await;
    let p = publisher.client(&db).await;
    let e = p
        .execute("select postpub._set_max_body_bytes(1)", &[])
        .await
        .expect_err("a publisher cannot raise or lower the limit");
    assert_eq!(common::ops::sqlstate(&e), "42501", "{e:?}");
    worker
        .client(&db)
        .await
        .execute("select postpub._set_max_body_bytes(6000)", &[])
        .await
        .expect("the daemon's role sets it");
}

#[tokio::test]
async fn xhtml_with_an_xml_declaration_validates_and_collates_to_current() {
    let (db, c) = TestDb::with_client().await;
    let mut cfg = db.config();
    cfg.pipeline.steps = vec!["validate".into(), "collate".into()];
    let d = Daemon::start(cfg).await;
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                <html xmlns=\"http://www.w3.org/1999/xhtml\"><body><p>x</p></body></html>";
    let v = db
        .publish(&c, "xml-declared", body, Some("p { class: seen; }"))
        .await;
    wait_until(Duration::from_secs(15), "the version settled", || async {
        matches!(db.state(&c, v).await.as_str(), "current" | "errored")
    })
    .await;
    let row = c
        .query_one(
            "select v.state::text, coalesce(v.last_error, ''), coalesce(c.content, '')
               from postpub.versions v left join postpub.collated c on c.version_id = v.id
              where v.id = $1",
            &[&v],
        )
        .await
        .expect("version");
    let (state, error, content): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(state, "current", "{error}");
    assert!(content.contains("class=\"seen\""), "{content}");
    d.stop().await;
}

/// A daemon with HTTP on a free port and the given pipeline.
async fn with_http(db: &TestDb, steps: &[&str]) -> (Daemon, u16) {
    let mut cfg = db.config();
    cfg.pipeline.steps = steps.iter().map(|s| s.to_string()).collect();
    Daemon::start_with_http(cfg).await
}

#[tokio::test]
async fn names_the_database_cannot_hold_are_404_without_sql_text() {
    let db = TestDb::new().await;
    let (d, port) = with_http(&db, &["noop"]).await;
    let long = format!("/documents/{}", "a".repeat(1025));
    for path in [
        "/documents/a%00b",
        "/documents/a%00b/versions/1",
        "/documents/%FF%FE",
        "/documents/%00",
        long.as_str(),
    ] {
        let r = get(port, path, &[]).await;
        assert_eq!(r.status, 404, "{path}: {r:?}");
        assert!(!r.body.contains("SQLSTATE"), "{path}: {r:?}");
    }
    d.stop().await;
}

#[tokio::test]
async fn a_deletion_of_a_never_published_document_reads_as_404_and_of_a_published_one_as_410() {
    let (db, c) = TestDb::with_client().await;
    let (d, port) = with_http(&db, &["noop"]).await;
    let never = db.delete(&c, "never").await;
    db.publish(&c, "was", "<p>x</p>", None).await;
    let gone = db.delete(&c, "was").await;
    wait_until(
        Duration::from_secs(10),
        "both tombstones current",
        || async {
            db.state(&c, never).await == "current" && db.state(&c, gone).await == "current"
        },
    )
    .await;
    let r = get(port, "/documents/never", &[]).await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(
        get(port, "/documents/never/versions/1", &[]).await.status,
        404
    );
    assert_eq!(get(port, "/documents/was", &[]).await.status, 410);
    // Deleted twice: still a deleted document.
    let again = db.delete(&c, "was").await;
    wait_until(
        Duration::from_secs(10),
        "second tombstone current",
        || async { db.state(&c, again).await == "current" },
    )
    .await;
    assert_eq!(get(port, "/documents/was", &[]).await.status, 410);
    d.stop().await;
}

/// Reads one response over a fresh connection, counting the body's bytes without
/// keeping them; returns (status, content-length header, body bytes, first bytes).
async fn read_counting(port: u16, path: &str) -> (u16, Option<u64>, u64, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut body_bytes = 0u64;
    let mut first = Vec::new();
    let mut in_body = false;
    loop {
        let n = s.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        if !in_body {
            head.extend_from_slice(chunk);
            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            in_body = true;
            let rest = head.split_off(end + 4);
            chunk = &[];
            body_bytes += rest.len() as u64;
            first.extend_from_slice(&rest[..rest.len().min(64)]);
        }
        body_bytes += chunk.len() as u64;
        if first.len() < 64 {
            first.extend_from_slice(&chunk[..chunk.len().min(64 - first.len())]);
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse().ok());
    (status, length, body_bytes, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_reads_of_a_large_document_stream_it_in_bounded_memory() {
    const MB: usize = 1 << 20;
    let (db, c) = TestDb::with_client().await;
    let port = free_port();
    let daemon = Proc::start(
        &process::config(
            &db.url,
            "",
            &format!("steps = [\"noop\"]\nmax_body_bytes = {}", 64 * MB),
            "",
        )
        .replace("listen = \"\"", &format!("listen = \"127.0.0.1:{port}\"")),
    );
    wait_until(Duration::from_secs(15), "http up", || async {
        TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    // 40 MB of multi-byte text (so chunks split characters) in one current version.
    let unit = "<p>Größe – ünïcödé text, repeated to make a large book.</p>\n";
    let body: String = unit.repeat(40 * MB / unit.len());
    let started = Instant::now();
    wait_until(
        Duration::from_secs(15),
        "the daemon stored its limit",
        || async {
            c.query_one("select max_body_bytes from postpub.settings", &[])
                .await
                .map(|r| r.get::<_, i64>(0) == 64 * MB as i64)
                .unwrap_or(false)
        },
    )
    .await;
    db.publish(&c, "big-book", &body, None).await;
    println!(
        "published {} MB in {:.1}s",
        body.len() / MB,
        started.elapsed().as_secs_f64()
    );
    let baseline = daemon.rss();
    let started = Instant::now();
    let reads: Vec<_> = (0..10)
        .map(|_| tokio::spawn(read_counting(port, "/documents/big-book")))
        .collect();
    for r in reads {
        let (status, length, bytes, first) = r.await.expect("read task");
        assert_eq!(status, 200);
        assert_eq!(length, Some(body.len() as u64));
        assert_eq!(bytes, body.len() as u64, "the whole document arrived");
        assert!(body.as_bytes().starts_with(&first));
    }
    let peak = daemon.peak_rss();
    println!(
        "10 parallel reads of {} MB in {:.1}s; daemon RSS {} MB before, peak {} MB",
        body.len() / MB,
        started.elapsed().as_secs_f64(),
        baseline / MB as u64,
        peak / MB as u64
    );
    // Holding the document per read would be 10 × 40 MB at least (it was 1.44 GB for
    // 10 × 100 MB); streaming holds a few chunks per read.
    assert!(
        peak < baseline + 120 * MB as u64,
        "peak RSS {} MB over a {} MB baseline",
        peak / MB as u64,
        baseline / MB as u64
    );
    // The content is byte for byte the document.
    let (_, _, bytes, _) = read_counting(port, "/documents/big-book").await;
    assert_eq!(bytes, body.len() as u64);
    let full = get(port, "/documents/big-book", &[]).await;
    assert!(
        full.body == body,
        "streamed content differs from the document"
    );
}

#[tokio::test]
async fn idle_and_half_sent_connections_are_closed() {
    let db = TestDb::new().await;
    let (d, port) = with_http(&db, &["noop"]).await;
    let started = Instant::now();
    let idle = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut half = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half a request");
    let mut kept = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("a request");
    // Each is closed by the server: read returns 0 (after the one response on `kept`).
    for (what, mut s) in [("idle", idle), ("half-sent", half), ("kept-alive", kept)] {
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the {what} connection is still open after 30 s"
        );
        println!(
            "{what} connection closed {:.1}s after it opened",
            started.elapsed().as_secs_f64()
        );
    }
    // The server still serves.
    assert_eq!(get(port, "/healthz", &[]).await.status, 200);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_parallel_scrapes_all_report_the_database_up() {
    let db = TestDb::new().await;
    let (d, port) = with_http(&db, &["noop"]).await;
    let started = Instant::now();
    let scrapes: Vec<_> = (0..300)
        .map(|_| {
            tokio::spawn(async move {
                let t = Instant::now();
                let r = get(port, "/metrics", &[]).await;
                (r, t.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for s in scrapes {
        let (r, took) = s.await.expect("scrape");
        assert_eq!(r.status, 200);
        assert!(
            r.body.contains("postpub_database_up 1"),
            "a scrape reported the database down: {}",
            r.body
                .lines()
                .find(|l| l.starts_with("postpub_database_up"))
                .unwrap_or("")
        );
        slowest = slowest.max(took);
    }
    println!(
        "300 parallel scrapes in {:.2}s, slowest {:.2}s",
        started.elapsed().as_secs_f64(),
        slowest.as_secs_f64()
    );
    d.stop().await;
}

#[tokio::test]
async fn a_reloaded_max_body_bytes_reaches_publish() {
    let (db, c) = TestDb::with_client().await;
    let cfg = |bytes: u64| {
        process::config(
            &db.url,
            "",
            &format!("steps = [\"noop\"]\nmax_body_bytes = {bytes}"),
            "",
        )
    };
    let limit = || async {
        c.query_one("select max_body_bytes from postpub.settings", &[])
            .await
            .expect("settings")
            .get::<_, i64>(0)
    };
    let mut d = Proc::start(&cfg(2000));
    wait_until(
        Duration::from_secs(15),
        "the limit stored at start",
        || async { limit().await == 2000 },
    )
    .await;
    d.rewrite_config(&cfg(3000));
    d.signal("-HUP");
    wait_until(
        Duration::from_secs(15),
        "the reloaded limit stored",
        || async { limit().await == 3000 },
    )
    .await;
    let body = "x".repeat(2500);
    db.publish(&c, "fits-now", &body, None).await;
    d.signal("-TERM");
    assert!(d.wait_exit(Duration::from_secs(20)).await.success());
}
