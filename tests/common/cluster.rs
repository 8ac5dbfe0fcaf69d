//! A throwaway PostgreSQL cluster for tests that restart, pause or break the server: its
//! own data directory under the temp dir, a free port on 127.0.0.1, trust authentication,
//! `fsync = off`. It never touches the shared server on 5432.
//!
//! The server binaries come from `POSTPUB_PG_BIN` (default `/usr/lib/postgresql/15/bin`).
//! PostgreSQL refuses to run as root, so when the tests run as root the cluster is owned
//! by, and run as, the `postgres` OS user (`runuser -u postgres`).
//!
//! Dropping a `Cluster` resumes it if paused, stops it (`-m immediate`) and removes its
//! directory; when the test failed the directory is kept and its server log path printed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use postpub::config::Config;
use tokio::process::Command;
use tokio_postgres::{Client, NoTls};

/// The database the cluster's daemons use (migrated by [`Cluster::start`]).
pub const DB: &str = "postpub";

/// A private PostgreSQL server.
pub struct Cluster {
    /// Top directory (data directory, socket, server log, tablespace mounts).
    pub dir: PathBuf,
    /// `dir/data`.
    pub data: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// OS user that owns and runs the cluster, `None` when the tests are not root.
    run_as: Option<&'static str>,
    /// tmpfs mounts to undo on drop.
    mounts: std::sync::Mutex<Vec<PathBuf>>,
}

fn pg_bin(tool: &str) -> String {
    let dir =
        std::env::var("POSTPUB_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    format!("{dir}/{tool}")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Cluster {
    /// Creates, starts and migrates a new cluster (database [`DB`]).
    pub async fn start() -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "postpub-cluster-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let run_as = is_root().then_some("postgres");
        let cluster = Cluster {
            data: dir.join("data"),
            dir,
            port: super::ops::free_port(),
            run_as,
            mounts: std::sync::Mutex::new(Vec::new()),
        };
        cluster.chown(&cluster.dir);
        cluster
            .run(
                "initdb",
                &[
                    "-D",
                    &cluster.data.display().to_string(),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
            )
            .await;
        let conf = format!(
            "\n# postpub test cluster\nlisten_addresses = '127.0.0.1'\nport = {}\n\
             unix_socket_directories = '{}'\nfsync = off\nfull_page_writes = off\n\
             max_connections = 200\nshared_buffers = 32MB\nlog_min_messages = warning\n\
             log_line_prefix = '%m [%p] '\n",
            cluster.port,
            cluster.dir.display()
        );
        let path = cluster.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).expect("postgresql.conf");
        text.push_str(&conf);
        std::fs::write(&path, text).expect("write postgresql.conf");
        cluster.ctl(&["start"]).await;

        let admin = cluster.admin().await;
        admin
            .batch_execute(&format!("create database {DB}"))
            .await
            .expect("create database");
        let (mut client, conn) = tokio_postgres::connect(&cluster.url(), NoTls)
            .await
            .expect("connect to the cluster's database");
        let h = tokio::spawn(conn);
        postpub::db::migrate::migrate(&mut client)
            .await
            .expect("migrate the cluster's database");
        drop(client);
        let _ = h.await;
        cluster
    }

    /// URL of [`DB`].
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{DB}", self.port)
    }

    /// A connection to [`DB`].
    pub async fn client(&self) -> Client {
        super::connect(&self.url()).await
    }

    /// A connection to the `postgres` database (ALTER SYSTEM, CREATE DATABASE …).
    pub async fn admin(&self) -> Client {
        super::connect(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.port
        ))
        .await
    }

    /// Daemon settings for the cluster, like `TestDb::config`: fast polls and retries,
    /// short connect timeout, no HTTP, a no-op pipeline.
    pub fn config(&self) -> Config {
        let mut cfg = Config::default();
        cfg.database.url = self.url();
        cfg.database.pool_size = 4;
        cfg.database.connect_timeout = Duration::from_secs(2);
        cfg.worker.poll_interval = Duration::from_millis(500);
        cfg.worker.lease = Duration::from_secs(5);
        cfg.worker.backoff.initial = Duration::from_millis(20);
        cfg.worker.backoff.max = Duration::from_millis(100);
        cfg.worker.shutdown_timeout = Duration::from_secs(5);
        cfg.pipeline.steps = vec!["noop".to_owned()];
        cfg.http.listen = String::new();
        cfg
    }

    /// `pg_ctl restart -m <mode>` (`fast` or `immediate`); returns once the server accepts
    /// connections again.
    pub async fn restart(&self, mode: &str) {
        self.ctl(&["restart", "-m", mode]).await;
    }

    /// `pg_ctl stop -m <mode>`.
    pub async fn stop(&self, mode: &str) {
        self.ctl(&["stop", "-m", mode]).await;
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub async fn start_again(&self) {
        self.ctl(&["start"]).await;
    }

    /// The postmaster and all its children (backends, background processes).
    pub fn pids(&self) -> Vec<i32> {
        let Some(postmaster) = self.postmaster_pid() else {
            return Vec::new();
        };
        let mut pids = vec![postmaster];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                    continue;
                };
                // "pid (comm) state ppid …": comm may contain spaces, so split after ')'.
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<i32>().ok());
                if ppid == Some(postmaster) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    fn postmaster_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
    }

    /// SIGSTOP to every process of the server: a network or server stall. The kernel
    /// still accepts connections and acknowledges TCP (keepalive probes included); nothing
    /// answers at the protocol level. The postmaster goes first so it forks nothing new.
    pub fn pause(&self) {
        signal(&self.pids(), "-STOP");
    }

    /// SIGCONT to every process of the server.
    pub fn resume(&self) {
        signal(&self.pids(), "-CONT");
    }

    /// Mounts a tmpfs of `size_mb` at `dir/<name>`, owned by the cluster's user, for a
    /// tablespace that can fill up. `None` when mounting is not permitted here.
    pub fn small_disk(&self, name: &str, size_mb: u32) -> Option<PathBuf> {
        let path = self.dir.join(name);
        std::fs::create_dir_all(&path).ok()?;
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mb}m,mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return None;
        }
        self.mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(path.clone());
        self.chown(&path);
        Some(path)
    }

    /// The server log so far (for messages and assertions).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn chown(&self, path: &Path) {
        if let Some(user) = self.run_as {
            let ok = std::process::Command::new("chown")
                .args(["-R", &format!("{user}:")])
                .arg(path)
                .status()
                .expect("chown");
            assert!(ok.success(), "chown {}", path.display());
        }
    }

    async fn ctl(&self, args: &[&str]) {
        let mut all = vec![
            "-D".to_owned(),
            self.data.display().to_string(),
            "-l".to_owned(),
            self.dir.join("server.log").display().to_string(),
            "-w".to_owned(),
            "-t".to_owned(),
            "60".to_owned(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        self.run("pg_ctl", &refs).await;
    }

    async fn run(&self, tool: &str, args: &[&str]) {
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(pg_bin(tool));
                c
            }
            None => Command::new(pg_bin(tool)),
        };
        let started = Instant::now();
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed after {:?}: {}{}\nserver log:\n{}",
            started.elapsed(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }
}

fn signal(pids: &[i32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    // Processes may exit between listing and signalling; that is fine.
    let _ = std::process::Command::new("kill")
        .arg(sig)
        .args(pids.iter().map(|p| p.to_string()))
        .stderr(Stdio::null())
        .status();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.resume();
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", user, "--"]).arg(pg_bin("pg_ctl"));
                c
            }
            None => std::process::Command::new(pg_bin("pg_ctl")),
        };
        let _ = cmd
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for m in self
            .mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = std::process::Command::new("umount").arg(&m).status();
        }
        if std::thread::panicking() {
            eprintln!(
                "keeping cluster directory {} (server log: {})",
                self.dir.display(),
                self.dir.join("server.log").display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
