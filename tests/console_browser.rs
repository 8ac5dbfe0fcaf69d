//! The console in a real browser: headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`; .ci/run installs them, and this test fails without
//! them). Loads the overview, sees a live update arrive, filters the versions, opens a
//! document, requeues from the page and sees the state change, and checks that a
//! published `<script>` never runs. Takes the screenshots in docs/ that the README shows.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::ops::free_port;
use common::webdriver::Browser;
use common::{wait_until, Daemon, TestDb};

fn shot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name)
}

#[tokio::test]
async fn an_operator_uses_the_console_in_chromium() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let port = free_port();
    let mut cfg = db.config();
    cfg.http.listen = format!("127.0.0.1:{port}");
    cfg.pipeline.steps = vec!["validate".to_owned(), "collate".to_owned()];
    let daemon = Daemon::start(cfg).await;
    let recipe = Some(
        "h1 { counter-increment: ch; } h1::before { content: \"Chapter \" counter(ch) \": \"; }",
    );
    for (doc, body) in [
        ("books/physics/ch-1", "<div><h1>Forces</h1><p>A push or a pull.</p></div>"),
        ("books/physics/ch-1", "<div><h1>Forces</h1><p>A push or a pull on an object.</p><p>Measured in newtons.</p></div>"),
        ("books/physics/ch-2", "<div><h1>Energy</h1><p>The capacity to do work.</p></div>"),
        ("books/physics/ch-3", "<div><p>unclosed</div>"),
        ("books/physics/xss", "<div><h1>Hostile</h1><script>window.consolexss = 1; document.title = 'owned';</script></div>"),
    ] {
        db.publish(&c, doc, body, recipe).await;
    }
    wait_until(Duration::from_secs(30), "versions settled", || async {
        db.pending(&c).await == 0
    })
    .await;
    let broken: i64 = c
        .query_one(
            "select id from postpub.versions where document = 'books/physics/ch-3'",
            &[],
        )
        .await
        .expect("broken id")
        .get(0);
    assert_eq!(db.state(&c, broken).await, "errored");

    let b = Browser::start().await;
    let base = format!("http://127.0.0.1:{port}");

    // The overview, connected for live updates; a version published now shows up live.
    b.goto(&format!("{base}/console")).await;
    b.wait_text("Live updates: connected", Duration::from_secs(10))
        .await;
    assert!(
        b.text().await.contains("books/physics/ch-3"),
        "latest errors listed"
    );
    db.publish(
        &c,
        "books/physics/ch-4",
        "<div><h1>Waves</h1></div>",
        recipe,
    )
    .await;
    b.wait_text("books/physics/ch-4", Duration::from_secs(15))
        .await;
    b.screenshot(&shot("console-overview.png")).await;

    // Filter the versions by state and document prefix with the form.
    b.goto(&format!("{base}/console/versions")).await;
    b.click("select[name=state] option[value=errored]").await;
    b.type_into("input[name=doc]", "books/physics/").await;
    b.click("form[role=search] button[type=submit]").await;
    let url = b.wait_url("state=errored", Duration::from_secs(15)).await;
    assert!(
        url.contains("state=errored") && url.contains("doc=books%2Fphysics%2F"),
        "{url}"
    );
    b.wait_text("step validate:", Duration::from_secs(15)).await;
    let text = b.text().await;
    assert!(
        text.contains("books/physics/ch-3") && !text.contains("books/physics/ch-2"),
        "{text}"
    );
    assert!(text.contains("step validate:"), "{text}");
    b.screenshot(&shot("console-versions.png")).await;

    // Open the document, requeue it from its page, see the state change.
    b.click("a[href='/console/document?name=books%2Fphysics%2Fch-3']")
        .await;
    b.wait_text("Document books/physics/ch-3", Duration::from_secs(5))
        .await;
    b.click("button[name=one]").await;
    b.wait_text("Requeued 1 version(s).", Duration::from_secs(5))
        .await;
    // Requeued (errored → post-publication, by the console user), then failed again.
    b.wait_text("console:local as postgres", Duration::from_secs(5))
        .await;
    wait_until(Duration::from_secs(15), "errored again", || async {
        db.state(&c, broken).await == "errored"
    })
    .await;
    let transitions: i64 = c
        .query_one(
            "select count(*) from postpub.transitions where version_id = $1 and why = 'requeued from the console'",
            &[&broken],
        )
        .await
        .expect("transitions")
        .get(0);
    assert_eq!(transitions, 1);

    // A document whose body carries a script: escaped on the page, inert in the preview.
    b.goto(&format!(
        "{base}/console/document?name=books%2Fphysics%2Fch-1&a=1&b=2"
    ))
    .await;
    b.wait_text("lines differ", Duration::from_secs(5)).await;
    b.screenshot(&shot("console-document.png")).await;
    b.script("document.querySelector('.diff').scrollIntoView();")
        .await;
    b.screenshot(&shot("console-diff.png")).await;
    b.goto(&format!(
        "{base}/console/document?name=books%2Fphysics%2Fxss"
    ))
    .await;
    b.wait_text("Document books/physics/xss", Duration::from_secs(5))
        .await;
    let ran = b
        .script("return [window.consolexss === undefined, document.title];")
        .await;
    assert_eq!(ran[0], true, "the published script ran in the console");
    assert_ne!(ran[1], "owned");
    b.goto(&format!("{base}/console/preview/{}", broken + 1))
        .await;
    let ran = b.script("return window.consolexss === undefined;").await;
    assert_eq!(ran, true, "the published script ran in the preview");

    b.close().await;
    daemon.stop().await;
}
