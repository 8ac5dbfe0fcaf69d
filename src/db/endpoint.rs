//! The one place that turns a connection URL, the `[database]` settings and the
//! environment into connections: every pool, the LISTEN connection, the CLI commands, the
//! relay, the bench, the demo and the tests' helpers connect through an [`Endpoint`].
//!
//! libpq's precedence, so a URL that works with psql works here: a setting in the URL
//! wins, then the environment (`PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`,
//! `PGPASSWORD`, `PGPASSFILE`), then libpq's default files (`~/.postgresql/root.crt`,
//! `~/.postgresql/postgresql.crt` and `.key`, `~/.pgpass`). `database.password_file` sits
//! between the URL and `PGPASSWORD`: it is the configuration's own way to say the password.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::{Client, Connection, Socket};

use super::tls::{self, MakeRustls, RustlsStream};
use super::{target, Error};
use crate::config::{redact, DatabaseConfig};
use crate::conninfo::{self, RootCert, SslMode};

/// Where to connect, before anything is read from the environment or from files: a URL,
/// the password file that goes with it, and the connect timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Connection URL or `key=value` string (may hold libpq's TLS parameters).
    pub url: String,
    /// `database.password_file` (or `listen_password_file`), as configured.
    pub password_file: Option<PathBuf>,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
}

impl Spec {
    /// A bare URL (tests, the admin connections of the demo and the bench).
    pub fn url(url: &str, connect_timeout: Duration) -> Spec {
        Spec {
            url: url.to_owned(),
            password_file: None,
            connect_timeout,
        }
    }

    /// The work pool's connection: `database.url` with `database.password_file`.
    pub fn main(cfg: &DatabaseConfig) -> Spec {
        Spec {
            url: cfg.url.clone(),
            password_file: nonempty(&cfg.password_file),
            connect_timeout: cfg.connect_timeout,
        }
    }

    /// The LISTEN connection: `listen_url` with `listen_password_file` when set, each
    /// falling back to the main one.
    pub fn listen(cfg: &DatabaseConfig) -> Spec {
        Spec {
            url: cfg.listen_url().to_owned(),
            password_file: nonempty(&cfg.listen_password_file)
                .or_else(|| nonempty(&cfg.password_file)),
            connect_timeout: cfg.connect_timeout,
        }
    }

    /// Reads the environment and the files this needs (password, certificates).
    pub fn resolve(&self) -> Result<Endpoint, Error> {
        self.resolve_with(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// [`Spec::resolve`] with the environment given (tests).
    pub fn resolve_with(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Endpoint, Error> {
        let invalid =
            |e: conninfo::Error| Error::InvalidUrl(format!("{e} (in {})", redact(&self.url)));
        let split = conninfo::parse(&self.url).map_err(invalid)?;
        let mut pg = split.driver;
        super::connection_defaults(&mut pg, self.connect_timeout);
        let tls = tls_settings(&split.params, &pg, env)?;
        pg.ssl_mode(match tls.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let mut password_path = None;
        if pg.get_password().is_none() {
            if let Some((pw, from_file)) = password(self, &split.params, &pg, env)? {
                pg.password(pw);
                password_path = from_file;
            }
        }
        let connector = MakeRustls::new(tls.clone()).map_err(|e| Error::Tls {
            target: target(&pg),
            error: e,
        })?;
        Ok(Endpoint {
            target: target(&pg),
            pg,
            connector,
            tls,
            password_path,
            connect_timeout: self.connect_timeout,
        })
    }

    /// Resolves and opens one connection, driven on a task.
    pub async fn connect(&self) -> Result<Client, Error> {
        self.resolve()?.connect().await
    }
}

fn nonempty(s: &str) -> Option<PathBuf> {
    (!s.trim().is_empty()).then(|| PathBuf::from(s))
}

/// A resolved connection: driver settings, TLS connector, password set.
#[derive(Clone)]
pub struct Endpoint {
    pg: tokio_postgres::Config,
    connector: MakeRustls,
    tls: tls::Settings,
    target: String,
    /// The password file the password came from, read again for each pooled connection.
    password_path: Option<PathBuf>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No password: the driver's Config prints it redacted, but say only what matters.
        f.debug_struct("Endpoint")
            .field("target", &self.target)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Endpoint {
    /// `host:port/dbname`, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The TLS settings in effect.
    pub fn tls(&self) -> &tls::Settings {
        &self.tls
    }

    /// The driver's settings (password included: do not print).
    pub fn pg_config(&self) -> &tokio_postgres::Config {
        &self.pg
    }

    /// A pool manager whose new connections read the password file again, so a rotated
    /// password reaches the pool without a restart.
    pub fn manager(&self, config: deadpool_postgres::ManagerConfig) -> deadpool_postgres::Manager {
        deadpool_postgres::Manager::from_connect(
            self.pg.clone(),
            Reconnect {
                connector: self.connector.clone(),
                password_path: self.password_path.clone(),
            },
            config,
        )
    }

    /// Opens a connection and hands over its driver (the LISTEN connection polls it for
    /// notifications), within the connect timeout.
    pub async fn connect_raw(&self) -> Result<(Client, Connection<Socket, RustlsStream>), Error> {
        match tokio::time::timeout(
            self.connect_timeout,
            self.pg.connect(self.connector.clone()),
        )
        .await
        {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(error)) => Err(Error::Connect {
                target: self.target.clone(),
                error,
            }),
            Err(_) => Err(Error::Pool {
                target: self.target.clone(),
                reason: format!(
                    "no connection within {}",
                    humantime::format_duration(self.connect_timeout)
                ),
            }),
        }
    }

    /// Opens one connection outside any pool and drives it on a task; the client fails
    /// once the connection is gone.
    pub async fn connect(&self) -> Result<Client, Error> {
        let (client, connection) = self.connect_raw().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "database connection closed");
            }
        });
        Ok(client)
    }
}

/// How the pool opens connections: our TLS connector, and the password file read again.
struct Reconnect {
    connector: MakeRustls,
    password_path: Option<PathBuf>,
}

impl deadpool_postgres::Connect for Reconnect {
    fn connect(
        &self,
        pg: &tokio_postgres::Config,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let mut pg = pg.clone();
        if let Some(path) = &self.password_path {
            match read_password_file(path) {
                Ok(pw) => {
                    pg.password(pw);
                }
                // The driver's error type cannot carry ours: keep the password we have,
                // which the server then judges.
                Err(e) => tracing::warn!(error = %e, "keeping the password read before"),
            }
        }
        let tls = self.connector.clone();
        Box::pin(async move {
            let (client, connection) = pg.connect(tls).await?;
            let handle = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "database connection closed");
                }
            });
            Ok((client, handle))
        })
    }
}

/// The TLS settings by libpq's precedence; `require` becomes `verify-ca` when a root
/// certificate file is there, and `sslrootcert=system` means `verify-full`.
fn tls_settings(
    params: &conninfo::Params,
    pg: &tokio_postgres::Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<tls::Settings, Error> {
    let bad = |m: String| Error::InvalidUrl(m);
    let home_file = |name: &str| {
        env("HOME")
            .map(|h| Path::new(&h).join(".postgresql").join(name))
            .filter(|p| p.exists())
    };
    let env_mode = env("PGSSLMODE")
        .map(|m| m.parse::<SslMode>())
        .transpose()
        .map_err(|e| bad(format!("PGSSLMODE: {e}")))?;
    let root = params
        .sslrootcert
        .clone()
        .or_else(|| env("PGSSLROOTCERT").map(|v| conninfo_root(&v)))
        .or_else(|| home_file("root.crt").map(RootCert::File));
    let mode = match params.sslmode.or(env_mode) {
        Some(m) => m,
        None if root == Some(RootCert::System) => SslMode::VerifyFull,
        // libpq's default.
        None => SslMode::Prefer,
    };
    if root == Some(RootCert::System) && mode != SslMode::VerifyFull && mode != SslMode::Disable {
        return Err(bad(format!(
            "sslrootcert=system needs sslmode=verify-full (libpq's rule), not sslmode={mode}"
        )));
    }
    let mode = match (mode, &root) {
        (SslMode::Require, Some(RootCert::File(_))) => SslMode::VerifyCa,
        (m, _) => m,
    };
    if mode.verifies() && root.is_none() {
        return Err(bad(format!(
            "sslmode={mode} needs root certificates: set sslrootcert (a file, or system for the \
             operating system's), PGSSLROOTCERT, or put them in ~/.postgresql/root.crt"
        )));
    }
    let cert = params
        .sslcert
        .clone()
        .or_else(|| env("PGSSLCERT").map(PathBuf::from));
    let key = params
        .sslkey
        .clone()
        .or_else(|| env("PGSSLKEY").map(PathBuf::from));
    let client = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (Some(c), None) => Some((c, home_file("postgresql.key").unwrap_or_default())),
        (None, Some(_)) => None,
        (None, None) => home_file("postgresql.crt").zip(home_file("postgresql.key")),
    };
    // Unix sockets never carry TLS (the server does not offer it there); libpq ignores the
    // mode for them.
    let all_unix =
        !pg.get_hosts().is_empty() && pg.get_hosts().iter().all(|h| !matches!(h, Host::Tcp(_)));
    Ok(tls::Settings {
        mode: if all_unix { SslMode::Disable } else { mode },
        root: root.filter(|_| mode.verifies()),
        client,
    })
}

fn conninfo_root(v: &str) -> RootCert {
    if v == "system" {
        RootCert::System
    } else {
        RootCert::File(PathBuf::from(v))
    }
}

/// The password when the URL has none: the password file, `PGPASSWORD`, then the
/// `.pgpass` file (`passfile`, `PGPASSFILE`, `~/.pgpass`); with the password file's path
/// when it came from there.
fn password(
    spec: &Spec,
    params: &conninfo::Params,
    pg: &tokio_postgres::Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(String, Option<PathBuf>)>, Error> {
    if let Some(file) = &spec.password_file {
        let path = conninfo::credential_path(file, env("CREDENTIALS_DIRECTORY").as_deref());
        return read_password_file(&path).map(|pw| Some((pw, Some(path))));
    }
    if let Some(pw) = env("PGPASSWORD") {
        return Ok(Some((pw, None)));
    }
    let passfile = params
        .passfile
        .clone()
        .or_else(|| env("PGPASSFILE").map(PathBuf::from))
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")));
    let Some(passfile) = passfile else {
        return Ok(None);
    };
    // libpq skips a missing or unreadable file silently, and one others can read with a
    // warning; so do we.
    let Ok(text) = std::fs::read_to_string(&passfile) else {
        return Ok(None);
    };
    if is_group_or_world_readable(&passfile) {
        tracing::warn!(file = %passfile.display(), "password file has group or world access; not used (chmod 0600 it)");
        return Ok(None);
    }
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        _ => "localhost".to_owned(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let user = pg.get_user().unwrap_or("postgres");
    let db = pg.get_dbname().unwrap_or(user);
    Ok(conninfo::pgpass_lookup(&text, &host, port, db, user).map(|pw| (pw, None)))
}

fn is_group_or_world_readable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

/// The first line of a password file (systemd credentials and `echo pw > file` both
/// leave a newline).
pub fn read_password_file(path: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::PasswordFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let pw = text.lines().next().unwrap_or("").to_owned();
    if pw.is_empty() {
        return Err(Error::PasswordFile {
            path: path.display().to_string(),
            reason: "is empty".to_owned(),
        });
    }
    Ok(pw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(url: &str, pw_file: Option<&Path>, env: &[(&str, &str)]) -> Result<Endpoint, Error> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let spec = Spec {
            url: url.to_owned(),
            password_file: pw_file.map(Path::to_owned),
            connect_timeout: Duration::from_secs(1),
        };
        spec.resolve_with(&|k| env.get(k).cloned())
    }

    struct Dir(PathBuf);
    impl Dir {
        fn new() -> Dir {
            let d = std::env::temp_dir().join(format!("postpub-endpoint-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir(&d).expect("temp dir");
            Dir(d)
        }
        fn file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
            use std::os::unix::fs::PermissionsExt as _;
            let p = self.0.join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("dirs");
            }
            std::fs::write(&p, text).expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            p
        }
        fn s(&self) -> String {
            self.0.display().to_string()
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn pw(e: &Endpoint) -> Option<String> {
        e.pg_config()
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    }

    #[test]
    fn the_default_is_prefer_like_libpq_and_the_environment_fills_in() {
        let home = Dir::new();
        let e = resolve("postgres://u@h/d", None, &[("HOME", &home.s())]).expect("ok");
        assert_eq!(e.tls().mode, SslMode::Prefer);
        let e = resolve("postgres://u@h/d", None, &[("PGSSLMODE", "disable")]).expect("ok");
        assert_eq!(e.tls().mode, SslMode::Disable);
        // The URL wins over the environment.
        let e = resolve(
            "postgres://u@h/d?sslmode=require",
            None,
            &[("PGSSLMODE", "disable")],
        )
        .expect("ok");
        assert_eq!(e.tls().mode, SslMode::Require);
        let err =
            resolve("postgres://u@h/d", None, &[("PGSSLMODE", "sometimes")]).expect_err("bad");
        assert!(err.to_string().contains("PGSSLMODE"), "{err}");
    }

    #[test]
    fn require_with_a_root_file_is_verify_ca_and_verify_needs_roots() {
        let dir = Dir::new();
        let ca_pem = ca_pem();
        let ca = dir.file("ca.crt", &ca_pem, 0o644);
        let url = format!(
            "postgres://u@h/d?sslmode=require&sslrootcert={}",
            ca.display()
        );
        let e = resolve(&url, None, &[]).expect("ok");
        assert_eq!(e.tls().mode, SslMode::VerifyCa);
        // ~/.postgresql/root.crt counts too.
        dir.file(".postgresql/root.crt", &ca_pem, 0o644);
        let e = resolve(
            "postgres://u@h/d?sslmode=require",
            None,
            &[("HOME", &dir.s())],
        )
        .expect("ok");
        assert_eq!(e.tls().mode, SslMode::VerifyCa);
        // PGSSLROOTCERT when the URL says nothing.
        let e = resolve(
            "postgres://u@h/d?sslmode=verify-full",
            None,
            &[("PGSSLROOTCERT", &ca.display().to_string())],
        )
        .expect("ok");
        assert_eq!(e.tls().root, Some(RootCert::File(ca.clone())));
        let err = resolve("postgres://u@h/d?sslmode=verify-full", None, &[]).expect_err("no roots");
        assert!(err.to_string().contains("needs root certificates"), "{err}");
        let err = resolve(
            "postgres://u@h/d?sslmode=require&sslrootcert=system",
            None,
            &[],
        )
        .expect_err("system needs verify-full");
        assert!(err.to_string().contains("verify-full"), "{err}");
        let missing = resolve(
            "postgres://u@h/d?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
            None,
            &[],
        )
        .expect_err("missing file");
        assert!(
            missing
                .to_string()
                .contains("sslrootcert /nonexistent/ca.crt"),
            "{missing}"
        );
    }

    #[test]
    fn the_password_comes_from_the_url_then_the_file_then_pgpassword_then_pgpass() {
        let dir = Dir::new();
        let file = dir.file("pw", "from-file\n", 0o600);
        let pass = dir.file("pgpass", "h:5432:d:u:from-pgpass\n", 0o600);
        let pass_s = pass.display().to_string();
        let all = [("PGPASSWORD", "from-env"), ("PGPASSFILE", pass_s.as_str())];
        let e = resolve("postgres://u:from-url@h/d", Some(&file), &all).expect("ok");
        assert_eq!(pw(&e).as_deref(), Some("from-url"));
        let e = resolve("postgres://u@h/d", Some(&file), &all).expect("ok");
        assert_eq!(pw(&e).as_deref(), Some("from-file"));
        let e = resolve("postgres://u@h/d", None, &all).expect("ok");
        assert_eq!(pw(&e).as_deref(), Some("from-env"));
        let e = resolve("postgres://u@h/d", None, &all[1..]).expect("ok");
        assert_eq!(pw(&e).as_deref(), Some("from-pgpass"));
        // ~/.pgpass, unless others can read it.
        dir.file(".pgpass", "*:*:*:u:home\n", 0o644);
        let e = resolve("postgres://u@h/d", None, &[("HOME", &dir.s())]).expect("ok");
        assert_eq!(pw(&e), None);
        dir.file(".pgpass", "*:*:*:u:home\n", 0o600);
        let e = resolve("postgres://u@h/d", None, &[("HOME", &dir.s())]).expect("ok");
        assert_eq!(pw(&e).as_deref(), Some("home"));
    }

    #[test]
    fn a_relative_password_file_is_a_systemd_credential() {
        let dir = Dir::new();
        dir.file("pgpassword", "cred\n", 0o600);
        let e = resolve(
            "postgres://u@h/d",
            Some(Path::new("pgpassword")),
            &[("CREDENTIALS_DIRECTORY", &dir.s())],
        )
        .expect("ok");
        assert_eq!(pw(&e).as_deref(), Some("cred"));
        let err = resolve("postgres://u@h/d", Some(&dir.0.join("nope")), &[]).expect_err("missing");
        assert!(err.to_string().contains("database password file"), "{err}");
        dir.file("empty", "\n", 0o600);
        let err = resolve("postgres://u@h/d", Some(&dir.0.join("empty")), &[]).expect_err("empty");
        assert!(err.to_string().contains("is empty"), "{err}");
    }

    #[test]
    fn listen_falls_back_to_the_main_password_file() {
        let cfg = DatabaseConfig {
            listen_url: "postgres://u@direct/d".to_owned(),
            password_file: "main".to_owned(),
            ..DatabaseConfig::default()
        };
        assert_eq!(
            Spec::listen(&cfg).password_file,
            Some(PathBuf::from("main"))
        );
        assert_eq!(Spec::listen(&cfg).url, "postgres://u@direct/d");
        let cfg = DatabaseConfig {
            listen_password_file: "direct".to_owned(),
            ..cfg
        };
        assert_eq!(
            Spec::listen(&cfg).password_file,
            Some(PathBuf::from("direct"))
        );
        assert_eq!(Spec::main(&cfg).password_file, Some(PathBuf::from("main")));
    }

    #[test]
    fn unix_sockets_never_use_tls() {
        let e = resolve("host=/run/postgresql user=u sslmode=require", None, &[]).expect("ok");
        assert_eq!(e.tls().mode, SslMode::Disable);
    }

    /// A self-signed certificate, for the root store.
    fn ca_pem() -> String {
        rcgen::generate_simple_self_signed(vec!["ca.example".to_owned()])
            .expect("rcgen")
            .cert
            .pem()
    }
}
