//! The real `postpub` binary as a child process, for tests where signals, `kill -9` or the
//! process's memory matter: a config file and a log file in a temp dir, signals by pid,
//! peak memory from `/proc/<pid>/status`. A daemon still running when dropped is killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// A running `postpub run`.
pub struct Proc {
    pub child: Child,
    /// Its stderr (the logs).
    pub log: PathBuf,
    dir: PathBuf,
}

impl Proc {
    /// Starts `postpub run` with `toml` as its configuration file.
    pub fn start(toml: &str) -> Proc {
        Proc::start_with_env(toml, &[])
    }

    /// The same with extra environment variables (e.g. `TOKIO_WORKER_THREADS=1` for a
    /// one-CPU deployment).
    pub fn start_with_env(toml: &str, env: &[(&str, &str)]) -> Proc {
        Proc::launch(toml, |cfg| {
            let mut cmd = Command::new(super::bin());
            cmd.args(["run", "--config"])
                .arg(cfg)
                .envs(env.iter().copied());
            cmd
        })
    }

    /// Starts the command `make` builds from the path of the configuration file (for a
    /// wrapper, as systemd would run it); its stderr goes to the log file.
    pub fn launch(toml: &str, make: impl FnOnce(&Path) -> Command) -> Proc {
        let dir = std::env::temp_dir().join(format!(
            "postpub-proc-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cfg = dir.join("postpub.toml");
        std::fs::write(&cfg, toml).expect("config");
        let log = dir.join("postpub.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = make(&cfg)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn postpub");
        Proc { child, log, dir }
    }

    /// Its configuration file (rewrite it, then send `-HUP`, to reload).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("postpub.toml")
    }

    /// Replaces its configuration file with `toml` (takes effect on `-HUP`).
    pub fn rewrite_config(&self, toml: &str) {
        std::fs::write(self.config_path(), toml).expect("rewrite config");
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`-TERM`, `-KILL`, …).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill {sig} {}", self.pid());
    }

    /// `kill -9`, then reaps it.
    pub fn kill9(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// Waits for it to exit; panics (the drop kills it) if it takes longer than `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let child = &mut self.child;
        super::wait_for(within, "postpub to exit (its log is kept)", || {
            let st = child.try_wait().expect("try_wait");
            async move { st }
        })
        .await
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident set size so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        status_kb(self.pid(), "VmHWM:") * 1024
    }

    /// Current resident set size (`VmRSS`), in bytes.
    pub fn rss(&self) -> u64 {
        status_kb(self.pid(), "VmRSS:") * 1024
    }
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("keeping daemon log {}", self.log.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A TOML configuration for `postpub run` against `url`; each other argument is the body
/// of its section (TOML lines), e.g. `worker = "concurrency = 8\nlease = \"2s\""`.
pub fn config(url: &str, worker: &str, pipeline: &str, command: &str) -> String {
    format!(
        "[database]\nurl = \"{url}\"\nconnect_timeout = \"2s\"\n\
         [worker]\n{worker}\n\
         [pipeline]\n{pipeline}\n\
         [pipeline.command]\n{command}\n\
         [http]\nlisten = \"\"\n"
    )
}

/// Starts a daemon running validate and then `script` (30 s timeout) with the worker
/// section `worker`.
pub fn start_validate_and_command(url: &str, worker: &str, script: &super::Script) -> Proc {
    Proc::start(&config(
        url,
        worker,
        "steps = [\"validate\", \"command\"]",
        &format!("program = \"{}\"\ntimeout = \"30s\"", script.program()),
    ))
}
