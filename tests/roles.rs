//! Roles: each does its job and nothing more; a forbidden call fails with SQLSTATE 42501.
//! Login roles made here are members of the postpub roles and dropped when the test ends.

mod common;

use std::time::Duration;

use common::ops::{get, sqlstate, LoginRole};
use common::{wait_until, Daemon, TestDb};

const DENIED: &str = "42501";

#[tokio::test]
async fn migrate_creates_the_three_roles_without_superpowers() {
    let (db, c) = TestDb::with_client().await;
    let rows = c
        .query(
            "select rolname, rolsuper, rolcanlogin, rolcreaterole, rolcreatedb
               from pg_roles where rolname in ('postpub_publisher', 'postpub_operator', 'postpub_worker')
              order by 1",
            &[],
        )
        .await
        .expect("roles");
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        names,
        ["postpub_operator", "postpub_publisher", "postpub_worker"]
    );
    for r in &rows {
        let flags: (bool, bool, bool, bool) = (r.get(1), r.get(2), r.get(3), r.get(4));
        assert_eq!(
            flags,
            (false, false, false, false),
            "{}",
            r.get::<_, String>(0)
        );
    }
    // Migrating again (roles exist now) is fine and changes nothing.
    let mut again = common::connect(&db.url).await;
    let report = postpub::db::migrate::migrate(&mut again)
        .await
        .expect("re-run");
    assert_eq!(report.from, report.to);
}

#[tokio::test]
async fn a_publisher_publishes_and_deletes_but_cannot_requeue_or_read() {
    let db = TestDb::new().await;
    let role = LoginRole::new("postpub_publisher").await;
    let p = role.client(&db).await;
    let id = common::count(&p, "select postpub.publish('pub/a', '<p>x</p>', 'p {}')").await;
    p.query_one("select postpub.publish('pub/b', '<p>x</p>')", &[])
        .await
        .expect("publisher publishes without a recipe");
    p.query_one("select postpub.delete('pub/b')", &[])
        .await
        .expect("publisher deletes");
    for sql in [
        format!("select postpub.requeue({id})"),
        "select postpub.requeue_errored()".to_owned(),
        "select count(*) from postpub.versions".to_owned(),
        "update postpub.versions set state = 'current'".to_owned(),
        "select * from postpub._claim('me', 1, interval '30s')".to_owned(),
    ] {
        let e = p.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(sqlstate(&e), DENIED, "{sql}: {e}");
    }
}

#[tokio::test]
async fn an_operator_reads_and_requeues_but_cannot_publish() {
    let (db, c) = TestDb::with_client().await;
    let v = db.publish(&c, "op/a", "<p>x</p>", Some("p {}")).await;
    c.execute(
        "update postpub.versions set state = 'errored', attempts = 1, last_error = 'test' where id = $1",
        &[&v],
    )
    .await
    .expect("errored");
    let role = LoginRole::new("postpub_operator").await;
    let o = role.client(&db).await;
    for sql in [
        "select postpub.publish('op/b', '<p>x</p>')",
        "select postpub.delete('op/a')",
        "update postpub.versions set attempts = 0",
        "delete from postpub.outbox",
        "select * from postpub._rescue('me', 5)",
    ] {
        let e = o.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), DENIED, "{sql}: {e}");
    }
    for sql in [
        "select count(*) from postpub.versions",
        "select count(*) from postpub.current",
        "select count(*) from postpub.transitions",
        "select count(*) from postpub.outbox",
        "select count(*) from postpub.collated",
        "select count(*) from postpub.recipes",
    ] {
        o.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("operator reads: {sql}: {e}"));
    }
    let n: i64 = o
        .query_one("select postpub.requeue($1)", &[&v])
        .await
        .expect("operator requeues")
        .get(0);
    assert_eq!(n, v);
    assert_eq!(db.state(&c, v).await, "post-publication");
    // The CLI's status works with the operator's rights too.
    let st = postpub::admin::status(&o, 5)
        .await
        .expect("status as operator");
    assert!(st
        .versions
        .iter()
        .any(|(s, n)| s == "post-publication" && *n == 1));
}

#[tokio::test]
async fn the_daemon_runs_end_to_end_as_a_postpub_worker_login() {
    let (db, c) = TestDb::with_client().await;
    let role = LoginRole::new("postpub_worker").await;

    // The worker itself may not publish, nor write versions directly.
    let w = role.client(&db).await;
    for sql in [
        "select postpub.publish('w/x', '<p>x</p>')",
        "select postpub.requeue_errored()",
        "update postpub.versions set state = 'current'",
        "insert into postpub.documents values ('w/x', 1)",
    ] {
        let e = w.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), DENIED, "{sql}: {e}");
    }

    let mut cfg = db.config();
    cfg.database.url = role.url(&db);
    cfg.pipeline.steps = vec!["validate".to_owned()];
    let (d, port) = Daemon::start_with_http(cfg).await;

    let ok = db.publish(&c, "w/ok", "<p>fine</p>", Some("p {}")).await;
    let bad = db
        .publish(&c, "w/bad", "<div><p>open</div>", Some("p {}"))
        .await;
    let gone = db.publish(&c, "w/gone", "<p>bye</p>", None).await;
    let tomb = db.delete(&c, "w/gone").await;
    // An abandoned lease, for the rescuer.
    let stuck = db.publish_abandoned(&c, "w/stuck").await;
    wait_until(Duration::from_secs(15), "every version settled", || async {
        db.state(&c, ok).await == "current"
            && db.state(&c, bad).await == "errored"
            && db.state(&c, tomb).await == "current"
            && db.state(&c, stuck).await == "current"
    })
    .await;
    assert_eq!(db.state(&c, gone).await, "archived");
    let by: String = c
        .query_one(
            "select by from postpub.transitions where version_id = $1 and to_state = 'current'",
            &[&ok],
        )
        .await
        .expect("audit")
        .get(0);
    assert!(by.contains(':'), "recorded by the daemon's actor id: {by}");

    // Its HTTP reads work with the same rights.
    let r = get(port, "/documents/w/ok", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "<p>fine</p>"));
    assert_eq!(get(port, "/documents/w/gone", &[]).await.status, 410);
    assert_eq!(get(port, "/readyz", &[]).await.status, 200);
    let m = get(port, "/metrics", &[]).await.body;
    assert!(m.contains("postpub_database_up 1"), "{m}");

    db.assert_invariants(&c).await;

    // The outbox relay works through its functions; direct writes are not the worker's.
    w.batch_execute(
        "select count(*) from postpub._relay_claim(array['sink'], 10, false);
         select postpub._relay_purge(interval '1 second', 10);",
    )
    .await
    .expect("relay functions as worker");
    let e = w
        .batch_execute("delete from postpub.outbox")
        .await
        .expect_err("direct delete refused");
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    d.stop().await;
}
