//! The project's own collation fixtures, in `tests/fixtures/`, one or more
//! per feature of the dialect beyond what the upstream suite covers.
//!
//! - `NAME.css` + `NAME_raw.html` → `NAME_baked.html`, compared like the
//!   conformance suite (see `xml_canon`), baked with the strict parser and
//!   repeatable ids, and again in the default mode (same output); `NAME.warnings` (one per line, in order) lists the
//!   expected warnings, none when absent.
//! - `NAME.error` instead of `NAME_baked.html`: parsing or baking must fail
//!   with a message containing that text.
//!
//! Where the reference supports a feature, the expected output was produced
//! by cnx-easybake 1.2.8 from these inputs; for extensions (`:has()`,
//! `counters()`) and errors it is written by hand.

mod xml_canon;

use std::path::{Path, PathBuf};

use postpub_baker::{BakeOptions, Recipe, Warning};
use xml_canon::{canonical, diff_excerpt, fixture_names};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn run_one(name: &str) -> Result<(), String> {
    let d = dir();
    let css = read(&d.join(format!("{name}.css")));
    let raw = read(&d.join(format!("{name}_raw.html")));
    let opts = BakeOptions {
        repeatable_ids: true,
        ..BakeOptions::default()
    };
    let result = Recipe::parse_strict(&css).and_then(|r| r.bake_with(&raw, &opts));
    let error_file = d.join(format!("{name}.error"));
    if error_file.exists() {
        let want = read(&error_file).trim().to_string();
        return match result {
            Ok(_) => Err(format!(
                "expected an error containing {want:?}, but it baked"
            )),
            Err(e) if e.to_string().contains(&want) => Ok(()),
            Err(e) => Err(format!("expected an error containing {want:?}, got {e}")),
        };
    }
    let baked = result.map_err(|e| format!("bake failed: {e}"))?;
    let want = canonical(&read(&d.join(format!("{name}_baked.html"))))?;
    let got = canonical(&baked.html).map_err(|e| format!("output does not parse: {e}"))?;
    if got != want {
        return Err(format!("output differs:\n{}", diff_excerpt(&want, &got)));
    }
    let warn_file = d.join(format!("{name}.warnings"));
    let want_warnings: Vec<String> = if warn_file.exists() {
        read(&warn_file).lines().map(String::from).collect()
    } else {
        Vec::new()
    };
    let got_warnings = messages(&baked.warnings);
    if got_warnings != want_warnings {
        return Err(format!(
            "warnings differ:\n  expected {want_warnings:?}\n  got      {got_warnings:?}"
        ));
    }
    // the default (reference-compatible) mode bakes a valid recipe the same way
    let default = Recipe::parse(&css)
        .and_then(|r| r.bake_with(&raw, &opts))
        .map_err(|e| format!("default-mode bake failed: {e}"))?;
    let got = canonical(&default.html).map_err(|e| format!("output does not parse: {e}"))?;
    if got != want {
        return Err(format!(
            "output differs (default mode):\n{}",
            diff_excerpt(&want, &got)
        ));
    }
    Ok(())
}

/// Each occurrence of each warning's message, in order.
fn messages(warnings: &[Warning]) -> Vec<String> {
    warnings
        .iter()
        .flat_map(|w| std::iter::repeat_n(w.message.clone(), w.count as usize))
        .collect()
}

#[test]
fn own_fixtures_bake_as_expected() {
    let names = fixture_names(&dir(), "tests/fixtures exists");
    assert!(names.len() >= 10, "fixtures missing: {names:?}");
    let failures: Vec<String> = names
        .iter()
        .filter_map(|n| run_one(n).err().map(|e| format!("--- {n}\n{e}")))
        .collect();
    eprintln!(
        "own collation fixtures: {}/{} pass",
        names.len() - failures.len(),
        names.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn baking_is_deterministic_and_thread_safe() {
    let d = dir();
    let recipe = std::sync::Arc::new(
        Recipe::parse_strict(&read(&d.join("grouping.css"))).expect("recipe parses"),
    );
    let raw = std::sync::Arc::new(read(&d.join("grouping_raw.html")));
    let first = recipe.bake(&raw).expect("bakes").html;
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (r, h) = (recipe.clone(), raw.clone());
            std::thread::spawn(move || r.bake(&h).map(|b| b.html))
        })
        .collect();
    for h in handles {
        let out = h.join().expect("thread finished").expect("bakes");
        assert_eq!(out, first);
    }
}

/// Big glossaries and indexes: sorted insertion must stay fast (easybake
/// rescans every sibling on every insertion) and still produce the order
/// and merges of the plain scan.
#[test]
fn large_sorted_and_grouped_buckets_stay_fast_and_ordered() {
    let mut seed: u64 = 7;
    let mut word = || {
        let mut w = String::new();
        for _ in 0..6 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            w.push((b'a' + ((seed >> 33) % 26) as u8) as char);
        }
        w
    };
    let words: Vec<String> = (0..20_000).map(|_| word()).collect();
    let mut html = String::from(
        "<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\"><body><ul class=\"in\">",
    );
    for (i, w) in words.iter().enumerate() {
        html.push_str(&format!("<li id=\"w{i}\"><span>{w}</span></li>"));
    }
    html.push_str("</ul><ul class=\"out\"></ul><div class=\"index\"></div></body></html>");
    let css = "@namespace x \"http://www.w3.org/1999/xhtml\";\n\
               ul.in > li { copy-to: sorted; move-to: grouped; }\n\
               ul.out { content: pending(sorted); sort-by: x|li, nocase; }\n\
               li > span::after { container: a; content: attr(id); }\n\
               div.index { content: pending(grouped); group-by: x|span, \"x|span::first-letter\"; }";
    let recipe = Recipe::parse_strict(css).expect("recipe parses");
    let t = std::time::Instant::now();
    let baked = recipe.bake(&html).expect("bakes");
    let took = t.elapsed();
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");

    let doc = roxmltree::Document::parse(&baked.html).expect("output parses");
    let texts = |class: &str| -> Vec<String> {
        let ul = doc
            .descendants()
            .find(|n| n.attribute("class") == Some(class))
            .expect("container exists");
        ul.descendants()
            .filter(|n| n.tag_name().name() == "span" && n.attribute("class").is_none())
            .map(|n| n.text().unwrap_or("").to_string())
            .collect()
    };
    let mut expected = words.clone();
    expected.sort();
    assert_eq!(texts("out"), expected, "sort-by order");
    let mut distinct = expected.clone();
    distinct.dedup();
    assert_eq!(
        texts("index"),
        distinct,
        "group-by keeps one entry per key, in order"
    );
}
