//! Warnings: what the reference only logs, kept with the bake and counted.
//!
//! cnx-easybake logs a message every time a rule meets a problem it can
//! live with (an empty bucket, a blank string, a missing target), so a real
//! book repeats the same handful of messages thousands of times. Here each
//! distinct message of a rule is kept once, with the number of times it
//! occurred, and at the level the reference logs it at (`empty bucket` is
//! INFO there, everything else WARNING).

use std::fmt;

use rustc_hash::FxHashMap;

/// How serious a warning is: the level cnx-easybake logs it at.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Expected in normal recipes (for example an empty bucket); the
    /// reference logs these at INFO and its command line does not show them.
    Info,
    /// Probably a mistake in the recipe or the document.
    Warning,
}

impl Level {
    /// `"info"` or `"warning"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
        }
    }
}

/// A problem that did not stop the bake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The level the reference logs it at.
    pub level: Level,
    /// Recipe line of the rule (or declaration) it comes from; 0 when it
    /// has none (the summary of warnings left out).
    pub line: u32,
    /// The message, worded as the reference words it.
    pub message: String,
    /// How many times this rule gave this message (at least 1).
    pub count: u64,
}

impl fmt::Display for Warning {
    /// `recipe line 12: nope empty bucket (40 times)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "recipe line {}: ", self.line)?;
        }
        f.write_str(&self.message)?;
        if self.count > 1 {
            write!(f, " ({} times)", self.count)?;
        }
        Ok(())
    }
}

/// Distinct messages kept per rule; more from one rule are only counted.
const PER_RULE: usize = 20;

/// Messages of one rule (message -> position in the list) and the position
/// of the entry counting those past [`PER_RULE`].
type RuleWarnings = (FxHashMap<String, usize>, Option<usize>);

/// Collects warnings, merging repeats and bounding what is kept.
#[derive(Default)]
pub(crate) struct Warnings {
    list: Vec<Warning>,
    /// Per (level, line): message -> position in `list`, and the position
    /// of the entry counting the messages past [`PER_RULE`].
    by_rule: FxHashMap<(Level, u32), RuleWarnings>,
    /// Most distinct entries kept.
    max: usize,
    /// Occurrences not kept because `max` was reached.
    dropped: u64,
}

impl Warnings {
    pub(crate) fn new(max: usize) -> Self {
        Warnings {
            max: max.max(1),
            ..Warnings::default()
        }
    }

    /// Records one occurrence of `message` from the rule at `line`.
    pub(crate) fn push(&mut self, level: Level, line: u32, message: String) {
        let (seen, overflow) = self.by_rule.entry((level, line)).or_default();
        if let Some(&i) = seen.get(message.as_str()) {
            self.list[i].count += 1;
            return;
        }
        let full = self.list.len() >= self.max;
        if seen.len() >= PER_RULE {
            match *overflow {
                Some(i) => self.list[i].count += 1,
                None if !full => {
                    *overflow = Some(self.list.len());
                    self.list.push(Warning {
                        level,
                        line,
                        message: "more warnings from this rule".to_string(),
                        count: 1,
                    });
                }
                None => self.dropped += 1,
            }
            return;
        }
        if full {
            self.dropped += 1;
            return;
        }
        seen.insert(message.clone(), self.list.len());
        self.list.push(Warning {
            level,
            line,
            message,
            count: 1,
        });
    }

    /// The warnings, in the order they first occurred, plus one counting
    /// those left out.
    pub(crate) fn finish(mut self) -> Vec<Warning> {
        if self.dropped > 0 {
            self.list.push(Warning {
                level: Level::Warning,
                line: 0,
                message: "more warnings not listed (limit of distinct warnings reached)"
                    .to_string(),
                count: self.dropped,
            });
        }
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_counted_and_levels_kept() {
        let mut w = Warnings::new(100);
        for _ in 0..4000 {
            w.push(Level::Info, 7, "x empty bucket".into());
        }
        w.push(Level::Warning, 9, "y blank string".into());
        let list = w.finish();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].count, 4000);
        assert_eq!(
            list[0].to_string(),
            "recipe line 7: x empty bucket (4000 times)"
        );
        assert_eq!(list[1].to_string(), "recipe line 9: y blank string");
        assert_eq!(list[1].level, Level::Warning);
    }

    #[test]
    fn one_rule_cannot_flood_the_list() {
        let mut w = Warnings::new(1000);
        for i in 0..500 {
            w.push(Level::Warning, 3, format!("Bad ID target lookup {i}"));
        }
        let list = w.finish();
        assert_eq!(list.len(), PER_RULE + 1);
        assert_eq!(list[PER_RULE].count, 500 - PER_RULE as u64);
    }

    #[test]
    fn the_total_is_bounded() {
        let mut w = Warnings::new(3);
        for line in 1..=10 {
            w.push(Level::Warning, line, "m".into());
        }
        let list = w.finish();
        assert_eq!(list.len(), 4);
        assert_eq!(list[3].count, 7);
    }
}
