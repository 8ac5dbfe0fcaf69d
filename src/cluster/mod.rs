//! Throwaway PostgreSQL clusters, started from the installed server programs: `postpub demo`
//! runs against one when no server can be used, the test suite shares one across its test
//! binaries when there is no server ([`shared`]), and tests that restart, pause or break the
//! server start private ones.
//!
//! A cluster lives in a fresh directory under the temp dir (`postpub-pg-…`) that holds the
//! data directory, the server log and the unix socket. It listens on a free port of
//! 127.0.0.1, trusts every local connection (user `postgres`) and never fsyncs: nothing in
//! it is meant to outlive its user. PostgreSQL refuses to run as root, so when we are root
//! the directory belongs to, and every server program runs as, the `postgres` OS user.
//!
//! This module starts, stops and removes clusters; it knows nothing of postpub's schema.

pub mod shared;

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::db;

/// Server programs a cluster needs.
const TOOLS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Where Debian and Ubuntu install each major version's server programs (`<version>/bin`).
pub const VERSIONED_ROOT: &str = "/usr/lib/postgresql";

/// Attempts at starting the server when the free port we picked was taken meanwhile.
const PORT_ATTEMPTS: u32 = 5;

/// How long the server may take to get ready (as `pg_ctl -t 60`).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a throwaway cluster could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither `POSTPUB_PG_BIN`, `pg_config --bindir` nor `/usr/lib/postgresql/*/bin` has
    /// the server programs.
    #[error("no PostgreSQL server programs found (looked in {looked}): install them (apt-get install postgresql) or set POSTPUB_PG_BIN to their directory")]
    NoBinaries {
        /// The directories tried, comma-separated.
        looked: String,
    },
    /// `POSTPUB_PG_BIN` names a directory without the server programs.
    #[error("POSTPUB_PG_BIN={dir} has no {missing}")]
    IncompleteBinaries {
        /// The directory as given.
        dir: PathBuf,
        /// The first program missing there.
        missing: &'static str,
    },
    /// We are root and there is no `postgres` user to run the server as.
    #[error("running as root, and there is no `postgres` OS user to run PostgreSQL as (it refuses to run as root)")]
    NoUser,
    /// A file or directory operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// A server program could not be started at all.
    #[error("cannot run {}: {source}", tool.display())]
    Spawn {
        /// The program.
        tool: PathBuf,
        /// Why it could not be started.
        source: io::Error,
    },
    /// A server program failed.
    #[error("{what} failed ({status}): {detail}")]
    Tool {
        /// The program and what it was asked to do (`initdb`, `pg_ctl start`).
        what: String,
        /// How it exited (or that it did not get ready in time).
        status: String,
        /// The last lines it printed, and of the server log for `pg_ctl`.
        detail: String,
    },
    /// A state file of a shared cluster does not parse.
    #[error("cannot read {}: {message}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

impl Error {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
        let path = path.to_owned();
        move |source| Error::Io { what, path, source }
    }
}

/// The directory of the server programs (`initdb`, `pg_ctl`, `postgres`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// `POSTPUB_PG_BIN` when set (and then only it), else `pg_config --bindir`, else the
    /// highest version under [`VERSIONED_ROOT`]. Debian's `pg_config` comes with libpq-dev
    /// and may name a directory without the server, hence the fallback.
    pub fn find() -> Result<Binaries, Error> {
        let chosen = std::env::var_os("POSTPUB_PG_BIN")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Binaries::find_with(chosen, pg_config_bindir(), Path::new(VERSIONED_ROOT))
    }

    /// [`Binaries::find`] with its inputs given: the override, what `pg_config --bindir`
    /// said, and the root of the versioned directories.
    pub fn find_with(
        chosen: Option<PathBuf>,
        pg_config: Option<PathBuf>,
        versioned_root: &Path,
    ) -> Result<Binaries, Error> {
        if let Some(dir) = chosen {
            return match missing_tool(&dir) {
                None => Ok(Binaries { dir }),
                Some(missing) => Err(Error::IncompleteBinaries { dir, missing }),
            };
        }
        let mut looked = Vec::new();
        for dir in pg_config.into_iter().chain(versioned_dirs(versioned_root)) {
            if missing_tool(&dir).is_none() {
                return Ok(Binaries { dir });
            }
            looked.push(dir.display().to_string());
        }
        if looked.is_empty() {
            looked.push(format!("pg_config, {}/*/bin", versioned_root.display()));
        }
        Err(Error::NoBinaries {
            looked: looked.join(", "),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The first server program `dir` lacks.
fn missing_tool(dir: &Path) -> Option<&'static str> {
    TOOLS.into_iter().find(|t| !dir.join(t).is_file())
}

fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !dir.trim().is_empty()).then(|| PathBuf::from(dir.trim()))
}

/// `<root>/<version>/bin`, highest version first (`16` before `15` before `9.6`).
fn versioned_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|p| p.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// The OS user the server programs run as when we are root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    uid: u32,
    gid: u32,
}

impl Account {
    /// `None` when we are not root (the programs run as us), the `postgres` user otherwise.
    fn for_server() -> Result<Option<Account>, Error> {
        if effective_uid()? != 0 {
            return Ok(None);
        }
        let passwd = std::fs::read_to_string("/etc/passwd")
            .map_err(Error::io("reading", Path::new("/etc/passwd")))?;
        let account = passwd.lines().find_map(|l| {
            let mut f = l.split(':');
            if f.next()? != "postgres" {
                return None;
            }
            let (_password, uid, gid) = (f.next()?, f.next()?, f.next()?);
            Some(Account {
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
            })
        });
        account.map(Some).ok_or(Error::NoUser)
    }
}

/// Who we are (`/proc/self` belongs to the process's effective user).
fn effective_uid() -> Result<u32, Error> {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(Error::io("reading", Path::new("/proc/self")))
}

/// What identifies a running cluster; enough to control it from another process (the
/// shared cluster's state file holds it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// Top directory: `data/`, `server.log`, the socket.
    pub dir: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The server programs it was made with.
    pub binaries: Binaries,
    /// Who runs it, `None` for us.
    pub run_as: Option<Account>,
}

impl Info {
    /// URL of database `dbname` as user `postgres`.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{dbname}", self.port)
    }
}

/// A throwaway cluster. Dropping it stops the server (`-m immediate`) and removes its
/// directory, unless [`Cluster::keep`] or [`Cluster::into_info`] was called.
#[derive(Debug)]
pub struct Cluster {
    info: Info,
    /// Stop and remove on drop.
    armed: AtomicBool,
    /// The postmaster, when we started it, to reap once it stops.
    postmaster: Mutex<Option<Child>>,
}

impl Cluster {
    /// Creates a cluster in a new directory under the temp dir and starts it.
    pub fn start(binaries: &Binaries) -> Result<Cluster, Error> {
        Cluster::start_in(&std::env::temp_dir(), binaries)
    }

    /// Creates a cluster in a new directory under `parent` and starts it. On failure
    /// nothing is left behind.
    pub fn start_in(parent: &Path, binaries: &Binaries) -> Result<Cluster, Error> {
        let run_as = Account::for_server()?;
        let dir = parent.join(format!(
            "postpub-pg-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        // Not create_dir_all: under a shared /tmp the name must be new, never someone's
        // directory or symlink.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(Error::io("creating", &dir))?;
        // From here on, dropping `cluster` (an error below) removes the directory.
        let cluster = Cluster {
            info: Info {
                dir,
                port: 0,
                binaries: binaries.clone(),
                run_as,
            },
            armed: AtomicBool::new(true),
            postmaster: Mutex::new(None),
        };
        cluster.chown(&cluster.info.dir)?;
        let data = cluster.data();
        cluster.run(
            "initdb",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-A"),
                OsStr::new("trust"),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("-E"),
                OsStr::new("UTF8"),
                OsStr::new("--locale=C"),
                OsStr::new("--no-sync"),
            ],
        )?;
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(Error::io("reading", &conf))?;
        text.push_str("\n# postpub throwaway cluster: port and socket\ninclude 'postpub.conf'\n");
        std::fs::write(&conf, text).map_err(Error::io("writing", &conf))?;
        cluster.listen()
    }

    /// Picks a free port and starts the server there; tries another port when someone took
    /// the one we picked before the server could bind it.
    fn listen(mut self) -> Result<Cluster, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.info.port = free_port().map_err(Error::io("binding", Path::new("127.0.0.1:0")))?;
            let settings = self.data().join("postpub.conf");
            std::fs::write(
                &settings,
                format!(
                    "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
                     fsync = off\nfull_page_writes = off\nmax_connections = 200\n\
                     shared_buffers = 32MB\nlog_min_messages = warning\n\
                     log_line_prefix = '%m [%p] '\n",
                    self.info.port,
                    self.info.dir.display().to_string().replace('\'', "''"),
                ),
            )
            .map_err(Error::io("writing", &settings))?;
            let before = self.log().len();
            match self.start_postmaster() {
                Ok(()) => return Ok(self),
                Err(e) if attempt < PORT_ATTEMPTS => {
                    let log = self.log();
                    if !log[before.min(log.len())..].contains("could not bind") {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts the postmaster as our own child, where `pg_ctl start` would leave it to init:
    /// so we reap it when it stops, and no exited server lingers as a zombie for as long as
    /// init takes to notice (seconds, on some machines).
    fn start_postmaster(&self) -> Result<(), Error> {
        let log_path = self.info.dir.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(Error::io("opening", &log_path))?;
        // `pg_ctl` (restart, start) appends to it as the cluster's user.
        self.chown(&log_path)?;
        let log_too = log.try_clone().map_err(Error::io("opening", &log_path))?;
        let mut cmd = self.command("postgres");
        cmd.arg("-D").arg(self.data()).stdout(log).stderr(log_too);
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            tool: self.info.binaries.tool("postgres"),
            source,
        })?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = child
                .try_wait()
                .map_err(Error::io("waiting for", &log_path))?;
            if let Some(status) = exited {
                return Err(self.failure("postgres", status.to_string(), ""));
            }
            if self.ready(child.id()) {
                *self.postmaster.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let status = format!("not ready within {}s", START_TIMEOUT.as_secs());
                return Err(self.failure("postgres", status, ""));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the postmaster `pid` says it takes connections (`postmaster.pid`: its pid on
    /// line 1, its status on line 8, as `pg_ctl -w` reads it).
    fn ready(&self, pid: u32) -> bool {
        let Ok(text) = std::fs::read_to_string(self.data().join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        lines.first() == Some(&pid.to_string().as_str()) && lines.get(7) == Some(&"ready")
    }

    /// A cluster someone else started (from its [`Info`]); dropping it stops and removes it.
    pub fn from_info(info: Info) -> Cluster {
        Cluster {
            info,
            armed: AtomicBool::new(true),
            postmaster: Mutex::new(None),
        }
    }

    /// Makes the server take TLS connections only (for TLS tests): `ssl = on` with this
    /// certificate and key (PEM), and a `pg_hba.conf` whose only TCP entry is `hostssl`
    /// with scram-sha-256 passwords (set one first, while the server still trusts). The
    /// socket in [`Cluster::dir`] stays `trust`. Restarts the server.
    pub fn require_tls(&self, cert_pem: &str, key_pem: &str) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt as _;
        let data = self.data();
        for (name, text) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            std::fs::write(&path, text).map_err(Error::io("writing", &path))?;
            // The server refuses a key others can read.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(Error::io("writing", &path))?;
            self.chown(&path)?;
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(Error::io("reading", &conf))?;
        text.push_str("\n# postpub TLS test\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).map_err(Error::io("writing", &conf))?;
        let hba = data.join("pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .map_err(Error::io("writing", &hba))?;
        self.ctl(["restart", "-m", "fast"])
    }

    /// Gives up ownership: the server keeps running and the directory stays.
    pub fn into_info(self) -> Info {
        self.keep();
        self.info.clone()
    }

    /// Leaves the directory (and the server, if still running) alone when dropped.
    pub fn keep(&self) {
        self.armed.store(false, Ordering::Relaxed);
    }

    /// Where it is and who runs it.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// Top directory.
    pub fn dir(&self) -> &Path {
        &self.info.dir
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.info.dir.join("data")
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.info.port
    }

    /// URL of database `dbname` as user `postgres`.
    pub fn url(&self, dbname: &str) -> String {
        self.info.url(dbname)
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.info.dir.join("server.log")).unwrap_or_default()
    }

    /// The postmaster's pid, while it runs.
    pub fn postmaster_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
    }

    /// Whether the server runs and takes TCP connections.
    pub fn answers(&self) -> bool {
        let running = self
            .postmaster_pid()
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        running
            && std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], self.info.port)),
                Duration::from_secs(2),
            )
            .is_ok()
    }

    /// `pg_ctl <args>` (`start`, `stop -m fast`, `restart -m immediate` …), waiting up to
    /// 60 s for it to take effect.
    pub fn ctl<I, S>(&self, args: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (cmd, what) = self.ctl_command(args);
        let out = self.output(cmd)?;
        self.check(&what, out)
    }

    /// The `pg_ctl` command [`Cluster::ctl`] runs, for callers that run it asynchronously
    /// (then [`Cluster::check`] its output), and what it does (`pg_ctl start`).
    pub fn ctl_command<I, S>(&self, args: I) -> (Command, String)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let what = match args.first() {
            Some(a) => format!("pg_ctl {}", a.to_string_lossy()),
            None => "pg_ctl".to_owned(),
        };
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.info.dir.join("server.log"))
            .args(["-w", "-t", "60"])
            .args(args);
        (cmd, what)
    }

    /// A server program as the cluster's user, in its directory, in a process group of its
    /// own: a Ctrl-C at the terminal reaches postpub, which stops the cluster in order,
    /// rather than killing `initdb` or `pg_ctl` halfway.
    pub fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.info.binaries.tool(tool));
        if let Some(a) = self.info.run_as {
            cmd.uid(a.uid).gid(a.gid);
        }
        cmd.current_dir(&self.info.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        cmd
    }

    fn output(&self, mut cmd: Command) -> Result<Output, Error> {
        cmd.output().map_err(|source| Error::Spawn {
            tool: PathBuf::from(cmd.get_program()),
            source,
        })
    }

    fn run<I, S>(&self, tool: &str, args: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(tool);
        cmd.args(args);
        let out = self.output(cmd)?;
        self.check(tool, out)
    }

    /// Turns a failed run of a server program (`what`: `initdb`, `pg_ctl start` …) into an
    /// error carrying its last lines (and the server log's, for `pg_ctl`).
    pub fn check(&self, what: &str, out: Output) -> Result<(), Error> {
        if out.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        Err(self.failure(what, out.status.to_string(), &text))
    }

    /// The error for `what` having failed: the last lines of its `output`, and of the
    /// server log for the server itself and `pg_ctl`.
    fn failure(&self, what: &str, status: String, output: &str) -> Error {
        let mut text = output.to_owned();
        if what.starts_with("pg_ctl") || what == "postgres" {
            text.push_str(&self.log());
        }
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        Error::Tool {
            what: what.to_owned(),
            status,
            detail: lines[lines.len().saturating_sub(3)..].join(" / "),
        }
    }

    /// Hands `path` (made by us) to the cluster's user.
    pub fn chown(&self, path: &Path) -> Result<(), Error> {
        match self.info.run_as {
            Some(a) => std::os::unix::fs::chown(path, Some(a.uid), Some(a.gid))
                .map_err(Error::io("handing to the postgres user", path)),
            None => Ok(()),
        }
    }

    /// Stops the server (`-m fast`, `-m immediate` if that fails) and removes the directory.
    pub fn remove(self) -> Result<(), Error> {
        self.keep();
        let stopped = self
            .stop_server("fast")
            .or_else(|_| self.stop_server("immediate"));
        let removed =
            std::fs::remove_dir_all(&self.info.dir).map_err(Error::io("removing", &self.info.dir));
        stopped.and(removed)
    }

    fn stop_server(&self, mode: &str) -> Result<(), Error> {
        if self.postmaster_pid().is_some() {
            self.ctl(["stop", "-m", mode])?;
        }
        self.reap();
        Ok(())
    }

    /// Reaps the postmaster we started, now that it is stopped (it removes its pid file
    /// just before it exits; after a restart by `pg_ctl`, ours has exited long ago).
    fn reap(&self) {
        let Some(mut child) = self
            .postmaster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(None) = child.try_wait() {
            if Instant::now() > deadline {
                // Still running after all: leave it to init rather than hang.
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.armed.load(Ordering::Relaxed) {
            let _ = self.stop_server("immediate");
            let _ = std::fs::remove_dir_all(&self.info.dir);
        }
    }
}

/// A port nothing listens on right now (the kernel's pick; someone may take it before the
/// server binds it, which [`Cluster::start`] retries).
pub fn free_port() -> io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()
        .map(|a| a.port())
}

/// Why the server behind a failed connection may be replaced by a throwaway one: nothing
/// listens there, or it does not let user `postgres` in without a password. `None` for any
/// other failure (a timeout, a missing database …), which stays an error.
pub fn stand_in_reason(e: &db::Error) -> Option<&'static str> {
    let db::Error::Connect { error, .. } = e else {
        return None;
    };
    if let Some(dbe) = error.as_db_error() {
        // Class 28: invalid authorization (no pg_hba entry, peer or password failure).
        return dbe
            .code()
            .code()
            .starts_with("28")
            .then_some("authentication failed");
    }
    let cause = std::error::Error::source(error);
    if let Some(io) = cause.and_then(|c| c.downcast_ref::<io::Error>()) {
        return matches!(
            io.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::AddrNotAvailable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::NotFound
        )
        .then_some("nothing listens there");
    }
    // The driver's own words when the server asks for a password we do not have.
    let text = cause.map(|c| c.to_string()).unwrap_or_default();
    (text == "password missing" || error.to_string().starts_with("authentication error"))
        .then_some("it wants a password")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_tried_highest_first() {
        let root = std::env::temp_dir().join(format!("postpub-test-{}", uuid::Uuid::new_v4()));
        for v in ["9.6", "15", "16", "notes"] {
            std::fs::create_dir_all(root.join(v).join("bin")).expect("mkdir");
        }
        let dirs = versioned_dirs(&root);
        let _ = std::fs::remove_dir_all(&root);
        let names: Vec<String> = dirs
            .iter()
            .map(|d| {
                d.parent()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(names, ["16", "15", "9.6"]);
    }

    #[test]
    fn without_server_programs_the_error_says_what_to_install() {
        let root = std::env::temp_dir().join(format!("postpub-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(root.join("15").join("bin")).expect("mkdir");
        let e = Binaries::find_with(None, Some(PathBuf::from("/nonexistent/bin")), &root)
            .expect_err("no programs anywhere");
        let _ = std::fs::remove_dir_all(&root);
        let msg = e.to_string();
        assert!(msg.contains("apt-get install postgresql"), "{msg}");
        assert!(msg.contains("/nonexistent/bin"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn an_override_without_the_programs_is_named() {
        let e = Binaries::find_with(Some(PathBuf::from("/nonexistent")), None, Path::new("/"))
            .expect_err("bad override");
        assert_eq!(e.to_string(), "POSTPUB_PG_BIN=/nonexistent has no initdb");
    }

    #[test]
    fn an_override_wins_over_everything_else() {
        let dir = std::env::temp_dir().join(format!("postpub-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for t in TOOLS {
            std::fs::write(dir.join(t), "").expect("touch");
        }
        let found = Binaries::find_with(
            Some(dir.clone()),
            Some(PathBuf::from("/elsewhere")),
            Path::new("/"),
        );
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found.expect("override").dir(), dir);
    }
}
