//! Migrations: idempotent, safe when run twice at once, and the invariants they install.

mod common;

use std::process::Command;

use common::{bin, TestDb};

#[tokio::test]
async fn migrate_is_idempotent_and_safe_when_two_run_at_once() {
    let db = TestDb::empty().await;
    let spawn = || {
        Command::new(bin())
            .args(["migrate", "--database-url", &db.url])
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join(), b.join())
    });
    for o in [a, b] {
        let o = o.expect("thread").expect("run migrate");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = spawn().expect("third migrate");
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("up to date"));
    let c = db.client().await;
    let rows: Vec<(i32, String)> = c
        .query(
            "select version, name from postpub.migrations order by version",
            &[],
        )
        .await
        .expect("migrations table")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let want: Vec<(i32, String)> = postpub::db::migrate::MIGRATIONS
        .iter()
        .map(|m| (m.version, m.name.to_owned()))
        .collect();
    assert_eq!(rows, want, "each migration recorded once");
}

#[tokio::test]
async fn the_database_refuses_a_second_current_or_processing_version() {
    let (db, c) = TestDb::with_client().await;
    db.publish(&c, "two", "<p>1</p>", None).await;
    db.publish(&c, "two", "<p>2</p>", None).await;
    for (state, token) in [("current", "null"), ("processing", "1")] {
        let err = c
            .execute(
                &format!(
                    "update postpub.versions set state = '{state}', lease_token = {token} where document = 'two'"
                ),
                &[],
            )
            .await
            .expect_err("second one refused");
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION),
            "{state}"
        );
    }
}

#[tokio::test]
async fn a_newer_schema_than_the_binary_is_refused() {
    let (db, c) = TestDb::with_client().await;
    c.execute(
        "insert into postpub.migrations (version, name) values (9999, 'future')",
        &[],
    )
    .await
    .expect("fake a future migration");
    let o = Command::new(bin())
        .args(["run", "--database-url", &db.url])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("newer than this postpub knows"));
}
