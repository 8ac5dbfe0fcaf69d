//! The daemon's side of isolated baking: a pool of bake processes (`postpub bake-server`,
//! [`super::server`]), each reused from bake to bake and replaced when it dies.
//!
//! A bake is one exchange on one process ([`super::wire`]). Whatever happens inside the
//! process stays there: an allocation its memory limit refuses, a crash, a hang. The
//! daemon sees the pipe close (or the timeout pass), collects the exit status and the
//! last lines of stderr, and errors that version alone, permanently and at once: the same
//! recipe and body would do the same again. A process that cannot be started is a
//! transient failure (the binary being replaced, no free memory for a new process).
//!
//! The pool holds no lock while a bake runs; idle processes wait in a list. Bakes are
//! CPU-bound, so at most as many run at once as the machine has CPUs (more would not
//! finish sooner): the memory all bakes may take is bounded by CPUs ×
//! `pipeline.collate.max_memory_bytes`, whatever `worker.concurrency` is; other versions
//! wait for a turn (their leases are renewed meanwhile, and the timeout starts with the
//! bake). Dropping the pool, or a bake's future (lease lost, shutdown), kills the
//! processes involved.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::wire::{self, tokio_io, BakeEnd, Reply, Request};
use super::Baked;
use crate::config::CollateConfig;
use crate::pipeline::StepError;

/// How long a new bake process may take to say hello.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Past `pipeline.collate.timeout`, how long the daemon waits for the baker's own
/// deadline check to answer before it kills the process.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// How much of a bake process's stderr is kept for the error message.
const STDERR_TAIL_BYTES: usize = 2048;

/// Idle bake processes and how to start more.
pub(super) struct BakePool {
    program: PathBuf,
    max_memory_bytes: u64,
    idle: Mutex<Vec<BakeProcess>>,
    /// One permit per bake that may run at once.
    turns: tokio::sync::Semaphore,
}

impl BakePool {
    /// A pool of `program bake-server` processes; none is started before the first bake.
    pub(super) fn new(program: PathBuf, max_memory_bytes: u64) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            program,
            max_memory_bytes,
            idle: Mutex::new(Vec::new()),
            turns: tokio::sync::Semaphore::new(cpus),
        }
    }

    /// Bakes `body` with the recipe `css` (`recipe_id` names it in messages).
    pub(super) async fn bake(
        &self,
        recipe_id: i64,
        css: &str,
        body: &str,
        cfg: &CollateConfig,
    ) -> Result<Baked, StepError> {
        // Never closed, so acquiring cannot fail.
        let _turn = self
            .turns
            .acquire()
            .await
            .map_err(|_| StepError::Transient("the bake pool is closed".to_owned()))?;
        let mut process = match self.take_idle() {
            Some(p) => p,
            None => self.start().await?,
        };
        let request = Request {
            key: recipe_key(css, cfg),
            config: cfg.clone(),
        };
        let limit = cfg.timeout + KILL_GRACE;
        let exchange = process.exchange(&request, css, body, self.max_memory_bytes);
        match tokio::time::timeout(limit, exchange).await {
            Ok(Ok((reply, html))) => {
                self.put_back(process);
                match (reply.outcome, html) {
                    (BakeEnd::Baked, Some(html)) => Ok(Baked {
                        html,
                        warnings: reply.warnings,
                    }),
                    (BakeEnd::RecipeError, _) => Err(StepError::Permanent(format!(
                        "recipe {recipe_id}: {}",
                        reply.error
                    ))),
                    (_, _) => Err(StepError::Permanent(reply.error)),
                }
            }
            Ok(Err(io)) => Err(StepError::Permanent(
                process.death(io, self.max_memory_bytes).await,
            )),
            Err(_) => {
                // Dropping it kills it (kill_on_drop); it is never reused mid-request.
                drop(process);
                Err(StepError::Permanent(format!(
                    "the bake took longer than pipeline.collate.timeout ({}); its process was killed",
                    humantime::format_duration(cfg.timeout)
                )))
            }
        }
    }

    fn take_idle(&self) -> Option<BakeProcess> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(mut p) = idle.pop() {
            // One that died while idle (killed from outside) must not be blamed on the
            // next version: it is simply replaced.
            if matches!(p.child.try_wait(), Ok(None)) {
                return Some(p);
            }
            tracing::warn!(pid = p.pid, "an idle bake process had exited; replacing it");
        }
        None
    }

    fn put_back(&self, p: BakeProcess) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(p);
    }

    async fn start(&self) -> Result<BakeProcess, StepError> {
        let cannot = |why: String| {
            StepError::Transient(format!(
                "cannot start a bake process ({} bake-server): {why}",
                self.program.display()
            ))
        };
        let mut child = tokio::process::Command::new(&self.program)
            .arg("bake-server")
            .arg("--max-memory-bytes")
            .arg(self.max_memory_bytes.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its last words go into a version's error: one line, not a backtrace.
            .env("RUST_BACKTRACE", "0")
            .env_remove("RUST_LIB_BACKTRACE")
            .kill_on_drop(true)
            // Its own process group: a Ctrl-C meant for the daemon's terminal must not
            // kill the bakes the daemon is still draining.
            .process_group(0)
            .spawn()
            .map_err(|e| cannot(e.to_string()))?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(cannot("its standard streams were not captured".to_owned()));
        };
        let tail = Arc::new(Mutex::new(Vec::new()));
        let stderr_done = tokio::spawn(keep_tail(stderr, tail.clone()));
        let mut process = BakeProcess {
            child,
            pid,
            stdin: BufWriter::with_capacity(1 << 16, stdin),
            stdout: BufReader::with_capacity(1 << 16, stdout),
            tail,
            stderr_done,
        };
        let hello = tokio::time::timeout(
            START_TIMEOUT,
            tokio_io::read(&mut process.stdout, wire::MAX_HEADER_BYTES),
        )
        .await;
        match hello {
            Ok(Ok(h)) if h == wire::HELLO => {
                tracing::debug!(pid, "bake process started");
                Ok(process)
            }
            Ok(Ok(_)) => Err(cannot(
                "it does not speak this postpub's bake protocol (was the binary replaced? restart the daemon)"
                    .to_owned(),
            )),
            Ok(Err(e)) => Err(cannot(process.death(e, self.max_memory_bytes).await)),
            Err(_) => Err(cannot(format!(
                "no answer within {}",
                humantime::format_duration(START_TIMEOUT)
            ))),
        }
    }
}

/// One bake process.
struct BakeProcess {
    child: Child,
    pid: u32,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The last bytes it wrote to stderr (a crash's last words).
    tail: Arc<Mutex<Vec<u8>>>,
    /// Ends when stderr closes (the process exited).
    stderr_done: tokio::task::JoinHandle<()>,
}

impl BakeProcess {
    /// Sends one request and reads its reply (and the baked document, if any).
    async fn exchange(
        &mut self,
        request: &Request,
        css: &str,
        body: &str,
        max_html: u64,
    ) -> std::io::Result<(Reply, Option<String>)> {
        let header = serde_json::to_vec(request).map_err(std::io::Error::other)?;
        tokio_io::write(&mut self.stdin, &header).await?;
        tokio_io::write(&mut self.stdin, css.as_bytes()).await?;
        tokio_io::write(&mut self.stdin, body.as_bytes()).await?;
        self.stdin.flush().await?;
        let header = tokio_io::read(&mut self.stdout, wire::MAX_HEADER_BYTES).await?;
        let reply: Reply = serde_json::from_slice(&header)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if reply.outcome != BakeEnd::Baked {
            return Ok((reply, None));
        }
        let html = tokio_io::read(&mut self.stdout, max_html).await?;
        let html = String::from_utf8(html)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok((reply, Some(html)))
    }

    /// Why the process stopped answering, for the version's error: how it ended, its
    /// last words, and the memory limit it ran under.
    async fn death(mut self, io: std::io::Error, max_memory_bytes: u64) -> String {
        // It may still run (it wrote something that is not the protocol): end it.
        let _ = self.child.start_kill();
        let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.stderr_done).await;
        let tail = {
            let t = self.tail.lock().unwrap_or_else(|p| p.into_inner());
            let text = String::from_utf8_lossy(&t);
            text.lines()
                .filter(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
                .flat_map(str::split_whitespace)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let how = match status {
            Ok(Ok(st)) => describe_exit(st),
            _ => format!("stopped answering ({io})"),
        };
        let limit = format!("pipeline.collate.max_memory_bytes = {max_memory_bytes} bytes");
        let said = if tail.is_empty() {
            String::new()
        } else {
            format!(" after printing \"{tail}\"")
        };
        tracing::warn!(pid = self.pid, how = %how, stderr = %tail, "a bake process died");
        if tail.contains("memory allocation of") || tail.contains("out of memory") {
            format!(
                "collation ran out of memory: the bake process {how}{said}; the bake needs more than {limit} allows"
            )
        } else {
            format!("collation crashed: the bake process {how}{said} (it ran with {limit})")
        }
    }
}

/// "was killed by SIGABRT", "exited with status 3".
fn describe_exit(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = st.signal() {
        let name = match sig {
            libc::SIGABRT => "SIGABRT",
            libc::SIGKILL => "SIGKILL",
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGBUS => "SIGBUS",
            libc::SIGILL => "SIGILL",
            libc::SIGTERM => "SIGTERM",
            libc::SIGFPE => "SIGFPE",
            _ => return format!("was killed by signal {sig}"),
        };
        let hint = if sig == libc::SIGKILL {
            " (by the kernel's out-of-memory killer, or by someone)"
        } else {
            ""
        };
        return format!("was killed by {name}{hint}");
    }
    match st.code() {
        Some(code) => format!("exited with status {code}"),
        None => "ended".to_owned(),
    }
}

/// Reads a process's stderr to its end, keeping the last [`STDERR_TAIL_BYTES`].
async fn keep_tail(mut stderr: tokio::process::ChildStderr, tail: Arc<Mutex<Vec<u8>>>) {
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
        t.extend_from_slice(&buf[..n]);
        if t.len() > STDERR_TAIL_BYTES {
            let cut = t.len() - STDERR_TAIL_BYTES;
            t.drain(..cut);
        }
    }
}

/// The bake process's cache key of a recipe: its CSS and the settings it is parsed with.
fn recipe_key(css: &str, cfg: &CollateConfig) -> String {
    let mut h = Sha256::new();
    h.update(css.as_bytes());
    h.update([0]);
    // The whole section: whatever a later key changes about parsing is covered.
    h.update(serde_json::to_vec(cfg).unwrap_or_default());
    hex::encode(h.finalize())
}
