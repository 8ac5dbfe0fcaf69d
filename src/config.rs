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

pub use crate::backoff::BackoffConfig;
pub use crate::logging::LogFormat;

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
    /// A key of one `[[outbox.sinks]]` table cannot be used (`outbox.sinks[1].url`).
    #[error("invalid configuration: {key} {problem}")]
    Sink {
        /// Dotted key with the sink's index.
        key: String,
        /// What is wrong with it.
        problem: String,
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
    /// `[console]`
    pub console: ConsoleConfig,
}

/// `[database]`: where the versions live.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Connection URL for the work pool.
    pub url: String,
    /// File holding the password for `url` (first line), when the URL has none; a
    /// relative path is looked up in systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredential=`)
    /// when set. Empty = none (then `PGPASSWORD`, then `~/.pgpass`, as libpq).
    pub password_file: String,
    /// Direct connection for LISTEN when `url` goes through PgBouncer; empty = `url`.
    pub listen_url: String,
    /// Password file for `listen_url`; empty = `password_file`.
    pub listen_password_file: String,
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
            password_file: String::new(),
            listen_url: String::new(),
            listen_password_file: String::new(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl DatabaseConfig {
    /// Checks the section: a URL the driver cannot read is a usage error (exit 2), not an
    /// unreachable database (exit 1); the message never shows a password.
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, problem: String| Err(ConfigError::Value { key, problem });
        if self.pool_size < 2 {
            return bad(
                "database.pool_size",
                "must be at least 2 (claiming and finishing run side by side)".to_owned(),
            );
        }
        if self.url.trim().is_empty() {
            return bad("database.url", "must not be empty".to_owned());
        }
        for (key, url) in [
            ("database.url", self.url.as_str()),
            ("database.listen_url", self.listen_url.as_str()),
        ] {
            if key == "database.listen_url" && url.trim().is_empty() {
                continue;
            }
            if let Err(e) = crate::conninfo::parse(url) {
                return bad(
                    key,
                    format!("is not a PostgreSQL connection URL ({e}): {}", redact(url)),
                );
            }
        }
        let credentials = std::env::var("CREDENTIALS_DIRECTORY").ok();
        for (key, file) in [
            ("database.password_file", &self.password_file),
            ("database.listen_password_file", &self.listen_password_file),
        ] {
            if file.trim().is_empty() {
                continue;
            }
            let path = crate::conninfo::credential_path(Path::new(file), credentials.as_deref());
            // Readable now, so a typo is a usage error; read again at each connect.
            if let Err(e) = std::fs::File::open(&path) {
                return bad(key, format!("cannot be read: {}: {e}", path.display()));
            }
        }
        Ok(())
    }

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
    /// Refuse a recipe where cnx-easybake would only warn (unknown property,
    /// pseudo-element, …), naming the line and rule. Off by default: recipes are read
    /// as cnx-easybake reads them, and what it tolerates is a warning kept with the
    /// version.
    pub strict: bool,
    /// No longer used: the cnx-easybake-compatible reading it asked for is the default.
    /// Still accepted so that existing configuration files keep loading.
    #[serde(skip_serializing)]
    pub compat: bool,
    /// A bake taking longer than this fails (permanently: it would again); the bake
    /// process running it is killed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Address space of each bake process (`RLIMIT_AS`). A bake that needs more fails
    /// alone, with a message naming this key; the daemon and other bakes go on.
    pub max_memory_bytes: u64,
    /// The largest body a bake accepts.
    pub max_input_bytes: u64,
    /// What one bake may build, each as this many times its input's (nodes, bytes of text
    /// the recipe creates, bytes of output) plus the allowance below: a recipe that would
    /// grow past it fails at once, naming the rule and the limit, instead of exhausting
    /// the daemon's memory. Recipes legitimately copy content (contents, indexes).
    pub growth_factor: u64,
    /// … plus this many nodes,
    pub max_nodes_extra: u64,
    /// … this many bytes of text created by the recipe,
    pub max_text_extra_bytes: u64,
    /// … and this many bytes of output.
    pub max_output_extra_bytes: u64,
}

impl Default for CollateConfig {
    fn default() -> Self {
        let limits = crate::collate::Limits::default();
        Self {
            strict: false,
            compat: false,
            timeout: Duration::from_secs(120),
            max_memory_bytes: 1 << 30,
            max_input_bytes: limits.max_input_bytes as u64,
            growth_factor: limits.max_nodes_factor as u64,
            max_nodes_extra: limits.max_nodes_extra as u64,
            max_text_extra_bytes: limits.max_text_extra as u64,
            max_output_extra_bytes: limits.max_output_extra as u64,
        }
    }
}

impl CollateConfig {
    /// The baker's limits for one bake under this configuration.
    pub fn limits(&self) -> crate::collate::Limits {
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        crate::collate::Limits {
            max_input_bytes: size(self.max_input_bytes),
            max_nodes_factor: size(self.growth_factor),
            max_nodes_extra: size(self.max_nodes_extra),
            max_text_factor: size(self.growth_factor),
            max_text_extra: size(self.max_text_extra_bytes),
            max_output_factor: size(self.growth_factor),
            max_output_extra: size(self.max_output_extra_bytes),
            max_duration: Some(self.timeout),
            ..crate::collate::Limits::default()
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

/// `[console]`: the operator console at `/console` on the HTTP server. On a loopback
/// `http.listen` it needs no credentials (unless some are set); elsewhere it refuses to
/// start without them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console (with the HTTP server).
    pub enabled: bool,
    /// A bearer token (or Basic password, any user name) with operator access; "" for none.
    pub operator_token: String,
    /// A bearer token (or Basic password) with read-only access; "" for none.
    pub read_token: String,
    /// People with a password (Basic authentication).
    pub users: Vec<ConsoleUser>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            operator_token: String::new(),
            read_token: String::new(),
            users: Vec::new(),
        }
    }
}

impl ConsoleConfig {
    /// Whether any credentials are configured (then every request must carry them).
    pub fn has_credentials(&self) -> bool {
        !self.operator_token.is_empty() || !self.read_token.is_empty() || !self.users.is_empty()
    }
}

/// One `[[console.users]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleUser {
    /// The login name.
    pub name: String,
    /// An Argon2 PHC string (`postpub hash-password` prints one).
    pub password_hash: String,
    /// `read-only` or `operator`.
    pub role: ConsoleRole,
}

/// What a console user may do.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum ConsoleRole {
    /// Read every page.
    ReadOnly,
    /// Read, and requeue.
    Operator,
}

/// Whether `listen` (host:port) names a loopback address only.
pub fn is_loopback_listen(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        return addr.ip().is_loopback();
    }
    matches!(listen.rsplit_once(':'), Some(("localhost", _)))
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

/// `[outbox]`: delivery of published/deleted events by the relay.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Events delivered to every sink are deleted after this long.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Events the relay claims per round, spread over the documents that have some.
    pub batch_size: usize,
    /// Retry delays after a failed delivery, per event and sink.
    pub backoff: BackoffConfig,
    /// `[[outbox.sinks]]`: where events go. None: events stay in `postpub.outbox`.
    pub sinks: Vec<SinkConfig>,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 3600),
            batch_size: 256,
            backoff: BackoffConfig {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
            sinks: Vec::new(),
        }
    }
}

impl OutboxConfig {
    /// The name each sink's deliveries are tracked under: its `name`, else `kind-index`.
    pub fn sink_names(&self) -> Vec<String> {
        self.sinks
            .iter()
            .enumerate()
            .map(|(i, s)| match s.name() {
                "" => format!("{}-{i}", s.kind()),
                name => name.to_owned(),
            })
            .collect()
    }
}

/// One `[[outbox.sinks]]` table, told apart by its `kind`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SinkConfig {
    /// `kind = "nats"`: NATS JetStream.
    Nats(NatsSinkConfig),
    /// `kind = "webhook"`: HTTP POST.
    Webhook(WebhookSinkConfig),
    /// `kind = "kafka"`: a Kafka topic.
    Kafka(KafkaSinkConfig),
    /// `kind = "amqp"`: a RabbitMQ exchange.
    Amqp(AmqpSinkConfig),
}

impl SinkConfig {
    /// The `kind` key.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Nats(_) => "nats",
            SinkConfig::Webhook(_) => "webhook",
            SinkConfig::Kafka(_) => "kafka",
            SinkConfig::Amqp(_) => "amqp",
        }
    }

    /// The `name` key as written ("" when absent).
    pub fn name(&self) -> &str {
        match self {
            SinkConfig::Nats(s) => &s.name,
            SinkConfig::Webhook(s) => &s.name,
            SinkConfig::Kafka(s) => &s.name,
            SinkConfig::Amqp(s) => &s.name,
        }
    }

    /// Whether this sink's events carry the version's content.
    pub fn include_body(&self) -> bool {
        match self {
            SinkConfig::Nats(s) => s.include_body,
            SinkConfig::Webhook(s) => s.include_body,
            SinkConfig::Kafka(s) => s.include_body,
            SinkConfig::Amqp(s) => s.include_body,
        }
    }
}

/// A NATS JetStream sink: each event is published with `Nats-Msg-Id` = its event id and
/// counts as delivered once the stream acknowledged it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Name deliveries are tracked under; "" = `nats-<index>`.
    pub name: String,
    /// Server URL(s), comma-separated: `nats://127.0.0.1:4222`.
    pub url: String,
    /// JetStream stream the subjects belong to.
    pub stream: String,
    /// Subject template: `{kind}`, `{document}` (escaped) and `{version}` are replaced.
    pub subject: String,
    /// Create the stream (subjects: the template's literal prefix + `.>`) when missing.
    pub create_stream: bool,
    /// Duplicate window of a stream this sink creates.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long to wait for the stream's acknowledgement (or a lost connection to return).
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Add the version's content (`body`) to the event JSON.
    pub include_body: bool,
    /// A `.creds` file (user JWT and NKey seed, as `nsc` writes them) to authenticate with.
    /// User/password and token authentication go in the URL (`nats://user:pass@host`).
    pub credentials_file: Option<PathBuf>,
    /// A file holding an NKey user seed (`SU…`) to authenticate with.
    pub nkey_seed_file: Option<PathBuf>,
    /// Refuse a connection that is not TLS (also implied by a `tls://` URL).
    pub tls_required: bool,
    /// PEM file of the CA(s) that signed the server's certificate (else the system roots).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for servers that verify clients (`verify: true`).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

impl Default for NatsSinkConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            stream: "POSTPUB".to_owned(),
            subject: "postpub.{kind}.{document}".to_owned(),
            create_stream: true,
            duplicate_window: Duration::from_secs(3600),
            ack_timeout: Duration::from_secs(5),
            include_body: false,
            credentials_file: None,
            nkey_seed_file: None,
            tls_required: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// An HTTP webhook sink: each event is POSTed as JSON with `Idempotency-Key: <event_id>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// Name deliveries are tracked under; "" = `webhook-<index>`.
    pub name: String,
    /// `http://` or `https://` URL to POST to.
    pub url: String,
    /// When set, `X-Postpub-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    pub secret: Option<String>,
    /// A request taking longer fails (transiently) and is retried.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Add the version's content (`body`) to the event JSON.
    pub include_body: bool,
}

impl Default for WebhookSinkConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            secret: None,
            timeout: Duration::from_secs(10),
            concurrency: 8,
            include_body: false,
        }
    }
}

/// A Kafka sink (`kind = "kafka"`): key = document, value = the event JSON, headers
/// `event_id` and `kind`; delivered once the broker acknowledged it. Checked by
/// `outbox::kafka::validate`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Name deliveries are tracked under; "" = `kafka-<index>`.
    pub name: String,
    /// Bootstrap brokers, comma-separated `host:port`.
    pub brokers: String,
    /// Topic template; `{kind}` becomes `published` or `deleted`.
    pub topic: String,
    /// How long a send may wait for the broker's acknowledgement (librdkafka's
    /// `message.timeout.ms`, retries included) before it fails and is retried later.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Largest message produced (librdkafka's `message.max.bytes`); keep it at or below the
    /// broker's `message.max.bytes`. A larger event is parked.
    pub max_message_bytes: usize,
    /// Add the version's content (`body`) to the event JSON.
    pub include_body: bool,
    /// Connect with TLS (also implied by `tls_ca_file`).
    pub tls: bool,
    /// PEM file of the CA(s) that signed the brokers' certificates (else the system roots).
    pub tls_ca_file: Option<PathBuf>,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; needs `sasl_credentials_file`.
    pub sasl_mechanism: Option<String>,
    /// A file of two lines: the user name, then the password.
    pub sasl_credentials_file: Option<PathBuf>,
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            brokers: String::new(),
            topic: "postpub".to_owned(),
            ack_timeout: Duration::from_secs(10),
            max_message_bytes: 1_000_000,
            include_body: false,
            tls: false,
            tls_ca_file: None,
            sasl_mechanism: None,
            sasl_credentials_file: None,
        }
    }
}

/// An AMQP (RabbitMQ) sink (`kind = "amqp"`): persistent, mandatory messages with
/// `message_id` = event id, delivered once the broker confirmed them. Checked by
/// `outbox::amqp::validate`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpSinkConfig {
    /// Name deliveries are tracked under; "" = `amqp-<index>`.
    pub name: String,
    /// `amqp://user:password@host:5672/vhost` (`%2f` for `/`) or `amqps://…`.
    pub url: String,
    /// Exchange template; `{kind}` is replaced.
    pub exchange: String,
    /// Routing key template; `{kind}`, `{document}` (escaped) and `{version}` are replaced.
    pub routing_key: String,
    /// Declare a durable topic exchange and a durable queue bound to it with `#`.
    pub declare: bool,
    /// The queue `declare` creates.
    pub queue: String,
    /// How long to wait for a connection or a confirm before the attempt fails.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Largest message sent (RabbitMQ's default `max_message_size` is 128 MiB); a larger
    /// event is parked.
    pub max_message_bytes: usize,
    /// Add the version's content (`body`) to the event JSON.
    pub include_body: bool,
    /// PEM file of the CA(s) that signed the broker's certificate, for `amqps://`.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for AmqpSinkConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            exchange: "postpub".to_owned(),
            routing_key: "{kind}.{document}".to_owned(),
            declare: false,
            queue: "postpub".to_owned(),
            ack_timeout: Duration::from_secs(10),
            max_message_bytes: 128 << 20,
            include_body: false,
            tls_ca_file: None,
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
        self.validate_durations()?;
        let w = &self.worker;
        if w.concurrency == 0 {
            return bad("worker.concurrency", "must be at least 1");
        }
        if !(1..=1000).contains(&w.batch_size) {
            return bad("worker.batch_size", "must be between 1 and 1000");
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
        self.database.validate()?;
        self.validate_pipeline()?;
        if let Err(e) = crate::logging::check_level(&self.log.level) {
            let reason = match e {
                crate::logging::LevelError::Invalid { reason, .. } => reason,
                other => other.to_string(),
            };
            return bad("log.level", format!("is not a valid filter: {reason}"));
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
        self.validate_console()?;
        self.validate_outbox()
    }

    /// Credentials are well-formed, and present when the console is reachable from
    /// elsewhere than this machine.
    fn validate_console(&self) -> Result<(), ConfigError> {
        let c = &self.console;
        let listen = self.http.listen.trim();
        if !c.enabled || listen.is_empty() {
            return Ok(());
        }
        for (key, token) in [
            ("console.operator_token", &c.operator_token),
            ("console.read_token", &c.read_token),
        ] {
            if !token.is_empty() && token.chars().count() < 16 {
                return Err(ConfigError::Value {
                    key,
                    problem: "must be at least 16 characters (or \"\" for none)".to_owned(),
                });
            }
        }
        for (i, u) in c.users.iter().enumerate() {
            let problem = if u.name.is_empty() || u.name.contains(':') {
                Some("name must be non-empty and without ':'".to_owned())
            } else {
                argon2::PasswordHash::new(&u.password_hash).err().map(|e| {
                    format!("password_hash is not a PHC string ({e}); make one with `postpub hash-password`")
                })
            };
            if let Some(problem) = problem {
                return Err(ConfigError::Sink {
                    key: format!("console.users[{i}]"),
                    problem,
                });
            }
        }
        if !is_loopback_listen(listen) && !c.has_credentials() {
            return Err(ConfigError::Value {
                key: "console",
                problem: format!(
                    "needs credentials because http.listen {listen:?} is not a loopback address: set console.operator_token, console.read_token or [[console.users]], or console.enabled = false"
                ),
            });
        }
        Ok(())
    }

    /// Checks `[pipeline]`: known step names, what the listed steps need.
    fn validate_pipeline(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, problem: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Value {
                key,
                problem: problem.into(),
            })
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
        if self.pipeline.collate.max_memory_bytes < MIN_BAKE_MEMORY_BYTES {
            return bad(
                "pipeline.collate.max_memory_bytes",
                format!("must be at least {MIN_BAKE_MEMORY_BYTES} (64 MiB: the bake process itself needs some)"),
            );
        }
        if self.pipeline.collate.timeout.is_zero() {
            return bad("pipeline.collate.timeout", "must be more than 0s");
        }
        if self.pipeline.collate.max_input_bytes == 0 {
            return bad("pipeline.collate.max_input_bytes", "must be more than 0");
        }
        if !(1..=10_000).contains(&self.pipeline.collate.growth_factor) {
            return bad(
                "pipeline.collate.growth_factor",
                "must be between 1 and 10000",
            );
        }
        if self.pipeline.command.timeout.is_zero() {
            return bad("pipeline.command.timeout", "must be more than 0s");
        }
        Ok(())
    }

    /// Bounds every duration key. A duration must fit what it is used for: PostgreSQL
    /// intervals (leases, retry delays, retention) and tokio timers take far less than a
    /// `u64` of seconds, and `lease = "200000000years"` would start and then fail every
    /// claim. The maxima are generous for what each key does, and far inside both.
    fn validate_durations(&self) -> Result<(), ConfigError> {
        let (w, p, o) = (&self.worker, &self.pipeline, &self.outbox);
        let zero = Duration::ZERO;
        let ms = Duration::from_millis;
        for (key, value, min, max) in [
            (
                "database.connect_timeout",
                self.database.connect_timeout,
                ms(1),
                HOUR,
            ),
            ("worker.lease", w.lease, SECOND, DAY),
            ("worker.poll_interval", w.poll_interval, ms(10), DAY),
            (
                "worker.backoff.initial",
                w.backoff.initial,
                zero,
                MAX_BACKOFF,
            ),
            ("worker.backoff.max", w.backoff.max, zero, MAX_BACKOFF),
            ("worker.shutdown_timeout", w.shutdown_timeout, zero, DAY),
            ("pipeline.command.timeout", p.command.timeout, ms(1), DAY),
            ("pipeline.collate.timeout", p.collate.timeout, ms(1), DAY),
            ("outbox.retention", o.retention, SECOND, MAX_RETENTION),
            (
                "outbox.backoff.initial",
                o.backoff.initial,
                ms(1),
                MAX_BACKOFF,
            ),
            ("outbox.backoff.max", o.backoff.max, ms(1), MAX_BACKOFF),
        ] {
            if let Some(problem) = out_of_bounds(value, min, max) {
                return Err(ConfigError::Value { key, problem });
            }
        }
        Ok(())
    }

    /// Checks `[outbox]` and what every `[[outbox.sinks]]` table shares (its name); each
    /// sink's own keys are checked by its sink (`outbox::validate`). Messages name the sink
    /// by index.
    fn validate_outbox(&self) -> Result<(), ConfigError> {
        fn bad(key: String, problem: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Sink {
                key,
                problem: problem.into(),
            })
        }
        let o = &self.outbox;
        if !(1..=10_000).contains(&o.batch_size) {
            return bad("outbox.batch_size".into(), "must be between 1 and 10000");
        }
        if o.backoff.initial.is_zero() || o.backoff.initial > o.backoff.max {
            return bad(
                "outbox.backoff.initial".into(),
                "must be more than 0s and not exceed outbox.backoff.max",
            );
        }
        let names = o.sink_names();
        for (i, name) in names.iter().enumerate() {
            let key = |k: &str| format!("outbox.sinks[{i}].{k}");
            let name_ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !name_ok {
                return bad(
                    key("name"),
                    "must be 1 to 64 characters of letters, digits, '-', '_' or '.'",
                );
            }
            if names[..i].contains(name) {
                return bad(
                    key("name"),
                    format!("{name:?} is already the name of another sink (names must be unique)"),
                );
            }
        }
        Ok(())
    }
}

const SECOND: Duration = Duration::from_secs(1);
pub const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
/// Longest retry delay or duplicate window: 30 days.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest outbox retention: 10 years of 365 days.
const MAX_RETENTION: Duration = Duration::from_secs(3650 * 24 * 3600);
/// Smallest `pipeline.collate.max_memory_bytes`: the bake process maps its own binary and
/// libraries before it bakes anything.
pub const MIN_BAKE_MEMORY_BYTES: u64 = 64 << 20;

/// Why `value` is outside `min..=max`, as the end of a message naming its key.
pub fn out_of_bounds(value: Duration, min: Duration, max: Duration) -> Option<String> {
    let show = |d: Duration| humantime::format_duration(d).to_string();
    if value > max {
        Some(format!(
            "must be at most {}, not {}",
            show(max),
            show(value)
        ))
    } else if value < min {
        Some(if min == Duration::from_millis(1) {
            "must be more than 0s".to_owned()
        } else {
            format!("must be at least {}, not {}", show(min), show(value))
        })
    } else {
        None
    }
}

/// A database URL (or `key=value` connection string) with any password replaced, for
/// messages and logs.
pub fn redact(url: &str) -> String {
    if !url.contains("://") {
        // key=value form: hide the value of `password` (quoted or not) and what follows.
        return match url.find("password") {
            Some(at) => format!("{}password=***", &url[..at]),
            None => url.to_owned(),
        };
    }
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
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
pub(crate) mod tests {
    use super::*;

    pub(crate) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub(crate) fn write(text: &str) -> tempfile_path::TempPath {
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
    fn durations_beyond_reason_are_refused_naming_the_key() {
        for (text, key) in [
            ("[worker]\nlease = \"200000000years\"\n", "worker.lease must be at most 1day"),
            ("[worker]\npoll_interval = \"400days\"\n", "worker.poll_interval"),
            ("[worker]\nshutdown_timeout = \"2days\"\n", "worker.shutdown_timeout"),
            (
                "[worker]\nbackoff = { initial = \"1s\", max = \"5000years\" }\n",
                "worker.backoff.max",
            ),
            (
                "[worker]\nbackoff = { initial = \"100years\", max = \"200years\" }\n",
                "worker.backoff.initial",
            ),
            ("[database]\nconnect_timeout = \"1year\"\n", "database.connect_timeout"),
            ("[pipeline.collate]\ntimeout = \"0s\"\n", "pipeline.collate.timeout must be more than 0s"),
            ("[pipeline.command]\ntimeout = \"90days\"\n", "pipeline.command.timeout"),
            ("[outbox]\nretention = \"20000days\"\n", "outbox.retention"),
            (
                "[outbox]\nbackoff = { initial = \"1s\", max = \"1000years\" }\n",
                "outbox.backoff.max",
            ),
            (
                "[[outbox.sinks]]\nkind = \"webhook\"\nurl = \"http://h/\"\ntimeout = \"3days\"\n",
                "outbox.sinks[0].timeout",
            ),
            (
                "[[outbox.sinks]]\nkind = \"nats\"\nurl = \"nats://h:4222\"\nduplicate_window = \"1000years\"\n",
                "outbox.sinks[0].duplicate_window",
            ),
        ] {
            let f = write(text);
            // Sink keys are checked by their sinks (outbox::validate).
            let err = Config::load(Some(&f.0), env(&[]), None)
                .and_then(|c| crate::outbox::validate(&c.outbox))
                .expect_err(text);
            let msg = err.to_string();
            assert!(msg.contains(key), "{text}: {msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
        // The bounds themselves are accepted.
        let f = write(
            "[worker]\nlease = \"1day\"\nbackoff = { initial = \"30days\", max = \"30days\" }\n[outbox]\nretention = \"3650days\"\n",
        );
        Config::load(Some(&f.0), env(&[]), None).expect("bounds are inclusive");
    }

    #[test]
    fn a_malformed_database_url_is_a_configuration_error_without_the_password() {
        for url in [
            "garbage",
            "postgres://u:secret@h:notaport/db",
            "postgres://h/db?sslmode=bogus",
            "host=h password=secret port=notaport",
            "host=h password='se cret' bogus",
        ] {
            let err = Config::load(None, env(&[]), Some(url)).expect_err(url);
            let msg = err.to_string();
            assert!(msg.contains("database.url"), "{url}: {msg}");
            assert!(!msg.contains("secret"), "{url}: {msg}");
        }
        let err = Config::load(
            None,
            env(&[("POSTPUB__DATABASE__LISTEN_URL", "nonsense")]),
            None,
        )
        .expect_err("listen_url");
        assert!(err.to_string().contains("database.listen_url"), "{err}");
        Config::load(None, env(&[]), Some("host=/tmp dbname=x")).expect("key=value form");
    }

    #[test]
    fn sinks_parse_with_their_defaults_and_names() {
        let f = write(
            r#"
[[outbox.sinks]]
kind = "nats"
url = "nats://127.0.0.1:4222"

[[outbox.sinks]]
kind = "webhook"
name = "indexer"
url = "http://127.0.0.1:8080/hook"
secret = "s3cret"
timeout = "2s"
include_body = true
"#,
        );
        let cfg = Config::load(Some(&f.0), env(&[]), None).expect("loads");
        assert_eq!(cfg.outbox.sink_names(), vec!["nats-0", "indexer"]);
        match &cfg.outbox.sinks[0] {
            SinkConfig::Nats(n) => {
                assert_eq!(n.stream, "POSTPUB");
                assert_eq!(n.subject, "postpub.{kind}.{document}");
                assert!(n.create_stream);
                assert!(!n.include_body);
            }
            other => panic!("expected nats, got {other:?}"),
        }
        match &cfg.outbox.sinks[1] {
            SinkConfig::Webhook(w) => {
                assert_eq!(w.secret.as_deref(), Some("s3cret"));
                assert_eq!(w.timeout, Duration::from_secs(2));
                assert!(w.include_body);
            }
            other => panic!("expected webhook, got {other:?}"),
        }
    }

    #[test]
    fn the_commented_sink_examples_parse() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml"),
        )
        .expect("example readable");
        // Uncomment the example sink tables (lines right after "# [[outbox.sinks]]").
        let mut out = String::new();
        let mut in_sink = false;
        for line in text.lines() {
            if line.trim() == "# [[outbox.sinks]]" {
                in_sink = true;
            } else if !line.starts_with("# ") || line.trim().is_empty() {
                in_sink = false;
            }
            match line.strip_prefix("# ") {
                Some(l) if in_sink => out.push_str(l),
                _ => out.push_str(line),
            }
            out.push('\n');
        }
        let f = write(&out);
        let cfg = Config::load(Some(&f.0), env(&[]), None).expect("examples parse");
        let kinds: Vec<&str> = cfg.outbox.sinks.iter().map(SinkConfig::kind).collect();
        assert_eq!(kinds, ["nats", "webhook", "kafka", "amqp"]);
        assert_eq!(
            cfg.outbox.sinks[0],
            SinkConfig::Nats(NatsSinkConfig {
                url: "nats://127.0.0.1:4222".into(),
                ..NatsSinkConfig::default()
            }),
            "the nats example shows the defaults"
        );
        assert_eq!(
            cfg.outbox.sinks[2],
            SinkConfig::Kafka(KafkaSinkConfig {
                brokers: "127.0.0.1:9092".into(),
                ..KafkaSinkConfig::default()
            }),
            "the kafka example shows the defaults"
        );
        assert_eq!(
            cfg.outbox.sinks[3],
            SinkConfig::Amqp(AmqpSinkConfig {
                url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
                ..AmqpSinkConfig::default()
            }),
            "the amqp example shows the defaults"
        );
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
