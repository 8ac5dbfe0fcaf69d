//! Many daemons, many versions, published while they run: every version ends in a final
//! state, each document's newest version is its current one, and no version is processed
//! twice — counted from the daemons' own claim events and from the audit trail.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{assert_settled, claims, wait_until, Daemon, EventLog, TestDb};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DAEMONS: usize = 4;
const WORKERS: usize = 8;
const VERSIONS: usize = 20_000;
const DOCUMENTS: usize = 500;
const BATCH: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_daemons_process_20000_versions_over_500_documents_each_exactly_once() {
    let (db, c) = TestDb::with_client().await;
    let mut cfg = db.config();
    cfg.worker.concurrency = WORKERS;
    cfg.worker.batch_size = WORKERS;
    cfg.pipeline.steps = vec!["validate".into()];
    let log = EventLog::default();
    let mut daemons = Vec::new();
    for _ in 0..DAEMONS {
        let mut d = Daemon::start(cfg.clone()).await;
        log.follow(&mut d);
        daemons.push(d);
    }

    let seed: u64 = std::env::var("POSTPUB_LOAD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (POSTPUB_LOAD_SEED={seed} repeats this run)");
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = Instant::now();
    let (mut published, mut deleted) = (0usize, 0usize);
    for batch in 0..VERSIONS / BATCH {
        let mut docs = Vec::with_capacity(BATCH);
        let mut bodies = Vec::with_capacity(BATCH);
        let mut deletes = Vec::with_capacity(BATCH);
        for i in 0..BATCH {
            let d = rng.random_range(0..DOCUMENTS);
            docs.push(format!("load-{d}"));
            bodies.push(format!("<section><p>{d}</p><p>{batch}/{i}</p></section>"));
            let delete = rng.random_bool(0.07);
            deletes.push(delete);
            if delete {
                deleted += 1;
            } else {
                published += 1;
            }
        }
        // One statement per batch, in the order given (a CASE runs only its branch).
        c.execute(
            "select count(case when t.k then postpub.delete(t.d) else postpub.publish(t.d, t.b, 'p {}') end)
               from unnest($1::text[], $2::text[], $3::bool[]) with ordinality as t(d, b, k, n)",
            &[&docs, &bodies, &deletes],
        )
        .await
        .expect("publish a batch");
        // The scenario's pace, not a wait: publishing spread over a while, so that claims
        // and publishes interleave.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let published_in = t0.elapsed();
    wait_until(Duration::from_secs(180), "everything settled", || async {
        db.pending(&c).await == 0
    })
    .await;
    let settled_in = t0.elapsed();
    for d in daemons {
        d.stop().await;
    }

    let counts = db.counts(&c).await;
    let total: i64 = counts.values().sum();
    assert_eq!(total, VERSIONS as i64, "{counts:?}");
    assert_settled(&c).await;
    let acc = claims(&c).await;
    let tally = log.tally();
    println!(
        "{VERSIONS} versions ({published} publishes, {deleted} deletes) over {DOCUMENTS} documents, published in {:.1}s, \
         all settled after {:.1}s; {DAEMONS} daemons x {WORKERS} workers; states {counts:?}; \
         processed (claimed) {}, claims {}, reclaims {}, duplicates {}; rescued {}, fenced off {}",
        published_in.as_secs_f64(),
        settled_in.as_secs_f64(),
        acc.claimed,
        acc.claims,
        acc.reclaims,
        acc.duplicates,
        tally.rescued,
        tally.lease_lost
    );
    assert_eq!(counts.get("errored"), None, "{counts:?}");
    assert_eq!(acc.duplicates, 0, "{acc:?}");
    assert_eq!(acc.published_not_once, 0, "{acc:?}");
    // Nothing failed, so nothing needed a second claim.
    assert_eq!(acc.reclaims, 0, "{acc:?}");

    // The daemons' own reports agree with the audit trail, version by version.
    assert_eq!(tally.lagged, 0, "the event log missed events");
    let audit: HashMap<i64, u32> = c
        .query(
            "select version_id, count(*)::int from postpub.transitions where to_state = 'processing' group by 1",
            &[],
        )
        .await
        .expect("audit claims")
        .iter()
        .map(|r| (r.get(0), r.get::<_, i32>(1) as u32))
        .collect();
    assert_eq!(tally.claims.len(), audit.len(), "versions claimed");
    let twice: Vec<(&i64, &u32)> = tally.claims.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "claimed more than once: {twice:?}");
    assert_eq!(tally.claims, audit, "claims reported vs. audited");

    // Versions of a document are handled in order: the newest is the one that is current.
    let behind = common::count(
        &c,
        "select count(*) from postpub.documents d
              where d.last_version <> (select v.version from postpub.versions v
                                        where v.document = d.document and v.state = 'current')",
    )
    .await;
    assert_eq!(behind, 0, "a document whose newest version is not current");
}
