//! Collation: baking an XHTML book with a CSS recipe, the way cnx-easybake does.
//!
//! A recipe is CSS whose declarations move, copy, wrap, number, sort and
//! group parts of the book (`move-to`, `copy-to`, `content: pending(…)`,
//! `counter-increment`, `sort-by`, `group-by`, `::before`/`::after`/
//! `::inside`/`::outside`/`:deferred`, `:pass(…)`); the dialect is documented
//! in cnx-easybake's `css-extensions.md`. This engine reproduces what
//! cnx-easybake 1.2.8 produces (its conformance fixtures pass, and so do
//! differential runs on generated recipes), in linear time and a fraction
//! of the memory.
//!
//! A [`Recipe`] is parsed once and can then bake any number of documents,
//! from any number of threads (it is `Send + Sync` and never mutated).
//! [`Recipe::parse`] accepts what the reference accepts and reports the
//! same problems as [`Warning`]s (at the reference's log level, repeats
//! counted). [`Recipe::parse_strict`] is for recipe authors: what the
//! reference would only warn about is a parse error naming the line and
//! rule. Every error is permanent: it names the recipe line and rule, or
//! the document line, and retrying cannot help.
//!
//! Input is well-formed XML (XHTML), as for the reference (lxml's XML
//! parser); output is XML, with empty non-void elements written
//! `<x></x>` so it also reads correctly as HTML.
//!
//! Map of the module (each file owns one concern):
//! - `css` — recipe syntax (cssparser) into rules and component values;
//! - `select` / `element` — selectors (the `selectors` crate) with the
//!   dialect's pseudo-classes and pseudo-elements, and the arena tree as
//!   the selector engine sees it;
//! - `recipe` — compiling rules into passes and pseudo-element groups;
//!   `index` — finding candidate rules per element; `validate` — strict checks;
//! - `dom` — the arena tree in lxml's text/tail model; `xml` / `serialize` —
//!   reading and writing it (quick-xml);
//! - `oven` — per-bake state, the action list and the pass loop; `walk` —
//!   matching rules and running them in easybake's order; `declare` — what
//!   each property does; `value` — computed strings and counters;
//! - `apply` — performing the recorded actions; `ordered` and `sortkey` —
//!   `sort-by`/`group-by` insertion, keys and ICU collation;
//! - `error` — [`CollateError`]; `bench` — a generated book, a recipe and a
//!   runner for `postpub bench collate`.

/// The README's example runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod apply;
mod atom;
pub mod bench;
mod budget;
mod css;
mod declare;
mod dom;
mod element;
mod error;
mod index;
mod ordered;
mod oven;
mod recipe;
mod select;
mod serialize;
mod sortkey;
mod validate;
mod value;
mod walk;
mod warning;
mod xml;

use std::time::Duration;

pub use error::CollateError;
pub use warning::{Level, Warning};

/// A parsed, validated recipe, ready to bake many documents.
pub struct Recipe {
    compiled: recipe::Compiled,
}

/// The result of a bake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baked {
    /// The baked document, serialised as XML (UTF-8).
    pub html: String,
    /// Problems that did not stop the bake, in the order they first
    /// occurred, each with its level, rule line and count (easybake's log
    /// messages, e.g. `"nope empty bucket"`); distinct entries are capped by
    /// [`Limits::max_warnings`].
    pub warnings: Vec<Warning>,
}

/// Bounds on the work one bake may do, so a hostile or broken recipe or
/// document fails with [`CollateError::Limit`] instead of exhausting the
/// daemon. Node and output limits are relative to the input, since a
/// recipe legitimately copies content (a table of contents, an index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted document.
    pub max_input_bytes: usize,
    /// Nodes the tree may grow to, as a multiple of the input's nodes …
    pub max_nodes_factor: usize,
    /// … plus this many.
    pub max_nodes_extra: usize,
    /// Text the recipe may create (strings it computes, text and attribute
    /// values it writes, text it copies with a subtree), as a multiple of
    /// the input size …
    pub max_text_factor: usize,
    /// … plus this many bytes.
    pub max_text_extra: usize,
    /// Output size as a multiple of the input size …
    pub max_output_factor: usize,
    /// … plus this many bytes.
    pub max_output_extra: usize,
    /// Deepest element nesting accepted in the input.
    pub max_depth: usize,
    /// Distinct warnings kept (the rest are counted in a final entry).
    pub max_warnings: usize,
    /// Wall-clock bound for one bake (`None`: unbounded).
    pub max_duration: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: 256 << 20,
            max_nodes_factor: 20,
            max_nodes_extra: 100_000,
            max_text_factor: 20,
            max_text_extra: 16 << 20,
            max_output_factor: 20,
            max_output_extra: 16 << 20,
            max_depth: 1024,
            max_warnings: 1000,
            max_duration: Some(Duration::from_secs(120)),
        }
    }
}

/// Options of one bake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BakeOptions {
    /// Bounds on the work of the bake.
    pub limits: Limits,
    /// `uuid()` yields `autobaked-1`, `autobaked-2`, … instead of random
    /// UUIDs (easybake's `--use-repeatable-ids`), for reproducible output.
    pub repeatable_ids: bool,
    /// Stop before the pass of this name (easybake's `--stop-at`).
    pub stop_before: Option<String>,
}

impl Recipe {
    /// Parses a recipe the way cnx-easybake 1.2.8 does: what it tolerates
    /// (an unknown property, function, pseudo-class or pseudo-element, a bad
    /// selector or declaration) is skipped and reported as a [`Warning`]
    /// with every bake. Only CSS that does not parse at all is an error.
    pub fn parse(css: &str) -> Result<Recipe, CollateError> {
        Ok(Recipe {
            compiled: recipe::compile(css, false)?,
        })
    }

    /// Parses a recipe strictly, for recipe authors: anything
    /// cnx-easybake would only warn about (unknown property, function,
    /// pseudo-class or pseudo-element, malformed `string-set`, undefined
    /// namespace prefix, unsupported at-rule, a bad key selector) is an
    /// error naming the line and the rule.
    pub fn parse_strict(css: &str) -> Result<Recipe, CollateError> {
        Ok(Recipe {
            compiled: recipe::compile(css, true)?,
        })
    }

    /// Names of the passes, in the order they run.
    pub fn passes(&self) -> Vec<String> {
        self.compiled
            .passes
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    /// Problems found while parsing (never any for a strict recipe); they
    /// are also part of every bake's warnings.
    pub fn warnings(&self) -> &[Warning] {
        &self.compiled.warnings
    }

    /// Bakes `html` (well-formed XHTML) with the default [`Limits`].
    pub fn bake(&self, html: &str) -> Result<Baked, CollateError> {
        self.bake_with(html, &BakeOptions::default())
    }

    /// Bakes with explicit limits.
    pub fn bake_with_limits(&self, html: &str, limits: &Limits) -> Result<Baked, CollateError> {
        self.bake_with(
            html,
            &BakeOptions {
                limits: limits.clone(),
                ..BakeOptions::default()
            },
        )
    }

    /// Bakes with explicit options.
    pub fn bake_with(&self, html: &str, opts: &BakeOptions) -> Result<Baked, CollateError> {
        let limits = &opts.limits;
        if html.len() > limits.max_input_bytes {
            return Err(CollateError::limit(
                "input size in bytes",
                limits.max_input_bytes as u64,
            ));
        }
        let hard_cap = limits
            .max_input_bytes
            .saturating_mul(limits.max_nodes_factor.max(1))
            .saturating_add(limits.max_nodes_extra)
            .min(u32::MAX as usize - 1);
        let watchdog = limits.max_duration.map(budget::Watchdog::start);
        let atoms = dom::Interner::over(self.compiled.atoms.clone());
        let mut doc = xml::parse_with(html, hard_cap, limits.max_depth, atoms)?;
        doc.budget.max_nodes = doc
            .len()
            .saturating_mul(limits.max_nodes_factor)
            .saturating_add(limits.max_nodes_extra)
            .min(hard_cap);
        let max_text = html
            .len()
            .saturating_mul(limits.max_text_factor)
            .saturating_add(limits.max_text_extra);
        doc.budget.limit(max_text as u64, watchdog.as_ref());
        let mut oven = oven::Oven::new(&self.compiled, doc, opts);
        oven.bake(opts.stop_before.as_deref())?;
        let max_out = html
            .len()
            .saturating_mul(limits.max_output_factor)
            .saturating_add(limits.max_output_extra);
        let html = serialize::serialize(&oven.doc, max_out)?;
        Ok(Baked {
            html,
            warnings: std::mem::take(&mut oven.warn).finish(),
        })
    }
}

impl std::fmt::Debug for Recipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recipe")
            .field("passes", &self.passes())
            .field("rules", &self.compiled.rules.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Recipe>();
    }

    fn bake(css: &str, html: &str) -> Baked {
        let r = Recipe::parse_strict(css).unwrap();
        r.bake_with(
            html,
            &BakeOptions {
                repeatable_ids: true,
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn the_output_is_xml_whatever_the_input_or_recipe_carries() {
        let out = Recipe::parse("p::after { content: 'x'; }")
            .unwrap()
            .bake("<!DOCTYPE html [ <!ENTITY e \"&#60;\"> ]>\n<html><p>t</p></html>")
            .unwrap();
        assert_eq!(
            out.html,
            "<!DOCTYPE html>\n<html><p>t<div>x</div></p></html>\n"
        );
        assert!(
            out.warnings[0]
                .message
                .contains("internal subset was dropped"),
            "{:?}",
            out.warnings
        );
        // a control character escaped into a recipe string fails the rule, as
        // lxml's refusal fails the reference's bake
        let err = Recipe::parse("p { color: red; }\np::after { content: 'a\\1 b'; }")
            .unwrap()
            .bake("<html><p>t</p></html>")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "recipe line 2, rule \"p::after\": cannot apply to this document: the recipe writes U+0001, which XML does not allow"
        );
        let err = Recipe::parse("p { attr-a\\\"b: 'x'; }")
            .unwrap()
            .bake("<html><p>t</p></html>")
            .unwrap_err();
        assert!(
            err.to_string().contains("is not an attribute name"),
            "{err}"
        );
    }

    #[test]
    fn moves_and_numbers() {
        let out = bake(
            "li { move-to: b; counter-increment: n; }\n li::before { content: counter(n) \". \"; container: span; }\n ol::after { content: pending(b); container: ul; }",
            "<body><ol><li>a</li><li>b</li></ol></body>",
        );
        assert_eq!(
            out.html,
            "<body><ol><ul><li><span>1. </span>a</li><li><span>2. </span>b</li></ul></ol></body>\n"
        );
    }
}
