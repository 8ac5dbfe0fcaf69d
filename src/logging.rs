//! tracing setup: human-readable lines by default, one JSON object per line with
//! `log.format = "json"`; `RUST_LOG` overrides `log.level`. Logs go to stderr so that a
//! command's output (status tables, version ids) stays clean on stdout. The level can be
//! changed while running ([`set_level`], used by the configuration reload).

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use serde::{Deserialize, Serialize};

/// Log line format (`log.format`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Handle on the installed filter, for reloads.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Whether `RUST_LOG` decides the level (then `log.level` and reloads do not).
fn from_env() -> Option<EnvFilter> {
    EnvFilter::try_from_default_env().ok()
}

/// Installs the global subscriber (once; later calls are ignored, which keeps tests that
/// build several daemons in one process simple). Takes plain values (`log.level`,
/// `log.format`) so this module knows nothing of the configuration.
pub fn init(level: &str, format: LogFormat) {
    let filter = from_env()
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let format = match format {
        // log_internal_errors(false): with stderr gone (a closed pipe), a failed write
        // must not be reported on stderr again, which would panic the logging task.
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
            .with_ansi(ansi)
            .with_target(false)
            .compact()
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
            .with_target(false)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(format)
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set(handle);
    }
}

/// Why the level filter could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum LevelError {
    /// `RUST_LOG` decides the level.
    #[error("RUST_LOG is set and decides the level")]
    FromEnv,
    /// Not a tracing filter.
    #[error("invalid log.level {level:?}: {reason}")]
    Invalid {
        /// The filter as given.
        level: String,
        /// What the parser said.
        reason: String,
    },
    /// [`init`] has not run, or the subscriber is gone.
    #[error("logging is not initialised")]
    NotInitialised,
}

/// Changes the level filter of the running process; `RUST_LOG`, when set, wins.
pub fn set_level(level: &str) -> Result<(), LevelError> {
    if from_env().is_some() {
        return Err(LevelError::FromEnv);
    }
    let filter = parse(level)?;
    match FILTER.get() {
        Some(handle) => handle
            .reload(filter)
            .map_err(|_| LevelError::NotInitialised),
        None => Err(LevelError::NotInitialised),
    }
}

/// Checks that `level` is a valid filter (configuration validation).
pub fn check_level(level: &str) -> Result<(), LevelError> {
    parse(level).map(|_| ())
}

fn parse(level: &str) -> Result<EnvFilter, LevelError> {
    EnvFilter::try_new(level).map_err(|e| LevelError::Invalid {
        level: level.to_owned(),
        reason: e.to_string(),
    })
}
