//! The `collate` step in the daemon: a version with a recipe is published baked; what
//! cnx-easybake tolerates in a recipe is a warning stored with it; a recipe that does not
//! parse, a malformed document or a recipe moving a node into itself errors the version
//! with a reason naming the line, and other documents keep flowing.

mod common;

use std::time::Duration;

use common::{wait_until, Daemon, TestDb};

const RECIPE: &str = r#"
div[data-type="chapter"] { counter-reset: figure; }
figure { counter-increment: figure; }
figcaption::before { content: "Figure " counter(figure) ": "; }
section.exercise { move-to: exercises; }
div[data-type="chapter"]::after { content: pending(exercises); class: exercises; container: section; }
"#;

const CHAPTER: &str = r#"<div data-type="chapter"><section class="exercise"><p>Q1</p></section><figure><figcaption>A</figcaption></figure><figure><figcaption>B</figcaption></figure></div>"#;

async fn last_error(c: &tokio_postgres::Client, id: i64) -> String {
    c.query_one(
        "select coalesce(last_error, '') from postpub.versions where id = $1",
        &[&id],
    )
    .await
    .expect("row")
    .get(0)
}

#[tokio::test]
async fn versions_are_published_baked_and_bad_recipes_or_documents_are_errored() {
    let (db, c) = TestDb::with_client().await;
    let mut cfg = db.config();
    cfg.pipeline.steps = vec!["validate".into(), "collate".into()];
    let d = Daemon::start(cfg).await;

    let good = db.publish(&c, "chapter", CHAPTER, Some(RECIPE)).await;
    // what cnx-easybake tolerates is a warning stored with the version …
    let tolerated = db
        .publish(
            &c,
            "tolerated-recipe",
            CHAPTER,
            Some("p { colour-me: red; }\ndiv::insde { content: 'x'; }"),
        )
        .await;
    // … CSS that does not parse at all errors it
    let broken_recipe = db
        .publish(
            &c,
            "broken-recipe",
            CHAPTER,
            Some("p { content: 'x'; }\n\nspan"),
        )
        .await;
    // Well-formed HTML for `validate`, but not XML: an unquoted attribute.
    let not_xml = db
        .publish(
            &c,
            "not-xml",
            "<div>\n<p class=x>text</p></div>",
            Some(RECIPE),
        )
        .await;
    let recursive = db
        .publish(
            &c,
            "recursive",
            "<div><section><p>x</p></section></div>",
            Some("section { move-to: here; }\nsection > p::after { content: pending(here); }"),
        )
        .await;
    let also_good = db
        .publish(&c, "other", "<div><p>plain</p></div>", Some(RECIPE))
        .await;

    wait_until(Duration::from_secs(20), "everything settled", || async {
        db.pending(&c).await == 0
    })
    .await;

    assert_eq!(db.state(&c, good).await, "current");
    let content: String = c
        .query_one(
            "select content from postpub.current where document = 'chapter'",
            &[],
        )
        .await
        .expect("current view")
        .get(0);
    assert_eq!(
        content.trim_end(),
        "<div data-type=\"chapter\"><figure><figcaption><div>Figure 1: </div>A</figcaption></figure>\
         <figure><figcaption><div>Figure 2: </div>B</figcaption></figure>\
         <section class=\"exercises\"><section class=\"exercise\"><p>Q1</p></section></section></div>"
    );
    let collated: bool = c
        .query_one(
            "select collated from postpub.current where document = 'chapter'",
            &[],
        )
        .await
        .expect("view")
        .get(0);
    assert!(collated);

    assert_eq!(db.state(&c, tolerated).await, "current");
    let warnings: Vec<String> = c
        .query_one(
            "select warnings from postpub.collated where version_id = $1",
            &[&tolerated],
        )
        .await
        .expect("collated row")
        .get(0);
    assert!(
        warnings
            .iter()
            .any(|w| w == "warning: recipe line 1: Missing method colour_me"),
        "{warnings:?}"
    );

    assert_eq!(db.state(&c, broken_recipe).await, "errored");
    let e = last_error(&c, broken_recipe).await;
    assert!(e.starts_with("step collate: recipe "), "{e}");
    assert!(
        e.contains("line 3") && e.contains("span"),
        "names line and rule: {e}"
    );

    assert_eq!(db.state(&c, not_xml).await, "errored");
    let e = last_error(&c, not_xml).await;
    assert!(e.contains("step collate") && e.contains("line 2"), "{e}");

    assert_eq!(db.state(&c, recursive).await, "errored");
    let e = last_error(&c, recursive).await;
    assert!(
        e.starts_with("step collate:") && e.contains("moved inside itself"),
        "{e}"
    );

    assert_eq!(db.state(&c, also_good).await, "current");
    db.assert_invariants(&c).await;
    d.stop().await;
}
