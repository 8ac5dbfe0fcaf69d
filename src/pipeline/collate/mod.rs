//! `collate`: bakes the body with the recipe the version was published with (the
//! easybake dialect, [`crate::collate`]). A version without a recipe passes unchanged.
//!
//! Where a bake runs: in a bake process of the daemon's own (`pool`: `postpub
//! bake-server`, reused from bake to bake, its address space limited to
//! `pipeline.collate.max_memory_bytes`), so that a recipe that exhausts memory, or a crash
//! of the baker, errors that version alone and never takes the daemon down. `postpub`
//! names its own binary for that at start ([`set_bake_program`]); a program embedding
//! the library without doing so bakes in-process, on the blocking pool.
//!
//! Recipes are immutable, so this step keeps the ones it has seen by id: their CSS (the
//! worker asks it, [`Step::cached_recipe`], before fetching a recipe again) and, when
//! baking in-process, their parse. This is the daemon's one recipe cache. Each recipe is
//! parsed once per bake process (or per step, in-process) and kept, parse errors included (a broken recipe fails
//! every version that uses it, at once, with the same message). Every failure of a bake
//! is permanent: the same recipe and body fail the same way on every try.
//!
//! The baker is reached through two functions only, `parse_recipe` and `bake_body`,
//! which both ways of baking share.

mod pool;
mod server;
mod wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::future::BoxFuture;

pub use server::serve;

use super::{RecipeSource, Step, StepError, Work};
use crate::collate::Recipe;
use crate::config::CollateConfig;

/// Recipes kept (a new one evicts all when full: recipes are few).
const CACHE_SIZE: usize = 256;

/// The program that serves `bake-server` (this binary), once known.
static BAKE_PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Names the `postpub` binary that bake processes run (`postpub` calls this with its own
/// path; tests with the binary they test). The first call wins.
pub fn set_bake_program(path: PathBuf) {
    let _ = BAKE_PROGRAM.set(path);
}

/// A baked body as the pipeline keeps it: the output, and the baker's warnings as the
/// lines stored with the version (`level: recipe line N: message`).
pub(crate) struct Baked {
    pub(crate) html: String,
    pub(crate) warnings: Vec<String>,
}

/// Parses a recipe as `[pipeline.collate]` says (as cnx-easybake reads it, or strict).
pub(crate) fn parse_recipe(css: &str, cfg: &CollateConfig) -> Result<Recipe, String> {
    let parsed = if cfg.strict {
        Recipe::parse_strict(css)
    } else {
        Recipe::parse(css)
    };
    parsed.map_err(|e| e.to_string())
}

/// Bakes one body with a parsed recipe, within the budgets `[pipeline.collate]` sets.
pub(crate) fn bake_body(recipe: &Recipe, body: &str, cfg: &CollateConfig) -> Result<Baked, String> {
    let baked = recipe
        .bake_with_limits(body, &cfg.limits())
        .map_err(|e| e.to_string())?;
    Ok(Baked {
        html: baked.html,
        warnings: baked
            .warnings
            .iter()
            .map(|w| format!("{}: {w}", w.level.as_str()))
            .collect(),
    })
}

type Parsed = Result<Arc<Recipe>, String>;

/// Where bakes run.
enum Oven {
    /// In bake processes (each keeps its own parses).
    Isolated(pool::BakePool),
    /// In the daemon, parsing into the step's cache.
    InProcess,
}

/// A recipe this step has seen: its CSS and, when baking in-process, its parse.
struct Known {
    source: Arc<RecipeSource>,
    parsed: OnceLock<Parsed>,
}

/// The `collate` step.
pub struct Collate {
    cfg: CollateConfig,
    oven: Oven,
    /// Recipes by id (see the module docs).
    recipes: Mutex<HashMap<i64, Arc<Known>>>,
}

impl Collate {
    /// A step with its own bake processes (or, without a bake program, baking in this
    /// process); processes start with the first bake.
    pub fn new(cfg: CollateConfig) -> Self {
        match BAKE_PROGRAM.get() {
            Some(program) => Self::isolated(cfg, program.clone()),
            None => Self::in_process(cfg),
        }
    }

    /// A step whose bakes run in processes of `program` (`postpub`), whatever
    /// [`set_bake_program`] said (benchmarks compare both ways).
    pub fn isolated(cfg: CollateConfig, program: PathBuf) -> Self {
        Self {
            oven: Oven::Isolated(pool::BakePool::new(program, cfg.max_memory_bytes)),
            cfg,
            recipes: Mutex::default(),
        }
    }

    /// A step whose bakes run in this process.
    pub fn in_process(cfg: CollateConfig) -> Self {
        Self {
            cfg,
            oven: Oven::InProcess,
            recipes: Mutex::default(),
        }
    }

    /// Whether bakes run in bake processes.
    pub fn is_isolated(&self) -> bool {
        matches!(self.oven, Oven::Isolated(_))
    }

    fn recipes(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Known>>> {
        // The map stays consistent whatever panicked while holding it (single inserts).
        self.recipes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry for `source`, made on first sight.
    fn remember(&self, source: &Arc<RecipeSource>) -> Arc<Known> {
        let mut recipes = self.recipes();
        if let Some(k) = recipes.get(&source.id) {
            return k.clone();
        }
        if recipes.len() >= CACHE_SIZE {
            recipes.clear();
        }
        let known = Arc::new(Known {
            source: source.clone(),
            parsed: OnceLock::new(),
        });
        recipes.insert(source.id, known.clone());
        known
    }

    async fn bake_in_process(&self, known: &Known, work: &mut Work) -> Result<Baked, StepError> {
        let id = known.source.id;
        let parsed = known.parsed.get_or_init(|| {
            parse_recipe(&known.source.css, &self.cfg)
                .map(Arc::new)
                .map_err(|e| format!("recipe {id}: {e}"))
        });
        let recipe = match parsed {
            Ok(r) => r.clone(),
            Err(e) => return Err(StepError::Permanent(e.clone())),
        };
        let body = std::mem::take(&mut work.body);
        let cfg = self.cfg.clone();
        let task = tokio::task::spawn_blocking(move || {
            let result = bake_body(&recipe, &body, &cfg);
            (body, result)
        });
        match task.await {
            Ok((body, result)) => {
                work.body = body;
                result.map_err(StepError::Permanent)
            }
            // A panic in the engine is a bug; the version is errored, not the daemon.
            Err(e) => Err(StepError::Permanent(format!("collation failed: {e}"))),
        }
    }

    async fn bake(&self, work: &mut Work) -> Result<(), StepError> {
        let Some(source) = work.recipe.clone() else {
            return Ok(());
        };
        let known = self.remember(&source);
        let baked = match &self.oven {
            Oven::Isolated(pool) => {
                pool.bake(source.id, &source.css, &work.body, &self.cfg)
                    .await?
            }
            Oven::InProcess => self.bake_in_process(&known, work).await?,
        };
        work.body = baked.html;
        work.transformed = true;
        work.warnings.extend(baked.warnings);
        Ok(())
    }
}

impl Step for Collate {
    fn name(&self) -> &'static str {
        "collate"
    }

    fn needs_recipe(&self) -> bool {
        true
    }

    fn cached_recipe(&self, id: i64) -> Option<Arc<RecipeSource>> {
        self.recipes().get(&id).map(|k| k.source.clone())
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
