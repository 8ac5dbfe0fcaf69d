//! What commands print on stdout (the demo's story, the benchmark tables). A closed stdout
//! (`postpub demo | head -3`) is not a failure: the command stops as if interrupted and
//! the binary exits quietly, like other command-line tools. A leaf: knows no other module.

use std::io::Write;

/// Stdout could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StdoutError {
    /// The reader went away (`EPIPE`): stop quietly.
    #[error("stdout was closed")]
    Closed,
    /// Any other write failure.
    #[error("cannot write to stdout: {0}")]
    Failed(std::io::Error),
}

/// Writes one line to stdout, flushed (so a closed pipe is noticed at once).
pub fn line(args: std::fmt::Arguments<'_>) -> Result<(), StdoutError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{args}")
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => StdoutError::Closed,
            _ => StdoutError::Failed(e),
        })
}

/// `say!("…", …)?`: [`line`] with `println!`'s arguments.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
