//! Upgrades: a database filled by an earlier release (migrations 0001–0007, the layout
//! before 0008; 0001–0008, the layout before 0009; 0001–0009, the claim and finish before
//! 0010), with versions in every state,
//! events delivered, parked and pending and an audit trail, is migrated to the current
//! layout without a version, an event or an audit row lost or changed, and a daemon then
//! finishes the work it left.

mod common;

use std::time::Duration;

use common::{assert_settled, count, wait_until, Daemon, TestDb};
use tokio_postgres::Client;

/// The schema of the last release before the storage layout of 0008.
const BEFORE_0008: i32 = 7;
/// The schema of the last release before the hot path of 0009 (leases, BEFORE trigger).
const BEFORE_0009: i32 = 8;
/// The schema of the last release before the claim and finish of 0010 (claims released
/// by a call of their own, the finish's lock a statement of its own).
const BEFORE_0010: i32 = 9;
/// The schema of the last release before the finish returned arrays (0011).
const BEFORE_0011: i32 = 10;
/// The schema of the last release before the claim took a next version as it stands (0012).
const BEFORE_0012: i32 = 11;
/// The schema of the last release before the finish took documents from the daemon (0013).
const BEFORE_0013: i32 = 12;

/// Every row a migration must keep, as text: versions (with their state), documents,
/// events, collated output and the audit trail, each in a fixed order.
async fn snapshot(c: &Client) -> Vec<String> {
    let queries = [
        "select format('%s %s v%s %s attempts=%s error=%s tombstone=%s recipe=%s body=%s created=%s published=%s token=%s by=%s',
                       id, document, version, state, attempts, last_error, is_tombstone, recipe_id,
                       md5(body), created_at, published_at, lease_token, locked_by)
           from postpub.versions order by id",
        "select format('%s last=%s', document, last_version) from postpub.documents order by document",
        "select format('%s %s %s v%s %s %s delivered=%s parked=%s attempts=%s error=%s',
                       id, event_id, document, version_id, kind, payload, delivered_at is not null,
                       parked_at is not null, attempts, last_error)
           from postpub.outbox order by id",
        "select format('%s %s %s', version_id, md5(content), warnings) from postpub.collated order by version_id",
        // Ordered by version and time: from 0008 on, rows derived from the version row
        // have no id.
        "select format('%s %s %s %s->%s %s %s %s', id, version_id, document, from_state, to_state, at, by, why)
           from postpub.transitions order by version_id, at, id nulls first, to_state::text",
    ];
    let mut rows = Vec::new();
    for q in queries {
        for r in c.query(q, &[]).await.unwrap_or_else(|e| panic!("{q}: {e}")) {
            rows.push(r.get::<_, String>(0));
        }
    }
    rows
}

/// Fills a database through that release's own functions: what its daemon and its
/// applications would have written.
async fn fill_like_the_previous_release(c: &Client) {
    c.batch_execute(
        "select postpub.publish('direct', '<p>1</p>');
         select postpub.publish('direct', '<p>2</p>');              -- 1 archived, 2 current
         select postpub.publish('baked', '<p>1</p>', 'p {}');
         select postpub.publish('baked', '<p>2</p>', 'p {}');       -- 1 superseded at the claim
         select postpub.publish('broken', '<p>x</p>', 'p {}');      -- errored
         select postpub.publish('again', '<p>x</p>', 'p {}');       -- retried, pending again
         select postpub.publish('held', '<p>x</p>', 'p {}');        -- processing
         select postpub.publish('gone', '<p>x</p>');
         select postpub.delete('gone');                              -- deleted event",
    )
    .await
    .expect("publish as the previous release's applications would");
    // The claim and the finish in transactions of their own, as a daemon makes them (from
    // 0008 on, a claim and a publish are read off the version row with their
    // transaction's time: in one transaction they would tie).
    c.batch_execute("select postpub._claim('old-daemon', 100, interval '1 hour', 7)")
        .await
        .expect("claim as the previous release's daemon would");
    c.batch_execute(
        "select postpub.publish('waiting', '<p>x</p>', 'p {}');     -- pending
         select postpub.publish('baked', '<p>3</p>', 'p {}');       -- pending, newer than current
         select postpub._finish('old-daemon', array_agg(v.id), array_agg(7::bigint),
                                array_agg(case v.document when 'broken' then 'error'
                                                          when 'again' then 'retry'
                                                          else 'publish' end),
                                array_agg(case v.document when 'broken' then 'bad markup'
                                                          when 'again' then 'flaky' end),
                                array_agg(0::float8),
                                array_agg(case v.document when 'baked' then '<p>baked</p>' end),
                                array_agg(null::text))
           from postpub.versions v
          where v.state = 'processing' and v.document <> 'held';
         update postpub.outbox set delivered_at = now(), attempts = 1 where document = 'direct';
         update postpub.outbox set parked_at = now(), attempts = 3, last_error = 'refused'
          where document = 'gone';",
    )
    .await
    .expect("fill the database as the previous release would");
}

#[tokio::test]
async fn a_database_of_the_release_before_0008_upgrades_without_losing_anything() {
    upgrade_from(BEFORE_0008).await;
}

#[tokio::test]
async fn a_database_of_the_release_before_0009_upgrades_without_losing_anything() {
    upgrade_from(BEFORE_0009).await;
}

#[tokio::test]
async fn a_database_of_the_release_before_0010_upgrades_without_losing_anything() {
    upgrade_from(BEFORE_0010).await;
}

#[tokio::test]
async fn a_database_of_the_release_before_0011_upgrades_without_losing_anything() {
    upgrade_from(BEFORE_0011).await;
}

#[tokio::test]
async fn a_database_of_the_release_before_0012_upgrades_without_losing_anything() {
    upgrade_from(BEFORE_0012).await;
}

#[tokio::test]
async fn a_database_of_the_release_before_0013_upgrades_without_losing_anything() {
    upgrade_from(BEFORE_0013).await;
}

async fn upgrade_from(release: i32) {
    let db = TestDb::empty().await;
    let mut c = db.client().await;
    let report = postpub::db::migrate::migrate_to(&mut c, release)
        .await
        .expect("migrate to the previous release");
    assert_eq!(report.to, release);
    fill_like_the_previous_release(&c).await;
    let states: Vec<String> = c
        .query(
            "select distinct state::text from postpub.versions order by 1",
            &[],
        )
        .await
        .expect("states")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        states,
        [
            "archived",
            "current",
            "errored",
            "post-publication",
            "processing",
            "superseded"
        ],
        "the previous release's data covers every state"
    );
    let before = snapshot(&c).await;

    let report = postpub::db::migrate::migrate(&mut c)
        .await
        .expect("migrate to the current release");
    assert_eq!(report.from, release);
    assert_eq!(report.to, postpub::db::migrate::latest());
    let after = snapshot(&c).await;
    assert_eq!(before, after, "a row changed in the upgrade");

    // The new structures describe the same data.
    for (what, sql) in [
        (
            "a current version without the document's pointer on it",
            "select count(*) from postpub.versions v join postpub.documents d using (document)
              where (v.state = 'current') <> (d.current_id is not distinct from v.id)",
        ),
        (
            "the queue is not the pending versions",
            "select count(*) from postpub.versions v
               full join postpub.queue q on q.version_id = v.id
              where (v.state = 'post-publication') is distinct from (q.version_id is not null)",
        ),
        (
            "a processing version without the document's pointer on it",
            "select count(*) from postpub.versions v join postpub.documents d using (document)
              where (v.state = 'processing') <> (d.processing_id is not distinct from v.id)",
        ),
        (
            "the claims are not the processing versions",
            "select count(*) from postpub.versions v
               full join postpub.claimed h on h.version_id = v.id
              where (v.state = 'processing') is distinct from (h.version_id is not null)",
        ),
    ] {
        assert_eq!(count(&c, sql).await, 0, "{what}");
    }
    assert_eq!(
        count(&c, "select count(*) from postpub.current").await,
        2,
        "direct and baked are live; gone is deleted"
    );

    // The database still refuses a second current version, now through the pointer.
    let e = c
        .batch_execute("update postpub.versions set state = 'current' where document = 'direct'")
        .await
        .expect_err("a second current version");
    assert_eq!(common::ops::sqlstate(&e), "23505");

    // The abandoned claim ("held", leased for an hour by a daemon that is gone) expires,
    // and a daemon of this release finishes everything.
    c.batch_execute(
        "update postpub.versions set locked_until = now() - interval '1 second'
          where state = 'processing'",
    )
    .await
    .expect("expire the old lease");
    let d = Daemon::start(db.config()).await;
    wait_until(Duration::from_secs(30), "the old work finished", || async {
        count(
            &c,
            "select count(*) from postpub.versions where state in ('post-publication', 'processing')",
        )
        .await
            == 0
    })
    .await;
    d.stop().await;
    assert_settled(&c).await;
    // The audit trail of the previous release is still there, unchanged. (Compared
    // without the id: a claim read off the version row, which has none, is stored when
    // the claim ends, as the rescue of "held" did here.)
    let without_id = |r: &String| {
        r.split_once(' ')
            .map_or(String::new(), |(_, rest)| rest.to_owned())
    };
    let kept: Vec<String> = snapshot(&c).await.iter().map(without_id).collect();
    for row in before.iter().filter(|r| r.contains("->")) {
        assert!(
            kept.contains(&without_id(row)),
            "an old audit row changed or went: {row}"
        );
    }
}
