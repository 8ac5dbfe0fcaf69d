//! Strict validation of declaration values.
//!
//! cnx-easybake reads values leniently and reports problems only when a
//! rule fires (or silently ignores them); strict parsing checks the same
//! shapes up front so a broken recipe is refused with its line before any
//! document is baked.

use std::collections::HashMap;

use super::css::{self, Cv, RawDecl};
use super::recipe::DeclKind;

/// Functions allowed where a string is computed (`class`, `attr-*`, arguments);
/// `content` may also call `pending()`, `nodes()` and `clear()`.
const STRING_FUNCS: &[&str] = &[
    "string",
    "counter",
    "counters",
    "target-counter",
    "target-string",
    "attr",
    "uuid",
    "first-letter",
    "content",
];

/// Checks a declaration in strict mode.
pub(crate) fn declaration(
    kind: &DeclKind,
    d: &RawDecl,
    namespaces: &HashMap<String, String>,
) -> Result<(), String> {
    let v = &d.value;
    match kind {
        DeclKind::Unknown => Err("unknown property".into()),
        DeclKind::OldPass => {
            Err("`pass:` declarations are not supported; use the :pass(name) pseudo-class".into())
        }
        DeclKind::StringSet => validate_string_set(v),
        DeclKind::CounterReset | DeclKind::CounterIncrement => {
            match v
                .iter()
                .find(|t| !matches!(t, Cv::Ws(_) | Cv::Ident(_) | Cv::Lit(_) | Cv::Num { .. }))
            {
                Some(t) => Err(format!(
                    "unexpected {} in counter list",
                    css::serialize(std::slice::from_ref(t))
                )),
                None => Ok(()),
            }
        }
        DeclKind::NodeSet(_) | DeclKind::CopyTo(_) | DeclKind::MoveTo(_) => {
            if css::serialize(v).trim().is_empty() {
                Err("needs a bucket name".into())
            } else {
                Ok(())
            }
        }
        DeclKind::Container { prefix, local } => {
            if let Some(p) = prefix {
                if !namespaces.contains_key(p) {
                    return Err(format!("undefined namespace prefix {p}"));
                }
            }
            if is_xml_name(local) {
                Ok(())
            } else {
                Err(format!(
                    "{:?} is not an element name",
                    css::serialize(v).trim()
                ))
            }
        }
        DeclKind::Attribute(name) => {
            if !is_xml_name(name) {
                return Err(format!("{name:?} is not an attribute name"));
            }
            validate_terms(v, false)
        }
        DeclKind::Content => validate_terms(v, true),
        DeclKind::Sort { .. } | DeclKind::BrokenSort => Ok(()),
    }
}

/// Whether `s` can be an XML element or attribute name (no prefix).
pub(crate) fn is_xml_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn func_arity(name: &str, args: &[Cv]) -> Result<(), String> {
    let n = css::split(args, ",").len();
    let ok = match name {
        "string" | "attr" | "counter" => (1..=2).contains(&n),
        "counters" => (1..=3).contains(&n),
        "target-counter" | "target-string" => n == 2,
        "uuid" => n == 0,
        "content" => n == 0,
        "first-letter" => n == 1,
        "pending" | "nodes" | "clear" => n == 1 && args.iter().filter(|t| !t.is_ws()).count() == 1,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("wrong arguments for {name}()"))
    }
}

/// A known function's arguments: its arity, and each argument a computed string.
fn validate_call(name: &str, args: &[Cv]) -> Result<(), String> {
    func_arity(name, args)?;
    for piece in css::split(args, ",") {
        validate_terms(piece, false)?;
    }
    Ok(())
}

/// Terms of a computed string (`content == false`: literals, strings,
/// idents and the string functions) or of a `content` value (strings,
/// literals and the content functions, buckets included).
fn validate_terms(v: &[Cv], content: bool) -> Result<(), String> {
    let buckets = |name: &str| matches!(name, "pending" | "nodes" | "clear");
    for t in v {
        match t {
            Cv::Ws(_) | Cv::Str(_) | Cv::Lit(_) => {}
            Cv::Ident(_) if !content => {}
            Cv::Func { name, args } if buckets(name) => {
                if !content {
                    return Err(format!("{name}() is only allowed in content"));
                }
                func_arity(name, args)?;
            }
            Cv::Func { name, args } if STRING_FUNCS.contains(&name.as_str()) => {
                validate_call(name, args)?
            }
            Cv::Func { name, .. } => return Err(format!("unknown function {name}()")),
            other => {
                let what = css::serialize(std::slice::from_ref(other));
                return Err(if content {
                    format!(
                        "unexpected {} (content takes strings and functions)",
                        what.trim()
                    )
                } else {
                    format!("unexpected {}", what.trim())
                });
            }
        }
    }
    Ok(())
}

/// `string-set: name value…[, name value…]` as easybake reads it.
fn validate_string_set(v: &[Cv]) -> Result<(), String> {
    let mut has_name = false;
    for t in v {
        match t {
            Cv::Ws(_) => {}
            Cv::Str(_) if has_name => {}
            Cv::Ident(_) if !has_name => has_name = true,
            Cv::Lit(_) if has_name => has_name = false,
            Cv::Func { name, args }
                if STRING_FUNCS.contains(&name.as_str())
                    && (has_name || name == "counter" || name == "first-letter") =>
            {
                validate_call(name, args)?;
            }
            Cv::Func { name, .. } if name == "pending" => {
                return Err("pending() is not allowed".into())
            }
            _ => {
                return Err(format!(
                    "malformed value {:?} (expected NAME VALUE…[, NAME VALUE…])",
                    css::serialize(v).trim()
                ))
            }
        }
    }
    Ok(())
}
