//! Configuration: the TOML file, `POSTPUB__SECTION__KEY` environment overrides, and the
//! database URL overrides (`DATABASE_URL`, then `--database-url`), in that order.
//!
//! Every key has a default so that an empty file (or none) is a valid configuration; the
//! defaults are the ones `config.example.toml` documents, and a test keeps the two in step.
//! Values are checked once here ([`Config::validate`]) so that the rest of the daemon can
//! trust them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default database URL (SPEC: *Names*).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@localhost:5432/postgres";

/// A configuration that could not be read or does not make sense. The CLI exits with 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` is missing or unreadable.
    #[error("cannot read config file {path}: {source}")]
    Unreadable {
        /// The path as given.
        path: PathBuf,
        /// Why the file could not be read.
        source: std::io::Error,
    },
    /// The file or the environment holds a value of the wrong type or an unknown key.
    #[error("invalid configuration{}: {message}", origin.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Invalid {
        /// The file the value came from, when there is one.
        origin: Option<PathBuf>,
        /// What the `config`/serde layer said, naming the key.
        message: String,
    },
    /// A value has the right type but cannot be used.
    #[error("invalid configuration: {key} {problem}")]
    Value {
        /// Dotted key, e.g. `worker.concurrency`.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// The whole configuration, one struct per TOML table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[database]`
    pub database: DatabaseConfig,
    /// `[worker]`
    pub worker: WorkerConfig,
    /// `[pipeline]`
    pub pipeline: PipelineConfig,
    /// `[http]`
    pub http: HttpConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[outbox]`
    pub outbox: OutboxConfig,
}

/// `[database]`: where the versions live.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Connection URL for the work pool.
    pub url: String,
    /// Direct connection for LISTEN when `url` goes through PgBouncer; empty = `url`.
    pub listen_url: String,
    /// Connections in the work pool.
    pub pool_size: usize,
    /// How long to wait for a new connection before calling the database unreachable.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_DATABASE_URL.to_owned(),
            listen_url: String::new(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl DatabaseConfig {
    /// The URL the LISTEN connection uses.
    pub fn listen_url(&self) -> &str {
        if self.listen_url.trim().is_empty() {
            &self.url
        } else {
            &self.listen_url
        }
    }
}

/// `[worker]`: how versions are claimed and retried.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Versions this daemon holds (claimed and not yet finished) at once.
    pub concurrency: usize,
    /// Versions claimed per claim statement (and finished per finish statement).
    pub batch_size: usize,
    /// A claimed version is rescued after this long without a renewal.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Fallback poll when no notification arrives.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Claims of one version before a transient failure becomes `errored`.
    pub max_attempts: u32,
    /// Retry delays after transient failures.
    pub backoff: BackoffConfig,
    /// How long in-flight work may take to finish after SIGTERM before it is released.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            batch_size: 64,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(5),
            max_attempts: 5,
            backoff: BackoffConfig::default(),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl WorkerConfig {
    /// How often expired leases are looked for (SPEC: at least every
    /// `min(poll_interval, lease / 2)`).
    pub fn rescue_interval(&self) -> Duration {
        self.poll_interval.min(self.lease / 2)
    }

    /// How often held leases are renewed: three chances before one expires.
    pub fn renew_interval(&self) -> Duration {
        self.lease / 3
    }
}

/// Exponential backoff bounds: `initial * 2^(attempt-1)`, capped at `max`, with jitter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// Delay after the first transient failure.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Longest delay.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(600),
        }
    }
}

/// `[pipeline]`: the steps every version goes through before it is published.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Step names, run in order, then the publish step.
    pub steps: Vec<String>,
    /// Bodies larger than this are errored without being loaded.
    pub max_body_bytes: u64,
    /// `[pipeline.command]`, used when `command` is one of the steps.
    pub command: CommandConfig,
    /// `[pipeline.collate]`, used when `collate` is one of the steps.
    pub collate: CollateConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            steps: vec!["validate".to_owned(), "collate".to_owned()],
            max_body_bytes: 32 * 1024 * 1024,
            command: CommandConfig::default(),
            collate: CollateConfig::default(),
        }
    }
}

/// `[pipeline.command]`: an external program as a step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CommandConfig {
    /// Program to run; the body arrives on stdin, the result is read from stdout.
    pub program: String,
    /// Arguments passed to it.
    pub args: Vec<String>,
    /// Killed (and retried as a transient failure) after this long.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// More output than this is a permanent failure (protects the daemon's memory).
    pub max_output_bytes: u64,
}

impl Default for CommandConfig {
    fn default() -> Self {
        Self {
            program: String::new(),
            args: Vec::new(),
            timeout: Duration::from_secs(300),
            max_output_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[pipeline.collate]`: the recipe baker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CollateConfig {
    /// Accept what cnx-easybake tolerates (unknown properties become warnings) instead
    /// of refusing the recipe. For existing easybake recipes.
    pub compat: bool,
    /// A bake taking longer than this fails (permanently: it would again).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for CollateConfig {
    fn default() -> Self {
        Self {
            compat: false,
            timeout: Duration::from_secs(120),
        }
    }
}

/// `[http]`: health, metrics and the read-only runtime API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on; empty disables the HTTP server.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9187".to_owned(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// A tracing filter (`info`, `postpub=debug`, …); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[outbox]`: delivery of published/deleted events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Delivered events are deleted after this long.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Step names the pipeline knows.
pub const STEP_NAMES: &[&str] = &["noop", "validate", "collate", "command"];

impl Config {
    /// Reads the configuration: defaults, then `file` (when given), then `POSTPUB__*`
    /// variables from `env`, then `DATABASE_URL`, then `database_url`.
    ///
    /// `env` is passed in (rather than read from the process) so tests can run in parallel.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        database_url: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            // Read it ourselves: a missing file must be named, and `config` would report
            // it in its own words.
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
                path: path.to_owned(),
                source,
            })?;
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        }
        let postpub_env: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("POSTPUB__"))
            .cloned()
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("POSTPUB")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("pipeline.steps")
                .with_list_parse_key("pipeline.command.args")
                .source(Some(postpub_env)),
        );
        let invalid = |e: config::ConfigError| ConfigError::Invalid {
            origin: file.map(Path::to_owned),
            message: e.to_string(),
        };
        let mut cfg: Config = builder
            .build()
            .map_err(invalid)?
            .try_deserialize()
            .map_err(invalid)?;
        if let Some((_, url)) = env.iter().find(|(k, _)| k == "DATABASE_URL") {
            if !url.is_empty() {
                cfg.database.url = url.clone();
            }
        }
        if let Some(url) = database_url {
            cfg.database.url = url.to_owned();
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, problem: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Value {
                key,
                problem: problem.into(),
            })
        }
        let w = &self.worker;
        if w.concurrency == 0 {
            return bad("worker.concurrency", "must be at least 1");
        }
        if !(1..=1000).contains(&w.batch_size) {
            return bad("worker.batch_size", "must be between 1 and 1000");
        }
        if w.lease < Duration::from_secs(1) {
            return bad("worker.lease", "must be at least 1s");
        }
        if w.poll_interval < Duration::from_millis(10) {
            return bad("worker.poll_interval", "must be at least 10ms");
        }
        if w.max_attempts == 0 {
            return bad("worker.max_attempts", "must be at least 1");
        }
        if w.backoff.initial > w.backoff.max {
            return bad(
                "worker.backoff.initial",
                "must not exceed worker.backoff.max",
            );
        }
        if self.database.pool_size < 2 {
            return bad(
                "database.pool_size",
                "must be at least 2 (claiming and finishing run side by side)",
            );
        }
        if self.database.url.trim().is_empty() {
            return bad("database.url", "must not be empty");
        }
        for step in &self.pipeline.steps {
            if !STEP_NAMES.contains(&step.as_str()) {
                return bad(
                    "pipeline.steps",
                    format!(
                        "names an unknown step {step:?} (known: {})",
                        STEP_NAMES.join(", ")
                    ),
                );
            }
        }
        let uses_command = self.pipeline.steps.iter().any(|s| s == "command");
        if uses_command && self.pipeline.command.program.trim().is_empty() {
            return bad(
                "pipeline.command.program",
                "must be set when the `command` step is listed in pipeline.steps",
            );
        }
        if self.pipeline.collate.timeout.is_zero() {
            return bad("pipeline.collate.timeout", "must be more than 0s");
        }
        if self.pipeline.command.timeout.is_zero() {
            return bad("pipeline.command.timeout", "must be more than 0s");
        }
        if let Err(e) = crate::logging::check_level(&self.log.level) {
            return bad("log.level", format!("is not a valid filter: {e}"));
        }
        if self.pipeline.max_body_bytes == 0 {
            return bad("pipeline.max_body_bytes", "must be more than 0");
        }
        let listen = self.http.listen.trim();
        if !listen.is_empty() && !is_host_port(listen) {
            return bad(
                "http.listen",
                format!(
                    "must be host:port (e.g. 127.0.0.1:9187) or \"\" to disable, not {listen:?}"
                ),
            );
        }
        Ok(())
    }
}

/// `ip:port`, `[ipv6]:port` or `name:port`.
fn is_host_port(s: &str) -> bool {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains(':') && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::new(text)
    }

    /// A tiny self-deleting temp file, enough for these tests.
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn new(text: &str) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "postpub-config-test-{}-{}.toml",
                    std::process::id(),
                    uuid::Uuid::new_v4()
                ));
                std::fs::write(&path, text).expect("write temp config");
                TempPath(path)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn no_file_gives_the_defaults() {
        let cfg = Config::load(None, env(&[]), None).expect("defaults load");
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.database.url, DEFAULT_DATABASE_URL);
    }

    #[test]
    fn example_config_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let cfg = Config::load(Some(&path), env(&[]), None).expect("example parses");
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn environment_overrides_file_and_url_overrides_everything() {
        let f = write("[worker]\nconcurrency = 2\n[database]\nurl = \"postgres://file/db\"\n");
        let cfg = Config::load(
            Some(&f.0),
            env(&[
                ("POSTPUB__WORKER__CONCURRENCY", "8"),
                ("POSTPUB__WORKER__LEASE", "1m"),
                ("POSTPUB__PIPELINE__STEPS", "noop,validate"),
                ("DATABASE_URL", "postgres://env/db"),
            ]),
            None,
        )
        .expect("loads");
        assert_eq!(cfg.worker.concurrency, 8);
        assert_eq!(cfg.worker.lease, Duration::from_secs(60));
        assert_eq!(cfg.pipeline.steps, vec!["noop", "validate"]);
        assert_eq!(cfg.database.url, "postgres://env/db");
        let cfg = Config::load(Some(&f.0), env(&[]), Some("postgres://flag/db")).expect("loads");
        assert_eq!(cfg.database.url, "postgres://flag/db");
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let f = write("[worker]\nconcurrency = \"lots\"\n");
        let err = Config::load(Some(&f.0), env(&[]), None).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("concurrency"), "{msg}");
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let f = write("[worker]\nconcurency = 3\n");
        let err = Config::load(Some(&f.0), env(&[]), None).expect_err("must fail");
        assert!(err.to_string().contains("concurency"), "{err}");
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let err = Config::load(Some(Path::new("/nonexistent/p.toml")), env(&[]), None)
            .expect_err("must fail");
        assert!(err.to_string().contains("/nonexistent/p.toml"), "{err}");
    }

    #[test]
    fn values_that_cannot_work_are_refused() {
        for (text, key) in [
            ("[worker]\nconcurrency = 0\n", "worker.concurrency"),
            ("[worker]\nbatch_size = 5000\n", "worker.batch_size"),
            ("[pipeline]\nsteps = [\"colate\"]\n", "pipeline.steps"),
            (
                "[pipeline]\nsteps = [\"command\"]\n",
                "pipeline.command.program",
            ),
            ("[worker]\nlease = \"10ms\"\n", "worker.lease"),
            ("[http]\nlisten = \"9187\"\n", "http.listen"),
            ("[http]\nlisten = \"localhost:http\"\n", "http.listen"),
        ] {
            let f = write(text);
            let err = Config::load(Some(&f.0), env(&[]), None).expect_err(text);
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn rescue_runs_at_least_every_half_lease() {
        let w = WorkerConfig {
            lease: Duration::from_secs(4),
            poll_interval: Duration::from_secs(5),
            ..WorkerConfig::default()
        };
        assert_eq!(w.rescue_interval(), Duration::from_secs(2));
    }
}
