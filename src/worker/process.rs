//! The per-version process: loads the body (and recipe), runs the pipeline, and turns
//! what happened into an [`Outcome`]: publish, retry with backoff, or error.

use std::sync::Arc;
use std::time::Instant;

use super::claim::{Claimed, Outcome};
use crate::backoff::BackoffConfig;
use crate::config::Config;
use crate::db::{self, sql};
use crate::event::Event;
use crate::pipeline::BuildError;
use crate::pipeline::{Pipeline, RecipeSource, Work};
use crate::service::Base;

/// What processing needs, shared by every version's task. A reload builds a new one;
/// tasks already running keep the one they started with.
pub(super) struct Processor {
    base: Base,
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) max_body_bytes: u64,
    max_attempts: u32,
    backoff: BackoffConfig,
}

impl Processor {
    /// The processing `cfg` asks for; fails when its pipeline cannot be built.
    pub(super) fn new(cfg: &Config, base: &Base) -> Result<Processor, BuildError> {
        let pipeline =
            Arc::new(Pipeline::from_config(&cfg.pipeline)?.with_events(base.events.clone()));
        Ok(Processor {
            base: base.clone(),
            pipeline,
            max_body_bytes: cfg.pipeline.max_body_bytes,
            max_attempts: cfg.worker.max_attempts,
            backoff: cfg.worker.backoff.clone(),
        })
    }

    /// No step reads the body: versions finish without a task of their own.
    pub(super) fn instant(&self) -> bool {
        !self.pipeline.needs_body()
    }

    /// Loads what the pipeline needs, runs it, and decides the outcome.
    pub(super) async fn process(&self, c: &Claimed) -> Outcome {
        if c.body_bytes as u64 > self.max_body_bytes {
            return Outcome::Error(format!(
                "body is {} bytes, more than pipeline.max_body_bytes ({})",
                c.body_bytes, self.max_body_bytes
            ));
        }
        let mut work = match self.load(c).await {
            Ok(w) => w,
            Err(e) => return self.transient(c, format!("loading the version: {e}")),
        };
        let started = Instant::now();
        match self.pipeline.run(&mut work).await {
            Ok(()) => {
                let _ = self.base.events.send(Event::StepRan {
                    step: "pipeline",
                    seconds: started.elapsed().as_secs_f64(),
                });
                Outcome::Publish {
                    collated: work.transformed.then_some(work.body),
                    warnings: work.warnings,
                }
            }
            Err(e) if e.is_transient() => self.transient(c, e.to_string()),
            Err(e) => Outcome::Error(e.to_string()),
        }
    }

    /// A transient failure: retry with backoff, or give up after `max_attempts` claims.
    fn transient(&self, c: &Claimed, error: String) -> Outcome {
        let attempt = u32::try_from(c.attempts).unwrap_or(0);
        if attempt >= self.max_attempts {
            Outcome::Error(format!("gave up after {attempt} attempts: {error}"))
        } else {
            let after = self.backoff.delay(attempt);
            tracing::info!(attempt, retry_in_ms = after.as_millis() as u64, error = %error, "transient failure; will retry");
            Outcome::Retry { error, after }
        }
    }

    async fn load(&self, c: &Claimed) -> Result<Work, db::Error> {
        let client = db::get(&self.base.pool, &self.base.target).await?;
        let stmt = client
            .prepare_cached(sql::FETCH_BODY)
            .await
            .map_err(db::Error::query("preparing the body fetch"))?;
        let row = client
            .query_one(&stmt, &[&c.id])
            .await
            .map_err(db::Error::query("loading the body"))?;
        let body: String = row
            .try_get("body")
            .map_err(db::Error::query("reading the body"))?;
        let recipe = match c.recipe_id {
            Some(id) if self.pipeline.needs_recipe() => Some(self.recipe(&client, id).await?),
            _ => None,
        };
        Ok(Work {
            version_id: c.id,
            document: c.document.clone(),
            version: c.version,
            attempt: c.attempts,
            body,
            recipe,
            transformed: false,
            warnings: Vec::new(),
        })
    }

    /// The recipe's CSS: from the step that keeps recipes, else from the database.
    async fn recipe(
        &self,
        client: &deadpool_postgres::Client,
        id: i64,
    ) -> Result<Arc<RecipeSource>, db::Error> {
        if let Some(r) = self.pipeline.cached_recipe(id) {
            return Ok(r);
        }
        let stmt = client
            .prepare_cached(sql::FETCH_RECIPE)
            .await
            .map_err(db::Error::query("preparing the recipe fetch"))?;
        let row = client
            .query_one(&stmt, &[&id])
            .await
            .map_err(db::Error::query("loading the recipe"))?;
        Ok(Arc::new(RecipeSource {
            id,
            css: row
                .try_get("css")
                .map_err(db::Error::query("reading the recipe"))?,
        }))
    }
}
