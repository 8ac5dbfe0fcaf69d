//! Computing strings from declaration values: `string()`, `attr()`,
//! `counter()`, `content()`, `first-letter()`, `uuid()`, `target-*()`.
//!
//! The rules are easybake's `eval_string_value`, kept literally because
//! recipes depend on its quirks: identifiers count as text, numbers are
//! dropped, `first-letter()` inside a computed string takes one character,
//! and `target-counter()` / `target-string()` stay unresolved until the
//! actions are applied, when every element of the pass has been seen (that
//! is what makes forward references work).

use std::borrow::Cow;

use super::css::{self, Cv};
use super::dom::NodeId;
use super::error::CollateError;
use super::oven::Oven;

/// Part of a computed string.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Piece {
    Text(String),
    /// `target-counter(#id, name)` / `target-string(#id, name)`, resolved late.
    Target {
        id: String,
        name: String,
        counter: bool,
    },
}

/// easybake's `vals[0]` as a string (a deferred target gives "").
pub(crate) fn first_text(pieces: &[Piece]) -> String {
    match pieces.first() {
        Some(Piece::Text(s)) => s.clone(),
        _ => String::new(),
    }
}

impl Oven<'_> {
    /// Evaluates a value to text and deferred pieces.
    pub(crate) fn eval_string(
        &mut self,
        node: NodeId,
        values: &[Cv],
    ) -> Result<Vec<Piece>, CollateError> {
        let mut text = String::new();
        let mut vals = Vec::new();
        for term in values {
            match term {
                Cv::Str(s) | Cv::Ident(s) | Cv::Lit(s) => text.push_str(s),
                Cv::Func { name, args } => match name.as_str() {
                    "string" => text.push_str(&self.string_fn(node, args)?),
                    "attr" => {
                        if let Some(v) = self.attr_fn(node, args)? {
                            text.push_str(&v);
                        }
                    }
                    "uuid" => {
                        let id = self.generate_id();
                        text.push_str(&id);
                    }
                    "content" => text.push_str(&self.content_text(node)?),
                    n if n.starts_with("target-") => {
                        if !text.is_empty() {
                            vals.push(Piece::Text(std::mem::take(&mut text)));
                        }
                        if let Some(p) = self.target_fn(node, n, args)? {
                            vals.push(p);
                        }
                    }
                    "first-letter" => {
                        let inner = self.eval_string(node, args)?;
                        match inner.first() {
                            Some(Piece::Text(s)) => {
                                if let Some(c) = s.chars().next() {
                                    text.push(c);
                                }
                            }
                            Some(Piece::Target { .. }) => self.warning(format!(
                                "Bad string value: nested target-* not allowed. {}",
                                css::serialize(values)
                            )),
                            None => {}
                        }
                    }
                    "counter" | "counters" => {
                        let c = self.counter_fn(name, args);
                        text.push_str(&c);
                    }
                    "pending" => self.warning(format!(
                        "Bad string value: pending() not allowed. {}",
                        css::serialize(values)
                    )),
                    _ => self.warning(format!(
                        "Bad string value: unknown function: {name}. {}",
                        css::serialize(values)
                    )),
                },
                _ => {}
            }
        }
        if !text.is_empty() || vals.is_empty() {
            vals.push(Piece::Text(text));
        }
        Ok(vals)
    }

    /// `first_text(eval_string(piece))`, without evaluating when the piece is
    /// one literal (the usual `string(name)`, `attr(name)`).
    pub(crate) fn piece_text<'v>(
        &mut self,
        node: NodeId,
        piece: &'v [Cv],
    ) -> Result<Cow<'v, str>, CollateError> {
        let mut lit = None;
        for v in piece {
            match v {
                Cv::Ws(_) => {}
                Cv::Str(s) | Cv::Ident(s) | Cv::Lit(s) if lit.is_none() => lit = Some(s.as_str()),
                _ => {
                    lit = None;
                    break;
                }
            }
        }
        match lit {
            Some(s) if piece.iter().filter(|v| !v.is_ws()).count() == 1 => Ok(Cow::Borrowed(s)),
            _ => Ok(Cow::Owned(first_text(&self.eval_string(node, piece)?))),
        }
    }

    /// `content()`: the text of `node`'s subtree, charged as new text.
    pub(crate) fn content_text(&mut self, node: NodeId) -> Result<String, CollateError> {
        let text = self.doc.text_content(node, false);
        self.doc.budget.text(text.len())?;
        Ok(text)
    }

    /// Charges a copy of `s` as new text and makes it.
    pub(crate) fn copied(&mut self, s: &str) -> Result<String, CollateError> {
        self.doc.budget.text(s.len())?;
        Ok(s.to_string())
    }

    /// `string(name[, default])`, warning when the string is blank and has
    /// no default.
    pub(crate) fn string_fn(&mut self, node: NodeId, args: &[Cv]) -> Result<String, CollateError> {
        let mut parts = css::pieces(args, ",");
        let (first, second) = (parts.next(), parts.next());
        let name = match first {
            Some(p) => self.piece_text(node, p)?,
            None => Cow::Borrowed(""),
        };
        let len = self.lookup_string(&name).map_or(0, str::len);
        if len > 0 {
            // charged before the copy is made: a doubling string stops here
            self.doc.budget.text(len)?;
            return Ok(self.lookup_string(&name).unwrap_or("").to_string());
        }
        Ok(match second {
            Some(p) => self.piece_text(node, p)?.into_owned(),
            None => {
                self.warning(format!("{name} blank string"));
                String::new()
            }
        })
    }

    /// `attr(name[, default])`; `prefix|name` uses the recipe's namespaces.
    /// `None` when the prefix is undefined (easybake skips the term).
    pub(crate) fn attr_fn(
        &mut self,
        node: NodeId,
        args: &[Cv],
    ) -> Result<Option<String>, CollateError> {
        let mut parts = css::pieces(args, ",");
        let (first, second) = (parts.next(), parts.next());
        let name = match first {
            Some(p) => self.piece_text(node, p)?,
            None => Cow::Borrowed(""),
        };
        let default = match second {
            Some(p) => self.piece_text(node, p)?.into_owned(),
            None => String::new(),
        };
        let len = match name.split_once('|') {
            Some((prefix, local)) => {
                let Some(uri) = self.recipe.namespaces.get(prefix) else {
                    self.warning(format!("Undefined namespace prefix {prefix}"));
                    return Ok(None);
                };
                self.doc.attr_ns(node, uri, local).map(str::len)
            }
            None => self.doc.attr(node, &name).map(str::len),
        };
        let Some(len) = len else {
            return Ok(Some(default));
        };
        self.doc.budget.text(len)?;
        let value = match name.split_once('|') {
            Some((prefix, local)) => {
                let uri = self
                    .recipe
                    .namespaces
                    .get(prefix)
                    .map_or("", |u| u.as_str());
                self.doc.attr_ns(node, uri, local)
            }
            None => self.doc.attr(node, &name),
        };
        Ok(Some(value.unwrap_or("").to_string()))
    }

    /// `target-counter(ref, name)` / `target-string(ref, name)`: `ref` is
    /// `#id` (the first character is dropped, whatever it is).
    pub(crate) fn target_fn(
        &mut self,
        node: NodeId,
        fname: &str,
        args: &[Cv],
    ) -> Result<Option<Piece>, CollateError> {
        let parts = css::split(args, ",");
        let (Some(r), Some(n)) = (parts.first(), parts.get(1)) else {
            self.warning(format!("Bad string value: {fname}() needs two arguments"));
            return Ok(None);
        };
        let vref = first_text(&self.eval_string(node, r)?);
        let name = first_text(&self.eval_string(node, n)?);
        let counter = match fname {
            "target-counter" | "target-counters" => true,
            "target-string" => false,
            _ => {
                self.warning(format!("Unknown function {fname}"));
                return Ok(None);
            }
        };
        let id: String = vref.chars().skip(1).collect();
        Ok(Some(Piece::Target { id, name, counter }))
    }

    /// `counter(name[, style])`; `counters(name, sep[, style])` is accepted
    /// as the same thing, since easybake's counters are never nested.
    pub(crate) fn counter_fn(&mut self, fname: &str, args: &[Cv]) -> String {
        // at most three names matter: counters(name, separator, style)
        let mut names: [Option<std::borrow::Cow<'_, str>>; 3] = [None, None, None];
        let mut n = 0;
        for p in css::pieces(args, ",") {
            if n < 3 {
                names[n] = Some(css::trimmed_name(p));
            }
            n += 1;
        }
        if fname == "counters" && n >= 2 {
            names[1] = names[2].take();
            n -= 1;
        }
        match (n, &names) {
            (1, [Some(name), ..]) => self.lookup_counter(name).unwrap_or(0).to_string(),
            (2, [Some(name), Some(style), _]) => match self.lookup_counter(name) {
                Some(v) => self.counter_style(v, style),
                None => "0".to_string(),
            },
            _ => {
                self.warning(format!("Bad counter(): {}", css::serialize(args)));
                "0".to_string()
            }
        }
    }

    /// Formats a counter value in a list style.
    pub(crate) fn counter_style(&mut self, val: i64, style: &str) -> String {
        match style {
            "decimal" => val.to_string(),
            "decimal-leading-zero" if val < 10 => format!("0{val}"),
            "decimal-leading-zero" => val.to_string(),
            "lower-roman" | "upper-roman" => {
                if !(1..5000).contains(&val) {
                    self.warning("Number out of range for roman (must be 1..4999)");
                    return val.to_string();
                }
                let r = to_roman(val);
                if style == "lower-roman" {
                    r.to_lowercase()
                } else {
                    r
                }
            }
            "lower-latin" | "lower-alpha" | "upper-latin" | "upper-alpha" => {
                if !(1..=26).contains(&val) {
                    self.warning("Counter out of range for latin (must be 1...26)");
                    return val.to_string();
                }
                let base = if style.starts_with("lower") {
                    b'a'
                } else {
                    b'A'
                };
                char::from(base + (val as u8 - 1)).to_string()
            }
            other => {
                self.warning(format!(
                    "ERROR: Counter numbering not supported for list type {other}. Using decimal."
                ));
                val.to_string()
            }
        }
    }

    /// Resolves deferred pieces (at apply time); the result is charged as
    /// new text.
    pub(crate) fn resolve(&mut self, pieces: &[Piece]) -> Result<String, CollateError> {
        let mut out = String::new();
        for p in pieces {
            match p {
                Piece::Text(s) => out.push_str(s),
                Piece::Target { id, name, counter } => {
                    let found = self
                        .snapshot_ids
                        .get(id.as_str())
                        .and_then(|&slot| self.snapshots.get(slot as usize))
                        .map(|(_, snap)| self.lookup_in_snapshot(snap, name, *counter));
                    match found {
                        None => {
                            self.warning(format!("Bad ID target lookup {id}"));
                            if *counter {
                                out.push('0');
                            }
                        }
                        Some(Some(v)) => out.push_str(&v),
                        Some(None) if *counter => out.push('0'),
                        Some(None) => {}
                    }
                }
            }
        }
        self.doc.budget.text(out.len())?;
        Ok(out)
    }
}

fn to_roman(mut num: i64) -> String {
    const MAP: [(&str, i64); 13] = [
        ("M", 1000),
        ("CM", 900),
        ("D", 500),
        ("CD", 400),
        ("C", 100),
        ("XC", 90),
        ("L", 50),
        ("XL", 40),
        ("X", 10),
        ("IX", 9),
        ("V", 5),
        ("IV", 4),
        ("I", 1),
    ];
    let mut out = String::new();
    for (s, v) in MAP {
        while num >= v {
            out.push_str(s);
            num -= v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roman_numerals() {
        assert_eq!(to_roman(1994), "MCMXCIV");
        assert_eq!(to_roman(4), "IV");
    }

    #[test]
    fn first_text_of_deferred_is_empty() {
        let p = vec![Piece::Target {
            id: "x".into(),
            name: "n".into(),
            counter: true,
        }];
        assert_eq!(first_text(&p), "");
    }
}
