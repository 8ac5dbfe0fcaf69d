//! Claiming under contention, leases, rescue and fencing, against a real PostgreSQL.

mod common;

use std::time::Duration;

use common::{wait_until, Daemon, TestDb};
use postpub::worker::claim::{self, Claimed, Finish, Finished, Outcome};

const RECIPE: &str = "p { color: inherit; }";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_current_per_document_with_four_daemons_racing_on_1000_documents() {
    let (db, c) = TestDb::with_client().await;
    let mut cfg = db.config();
    cfg.worker.concurrency = 4;
    cfg.worker.batch_size = 16;
    let mut daemons = Vec::new();
    for _ in 0..4 {
        daemons.push(Daemon::start(cfg.clone()).await);
    }
    // Two rounds of 1,000 documents while the daemons run.
    for _round in 0..2 {
        for k in 0..10 {
            c.batch_execute(&format!(
                "select count(postpub.publish('race-' || i, '<p>' || i || '</p>', '{RECIPE}'))
                   from generate_series({}, {}) i",
                k * 100,
                k * 100 + 99
            ))
            .await
            .expect("publish");
        }
    }
    wait_until(
        Duration::from_secs(60),
        "1000 current and nothing pending",
        || async { db.pending(&c).await == 0 && db.counts(&c).await.get("current") == Some(&1000) },
    )
    .await;
    let old = common::count(
        &c,
        "select count(*) from postpub.versions where state = 'current' and version <> 2",
    )
    .await;
    assert_eq!(old, 0, "every current version is the newest");
    db.assert_invariants(&c).await;
    for d in daemons {
        d.stop().await;
    }
}

/// Finishes one claimed version as `worker` would; what became of it.
async fn finish_one(
    c: &deadpool_postgres::Object,
    worker: &str,
    claimed: &Claimed,
    outcome: Outcome,
) -> Vec<(i64, Finished)> {
    claim::finish_batch(c, worker, &[finish(claimed, &outcome)])
        .await
        .unwrap_or_else(|e| panic!("{worker} finishing {}: {e}", claimed.id))
}

/// What the daemon sends to record `outcome` for a version it claimed.
fn finish<'a>(claimed: &'a Claimed, outcome: &'a Outcome) -> Finish<'a> {
    Finish {
        id: claimed.id,
        token: claimed.token,
        document: &claimed.document,
        version: claimed.version,
        outcome,
    }
}

/// A fresh database and a connection from the daemon's own pool (what `claim` takes).
async fn pooled() -> (TestDb, deadpool_postgres::Pool, deadpool_postgres::Object) {
    let db = TestDb::new().await;
    let (pool, _) = postpub::db::pool(&db.config().database).expect("pool");
    let c = pool.get().await.expect("conn");
    (db, pool, c)
}

/// Worker A claims `v` (the only pending version) with a 1 s lease and stalls until it has
/// run out; the rescuer puts `v` back and worker B claims it. A's claim of it, then B's.
async fn lose_to_another_worker(c: &deadpool_postgres::Object, v: i64) -> (Claimed, Claimed) {
    let mut a = claim::claim_batch(c, "worker-a", 10, Duration::from_secs(1))
        .await
        .expect("claim a");
    assert_eq!(a.iter().map(|x| x.id).collect::<Vec<_>>(), vec![v]);
    wait_until(
        Duration::from_secs(10),
        "A's 1 s lease to run out",
        || async {
            c.query_one(
                "select locked_until < now() from postpub.versions where id = $1",
                &[&v],
            )
            .await
            .expect("lease")
            .get::<_, bool>(0)
        },
    )
    .await;
    let rescued = claim::rescue_expired(c, "rescuer", 5)
        .await
        .expect("rescue");
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].state, "post-publication");
    let mut b = claim::claim_batch(c, "worker-b", 10, Duration::from_secs(30))
        .await
        .expect("claim b");
    assert_eq!(b.iter().map(|x| x.id).collect::<Vec<_>>(), vec![v]);
    (a.remove(0), b.remove(0))
}

#[tokio::test]
async fn a_worker_whose_lease_expired_cannot_overwrite_the_reclaimed_row() {
    let (db, _pool, c) = pooled().await;
    let v = db.publish(&c, "fenced", "<p>x</p>", Some(RECIPE)).await;

    let (a, b) = lose_to_another_worker(&c, v).await;
    assert_ne!(a.token, b.token, "a new claim carries a new fencing token");
    assert_eq!(b.attempts, 2);

    // A wakes up and tries to error it: fenced off, nothing written.
    let late = finish_one(&c, "worker-a", &a, Outcome::Error("late".into())).await;
    assert_eq!(late, vec![(v, Finished::Lost)]);
    assert_eq!(db.state(&c, v).await, "processing");
    // A's renewal does not extend B's lease either.
    let renewed = claim::renew_leases(&c, &[(v, a.token)], Duration::from_secs(60))
        .await
        .expect("renew");
    assert!(renewed.is_empty());

    // B finishes normally.
    let done = finish_one(
        &c,
        "worker-b",
        &b,
        Outcome::Publish {
            collated: Some("<p>X</p>".into()),
            warnings: vec![],
        },
    )
    .await;
    assert_eq!(
        done,
        vec![(v, Finished::State(postpub::db::State::Current))]
    );
    let content: String = c
        .query_one(
            "select content from postpub.current where document = 'fenced'",
            &[],
        )
        .await
        .expect("view")
        .get(0);
    assert_eq!(content, "<p>X</p>");
    db.assert_invariants(&c).await;
}

/// The finish archives the previous current only for the versions it made current
/// (sql/0013_finish_by_document.sql): a late publish by a worker whose lease was rescued
/// leaves the current version alone, and the worker holding the version now replaces it.
#[tokio::test]
async fn a_late_publish_of_a_version_no_longer_held_archives_nothing() {
    let (db, _pool, c) = pooled().await;
    let v1 = db.publish(&c, "replaced", "<p>1</p>", None).await;
    let v2 = db.publish(&c, "replaced", "<p>2</p>", Some(RECIPE)).await;
    let (a, b) = lose_to_another_worker(&c, v2).await;

    let publish = Outcome::Publish {
        collated: None,
        warnings: vec![],
    };
    let late = finish_one(&c, "worker-a", &a, publish.clone()).await;
    assert_eq!(late, vec![(v2, Finished::Lost)]);
    assert_eq!(db.state(&c, v1).await, "current");
    assert_eq!(db.state(&c, v2).await, "processing");
    let events: i64 = c
        .query_one(
            "select count(*) from postpub.outbox where document = 'replaced'",
            &[],
        )
        .await
        .expect("count events")
        .get(0);
    assert_eq!(events, 1, "only v1's event");

    let done = finish_one(&c, "worker-b", &b, publish).await;
    assert_eq!(
        done,
        vec![(v2, Finished::State(postpub::db::State::Current))]
    );
    assert_eq!(db.state(&c, v1).await, "archived");
    db.assert_invariants(&c).await;
}

#[tokio::test]
async fn a_version_whose_daemon_died_is_rescued_and_published_by_another() {
    let (db, c) = TestDb::with_client().await;
    let v = db.publish(&c, "orphan", "<p>x</p>", Some(RECIPE)).await;
    // A daemon that claimed and died: lease already expired.
    c.batch_execute(&format!(
        "select * from postpub._claim('dead-daemon', 10, interval '1 second');
         update postpub.versions set locked_until = now() - interval '1 second' where id = {v};"
    ))
    .await
    .expect("simulate");
    assert_eq!(db.state(&c, v).await, "processing");
    let mut cfg = db.config();
    cfg.worker.lease = Duration::from_secs(2); // rescue runs every second
    let d = Daemon::start(cfg).await;
    wait_until(
        Duration::from_secs(10),
        "the orphan to become current",
        || async { db.state(&c, v).await == "current" },
    )
    .await;
    let why: String = c
        .query_one(
            "select why from postpub.transitions where version_id = $1 and from_state = 'processing' order by at, id limit 1",
            &[&v],
        )
        .await
        .expect("audit")
        .get(0);
    assert!(
        why.contains("lease expired while dead-daemon held it"),
        "{why}"
    );
    db.assert_invariants(&c).await;
    d.stop().await;
}

#[tokio::test]
async fn a_version_rescued_after_its_last_attempt_is_errored_not_retried_forever() {
    let (db, c) = TestDb::with_client().await;
    let v = db.publish(&c, "poison", "<p>x</p>", Some(RECIPE)).await;
    c.batch_execute(&format!(
        "update postpub.versions set attempts = 2 where id = {v};
         select * from postpub._claim('dead-daemon', 10, interval '1 second');
         update postpub.versions set locked_until = now() - interval '1 second' where id = {v};"
    ))
    .await
    .expect("simulate");
    let rescued = c
        .query("select state from postpub._rescue('rescuer', 3)", &[])
        .await
        .expect("rescue");
    assert_eq!(rescued.len(), 1);
    assert_eq!(db.state(&c, v).await, "errored");
}

/// The claim's decisions per document, called directly: the newest pending version is
/// claimed and the older ones superseded; a document with a version in processing is left
/// alone (its newer version waits); a pending version older than the current one (an
/// operator requeued an old errored version) is superseded, never claimed.
#[tokio::test]
async fn a_claim_takes_the_newest_pending_version_and_supersedes_what_can_never_be_current() {
    let (db, _pool, c) = pooled().await;
    let lease = Duration::from_secs(30);

    // "three": versions 1..3 pending at once.
    let three: Vec<i64> = {
        let mut ids = Vec::new();
        for i in 1..=3 {
            ids.push(
                db.publish(&c, "three", &format!("<p>{i}</p>"), Some(RECIPE))
                    .await,
            );
        }
        ids
    };
    // "old": version 1 errors, version 2 becomes current, then version 1 is requeued.
    let old1 = db.publish(&c, "old", "<p>1</p>", Some(RECIPE)).await;
    let first = claim::claim_batch(&c, "w", 10, lease).await.expect("claim");
    let mine = |id: i64| first.iter().find(|x| x.id == id);
    assert!(
        mine(three[2]).is_some() && mine(old1).is_some() && first.len() == 2,
        "first claim: {first:?}"
    );
    for id in [three[0], three[1]] {
        assert_eq!(db.state(&c, id).await, "superseded");
    }
    let why: String = c
        .query_one(
            "select why from postpub.transitions where version_id = $1 and to_state = 'superseded'",
            &[&three[0]],
        )
        .await
        .expect("transition")
        .get(0);
    assert_eq!(why, "version 3 is newer");

    // While "three" v3 is processing, a v4 arrives: not claimed (one processing per
    // document), and not superseded either (it is newer).
    let three4 = db.publish(&c, "three", "<p>4</p>", Some(RECIPE)).await;
    let busy = claim::claim_batch(&c, "w", 10, lease).await.expect("claim");
    assert!(busy.is_empty(), "claimed while busy: {busy:?}");
    assert_eq!(db.state(&c, three4).await, "post-publication");

    let publish = Outcome::Publish {
        collated: None,
        warnings: vec![],
    };
    let error = Outcome::Error("bad".into());
    claim::finish_batch(
        &c,
        "w",
        &[
            finish(mine(three[2]).expect("claimed"), &publish),
            finish(mine(old1).expect("claimed"), &error),
        ],
    )
    .await
    .expect("finish");
    let old2 = db.publish(&c, "old", "<p>2</p>", None).await;
    assert_eq!(db.state(&c, old2).await, "current");
    c.execute("select postpub.requeue($1)", &[&old1])
        .await
        .expect("requeue");

    // Now: "three" v4 is claimable, "old" v1 is older than its current v2.
    let second = claim::claim_batch(&c, "w", 10, lease).await.expect("claim");
    let ids: Vec<i64> = second.iter().map(|x| x.id).collect();
    assert_eq!(ids, vec![three4]);
    assert_eq!(db.state(&c, old1).await, "superseded");
    assert_eq!(db.state(&c, old2).await, "current");
}

/// A document's next version (the one after its current) is claimed without a look for
/// other pending versions (sql/0012_claim_next_version.sql). An old errored version an
/// operator requeues behind it is older than the current one: it is never claimed, and the
/// claim that reaches it, once the next version is done, supersedes it.
#[tokio::test]
async fn an_old_version_requeued_behind_the_next_one_is_superseded_when_reached() {
    let (db, _pool, c) = pooled().await;
    let lease = Duration::from_secs(30);
    let v1 = db.publish(&c, "doc", "<p>1</p>", Some(RECIPE)).await;
    let first = claim::claim_batch(&c, "w", 10, lease).await.expect("claim");
    assert_eq!(first.len(), 1, "{first:?}");
    claim::finish_batch(&c, "w", &[finish(&first[0], &Outcome::Error("bad".into()))])
        .await
        .expect("finish");
    let v2 = db.publish(&c, "doc", "<p>2</p>", None).await;
    assert_eq!(db.state(&c, v2).await, "current");
    let v3 = db.publish(&c, "doc", "<p>3</p>", Some(RECIPE)).await;
    c.execute("select postpub.requeue($1)", &[&v1])
        .await
        .expect("requeue");

    // One at a time: v3 comes first in the queue and is the next version.
    let next = claim::claim_batch(&c, "w", 1, lease).await.expect("claim");
    let ids: Vec<i64> = next.iter().map(|x| x.id).collect();
    assert_eq!(ids, vec![v3]);
    let publish = Outcome::Publish {
        collated: None,
        warnings: vec![],
    };
    claim::finish_batch(&c, "w", &[finish(&next[0], &publish)])
        .await
        .expect("finish");
    assert_eq!(db.state(&c, v3).await, "current");

    let last = claim::claim_batch(&c, "w", 10, lease).await.expect("claim");
    assert!(last.is_empty(), "claimed an old version: {last:?}");
    assert_eq!(db.state(&c, v1).await, "superseded");
    let why: String = c
        .query_one(
            "select why from postpub.transitions where version_id = $1 and to_state = 'superseded'",
            &[&v1],
        )
        .await
        .expect("transition")
        .get(0);
    assert_eq!(why, "version 3 is newer");
    db.assert_invariants(&c).await;
}
