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
    /// The baked document could not be written as XML (a safety net: the
    /// checks on the input and on what recipes write keep this from happening).
    #[error("the baked document cannot be written: {0}")]
    Output(String),
    /// The bake would exceed one of the configured [`Limits`](super::Limits):
    /// a recipe or document that would exhaust memory or time fails at once.
    #[error("{}collation limit exceeded: {what} (limit {limit})", at_rule(*.line, .rule))]
    Limit {
        /// Which limit.
        what: &'static str,
        /// The configured value of that limit.
        limit: u64,
        /// Line of the rule that was running (0 when none was, e.g. the input size).
        line: u32,
        /// That rule's selector text ("" when none).
        rule: String,
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

    /// A limit reached outside of any rule (the rule is added by the oven).
    pub(crate) fn limit(what: &'static str, limit: u64) -> Self {
        CollateError::Limit {
            what,
            limit,
            line: 0,
            rule: String::new(),
        }
    }

    /// Names the rule that was running, if the error does not name one yet.
    pub(crate) fn in_rule(self, line: u32, prelude: &str) -> Self {
        match self {
            CollateError::Apply { line: 0, msg, .. } => CollateError::apply(line, prelude, msg),
            CollateError::Limit {
                what,
                limit,
                line: 0,
                ..
            } => CollateError::Limit {
                what,
                limit,
                line,
                rule: shorten(prelude),
            },
            other => other,
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

fn at_rule(line: u32, rule: &str) -> String {
    if line == 0 {
        String::new()
    } else {
        format!("recipe line {line}, rule \"{rule}\": ")
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
