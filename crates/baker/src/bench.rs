//! Benchmark support: a generated book, a realistic recipe, and a runner.
//!
//! [`generate_book`] writes a deterministic OpenStax-like XHTML book
//! (chapters, sections, numbered figures with cross-references, key
//! concepts, glossary definitions, exercises with solutions, index terms),
//! and [`BOOK_RECIPE`] is a two-pass recipe in the easybake dialect that
//! numbers, moves, copies, sorts and groups it. [`run`] bakes books of the
//! given sizes and reports throughput and peak memory; the CLI exposes it as
//! `postpub bench collate --mb N --json FILE`. [`write_bench_files`] writes
//! the same book and recipe to disk so the Python reference can be timed on
//! identical input (`benches/easybake_reference.sh`).
//!
//! Peak memory is the process's `VmHWM`, reset before each bake through
//! `/proc/self/clear_refs`; where that reset is refused, run one size per
//! process (see [`run_in_children`]) to keep the numbers honest.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::{CollateError, Recipe};

/// A two-pass recipe exercising `move-to`, `copy-to`, counters,
/// `target-counter`, `sort-by` and `group-by` on [`generate_book`]'s output.
pub const BOOK_RECIPE: &str = r##"@namespace h "http://www.w3.org/1999/xhtml";

/* pass 1: number everything and collect end-of-chapter and end-of-book matter */
div[data-type="chapter"] {
  counter-increment: chapter;
  counter-reset: section, figure, exercise;
}
div[data-type="chapter"] > h1 {
  string-set: chapter-title content();
  copy-to: contents;
}
div[data-type="chapter"] > h1::before {
  container: span;
  class: label;
  content: "Chapter " counter(chapter) " ";
}
section[data-type="section"] {
  counter-increment: section;
}
section[data-type="section"] > h2 {
  string-set: where counter(chapter) "." counter(section);
  copy-to: contents;
}
section[data-type="section"] > h2::before {
  container: span;
  class: label;
  content: counter(chapter) "." counter(section) " ";
}
figure {
  counter-increment: figure;
}
figure > figcaption::before {
  container: span;
  class: label;
  content: "Figure " counter(chapter) "." counter(figure) ": ";
}
a.xref {
  content: "Figure " target-counter(attr(href), chapter) "." target-counter(attr(href), figure);
}
div.key-concept {
  copy-to: chapter-summary;
}
dl.glossary {
  move-to: chapter-glossary;
}
div[data-type="exercise"] {
  counter-increment: exercise;
  move-to: chapter-exercises;
}
div[data-type="exercise"] > div.problem::before {
  container: span;
  class: label;
  content: counter(chapter) "." counter(exercise) " ";
}
div[data-type="exercise"] > div.solution {
  move-to: chapter-solutions;
}
span.index-term::after {
  container: span;
  class: entry-term;
  content: content();
  move-to: entry-term;
}
span.index-term::after {
  container: a;
  attr-href: "#" attr(id);
  content: string(where);
  move-to: entry-link;
}
span.index-term::after {
  class: index-entry;
  content: pending(entry-term) pending(entry-link);
  move-to: book-index;
}
div[data-type="chapter"]::after {
  container: section;
  class: "end-of-chapter glossary";
  content: pending(chapter-glossary);
  sort-by: h|dl > h|dt, nocase;
}
div[data-type="chapter"]::after {
  container: section;
  class: "end-of-chapter summary";
  content: pending(chapter-summary);
}
div[data-type="chapter"]::after {
  container: section;
  class: "end-of-chapter exercises";
  content: pending(chapter-exercises);
}
div[data-type="chapter"]::after {
  container: section;
  class: answers;
  attr-data-chapter: counter(chapter);
  content: pending(chapter-solutions);
  move-to: book-answers;
}
body::after {
  container: section;
  class: "end-of-book answers";
  content: pending(book-answers);
}
body::after {
  container: section;
  class: "end-of-book index";
  content: pending(book-index);
  group-by: span, "span::first-letter", nocase;
}

/* pass 2: titles for the generated sections, and the table of contents */
:pass(2) div[data-type="chapter"] {
  counter-increment: eoc;
}
:pass(2) section.glossary::before {
  container: h2;
  content: "Key terms of chapter " counter(eoc);
}
:pass(2) section.summary::before {
  container: h2;
  content: "Summary of chapter " counter(eoc);
}
:pass(2) section.exercises::before {
  container: h2;
  content: "Exercises of chapter " counter(eoc);
}
:pass(2) section.answers[data-chapter]::before {
  container: h3;
  content: "Chapter " attr(data-chapter);
}
:pass(2) body::before {
  container: nav;
  class: contents;
  content: pending(contents);
}
"##;

/// A small deterministic generator (splitmix64), so books are identical
/// everywhere without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const ONSETS: &[&str] = &[
    "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br",
    "cl", "dr", "fl", "gr", "pl", "pr", "st", "str", "th", "tr", "ch", "sh",
];
const VOWELS: &[&str] = &[
    "a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "é", "ö", "y",
];
const CODAS: &[&str] = &["", "", "", "n", "r", "s", "l", "m", "x", "nt", "st", "ng"];
const FILLER: &[&str] = &[
    "the", "of", "and", "a", "to", "in", "is", "that", "for", "as", "with", "by", "on",
];

fn word(rng: &mut Rng, syllables: usize) -> String {
    let mut w = String::new();
    for _ in 0..syllables {
        w.push_str(rng.pick(ONSETS));
        w.push_str(rng.pick(VOWELS));
        w.push_str(rng.pick(CODAS));
    }
    w
}

fn sentence(rng: &mut Rng, out: &mut String) {
    let n = 8 + rng.below(10);
    for i in 0..n {
        let w = if rng.below(3) == 0 {
            rng.pick(FILLER).to_string()
        } else {
            let syllables = 1 + rng.below(3);
            word(rng, syllables)
        };
        if i == 0 {
            let mut cs = w.chars();
            if let Some(c) = cs.next() {
                out.extend(c.to_uppercase());
                out.push_str(cs.as_str());
            }
        } else {
            out.push(' ');
            out.push_str(&w);
        }
    }
    out.push_str(". ");
}

fn chapter(c: usize, out: &mut String) {
    let mut rng = Rng(c as u64 * 7919 + 17);
    let sections = 6;
    let _ = writeln!(out, "<div data-type=\"chapter\" id=\"ch{c}\">");
    let title = word(&mut rng, 2);
    let _ = writeln!(out, "<h1>{} {}</h1>", title, word(&mut rng, 3));
    for s in 1..=sections {
        let _ = writeln!(out, "<section data-type=\"section\" id=\"s{c}-{s}\">");
        let _ = writeln!(out, "<h2>{} {}</h2>", word(&mut rng, 2), word(&mut rng, 2));
        for p in 0..8 {
            let _ = write!(out, "<p id=\"p{c}-{s}-{p}\">");
            sentence(&mut rng, out);
            if p < 3 {
                let syllables = 2 + rng.below(2);
                let term = word(&mut rng, syllables);
                let term = if rng.below(4) == 0 {
                    term.to_uppercase()
                } else {
                    term
                };
                let _ = write!(
                    out,
                    "<span class=\"index-term\" id=\"t{c}-{s}-{p}\">{term}</span> "
                );
            }
            sentence(&mut rng, out);
            if rng.below(3) == 0 {
                let _ = write!(out, "<em>{}</em> ", word(&mut rng, 2));
            }
            if rng.below(2) == 0 {
                // a forward or backward reference to a figure of this or the previous chapter
                let rc = if c > 1 && rng.below(4) == 0 { c - 1 } else { c };
                let _ = write!(
                    out,
                    "(see <a class=\"xref\" href=\"#f{rc}-{}-{}\">figure</a>) ",
                    1 + rng.below(sections),
                    1 + rng.below(2)
                );
            }
            sentence(&mut rng, out);
            out.push_str("</p>\n");
            if p == 2 || p == 5 {
                let k = if p == 2 { 1 } else { 2 };
                let _ = write!(out, "<figure id=\"f{c}-{s}-{k}\"><img src=\"img/{c}-{s}-{k}.png\" alt=\"\"/><figcaption>");
                sentence(&mut rng, out);
                out.push_str("</figcaption></figure>\n");
            }
        }
        let _ = write!(out, "<div class=\"key-concept\" id=\"k{c}-{s}\"><p>");
        sentence(&mut rng, out);
        out.push_str("</p></div>\n");
        for g in 1..=3 {
            let _ = write!(
                out,
                "<dl class=\"glossary\" id=\"g{c}-{s}-{g}\"><dt>{}</dt><dd>",
                word(&mut rng, 3)
            );
            sentence(&mut rng, out);
            out.push_str("</dd></dl>\n");
        }
        for e in 1..=3 {
            let _ = write!(
                out,
                "<div data-type=\"exercise\" id=\"e{c}-{s}-{e}\"><div class=\"problem\"><p>"
            );
            sentence(&mut rng, out);
            out.push_str("</p></div><div class=\"solution\"><p>");
            sentence(&mut rng, out);
            out.push_str("</p></div></div>\n");
        }
        out.push_str("</section>\n");
    }
    out.push_str("</div>\n");
}

/// A deterministic book of at least one chapter and about `target_bytes`.
pub fn generate_book(target_bytes: usize) -> String {
    let head = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head><title>Generated book</title></head>\n<body>\n";
    let tail = "</body>\n</html>\n";
    let mut out = String::with_capacity(target_bytes + 64 * 1024);
    out.push_str(head);
    let mut c = 0;
    while c == 0 || out.len() + tail.len() < target_bytes {
        c += 1;
        chapter(c, &mut out);
    }
    out.push_str(tail);
    out
}

/// Writes `book-<size>MB.html` and `book.css` into `dir` (for timing the
/// reference on the same input) and returns their paths.
pub fn write_bench_files(dir: &Path, size_mb: f64) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let book = dir.join(format!("book-{size_mb}MB.html"));
    let css = dir.join("book.css");
    std::fs::write(&book, generate_book((size_mb * 1e6) as usize))?;
    std::fs::write(&css, BOOK_RECIPE)?;
    Ok((book, css))
}

/// One measured bake.
#[derive(Debug, Clone, PartialEq)]
pub struct CollateBenchResult {
    /// Input size in bytes.
    pub input_bytes: usize,
    /// Output size in bytes.
    pub output_bytes: usize,
    /// Wall-clock seconds for parse + bake + serialise (recipe parsed beforehand).
    pub seconds: f64,
    /// Input megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Peak resident memory during the bake, in MiB (0 when unknown).
    pub peak_rss_mb: f64,
}

impl CollateBenchResult {
    /// `{"collate.mb_per_s": …, "collate.peak_rss_mb": …, …}`
    pub fn to_json(&self) -> String {
        format!(
            "{{\"collate.mb_per_s\": {:.3}, \"collate.peak_rss_mb\": {:.1}, \"collate.input_bytes\": {}, \"collate.output_bytes\": {}, \"collate.seconds\": {:.4}}}",
            self.mb_per_s, self.peak_rss_mb, self.input_bytes, self.output_bytes, self.seconds
        )
    }

    /// Reads what [`to_json`](Self::to_json) wrote (for child processes).
    pub fn from_json(s: &str) -> Option<Self> {
        let num = |key: &str| -> Option<f64> {
            let at = s.find(&format!("\"{key}\":"))? + key.len() + 3;
            let rest = s[at..].trim_start();
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            rest[..end].trim().parse().ok()
        };
        Some(CollateBenchResult {
            mb_per_s: num("collate.mb_per_s")?,
            peak_rss_mb: num("collate.peak_rss_mb")?,
            input_bytes: num("collate.input_bytes")? as usize,
            output_bytes: num("collate.output_bytes")? as usize,
            seconds: num("collate.seconds")?,
        })
    }
}

/// Results for several sizes; the JSON's top-level keys describe the largest.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CollateBenchReport {
    /// One result per measured size, in the order given.
    pub results: Vec<CollateBenchResult>,
}

impl CollateBenchReport {
    /// The JSON the CLI writes: the largest run's `collate.*` keys at the
    /// top level (`collate.mb_per_s`, `collate.peak_rss_mb`, …) plus every
    /// run under `collate.runs`.
    pub fn to_json(&self) -> String {
        let runs: Vec<String> = self.results.iter().map(|r| r.to_json()).collect();
        let top = self
            .results
            .iter()
            .max_by_key(|r| r.input_bytes)
            .map(|r| r.to_json())
            .unwrap_or_else(|| "{}".into());
        let top = top.trim_end_matches('}');
        let sep = if top.len() > 1 { ", " } else { "" };
        format!("{top}{sep}\"collate.runs\": [{}]}}", runs.join(", "))
    }
}

fn vm_hwm_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Resets the peak-RSS counter to the current RSS (Linux ≥ 4.0).
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Generates a book of `size_mb` megabytes and bakes it in this process.
pub fn measure(size_mb: f64) -> Result<CollateBenchResult, CollateError> {
    let recipe = Recipe::parse_strict(BOOK_RECIPE)?;
    let book = generate_book((size_mb * 1e6) as usize);
    reset_hwm();
    let t = Instant::now();
    let baked = recipe.bake(&book)?;
    let seconds = t.elapsed().as_secs_f64();
    Ok(CollateBenchResult {
        input_bytes: book.len(),
        output_bytes: baked.html.len(),
        seconds,
        mb_per_s: book.len() as f64 / 1e6 / seconds.max(1e-9),
        peak_rss_mb: vm_hwm_mb(),
    })
}

/// Measures each size in turn in this process.
pub fn run(sizes_mb: &[f64]) -> Result<CollateBenchReport, CollateError> {
    let mut report = CollateBenchReport::default();
    for &s in sizes_mb {
        report.results.push(measure(s)?);
    }
    Ok(report)
}

/// Measures each size in a fresh child process, for a peak RSS that no
/// earlier size can inflate. `child(size)` must build a command that runs
/// [`measure`] and prints [`CollateBenchResult::to_json`] on stdout (the
/// CLI: `postpub bench collate --mb SIZE --child`).
pub fn run_in_children(
    sizes_mb: &[f64],
    child: impl Fn(f64) -> Command,
) -> std::io::Result<CollateBenchReport> {
    let mut report = CollateBenchReport::default();
    for &s in sizes_mb {
        let out = child(s).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let result = text
            .lines()
            .rev()
            .find_map(CollateBenchResult::from_json)
            .ok_or_else(|| {
                std::io::Error::other(format!("bench child for {s} MB printed no result: {text}"))
            })?;
        report.results.push(result);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn book_is_deterministic_and_sized() {
        let a = generate_book(100_000);
        assert_eq!(a, generate_book(100_000));
        assert!(a.len() >= 100_000 && a.len() < 200_000, "{}", a.len());
    }

    #[test]
    fn recipe_bakes_the_book() {
        let r = measure(0.2).unwrap();
        assert!(r.output_bytes > r.input_bytes);
        let back = CollateBenchResult::from_json(&r.to_json()).unwrap();
        assert_eq!(back.input_bytes, r.input_bytes);
        let rep = CollateBenchReport { results: vec![r] };
        assert!(rep.to_json().starts_with("{\"collate.mb_per_s\": "));
    }
}
