//! Throwaway PostgreSQL clusters (`postpub::cluster`): one starts, answers, and leaves
//! nothing behind; the shared one outlives each user and goes with the last; `postpub
//! demo` brings its own when no server answers (a network namespace without one), names
//! what to install when it cannot, and still fails on a server it was told to use.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{bin, holds_for, wait_until};
use postpub::cluster::{shared, Binaries, Cluster};

/// A cluster of its own, started off the async threads.
async fn started() -> Cluster {
    let bins = Binaries::find().unwrap_or_else(|e| panic!("{e}"));
    tokio::task::spawn_blocking(move || Cluster::start(&bins))
        .await
        .expect("thread")
        .unwrap_or_else(|e| panic!("start: {e}"))
}

/// Neither the cluster's directory nor its postmaster is left, not even as a zombie: the
/// postmaster is the starter's child, reaped when it stops.
fn assert_gone(dir: &Path, pid: i32) {
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "postmaster {pid} is left"
    );
}

fn alive(pid: i32) -> bool {
    // A stopped postmaster that is not our child may linger as a zombie until init reaps it.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn uid_of(pid: i32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test]
async fn a_cluster_starts_answers_and_leaves_nothing_when_removed() {
    let cluster = started().await;
    let dir = cluster.dir().to_owned();
    assert!(
        dir.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("postpub-pg-")),
        "{}",
        dir.display()
    );
    let pid = cluster.postmaster_pid().expect("a running postmaster");
    assert!(alive(pid));
    if uid_of(std::process::id() as i32) == Some(0) {
        assert_ne!(uid_of(pid), Some(0), "PostgreSQL must not run as root");
    }
    let c = common::connect(&cluster.url("postgres")).await;
    let user: String = c
        .query_one("select current_user::text", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(user, "postgres");
    drop(c);
    tokio::task::spawn_blocking(move || cluster.remove())
        .await
        .expect("thread")
        .unwrap_or_else(|e| panic!("remove: {e}"));
    assert_gone(&dir, pid);
}

#[tokio::test]
async fn dropping_a_cluster_stops_it_and_removes_its_directory() {
    let cluster = started().await;
    let (dir, pid) = (
        cluster.dir().to_owned(),
        cluster.postmaster_pid().expect("pid"),
    );
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .expect("thread");
    assert_gone(&dir, pid);
}

#[tokio::test]
async fn the_shared_cluster_serves_every_user_and_goes_with_the_last() {
    let state = shared::state_dir(&format!("throwaway-test-{}", uuid::Uuid::new_v4()));
    // Stands in for cargo: while it lives, the reaper waits out its grace (60 s here).
    let mut watched = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("spawn sleep");
    let watched_pid = watched.id().to_string();
    let reaper = |dir: &Path| {
        let mut cmd = Command::new(bin());
        cmd.arg("cluster-reaper").arg("--state-dir").arg(dir).args([
            "--watch-pid",
            &watched_pid,
            "--grace",
            "60s",
        ]);
        cmd
    };
    let a = shared::join(&state, reaper).unwrap_or_else(|e| panic!("first user: {e}"));
    let b = shared::join(&state, reaper).unwrap_or_else(|e| panic!("second user: {e}"));
    assert_eq!(a.port(), b.port(), "both use one cluster");
    let cluster_dir = a.dir().to_owned();
    let pid: i32 = std::fs::read_to_string(cluster_dir.join("data/postmaster.pid"))
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("pid");
    drop(a);
    let _ = watched.kill();
    let _ = watched.wait();
    // One user is left: the cluster stays although cargo (the watched process) is gone.
    holds_for(
        Duration::from_millis(1500),
        Duration::from_millis(100),
        "the cluster serving its last user",
        || async {
            let c = common::connect(&b.url("postgres")).await;
            c.query_one("select 1", &[]).await.expect("still answers");
            state.exists()
        },
    )
    .await;
    drop(b);
    wait_until(
        Duration::from_secs(20),
        "the reaper to stop and remove the cluster",
        || async { !state.exists() && !cluster_dir.exists() && !alive(pid) },
    )
    .await;
}

#[test]
fn a_shared_cluster_its_reaper_cannot_start_leaves_nothing_and_says_why() {
    let state = shared::state_dir(&format!("throwaway-test-{}", uuid::Uuid::new_v4()));
    let e = shared::join(&state, |dir| {
        let mut cmd = Command::new(bin());
        cmd.arg("cluster-reaper")
            .arg("--state-dir")
            .arg(dir)
            .env("POSTPUB_PG_BIN", "/nonexistent");
        cmd
    })
    .expect_err("no cluster, no lease");
    assert!(
        e.to_string()
            .contains("POSTPUB_PG_BIN=/nonexistent has no initdb"),
        "{e}"
    );
    assert!(!state.exists(), "{} is left", state.display());
}

#[test]
fn a_state_directory_others_can_write_to_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let state = shared::state_dir(&format!("throwaway-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&state).expect("mkdir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let result = shared::join(&state, |_| Command::new("true"));
    let _ = std::fs::remove_dir_all(&state);
    let e = result.expect_err("a world-writable state directory");
    assert!(e.to_string().contains("only we can write to"), "{e}");
}

/// Runs `script` (`$0` is the postpub binary) with `sh` in new namespaces (`-n`, or `-nm`),
/// where nothing listens on 127.0.0.1:5432; `None` when namespaces are not permitted here.
fn in_namespace(flags: &str, script: &str, env: &[(&str, &str)]) -> Option<Output> {
    let ok = Command::new("unshare")
        .args([flags, "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return None;
    }
    Some(
        Command::new("unshare")
            .args([flags, "sh", "-c", script, bin()])
            .env_remove("DATABASE_URL")
            .env_remove("POSTPUB_PG_BIN")
            .env_remove("POSTPUB_CONFIG")
            .env("RUST_BACKTRACE", "0")
            .envs(env.iter().copied())
            .output()
            .expect("run unshare"),
    )
}

/// The processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(cmd);
            }
        }
    }
    found
}

#[test]
fn the_demo_brings_its_own_postgres_when_none_answers_and_leaves_nothing() {
    // A temp dir of its own, to see that nothing is left in it; PostgreSQL (run as
    // `postgres` when we are root) must be able to enter it.
    let tmp = std::env::temp_dir().join(format!("postpub-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let tmp_s = tmp.display().to_string();
    let Some(out) = in_namespace(
        "-n",
        "ip link set lo up && exec \"$0\" demo",
        &[("TMPDIR", tmp_s.as_str())],
    ) else {
        let _ = std::fs::remove_dir_all(&tmp);
        println!("SKIPPED: network namespaces (unshare -n) are not permitted here");
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let left: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .expect("read temp dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    let procs = processes_mentioning(&tmp_s);
    let _ = std::fs::remove_dir_all(&tmp);
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
    assert!(
        stdout
            .lines()
            .next()
            .is_some_and(|l| l.contains("starting a throwaway one")),
        "{stdout}"
    );
    for want in ["current", "superseded", "archived", "errored", "deleted"] {
        assert!(
            stdout.contains(want),
            "demo output lacks {want:?}:\n{stdout}"
        );
    }
    assert!(left.is_empty(), "left in the temp dir: {left:?}");
    assert!(procs.is_empty(), "processes left: {procs:?}");
}

#[test]
fn without_a_server_or_its_programs_the_demo_says_what_to_install() {
    // Hide the server programs: a private mount namespace with an empty
    // /usr/lib/postgresql, and no pg_config on the PATH.
    let script = "ip link set lo up && mount -t tmpfs none /usr/lib/postgresql \
                  && exec /usr/bin/env PATH=/nonexistent \"$0\" demo";
    let Some(out) = in_namespace("-nm", script, &[]) else {
        println!("SKIPPED: namespaces (unshare -nm) are not permitted here");
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains("apt-get install postgresql"), "{stderr}");
}

#[test]
fn the_demo_still_fails_on_a_server_it_was_told_to_use() {
    let unreachable = "postgres://postgres@127.0.0.1:1/x";
    // The flag, the environment, the configuration (here through POSTPUB__*).
    let cases = [
        (vec!["demo", "--database-url", unreachable], vec![]),
        (vec!["demo"], vec![("DATABASE_URL", unreachable)]),
        (vec!["demo"], vec![("POSTPUB__DATABASE__URL", unreachable)]),
    ];
    for (args, env) in cases {
        let out = Command::new(bin())
            .args(&args)
            .env_remove("DATABASE_URL")
            .env("RUST_BACKTRACE", "0")
            .envs(env.iter().copied())
            .output()
            .expect("run postpub");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?} {env:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?} {env:?}: one line: {stderr}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains("127.0.0.1:1"),
            "{args:?} {env:?}: {stderr}"
        );
        assert!(!stdout.contains("throwaway"), "{args:?} {env:?}: {stdout}");
    }
}
