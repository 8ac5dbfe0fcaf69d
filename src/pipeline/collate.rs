//! `collate`: bakes the body with the recipe the version was published with (the
//! easybake dialect, [`crate::collate`]). A version without a recipe passes unchanged.
//!
//! Recipes are immutable and content-addressed, so each is parsed once per daemon and kept
//! by id, parse errors included (a broken recipe fails every version that uses it, at
//! once, with the same message). Baking is CPU-bound and runs on the blocking pool, bounded
//! by `pipeline.collate.timeout` and the budgets of `[pipeline.collate]` (the baker's
//! `Limits`). Every failure is permanent:
//! the same recipe and body fail the same way on every try.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;

use super::{Step, StepError, Work};
use crate::collate::Recipe;
use crate::config::CollateConfig;

/// Parsed recipes kept per daemon (a new one evicts all when full: recipes are few).
const CACHE_SIZE: usize = 128;

type Parsed = Arc<Result<Arc<Recipe>, String>>;

/// The `collate` step.
pub struct Collate {
    cfg: CollateConfig,
    parsed: Mutex<HashMap<i64, Parsed>>,
}

impl Collate {
    /// A step with its own recipe cache.
    pub fn new(cfg: CollateConfig) -> Self {
        Self {
            cfg,
            parsed: Mutex::new(HashMap::new()),
        }
    }

    fn recipe(&self, id: i64, css: &str) -> Parsed {
        let mut cache = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(&id) {
            return p.clone();
        }
        let parsed = if self.cfg.strict {
            Recipe::parse_strict(css)
        } else {
            Recipe::parse(css)
        };
        let entry: Parsed = Arc::new(
            parsed
                .map(Arc::new)
                .map_err(|e| format!("recipe {id}: {e}")),
        );
        if cache.len() >= CACHE_SIZE {
            cache.clear();
        }
        cache.insert(id, entry.clone());
        entry
    }

    async fn bake(&self, work: &mut Work) -> Result<(), StepError> {
        let Some(source) = work.recipe.clone() else {
            return Ok(());
        };
        let recipe = match &*self.recipe(source.id, &source.css) {
            Ok(r) => r.clone(),
            Err(e) => return Err(StepError::Permanent(e.clone())),
        };
        let limits = self.cfg.limits();
        let body = std::mem::take(&mut work.body);
        let task = tokio::task::spawn_blocking(move || {
            let result = recipe.bake_with_limits(&body, &limits);
            (body, result)
        });
        match task.await {
            Ok((_, Ok(baked))) => {
                work.body = baked.html;
                work.transformed = true;
                work.warnings.extend(
                    baked
                        .warnings
                        .iter()
                        .map(|w| format!("{}: {w}", w.level.as_str())),
                );
                Ok(())
            }
            Ok((body, Err(e))) => {
                work.body = body;
                Err(StepError::Permanent(e.to_string()))
            }
            // A panic in the engine is a bug; the version is errored, not the daemon.
            Err(e) => Err(StepError::Permanent(format!("collation failed: {e}"))),
        }
    }
}

impl Step for Collate {
    fn name(&self) -> &'static str {
        "collate"
    }

    fn run<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(self.bake(work))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{work, RecipeSource};
    use std::time::Duration;

    fn with_recipe(body: &str, id: i64, css: &str) -> Work {
        let mut w = work(body);
        w.recipe = Some(Arc::new(RecipeSource {
            id,
            css: css.to_owned(),
        }));
        w
    }

    fn step() -> Collate {
        Collate::new(CollateConfig {
            timeout: Duration::from_secs(10),
            ..CollateConfig::default()
        })
    }

    fn strict_step() -> Collate {
        Collate::new(CollateConfig {
            strict: true,
            timeout: Duration::from_secs(10),
            ..CollateConfig::default()
        })
    }

    #[tokio::test]
    async fn a_recipe_bakes_the_body() {
        let mut w = with_recipe(
            "<div><p class=\"note\">n</p><p>text</p></div>",
            1,
            "div::after { content: pending(notes); class: notes; }\np.note { move-to: notes; }",
        );
        step().run(&mut w).await.expect("bakes");
        assert!(w.transformed);
        assert_eq!(
            w.body,
            "<div><p>text</p><div class=\"notes\"><p class=\"note\">n</p></div></div>\n"
        );
    }

    #[tokio::test]
    async fn no_recipe_means_no_change() {
        let mut w = work("<p>x</p>");
        step().run(&mut w).await.expect("ok");
        assert!(!w.transformed);
        assert_eq!(w.body, "<p>x</p>");
    }

    #[tokio::test]
    async fn by_default_what_the_reference_tolerates_is_a_warning_kept_with_the_version() {
        let mut w = with_recipe(
            "<div><p>x</p></div>",
            5,
            "p::insde { content: \"x\"; }\ndiv::after { content: pending(none); }\np { colour: red; }",
        );
        step().run(&mut w).await.expect("bakes");
        assert_eq!(w.body, "<div><p>x</p></div>\n");
        assert!(
            w.warnings
                .iter()
                .any(|m| m.starts_with("warning: recipe line 3: Missing method colour")),
            "{:?}",
            w.warnings
        );
        assert!(
            w.warnings
                .iter()
                .any(|m| m == "info: recipe line 2: none empty bucket"),
            "{:?}",
            w.warnings
        );
    }

    #[tokio::test]
    async fn a_broken_recipe_is_a_permanent_error_naming_the_rule() {
        let mut w = with_recipe("<p>x</p>", 2, "p::insde { content: \"x\"; }");
        let e = strict_step().run(&mut w).await.expect_err("refused");
        assert!(
            matches!(&e, StepError::Permanent(m) if m.contains("recipe 2") && m.contains("line 1") && m.contains("::insde")),
            "{e:?}"
        );
        assert_eq!(w.body, "<p>x</p>");
    }

    #[tokio::test]
    async fn a_recipe_that_would_exhaust_memory_errors_at_once_naming_the_rule_and_limit() {
        let body = format!("<body>{}</body>", "<div>a</div>".repeat(40));
        let mut w = with_recipe(
            &body,
            6,
            "div { string-set: s string(s) string(s) \"x\"; } body::after { content: string(s); }",
        );
        let t = std::time::Instant::now();
        let e = step().run(&mut w).await.expect_err("refused");
        assert!(
            matches!(&e, StepError::Permanent(m) if m.contains("rule \"div\"") && m.contains("limit")),
            "{e:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(w.body, body, "the body is kept");
    }

    #[tokio::test]
    async fn a_node_moved_into_itself_is_refused() {
        let mut w = with_recipe(
            "<div><section><p>x</p></section></div>",
            3,
            "section { move-to: here; }\nsection > p::after { content: pending(here); }",
        );
        let e = step().run(&mut w).await.expect_err("refused");
        assert!(matches!(e, StepError::Permanent(_)), "{e:?}");
    }
}
