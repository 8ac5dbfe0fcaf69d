//! Robustness: thousands of random and mutated recipes and documents must
//! each bake or fail with an error — never panic, never run long.
//!
//! Three sources of cases, all from a fixed seed so failures reproduce:
//! - recipes and documents generated from a small grammar of the dialect
//!   (they mostly parse, so they reach deep into walking and applying:
//!   moves into oneself, outside wrappers of moved nodes, group merges…);
//! - byte-level mutations (deletions, duplications, inserted dialect
//!   tokens) of the project's fixture recipes and documents;
//! - both, with the strict and the default (reference-compatible) parser.
//!
//! A case fails if it panics (caught and reported with its input), takes
//! longer than `CASE_LIMIT`, or bakes to something that is not namespace-
//! well-formed XML.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use postpub_baker::{BakeOptions, Limits, Recipe};

/// Override with `COLLATE_FUZZ_CASES` / `COLLATE_FUZZ_SEED` for longer hunts.
const CASES: usize = 3000;
const SEED: u64 = 0x5eed_c011_a7e5;
const CASE_LIMIT: Duration = Duration::from_secs(2);

/// Deterministic for a given seed (rand's seeded generator).
struct Rng(rand::rngs::StdRng);

impl Rng {
    fn seeded(seed: u64) -> Rng {
        Rng(rand::SeedableRng::seed_from_u64(seed))
    }
    fn next(&mut self) -> u64 {
        rand::Rng::random(&mut self.0)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const TAGS: &[&str] = &[
    "div", "p", "span", "li", "ul", "section", "h1", "h2", "a", "em", "table", "caption", "dl",
    "dt",
];
const BUCKETS: &[&str] = &["b1", "b2", "b3"];

fn gen_selector(r: &mut Rng) -> String {
    let mut s = String::new();
    if r.chance(15) {
        s.push_str(r.pick(&[":pass(2) ", ":pass(x) ", ":pass(10) "]));
    }
    for i in 0..1 + r.below(3) {
        if i > 0 {
            s.push_str(r.pick(&[" ", " > ", " + ", " ~ "]));
        }
        s.push_str(r.pick(&[
            "div", "p", "span", "li", "section", "body", "*", "h1", "ul", "a", "x|li", "dl",
        ]));
        for _ in 0..r.below(3) {
            s.push_str(r.pick(&[
                ".a",
                "#i3",
                "[data-type='t']",
                ":first-child",
                ":not(.b)",
                ":nth-child(2n+1)",
                ":has(p)",
                ":deferred",
                ":empty",
                ":match(^[a-m])",
                "[href]",
            ]));
        }
    }
    s.push_str(r.pick(&[
        "",
        "",
        "::before",
        "::after",
        "::inside",
        "::outside",
        "::deferred",
    ]));
    s
}

fn gen_value(r: &mut Rng) -> String {
    let mut parts = Vec::new();
    for _ in 0..1 + r.below(4) {
        let b = r.pick(BUCKETS);
        parts.push(match r.below(12) {
            0 => format!("pending({b})"),
            1 => format!("nodes({b})"),
            2 => format!("clear({b})"),
            3 => "content()".to_string(),
            4 => "'txt'".to_string(),
            5 => "counter(c, upper-roman)".to_string(),
            6 => "string(s, 'dflt')".to_string(),
            7 => "attr(id)".to_string(),
            8 => "target-counter(attr(href), c)".to_string(),
            9 => "uuid()".to_string(),
            10 => "first-letter(content())".to_string(),
            _ => "target-string(attr(href), s)".to_string(),
        });
    }
    parts.join(" ")
}

fn gen_decl(r: &mut Rng) -> String {
    let b = r.pick(BUCKETS);
    match r.below(14) {
        0 | 1 => format!("move-to: {b}"),
        2 => format!("copy-to: {b}"),
        3 => format!("node-set: {b}"),
        4..=6 => format!("content: {}", gen_value(r)),
        7 => format!(
            "container: {}",
            r.pick(&["div", "span", "h2", "x|em", "nav"])
        ),
        8 => format!(
            "class: {}",
            r.pick(&["'k'", "string(s)", "counter(c)", "attr(class) ' z'"])
        ),
        9 => "attr-data-n: counter(c) '/' string(s)".to_string(),
        10 => format!(
            "counter-{}: c {}",
            r.pick(&["increment", "reset"]),
            r.below(5)
        ),
        11 => format!(
            "string-set: s {}",
            r.pick(&[
                "content()",
                "attr(id)",
                "'v' counter(c)",
                "first-letter(content())"
            ])
        ),
        12 => format!(
            "sort-by: {}",
            r.pick(&[
                "span",
                "x|li",
                "\"span::first-letter\"",
                "x|li::attr(id), nocase",
                "x|dt, nocase"
            ])
        ),
        _ => format!(
            "group-by: {}",
            r.pick(&[
                "span, \"span::first-letter\"",
                "span, nocase",
                "x|li, \"x|li::first-letter\", nocase"
            ])
        ),
    }
}

fn gen_recipe(r: &mut Rng) -> String {
    let mut css = String::from("@namespace x \"http://www.w3.org/1999/xhtml\";\n");
    for _ in 0..1 + r.below(8) {
        css.push_str(&gen_selector(r));
        css.push_str(" {\n");
        for _ in 0..1 + r.below(4) {
            css.push_str("  ");
            css.push_str(&gen_decl(r));
            css.push_str(";\n");
        }
        css.push_str("}\n");
    }
    css
}

fn gen_element(r: &mut Rng, depth: usize, budget: &mut usize, ids: &mut usize, out: &mut String) {
    let tag = r.pick(TAGS);
    *ids += 1;
    out.push('<');
    out.push_str(tag);
    if r.chance(60) {
        out.push_str(&format!(" id=\"i{}\"", ids));
    }
    if r.chance(30) {
        out.push_str(&format!(" class=\"{}\"", r.pick(&["a", "b", "a b", "c"])));
    }
    if r.chance(20) {
        out.push_str(" data-type=\"t\"");
    }
    if r.chance(15) {
        out.push_str(&format!(" href=\"#i{}\"", 1 + r.below(40)));
    }
    out.push('>');
    if r.chance(60) {
        out.push_str(r.pick(&["alpha ", "Beta ", "gamma ", "é ", "zeta ", "  ", "Mu"]));
    }
    while *budget > 0 && depth < 7 && r.chance(55) {
        *budget -= 1;
        gen_element(r, depth + 1, budget, ids, out);
        if r.chance(40) {
            out.push_str(r.pick(&[" tail ", "\n", "x", "<!-- c -->"]));
        }
    }
    out.push_str("</");
    out.push_str(tag);
    out.push('>');
}

fn gen_document(r: &mut Rng) -> String {
    let mut out = String::from("<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\"><body>");
    let mut budget = 10 + r.below(50);
    let mut ids = 0;
    while budget > 0 {
        budget -= 1;
        gen_element(r, 0, &mut budget, &mut ids, &mut out);
    }
    out.push_str("</body></html>");
    out
}

const CSS_TOKENS: &[&str] = &[
    "::after",
    "::before",
    "::inside",
    "::outside",
    ":deferred",
    ":pass(2)",
    "pending(b1)",
    "nodes(",
    ")",
    "(",
    "{",
    "}",
    ";",
    ":",
    ",",
    "'",
    "\"",
    "\\",
    "move-to: b1;",
    "content: content();",
    "counter(",
    "*",
    "#",
    ".",
    "|",
    "x|",
    "::attr(",
    "@namespace",
    "/*",
    "*/",
    ":has(",
    ":not(",
    "string(",
    "\u{e9}",
    "\n",
];
const HTML_TOKENS: &[&str] = &[
    "<div>",
    "</div>",
    "<span/>",
    "&amp;",
    "&",
    "<![CDATA[x]]>",
    "<!--",
    "-->",
    " xmlns:q=\"u\"",
    "q:",
    " id=\"i1\"",
    " class=\"a\"",
    "<",
    ">",
    "\"",
    "'",
    "&#0;",
    "&#233;",
    "<?pi x?>",
    "<!DOCTYPE html>",
    "\u{0}",
    "\u{e9}",
];

fn mutate(r: &mut Rng, src: &str, tokens: &[&str]) -> String {
    let mut chars: Vec<char> = src.chars().collect();
    for _ in 0..1 + r.below(4) {
        let len = chars.len();
        let at = r.below(len + 1);
        match r.below(4) {
            0 if len > 0 => {
                let n = 1 + r.below(20.min(len - at.min(len)).max(1));
                let end = (at + n).min(len);
                chars.drain(at.min(len)..end);
            }
            1 if len > 0 => {
                let end = (at + 1 + r.below(40)).min(len);
                let piece: Vec<char> = chars[at.min(len)..end].to_vec();
                let to = r.below(chars.len() + 1);
                chars.splice(to..to, piece);
            }
            _ => {
                let t: Vec<char> = r.pick(tokens).chars().collect();
                chars.splice(at..at, t);
            }
        }
    }
    chars.into_iter().collect()
}

fn seeds(dir: &Path, suffix: &str) -> Vec<String> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .filter_map(|e| {
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read_to_string(e.path()).ok()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.into_iter().map(|(_, s)| s).collect()
}

#[test]
fn random_recipes_and_documents_never_panic_or_hang() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut css_seeds = seeds(&fixtures, ".css");
    css_seeds.push(postpub_baker::bench::BOOK_RECIPE.to_string());
    let mut html_seeds = seeds(&fixtures, "_raw.html");
    html_seeds.push(postpub_baker::bench::generate_book(20_000));
    assert!(!css_seeds.is_empty() && !html_seeds.is_empty());

    let opts = BakeOptions {
        limits: Limits {
            max_duration: Some(CASE_LIMIT),
            ..Limits::default()
        },
        repeatable_ids: true,
        stop_before: None,
    };
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let cases = env("COLLATE_FUZZ_CASES")
        .map(|v| v as usize)
        .unwrap_or(CASES);
    let mut rng = Rng::seeded(env("COLLATE_FUZZ_SEED").unwrap_or(SEED));
    let (mut baked, mut errors, mut failures) = (0usize, 0usize, Vec::new());
    let started = Instant::now();
    for case in 0..cases {
        let (css, html) = match case % 3 {
            0 => (gen_recipe(&mut rng), gen_document(&mut rng)),
            1 => {
                let c = css_seeds[rng.below(css_seeds.len())].clone();
                let h = html_seeds[rng.below(html_seeds.len())].clone();
                (mutate(&mut rng, &c, CSS_TOKENS), h)
            }
            _ => {
                let h = html_seeds[rng.below(html_seeds.len())].clone();
                let mutated = mutate(&mut rng, &h, HTML_TOKENS);
                (gen_recipe(&mut rng), mutated)
            }
        };
        let strict = rng.chance(30);
        let t = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let recipe = if strict {
                Recipe::parse_strict(&css)
            } else {
                Recipe::parse(&css)
            };
            recipe.and_then(|r| r.bake_with(&html, &opts))
        }));
        let took = t.elapsed();
        match outcome {
            Ok(Ok(b)) => {
                baked += 1;
                let opts = roxmltree::ParsingOptions {
                    allow_dtd: true,
                    ..Default::default()
                };
                if let Err(e) = roxmltree::Document::parse_with_options(&b.html, opts) {
                    failures.push(format!(
                        "case {case}: the output is not XML ({e})\n--- recipe\n{css}\n--- document\n{html}\n--- output\n{}",
                        b.html
                    ));
                }
            }
            Ok(Err(_)) => errors += 1,
            Err(_) => failures.push(format!(
                "case {case} panicked\n--- recipe\n{css}\n--- document\n{html}"
            )),
        }
        if took > CASE_LIMIT + Duration::from_millis(500) {
            failures.push(format!(
                "case {case} took {took:?}\n--- recipe\n{css}\n--- document\n{html}"
            ));
        }
    }
    eprintln!(
        "collation fuzz: {cases} cases in {:?}: {baked} baked, {errors} errors, {} failures",
        started.elapsed(),
        failures.len()
    );
    assert!(
        baked > cases / 4,
        "too few cases baked ({baked}): the generator is off"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
