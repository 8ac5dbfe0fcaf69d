//! One throwaway cluster shared by processes that come and go: the test binaries of a
//! `cargo test` run, which cargo starts one after another, each needing the cluster only
//! while it runs, none knowing whether another one follows.
//!
//! Why this design: nothing runs after the last test binary (cargo has no teardown hook and
//! a test binary none at exit), and starting a cluster per binary costs seconds each. So the
//! first process that needs the cluster starts a small detached *reaper* process ([`reap`],
//! `postpub cluster-reaper`), which starts the cluster and stops it once nobody uses it:
//! right away when the process it watches (cargo, the test binaries' parent) has exited,
//! after a grace period otherwise, so that the gaps between binaries (or binaries that need
//! no database) do not restart it. The postmaster is the reaper's child, so the reaper also
//! reaps it: no stopped server waits as a zombie for init. Users hold a shared `flock` for
//! as long as they live, so a process that crashes or is killed lets go too; the kernel
//! does the bookkeeping.
//!
//! The state directory (`<temp>/postpub-shared-<key>`, one per key, e.g. per target dir):
//! - `users`: shared lock held by each process using the cluster; the reaper takes it
//!   exclusively to see that nobody does.
//! - `setup`: exclusive lock while a process starts the cluster (or waits for the reaper
//!   to) or the reaper stops it.
//! - `reaper`: exclusive lock held by the one reaper watching the directory;
//!   `reaper.log` its errors.
//! - `cluster.json`: the running cluster's [`Info`], written once it takes connections.
//! - `postpub-pg-…`: the cluster's own directory.
//!
//! The reaper removes the lock files too (holding every lock), so each lock is taken on an
//! open file and then checked to still be the file at that path; a process that finds it
//! was removed starts over with a new one.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Binaries, Cluster, Error, Info};

/// How often the reaper looks whether anyone still uses the cluster.
const POLL: Duration = Duration::from_millis(100);

/// How long a user waits for the reaper to start the cluster.
const START_WAIT: Duration = Duration::from_secs(120);

/// A process's use of the shared cluster; the cluster stays up at least as long as this.
#[derive(Debug)]
pub struct Lease {
    /// Shared lock on `users`, released when dropped or when the process ends.
    _users: File,
    info: Info,
}

impl Lease {
    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.info.port
    }

    /// URL of database `dbname` as user `postgres`.
    pub fn url(&self, dbname: &str) -> String {
        self.info.url(dbname)
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.info.dir
    }
}

/// Uses the cluster of `state`, starting it when none runs. Blocks while another process
/// starts or stops it. `reaper(state)` is the command of the reaper ([`reap`], `postpub
/// cluster-reaper`); this runs it detached when none watches `state`. On failure nothing is
/// left behind that nobody else uses.
pub fn join(state: &Path, reaper: impl Fn(&Path) -> Command) -> Result<Lease, Error> {
    loop {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(state)
            .map_err(Error::io("creating", state))?;
        check_ours(state)?;
        // The reaper may remove the directory between the lines above and the lock below.
        let Some(users) = lock_or_gone(&state.join("users"), Lock::Shared)? else {
            continue;
        };
        // While we hold `users`, the reaper removes nothing.
        return match start_or_find(state, &reaper) {
            Ok(info) => Ok(Lease {
                _users: users,
                info,
            }),
            Err(e) => {
                drop(users);
                // Unless someone else came meanwhile: no cluster, no state directory.
                let _ = tear_down_if_unused(state, &mut None);
                Err(e)
            }
        };
    }
}

/// The running cluster of `state`, started if need be, under `setup`.
fn start_or_find(state: &Path, reaper: &impl Fn(&Path) -> Command) -> Result<Info, Error> {
    let _setup = lock(&state.join("setup"), Lock::Exclusive)?;
    let file = state.join("cluster.json");
    if let Some(info) = read_info(&file)? {
        let cluster = Cluster::from_info(info);
        if cluster.answers() {
            // Its reaper normally runs; should it have died, a new one watches the cluster.
            if reaper_missing(state)? {
                spawn_reaper(state, reaper)?;
            }
            return Ok(cluster.into_info());
        }
        // A leftover that does not answer (the machine restarted, someone killed it):
        // dropping `cluster` removes it.
        drop(cluster);
        std::fs::remove_file(&file).map_err(Error::io("removing", &file))?;
    }
    if !reaper_missing(state)? {
        // A reaper that outlived its cluster: start one here; that reaper removes it.
        return start_cluster(state).map(Cluster::into_info);
    }
    // The reaper starts the cluster: the postmaster is then its child, which it reaps when
    // it stops it, rather than leaving a zombie to init.
    let mut child = spawn_reaper(state, reaper)?;
    let deadline = Instant::now() + START_WAIT;
    loop {
        if let Some(info) = read_info(&file)? {
            return Ok(info);
        }
        let exited = child
            .try_wait()
            .map_err(Error::io("waiting for the reaper of", state))?;
        if let Some(status) = exited {
            let log = std::fs::read_to_string(state.join("reaper.log")).unwrap_or_default();
            return Err(Error::State {
                path: state.to_owned(),
                message: format!(
                    "the reaper could not start the cluster ({status}): {}",
                    log.lines().last().unwrap_or("")
                ),
            });
        }
        if Instant::now() > deadline {
            return Err(Error::State {
                path: state.to_owned(),
                message: format!("no cluster within {}s", START_WAIT.as_secs()),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a cluster in `state` and records it in `cluster.json`.
fn start_cluster(state: &Path) -> Result<Cluster, Error> {
    let cluster = Cluster::start_in(state, &Binaries::find()?)?;
    let file = state.join("cluster.json");
    let tmp = state.join("cluster.json.tmp");
    let json = serde_json::to_vec(cluster.info()).map_err(|e| Error::State {
        path: file.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&tmp, json).map_err(Error::io("writing", &tmp))?;
    // Renamed into place, so that a reader never sees half of it.
    std::fs::rename(&tmp, &file).map_err(Error::io("writing", &file))?;
    Ok(cluster)
}

/// Whether no reaper watches `state` (a reaper holds `reaper` for its whole life).
fn reaper_missing(state: &Path) -> Result<bool, Error> {
    Ok(try_lock(&state.join("reaper"), Lock::Exclusive)?.is_some())
}

/// Runs the reaper detached: its own process group (a Ctrl-C at the terminal stops the
/// users, and it cleans up after them), no inherited output (it would keep a pipe reading
/// the users' output open), its errors in `state/reaper.log`.
fn spawn_reaper(state: &Path, reaper: &impl Fn(&Path) -> Command) -> Result<Child, Error> {
    let log_path = state.join("reaper.log");
    let log = File::create(&log_path).map_err(Error::io("creating", &log_path))?;
    let mut cmd = reaper(state);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0);
    cmd.spawn().map_err(|source| Error::Spawn {
        tool: PathBuf::from(cmd.get_program()),
        source,
    })
}

/// The reaper: starts the cluster of `state` if none runs, waits until nobody has used it
/// for `grace` (or nobody uses it and `watch`, a pid, has exited), then stops it and
/// removes `state` entirely. Returns at once when another reaper already watches `state`.
pub fn reap(state: &Path, watch: Option<u32>, grace: Duration) -> Result<(), Error> {
    check_ours(state)?;
    let Some(_reaper) = try_lock(&state.join("reaper"), Lock::Exclusive)? else {
        return Ok(());
    };
    // A watched process that is gone already (it may exit before we get here) counts as
    // gone, not as none.
    let watched = watch.map(Process::find);
    // A user waits for the cluster under `setup` (so no other starts one meanwhile).
    let mut own = match read_info(&state.join("cluster.json"))? {
        Some(_) => None,
        None => {
            let cluster = start_cluster(state)?;
            // Should we fail later, the cluster stays for its users; the next reaper
            // removes it.
            cluster.keep();
            Some(cluster)
        }
    };
    let mut idle_since: Option<Instant> = None;
    loop {
        std::thread::sleep(POLL);
        if !state.exists() {
            // Removed by hand: nothing left to watch.
            return Ok(());
        }
        if try_lock(&state.join("users"), Lock::Exclusive)?.is_none() {
            idle_since = None;
            continue;
        }
        let idle = *idle_since.get_or_insert_with(Instant::now);
        let watched_gone = match &watched {
            Some(Some(p)) => !p.alive(),
            Some(None) => true,
            None => false,
        };
        if !watched_gone && idle.elapsed() < grace {
            continue;
        }
        if tear_down_if_unused(state, &mut own)? {
            return Ok(());
        }
        idle_since = None;
    }
}

/// Stops the cluster of `state` (`own`, when the caller started it, to reap its
/// postmaster) and removes `state` entirely, unless someone uses it or is starting it;
/// says whether it did.
fn tear_down_if_unused(state: &Path, own: &mut Option<Cluster>) -> Result<bool, Error> {
    // Keep starters out, then make sure nobody uses it.
    let _setup = lock(&state.join("setup"), Lock::Exclusive)?;
    let Some(_users) = try_lock(&state.join("users"), Lock::Exclusive)? else {
        return Ok(false);
    };
    let stopped = match own.take() {
        Some(cluster) => cluster.remove(),
        None => match read_info(&state.join("cluster.json"))? {
            Some(info) => Cluster::from_info(info).remove(),
            None => Ok(()),
        },
    };
    // The locks we hold stay valid on the unlinked files until we return; whoever waits for
    // them then finds the files gone and starts over.
    let removed = std::fs::remove_dir_all(state).map_err(Error::io("removing", state));
    stopped.and(removed).map(|()| true)
}

/// Refuses a state directory someone else could have prepared: it names the programs the
/// reaper runs, so it must be ours and writable by us alone.
fn check_ours(state: &Path) -> Result<(), Error> {
    let meta = std::fs::symlink_metadata(state).map_err(Error::io("reading", state))?;
    if meta.is_dir() && meta.uid() == super::effective_uid()? && meta.mode() & 0o022 == 0 {
        Ok(())
    } else {
        Err(Error::State {
            path: state.to_owned(),
            message: "not a directory of ours that only we can write to; remove it".to_owned(),
        })
    }
}

/// The key directory for `key` (any text naming the users' scope, e.g. a target dir).
pub fn state_dir(key: &str) -> PathBuf {
    // FNV-1a: stable across processes and Rust versions, unlike `DefaultHasher`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    std::env::temp_dir().join(format!("postpub-shared-{h:016x}"))
}

fn read_info(file: &Path) -> Result<Option<Info>, Error> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::State {
                path: file.to_owned(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", file)(e)),
    }
}

#[derive(Clone, Copy)]
enum Lock {
    Shared,
    Exclusive,
}

/// Waits for the lock on `path`.
fn lock(path: &Path, kind: Lock) -> Result<File, Error> {
    lock_or_gone(path, kind)?.ok_or_else(|| {
        Error::io("locking", path)(std::io::Error::from(std::io::ErrorKind::NotFound))
    })
}

/// Waits for the lock on `path`; `None` when its directory is gone.
fn lock_or_gone(path: &Path, kind: Lock) -> Result<Option<File>, Error> {
    loop {
        let Some(file) = open(path)? else {
            return Ok(None);
        };
        match kind {
            Lock::Shared => file.lock_shared(),
            Lock::Exclusive => file.lock(),
        }
        .map_err(Error::io("locking", path))?;
        if still_there(&file, path)? {
            return Ok(Some(file));
        }
    }
}

/// The lock on `path` if nobody holds a conflicting one right now.
fn try_lock(path: &Path, kind: Lock) -> Result<Option<File>, Error> {
    loop {
        let Some(file) = open(path)? else {
            return Ok(None);
        };
        let got = match kind {
            Lock::Shared => file.try_lock_shared(),
            Lock::Exclusive => file.try_lock(),
        };
        match got {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(Error::io("locking", path)(e)),
        }
        if still_there(&file, path)? {
            return Ok(Some(file));
        }
    }
}

/// Opens (creating) a lock file; `None` when its directory is gone.
fn open(path: &Path) -> Result<Option<File>, Error> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("opening", path)(e)),
    }
}

/// Whether the locked `file` is still the one at `path` (the reaper did not remove it
/// between our open and our lock).
fn still_there(file: &File, path: &Path) -> Result<bool, Error> {
    let ours = file.metadata().map_err(Error::io("reading", path))?;
    match std::fs::metadata(path) {
        Ok(now) => Ok(now.ino() == ours.ino() && now.dev() == ours.dev()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("reading", path)(e)),
    }
}

/// A process, told apart from a later one with the same pid by its start time.
struct Process {
    pid: u32,
    started: u64,
}

impl Process {
    fn find(pid: u32) -> Option<Process> {
        Some(Process {
            pid,
            started: start_time(pid)?,
        })
    }

    fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.started)
    }
}

/// Field 22 of `/proc/<pid>/stat` (clock ticks after boot).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_alive_until_it_exits() {
        let me = Process::find(std::process::id()).expect("our own stat");
        assert!(me.alive());
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        let p = Process::find(pid);
        let _ = child.wait();
        if let Some(p) = p {
            assert!(!p.alive(), "a reaped child is gone");
        }
    }

    #[test]
    fn state_dirs_differ_per_key_and_name_postpub() {
        let a = state_dir("/work/a/target/debug");
        let b = state_dir("/work/b/target/debug");
        assert_ne!(a, b);
        assert!(a.display().to_string().contains("postpub"));
        assert_eq!(a, state_dir("/work/a/target/debug"));
    }
}
