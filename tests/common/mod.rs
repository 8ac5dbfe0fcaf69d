//! Test harness: every test gets its own database, created from a migrated template
//! (`postpub_template_<fingerprint>`, one per migration set), and dropped `WITH (FORCE)`
//! when the test passes (kept for debugging when it fails). Daemons run in-process with
//! their event stream, or as the real binary when signals matter.
#![allow(dead_code)]

pub mod certs;
pub mod cluster;
pub mod ops;
pub mod process;
pub mod proxy;
pub mod rabbit;
pub mod sinks;
pub mod webdriver;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use postpub::config::Config;
use postpub::db;
use postpub::event::{self, Event};
use postpub::shutdown::Shutdown;
use tokio::sync::{broadcast, watch};
use tokio_postgres::Client;

/// The server the tests share when `DATABASE_URL` is unset.
const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Server the tests use: `DATABASE_URL`; else the local default when it lets `postgres`
/// in; else (nothing listens there, or it wants a password) a throwaway cluster that every
/// test binary of this `cargo test` run shares, see [`throwaway_server`].
pub fn server_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
            return url;
        }
        // We may be inside a runtime (server_url is called everywhere): probe on a thread
        // with one of its own.
        let probe = std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(db::connect(DEFAULT_SERVER, Duration::from_secs(5)))
                .map(drop)
        })
        .join()
        .expect("the thread probing the default server");
        match probe {
            Ok(()) => DEFAULT_SERVER.to_owned(),
            Err(e) => match postpub::cluster::stand_in_reason(&e) {
                Some(why) => throwaway_server(why),
                None => panic!("cannot use the test server: {e} (set DATABASE_URL to another)"),
            },
        }
    })
    .clone()
}

/// URL of the throwaway cluster shared by the test binaries of this target dir
/// (`postpub::cluster::shared`): the first binary that needs it has a detached `postpub
/// cluster-reaper` start it, each holds it until it exits, and the reaper stops and removes
/// it once none does and cargo (the binaries' parent) has exited, or after 30 s without
/// users. One start per `cargo test`, not one per binary; nothing left afterwards.
fn throwaway_server(why: &str) -> String {
    static LEASE: OnceLock<postpub::cluster::shared::Lease> = OnceLock::new();
    let lease = LEASE.get_or_init(|| {
        let target = std::path::Path::new(bin())
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let state = postpub::cluster::shared::state_dir(&target);
        postpub::cluster::shared::join(&state, reaper).unwrap_or_else(|e| {
            panic!("no PostgreSQL at {DEFAULT_SERVER} ({why}), and no throwaway one: {e}")
        })
    });
    eprintln!(
        "no PostgreSQL at {DEFAULT_SERVER} ({why}): using the throwaway one on port {} ({})",
        lease.port(),
        lease.dir().display()
    );
    lease.url("postgres")
}

/// The reaper of the shared cluster: `postpub cluster-reaper`, watching cargo (our parent).
fn reaper(state: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("cluster-reaper")
        .arg("--state-dir")
        .arg(state)
        .arg("--watch-pid")
        .arg(std::os::unix::process::parent_id().to_string())
        .env_remove("RUST_LOG");
    cmd
}

/// The template database of this migration set. Named after the fingerprint so that
/// checkouts with different migrations (several worktrees, one server) never rebuild each
/// other's template under running tests.
fn template() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| format!("postpub_template_{}", &fingerprint()[17..29]))
}

/// Identifies the migrations the template was built from.
fn fingerprint() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for m in postpub::db::migrate::MIGRATIONS {
        for b in m.sql.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("postpub-template-{h:016x}")
}

/// Opens a connection as postpub does (`db::Endpoint`: libpq's TLS settings and password
/// lookup) and hands over its driver.
pub async fn connect_raw(
    url: &str,
) -> Result<
    (
        Client,
        tokio_postgres::Connection<tokio_postgres::Socket, db::tls::RustlsStream>,
    ),
    db::Error,
> {
    // Not postpub's application name: tests find (and terminate) the daemon's sessions
    // by it.
    let url = if url.contains("application_name") {
        url.to_owned()
    } else if url.starts_with("postgres") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}application_name=postpub-test")
    } else {
        format!("{url} application_name=postpub-test")
    };
    db::Spec::url(&url, Duration::from_secs(10))
        .resolve()?
        .connect_raw()
        .await
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = connect_raw(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Builds the template once per server and migration set; safe across test processes.
async fn ensure_template() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let admin = connect(&server_url()).await;
        admin
            .execute("select pg_advisory_lock(4242424242)", &[])
            .await
            .expect("template lock");
        let fp = fingerprint();
        let template = template();
        let current: Option<String> = admin
            .query_opt(
                "select shobj_description(oid, 'pg_database') from pg_database where datname = $1",
                &[&template],
            )
            .await
            .expect("look up template")
            .and_then(|r| r.get(0));
        // The comment is "<fingerprint> <unix time it was built>".
        let built_from = current.as_deref().and_then(|c| c.split(' ').next());
        if built_from != Some(fp.as_str()) {
            drop_stale_templates(&admin, template).await;
            // One statement per call: DROP/CREATE DATABASE refuse implicit transactions.
            for sql in [
                format!("alter database {template} is_template false"),
                format!("drop database if exists {template} with (force)"),
                format!("create database {template}"),
            ] {
                if let Err(e) = admin.batch_execute(&sql).await {
                    // The first fails when there is no template yet.
                    if !sql.starts_with("alter") {
                        panic!("{sql}: {e}");
                    }
                }
            }
            {
                let url = db::url_with_database(&server_url(), template).expect("url");
                let (mut client, conn) = connect_raw(&url).await.expect("connect template");
                let h = tokio::spawn(conn);
                db::migrate::migrate(&mut client)
                    .await
                    .expect("migrate template");
                drop(client);
                let _ = h.await;
            }
            admin
                .batch_execute(&format!(
                    "comment on database {template} is '{fp} {built}';
                     alter database {template} is_template true;",
                    built = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0)
                ))
                .await
                .expect("mark template");
        }
        admin
            .execute("select pg_advisory_unlock(4242424242)", &[])
            .await
            .expect("template unlock");
    })
    .await;
}

/// Drops the templates of other migration sets built more than an hour ago: each change
/// to `sql/` makes a new one, and a test run of another checkout lasts minutes, not hours.
/// One that is in use (or has no timestamp, from an older harness) is left alone.
async fn drop_stale_templates(admin: &Client, keep: &str) {
    let stale: Vec<String> = admin
        .query(
            "select datname from pg_database
              where datname like 'postpub\\_template\\_%' and datname <> $1
                and coalesce(split_part(shobj_description(oid, 'pg_database'), ' ', 2), '') ~ '^[0-9]+$'
                and split_part(shobj_description(oid, 'pg_database'), ' ', 2)::bigint
                    < extract(epoch from now()) - 3600",
            &[&keep],
        )
        .await
        .expect("list stale templates")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for name in stale {
        let _ = admin
            .batch_execute(&format!("alter database {name} is_template false"))
            .await;
        if admin
            .batch_execute(&format!("drop database if exists {name}"))
            .await
            .is_err()
        {
            // In use after all: make it a template again and let it be.
            let _ = admin
                .batch_execute(&format!("alter database {name} is_template true"))
                .await;
        }
    }
}

/// Daemon settings for tests against `url`: fast polls and retries, no HTTP, a no-op
/// pipeline. Every in-process daemon starts from these (shared server or private cluster).
pub fn test_config(url: &str) -> Config {
    let mut cfg = Config::default();
    cfg.database.url = url.to_owned();
    cfg.database.pool_size = 4;
    cfg.worker.poll_interval = Duration::from_millis(500);
    cfg.worker.lease = Duration::from_secs(5);
    cfg.worker.backoff.initial = Duration::from_millis(20);
    cfg.worker.backoff.max = Duration::from_millis(100);
    cfg.worker.shutdown_timeout = Duration::from_secs(5);
    cfg.pipeline.steps = vec!["noop".to_owned()];
    cfg.http.listen = String::new();
    cfg
}

/// `cfg` with a command step running `script` as its only step.
pub fn with_command(mut cfg: Config, script: &Script) -> Config {
    cfg.pipeline.steps = vec!["command".to_owned()];
    cfg.pipeline.command.program = script.program();
    cfg
}

/// A database of one's own.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// A fresh, migrated database.
    pub async fn new() -> TestDb {
        ensure_template().await;
        let template = template();
        let name = format!(
            "postpub_t_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let admin = connect(&server_url()).await;
        let mut tries = 0;
        loop {
            match admin
                .batch_execute(&format!("create database {name} template {template}"))
                .await
            {
                Ok(()) => break,
                // "source database is being accessed by other users": another process is
                // copying it right now.
                Err(_) if tries < 50 => {
                    tries += 1;
                    // Backoff before the next try (the copy takes a moment), not a wait for
                    // a condition: the CREATE itself is the probe.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("create {name}: {e}"),
            }
        }
        let url = db::url_with_database(&server_url(), &name).expect("url");
        TestDb { name, url }
    }

    /// A fresh, migrated database and a connection to it: the start of most tests (with
    /// the test logs on when `RUST_LOG` asks for them).
    pub async fn with_client() -> (TestDb, Client) {
        init_logs();
        let db = TestDb::new().await;
        let c = db.client().await;
        (db, c)
    }

    /// An empty database (not migrated).
    pub async fn empty() -> TestDb {
        let name = format!(
            "postpub_t_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        connect(&server_url())
            .await
            .batch_execute(&format!("create database {name}"))
            .await
            .expect("create empty db");
        let url = db::url_with_database(&server_url(), &name).expect("url");
        TestDb { name, url }
    }

    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }

    /// Daemon settings for tests (see [`test_config`]).
    pub fn config(&self) -> Config {
        test_config(&self.url)
    }

    /// [`TestDb::config`] with `script` as the one step (see [`with_command`]).
    pub fn command_config(&self, script: &Script) -> Config {
        with_command(self.config(), script)
    }

    pub async fn publish(&self, c: &Client, doc: &str, body: &str, recipe: Option<&str>) -> i64 {
        c.query_one(
            "select postpub.publish($1, $2, $3)",
            &[&doc, &body, &recipe],
        )
        .await
        .unwrap_or_else(|e| panic!("publish {doc}: {e}"))
        .get(0)
    }

    /// Publishes a version of `doc` that looks claimed by a worker that died a minute ago
    /// (its lease long expired), for the rescuer. Made in the publishing transaction, so
    /// that a running daemon never sees it pending: faked afterwards, the daemon could
    /// publish it first and the fake lease would then have it published twice.
    pub async fn publish_abandoned(&self, c: &Client, doc: &str) -> i64 {
        c.batch_execute("begin").await.expect("begin");
        let id = self.publish(c, doc, "<p>x</p>", Some("p {}")).await;
        c.execute(
            "update postpub.versions set state = 'processing', attempts = 1, locked_by = 'gone',
                    locked_until = now() - interval '1 minute', lease_token = 1 where id = $1",
            &[&id],
        )
        .await
        .expect("fake an abandoned lease");
        c.batch_execute("commit").await.expect("commit");
        id
    }

    pub async fn delete(&self, c: &Client, doc: &str) -> i64 {
        c.query_one("select postpub.delete($1)", &[&doc])
            .await
            .unwrap_or_else(|e| panic!("delete {doc}: {e}"))
            .get(0)
    }

    pub async fn state(&self, c: &Client, id: i64) -> String {
        c.query_one(
            "select state::text from postpub.versions where id = $1",
            &[&id],
        )
        .await
        .expect("state")
        .get(0)
    }

    pub async fn counts(&self, c: &Client) -> HashMap<String, i64> {
        c.query(
            "select state::text, count(*) from postpub.versions group by 1",
            &[],
        )
        .await
        .expect("counts")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    }

    pub async fn pending(&self, c: &Client) -> i64 {
        c.query_one(
            "select count(*) from postpub.versions where state in ('post-publication', 'processing')",
            &[],
        )
        .await
        .expect("pending")
        .get(0)
    }

    /// Checks the invariants every scenario must end with (see [`assert_invariants`]).
    pub async fn assert_invariants(&self, c: &Client) {
        assert_invariants(c).await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping database {} for debugging", self.name);
            return;
        }
        let name = self.name.clone();
        on_own_runtime(async move {
            if let Ok((c, conn)) = connect_raw(&server_url()).await {
                tokio::spawn(conn);
                let _ = c
                    .batch_execute(&format!("drop database if exists {name} with (force)"))
                    .await;
            }
        });
    }
}

/// Runs `work` to the end on a thread with a runtime of its own: for `Drop`s, which run
/// inside the test's runtime and cannot block on it.
pub fn on_own_runtime(work: impl Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work)
    })
    .join();
}

/// An in-process daemon with its event stream.
pub struct Daemon {
    pub shutdown: Shutdown,
    pub events: broadcast::Receiver<Event>,
    pub ready: watch::Receiver<bool>,
    handle: tokio::task::JoinHandle<Result<(), postpub::daemon::StartError>>,
}

impl Daemon {
    pub async fn start(cfg: Config) -> Daemon {
        // Bakes run in bake processes of the binary under test, as in `postpub run`.
        postpub::pipeline::collate::set_bake_program(bin().into());
        let tx = event::channel();
        let events = tx.subscribe();
        let shutdown = Shutdown::new();
        let (ready_tx, mut ready) = watch::channel(false);
        let handle = tokio::spawn(postpub::daemon::run(cfg, shutdown.clone(), tx, ready_tx));
        tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r))
            .await
            .expect("daemon ready within 10s")
            .expect("daemon running");
        Daemon {
            shutdown,
            events,
            ready,
            handle,
        }
    }

    /// [`Daemon::start`] with HTTP on a free port of 127.0.0.1; that port.
    pub async fn start_with_http(mut cfg: Config) -> (Daemon, u16) {
        let port = ops::free_port();
        cfg.http.listen = format!("127.0.0.1:{port}");
        (Daemon::start(cfg).await, port)
    }

    /// Stops it and checks that it stopped in time (no leaked task keeps it alive).
    pub async fn stop(self) {
        self.shutdown.soft.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("daemon stopped within 15s")
            .expect("daemon task")
            .expect("daemon ran");
    }

    /// Waits for an event matching `pred`.
    pub async fn wait_event(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Event {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Ok(e)) if pred(&e) => return e,
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(e)) => panic!("event stream ended: {e}"),
                Err(_) => panic!("no matching event within {timeout:?}"),
            }
        }
    }
}

/// Polls `cond` until it holds; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, what, || {
        let fut = cond();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Polls `probe` until it returns a value and returns that; panics with `what` after
/// `timeout`. The one place tests wait for something to happen.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks `cond` every `every` for `window`; panics with `what` the first time it fails.
/// For what must stay true for a while (nothing claimed, still unready), where a single
/// look would prove nothing.
pub async fn holds_for<F, Fut>(window: Duration, every: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + window;
    loop {
        assert!(cond().await, "{what} stopped holding");
        if Instant::now() >= end {
            return;
        }
        // The pace of the checks, not a wait for anything.
        tokio::time::sleep(every.min(end.saturating_duration_since(Instant::now()))).await;
    }
}

/// A fresh connection to `url`, retried while the server is (re)starting.
pub async fn reconnect(url: &str) -> Client {
    wait_for(
        Duration::from_secs(30),
        &format!("{url} to accept connections"),
        || async {
            let (c, conn) = connect_raw(url).await.ok()?;
            tokio::spawn(conn);
            Some(c)
        },
    )
    .await
}

/// A shell script in a temp dir (removed when dropped).
pub struct Script {
    pub dir: PathBuf,
    pub path: PathBuf,
}

impl Script {
    pub fn new(body: &str) -> Script {
        let dir =
            std::env::temp_dir().join(format!("postpub-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("step.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Script { dir, path }
    }

    pub fn program(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_postpub")
}

/// Shared tracing output for tests that want it (RUST_LOG=debug cargo test …).
pub fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var("RUST_LOG").is_ok() {
            postpub::logging::init("info", Default::default());
        }
    });
}

/// The single number `sql` selects.
pub async fn count(c: &impl tokio_postgres::GenericClient, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get::<_, i64>(0)
}

/// The invariants that hold at every moment, whatever happened before (SPEC: one current
/// and one processing per document, the outbox event written with the transition, the
/// audit trail complete). Pending work is allowed; see [`assert_settled`] for the end state.
pub async fn assert_invariants(c: &Client) {
    // Set-based (grouped joins, no per-row subqueries), so they stay quick on the load
    // test's tens of thousands of versions.
    let checks: &[(&str, &str)] = &[
        (
            "a document with two current versions",
            "select count(*) from (select document from postpub.versions where state = 'current' group by 1 having count(*) > 1) x",
        ),
        (
            "a document with two processing versions",
            "select count(*) from (select document from postpub.versions where state = 'processing' group by 1 having count(*) > 1) x",
        ),
        (
            // The pointers the hot path reads (sql/0008_storage.sql, 0009_hot_path.sql).
            "a document's current or processing pointer disagrees with its versions",
            "select count(*) from postpub.documents d
               full join (select document,
                                 max(id) filter (where state = 'current') as cur,
                                 max(id) filter (where state = 'processing') as proc
                            from postpub.versions group by 1) v using (document)
              where d.current_id is distinct from v.cur or d.processing_id is distinct from v.proc",
        ),
        (
            "a processing version no claim row leads the rescuer to",
            "select count(*) from postpub.versions v
               left join postpub.claimed h on h.version_id = v.id
              where v.state = 'processing' and h.version_id is null",
        ),
        (
            "errored without a reason",
            "select count(*) from postpub.versions where state = 'errored' and coalesce(last_error, '') = ''",
        ),
        (
            "a published version without exactly one published event",
            "select count(*) from postpub.versions v
               left join (select version_id, count(*) as n from postpub.outbox where kind = 'published' group by 1) o
                 on o.version_id = v.id
              where not v.is_tombstone and v.state in ('current', 'archived') and coalesce(o.n, 0) <> 1",
        ),
        (
            "an event for a version that was never current",
            "select count(*) from postpub.outbox o left join postpub.versions v on v.id = o.version_id
              where v.state is null or v.state not in ('current', 'archived')",
        ),
        (
            "an event of the wrong kind (published for a tombstone or deleted for content)",
            "select count(*) from postpub.outbox o join postpub.versions v on v.id = o.version_id
              where o.kind <> (case when v.is_tombstone then 'deleted' else 'published' end)::postpub.event_kind",
        ),
        (
            "a deletion without exactly one deleted event although it deleted a live version, \
             or with one although the document was not live",
            "with pub as (
               select v.id, v.is_tombstone,
                      lag(v.is_tombstone) over (partition by v.document order by v.version) as prev_tombstone
                 from postpub.versions v where v.state in ('current', 'archived')),
             ev as (select version_id, count(*) as n from postpub.outbox group by 1)
             select count(*) from pub left join ev on ev.version_id = pub.id
              where pub.is_tombstone
                and coalesce(ev.n, 0) <> (case when pub.prev_tombstone is false then 1 else 0 end)",
        ),
        (
            "a version that became current more than once, or is current/archived without ever becoming current",
            "select count(*) from postpub.versions v
               left join (select version_id, count(*) as n from postpub.transitions where to_state = 'current' group by 1) t
                 on t.version_id = v.id
              where coalesce(t.n, 0) <> (case when v.state in ('current', 'archived') then 1 else 0 end)",
        ),
        (
            "the audit trail does not end in the version's state",
            "select count(*) from postpub.versions v
               left join (select distinct on (version_id) version_id, to_state
                            from postpub.transitions order by version_id, at desc, id desc) t
                 on t.version_id = v.id
              where t.to_state is distinct from v.state",
        ),
        (
            "a current version older than another published one",
            "select count(*) from postpub.versions v
               join (select document, max(version) as newest from postpub.versions
                      where state in ('current', 'archived') group by 1) m on m.document = v.document
              where v.state = 'current' and v.version < m.newest",
        ),
    ];
    for (what, sql) in checks {
        assert_eq!(count(c, sql).await, 0, "{what}");
    }
}

/// Every version is in a final state (current, superseded, archived, or errored with a
/// reason): nothing waits, nothing is stuck in processing. Also checks the invariants.
pub async fn assert_settled(c: &Client) {
    let stuck = c
        .query(
            "select id, document, state::text, coalesce(locked_by, '') from postpub.versions
              where state in ('post-publication', 'processing') order by id limit 10",
            &[],
        )
        .await
        .expect("pending versions");
    let stuck: Vec<(i64, String, String, String)> = stuck
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert!(stuck.is_empty(), "versions not in a final state: {stuck:?}");
    assert_invariants(c).await;
}

/// How often versions were claimed, from the audit trail (a claim writes its transition in
/// its own transaction, so the trail has every claim that committed).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Versions in the table.
    pub versions: i64,
    /// Versions claimed at least once.
    pub claimed: i64,
    /// Claims in all.
    pub claims: i64,
    /// Claims after the first one of a version (each follows a retry, rescue or release).
    pub reclaims: i64,
    /// Reclaims with no retry, rescue or release before them: a version processed twice
    /// for no reason. Must be 0.
    pub duplicates: i64,
    /// Versions that are current or archived (published) but not through exactly one
    /// `processing -> current` transition. Must be 0.
    pub published_not_once: i64,
}

/// Claim accounting from `postpub.transitions`.
pub async fn claims(c: &Client) -> Claims {
    let r = c
        .query_one(
            "with t as (
               select version_id,
                      count(*) filter (where to_state = 'processing') as claims,
                      count(*) filter (where from_state = 'processing'
                                         and to_state = 'post-publication') as returns,
                      count(*) filter (where from_state = 'processing' and to_state = 'current') as published,
                      count(*) filter (where from_state is null and to_state = 'current') as direct
                 from postpub.transitions group by 1),
             per as (
               select v.id, v.state, coalesce(t.claims, 0) as claims, coalesce(t.returns, 0) as returns,
                      coalesce(t.published, 0) as published, coalesce(t.direct, 0) as direct
                 from postpub.versions v left join t on t.version_id = v.id)
             select count(*),
                    count(*) filter (where claims > 0),
                    coalesce(sum(claims), 0)::bigint,
                    coalesce(sum(greatest(claims - 1, 0)), 0)::bigint,
                    coalesce(sum(greatest(claims - 1 - returns, 0)), 0)::bigint,
                    count(*) filter (where state in ('current', 'archived')
                                       and published + direct <> 1)
               from per",
            &[],
        )
        .await
        .expect("claim accounting");
    Claims {
        versions: r.get(0),
        claimed: r.get(1),
        claims: r.get(2),
        reclaims: r.get(3),
        duplicates: r.get(4),
        published_not_once: r.get(5),
    }
}

/// Collects the events of in-process daemons on their own tasks, so that a busy test never
/// makes a receiver lag: claims per version id, rescues, lost leases, listener reconnects.
#[derive(Clone, Default)]
pub struct EventLog(std::sync::Arc<std::sync::Mutex<EventTally>>);

#[derive(Debug, Default, Clone)]
pub struct EventTally {
    /// Claims per version id.
    pub claims: HashMap<i64, u32>,
    pub rescued: u64,
    pub lease_lost: u64,
    pub listener_lost: u64,
    /// When each `ListenerConnected` arrived.
    pub listener_connected: Vec<Instant>,
    /// Events a receiver missed (must stay 0 for the tally to be complete).
    pub lagged: u64,
}

impl EventLog {
    /// Starts collecting `d`'s events (it keeps a fresh receiver for `wait_event`).
    pub fn follow(&self, d: &mut Daemon) {
        let mut rx = d.events.resubscribe();
        std::mem::swap(&mut rx, &mut d.events);
        let log = self.clone();
        tokio::spawn(async move {
            loop {
                let e = rx.recv().await;
                let mut t = log.0.lock().unwrap_or_else(|p| p.into_inner());
                match e {
                    Ok(Event::Claimed { version_id, .. }) => {
                        *t.claims.entry(version_id).or_default() += 1
                    }
                    Ok(Event::Rescued { .. }) => t.rescued += 1,
                    Ok(Event::LeaseLost { .. }) => t.lease_lost += 1,
                    Ok(Event::ListenerLost { .. }) => t.listener_lost += 1,
                    Ok(Event::ListenerConnected { .. }) => {
                        t.listener_connected.push(Instant::now())
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => t.lagged += n,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    pub fn tally(&self) -> EventTally {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Versions in processing right now.
pub async fn processing(c: &Client) -> i64 {
    count(
        c,
        "select count(*) from postpub.versions where state = 'processing'",
    )
    .await
}

/// Versions in processing under a lease of the daemon with process id `pid` (its worker
/// ids read `<host>:<pid>:<n>`).
pub async fn held_by(c: &Client, pid: u32) -> i64 {
    c.query_one(
        "select count(*) from postpub.versions where state = 'processing' and locked_by like '%' || $1 || '%'",
        &[&format!(":{pid}:")],
    )
    .await
    .expect("versions held by a daemon")
    .get(0)
}

/// The end check of a scenario with acknowledged publishes `ids`: none was lost (each is
/// in the table, in a final state: current, archived, superseded or errored with a reason),
/// and everything [`assert_processed_once`] checks. Returns the claim accounting for the
/// scenario's own figures.
pub async fn assert_nothing_lost(c: &Client, ids: &[i64]) -> Claims {
    let found: i64 = c
        .query_one(
            "select count(*) from postpub.versions where id = any($1)",
            &[&ids],
        )
        .await
        .expect("count the acknowledged versions")
        .get(0);
    assert_eq!(found, ids.len() as i64, "an acknowledged publish was lost");
    assert_processed_once(c).await
}

/// Everything settled with the invariants holding (at most one current per document, …,
/// see [`assert_settled`]), and no version processed twice for no reason or published
/// other than once. Returns the claim accounting.
pub async fn assert_processed_once(c: &Client) -> Claims {
    assert_settled(c).await;
    let acc = claims(c).await;
    assert_eq!(acc.duplicates, 0, "a version processed twice: {acc:?}");
    assert_eq!(
        acc.published_not_once, 0,
        "a version published twice: {acc:?}"
    );
    acc
}

/// Waits until no version is pending (post-publication or processing). A failing query
/// (the server is still coming back) counts as not settled yet.
pub async fn wait_settled(c: &Client, within: Duration) {
    wait_until(within, "everything settled", || async {
        c.query_one(
            "select count(*) from postpub.versions where state in ('post-publication', 'processing')",
            &[],
        )
        .await
        .map(|r| r.get::<_, i64>(0) == 0)
        .unwrap_or(false)
    })
    .await
}

/// Terminates the backends of the daemons' LISTEN connections in `c`'s database (the
/// listener's last query stays `LISTEN …` while it waits); returns how many.
pub async fn terminate_listeners(c: &Client) -> i64 {
    count(
        c,
        "select count(pg_terminate_backend(pid)) from pg_stat_activity
          where datname = current_database() and pid <> pg_backend_pid()
            and query ilike 'listen%'",
    )
    .await
}

/// Runs `sql`, which the server must refuse, and returns the server's message ("" when
/// the error did not come from the server).
pub async fn refused(
    c: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> String {
    let e = c
        .execute(sql, params)
        .await
        .map(|n| panic!("accepted ({n} rows), not refused: {sql}"))
        .unwrap_or_else(|e| e);
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default()
}

/// (state, attempts, last_error or "") of a version.
pub async fn outcome(c: &Client, id: i64) -> (String, i32, String) {
    let r = c
        .query_one(
            "select state::text, attempts, coalesce(last_error, '') from postpub.versions where id = $1",
            &[&id],
        )
        .await
        .unwrap_or_else(|e| panic!("version {id}: {e}"));
    (r.get(0), r.get(1), r.get(2))
}
