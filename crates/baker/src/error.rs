//! The one error type of the collation engine.
//!
//! Every variant is *permanent*: it describes a problem of the recipe, of the
//! document, or of the two together (a recipe that moves a node into itself),
//! so retrying the same bake can never succeed. The pipeline maps all of them
//! to a permanent step failure.

/// Why a recipe could not be parsed or a document could not be baked.
///
/// Display gives one readable line that names where the problem is, e.g.
/// `recipe line 12, rule "div::insde": unknown pseudo-element ::insde`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollateError {
    /// The recipe (CSS) is malformed or uses something the dialect does not know.
    #[error("recipe line {line}, rule \"{rule}\": {msg}")]
    Recipe {
        /// 1-based line of the rule or declaration in the recipe.
        line: u32,
        /// The rule's selector text (or the at-rule), shortened.
        rule: String,
        /// What is wrong.
        msg: String,
    },
    /// The document is not well-formed XHTML.
    #[error("document line {line}: {msg}")]
    Html {
        /// 1-based line in the input document.
        line: u32,
        /// What is wrong.
        msg: String,
    },
    /// Applying the recipe to this document is impossible (for example a node
    /// would be moved inside itself).
    #[error("recipe line {line}, rule \"{rule}\": cannot apply to this document: {msg}")]
    Apply {
        /// Line of the rule whose action failed (0 when unknown).
        line: u32,
        /// The rule's selector text.
        rule: String,
        /// What is wrong.
        msg: String,
    },
    /// The bake would exceed one of the configured [`Limits`](super::Limits).
    #[error("collation limit exceeded: {what} (limit {limit})")]
    Limit {
        /// Which limit.
        what: &'static str,
        /// The configured value of that limit.
        limit: u64,
    },
}

impl CollateError {
    /// Always `true`: no collation error goes away by retrying.
    pub fn is_permanent(&self) -> bool {
        true
    }

    pub(crate) fn recipe(line: u32, rule: &str, msg: impl Into<String>) -> Self {
        CollateError::Recipe {
            line,
            rule: shorten(rule),
            msg: msg.into(),
        }
    }

    pub(crate) fn apply(line: u32, rule: &str, msg: impl Into<String>) -> Self {
        CollateError::Apply {
            line,
            rule: shorten(rule),
            msg: msg.into(),
        }
    }
}

/// Keeps messages on one line and of a readable length, whatever the recipe holds.
pub(crate) fn shorten(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 80 {
        let cut: String = one_line.chars().take(77).collect();
        format!("{cut}...")
    } else {
        one_line
    }
}
