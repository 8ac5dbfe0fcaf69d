//! Conformance with cnx-easybake 1.2.8: runs every upstream fixture in
//! `shared/conformance/easybake/` (`rulesets/NAME.css`, `html/NAME_raw.html`
//! → `html/NAME_baked.html`, `html/NAME.log`) through the baker.
//!
//! The fixtures live outside this repository; when the folder is missing
//! (a clone of the repo alone) the test prints why and passes.
//!
//! Each fixture is baked twice:
//! - with [`Recipe::parse`] (the default: the reference's leniency), whose output
//!   and warnings must match the fixture;
//! - with [`Recipe::parse_strict`] (strict), which must give the same output — or,
//!   for the few fixtures whose recipes are deliberately broken, an error
//!   naming the expected line (listed in `STRICT_REJECTS` with the reason).
//!
//! ## How outputs are compared
//! Both documents are parsed as XML (roxmltree) and rendered one node per
//! line: elements as `{namespace-uri}local` with their attributes sorted by
//! name (namespace declarations dropped, prefixes ignored — only namespace
//! URIs count), text with every run of whitespace collapsed to one space,
//! whitespace-only text dropped, comments kept (trimmed). Every UUID
//! (8-4-4-4-12 hex) is masked, since the reference draws them at random.
//! This ignores exactly what differs between two correct serialisations:
//! attribute order, prefix choice, `&#233;` versus `é`, indentation.
//!
//! ## How warnings are compared
//! The `.log` files hold the reference's debug output; its `WARNING` and
//! `INFO` lines are the warnings. They must equal ours as a multiset of
//! (level, message) pairs (a repeated warning counts as often as it
//! occurred), except that for `Invalid selector:` lines only the text up to
//! the selector is compared (the reason is worded differently).

mod xml_canon;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use xml_canon::{canonical, diff_excerpt, fixture_names};

use postpub_baker::{BakeOptions, CollateError, Level, Recipe, Warning};

/// Fixtures whose recipe contains a deliberate mistake that strict parsing
/// must reject: (name, line of the first mistake, why).
const STRICT_REJECTS: &[(&str, u32, &str)] = &[
    (
        "bad_declaration",
        3,
        "string-set: content() has no string name",
    ),
    (
        "container_namespace",
        8,
        "container: unknown|element uses an undefined prefix",
    ),
    ("content_function", 6, "content: nosuch() is not a function"),
    (
        "namespaces",
        4,
        "@namespace without a prefix is not supported",
    ),
    (
        "string_set",
        14,
        "string-set: \"bad bad\" has no string name",
    ),
];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/easybake")
}

#[test]
fn easybake_fixtures_bake_like_the_reference() {
    let dir = fixtures_dir();
    if !dir.join("rulesets").is_dir() {
        eprintln!(
            "skipping easybake conformance: {} not found (it is provided next to the repository as shared/)",
            dir.display()
        );
        return;
    }
    let names = fixture_names(&dir.join("rulesets"), "rulesets folder is readable");
    assert!(!names.is_empty(), "no fixtures in {}", dir.display());

    let mut failures = Vec::new();
    for name in &names {
        if let Err(why) = check_fixture(&dir, name) {
            failures.push(format!("--- {name}\n{why}"));
        }
    }
    let passed = names.len() - failures.len();
    eprintln!(
        "easybake conformance: {passed}/{} fixtures pass",
        names.len()
    );
    if !failures.is_empty() {
        panic!(
            "{} of {} easybake fixtures fail:\n{}",
            failures.len(),
            names.len(),
            failures.join("\n")
        );
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn check_fixture(dir: &Path, name: &str) -> Result<(), String> {
    let css = read(&dir.join(format!("rulesets/{name}.css")));
    let raw = read(&dir.join(format!("html/{name}_raw.html")));
    let expected = read(&dir.join(format!("html/{name}_baked.html")));
    let log = read(&dir.join(format!("html/{name}.log")));
    let want = canonical(&expected).map_err(|e| format!("expected output does not parse: {e}"))?;
    let opts = BakeOptions::default();

    // default mode: output and warnings like the reference
    let recipe = Recipe::parse(&css).map_err(|e| format!("default-mode parse failed: {e}"))?;
    let baked = recipe
        .bake_with(&raw, &opts)
        .map_err(|e| format!("default-mode bake failed: {e}"))?;
    let got = canonical(&baked.html)
        .map_err(|e| format!("our output does not parse: {e}\n{}", baked.html))?;
    if got != want {
        return Err(format!(
            "output differs (default mode):\n{}",
            diff_excerpt(&want, &got)
        ));
    }
    compare_warnings(&log, &baked.warnings)?;

    // strict mode: same output, or the documented rejection
    match (
        Recipe::parse_strict(&css),
        STRICT_REJECTS.iter().find(|(n, _, _)| *n == name),
    ) {
        (Ok(strict), None) => {
            let baked = strict
                .bake_with(&raw, &opts)
                .map_err(|e| format!("strict bake failed: {e}"))?;
            let got =
                canonical(&baked.html).map_err(|e| format!("strict output does not parse: {e}"))?;
            if got != want {
                return Err(format!(
                    "output differs (strict):\n{}",
                    diff_excerpt(&want, &got)
                ));
            }
        }
        (Ok(_), Some((_, _, why))) => {
            return Err(format!("strict parse accepted a broken recipe ({why})"))
        }
        (Err(e), None) => return Err(format!("strict parse rejected the recipe: {e}")),
        (Err(e), Some((_, line, why))) => match e {
            CollateError::Recipe { line: l, .. } if l == *line => {}
            other => {
                return Err(format!(
                    "strict parse should fail at line {line} ({why}), got: {other}"
                ))
            }
        },
    }
    Ok(())
}

/// WARNING/INFO messages of a reference log, with their level.
fn expected_warnings(log: &str) -> Vec<(Level, String)> {
    log.lines()
        .filter_map(|l| {
            l.strip_prefix("cnx-easybake WARNING ")
                .map(|m| (Level::Warning, m.to_string()))
                .or_else(|| {
                    l.strip_prefix("cnx-easybake INFO ")
                        .map(|m| (Level::Info, m.to_string()))
                })
        })
        .collect()
}

fn warning_key(w: &str) -> String {
    match w.strip_prefix("Invalid selector: ") {
        Some(rest) => format!(
            "Invalid selector: {}",
            rest.split(" (").next().unwrap_or("").trim()
        ),
        None => w.trim_end().to_string(),
    }
}

/// Same messages at the same levels, as many times each.
fn compare_warnings(log: &str, ours: &[Warning]) -> Result<(), String> {
    let count = |list: &mut dyn Iterator<Item = (Level, String)>| {
        let mut m: BTreeMap<(Level, String), u64> = BTreeMap::new();
        for (level, w) in list {
            *m.entry((level, warning_key(&w))).or_default() += 1;
        }
        m
    };
    let want = count(&mut expected_warnings(log).into_iter());
    let mut got: BTreeMap<(Level, String), u64> = BTreeMap::new();
    for w in ours {
        *got.entry((w.level, warning_key(&w.message))).or_default() += w.count;
    }
    if want != got {
        return Err(format!(
            "warnings differ:\n  expected {want:?}\n  got      {got:?}"
        ));
    }
    Ok(())
}
