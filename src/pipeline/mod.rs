//! The pipeline a claimed version goes through before it is published: configured steps
//! (`noop`, `validate`, `collate`, `command`), run in order on a [`Work`] item.
//!
//! Steps only transform or judge content; they never touch the database. What a failure
//! means for the version (retry later, or errored now) is the [`StepError`] variant; the
//! worker turns it into an outcome and the publish step (SQL, `postpub._finish`) records it.

pub mod collate;
pub mod command;
pub mod validate;

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::config::PipelineConfig;
use crate::event::{Event, Events};

/// A version on its way through the pipeline.
#[derive(Debug, Clone)]
pub struct Work {
    /// `postpub.versions.id`.
    pub version_id: i64,
    /// The document name.
    pub document: String,
    /// The version number within the document.
    pub version: i32,
    /// Which claim of this version this is (1 on the first try).
    pub attempt: i32,
    /// The content: the snapshot at first, each step's output after it.
    pub body: String,
    /// The recipe the version was published with, if any.
    pub recipe: Option<Arc<RecipeSource>>,
    /// Whether a step produced new content (then it is stored as the collated output).
    pub transformed: bool,
    /// Warnings from steps, stored with the collated output.
    pub warnings: Vec<String>,
}

/// A recipe's CSS as stored; recipes are immutable, so the collate step keeps it by id.
#[derive(Debug)]
pub struct RecipeSource {
    /// `postpub.recipes.id`.
    pub id: i64,
    /// The CSS text.
    pub css: String,
}

/// Why a step failed, and so what happens next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// May succeed later: retried with backoff until `worker.max_attempts`.
    #[error("{0}")]
    Transient(String),
    /// Will fail the same way every time: the version is errored at once.
    #[error("{0}")]
    Permanent(String),
}

/// One pipeline step.
pub trait Step: Send + Sync {
    /// The name used in `pipeline.steps` and in error messages.
    fn name(&self) -> &'static str;

    /// Whether the step reads the body (a pipeline that never does skips loading it).
    fn needs_body(&self) -> bool {
        true
    }

    /// Whether the step reads `Work::recipe` (then the worker loads it).
    fn needs_recipe(&self) -> bool {
        false
    }

    /// A recipe the step already holds, so the worker need not fetch it again (the collate
    /// step keeps the daemon's one recipe cache).
    fn cached_recipe(&self, _id: i64) -> Option<Arc<RecipeSource>> {
        None
    }

    /// Runs the step on `work`, changing it in place.
    fn run<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<(), StepError>>;
}

/// Why the configured pipeline cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// `pipeline.steps` names a step this binary does not have.
    #[error("unknown pipeline step {0:?}")]
    UnknownStep(String),
}

/// A failure of one named step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("step {step}: {error}")]
pub struct PipelineError {
    /// The step that failed.
    pub step: &'static str,
    /// Its error.
    pub error: StepError,
}

impl PipelineError {
    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self.error, StepError::Transient(_))
    }
}

/// The configured steps, in order.
pub struct Pipeline {
    steps: Vec<Box<dyn Step>>,
    /// Where each step's duration is reported (metrics), when set.
    events: Option<Events>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|s| s.name()))
            .finish()
    }
}

impl Pipeline {
    /// Builds the steps named in the configuration (names were checked by
    /// `Config::validate`; an unknown one here is still an error, not a panic).
    pub fn from_config(cfg: &PipelineConfig) -> Result<Pipeline, BuildError> {
        let mut steps: Vec<Box<dyn Step>> = Vec::new();
        for name in &cfg.steps {
            let step: Box<dyn Step> = match name.as_str() {
                "noop" => Box::new(Noop),
                "validate" => Box::new(validate::Validate),
                "command" => Box::new(command::Command::new(cfg.command.clone())),
                "collate" => Box::new(collate::Collate::new(cfg.collate.clone())),
                other => return Err(BuildError::UnknownStep(other.to_owned())),
            };
            steps.push(step);
        }
        Ok(Pipeline {
            steps,
            events: None,
        })
    }

    /// Reports an [`Event::StepRan`] for every step run.
    pub fn with_events(mut self, events: Events) -> Self {
        self.events = Some(events);
        self
    }

    /// Whether any step reads the body.
    pub fn needs_body(&self) -> bool {
        self.steps.iter().any(|s| s.needs_body())
    }

    /// Whether any step uses the recipe.
    pub fn needs_recipe(&self) -> bool {
        self.steps.iter().any(|s| s.needs_recipe())
    }

    /// Recipe `id`, when a step holds it already.
    pub fn cached_recipe(&self, id: i64) -> Option<Arc<RecipeSource>> {
        self.steps.iter().find_map(|s| s.cached_recipe(id))
    }

    /// Step names, for logs.
    pub fn names(&self) -> Vec<&'static str> {
        self.steps.iter().map(|s| s.name()).collect()
    }

    /// Runs every step in order; stops at the first failure.
    pub async fn run(&self, work: &mut Work) -> Result<(), PipelineError> {
        for step in &self.steps {
            let started = std::time::Instant::now();
            let result = step.run(work).await;
            let seconds = started.elapsed().as_secs_f64();
            if let Some(events) = &self.events {
                let _ = events.send(Event::StepRan {
                    step: step.name(),
                    seconds,
                });
            }
            tracing::debug!(
                step = step.name(),
                elapsed_ms = seconds * 1000.0,
                ok = result.is_ok(),
                "step finished"
            );
            result.map_err(|error| PipelineError {
                step: step.name(),
                error,
            })?;
        }
        Ok(())
    }
}

/// Does nothing: a pipeline of only `noop` publishes versions as they are.
pub struct Noop;

impl Step for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }

    fn needs_body(&self) -> bool {
        false
    }

    fn run<'a>(&'a self, _work: &'a mut Work) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
pub(crate) fn work(body: &str) -> Work {
    Work {
        version_id: 1,
        document: "doc".to_owned(),
        version: 1,
        attempt: 1,
        body: body.to_owned(),
        recipe: None,
        transformed: false,
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noop_pipeline_needs_no_body() {
        let cfg = PipelineConfig {
            steps: vec!["noop".into()],
            ..PipelineConfig::default()
        };
        let p = Pipeline::from_config(&cfg).expect("builds");
        assert!(!p.needs_body());
        let cfg = PipelineConfig {
            steps: vec!["noop".into(), "validate".into()],
            ..PipelineConfig::default()
        };
        assert!(Pipeline::from_config(&cfg).expect("builds").needs_body());
    }

    #[tokio::test]
    async fn the_first_failing_step_stops_the_pipeline_and_is_named() {
        let cfg = PipelineConfig {
            steps: vec!["noop".into(), "validate".into(), "noop".into()],
            ..PipelineConfig::default()
        };
        let p = Pipeline::from_config(&cfg).expect("builds");
        let mut w = work("<div><p>open</div>");
        let err = p.run(&mut w).await.expect_err("malformed");
        assert_eq!(err.step, "validate");
        assert!(!err.is_transient());
        assert!(err.to_string().starts_with("step validate: "), "{err}");
    }
}
