//! `command`: an external program as a pipeline step, so any tool can be plugged in.
//!
//! The body goes to the program's stdin and its stdout becomes the new body. Exit 0 is
//! success, 75 (`EX_TEMPFAIL`) a transient failure, anything else permanent. A program
//! that runs past `timeout` is killed and retried; one that prints more than
//! `max_output_bytes` is killed and refused, so a runaway step cannot exhaust the
//! daemon's memory. Dropping the step's future (shutdown, lost lease) kills the program.
//!
//! The program runs in a process group of its own, and the whole group is killed when the
//! step ends (timeout, refusal, drop, or normal exit): a shell script's children
//! (`sleep`, a converter it started) never outlive the step, and never keep its output
//! pipe open.

use std::process::Stdio;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{Step, StepError, Work};
use crate::config::CommandConfig;

/// Exit status meaning "try again later" (sysexits.h `EX_TEMPFAIL`).
pub const EXIT_TEMPFAIL: i32 = 75;

/// How much of stderr is kept for the error message.
const STDERR_TAIL_BYTES: usize = 2048;

/// The `command` step.
pub struct Command {
    cfg: CommandConfig,
}

impl Command {
    /// A step running `cfg.program`.
    pub fn new(cfg: CommandConfig) -> Self {
        Self { cfg }
    }

    /// Starts the program in a process group of its own, with the version in its
    /// environment and its standard streams piped.
    fn spawn(&self, work: &Work) -> Result<tokio::process::Child, StepError> {
        let cfg = &self.cfg;
        tokio::process::Command::new(&cfg.program)
            .args(&cfg.args)
            .env("POSTPUB_DOCUMENT", &work.document)
            .env("POSTPUB_VERSION", work.version.to_string())
            .env("POSTPUB_VERSION_ID", work.version_id.to_string())
            .env("POSTPUB_ATTEMPT", work.attempt.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|e| StepError::Permanent(format!("cannot start {}: {e}", cfg.program)))
    }

    /// The exit of a program that closed its output, by `deadline`.
    async fn wait_exit(
        &self,
        child: &mut tokio::process::Child,
        deadline: tokio::time::Instant,
    ) -> Result<std::io::Result<std::process::ExitStatus>, StepError> {
        tokio::time::timeout_at(deadline, child.wait())
            .await
            .map_err(|_| {
                StepError::Transient(format!(
                    "{} closed its output but did not exit within {}",
                    self.cfg.program,
                    humantime::format_duration(self.cfg.timeout)
                ))
            })
    }

    async fn exec(&self, work: &mut Work) -> Result<(), StepError> {
        let cfg = &self.cfg;
        let mut child = self.spawn(work)?;
        // Declared after `child`, so dropped before it: the group goes first, then
        // `kill_on_drop` (a no-op by then) and the reaping of the program itself.
        let group = child.id().map(ProcessGroup);

        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(StepError::Permanent(
                "the program's standard streams were not captured".to_owned(),
            ));
        };
        let body = std::mem::take(&mut work.body);
        // Feed stdin while reading stdout, or a program that writes before it has read
        // everything would block on a full pipe and so would we.
        let feed = async move {
            // A program may exit without reading its input; that is its business.
            let _ = stdin.write_all(body.as_bytes()).await;
            drop(stdin);
            body
        };
        let limit = cfg.max_output_bytes;
        let deadline = tokio::time::Instant::now() + cfg.timeout;
        let timed_out = || {
            StepError::Transient(format!(
                "{} timed out after {}",
                cfg.program,
                humantime::format_duration(cfg.timeout)
            ))
        };
        let io = async { tokio::join!(feed, read_limited(stdout, limit), tail(stderr)) };
        tokio::pin!(io);
        // Read the output while waiting for the program: once it exits, what it left
        // running in its group is killed, so a background child holding the pipe cannot
        // keep us reading until the timeout.
        let mut status = None;
        let io_done = tokio::time::timeout_at(deadline, async {
            loop {
                tokio::select! {
                    r = &mut io => break r,
                    s = child.wait(), if status.is_none() => {
                        status = Some(s);
                        if let Some(group) = &group {
                            group.kill();
                        }
                    }
                }
            }
        })
        .await;
        let Ok((body, out, err_tail)) = io_done else {
            return Err(timed_out());
        };
        work.body = body;
        let out = out.map_err(|e| match e {
            ReadError::TooLong => StepError::Permanent(format!(
                "{} wrote more than {} bytes to stdout (pipeline.command.max_output_bytes)",
                cfg.program, limit
            )),
            ReadError::Io(e) => {
                StepError::Transient(format!("reading the output of {}: {e}", cfg.program))
            }
        })?;
        let status = match status {
            Some(s) => s,
            None => self.wait_exit(&mut child, deadline).await?,
        };
        let status = status
            .map_err(|e| StepError::Transient(format!("waiting for {}: {e}", cfg.program)))?;
        let body = judge(&cfg.program, status, out, &err_tail)?;
        work.body = body;
        work.transformed = true;
        Ok(())
    }
}

/// What the program's exit means: its output as the new body (exit 0), or the failure,
/// with the tail of its stderr.
fn judge(
    program: &str,
    status: std::process::ExitStatus,
    out: Vec<u8>,
    err_tail: &str,
) -> Result<String, StepError> {
    let stderr_note = if err_tail.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", err_tail.trim())
    };
    match status.code() {
        Some(0) => String::from_utf8(out).map_err(|e| {
            StepError::Permanent(format!(
                "{program} wrote invalid UTF-8 at byte {}",
                e.utf8_error().valid_up_to()
            ))
        }),
        Some(EXIT_TEMPFAIL) => Err(StepError::Transient(format!(
            "{program} exited {EXIT_TEMPFAIL} (temporary failure){stderr_note}"
        ))),
        Some(code) => Err(StepError::Permanent(format!(
            "{program} exited {code}{stderr_note}"
        ))),
        None => Err(StepError::Transient(format!(
            "{program} was killed by a signal{stderr_note}"
        ))),
    }
}

impl Step for Command {
    fn name(&self) -> &'static str {
        "command"
    }

    fn run<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(self.exec(work))
    }
}

/// The process group of a running program (its id is the program's pid); killed when
/// dropped.
struct ProcessGroup(u32);

impl ProcessGroup {
    /// SIGKILL to every process left in the group.
    fn kill(&self) {
        let Ok(pgid) = libc::pid_t::try_from(self.0) else {
            return;
        };
        // SAFETY: kill(2) has no memory effects; a negative pid names the group the
        // program leads (`process_group(0)`). ESRCH (the group is already gone) is fine.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

enum ReadError {
    TooLong,
    Io(std::io::Error),
}

/// Reads everything up to `limit` bytes; more is an error (and reading stops).
async fn read_limited(mut r: impl AsyncRead + Unpin, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() as u64 + n as u64 > limit {
            return Err(ReadError::TooLong);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Reads everything, keeping only the last few KB (for the error message).
async fn tail(mut r: impl AsyncRead + Unpin) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8 * 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * STDERR_TAIL_BYTES {
            kept.drain(..kept.len() - STDERR_TAIL_BYTES);
        }
    }
    if kept.len() > STDERR_TAIL_BYTES {
        kept.drain(..kept.len() - STDERR_TAIL_BYTES);
    }
    let text = String::from_utf8_lossy(&kept);
    // One line in the database and the logs.
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::work;
    use std::time::Duration;

    fn sh(script: &str, timeout_ms: u64, max_output_bytes: u64) -> Command {
        Command::new(CommandConfig {
            program: "/bin/sh".to_owned(),
            args: vec!["-c".to_owned(), script.to_owned()],
            timeout: Duration::from_millis(timeout_ms),
            max_output_bytes,
        })
    }

    #[tokio::test]
    async fn stdout_becomes_the_body() {
        let mut w = work("<p>in</p>");
        sh("tr a-z A-Z", 5000, 1024).run(&mut w).await.expect("ok");
        assert_eq!(w.body, "<P>IN</P>");
        assert!(w.transformed);
    }

    #[tokio::test]
    async fn the_version_is_in_the_environment() {
        let mut w = work("");
        sh(
            "cat >/dev/null; printf '%s/%s' \"$POSTPUB_DOCUMENT\" \"$POSTPUB_ATTEMPT\"",
            5000,
            1024,
        )
        .run(&mut w)
        .await
        .expect("ok");
        assert_eq!(w.body, "doc/1");
    }

    #[tokio::test]
    async fn exit_75_is_transient_and_other_codes_are_permanent() {
        let mut w = work("x");
        let e = sh("echo busy >&2; exit 75", 5000, 1024).run(&mut w).await;
        assert!(
            matches!(&e, Err(StepError::Transient(m)) if m.contains("busy")),
            "{e:?}"
        );
        let e = sh("echo broken recipe >&2; exit 3", 5000, 1024)
            .run(&mut w)
            .await;
        assert!(
            matches!(&e, Err(StepError::Permanent(m)) if m.contains("exited 3: broken recipe")),
            "{e:?}"
        );
        assert_eq!(w.body, "x", "a failed step leaves the body as it was");
    }

    #[tokio::test]
    async fn a_hanging_program_times_out_as_transient() {
        let mut w = work("x");
        let started = std::time::Instant::now();
        let e = sh("sleep 30", 300, 1024).run(&mut w).await;
        assert!(
            matches!(&e, Err(StepError::Transient(m)) if m.contains("timed out")),
            "{e:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// Whether `pid` is still a live process (a zombie waiting for its reaper is dead).
    fn alive(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
            Err(_) => false,
        }
    }

    #[tokio::test]
    async fn a_timed_out_program_takes_its_children_with_it() {
        let dir = std::env::temp_dir().join(format!("postpub-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pidfile = dir.join("pid");
        // The grandchild ignores the pipe (its own stdout is /dev/null) and would sleep on.
        let script = format!(
            "sleep 300 >/dev/null 2>&1 & echo $! > {}; wait",
            pidfile.display()
        );
        let mut w = work("x");
        let e = sh(&script, 500, 1024).run(&mut w).await;
        assert!(
            matches!(&e, Err(StepError::Transient(m)) if m.contains("timed out")),
            "{e:?}"
        );
        let pid = std::fs::read_to_string(&pidfile).expect("grandchild pid");
        let pid = pid.trim();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(pid), "the grandchild {pid} outlived the step");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_background_child_does_not_keep_a_finished_step_waiting() {
        let mut w = work("in");
        let started = std::time::Instant::now();
        // The background sleep inherits stdout; without the group kill the step would
        // wait for it (until the timeout).
        sh("cat; (sleep 30 &) ; exit 0", 10_000, 1024)
            .run(&mut w)
            .await
            .expect("ok");
        assert_eq!(w.body, "in");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn too_much_output_is_refused() {
        let mut w = work("x");
        let e = sh("yes", 10_000, 100_000).run(&mut w).await;
        assert!(
            matches!(&e, Err(StepError::Permanent(m)) if m.contains("more than 100000 bytes")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_named() {
        let mut w = work("x");
        let step = Command::new(CommandConfig {
            program: "/nonexistent/step".to_owned(),
            ..CommandConfig::default()
        });
        let e = step.run(&mut w).await;
        assert!(
            matches!(&e, Err(StepError::Permanent(m)) if m.contains("/nonexistent/step")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn invalid_utf8_output_is_permanent() {
        let mut w = work("x");
        let e = sh("cat >/dev/null; printf '\\377'", 5000, 1024)
            .run(&mut w)
            .await;
        assert!(
            matches!(&e, Err(StepError::Permanent(m)) if m.contains("UTF-8")),
            "{e:?}"
        );
    }
}
