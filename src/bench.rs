//! `postpub bench`: measures the daemon against the database it runs on, in a database of
//! its own (created and dropped here), and reports each figure next to a reference
//! measured in the same run.
//!
//! - drain: N pending versions of N documents (and N versions over N/10 documents, the
//!   supersede path) drained by a real `postpub run` process with a no-op pipeline; the
//!   ceiling is the same writes done by plain batched SQL (`sql/bench/`) from as many
//!   connections as the daemon keeps busy.
//! - latency: one version at a time at a steady rate, commit → claim and commit → current,
//!   seen from an in-process daemon's event stream.
//! - memory: peak RSS of a `postpub run` process idle, and while draining a large backlog.
//! - trigger: a bulk insert with and without the NOTIFY trigger.
//!
//! Nothing here is part of the test suite's pass/fail: these are numbers to read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio_postgres::Client;

use crate::config::Config;
use crate::db::{self, migrate, sql};
use crate::event::{self, Event};
use crate::shutdown::Shutdown;

/// The benchmark's own statements, one file each under `sql/bench/`.
const RESET: &str = include_str!("../sql/bench/reset.sql");
const VACUUM: &str = include_str!("../sql/bench/vacuum.sql");
const STORE_RECIPE: &str = include_str!("../sql/bench/store_recipe.sql");
const LISTENING: &str = include_str!("../sql/bench/listening.sql");
const NEWEST_EVENT: &str = include_str!("../sql/bench/newest_event.sql");
const BUSY: &str = include_str!("../sql/bench/busy.sql");
const COUNT_CURRENT: &str = include_str!("../sql/bench/count_current.sql");
const PUBLISH_LATENCY: &str = include_str!("../sql/bench/publish_latency.sql");
const NOTIFY_ON: &str = include_str!("../sql/bench/notify_on.sql");
const NOTIFY_OFF: &str = include_str!("../sql/bench/notify_off.sql");

/// Column `column` of a one-row result, or the error naming `what`.
fn scalar<T: for<'a> tokio_postgres::types::FromSql<'a>>(
    row: Result<tokio_postgres::Row, tokio_postgres::Error>,
    column: &str,
    what: &'static str,
) -> Result<T, db::Error> {
    row.and_then(|r| r.try_get(column))
        .map_err(db::Error::query(what))
}

/// See `sql/bench/insert_documents.sql`.
const INSERT_DOCUMENTS: &str = include_str!("../sql/bench/insert_documents.sql");
/// See `sql/bench/insert_pending.sql`.
const INSERT_PENDING: &str = include_str!("../sql/bench/insert_pending.sql");
/// How often [`Bench::wait_drained`] looks at the outbox.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// See `sql/bench/ceiling_claim.sql`.
const CEILING_CLAIM: &str = include_str!("../sql/bench/ceiling_claim.sql");
/// See `sql/bench/ceiling_finish.sql`.
const CEILING_FINISH: &str = include_str!("../sql/bench/ceiling_finish.sql");

/// See `sql/bench/console_fill.sql`.
const CONSOLE_FILL: &str = include_str!("../sql/bench/console_fill.sql");
/// See `sql/bench/console_fill_history.sql`.
const CONSOLE_FILL_HISTORY: &str = include_str!("../sql/bench/console_fill_history.sql");
/// See `sql/bench/console_last_id.sql`.
const CONSOLE_LAST_ID: &str = include_str!("../sql/bench/console_last_id.sql");
/// See `sql/bench/console_vacuum.sql`.
const CONSOLE_VACUUM: &str = include_str!("../sql/bench/console_vacuum.sql");
/// See `sql/bench/console_diff_versions.sql`.
const CONSOLE_DIFF_VERSIONS: &str = include_str!("../sql/bench/console_diff_versions.sql");

/// The recipe bench versions carry (its content is irrelevant to a no-op pipeline).
const BENCH_RECIPE: &str = "p { color: inherit; }";

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Drain throughput and the plain-SQL ceiling.
    Drain,
    /// Commit → claim and commit → current at a low steady rate.
    Latency,
    /// Peak RSS idle and with a large backlog.
    Memory,
    /// Bulk insert with and without the NOTIFY trigger.
    Trigger,
    /// Every database scenario above (drain, latency, memory, trigger).
    All,
    /// Collation speed on a generated book (no database needed).
    Collate,
    /// Server time of each operator console page with --versions settled versions, next
    /// to the same pages with 1,000.
    Console,
}

/// Options of `postpub bench`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Scenarios:
  drain     N pending versions drained by `postpub run` (and the supersede path), next to
            the same writes done by plain batched SQL (the ceiling)
  latency   commit -> claim and commit -> current at a steady low rate
  memory    peak RSS of `postpub run` idle and with a large backlog
  trigger   bulk insert with and without the NOTIFY trigger
  all       the four above (default)
  collate   baking a generated book (--mb, repeatable; --reference to time another baker)
  console   each console page with --versions settled versions (1000000 for the issue's
            figure), next to the same pages with 1000

Each database scenario runs in a database of its own, created and dropped on the server of
--database-url. Figures are printed as a table and, with --json FILE, written as JSON.")]
pub struct BenchArgs {
    /// Scenario to run.
    #[arg(value_enum, default_value_t = Scenario::All)]
    pub scenario: Scenario,
    /// Versions drained (and rows bulk-inserted by the trigger scenario).
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub versions: u32,
    /// Pending versions for the memory scenario's backlog.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub backlog: u32,
    /// Versions published one by one in the latency scenario.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub samples: u32,
    /// Publishing rate of the latency scenario, versions per second.
    #[arg(long, default_value_t = 200, value_name = "PER_S")]
    pub rate: u32,
    /// worker.concurrency of the benchmarked daemon: 8 batches in flight (at 4 the claim
    /// loop waited for free slots; see docs/performance.md).
    #[arg(long, default_value_t = 4000, value_name = "N")]
    pub concurrency: usize,
    /// worker.batch_size of the benchmarked daemon.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub batch_size: usize,
    /// Drain: measure the daemon and the ceiling this many times each (interleaved) and
    /// report the medians.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub repeat: u32,
    /// Write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Collate scenario: size of the generated book in MB (repeat for several sizes; the
    /// largest is reported at the top level).
    #[arg(long = "mb", value_name = "MB", default_values_t = [1.0, 5.0, 10.0, 20.0])]
    pub mb: Vec<f64>,
    /// Collate scenario: also time this reference baker on the same book and recipe
    /// (e.g. benches/easybake_reference.sh, which runs cnx-easybake) for a ratio measured
    /// in the same run. Only the largest size is given to it.
    #[arg(long, value_name = "SCRIPT")]
    pub reference: Option<PathBuf>,
    /// Internal: measure one size in this process and print the result (the collate
    /// scenario runs each size in a fresh child process for an honest peak RSS).
    #[arg(long, hide = true)]
    pub child: bool,
}

/// Runs the chosen scenarios and prints a table; writes JSON when asked.
pub async fn run(cfg: &Config, args: &BenchArgs) -> anyhow::Result<()> {
    if args.scenario == Scenario::Collate {
        return collate(args);
    }
    let bench = Bench::create(cfg).await?;
    // Interrupted (Ctrl-C, or a caller's time limit sending SIGTERM): still drop the
    // database this run created, then stop.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let result = tokio::select! {
        r = bench.run_all(args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = term.recv() => Err(anyhow::anyhow!("stopped by SIGTERM")),
    };
    bench.drop_database().await;
    let report = result?;
    print_table(&report)?;
    if let Some(path) = &args.json {
        write_json(path, &report)?;
        crate::say!("wrote {}", path.display())?;
    }
    Ok(())
}

/// Writes `report` as pretty JSON.
pub fn write_json(path: &Path, report: &Map<String, Value>) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&Value::Object(report.clone()))?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

struct Bench {
    cfg: Config,
    name: String,
    admin_url: String,
}

impl Bench {
    async fn create(cfg: &Config) -> anyhow::Result<Bench> {
        let name = format!("postpub_bench_{}", std::process::id());
        let admin = db::Spec::main(&cfg.database).connect().await?;
        admin
            .batch_execute(&sql::for_database(sql::DROP_DATABASE, &name))
            .await
            .map_err(db::Error::query("dropping an old bench database"))?;
        admin
            .batch_execute(&sql::for_database(sql::CREATE_DATABASE, &name))
            .await
            .map_err(db::Error::query("creating the bench database"))?;
        let mut cfg = cfg.clone();
        let admin_url = cfg.database.url.clone();
        cfg.database.url = db::url_with_database(&admin_url, &name)?;
        cfg.database.listen_url = String::new();
        let mut client = db::Spec::main(&cfg.database).connect().await?;
        migrate::migrate(&mut client).await?;
        Ok(Bench {
            cfg,
            name,
            admin_url,
        })
    }

    /// Drops the bench's database and removes the daemon configuration written for it
    /// (also after an interruption, when the scenario did not get to remove it itself).
    async fn drop_database(&self) {
        let _ = std::fs::remove_file(self.config_path());
        let admin = db::Spec {
            url: self.admin_url.clone(),
            ..db::Spec::main(&self.cfg.database)
        };
        if let Ok(admin) = admin.connect().await {
            let _ = admin
                .batch_execute(&sql::for_database(sql::DROP_DATABASE, &self.name))
                .await;
        }
    }

    async fn client(&self) -> anyhow::Result<Client> {
        Ok(db::Spec::main(&self.cfg.database).connect().await?)
    }

    async fn run_all(&self, args: &BenchArgs) -> anyhow::Result<Map<String, Value>> {
        let all = args.scenario == Scenario::All;
        let mut report = Map::new();
        report.insert("machine".into(), machine());
        if all || args.scenario == Scenario::Drain {
            let (drain, supersede) = self.drain(args).await?;
            report.insert("drain".into(), drain);
            report.insert("supersede".into(), supersede);
        }
        if all || args.scenario == Scenario::Latency {
            report.insert("latency".into(), self.latency(args).await?);
        }
        if all || args.scenario == Scenario::Trigger {
            report.insert("trigger".into(), self.trigger(args).await?);
        }
        if all || args.scenario == Scenario::Memory {
            report.insert("memory".into(), self.memory(args).await?);
        }
        if args.scenario == Scenario::Console {
            report.insert("console".into(), self.console(args).await?);
        }
        Ok(report)
    }

    /// Console pages at 1,000 settled versions (the reference), then at `--versions`.
    async fn console(&self, args: &BenchArgs) -> anyhow::Result<Value> {
        const PER_DOC: i32 = 10;
        const SMALL_DOCS: i32 = 100;
        let c = self.client().await?;
        let docs = (i32::try_from(args.versions).unwrap_or(i32::MAX) / PER_DOC).max(SMALL_DOCS);
        let mut results = Vec::new();
        for (from, to) in [(0, SMALL_DOCS), (SMALL_DOCS, docs)] {
            let started = Instant::now();
            let last: i64 = c
                .query_one(CONSOLE_LAST_ID, &[])
                .await
                .map_err(db::Error::query("reading the last version id"))?
                .get(0);
            c.execute(CONSOLE_FILL, &[&from, &(to - from), &PER_DOC])
                .await
                .map_err(db::Error::query("filling versions for the console bench"))?;
            c.execute(CONSOLE_FILL_HISTORY, &[&last])
                .await
                .map_err(db::Error::query("filling transitions and events"))?;
            c.batch_execute(CONSOLE_VACUUM)
                .await
                .map_err(db::Error::query("vacuuming the console bench tables"))?;
            let total = i64::from(to) * i64::from(PER_DOC);
            eprintln!(
                "console: {total} versions filled in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            let pages = console_pages(&c, total).await?;
            let paths: Vec<String> = pages.iter().map(|(_, p)| p.clone()).collect();
            let times = crate::console::bench::time_pages(&self.cfg, &paths, 15).await?;
            results.push((total, pages, times));
        }
        let mut m = Map::new();
        let (small, big) = (&results[0], &results[1]);
        m.insert("versions".into(), json!(big.0));
        m.insert("reference_versions".into(), json!(small.0));
        for (((label, _), s), b) in big.1.iter().zip(&small.2).zip(&big.2) {
            m.insert(format!("{label}.p50_ms"), json!(round2(b.p50_ms)));
            m.insert(format!("{label}.max_ms"), json!(round2(b.max_ms)));
            m.insert(format!("{label}.reference_p50_ms"), json!(round2(s.p50_ms)));
            m.insert(
                format!("{label}.ratio"),
                json!(round2(b.p50_ms / s.p50_ms.max(0.001))),
            );
        }
        Ok(Value::Object(m))
    }

    /// Empties the tables between runs (TRUNCATE keeps the bench's own numbers comparable).
    async fn reset(&self, c: &Client) -> anyhow::Result<i64> {
        c.batch_execute(RESET)
            .await
            .map_err(db::Error::query("resetting the bench tables"))?;
        c.batch_execute(VACUUM)
            .await
            .map_err(db::Error::query("vacuuming the bench tables"))?;
        let recipe: i64 = scalar(
            c.query_one(STORE_RECIPE, &[&BENCH_RECIPE]).await,
            "id",
            "storing the bench recipe",
        )?;
        Ok(recipe)
    }

    /// Inserts `docs` × `per_doc` pending versions in one transaction; returns when committed.
    async fn insert_pending(
        &self,
        c: &mut Client,
        docs: u32,
        per_doc: u32,
        recipe: i64,
    ) -> anyhow::Result<()> {
        let (docs, per_doc) = (docs as i32, per_doc as i32);
        let tx = c.transaction().await.map_err(db::Error::query("begin"))?;
        tx.execute(INSERT_DOCUMENTS, &[&docs, &per_doc])
            .await
            .map_err(db::Error::query("inserting bench documents"))?;
        tx.execute(INSERT_PENDING, &[&docs, &per_doc, &recipe])
            .await
            .map_err(db::Error::query("inserting pending versions"))?;
        tx.commit().await.map_err(db::Error::query("commit"))?;
        Ok(())
    }

    /// What the graphile-worker reference does before its timed window too: statistics
    /// for the new rows (of every table the claim reads: the queue and the documents are
    /// filled by the same insert), and no checkpoint landing in the middle of the
    /// measurement.
    async fn settle(&self, c: &Client) -> anyhow::Result<()> {
        c.batch_execute("analyze postpub.versions, postpub.documents, postpub.queue")
            .await
            .map_err(db::Error::query("analyzing the bench tables"))?;
        c.batch_execute("checkpoint")
            .await
            .map_err(db::Error::query("checkpointing before the measurement"))?;
        Ok(())
    }

    /// Where the benchmarked daemon's configuration is written (removed by `drop_database`).
    fn config_path(&self) -> PathBuf {
        std::env::temp_dir().join(format!("{}.toml", self.name))
    }

    fn daemon_config(&self, args: &BenchArgs) -> anyhow::Result<PathBuf> {
        let text = format!(
            "[database]\nurl = {url}\npool_size = 8\n\
             [worker]\nconcurrency = {conc}\nbatch_size = {batch}\npoll_interval = \"1s\"\n\
             [pipeline]\nsteps = [\"noop\"]\n[http]\nlisten = \"\"\n[log]\nlevel = \"warn\"\n",
            url = toml_string(&self.cfg.database.url),
            conc = args.concurrency,
            batch = args.batch_size.clamp(1, 1000),
        );
        let path = self.config_path();
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Starts `postpub run` and waits until it is listening.
    async fn spawn_daemon(&self, c: &Client, config: &Path) -> anyhow::Result<DaemonProcess> {
        let exe = std::env::current_exe().context("finding the postpub binary")?;
        let child = Command::new(exe)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting postpub run")?;
        let proc = DaemonProcess { child };
        let started = Instant::now();
        loop {
            let listening: i64 = scalar(
                c.query_one(LISTENING, &[]).await,
                "sessions",
                "waiting for the daemon",
            )?;
            if listening > 0 {
                return Ok(proc);
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("the benchmarked daemon did not start listening within 20s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until no version is pending or processing. Every drained document gets one
    /// outbox event (the tables start empty, ids from 1), so until `events` ids exist it
    /// only reads the newest outbox id, one index page; the full check runs at the end.
    /// (Polling the versions table itself every few ms scanned ever more of it as the drain
    /// went on, and took CPU from the daemon being measured.) Every 20 ms: every 5 ms, the
    /// polls took a tenth of a core (this process and its backend, measured) from the
    /// daemon on a 2-core machine, for an end found 7.5 ms sooner on average.
    async fn wait_drained(&self, c: &Client, events: u32, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let newest: Option<i64> = scalar(
                c.query_one(NEWEST_EVENT, &[]).await,
                "id",
                "watching the drain",
            )?;
            if newest.unwrap_or(0) >= i64::from(events) {
                let busy: bool =
                    scalar(c.query_one(BUSY, &[]).await, "busy", "watching the drain")?;
                if !busy {
                    return Ok(());
                }
            }
            if started.elapsed() > limit {
                bail!("drain did not finish within {}s", limit.as_secs());
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    /// Returns the `drain` section and the `supersede` section (10 versions per document).
    /// The daemon and the ceiling are measured `--repeat` times, interleaved, and the
    /// medians reported: on a shared machine one run can be off by a fifth.
    async fn drain(&self, args: &BenchArgs) -> anyhow::Result<(Value, Value)> {
        let n = args.versions.max(10);
        let mut c = self.client().await?;
        let config = self.daemon_config(args)?;
        let batch = args.batch_size.clamp(1, 1000);

        let mut daemon_rates = Vec::new();
        let mut ceiling_rates = Vec::new();
        for _ in 0..args.repeat.max(1) {
            daemon_rates.push(self.drain_once(&mut c, &config, n, 1).await?);
            let recipe = self.reset(&c).await?;
            self.insert_pending(&mut c, n, 1, recipe).await?;
            self.settle(&c).await?;
            ceiling_rates.push(self.ceiling(n, batch, 2).await?);
        }
        let supersede = self.drain_once(&mut c, &config, n / 10, 10).await?;
        let (daemon, _, _) = percentiles(&mut daemon_rates);
        let (ceiling, _, _) = percentiles(&mut ceiling_rates);
        Ok((
            json!({
                "versions": n,
                "versions_per_s": daemon.round(),
                "ceiling_versions_per_s": ceiling.round(),
                "ceiling_connections": 2,
                "ratio": round3(daemon / ceiling),
                "runs": daemon_rates.len(),
                "versions_per_s_each": daemon_rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
                "ceiling_versions_per_s_each": ceiling_rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
                "concurrency": args.concurrency,
                "batch_size": batch,
            }),
            // Its own section: `drain.*` holds exactly the figures SPEC names.
            json!({
                "versions": (n / 10) * 10,
                "documents": n / 10,
                "versions_per_s": supersede.round(),
            }),
        ))
    }

    /// One drain of `docs` × `per_doc` versions by a `postpub run` process; versions/s.
    /// As the graphile-worker reference does: the backlog is in place (analyzed,
    /// checkpointed), then the clock starts with the daemon's start-up.
    async fn drain_once(
        &self,
        c: &mut Client,
        config: &Path,
        docs: u32,
        per_doc: u32,
    ) -> anyhow::Result<f64> {
        let recipe = self.reset(c).await?;
        let t_insert = Instant::now();
        self.insert_pending(c, docs, per_doc, recipe).await?;
        let insert = t_insert.elapsed();
        self.settle(c).await?;
        let t0 = Instant::now();
        let daemon = self.spawn_daemon(c, config).await?;
        self.wait_drained(c, docs, Duration::from_secs(600)).await?;
        let took = t0.elapsed();
        drop(daemon);
        let current: i64 = scalar(
            c.query_one(COUNT_CURRENT, &[]).await,
            "current",
            "counting current",
        )?;
        if current != i64::from(docs) {
            bail!("drain ended with {current} current versions, expected {docs}");
        }
        eprintln!(
            "drain: {} versions ({docs} documents) in {:.2}s (insert {:.2}s)",
            docs * per_doc,
            took.as_secs_f64(),
            insert.as_secs_f64()
        );
        Ok(f64::from(docs * per_doc) / took.as_secs_f64())
    }

    /// The same writes as plain batched SQL: `connections` loops of claim → finish.
    async fn ceiling(&self, n: u32, batch: usize, connections: usize) -> anyhow::Result<f64> {
        let mut clients = Vec::new();
        for _ in 0..connections {
            clients.push(self.client().await?);
        }
        let batch = batch as i32;
        let t0 = Instant::now();
        let loops = clients.into_iter().enumerate().map(|(i, c)| async move {
            // The same planner help the daemon's functions get (see sql/0003_worker.sql),
            // and like them it writes the queue, the lease and the pointer itself, so the
            // triggers that do that for other writers stay out (sql/0008_storage.sql).
            c.batch_execute("set enable_seqscan = off; set enable_bitmapscan = off; set jit = off; set postpub.internal = on")
                .await
                .map_err(db::Error::query("configuring the ceiling session"))?;
            let claim = c
                .prepare(CEILING_CLAIM)
                .await
                .map_err(db::Error::query("prepare"))?;
            let finish = c
                .prepare(CEILING_FINISH)
                .await
                .map_err(db::Error::query("prepare"))?;
            let actor = format!("ceiling-{i}");
            loop {
                let rows = c
                    .query(&claim, &[&batch, &actor])
                    .await
                    .map_err(db::Error::query("ceiling claim"))?;
                let ids = rows
                    .iter()
                    .map(|r| r.try_get("id"))
                    .collect::<Result<Vec<i64>, _>>()
                    .map_err(db::Error::query("ceiling claim"))?;
                // One token per claim: the finish releases the claim's row.
                let tokens = rows
                    .first()
                    .map(|r| r.try_get("lease_token"))
                    .transpose()
                    .map_err(db::Error::query("ceiling claim"))?
                    .into_iter()
                    .collect::<Vec<i64>>();
                if ids.is_empty() {
                    return Ok::<(), db::Error>(());
                }
                c.query_one(&finish, &[&ids, &actor, &tokens])
                    .await
                    .map_err(db::Error::query("ceiling finish"))?;
            }
        });
        for r in futures_util::future::join_all(loops).await {
            r?;
        }
        let took = t0.elapsed();
        eprintln!("ceiling: {n} versions in {:.2}s", took.as_secs_f64());
        Ok(f64::from(n) / took.as_secs_f64())
    }

    /// Commit → claim and commit → current at a steady rate, for a daemon in this
    /// process. Over 80 lines on purpose: the timestamps it compares (commit, claim event,
    /// current event) are taken in one scope so that no helper boundary adds its own
    /// delay or reordering to what is measured.
    async fn latency(&self, args: &BenchArgs) -> anyhow::Result<Value> {
        let c = self.client().await?;
        let recipe_id = self.reset(&c).await?;
        let _ = recipe_id;
        let mut cfg = self.cfg.clone();
        // The same daemon settings as the drain: with 4 slots, versions waiting for their
        // (fsynced) finish would hold back the next claims and measure the slot limit.
        cfg.worker.concurrency = args.concurrency;
        cfg.worker.batch_size = args.batch_size.clamp(1, 1000);
        cfg.worker.poll_interval = Duration::from_secs(60);
        cfg.pipeline.steps = vec!["noop".to_owned()];
        cfg.http.listen = String::new();
        let tx = event::channel();
        let mut events = tx.subscribe();
        let shutdown = Shutdown::new();
        let (ready_tx, mut ready) = watch::channel(false);
        let daemon = tokio::spawn(crate::daemon::run(cfg, shutdown.clone(), tx, ready_tx));
        tokio::time::timeout(Duration::from_secs(15), ready.wait_for(|r| *r))
            .await
            .context("daemon not ready within 15s")?
            .context("daemon stopped")?;

        // Timestamp events as they arrive, on their own task.
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(i64, bool, Instant)>();
        let watcher = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(Event::Claimed { version_id, .. }) => {
                        let _ = seen_tx.send((version_id, false, Instant::now()));
                    }
                    Ok(Event::Finished { version_id, .. }) => {
                        let _ = seen_tx.send((version_id, true, Instant::now()));
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });

        let stmt = c
            .prepare(PUBLISH_LATENCY)
            .await
            .map_err(db::Error::query("prepare publish"))?;
        let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut committed: HashMap<i64, Instant> = HashMap::new();
        // Warm up the daemon's connections and plans first.
        for i in 0..50 {
            tick.tick().await;
            let doc = format!("warm-{i}");
            c.query_one(&stmt, &[&doc, &BENCH_RECIPE])
                .await
                .map_err(db::Error::query("publishing"))?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        while seen_rx.try_recv().is_ok() {}
        for i in 0..args.samples {
            tick.tick().await;
            let doc = format!("lat-{i}");
            let id: i64 = scalar(
                c.query_one(&stmt, &[&doc, &BENCH_RECIPE]).await,
                "id",
                "publishing",
            )?;
            committed.insert(id, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        shutdown.soft.cancel();
        daemon.await.context("daemon task")??;
        watcher.abort();
        let mut claim = Vec::new();
        let mut current = Vec::new();
        while let Ok((id, finished, at)) = seen_rx.try_recv() {
            if let Some(t) = committed.get(&id) {
                let ms = at.saturating_duration_since(*t).as_secs_f64() * 1000.0;
                if finished {
                    current.push(ms);
                } else {
                    claim.push(ms);
                }
            }
        }
        if claim.len() < committed.len() * 9 / 10 {
            bail!(
                "only {} of {} claims were observed",
                claim.len(),
                committed.len()
            );
        }
        let (c50, c99, cmax) = percentiles(&mut claim);
        let (u50, u99, umax) = percentiles(&mut current);
        Ok(json!({
            "samples": committed.len(),
            "rate_per_s": args.rate,
            "claim_p50_ms": round3(c50),
            "claim_p99_ms": round3(c99),
            "claim_max_ms": round3(cmax),
            "current_p50_ms": round3(u50),
            "current_p99_ms": round3(u99),
            "current_max_ms": round3(umax),
        }))
    }

    async fn trigger(&self, args: &BenchArgs) -> anyhow::Result<Value> {
        let mut c = self.client().await?;
        let n = args.versions.max(1000);
        let mut with = Vec::new();
        let mut without = Vec::new();
        for round in 0..5 {
            for enabled in [true, false] {
                let recipe = self.reset(&c).await?;
                c.batch_execute(if enabled { NOTIFY_ON } else { NOTIFY_OFF })
                    .await
                    .map_err(db::Error::query("toggling the trigger"))?;
                let t0 = Instant::now();
                self.insert_pending(&mut c, n, 1, recipe).await?;
                let took = t0.elapsed().as_secs_f64();
                if round > 0 {
                    if enabled {
                        with.push(took)
                    } else {
                        without.push(took)
                    }
                }
            }
        }
        c.batch_execute(NOTIFY_ON)
            .await
            .map_err(db::Error::query("re-enabling the trigger"))?;
        let (w, _, _) = percentiles(&mut with);
        let (wo, _, _) = percentiles(&mut without);
        Ok(json!({
            "rows": n,
            "with_trigger_s": round3(w),
            "without_trigger_s": round3(wo),
            "overhead_ratio": round3(w / wo),
        }))
    }

    async fn memory(&self, args: &BenchArgs) -> anyhow::Result<Value> {
        let mut c = self.client().await?;
        let config = self.daemon_config(args)?;
        let recipe = self.reset(&c).await?;
        let daemon = self.spawn_daemon(&c, &config).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = daemon.peak_rss_mb()?;
        drop(daemon);

        self.insert_pending(&mut c, args.backlog, 1, recipe).await?;
        let daemon = self.spawn_daemon(&c, &config).await?;
        let t0 = Instant::now();
        self.wait_drained(&c, args.backlog, Duration::from_secs(1800))
            .await?;
        let took = t0.elapsed();
        let backlog = daemon.peak_rss_mb()?;
        drop(daemon);
        eprintln!(
            "memory: idle {idle:.1} MB; {} backlog drained in {:.1}s with peak {backlog:.1} MB",
            args.backlog,
            took.as_secs_f64()
        );
        Ok(json!({
            "idle_rss_mb": round3(idle),
            "backlog_versions": args.backlog,
            "backlog_rss_mb": round3(backlog),
            "backlog_drain_s": round3(took.as_secs_f64()),
        }))
    }
}

/// The collate scenario: each size baked in a fresh `postpub bench collate --child`
/// process, then optionally the reference on the largest size.
///
/// Over 80 lines on purpose: postpub and the reference are timed in the same run, one after
/// the other, and the ratio is only fair when both are set up, warmed and timed by the
/// same visible steps; keeping them side by side in one function shows that they are.
fn collate(args: &BenchArgs) -> anyhow::Result<()> {
    use crate::collate::bench as cb;
    if args.child {
        let size = args.mb.first().copied().unwrap_or(1.0);
        let r = cb::measure(size).context("baking the generated book")?;
        crate::say!("{}", r.to_json())?;
        return Ok(());
    }
    let exe = std::env::current_exe().context("finding the postpub binary")?;
    let report = cb::run_in_children(&args.mb, |size| {
        let mut c = Command::new(&exe);
        c.args(["bench", "collate", "--child", "--mb", &size.to_string()]);
        c
    })
    .context("running the collate bench")?;
    let runs: Vec<Value> = report
        .results
        .iter()
        .map(|r| {
            json!({
                "input_mb": round3(r.input_bytes as f64 / 1e6),
                "seconds": round3(r.seconds),
                "mb_per_s": round3(r.mb_per_s),
                "peak_rss_mb": round3(r.peak_rss_mb),
            })
        })
        .collect();
    let Some(top) = report.results.iter().max_by_key(|r| r.input_bytes) else {
        bail!("no size given (--mb)");
    };
    let mut section = json!({
        "input_mb": round3(top.input_bytes as f64 / 1e6),
        "seconds": round3(top.seconds),
        "mb_per_s": round3(top.mb_per_s),
        "peak_rss_mb": round3(top.peak_rss_mb),
        "runs": runs,
    });
    if let Some(script) = &args.reference {
        let dir =
            std::env::temp_dir().join(format!("postpub-collate-bench-{}", std::process::id()));
        let size = top.input_bytes as f64 / 1e6;
        let (book, recipe) = cb::write_bench_files(&dir, size.round())
            .with_context(|| format!("writing the book to {}", dir.display()))?;
        eprintln!("timing the reference on {} …", book.display());
        let out = Command::new(script)
            .arg(&book)
            .arg(&recipe)
            .arg(dir.join("reference-out.html"))
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |k: &str| -> Option<f64> {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.parse().ok())
        };
        let (Some(secs), Some(rss)) = (field("easybake_seconds"), field("rss_mb")) else {
            bail!(
                "{} printed no easybake_seconds/rss_mb: {}{}",
                script.display(),
                text,
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // Our own figure for exactly that file, in a fresh process.
        let ours = cb::run_in_children(&[size.round()], |s| {
            let mut c = Command::new(&exe);
            c.args(["bench", "collate", "--child", "--mb", &s.to_string()]);
            c
        })
        .context("re-measuring the reference size")?;
        let ours = ours
            .results
            .first()
            .context("no result for the reference size")?;
        if let Value::Object(m) = &mut section {
            m.insert("reference_input_mb".into(), json!(round3(size.round())));
            m.insert("reference_seconds".into(), json!(round3(secs)));
            m.insert("reference_peak_rss_mb".into(), json!(round3(rss)));
            m.insert(
                "reference_speedup".into(),
                json!(round3(secs / ours.seconds.max(1e-9))),
            );
            m.insert(
                "reference_memory_ratio".into(),
                json!(round3(ours.peak_rss_mb / rss.max(1e-9))),
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let mut report = Map::new();
    report.insert("machine".into(), machine());
    report.insert("collate".into(), section);
    print_table(&report)?;
    if let Some(path) = &args.json {
        write_json(path, &report)?;
        crate::say!("wrote {}", path.display())?;
    }
    Ok(())
}

/// A `postpub run` child, stopped with SIGTERM when dropped.
struct DaemonProcess {
    child: Child,
}

impl DaemonProcess {
    fn peak_rss_mb(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("reading the daemon's /proc status")?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .context("no VmHWM in /proc status")?;
        Ok(kb / 1024.0)
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// (p50, p99, max) of `v` (sorted in place); zeros when empty.
fn percentiles(v: &mut [f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({ "cpus": cpus, "postpub": env!("CARGO_PKG_VERSION") })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The console pages the bench times, labelled, for a database of `total` versions filled
/// by `console_fill.sql` (doc-0000042 is an ordinary document, doc-0000100 has an errored
/// version).
async fn console_pages(c: &Client, total: i64) -> anyhow::Result<Vec<(&'static str, String)>> {
    let ids: Vec<i64> = c
        .query(CONSOLE_DIFF_VERSIONS, &[])
        .await
        .map_err(db::Error::query("reading the bench document's versions"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (b, a) = (
        ids.first().copied().unwrap_or(0),
        ids.get(1).copied().unwrap_or(0),
    );
    let mid = total / 2;
    Ok(vec![
        ("overview", "/console".to_owned()),
        ("versions", "/console/versions".to_owned()),
        (
            "versions_errored",
            "/console/versions?state=errored".to_owned(),
        ),
        (
            "versions_current",
            "/console/versions?state=current".to_owned(),
        ),
        (
            "versions_prefix",
            "/console/versions?doc=doc-00000".to_owned(),
        ),
        (
            "versions_contains",
            "/console/versions?doc=0042&match=contains".to_owned(),
        ),
        (
            "versions_older_page",
            format!("/console/versions?before={mid}"),
        ),
        (
            "versions_archived_older",
            format!("/console/versions?state=archived&before={mid}"),
        ),
        (
            "versions_since",
            "/console/versions?since=2000-01-01T00:00".to_owned(),
        ),
        ("document", "/console/document?name=doc-0000042".to_owned()),
        (
            "document_diff",
            format!("/console/document?name=doc-0000100&a={a}&b={b}"),
        ),
        (
            "confirm_matching",
            "/console/requeue-matching?doc=doc-".to_owned(),
        ),
        (
            "asset_http_reference",
            "/console/assets/console.css".to_owned(),
        ),
    ])
}

fn print_table(report: &Map<String, Value>) -> Result<(), crate::output::StdoutError> {
    crate::say!("{:<44} {:>14}", "figure", "value")?;
    for (section, v) in report {
        if let Value::Object(m) = v {
            for (k, x) in m {
                crate::say!("{:<44} {:>14}", format!("{section}.{k}"), x.to_string())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        v.reverse();
        let (p50, p99, max) = percentiles(&mut v);
        assert_eq!((p50, p99, max), (51.0, 99.0, 100.0));
        assert_eq!(percentiles(&mut []), (0.0, 0.0, 0.0));
    }
}
