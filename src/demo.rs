//! `postpub demo`: a self-contained showcase against the local PostgreSQL. It creates its
//! own database, migrates it, starts the daemon in this process, publishes a handful of
//! documents that take every path (collated, straight to current, superseded, deleted,
//! never-published tombstone, malformed), waits for them to settle and prints the result.
//!
//! On a fresh machine there may be no server to use: when none was named and nothing
//! usable answers at the default address, the demo brings its own, a throwaway cluster
//! ([`crate::cluster`]) that it stops and removes when it ends, by error or Ctrl-C too.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use tokio::sync::watch;

use crate::cluster::{self, Binaries, Cluster};
use crate::config::Config;
use crate::db::{self, migrate, sql};
use crate::shutdown::Shutdown;
use crate::{admin, daemon, event, shutdown};

/// See `sql/demo/unsettled.sql`.
const UNSETTLED: &str = include_str!("../sql/demo/unsettled.sql");
/// See `sql/demo/versions.sql`.
const VERSIONS: &str = include_str!("../sql/demo/versions.sql");
/// See `sql/demo/chapter_1.sql`.
const CHAPTER_1_CONTENT: &str = include_str!("../sql/demo/chapter_1.sql");

/// A small recipe in the easybake dialect: number the figures, collect the exercises at
/// the end of the chapter.
const RECIPE: &str = r#"
div[data-type="chapter"] { counter-reset: figure; }
figure { counter-increment: figure; }
figure > figcaption::before { content: "Figure " counter(figure) ": "; }
section.exercise { move-to: exercises; }
div[data-type="chapter"]::after {
  content: pending(exercises);
  class: "end-of-chapter-exercises";
  container: section;
}
"#;

const CHAPTER_1: &str = r#"<div data-type="chapter"><h1>Forces</h1>
<p>A force is a push or a pull.</p>
<section class="exercise"><p>What is a force?</p></section>
<figure><img src="push.png"/><figcaption>A push</figcaption></figure>
<figure><img src="pull.png"/><figcaption>A pull</figcaption></figure>
<section class="exercise"><p>Name two forces.</p></section>
</div>"#;

/// Runs the showcase against the configured server, or, when `url_given` is false and the
/// default server cannot be used, against a throwaway cluster of its own.
pub async fn main(cfg: &Config, database: &str, url_given: bool) -> anyhow::Result<()> {
    // SIGINT/SIGTERM end the demo in order: the daemon stops, a throwaway cluster goes.
    // (`interrupt.soft` is the signal; the daemon gets tokens of its own, which the demo
    // cancels when it is done, so that a late signal is not taken for a second one.)
    let interrupt = Shutdown::new();
    let (_signals, _reload) =
        shutdown::install(interrupt.clone()).context("installing signal handlers")?;
    if url_given {
        return run(cfg, database, &interrupt, false).await;
    }
    let (why, refused) = match db::Spec::main(&cfg.database).connect().await {
        Ok(_) => return run(cfg, database, &interrupt, false).await,
        Err(e) => match cluster::stand_in_reason(&e) {
            Some(why) => (why, e),
            None => return Err(e.into()),
        },
    };
    let target = db::target(&db::pg_config(
        &cfg.database.url,
        cfg.database.connect_timeout,
    )?);
    let binaries = Binaries::find().map_err(|e| {
        anyhow!(e).context(format!(
            "no usable PostgreSQL at {target} ({why}), and none to start"
        ))
    })?;
    tracing::debug!(error = %refused, "the default server cannot be used");
    crate::say!(
        "no usable PostgreSQL at {target} ({why}): starting a throwaway one from {} (removed when the demo ends)",
        binaries.dir().display()
    )?;
    // initdb and pg_ctl block; a signal meanwhile is acted on once the cluster is up.
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&binaries))
        .await
        .context("the thread starting PostgreSQL failed")?
        .context("starting a throwaway PostgreSQL")?;
    let result = if interrupt.soft.is_cancelled() {
        Err(interrupted())
    } else {
        let mut cfg = cfg.clone();
        cfg.database.url = cluster.url("postgres");
        run(&cfg, database, &interrupt, true).await
    };
    let removed = tokio::task::spawn_blocking(move || cluster.remove())
        .await
        .context("the thread removing PostgreSQL failed")?;
    result?;
    removed.context("removing the throwaway PostgreSQL")?;
    Ok(())
}

fn interrupted() -> anyhow::Error {
    anyhow!("interrupted")
}

/// Runs the showcase against `cfg.database.url`; the database stays for exploring
/// afterwards unless it lives in a `throwaway` cluster. Ends early, stopping the daemon,
/// when `interrupt.soft` is cancelled.
async fn run(
    cfg: &Config,
    database: &str,
    interrupt: &Shutdown,
    throwaway: bool,
) -> anyhow::Result<()> {
    let (cfg, client) = tokio::select! {
        biased;
        _ = interrupt.soft.cancelled() => return Err(interrupted()),
        r = prepare(cfg, database) => r?,
    };
    let shutdown = Shutdown::new();
    let (ready_tx, mut ready) = watch::channel(false);
    let daemon = tokio::spawn(daemon::run(
        cfg.clone(),
        shutdown.clone(),
        event::channel(),
        ready_tx,
    ));
    let outcome = tokio::select! {
        biased;
        _ = interrupt.soft.cancelled() => Err(interrupted()),
        r = showcase(&cfg, client, &mut ready) => r,
    };
    if outcome.is_err() {
        // Interrupted or failed: nothing in flight is worth waiting for.
        shutdown.hard.cancel();
    }
    shutdown.soft.cancel();
    // The daemon's own failure explains more than what the showcase saw of it.
    daemon.await.context("the daemon task failed")??;
    outcome?;
    if throwaway {
        crate::say!(
            "
the throwaway PostgreSQL goes now; give --database-url to keep {database} for exploring"
        )?;
        return Ok(());
    }
    let pg = db::pg_config(&cfg.database.url, cfg.database.connect_timeout)?;
    crate::say!(
        "\nexplore it: psql -h {} -p {} -U {} -d {database} -c 'select document, version, content from postpub.current'",
        db::target(&pg).split(':').next().unwrap_or("localhost"),
        pg.get_ports().first().copied().unwrap_or(5432),
        pg.get_user().unwrap_or("postgres"),
    )?;
    Ok(())
}

/// Creates and migrates the demo database; returns the daemon's settings and a client.
async fn prepare(cfg: &Config, database: &str) -> anyhow::Result<(Config, tokio_postgres::Client)> {
    let admin_client = db::Spec::main(&cfg.database).connect().await?;
    // Separate statements: DROP/CREATE DATABASE refuse to run in a transaction block.
    admin_client
        .batch_execute(&sql::for_database(sql::DROP_DATABASE, database))
        .await
        .map_err(db::Error::query("dropping the previous demo database"))?;
    admin_client
        .batch_execute(&sql::for_database(sql::CREATE_DATABASE, database))
        .await
        .map_err(db::Error::query("creating the demo database"))?;
    drop(admin_client);

    let mut cfg = cfg.clone();
    cfg.database.url = db::url_with_database(&cfg.database.url, database)?;
    cfg.database.listen_url = String::new();
    cfg.pipeline.steps = vec!["validate".into(), "collate".into()];
    cfg.worker.poll_interval = Duration::from_millis(500);
    cfg.worker.backoff.initial = Duration::from_millis(100);
    cfg.http.listen = String::new();

    let mut client = db::Spec::main(&cfg.database).connect().await?;
    let report = migrate::migrate(&mut client).await?;
    crate::say!(
        "created database {database} and migrated it to schema version {}",
        report.to
    )?;
    Ok((cfg, client))
}

/// Waits for the daemon, publishes the documents, waits for them to settle, prints the
/// table.
async fn showcase(
    cfg: &Config,
    mut client: tokio_postgres::Client,
    ready: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(15), ready.wait_for(|r| *r))
        .await
        .context("the daemon did not become ready within 15s")?
        .context("the daemon stopped before it was ready")?;
    crate::say!("daemon running (pipeline: {:?})\n", cfg.pipeline.steps)?;

    use Publish::{Body, Burst, Delete};
    let first = [
        (
            "publish intro without a recipe (current at once)",
            Body("intro", "<h1>Welcome</h1>", false),
        ),
        (
            "publish chapter-1 v1 and v2 in one transaction (v1 is superseded)",
            Burst(
                "chapter-1",
                ["<div data-type=\"chapter\"><h1>Draft</h1></div>", CHAPTER_1],
            ),
        ),
        (
            "publish glossary with a recipe",
            Body(
                "glossary",
                "<dl><dt>force</dt><dd>a push or a pull</dd></dl>",
                true,
            ),
        ),
        (
            "delete never-published (no event, no retry)",
            Delete("never-published"),
        ),
        (
            "publish broken with malformed HTML (errored)",
            Body("broken", "<div><p>unclosed</div>", true),
        ),
    ];
    let second = [
        ("delete glossary (deleted event)", Delete("glossary")),
        (
            "publish intro v2 without a recipe (v1 archived)",
            Body("intro", "<h1>Welcome back</h1>", false),
        ),
    ];
    let started = Instant::now();
    for batch in [&first[..], &second[..]] {
        for (what, step) in batch {
            crate::say!("  {what}")?;
            match *step {
                Body(doc, body, with_recipe) => {
                    admin::publish(&client, doc, body, with_recipe.then_some(RECIPE)).await?;
                }
                Burst(doc, bodies) => {
                    let tx = client
                        .transaction()
                        .await
                        .map_err(db::Error::query("starting a transaction"))?;
                    for body in bodies {
                        admin::publish(&tx, doc, body, Some(RECIPE)).await?;
                    }
                    tx.commit()
                        .await
                        .map_err(db::Error::query("committing the versions"))?;
                }
                Delete(doc) => {
                    admin::delete(&client, doc).await?;
                }
            }
        }
        settle(&client).await?;
    }
    crate::say!("\nsettled in {} ms\n", started.elapsed().as_millis())?;

    print_table(&client).await
}

/// Waits until no version is pending or processing.
async fn settle(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let pending: i64 = client
            .query_one(UNSETTLED, &[])
            .await
            .map_err(db::Error::query("waiting for the versions to settle"))?
            .try_get("pending")
            .map_err(db::Error::query("waiting for the versions to settle"))?;
        if pending == 0 {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("{pending} versions still pending after 30s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

enum Publish {
    Body(&'static str, &'static str, bool),
    Burst(&'static str, [&'static str; 2]),
    Delete(&'static str),
}

async fn print_table(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    let rows = client
        .query(VERSIONS, &[])
        .await
        .map_err(db::Error::query("reading the versions"))?;
    let rows: Vec<VersionRow> = db::row::all(&rows, "reading the versions")?;
    crate::say!(
        "{:<17} {:>3}  {:<11} {:<9} {:>8}  {:<10} note",
        "document",
        "v",
        "state",
        "kind",
        "attempts",
        "event"
    )?;
    for r in rows {
        let kind = if r.is_tombstone { "tombstone" } else { "body" };
        crate::say!(
            "{:<17} {:>3}  {:<11} {:<9} {:>8}  {:<10} {}",
            r.document,
            r.version,
            r.state,
            kind,
            r.attempts,
            r.events.as_deref().unwrap_or("-"),
            r.note,
        )?;
    }
    let row = client
        .query_opt(CHAPTER_1_CONTENT, &[])
        .await
        .map_err(db::Error::query("reading chapter-1"))?;
    if let Some(r) = row {
        let content: String = r
            .try_get("content")
            .map_err(db::Error::query("reading chapter-1"))?;
        crate::say!("\nchapter-1 as published:\n{content}")?;
    }
    Ok(())
}

/// A row of `sql/demo/versions.sql`.
struct VersionRow {
    document: String,
    version: i32,
    state: String,
    is_tombstone: bool,
    attempts: i32,
    note: String,
    events: Option<String>,
}

impl db::row::FromRow for VersionRow {
    fn from_row(r: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(VersionRow {
            document: r.try_get("document")?,
            version: r.try_get("version")?,
            state: r.try_get("state")?,
            is_tombstone: r.try_get("is_tombstone")?,
            attempts: r.try_get("attempts")?,
            note: r.try_get("note")?,
            events: r.try_get("events")?,
        })
    }
}
