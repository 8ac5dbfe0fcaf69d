//! The life of a version with a real PostgreSQL and an in-process daemon: startup scan,
//! LISTEN wake-ups, supersede, archive + outbox in one transaction, tombstones.

mod common;

use std::time::{Duration, Instant};

use common::{wait_until, Daemon, TestDb};
use postpub::db::State;
use postpub::event::Event;
use tokio_postgres::Client;

const RECIPE: &str = "p { color: inherit; }";

#[tokio::test]
async fn pending_versions_present_before_start_are_all_processed_at_startup() {
    let (db, c) = TestDb::with_client().await;
    c.batch_execute(&format!(
        "select count(postpub.publish('scan-' || (i % 100), '<p>' || i || '</p>', '{RECIPE}'))
           from generate_series(0, 299) i"
    ))
    .await
    .expect("publish 300");
    let mut cfg = db.config();
    cfg.worker.poll_interval = Duration::from_secs(60);
    cfg.worker.batch_size = 16; // several batches: the scan must not stop after one
    let d = Daemon::start(cfg).await;
    wait_until(Duration::from_secs(20), "nothing pending", || async {
        db.pending(&c).await == 0
    })
    .await;
    let counts = db.counts(&c).await;
    assert_eq!(counts.get("current"), Some(&100), "{counts:?}");
    assert_eq!(counts.get("superseded"), Some(&200), "{counts:?}");
    let wrong = common::count(&c, "select count(*) from postpub.versions v where v.state = 'current'
               and v.version <> (select max(version) from postpub.versions w where w.document = v.document)").await;
    assert_eq!(wrong, 0, "every current version is its document's newest");
    db.assert_invariants(&c).await;
    d.stop().await;
}

#[tokio::test]
async fn a_version_published_while_running_is_claimed_without_waiting_for_the_poll() {
    let (db, c) = TestDb::with_client().await;
    let mut cfg = db.config();
    cfg.worker.poll_interval = Duration::from_secs(60);
    let mut d = Daemon::start(cfg).await;
    let mut worst = Duration::ZERO;
    for i in 0..10 {
        let t0 = Instant::now();
        let id = db
            .publish(&c, &format!("live-{i}"), "<p>x</p>", Some(RECIPE))
            .await;
        d.wait_event(Duration::from_secs(5), |e| {
            matches!(e, Event::Finished { version_id, state: State::Current, .. } if *version_id == id)
        })
        .await;
        worst = worst.max(t0.elapsed());
    }
    // The poll is 60 s away: anything near it would mean the notification was missed.
    assert!(
        worst < Duration::from_millis(1000),
        "slowest publish -> current took {worst:?}"
    );
    d.stop().await;
}

#[tokio::test]
async fn of_three_quick_versions_only_the_newest_becomes_current() {
    let (db, c) = TestDb::with_client().await;
    // Published in one transaction, so the daemon sees all three at once.
    let ids: Vec<i64> = c
        .query(
            &format!("select postpub.publish('book', '<p>v' || i || '</p>', '{RECIPE}') from generate_series(1, 3) i"),
            &[],
        )
        .await
        .expect("publish 3")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let d = Daemon::start(db.config()).await;
    wait_until(Duration::from_secs(10), "nothing pending", || async {
        db.pending(&c).await == 0
    })
    .await;
    assert_eq!(db.state(&c, ids[0]).await, "superseded");
    assert_eq!(db.state(&c, ids[1]).await, "superseded");
    assert_eq!(db.state(&c, ids[2]).await, "current");
    let content: String = c
        .query_one(
            "select content from postpub.current where document = 'book'",
            &[],
        )
        .await
        .expect("current view")
        .get(0);
    assert_eq!(content, "<p>v3</p>");
    db.assert_invariants(&c).await;
    d.stop().await;
}

#[tokio::test]
async fn the_previous_current_is_archived_in_the_same_transaction_as_the_outbox_event() {
    let (db, c) = TestDb::with_client().await;
    let d = Daemon::start(db.config()).await;
    let v1 = db.publish(&c, "page", "<p>one</p>", Some(RECIPE)).await;
    wait_until(Duration::from_secs(10), "v1 current", || async {
        db.state(&c, v1).await == "current"
    })
    .await;
    let v2 = db.publish(&c, "page", "<p>two</p>", Some(RECIPE)).await;
    wait_until(Duration::from_secs(10), "v2 current", || async {
        db.state(&c, v2).await == "current"
    })
    .await;
    assert_eq!(db.state(&c, v1).await, "archived");
    // xmin is the id of the transaction that wrote the row version.
    let same: bool = c
        .query_one(
            "select a.xmin = o.xmin and a.xmin = n.xmin
               from postpub.versions a, postpub.versions n, postpub.outbox o
              where a.id = $1 and n.id = $2 and o.version_id = $2",
            &[&v1, &v2],
        )
        .await
        .expect("xmin query")
        .get(0);
    assert!(
        same,
        "archive, new current and outbox event were written by different transactions"
    );
    let kinds: Vec<String> = c
        .query(
            "select kind::text from postpub.outbox where document = 'page' order by id",
            &[],
        )
        .await
        .expect("outbox")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kinds, ["published", "published"]);
    // Event ids are UUIDv7: version nibble 7, RFC variant, and the leading 48 bits (Unix
    // time in ms) never decrease from one event to the next and are close to now.
    let ids: Vec<uuid::Uuid> = c
        .query(
            "select event_id from postpub.outbox where document = 'page' order by id",
            &[],
        )
        .await
        .expect("event ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let mut previous = 0;
    for id in &ids {
        assert_eq!(id.get_version_num(), 7, "{id}");
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
        let ms = u64::from_be_bytes({
            let mut b = [0u8; 8];
            b[2..].copy_from_slice(&id.as_bytes()[..6]);
            b
        });
        assert!(
            ms >= previous && ms <= now_ms && now_ms - ms < 60_000,
            "{id}: {ms} vs {now_ms}"
        );
        previous = ms;
    }
    db.assert_invariants(&c).await;
    d.stop().await;
}

#[tokio::test]
async fn a_version_without_a_recipe_is_current_in_the_publishing_transaction() {
    let (db, c) = TestDb::with_client().await;
    let v1 = db.publish(&c, "note", "<p>a</p>", None).await;
    assert_eq!(db.state(&c, v1).await, "current");
    let v2 = db.publish(&c, "note", "<p>b</p>", None).await;
    assert_eq!(db.state(&c, v1).await, "archived");
    assert_eq!(db.state(&c, v2).await, "current");
    let events: i64 = c
        .query_one(
            "select count(*) from postpub.outbox
              where document = 'note' and kind = 'published'
                and substr(event_id::text, 15, 1) = '7'", // UUIDv7, as the daemon's
            &[],
        )
        .await
        .expect("outbox")
        .get(0);
    assert_eq!(events, 2);
    // The API's own checks.
    let msg = common::refused(&c, "select postpub.publish('', 'x')", &[]).await;
    assert!(msg.contains("non-empty"), "{msg}");
    let msg = common::refused(&c, "select postpub.publish('d', null)", &[]).await;
    assert!(msg.contains("must not be null"), "{msg}");
    db.assert_invariants(&c).await;
}

#[tokio::test]
async fn a_tombstone_of_a_never_published_document_settles_without_event_or_retry() {
    let (db, c) = TestDb::with_client().await;
    let mut d = Daemon::start(db.config()).await;
    let t = db.delete(&c, "ghost").await;
    d.wait_event(
        Duration::from_secs(10),
        |e| matches!(e, Event::Finished { version_id, .. } if *version_id == t),
    )
    .await;
    let row = c
        .query_one(
            "select state::text, attempts from postpub.versions where id = $1",
            &[&t],
        )
        .await
        .expect("row");
    assert_eq!(row.get::<_, String>(0), "current");
    assert_eq!(row.get::<_, i32>(1), 1);
    let events = common::count(
        &c,
        "select count(*) from postpub.outbox where document = 'ghost'",
    )
    .await;
    assert_eq!(events, 0);
    // Settled for good: no further claim of it.
    let again = tokio::time::timeout(Duration::from_millis(1500), async {
        loop {
            if let Ok(Event::Claimed { version_id, .. }) = d.events.recv().await {
                if version_id == t {
                    return;
                }
            }
        }
    })
    .await;
    assert!(again.is_err(), "the tombstone was claimed again");
    d.stop().await;
}

#[tokio::test]
async fn deleting_a_live_document_emits_deleted_and_a_second_delete_emits_nothing() {
    let (db, c) = TestDb::with_client().await;
    let d = Daemon::start(db.config()).await;
    let v = db.publish(&c, "doc", "<p>x</p>", Some(RECIPE)).await;
    wait_until(Duration::from_secs(10), "published", || async {
        db.state(&c, v).await == "current"
    })
    .await;
    let t1 = db.delete(&c, "doc").await;
    wait_until(Duration::from_secs(10), "deleted", || async {
        db.state(&c, t1).await == "current"
    })
    .await;
    assert_eq!(db.state(&c, v).await, "archived");
    let t2 = db.delete(&c, "doc").await;
    wait_until(Duration::from_secs(10), "deleted twice", || async {
        db.state(&c, t2).await == "current"
    })
    .await;
    let kinds: Vec<(String, i64)> = c
        .query(
            "select kind::text, version_id from postpub.outbox where document = 'doc' order by id",
            &[],
        )
        .await
        .expect("outbox")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        kinds,
        [("published".to_owned(), v), ("deleted".to_owned(), t1)]
    );
    let live = common::count(
        &c,
        "select count(*) from postpub.current where document = 'doc'",
    )
    .await;
    assert_eq!(live, 0, "a deleted document is not in the current view");
    db.assert_invariants(&c).await;
    d.stop().await;
}

/// A daemon whose step takes 0.5 s, and version 1 of `doc` in processing there.
async fn v1_processing(doc: &str) -> (TestDb, Client, Daemon, i64, common::Script) {
    let (db, c) = TestDb::with_client().await;
    let script = common::Script::new("body=$(cat); sleep 0.5; printf '%s' \"$body\"");
    let d = Daemon::start(db.command_config(&script)).await;
    let v1 = db.publish(&c, doc, "<p>1</p>", Some(RECIPE)).await;
    wait_until(Duration::from_secs(10), "v1 processing", || async {
        db.state(&c, v1).await == "processing"
    })
    .await;
    (db, c, d, v1, script)
}

#[tokio::test]
async fn publishing_while_a_version_is_processing_is_handled_next() {
    let (db, c, d, v1, _script) = v1_processing("busy").await;
    let v2 = db.publish(&c, "busy", "<p>2</p>", Some(RECIPE)).await;
    wait_until(Duration::from_secs(10), "v2 current", || async {
        db.state(&c, v2).await == "current"
    })
    .await;
    assert_eq!(
        db.state(&c, v1).await,
        "archived",
        "v1 finished first, then v2 replaced it"
    );
    db.assert_invariants(&c).await;
    d.stop().await;
}

#[tokio::test]
async fn a_processing_version_overtaken_by_a_newer_current_one_is_superseded_not_published() {
    let (db, c, d, v1, _script) = v1_processing("race").await;
    // Published without a recipe: current at once, while v1 is still being worked on.
    let v2 = db.publish(&c, "race", "<p>2</p>", None).await;
    assert_eq!(db.state(&c, v2).await, "current");
    wait_until(Duration::from_secs(10), "v1 settled", || async {
        db.state(&c, v1).await != "processing"
    })
    .await;
    assert_eq!(db.state(&c, v1).await, "superseded");
    assert_eq!(db.state(&c, v2).await, "current");
    let events: i64 = c
        .query_one(
            "select count(*) from postpub.outbox where version_id = $1",
            &[&v1],
        )
        .await
        .expect("outbox")
        .get(0);
    assert_eq!(events, 0, "a superseded version announces nothing");
    db.assert_invariants(&c).await;
    d.stop().await;
}
