//! Database access: connection settings, the work pool, typed errors and the `State`
//! mapping. Which statements run lives in [`sql`]; schema changes in [`migrate`].
//!
//! Everything that decides what happens to a version is SQL (`sql/`); this module only
//! connects, and sorts failures into "try again" and "give up" ([`classify`]).

pub mod endpoint;
pub mod migrate;
pub mod row;
pub mod sql;
pub mod tls;

pub use endpoint::{Endpoint, Spec};

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use deadpool_postgres::{ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::config::DatabaseConfig;
use crate::conninfo;

/// Failures talking to PostgreSQL, each naming what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL does not parse.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// A connection could not be opened.
    #[error("cannot connect to the database at {target}: {}", describe(error))]
    Connect {
        /// host:port/dbname of the attempt (no password).
        target: String,
        /// The driver's reason (part of the message, so not a separate `source`).
        error: tokio_postgres::Error,
    },
    /// TLS could not be set up (a certificate file) or the server's certificate was refused.
    #[error("cannot connect to the database at {target}: {error}")]
    Tls {
        /// host:port/dbname of the attempt.
        target: String,
        /// What went wrong, naming the setting.
        error: tls::Error,
    },
    /// `database.password_file` (or `listen_password_file`) cannot be used.
    #[error("cannot read the database password file {path}: {reason}")]
    PasswordFile {
        /// The file, after the credentials directory was applied.
        path: String,
        /// Why (never its content).
        reason: String,
    },
    /// The pool could not hand out a connection.
    #[error("cannot connect to the database at {target}: {reason}")]
    Pool {
        /// host:port/dbname of the pool (no password).
        target: String,
        /// The pool's reason, in one line.
        reason: String,
    },
    /// A statement failed.
    #[error("{what}: {}", describe(error))]
    Query {
        /// What the statement was for.
        what: Cow<'static, str>,
        /// The driver's error (part of the message, so not a separate `source`).
        error: tokio_postgres::Error,
    },
    /// The database has not been migrated far enough for this binary.
    #[error("database schema postpub is at version {found}, this postpub needs {need}: run `postpub migrate`")]
    NotMigrated {
        /// Schema version found (0 = not migrated at all).
        found: i32,
        /// Schema version this binary was built for.
        need: i32,
    },
    /// A result had another shape than this binary expects (the SQL and the binary
    /// disagree).
    #[error("{what}: {reason}")]
    Shape {
        /// What the statement was for.
        what: &'static str,
        /// What did not fit.
        reason: String,
    },
    /// The database was migrated by a newer postpub.
    #[error("database schema postpub is at version {found}, newer than this postpub knows ({need}): upgrade the binary")]
    TooNew {
        /// Schema version found.
        found: i32,
        /// Schema version this binary was built for.
        need: i32,
    },
}

impl Error {
    /// Wraps a statement failure with what it was for.
    pub fn query(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |error| Error::Query {
            what: Cow::Borrowed(what),
            error,
        }
    }

    /// The SQLSTATE of a statement the server refused.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Query { error, .. } => error.code().map(|c| c.code()),
            _ => None,
        }
    }

    /// Whether the failure is the session's rather than the statement's: the connection
    /// was lost or shut down by an administrator, or the session cannot write (read-only:
    /// `default_transaction_read_only`, a standby after a failover). Retrying on the same
    /// session cannot help; a new one picks up the server's current settings.
    pub fn is_session_state(&self) -> bool {
        let Error::Query { error, .. } = self else {
            return false;
        };
        match error.code() {
            // No SQLSTATE: I/O, a closed connection, a timeout.
            None => true,
            Some(code) => {
                let c = code.code();
                c.starts_with("08") // connection exception
                    || c.starts_with("57P") // admin/crash shutdown, cannot connect now
                    || *code == SqlState::READ_ONLY_SQL_TRANSACTION
                    || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
            }
        }
    }

    /// Whether retrying the same thing later can succeed.
    pub fn class(&self) -> Class {
        match self {
            Error::InvalidUrl(_)
            | Error::NotMigrated { .. }
            | Error::TooNew { .. }
            | Error::Shape { .. } => Class::Permanent,
            // A certificate or password file may be fixed while the daemon waits.
            Error::Connect { .. }
            | Error::Pool { .. }
            | Error::Tls { .. }
            | Error::PasswordFile { .. } => Class::Transient,
            Error::Query { error, .. } => classify(error),
        }
    }
}

/// One readable line for a driver error: the server's message (with detail) when there is
/// one, the I/O cause otherwise; for the refusals an operator meets when first connecting
/// (the server insists on TLS, no password), what to change.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            s.push_str(": ");
            s.push_str(detail);
        }
        if *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            && db.message().ends_with("no encryption")
        {
            s.push_str(": the server accepts only TLS connections from here; connect with sslmode=require or stronger, not sslmode=disable");
        }
        return s;
    }
    let s = e.to_string();
    let s = match std::error::Error::source(e).map(|c| c.to_string()) {
        Some(cause) if !s.contains(&cause) => format!("{s}: {cause}"),
        _ => s,
    };
    if s.contains("password missing") {
        format!("{s}: the server asks for a password; give it in the URL, database.password_file, PGPASSWORD or ~/.pgpass")
    } else if s.contains("server does not support TLS") {
        format!("{s}, and the sslmode asks for TLS (sslmode=prefer takes a plain connection)")
    } else {
        s
    }
}

/// Whether a failure is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Connection loss, server shutdown, deadlock, serialization failure, read-only or full
    /// database: the same statement may succeed later.
    Transient,
    /// Anything else: retrying the same statement gives the same error.
    Permanent,
}

/// Sorts driver errors by SQLSTATE (STYLE §3: one function does this).
pub fn classify(e: &tokio_postgres::Error) -> Class {
    let Some(code) = e.code() else {
        // No SQLSTATE: I/O, closed connection, timeouts.
        return Class::Transient;
    };
    let c = code.code();
    if c.starts_with("08") // connection exception
        || c.starts_with("53") // insufficient resources (disk full, out of memory)
        || c.starts_with("57") // operator intervention (admin shutdown, cancel)
        || c.starts_with("58") // system error (I/O)
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::CANNOT_CONNECT_NOW
    {
        Class::Transient
    } else {
        Class::Permanent
    }
}

/// Parses a database URL into driver settings with our connection defaults (no TLS, no
/// password lookup: [`Spec::resolve`] adds those).
pub fn pg_config(url: &str, connect_timeout: Duration) -> Result<tokio_postgres::Config, Error> {
    let mut cfg = conninfo::parse(url)
        .map_err(|e| Error::InvalidUrl(format!("{e} (in {})", redact(url))))?
        .driver;
    connection_defaults(&mut cfg, connect_timeout);
    Ok(cfg)
}

/// Our defaults where the URL says nothing: the application name, the connect timeout,
/// keepalives.
fn connection_defaults(cfg: &mut tokio_postgres::Config, connect_timeout: Duration) {
    if cfg.get_application_name().is_none() {
        cfg.application_name("postpub");
    }
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(connect_timeout);
    }
    // Detect a dead peer (server host gone, network stall) in tens of seconds, not hours.
    cfg.keepalives(true);
    cfg.keepalives_idle(Duration::from_secs(10));
    cfg.keepalives_interval(Duration::from_secs(5));
    cfg.keepalives_retries(3);
}

/// `host:port/dbname` of a connection, for messages; never includes a password.
pub fn target(cfg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let db = cfg
        .get_dbname()
        .or(cfg.get_user())
        .unwrap_or("postgres")
        .to_owned();
    format!("{host}:{port}/{db}")
}

pub use crate::config::redact;

/// The same server, credentials and TLS settings with another database name, as a
/// key=value connection string (the demo, the bench and tests create their own databases).
pub fn url_with_database(url: &str, dbname: &str) -> Result<String, Error> {
    use conninfo::quote;
    use tokio_postgres::config::Host;
    let split =
        conninfo::parse(url).map_err(|e| Error::InvalidUrl(format!("{e} (in {})", redact(url))))?;
    let cfg = split.driver;
    let mut parts = Vec::new();
    let hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    if !hosts.is_empty() {
        parts.push(format!("host={}", quote(&hosts.join(","))));
    }
    let ports: Vec<String> = cfg.get_ports().iter().map(|p| p.to_string()).collect();
    if !ports.is_empty() {
        parts.push(format!("port={}", quote(&ports.join(","))));
    }
    if let Some(user) = cfg.get_user() {
        parts.push(format!("user={}", quote(user)));
    }
    if let Some(pw) = cfg.get_password() {
        parts.push(format!("password={}", quote(&String::from_utf8_lossy(pw))));
    }
    parts.push(format!("dbname={}", quote(dbname)));
    parts.extend(split.params.to_keywords());
    Ok(parts.join(" "))
}

/// Pooled sessions opened up to this moment (nanoseconds after [`clock_base`]) are
/// closed instead of reused; 0 = none. Process-wide: a session-state failure on one
/// connection says the server changed under all of them (a failover, a database made
/// read-only), and a needless reconnect costs milliseconds.
static RETIRED_UNTIL_NS: AtomicU64 = AtomicU64::new(0);

fn clock_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn nanos_since_base(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(clock_base()).as_nanos()).unwrap_or(u64::MAX)
}

/// After a session-state failure ([`Error::is_session_state`]): every pooled connection
/// opened until now is closed when it would next be handed out, so new sessions pick up
/// the server's current settings (`alter database … set default_transaction_read_only`
/// only reaches sessions opened after it). Returns whether it retired anything.
pub fn retire_sessions_after(e: &Error) -> bool {
    if !e.is_session_state() {
        return false;
    }
    RETIRED_UNTIL_NS.fetch_max(nanos_since_base(Instant::now()).max(1), Ordering::SeqCst);
    true
}

/// Whether a pooled connection with these metrics was opened before the last retirement.
fn retired(metrics: &deadpool_postgres::Metrics) -> bool {
    let until = RETIRED_UNTIL_NS.load(Ordering::SeqCst);
    until > 0 && nanos_since_base(metrics.created) <= until
}

/// The work pool. Connections are opened lazily; a dead one is replaced on next use.
pub fn pool(cfg: &DatabaseConfig) -> Result<(Pool, String), Error> {
    pool_with(cfg, cfg.pool_size, None)
}

/// Session settings of the claim connection. A claim need not wait for its WAL to reach
/// disk: if the server crashes before it does, the claim is simply undone and the version
/// is claimed again, and the finish, which is synchronous, flushes the claim's WAL before
/// its own. This takes an fsync off the commit → claim latency.
pub const CLAIM_SESSION: &str = "set synchronous_commit = off";

/// A pool of `size` connections that each run `session_sql` once when opened.
pub fn pool_with(
    cfg: &DatabaseConfig,
    size: usize,
    session_sql: Option<&'static str>,
) -> Result<(Pool, String), Error> {
    let endpoint = Spec::main(cfg).resolve()?;
    let target = endpoint.target().to_owned();
    let manager = endpoint.manager(ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    });
    clock_base();
    let mut builder = Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(cfg.connect_timeout))
        .wait_timeout(Some(cfg.connect_timeout * 6))
        .pre_recycle(deadpool_postgres::Hook::sync_fn(|_, metrics| {
            if retired(metrics) {
                Err(deadpool_postgres::HookError::message(
                    "opened before a session-state failure",
                ))
            } else {
                Ok(())
            }
        }));
    if let Some(sql) = session_sql {
        builder = builder.post_create(deadpool_postgres::Hook::async_fn(move |client, _| {
            Box::pin(async move {
                client
                    .batch_execute(sql)
                    .await
                    .map_err(deadpool_postgres::HookError::Backend)
            })
        }));
    }
    let pool = builder
        .build()
        .map_err(|e| Error::InvalidUrl(e.to_string()))?;
    Ok((pool, target))
}

/// Takes a connection from the pool, naming the database on failure.
pub async fn get(pool: &Pool, target: &str) -> Result<deadpool_postgres::Object, Error> {
    use deadpool_postgres::PoolError;
    pool.get().await.map_err(|e| Error::Pool {
        target: target.to_owned(),
        reason: match e {
            PoolError::Backend(e) => describe(&e),
            PoolError::Timeout(_) => "timed out waiting for a connection".to_owned(),
            PoolError::Closed => "the pool is closed (shutting down)".to_owned(),
            other => other.to_string(),
        },
    })
}

/// Opens one connection to a bare URL (no password file) outside the pool and drives it
/// on a task; the returned client fails once the connection is gone. Connections for a
/// `[database]` section: [`Spec::main`]`(cfg).connect()`.
pub async fn connect(url: &str, connect_timeout: Duration) -> Result<Client, Error> {
    Spec::url(url, connect_timeout).connect().await
}

/// The state of a version, spelled exactly as in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Waiting to be claimed.
    PostPublication,
    /// Claimed by a daemon holding a lease.
    Processing,
    /// The one live version of its document.
    Current,
    /// Failed; waits for an operator.
    Errored,
    /// A newer version was published first.
    Superseded,
    /// Was current, replaced by a newer current version.
    Archived,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 6] = [
        State::PostPublication,
        State::Processing,
        State::Current,
        State::Errored,
        State::Superseded,
        State::Archived,
    ];

    /// The SQL enum label.
    pub fn as_str(self) -> &'static str {
        match self {
            State::PostPublication => "post-publication",
            State::Processing => "processing",
            State::Current => "current",
            State::Errored => "errored",
            State::Superseded => "superseded",
            State::Archived => "archived",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown version state {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_sql_names() {
        for st in State::ALL {
            assert_eq!(st.as_str().parse::<State>(), Ok(st));
        }
        assert!("current ".parse::<State>().is_err());
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn target_names_host_port_and_database() {
        let cfg = pg_config(
            "postgres://u:pw@db.example:6543/books",
            Duration::from_secs(1),
        )
        .expect("parses");
        assert_eq!(target(&cfg), "db.example:6543/books");
    }

    #[test]
    fn another_database_on_the_same_server() {
        let url = url_with_database("postgres://u:p'w@h:6000/orig", "other").expect("ok");
        let cfg = tokio_postgres::Config::from_str(&url).expect("reparses");
        assert_eq!(cfg.get_dbname(), Some("other"));
        assert_eq!(cfg.get_user(), Some("u"));
        assert_eq!(cfg.get_password(), Some(&b"p'w"[..]));
        assert_eq!(target(&cfg), "h:6000/other");
    }

    #[test]
    fn a_bad_url_is_an_error_not_a_panic() {
        assert!(matches!(
            pg_config("postgres://u@h:notaport/db", Duration::from_secs(1)),
            Err(Error::InvalidUrl(_))
        ));
    }
}
