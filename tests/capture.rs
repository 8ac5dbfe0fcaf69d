//! postpub.capture: an application's own table becomes a source. Its inserts are
//! snapshotted into postpub.versions inside the application's transaction.

mod common;

use std::time::Duration;

use common::ops::{sqlstate, LoginRole};
use common::{wait_until, Daemon, TestDb};

/// An application role (a postpub_publisher) owning `app.modules` with the trigger.
async fn setup(db: &TestDb) -> (LoginRole, tokio_postgres::Client) {
    let app = LoginRole::new("postpub_publisher").await;
    db.client()
        .await
        .batch_execute(&format!("create schema app authorization {}", app.name))
        .await
        .expect("app schema");
    let a = app.client(db).await;
    a.batch_execute(
        "create table app.modules (
           id      serial primary key,
           name    text not null,
           content text,
           recipe  text
         );
         create trigger _500_postpub_capture
           after insert or update or delete on app.modules
           for each row execute function postpub.capture('name', 'content', 'recipe', 'modules/');",
    )
    .await
    .expect("the application attaches the capture trigger");
    (app, a)
}

#[tokio::test]
async fn an_application_insert_becomes_a_version_that_becomes_current() {
    let (db, c) = TestDb::with_client().await;
    let (_app, a) = setup(&db).await;
    let d = Daemon::start(db.config()).await;

    // With a recipe: waits for the daemon.
    a.execute(
        "insert into app.modules (name, content, recipe) values ('m1', '<p>one</p>', 'p {}')",
        &[],
    )
    .await
    .expect("app insert");
    // Without one: current at once, in the application's transaction.
    a.execute(
        "insert into app.modules (name, content) values ('m2', '<p>two</p>'), ('m3', '<p>three</p>')",
        &[],
    )
    .await
    .expect("app bulk insert");

    wait_until(Duration::from_secs(10), "m1 current", || async {
        c.query_opt(
            "select 1 from postpub.current where document = 'modules/m1'",
            &[],
        )
        .await
        .expect("current")
        .is_some()
    })
    .await;
    let rows = c
        .query(
            "select document, version, content from postpub.current order by document",
            &[],
        )
        .await
        .expect("current");
    let got: Vec<(String, i32, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        [
            ("modules/m1".to_owned(), 1, "<p>one</p>".to_owned()),
            ("modules/m2".to_owned(), 1, "<p>two</p>".to_owned()),
            ("modules/m3".to_owned(), 1, "<p>three</p>".to_owned()),
        ]
    );
    let recipe: bool = c
        .query_one(
            "select recipe_id is not null from postpub.versions where document = 'modules/m1'",
            &[],
        )
        .await
        .expect("recipe")
        .get(0);
    assert!(recipe, "the recipe column was captured");

    // An update is a new version; a delete is a tombstone.
    a.batch_execute(
        "update app.modules set content = '<p>two, revised</p>' where name = 'm2';
         delete from app.modules where name = 'm3';",
    )
    .await
    .expect("app update and delete");
    wait_until(Duration::from_secs(10), "m3 deleted", || async {
        c.query_one(
            "select count(*) from postpub.versions
              where document = 'modules/m3' and is_tombstone and state = 'current'",
            &[],
        )
        .await
        .expect("tombstone")
        .get::<_, i64>(0)
            == 1
    })
    .await;
    let m2: (i32, String) = c
        .query_one(
            "select version, content from postpub.current where document = 'modules/m2'",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("m2");
    assert_eq!(m2, (2, "<p>two, revised</p>".to_owned()));
    db.assert_invariants(&c).await;
    d.stop().await;
}

#[tokio::test]
async fn a_rolled_back_application_transaction_produces_nothing() {
    let (db, c) = TestDb::with_client().await;
    let (_app, mut a) = setup(&db).await;
    let tx = a.transaction().await.expect("begin");
    tx.execute(
        "insert into app.modules (name, content, recipe) values ('r1', '<p>x</p>', 'p {}'), ('r2', '<p>y</p>', null)",
        &[],
    )
    .await
    .expect("insert");
    // Inside the transaction the snapshot is there...
    let inside = common::count(&tx, "select count(*) from app.modules").await;
    assert_eq!(inside, 2);
    tx.rollback().await.expect("rollback");
    // ...and with the rollback it is gone: no version, no document, no event, no audit.
    for table in ["versions", "documents", "outbox", "transitions", "recipes"] {
        let n: i64 = c
            .query_one(&format!("select count(*) from postpub.{table}"), &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 0, "postpub.{table} after the rollback");
    }
}

#[tokio::test]
async fn a_row_that_cannot_be_published_fails_the_application_statement() {
    let (db, c) = TestDb::with_client().await;
    let (_app, a) = setup(&db).await;
    let msg = common::refused(
        &a,
        "insert into app.modules (name, content) values ('nobody', null)",
        &[],
    )
    .await;
    assert!(
        msg.contains("modules/nobody") && msg.contains("must not be null"),
        "{msg}"
    );
    let n = common::count(&c, "select count(*) from app.modules").await;
    assert_eq!(n, 0, "the application's row was not written either");

    // A misspelt column names the table and the column.
    a.batch_execute(
        "create trigger _600_bad after insert on app.modules
           for each row execute function postpub.capture('nmae', 'content')",
    )
    .await
    .expect("attach");
    let msg = common::refused(
        &a,
        "insert into app.modules (name, content) values ('x', '<p>x</p>')",
        &[],
    )
    .await;
    assert!(msg.contains("app.modules") && msg.contains("nmae"), "{msg}");
}

#[tokio::test]
async fn only_publishers_can_attach_or_feed_the_trigger() {
    let db = TestDb::new().await;
    let (_app, _a) = setup(&db).await;
    let c = db.client().await;
    // A role that may write the table but is not a publisher: its insert is refused.
    let outsider = LoginRole::new("postpub_operator").await;
    c.batch_execute(&format!(
        "grant usage on schema app to {n}; grant insert on app.modules to {n};
         grant usage on sequence app.modules_id_seq to {n};",
        n = outsider.name
    ))
    .await
    .expect("grants");
    let o = outsider.client(&db).await;
    let e = o
        .execute(
            "insert into app.modules (name, content) values ('o', '<p>o</p>')",
            &[],
        )
        .await
        .expect_err("not a publisher");
    assert_eq!(sqlstate(&e), "42501", "{e}");
    // Nor may it attach postpub.capture to a table of its own (a temporary one here).
    let created = o
        .batch_execute(
            "create table if not exists pg_temp.own (n text, b text);
             create trigger t after insert on pg_temp.own
               for each row execute function postpub.capture('n', 'b')",
        )
        .await;
    let e = created.expect_err("operator attaching capture");
    assert_eq!(sqlstate(&e), "42501", "{e}");
}
