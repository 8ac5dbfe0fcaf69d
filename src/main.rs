//! The `postpub` binary: parse the command line, run it, print any failure as one line
//! (`error: …`) and exit 2 for configuration or usage errors, 1 for the rest.

use std::process::ExitCode;

use clap::Parser;
use postpub::cli::{self, Cli};
use postpub::config::ConfigError;
use postpub::output::StdoutError;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits 2.
    let cli = Cli::parse();
    // Baking needs no runtime (nor its worker threads, whose start would be a good part of
    // a small book's time): a file from the command line, or the daemon's bake process.
    match &cli.command {
        cli::Command::Bake(args) => return exit_code(cli::bake_cmd(args)),
        cli::Command::BakeServer(args) => return exit_code(cli::bake_server(args)),
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    exit_code(runtime.block_on(cli::run(cli)))
}

/// Prints a failure as one line; 2 for configuration errors, 1 for the rest.
fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`postpub demo | head -3`): nothing failed.
        Err(e) if matches!(e.downcast_ref(), Some(StdoutError::Closed)) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// The error and its causes on one line, skipping a cause its parent already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out.replace('\n', " ")
}
