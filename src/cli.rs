//! The command line: clap definitions and what each subcommand does. Errors leave here as
//! `anyhow` with context; `main` prints them as one line and picks the exit code
//! (2 for configuration/usage, 1 for everything else).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::db::{self, migrate};
use crate::{admin, bench, cluster, daemon, demo, event, logging, shutdown};

/// postpub: claims versions of documents published into PostgreSQL, collates them with
/// their CSS recipe and publishes them: exactly one current version per document, an
/// outbox event for everyone else.
#[derive(Debug, Parser)]
#[command(
    name = "postpub",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Configuration file (TOML; see config.example.toml). Defaults apply without one.
    #[arg(long, global = true, value_name = "FILE", env = "POSTPUB_CONFIG")]
    pub config: Option<PathBuf>,

    /// Database URL; overrides DATABASE_URL and the config file.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the postpub schema (safe to run twice, or twice at once).
    Migrate,
    /// Run the daemon: claim, collate and publish versions until SIGTERM.
    Run,
    /// Run only the outbox relay: deliver events to the configured sinks until SIGTERM.
    Relay,
    /// Show versions per state, the outbox backlog and the latest errors.
    Status(StatusArgs),
    /// Put errored versions (or a parked outbox event) back in the queue.
    Requeue(RequeueArgs),
    /// Publish a version of a document (or delete the document).
    Publish(PublishArgs),
    /// Bake an XHTML document with a CSS recipe (the collate step, without a database).
    Bake(BakeArgs),
    /// Showcase: a throwaway database, a few documents, the daemon, the resulting states.
    Demo(DemoArgs),
    /// Measure drain throughput, latency, memory and trigger cost in a database of its own.
    Bench(bench::BenchArgs),
    /// Stop a shared throwaway PostgreSQL cluster once nobody uses it (started by the test
    /// harness; see `cluster::shared`).
    #[command(hide = true)]
    ClusterReaper(ReaperArgs),
    /// Internal: a bake process of the daemon (requests on stdin, results on stdout).
    #[command(hide = true)]
    BakeServer(BakeServerArgs),
}

/// `cluster-reaper` options.
#[derive(Debug, Args)]
pub struct ReaperArgs {
    /// The shared cluster's state directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Stop as soon as nobody uses the cluster once this process has exited.
    #[arg(long, value_name = "PID")]
    pub watch_pid: Option<u32>,
    /// Otherwise stop after nobody has used it for this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace: std::time::Duration,
}

/// `bake-server` options (set by the daemon that starts it).
#[derive(Debug, Args)]
pub struct BakeServerArgs {
    /// Address-space limit of this process (pipeline.collate.max_memory_bytes).
    #[arg(long, value_name = "BYTES")]
    pub max_memory_bytes: u64,
}

/// `status` options.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How many of the latest errors to show.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub errors: i64,
}

/// `requeue` options: one version, every errored one, or one parked outbox event.
#[derive(Debug, Args)]
pub struct RequeueArgs {
    /// The errored version to requeue.
    #[arg(
        long,
        value_name = "VERSION_ID",
        required_unless_present_any = ["errored", "event"],
        conflicts_with_all = ["errored", "event"]
    )]
    pub id: Option<i64>,
    /// A parked outbox event (a sink refused it) to deliver again.
    #[arg(long, value_name = "EVENT_ID", conflicts_with = "errored")]
    pub event: Option<uuid::Uuid>,
    /// Requeue every errored version (of --document, if given).
    #[arg(long)]
    pub errored: bool,
    /// With --errored: only this document.
    #[arg(long, value_name = "DOCUMENT", requires = "errored")]
    pub document: Option<String>,
}

/// `publish` options.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Document name.
    #[arg(long, value_name = "DOCUMENT")]
    pub document: String,
    /// File holding the body ("-" for stdin).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "delete",
        conflicts_with = "delete"
    )]
    pub body: Option<PathBuf>,
    /// Publish a deletion (tombstone) instead of a body.
    #[arg(long, conflicts_with = "recipe")]
    pub delete: bool,
    /// CSS recipe to collate the body with.
    #[arg(long, value_name = "FILE")]
    pub recipe: Option<PathBuf>,
}

/// `bake` options.
#[derive(Debug, Args)]
pub struct BakeArgs {
    /// The recipe (CSS in the cnx-easybake dialect).
    pub recipe: PathBuf,
    /// The document to bake (well-formed XHTML); "-" for stdin.
    pub input: PathBuf,
    /// Where to write the baked document (default: stdout).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Refuse the recipe where cnx-easybake would only warn (unknown property,
    /// pseudo-element, function …), naming the line and rule. For recipe authors; by
    /// default the recipe is read as cnx-easybake reads it, problems as warnings.
    #[arg(long)]
    pub strict: bool,
    /// Accepted for scripts written when the reference-compatible mode needed this flag;
    /// it is the default now, so the flag does nothing.
    #[arg(long, hide = true, conflicts_with = "strict")]
    pub compat: bool,
    /// Show no warnings (only errors).
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also show what cnx-easybake logs at INFO level (for example empty buckets).
    #[arg(short, long)]
    pub verbose: bool,
    /// Number generated ids autobaked-1, autobaked-2, … instead of random UUIDs.
    #[arg(long)]
    pub repeatable_ids: bool,
}

/// `demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Name of the database the demo creates (dropped first if it exists).
    #[arg(long, default_value = "postpub_demo", value_name = "NAME")]
    pub database: String,
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Bake(args) = &cli.command {
        // Baking needs no configuration and no database.
        return bake_cmd(args);
    }
    if let Command::ClusterReaper(args) = &cli.command {
        // Nor does the reaper.
        return reaper_cmd(args).await;
    }
    // Whether the user named a server: then the demo uses it or fails, as every command.
    // A configuration that spells out the default URL counts as naming none; it names the
    // server the demo tries first anyway.
    let url_given =
        cli.database_url.is_some() || std::env::var("DATABASE_URL").is_ok_and(|u| !u.is_empty());
    let cfg = load_config(cli.config.as_deref(), cli.database_url.as_deref())?;
    let mut log = cfg.log.clone();
    if matches!(cli.command, Command::Demo(_) | Command::Bench(_)) {
        // These print their own story; only problems should interrupt it.
        log.level = "warn".to_owned();
    }
    logging::init(&log.level, log.format);
    // The collate step runs its bakes in processes of this very binary.
    match std::env::current_exe() {
        Ok(me) => crate::pipeline::collate::set_bake_program(me),
        Err(e) => {
            tracing::warn!(error = %e, "cannot find this program's path; bakes will run in the daemon process")
        }
    }
    match cli.command {
        Command::Migrate => migrate_cmd(&cfg).await,
        Command::Run => run_cmd(cfg, cli.config.clone(), cli.database_url.clone()).await,
        Command::Relay => relay_cmd(cfg).await,
        Command::Status(args) => status_cmd(&cfg, &args).await,
        Command::Requeue(args) => requeue_cmd(&cfg, &args).await,
        Command::Publish(args) => publish_cmd(&cfg, &args).await,
        Command::Demo(args) => {
            let url_given = url_given || cfg.database.url != crate::config::DEFAULT_DATABASE_URL;
            demo::main(&cfg, &args.database, url_given).await
        }
        Command::Bake(args) => bake_cmd(&args),
        Command::Bench(args) => bench::run(&cfg, &args).await,
        Command::ClusterReaper(args) => reaper_cmd(&args).await,
        Command::BakeServer(args) => Ok(bake_server(&args)?),
    }
}

async fn reaper_cmd(args: &ReaperArgs) -> anyhow::Result<()> {
    let (dir, pid, grace) = (args.state_dir.clone(), args.watch_pid, args.grace);
    // Blocking file locks and sleeps: off the async threads.
    tokio::task::spawn_blocking(move || cluster::shared::reap(&dir, pid, grace))
        .await
        .context("the reaper thread failed")??;
    Ok(())
}

async fn connect(cfg: &Config) -> anyhow::Result<tokio_postgres::Client> {
    Ok(db::Spec::main(&cfg.database).connect().await?)
}

async fn migrate_cmd(cfg: &Config) -> anyhow::Result<()> {
    let mut client = connect(cfg).await?;
    let report = migrate::migrate(&mut client).await?;
    migrate::set_max_body_bytes(&client, cfg.pipeline.max_body_bytes).await?;
    if report.from == report.to {
        println!("schema postpub is up to date (version {})", report.to);
    } else {
        println!(
            "schema postpub migrated from version {} to {}",
            report.from, report.to
        );
    }
    Ok(())
}

async fn run_cmd(
    cfg: Config,
    file: Option<PathBuf>,
    database_url: Option<String>,
) -> anyhow::Result<()> {
    let shutdown = shutdown::Shutdown::new();
    let (_signals, reload) =
        shutdown::install(shutdown.clone()).context("installing signal handlers")?;
    let (ready, _) = watch::channel(false);
    // A reload reads the same file, environment and flags as the start did.
    let reload = daemon::Reload {
        requests: reload,
        load: Box::new(move || load_config(file.as_deref(), database_url.as_deref())),
    };
    // systemd (Type=notify): the daemon's notifier follows `ready` and the stop signal.
    daemon::run_with_reload(cfg, shutdown, event::channel(), ready, Some(reload)).await?;
    Ok(())
}

/// The configuration from `file`, the process environment and `--database-url`, with
/// every sink's table checked by its sink.
fn load_config(file: Option<&Path>, database_url: Option<&str>) -> Result<Config, ConfigError> {
    let cfg = Config::load(file, std::env::vars(), database_url)?;
    crate::outbox::validate(&cfg.outbox)?;
    Ok(cfg)
}

async fn relay_cmd(cfg: Config) -> anyhow::Result<()> {
    let shutdown = shutdown::Shutdown::new();
    let (_signals, _reload) =
        shutdown::install(shutdown.clone()).context("installing signal handlers")?;
    let (ready, _) = watch::channel(false);
    daemon::relay(cfg, shutdown, ready).await?;
    Ok(())
}

async fn status_cmd(cfg: &Config, args: &StatusArgs) -> anyhow::Result<()> {
    let client = connect(cfg).await?;
    migrate::check(&client).await?;
    let st = admin::status(&client, args.errors).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", st.render());
    }
    Ok(())
}

async fn requeue_cmd(cfg: &Config, args: &RequeueArgs) -> anyhow::Result<()> {
    let client = connect(cfg).await?;
    migrate::check(&client).await?;
    if let Some(id) = args.id {
        admin::requeue(&client, id).await?;
        println!("requeued version {id}");
    } else if let Some(event) = args.event {
        admin::requeue_event(&client, event).await?;
        println!("requeued outbox event {event}");
    } else {
        let n = admin::requeue_errored(&client, args.document.as_deref()).await?;
        match &args.document {
            Some(d) => println!("requeued {n} errored versions of {d}"),
            None => println!("requeued {n} errored versions"),
        }
    }
    Ok(())
}

async fn publish_cmd(cfg: &Config, args: &PublishArgs) -> anyhow::Result<()> {
    let recipe = match &args.recipe {
        Some(path) => Some(read_text(path)?),
        None => None,
    };
    let body = match &args.body {
        Some(path) => Some(read_text(path)?),
        None => None,
    };
    let client = connect(cfg).await?;
    migrate::check(&client).await?;
    let id = match (body, args.delete) {
        (Some(body), false) => {
            admin::publish(&client, &args.document, &body, recipe.as_deref()).await?
        }
        (None, true) => admin::delete(&client, &args.document).await?,
        _ => bail!("give exactly one of --body FILE and --delete"),
    };
    println!("{id}");
    Ok(())
}

/// `postpub bake-server`: serves bakes on stdin/stdout until stdin closes. `main` calls it
/// before starting the async runtime, whose threads would take from the memory limit.
pub fn bake_server(args: &BakeServerArgs) -> anyhow::Result<()> {
    crate::pipeline::collate::serve(args.max_memory_bytes).context("bake server")
}

/// `postpub bake`: runs without configuration, database or async runtime.
pub fn bake_cmd(args: &BakeArgs) -> anyhow::Result<()> {
    use crate::collate::{BakeOptions, Level, Recipe};
    let css = read_text(&args.recipe)?;
    let html = read_text(&args.input)?;
    let recipe = if args.strict {
        Recipe::parse_strict(&css)
    } else {
        Recipe::parse(&css)
    }
    .with_context(|| args.recipe.display().to_string())?;
    let opts = BakeOptions {
        repeatable_ids: args.repeatable_ids,
        ..BakeOptions::default()
    };
    let baked = recipe.bake_with(&html, &opts).with_context(|| {
        format!(
            "baking {} with {}",
            args.input.display(),
            args.recipe.display()
        )
    })?;
    // the reference's command line shows WARNING and above; INFO with --verbose here
    let shown = if args.quiet {
        None
    } else if args.verbose {
        Some(Level::Info)
    } else {
        Some(Level::Warning)
    };
    for w in &baked.warnings {
        if shown.is_some_and(|min| w.level >= min) {
            eprintln!("{}: {}: {w}", w.level.as_str(), args.recipe.display());
        }
    }
    match &args.output {
        Some(path) => std::fs::write(path, baked.html.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?,
        None => {
            use std::io::Write as _;
            std::io::stdout()
                .write_all(baked.html.as_bytes())
                .context("writing the baked document to stdout")?;
        }
    }
    Ok(())
}

/// Reads a UTF-8 text file ("-" = stdin), naming the file on failure.
pub fn read_text(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("reading standard input")?;
        return Ok(s);
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        let a = Cli::try_parse_from(["postpub", "--config", "x.toml", "run"]).expect("before");
        let b = Cli::try_parse_from(["postpub", "run", "--config", "x.toml"]).expect("after");
        assert_eq!(a.config, b.config);
        let c = Cli::try_parse_from(["postpub", "status", "--database-url", "postgres://h/d"])
            .expect("after");
        assert_eq!(c.database_url.as_deref(), Some("postgres://h/d"));
    }

    #[test]
    fn requeue_needs_exactly_one_target() {
        assert!(Cli::try_parse_from(["postpub", "requeue"]).is_err());
        assert!(Cli::try_parse_from(["postpub", "requeue", "--id", "3", "--errored"]).is_err());
        assert!(Cli::try_parse_from(["postpub", "requeue", "--document", "d"]).is_err());
        let e = "0b3c2f6e-8f0a-4c5e-9a51-2d3b8c1e7f00";
        assert!(Cli::try_parse_from(["postpub", "requeue", "--event", e]).is_ok());
        assert!(Cli::try_parse_from(["postpub", "requeue", "--event", e, "--id", "3"]).is_err());
        assert!(Cli::try_parse_from(["postpub", "requeue", "--event", "nope"]).is_err());
        assert!(
            Cli::try_parse_from(["postpub", "requeue", "--errored", "--document", "d"]).is_ok()
        );
    }

    #[test]
    fn publish_needs_a_body_or_delete() {
        assert!(Cli::try_parse_from(["postpub", "publish", "--document", "d"]).is_err());
        assert!(Cli::try_parse_from([
            "postpub",
            "publish",
            "--document",
            "d",
            "--delete",
            "--recipe",
            "r.css"
        ])
        .is_err());
        assert!(Cli::try_parse_from(["postpub", "publish", "--document", "d", "--delete"]).is_ok());
    }
}
