//! Collation benchmark, run by hand (ignored by default):
//!
//! ```text
//! cargo test --release --test collate_bench -- --ignored --nocapture
//! ```
//!
//! Environment:
//! - `COLLATE_BENCH_MB` (default `1,10`): sizes of generated books to bake with
//!   `bench::BOOK_RECIPE`; prints the JSON report (`collate.mb_per_s`,
//!   `collate.peak_rss_mb`, …).
//! - `COLLATE_BENCH_DIR`: also write `book-<N>MB.html` and `book.css` there, to
//!   time the Python reference on the same input with
//!   `benches/easybake_reference.sh`.
//! - `COLLATE_BENCH_BOOK` + `COLLATE_BENCH_RECIPE` (+ optional
//!   `COLLATE_BENCH_OUT`): instead, bake that book with that recipe
//!   (compatibility parser, like the reference) and report time and peak RSS —
//!   e.g. the shared textbook with `textbook.css`.

use std::time::Instant;

use postpub::collate::{bench, Recipe};

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn collate_benchmark() {
    if let (Ok(book), Ok(recipe)) = (
        std::env::var("COLLATE_BENCH_BOOK"),
        std::env::var("COLLATE_BENCH_RECIPE"),
    ) {
        let html = std::fs::read_to_string(&book).expect("book is readable");
        let css = std::fs::read_to_string(&recipe).expect("recipe is readable");
        let recipe = Recipe::parse_compat(&css).expect("recipe parses");
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let t = Instant::now();
        let baked = recipe.bake(&html).expect("book bakes");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{book}: {} bytes in {secs:.3} s = {:.1} MB/s, peak RSS {:.0} MB, {} warnings",
            html.len(),
            html.len() as f64 / 1e6 / secs,
            peak_rss_mb(),
            baked.warnings.len()
        );
        if let Ok(out) = std::env::var("COLLATE_BENCH_OUT") {
            std::fs::write(out, baked.html).expect("output is writable");
        }
        return;
    }
    let sizes: Vec<f64> = std::env::var("COLLATE_BENCH_MB")
        .unwrap_or_else(|_| "1,10".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    if let Ok(dir) = std::env::var("COLLATE_BENCH_DIR") {
        for &mb in &sizes {
            let (b, c) =
                bench::write_bench_files(std::path::Path::new(&dir), mb).expect("files written");
            println!("wrote {} and {}", b.display(), c.display());
        }
    }
    let report = bench::run(&sizes).expect("benchmark bakes");
    for r in &report.results {
        println!(
            "{:>9} bytes: {:.3} s, {:.1} MB/s, peak RSS {:.0} MB",
            r.input_bytes, r.seconds, r.mb_per_s, r.peak_rss_mb
        );
    }
    println!("{}", report.to_json());
}
