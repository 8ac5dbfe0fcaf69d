//! `cargo bench -p postpub-baker`: bake times of the generated book (1 and 5 MB) and,
//! when `../shared/realbooks` is next to the repository, of each real book with its
//! OpenStax recipe. Each figure is the best of a few runs in this process (recipe parse
//! included for the real books, as for a one-off `postpub bake`); for peak memory and
//! the reference side by side use `postpub bench collate` and
//! `../shared/realbooks/check.py`.

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

fn main() {
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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/realbooks");
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
}
