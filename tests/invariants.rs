//! The checks the reliability scenarios end with must fail when the property they check is
//! broken: each case corrupts a settled database in a transaction (as a superuser could)
//! and expects the check to name the problem.

mod common;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use common::{assert_invariants, assert_settled, claims, wait_until, Daemon, TestDb};
use futures_util::FutureExt;
use tokio_postgres::Client;

/// A settled database with live, archived, deleted and superseded versions.
async fn settled() -> (TestDb, Client) {
    let (db, c) = TestDb::with_client().await;
    // Three versions of "d" at once: the newest is claimed, the older two superseded.
    c.batch_execute(
        "select postpub.publish('d', '<p>' || i || '</p>', 'p {}') from generate_series(1, 3) i",
    )
    .await
    .expect("publish d");
    let d = Daemon::start(db.config()).await;
    for doc in ["a", "b", "c"] {
        for i in 0..2 {
            db.publish(&c, doc, &format!("<p>{i}</p>"), Some("p {}"))
                .await;
        }
    }
    wait_until(Duration::from_secs(10), "first round settled", || async {
        db.pending(&c).await == 0
    })
    .await;
    db.publish(&c, "a", "<p>2</p>", Some("p {}")).await;
    db.delete(&c, "b").await;
    wait_until(Duration::from_secs(10), "settled", || async {
        db.pending(&c).await == 0
    })
    .await;
    d.stop().await;
    assert_settled(&c).await;
    (db, c)
}

/// Runs `corrupt` in a transaction, expects `check` to panic with `message`, rolls back.
async fn caught<F>(c: &Client, corrupt: &str, message: &str, check: F)
where
    F: std::future::Future<Output = ()>,
{
    c.batch_execute(&format!("begin; {corrupt}"))
        .await
        .unwrap_or_else(|e| panic!("{corrupt}: {e}"));
    let result = AssertUnwindSafe(check).catch_unwind().await;
    c.batch_execute("rollback").await.expect("rollback");
    let err = result.expect_err(&format!("not caught: {corrupt}"));
    let text = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(text.contains(message), "{corrupt}: wrong message {text:?}");
}

#[tokio::test]
async fn the_end_state_checks_catch_each_broken_promise() {
    let (_db, c) = settled().await;
    let cases: &[(&str, &str)] = &[
        (
            "insert into postpub.outbox (event_id, document, version_id, kind, payload)
             select gen_random_uuid(), document, version_id, kind, payload from postpub.outbox
              where kind = 'published' limit 1",
            "without exactly one published event",
        ),
        (
            "delete from postpub.outbox where kind = 'deleted'",
            "a deletion without exactly one deleted event",
        ),
        (
            "insert into postpub.outbox (event_id, document, version_id, kind, payload)
             select gen_random_uuid(), document, id, 'published', '{}' from postpub.versions
              where state = 'superseded' limit 1",
            "an event for a version that was never current",
        ),
        (
            "update postpub.outbox set kind = 'published' where kind = 'deleted'",
            "an event of the wrong kind",
        ),
        (
            // Its publish is a stored row or read off the version (published_by): both go.
            "delete from postpub.transition_log where to_state = 'current'
              and version_id = (select id from postpub.versions where document = 'c' and state = 'current');
             update postpub.versions set published_by = null where document = 'c' and state = 'current'",
            "became current more than once, or is current/archived without ever becoming current",
        ),
        (
            "insert into postpub.transitions (version_id, document, from_state, to_state, by)
             select id, document, 'current', 'archived', 'test' from postpub.versions
              where document = 'c' and state = 'current'",
            "the audit trail does not end in the version's state",
        ),
        (
            // Version 3 of "a" is current; make version 2 current and 3 archived instead.
            // (with an audit trail that agrees, so that only the order is wrong).
            "update postpub.versions set state = 'archived' where document = 'a' and version = 3;
             update postpub.versions set state = 'current' where document = 'a' and version = 2;
             insert into postpub.transitions (version_id, document, from_state, to_state, by)
             select id, document, 'current', 'archived', 'test' from postpub.versions
              where document = 'a' and version = 3;
             delete from postpub.transition_log where to_state = 'archived'
                and version_id = (select id from postpub.versions where document = 'a' and version = 2);",
            "a current version older than another published one",
        ),
        (
            "update postpub.versions set state = 'errored', last_error = null
              where document = 'c' and state = 'current'",
            "errored without a reason",
        ),
    ];
    for (corrupt, message) in cases {
        caught(&c, corrupt, message, assert_invariants(&c)).await;
    }
    caught(
        &c,
        "update postpub.versions set state = 'post-publication' where id = (select min(id) from postpub.versions where state = 'superseded')",
        "versions not in a final state",
        assert_settled(&c),
    )
    .await;
    // Two current or two processing versions of a document: the database itself refuses.
    let e = c
        .batch_execute(
            "update postpub.versions set state = 'current' where document = 'a' and state = 'archived'",
        )
        .await
        .expect_err("one current per document is enforced by the database");
    assert_eq!(common::ops::sqlstate(&e), "23505");

    // Claim accounting: a second claim with no retry, rescue or release before it.
    let before = claims(&c).await;
    assert_eq!(before.duplicates, 0, "{before:?}");
    c.batch_execute(
        "begin;
         insert into postpub.transitions (version_id, document, from_state, to_state, by)
         select id, document, 'post-publication', 'processing', 'test' from postpub.versions
          where document = 'c' and state = 'current'",
    )
    .await
    .expect("extra claim");
    let after = claims(&c).await;
    c.batch_execute("rollback").await.expect("rollback");
    assert_eq!(after.duplicates, 1, "{after:?}");
    assert_eq!(after.reclaims, before.reclaims + 1, "{after:?}");
}
