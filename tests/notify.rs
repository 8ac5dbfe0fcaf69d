//! systemd's notify protocol, as systemd would see it: the real binary with
//! `NOTIFY_SOCKET` pointing at a datagram socket read here and a 2 s watchdog.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{self, Proc};
use common::{bin, TestDb};

struct Notifications {
    sock: UnixDatagram,
    start: Instant,
    /// (seconds since start, line)
    got: Vec<(f64, String)>,
}

impl Notifications {
    /// Reads until `until` (seconds since start) or until `stop` matches a new line.
    fn read_until(&mut self, until: f64, stop: impl Fn(&str) -> bool) -> Option<f64> {
        loop {
            let left = until - self.start.elapsed().as_secs_f64();
            if left <= 0.0 {
                return None;
            }
            self.sock
                .set_read_timeout(Some(Duration::from_secs_f64(left.max(0.001))))
                .expect("timeout");
            let mut buf = [0u8; 4096];
            let Ok(n) = self.sock.recv(&mut buf) else {
                return None;
            };
            let at = self.start.elapsed().as_secs_f64();
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let mut hit = false;
            for line in text.lines().filter(|l| !l.is_empty()) {
                hit |= stop(line);
                self.got.push((at, line.to_owned()));
            }
            if hit {
                return Some(at);
            }
        }
    }

    fn lines(&self) -> Vec<&str> {
        self.got.iter().map(|(_, l)| l.as_str()).collect()
    }
}

fn start(db: &TestDb, sock: &std::path::Path) -> Proc {
    // WATCHDOG_PID must be the daemon's own pid, as systemd sets it: exec keeps the pid.
    Proc::launch(
        &process::config(&db.url, "", "steps = [\"noop\"]", ""),
        |cfg| {
            let mut cmd = Command::new("sh");
            cmd.args([
                "-c",
                "WATCHDOG_PID=$$; export WATCHDOG_PID; exec \"$@\"",
                "sh",
            ])
            .arg(bin())
            .args(["run", "--config"])
            .arg(cfg)
            .env("NOTIFY_SOCKET", sock)
            .env("WATCHDOG_USEC", "2000000")
            .env_remove("DATABASE_URL");
            cmd
        },
    )
}

#[tokio::test]
async fn ready_then_watchdog_pings_then_stopping_and_exit_0() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("postpub-notify-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("notify.sock");
    let mut n = Notifications {
        sock: UnixDatagram::bind(&path).expect("bind notify socket"),
        start: Instant::now(),
        got: Vec::new(),
    };
    let mut child = start(&db, &path);

    let ready = n.read_until(5.0, |l| l == "READY=1");
    let Some(ready) = ready else {
        panic!("no READY=1 within 5 s: {:?}", n.lines());
    };

    // Pings at half the watchdog interval: never 2 s without one.
    n.read_until(ready + 4.5, |_| false);
    let pings: Vec<f64> = n
        .got
        .iter()
        .filter(|(t, l)| l == "WATCHDOG=1" && *t >= ready)
        .map(|(t, _)| *t)
        .collect();
    let mut edges = vec![ready];
    edges.extend(&pings);
    edges.push(ready + 4.5);
    let largest_gap = edges.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(
        pings.len() >= 3 && largest_gap < 2.0,
        "{} pings, largest gap {largest_gap:.2}s: {:?}",
        pings.len(),
        n.got
    );

    // SIGHUP: RELOADING=1, then READY=1 again.
    child.signal("-HUP");
    let t = n.start.elapsed().as_secs_f64();
    assert!(
        n.read_until(t + 5.0, |l| l == "RELOADING=1").is_some(),
        "no RELOADING=1: {:?}",
        n.lines()
    );
    assert!(
        n.read_until(t + 5.0, |l| l == "READY=1").is_some(),
        "no READY=1 after the reload: {:?}",
        n.lines()
    );
    assert!(
        n.lines().iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 carries MONOTONIC_USEC: {:?}",
        n.lines()
    );

    child.signal("-TERM");
    let t = n.start.elapsed().as_secs_f64();
    let stopping = n.read_until(t + 5.0, |l| l == "STOPPING=1");
    let status = child.wait_exit(Duration::from_secs(15)).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(stopping.is_some(), "no STOPPING=1: {:?}", n.lines());
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn without_notify_socket_nothing_is_sent_and_the_daemon_runs_as_usual() {
    // The in-process daemon of every other test runs without NOTIFY_SOCKET; this checks the
    // functions themselves are harmless there.
    assert!(std::env::var_os("NOTIFY_SOCKET").is_none());
    postpub::systemd::ready("test");
    postpub::systemd::watchdog();
    postpub::systemd::stopping();
    assert_eq!(postpub::systemd::watchdog_interval(), None);
}
