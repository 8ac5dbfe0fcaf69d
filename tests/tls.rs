//! PostgreSQL over TLS, as a managed database asks for it: a throwaway cluster that takes
//! only `hostssl` connections with scram passwords, its certificate from a CA made here.
//! migrate, run (claims and LISTEN wake-ups), status and relay work with
//! `sslmode=verify-full`; a wrong CA, `sslmode=disable` and a wrong password are refused,
//! each with one line naming which; the password can come from a file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::certs::{make_ca, server_cert};
use common::cluster::Cluster;
use common::{bin, wait_until, Daemon};
use postpub::config::{Config, SinkConfig, WebhookSinkConfig};
use postpub::event::Event;
use postpub::shutdown::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "s3cret-pw";

/// A cluster that insists on TLS, the CA that signed its certificate, and another CA.
struct TlsCluster {
    cluster: Cluster,
    dir: PathBuf,
    ca: PathBuf,
    wrong_ca: PathBuf,
}

impl TlsCluster {
    /// Starts the cluster, creates database `fresh` (not migrated), sets the password,
    /// then turns TLS on and every unencrypted TCP connection away.
    async fn start() -> TlsCluster {
        let cluster = Cluster::start().await;
        let admin = cluster.admin().await;
        admin
            .batch_execute(&format!("alter role postgres password '{PASSWORD}'"))
            .await
            .expect("password");
        admin
            .batch_execute("create database fresh")
            .await
            .expect("database");
        drop(admin);
        let dir = cluster.dir.join("tls-test");
        std::fs::create_dir_all(&dir).expect("tls dir");
        let (ca, ca_key) = make_ca("postpub test CA");
        let (wrong, _) = make_ca("someone else's CA");
        let (cert, key) = server_cert(&ca, &ca_key);
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("pem");
            path
        };
        let ca_file = write("ca.crt", ca.pem());
        let wrong_ca = write("wrong-ca.crt", wrong.pem());
        cluster.require_tls(&cert.pem(), &key.serialize_pem()).await;
        TlsCluster {
            cluster,
            dir,
            ca: ca_file,
            wrong_ca,
        }
    }

    /// `postgres://postgres[:password]@127.0.0.1:port/db?query`.
    fn url(&self, db: &str, password: Option<&str>, query: &str) -> String {
        let user = match password {
            Some(pw) => format!("postgres:{pw}"),
            None => "postgres".to_owned(),
        };
        format!(
            "postgres://{user}@127.0.0.1:{}/{db}?{query}",
            self.cluster.port
        )
    }

    /// verify-full against the right CA, password in the URL.
    fn good(&self, db: &str) -> String {
        self.url(
            db,
            Some(PASSWORD),
            &format!("sslmode=verify-full&sslrootcert={}", self.ca.display()),
        )
    }

    /// Daemon settings for database `postpub` over `url`, with a slow poll so that only a
    /// LISTEN wake-up makes a version current quickly.
    fn config(&self, url: String) -> Config {
        let mut cfg = self.cluster.config();
        cfg.database.url = url;
        cfg.worker.poll_interval = Duration::from_secs(30);
        cfg
    }
}

/// Runs the binary with a clean libpq environment plus `env`.
fn postpub(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).env("RUST_BACKTRACE", "0");
    for k in [
        "DATABASE_URL",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGPASSWORD",
        "PGPASSFILE",
        "CREDENTIALS_DIRECTORY",
    ] {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run postpub")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 1 and exactly one line on stderr, an `error:` line containing `what`.
fn assert_refused(o: &Output, what: &str) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(what), "{what:?} not in: {}", lines[0]);
    assert!(!err.contains(PASSWORD), "the password leaked: {err}");
    lines[0].to_owned()
}

fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}: {}{}",
        o.status.code(),
        stderr(o),
        String::from_utf8_lossy(&o.stdout)
    );
}

/// Whether every client connection of the server (other than ours asking) is encrypted;
/// the count of postpub's.
async fn postpub_sessions_encrypted(c: &tokio_postgres::Client) -> (i64, bool) {
    let row = c
        .query_one(
            "select count(*), coalesce(bool_and(s.ssl), true) from pg_stat_activity a \
             join pg_stat_ssl s using (pid) where a.application_name = 'postpub' \
             and a.pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_run_status_and_relay_work_with_verify_full() {
    let tls = TlsCluster::start().await;
    // migrate (a database that is not migrated yet) and status, from the binary.
    let fresh = tls.good("fresh");
    assert_ok(&postpub(&["migrate", "--database-url", &fresh], &[]));
    let o = postpub(&["status", "--database-url", &fresh], &[]);
    assert_ok(&o);

    // run: claims, woken by LISTEN (the poll is 30 s), every session encrypted.
    let url = tls.good(common::cluster::DB);
    let c = postpub::db::connect(&url, Duration::from_secs(5))
        .await
        .expect("a verify-full connection");
    let ssl: bool = c
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(ssl, "our own connection is not encrypted");
    // SCRAM with channel binding to the server's certificate (SCRAM-SHA-256-PLUS).
    postpub::db::connect(
        &format!("{url}&channel_binding=require"),
        Duration::from_secs(5),
    )
    .await
    .expect("a connection with channel binding");
    let daemon = Daemon::start(tls.config(url.clone())).await;
    let id: i64 = c
        .query_one(
            "select postpub.publish('tls-doc', '<p>x</p>', 'p { }')",
            &[],
        )
        .await
        .expect("publish")
        .get(0);
    wait_until(
        Duration::from_secs(10),
        "the version current via LISTEN",
        || async { common::outcome(&c, id).await.0 == "current" },
    )
    .await;
    let (sessions, encrypted) = postpub_sessions_encrypted(&c).await;
    assert!(sessions >= 2, "pool and LISTEN sessions: {sessions}");
    assert!(encrypted, "a postpub session is not encrypted");
    daemon.stop().await;

    // relay: the published event reaches a webhook.
    let hook = Hook::start().await;
    let mut cfg = tls.config(url);
    cfg.outbox.sinks = vec![SinkConfig::Webhook(WebhookSinkConfig {
        name: "hook".to_owned(),
        url: hook.url.clone(),
        timeout: Duration::from_secs(2),
        ..WebhookSinkConfig::default()
    })];
    let shutdown = Shutdown::new();
    let (ready, _) = tokio::sync::watch::channel(false);
    let relay = tokio::spawn(postpub::daemon::relay(cfg, shutdown.clone(), ready));
    wait_until(
        Duration::from_secs(15),
        "the event delivered by the relay",
        || async {
            common::count(
                &c,
                "select count(*) from postpub.outbox o join postpub.outbox_deliveries d \
                 on d.outbox_id = o.id where o.document = 'tls-doc' and d.sink = 'hook' \
                 and d.delivered_at is not null",
            )
            .await
                >= 1
        },
    )
    .await;
    shutdown.soft.cancel();
    tokio::time::timeout(Duration::from_secs(15), relay)
        .await
        .expect("relay stopped")
        .expect("relay task")
        .expect("relay ran");
    assert!(hook.hits() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_plain_connections_and_a_wrong_password_are_refused_by_name() {
    let tls = TlsCluster::start().await;
    let db = common::cluster::DB;
    let wrong_ca = tls.url(
        db,
        Some(PASSWORD),
        &format!("sslmode=verify-full&sslrootcert={}", tls.wrong_ca.display()),
    );
    let line = assert_refused(
        &postpub(&["status", "--database-url", &wrong_ca], &[]),
        "certificate was refused",
    );
    assert!(
        line.contains("not signed by a trusted certificate authority"),
        "{line}"
    );
    assert!(line.contains("wrong-ca.crt"), "names the roots: {line}");

    let plain = tls.url(db, Some(PASSWORD), "sslmode=disable");
    let line = assert_refused(
        &postpub(&["status", "--database-url", &plain], &[]),
        "accepts only TLS",
    );
    assert!(line.contains("sslmode=disable"), "{line}");
    // The environment's sslmode counts too.
    let no_mode = tls.url(db, Some(PASSWORD), "");
    assert_refused(
        &postpub(
            &["status", "--database-url", &no_mode],
            &[("PGSSLMODE", "disable")],
        ),
        "accepts only TLS",
    );

    // verify-full compares the host name with the certificate, verify-ca does not
    // (hostaddr: connect to 127.0.0.1, check the certificate against another name).
    let elsewhere = |mode: &str| {
        format!(
            "postgres://postgres:{PASSWORD}@db.example:{}/{db}?hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={}",
            tls.cluster.port,
            tls.ca.display()
        )
    };
    let line = assert_refused(
        &postpub(
            &["status", "--database-url", &elsewhere("verify-full")],
            &[],
        ),
        "certificate was refused",
    );
    assert!(line.contains("does not name the host"), "{line}");
    assert_ok(&postpub(
        &["status", "--database-url", &elsewhere("verify-ca")],
        &[],
    ));

    let wrong_pw = tls.url(
        db,
        Some("not-it"),
        &format!("sslmode=verify-full&sslrootcert={}", tls.ca.display()),
    );
    assert_refused(
        &postpub(&["migrate", "--database-url", &wrong_pw], &[]),
        "password authentication failed",
    );
    let no_pw = tls.url(
        db,
        None,
        &format!("sslmode=verify-full&sslrootcert={}", tls.ca.display()),
    );
    assert_refused(
        &postpub(
            &["status", "--database-url", &no_pw],
            &[("HOME", "/nonexistent")],
        ),
        "asks for a password",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_comes_from_a_file_the_environment_or_pgpass() {
    let tls = TlsCluster::start().await;
    let db = common::cluster::DB;
    let url = tls.url(
        db,
        None,
        &format!("sslmode=verify-full&sslrootcert={}", tls.ca.display()),
    );
    // database.password_file, as a systemd credential (relative to $CREDENTIALS_DIRECTORY).
    let creds = tls.dir.join("credentials");
    std::fs::create_dir_all(&creds).expect("credentials dir");
    std::fs::write(creds.join("pg-password"), format!("{PASSWORD}\n")).expect("credential");
    let config = write_config(
        &tls.dir,
        &format!("[database]\nurl = \"{url}\"\npassword_file = \"pg-password\"\n"),
    );
    let creds_s = creds.display().to_string();
    let cfg_s = config.display().to_string();
    assert_ok(&postpub(
        &["status", "--config", &cfg_s],
        &[("CREDENTIALS_DIRECTORY", &creds_s)],
    ));
    // Without the credentials directory the relative file is not there: a usage error
    // naming the key.
    let o = postpub(&["status", "--config", &cfg_s], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("database.password_file"),
        "{}",
        stderr(&o)
    );
    // PGPASSWORD and PGPASSFILE, like psql.
    assert_ok(&postpub(
        &["status", "--database-url", &url],
        &[("PGPASSWORD", PASSWORD)],
    ));
    let pgpass = tls.dir.join("pgpass");
    std::fs::write(&pgpass, format!("127.0.0.1:*:*:postgres:{PASSWORD}\n")).expect("pgpass");
    set_mode(&pgpass, 0o600);
    assert_ok(&postpub(
        &["status", "--database-url", &url],
        &[("PGPASSFILE", &pgpass.display().to_string())],
    ));
    // The daemon's LISTEN connection reads the file too (ready means LISTEN is active).
    let mut cfg = tls.config(url);
    let pw_file = tls.dir.join("pw");
    std::fs::write(&pw_file, PASSWORD).expect("password file");
    cfg.database.password_file = pw_file.display().to_string();
    let mut daemon = Daemon::start(cfg).await;
    // A password changed under the daemon: the LISTEN connection says why it cannot get
    // back in, and retries.
    let admin = postpub::db::connect(&tls.good("postgres"), Duration::from_secs(5))
        .await
        .expect("admin over TLS");
    admin
        .batch_execute(
            "alter role postgres password 'changed'; \
             select pg_terminate_backend(pid) from pg_stat_activity \
             where application_name = 'postpub' and pid <> pg_backend_pid()",
        )
        .await
        .expect("change the password");
    let lost = daemon
        .wait_event(Duration::from_secs(10), |e| {
            matches!(e, Event::ListenerLost { reason } if reason.contains("password authentication failed"))
        })
        .await;
    if let Event::ListenerLost { reason } = lost {
        assert!(!reason.contains(PASSWORD), "{reason}");
    }
    std::fs::write(&pw_file, "changed\n").expect("new password");
    daemon
        .wait_event(Duration::from_secs(15), |e| {
            matches!(e, Event::ListenerConnected { .. })
        })
        .await;
    daemon.stop().await;
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("postpub.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// An HTTP endpoint that answers 200 to everything and counts the requests.
struct Hook {
    url: String,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Hook {
    async fn start() -> Hook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    // One request per connection; read the head and the body it announces.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_lowercase();
                        if let Some(head_end) = text.find("\r\n\r\n") {
                            let len = text[..head_end]
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if buf.len() >= head_end + 4 + len {
                                break;
                            }
                        }
                    }
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        Hook { url, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}
