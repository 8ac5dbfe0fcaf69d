//! A private throwaway PostgreSQL cluster for tests that restart, pause or break the server.
//! `postpub::cluster` creates, starts and removes it (a directory under the temp dir, a free
//! port on 127.0.0.1, trust authentication, no fsync, run as `postgres` when we are root);
//! this adds what only tests need: a migrated database, daemon settings, pause/resume,
//! small disks. It never touches the server the other tests share.
//!
//! Dropping a `Cluster` resumes it if paused, stops it (`-m immediate`) and removes its
//! directory; when the test failed the directory is kept and its server log path printed.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use postpub::cluster::Binaries;
use postpub::config::Config;
use tokio_postgres::Client;

/// The database the cluster's daemons use (migrated by [`Cluster::start`]).
pub const DB: &str = "postpub";

/// A private PostgreSQL server.
pub struct Cluster {
    inner: postpub::cluster::Cluster,
    /// Top directory (data directory, socket, server log, tablespace mounts).
    pub dir: PathBuf,
    /// `dir/data`.
    pub data: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// tmpfs mounts to undo on drop.
    mounts: std::sync::Mutex<Vec<PathBuf>>,
}

impl Cluster {
    /// Creates, starts and migrates a new cluster (database [`DB`]).
    pub async fn start() -> Cluster {
        let binaries = Binaries::find().unwrap_or_else(|e| panic!("{e}"));
        let inner =
            tokio::task::spawn_blocking(move || postpub::cluster::Cluster::start(&binaries))
                .await
                .expect("the thread starting the cluster")
                .unwrap_or_else(|e| panic!("starting a cluster: {e}"));
        let cluster = Cluster {
            dir: inner.dir().to_owned(),
            data: inner.data(),
            port: inner.port(),
            inner,
            mounts: std::sync::Mutex::new(Vec::new()),
        };
        let admin = cluster.admin().await;
        admin
            .batch_execute(&format!("create database {DB}"))
            .await
            .expect("create database");
        let (mut client, conn) = super::connect_raw(&cluster.url())
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
        self.inner.url(DB)
    }

    /// A connection to [`DB`].
    pub async fn client(&self) -> Client {
        super::connect(&self.url()).await
    }

    /// A connection to the `postgres` database (ALTER SYSTEM, CREATE DATABASE …).
    pub async fn admin(&self) -> Client {
        super::connect(&self.inner.url("postgres")).await
    }

    /// Daemon settings for the cluster, like `TestDb::config`: fast polls and retries,
    /// short connect timeout, no HTTP, a no-op pipeline.
    pub fn config(&self) -> Config {
        let mut cfg = super::test_config(&self.url());
        cfg.database.connect_timeout = Duration::from_secs(2);
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
        let Some(postmaster) = self.inner.postmaster_pid() else {
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
        self.inner.chown(&path).expect("chown the mount");
        Some(path)
    }

    /// TLS only from now on: see `postpub::cluster::Cluster::require_tls` (restarts the
    /// server; [`Cluster::admin`] and [`Cluster::client`] need a password after this).
    pub async fn require_tls(&self, cert_pem: &str, key_pem: &str) {
        if let Err(e) = self.inner.require_tls(cert_pem, key_pem) {
            panic!("{e}\nserver log:\n{}", self.log());
        }
    }

    /// The server log so far (for messages and assertions).
    pub fn log(&self) -> String {
        self.inner.log()
    }

    async fn ctl(&self, args: &[&str]) {
        let (cmd, what) = self.inner.ctl_command(args);
        let out = tokio::process::Command::from(cmd)
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        if let Err(e) = self.inner.check(&what, out) {
            panic!("{e}\nserver log:\n{}", self.log());
        }
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
        // The server must be down before its tablespaces are unmounted.
        let _ = self.inner.ctl(["stop", "-m", "immediate"]);
        for m in self
            .mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = std::process::Command::new("umount").arg(&m).status();
        }
        if std::thread::panicking() {
            self.inner.keep();
            eprintln!(
                "keeping cluster directory {} (server log: {})",
                self.dir.display(),
                self.dir.join("server.log").display()
            );
        }
        // Otherwise `inner` removes the directory when it drops, right after this.
    }
}
