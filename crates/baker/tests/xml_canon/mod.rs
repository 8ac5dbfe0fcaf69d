//! Canonical rendering of XML for comparing baked books, shared by the
//! collation tests: one node per line, elements as `{namespace}local` with
//! sorted attributes, text with whitespace runs collapsed (whitespace-only
//! text dropped), comments trimmed, UUIDs masked. See the doc comment of
//! `conformance.rs` for why. Also lists a fixture folder, which both suites
//! read the same way.

use std::fmt::Write as _;

/// The fixtures in `dir`: the names of its `NAME.css` files, sorted.
/// Panics naming `what` when the folder cannot be read.
pub fn fixture_names(dir: &std::path::Path, what: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{what} ({}): {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".css"))
                .map(String::from)
        })
        .collect();
    names.sort();
    names
}

/// Canonical one-node-per-line rendering (see the module docs).
pub fn canonical(xml: &str) -> Result<Vec<String>, String> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(xml, opts).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    render(doc.root_element(), 0, &mut out);
    Ok(out)
}

fn render(node: roxmltree::Node<'_, '_>, depth: usize, out: &mut Vec<String>) {
    let pad = "  ".repeat(depth);
    if node.is_element() {
        let tag = node.tag_name();
        let mut line = format!("{pad}<{{{}}}{}", tag.namespace().unwrap_or(""), tag.name());
        let mut attrs: Vec<(String, String)> = node
            .attributes()
            .map(|a| {
                let key = match a.namespace() {
                    Some(ns) => format!("{{{ns}}}{}", a.name()),
                    None => a.name().to_string(),
                };
                (key, mask_uuids(a.value()))
            })
            .collect();
        attrs.sort();
        for (k, v) in attrs {
            let _ = write!(line, " {k}={v:?}");
        }
        line.push('>');
        out.push(line);
        for child in node.children() {
            render(child, depth + 1, out);
        }
    } else if node.is_text() {
        let text = node.text().unwrap_or("");
        let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if collapsed.is_empty() {
            return;
        }
        let lead = if text.starts_with(char::is_whitespace) {
            " "
        } else {
            ""
        };
        let trail = if text.ends_with(char::is_whitespace) {
            " "
        } else {
            ""
        };
        out.push(format!(
            "{pad}{:?}",
            mask_uuids(&format!("{lead}{collapsed}{trail}"))
        ));
    } else if node.is_comment() {
        out.push(format!("{pad}<!--{}-->", node.text().unwrap_or("").trim()));
    }
}

/// Replaces every 8-4-4-4-12 hex UUID with `UUID`.
pub fn mask_uuids(s: &str) -> String {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(
            r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        )
        .expect("constant regex")
    });
    re.replace_all(s, "UUID").into_owned()
}

/// The first difference with a few lines of context from both sides.
pub fn diff_excerpt(want: &[String], got: &[String]) -> String {
    let first = want
        .iter()
        .zip(got.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let from = first.saturating_sub(3);
    let mut s = format!(
        "first difference at node line {}:\n  expected:\n",
        first + 1
    );
    for l in want.iter().skip(from).take(8) {
        let _ = writeln!(s, "    {l}");
    }
    s.push_str("  got:\n");
    for l in got.iter().skip(from).take(8) {
        let _ = writeln!(s, "    {l}");
    }
    s
}
