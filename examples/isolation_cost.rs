//! What running bakes in bake processes costs, on the real books: each book's recipe and
//! raw XHTML baked through the `collate` step in the daemon's process and in a bake
//! process, alternately, `ROUNDS` times each; medians per book and in total. The first
//! bake of each book is timed apart: it starts a process (isolated) and parses the recipe
//! (both ways); later bakes reuse both. The recipes are taken with `compat = true`.
//!
//!     cargo build --release && cargo run --release --example isolation_cost -- \
//!         ../shared/realbooks target/release/postpub [ROUNDS]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postpub::config::CollateConfig;
use postpub::pipeline::collate::Collate;
use postpub::pipeline::{RecipeSource, Step, Work};

fn work(id: i64, css: &str, body: &str) -> Work {
    Work {
        version_id: id,
        document: "book".to_owned(),
        version: 1,
        attempt: 1,
        body: body.to_owned(),
        recipe: Some(Arc::new(RecipeSource {
            id,
            css: css.to_owned(),
        })),
        transformed: false,
        warnings: Vec::new(),
    }
}

async fn time(step: &Collate, id: i64, css: &str, body: &str) -> Duration {
    let mut w = work(id, css, body);
    let t = Instant::now();
    if let Err(e) = step.run(&mut w).await {
        eprintln!("book {id}: {e}");
        std::process::exit(1);
    }
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(books), Some(program)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: isolation_cost REALBOOKS_DIR POSTPUB_BINARY [ROUNDS]");
        std::process::exit(2);
    };
    let rounds: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(5);
    let cfg = CollateConfig {
        compat: true,
        ..CollateConfig::default()
    };
    let inside = Collate::in_process(cfg.clone());
    let isolated = Collate::isolated(cfg, PathBuf::from(program));
    let cases = std::fs::read_to_string(format!("{books}/cases.tsv")).expect("cases.tsv");
    let (mut total_in, mut total_iso) = (Duration::ZERO, Duration::ZERO);
    println!(
        "{:<24} {:>9} {:>12} {:>12} {:>9} {:>12} {:>12}",
        "book", "MB", "first in", "first iso", "rounds", "median in", "median iso"
    );
    for (id, line) in cases.lines().filter(|l| !l.starts_with('#')).enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        let (name, recipe, book) = (f[0], f[1], f[2]);
        let css = std::fs::read_to_string(format!("{books}/recipes/{recipe}.css")).expect("recipe");
        let body = std::fs::read_to_string(format!("{books}/raw/{book}_raw.html")).expect("book");
        let id = id as i64 + 1;
        let first_in = time(&inside, id, &css, &body).await;
        let first_iso = time(&isolated, id, &css, &body).await;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            // Alternate which goes first, so drift on a shared machine hits both alike.
            if r % 2 == 0 {
                a.push(time(&inside, id, &css, &body).await);
                b.push(time(&isolated, id, &css, &body).await);
            } else {
                b.push(time(&isolated, id, &css, &body).await);
                a.push(time(&inside, id, &css, &body).await);
            }
        }
        let (ma, mb) = (median(a), median(b));
        total_in += ma;
        total_iso += mb;
        println!(
            "{name:<24} {:>9.2} {:>10.1}ms {:>10.1}ms {rounds:>9} {:>10.1}ms {:>10.1}ms",
            body.len() as f64 / 1e6,
            ms(first_in),
            ms(first_iso),
            ms(ma),
            ms(mb)
        );
    }
    // The exchange alone: the largest book through a recipe that changes nothing, so
    // parsing and writing the document is all the bake does, many times.
    let body = std::fs::read_to_string(format!("{books}/raw/precalculus_raw.html")).expect("book");
    let css = "p { }";
    time(&inside, 0, css, &body).await;
    time(&isolated, 0, css, &body).await;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds * 4 {
        a.push(time(&inside, 0, css, &body).await);
        b.push(time(&isolated, 0, css, &body).await);
    }
    let (ma, mb) = (median(a), median(b));
    println!(
        "pass-through of {:.2} MB, {} rounds: in-process {:.1} ms, isolated {:.1} ms: the exchange costs {:+.1} ms",
        body.len() as f64 / 1e6,
        rounds * 4,
        ms(ma),
        ms(mb),
        ms(mb) - ms(ma)
    );
    println!(
        "total of medians: in-process {:.1} ms, isolated {:.1} ms: isolation costs {:+.1} ms ({:+.1} %)",
        ms(total_in),
        ms(total_iso),
        ms(total_iso) - ms(total_in),
        (total_iso.as_secs_f64() / total_in.as_secs_f64() - 1.0) * 100.0
    );
}
