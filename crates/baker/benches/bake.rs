//! `cargo bench -p postpub-baker`: bake times of the generated book (1 and 5 MB) and,
//! when `../shared/realbooks` is next to the repository, of each real book with its
//! OpenStax recipe, then the scaling curve: precalculus with its chapters repeated to
//! about 5, 10 and 20 MB (ids suffixed in each repetition, links to them too), to show
//! that time grows in proportion to size. Each figure is the best of a few runs in this
//! process (recipe parse included for the real books, as for a one-off `postpub bake`);
//! for peak memory and the reference side by side use `postpub bench collate` and
//! `../shared/realbooks/check.py`. `BAKE_BENCH=scaling` runs only the curve.

use std::path::Path;
use std::time::{Duration, Instant};

use postpub_baker::{bench, BakeOptions, Recipe};

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// `book` with the content of its chapters (from the first chapter's start to the
/// last one's end) repeated `times` times; each repetition after the first
/// suffixes its ids (and the `#id` links to them) with `-rN`.
fn repeat_chapters(book: &str, times: usize) -> String {
    let open = r#"<div data-type="chapter""#;
    let Some(start) = book.find(open) else {
        return book.to_string();
    };
    // the end of the last chapter: follow <div> nesting from each chapter start
    let mut end = start;
    let mut at = start;
    while let Some(off) = book[at..].find(open) {
        let chapter = at + off;
        let mut depth = 0usize;
        let mut i = chapter;
        loop {
            let next_open = book[i..].find("<div").map(|o| i + o);
            let next_close = book[i..].find("</div>").map(|o| i + o);
            match (next_open, next_close) {
                (Some(o), Some(c)) if o < c => {
                    let tag_end = book[o..].find('>').map_or(book.len(), |e| o + e);
                    if !book[o..tag_end].ends_with('/') {
                        depth += 1;
                    }
                    i = tag_end + 1;
                }
                (_, Some(c)) => {
                    depth -= 1;
                    i = c + "</div>".len();
                    if depth == 0 {
                        break;
                    }
                }
                _ => return book.to_string(),
            }
        }
        end = i;
        at = i;
    }
    let chapters = &book[start..end];
    let ids = regex::Regex::new(r##"(\bid="|href="#)([^"]+)""##).expect("the pattern is valid");
    let mut out = String::with_capacity(book.len() + chapters.len() * times);
    out.push_str(&book[..end]);
    for n in 2..=times {
        out.push_str(&ids.replace_all(chapters, |c: &regex::Captures<'_>| {
            format!("{}{}-r{n}\"", &c[1], &c[2])
        }));
    }
    out.push_str(&book[end..]);
    out
}

/// Time against size for a real book repeated to several sizes.
fn scaling(dir: &Path) {
    let (Ok(css), Ok(html)) = (
        std::fs::read_to_string(dir.join("recipes/precalculus.css")),
        std::fs::read_to_string(dir.join("raw/precalculus_raw.html")),
    ) else {
        println!("scaling: skipped (precalculus not found)");
        return;
    };
    let recipe = Recipe::parse(&css).expect("recipe parses");
    let opts = BakeOptions {
        repeatable_ids: true,
        ..BakeOptions::default()
    };
    let mut first: Option<f64> = None;
    for times in [1, 2, 4, 8] {
        let book = repeat_chapters(&html, times);
        let mb = book.len() as f64 / 1e6;
        let took = best_of(2, || {
            recipe.bake_with(&book, &opts).expect("book bakes");
        })
        .as_secs_f64();
        let per_mb = took / mb;
        let base = *first.get_or_insert(per_mb);
        println!(
            "scaling precalculus x{times}: {mb:>5.1} MB in {:>7.1} ms, {:>5.1} ms/MB ({:.2}x the 1x rate)",
            took * 1e3,
            per_mb * 1e3,
            per_mb / base
        );
    }
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/realbooks");
    if std::env::var("BAKE_BENCH").as_deref() == Ok("scaling") {
        scaling(&dir);
        return;
    }
    let recipe = Recipe::parse_strict(bench::BOOK_RECIPE).expect("the bench recipe parses");
    for mb in [1.0, 5.0] {
        let book = bench::generate_book((mb * 1e6) as usize);
        let took = best_of(3, || {
            recipe.bake(&book).expect("the generated book bakes");
        });
        println!(
            "generated {mb:>4} MB: {:>8.1} ms, {:>6.1} MB/s",
            took.as_secs_f64() * 1e3,
            book.len() as f64 / 1e6 / took.as_secs_f64()
        );
    }
    let Ok(cases) = std::fs::read_to_string(dir.join("cases.tsv")) else {
        println!("real books: skipped ({} not found)", dir.display());
        return;
    };
    let opts = BakeOptions {
        repeatable_ids: true,
        ..BakeOptions::default()
    };
    for line in cases
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split('\t').collect();
        let (Some(name), Some(recipe), Some(book)) = (f.first(), f.get(1), f.get(2)) else {
            continue;
        };
        let reference: f64 = f.get(3).and_then(|s| s.parse().ok()).unwrap_or(0.0);
        let css = std::fs::read_to_string(dir.join(format!("recipes/{recipe}.css")))
            .expect("recipe readable");
        let html = std::fs::read_to_string(dir.join(format!("raw/{book}_raw.html")))
            .expect("book readable");
        let took = best_of(3, || {
            let r = Recipe::parse(&css).expect("recipe parses");
            r.bake_with(&html, &opts).expect("book bakes");
        });
        println!(
            "{name:<22} {:>8.1} ms  (reference recorded {reference:.2} s: {:.0}x)",
            took.as_secs_f64() * 1e3,
            reference / took.as_secs_f64()
        );
    }
    scaling(&dir);
}
