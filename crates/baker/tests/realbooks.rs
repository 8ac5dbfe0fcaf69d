//! A real OpenStax book baked with its production recipe must equal what
//! cnx-easybake 1.2.8 made of it (`shared/realbooks`, next to the
//! repository), after the normalisation `shared/realbooks/check.py` uses:
//! character references above U+007F read as characters (the reference
//! writes ASCII), then upstream's `xmlpp.pl -sSten` (what cnx-easybake's own
//! tests compare; run with perl), then UUIDs masked.
//!
//! By default the smallest book is baked (the test build is not optimised);
//! `REALBOOKS=all` bakes every case of `cases.tsv`, `REALBOOKS=NAME,NAME`
//! the ones named. Without the folder or perl the test says why and passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use postpub_baker::Recipe;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/realbooks")
}

/// `&#NNN;` / `&#xHH;` above U+007F replaced by the character.
fn unref(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("&#") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 2..];
        let decoded = tail.find(';').and_then(|end| {
            let body = &tail[..end];
            let code = match body.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => body.parse().ok(),
            }?;
            (code > 127)
                .then(|| char::from_u32(code))
                .flatten()
                .map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push_str("&#");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// 8-4-4-4-12 lower-case hex runs replaced by `UUID`.
fn mask_uuids(s: &str) -> String {
    let b = s.as_bytes();
    let shape = [8, 4, 4, 4, 12];
    let is_hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    let matches_at = |i: usize| -> bool {
        let mut p = i;
        for (k, &n) in shape.iter().enumerate() {
            if k > 0 {
                if b.get(p) != Some(&b'-') {
                    return false;
                }
                p += 1;
            }
            if p + n > b.len() || !b[p..p + n].iter().all(|&c| is_hex(c)) {
                return false;
            }
            p += n;
        }
        true
    };
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if is_hex(b[i]) && matches_at(i) {
            out.push_str("UUID");
            i += 36;
        } else {
            let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
            out.push(ch);
            i += ch.len_utf8().max(1);
        }
    }
    out
}

/// check.py's normalisation; `None` when perl cannot be run.
fn normalise(xml: &str, xmlpp: &Path) -> Option<String> {
    let mut child = Command::new("perl")
        .arg(xmlpp)
        .arg("-sSten")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let input = unref(xml);
    let mut stdin = child.stdin.take()?;
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        stdin.write_all(input.as_bytes())
    });
    let out = child.wait_with_output().ok()?;
    writer.join().ok()?.ok()?;
    out.status
        .success()
        .then(|| mask_uuids(&String::from_utf8_lossy(&out.stdout)))
}

/// (name, recipe, book) of each case in `cases.tsv`.
fn cases(d: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(d.join("cases.tsv")).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some((
                f.first()?.to_string(),
                f.get(1)?.to_string(),
                f.get(2)?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn real_books_bake_like_the_reference() {
    let d = dir();
    let all = cases(&d);
    if all.is_empty() {
        eprintln!(
            "skipping real books: {} not found (it is provided next to the repository as shared/)",
            d.display()
        );
        return;
    }
    let xmlpp = d.join("xmlpp.pl");
    if normalise("<a/>", &xmlpp).is_none() {
        eprintln!("skipping real books: perl cannot run {}", xmlpp.display());
        return;
    }
    let wanted = std::env::var("REALBOOKS").unwrap_or_default();
    let chosen: Vec<_> = match wanted.as_str() {
        "" => {
            // the smallest book, so that the unoptimised test build stays quick
            let size = |c: &(String, String, String)| {
                std::fs::metadata(d.join(format!("raw/{}_raw.html", c.2)))
                    .map(|m| m.len())
                    .unwrap_or(u64::MAX)
            };
            all.iter()
                .min_by_key(|c| size(c))
                .into_iter()
                .cloned()
                .collect()
        }
        "all" => all.clone(),
        list => all
            .iter()
            .filter(|c| list.split(',').any(|n| n == c.0))
            .cloned()
            .collect(),
    };
    assert!(!chosen.is_empty(), "REALBOOKS={wanted} names no case");
    let mut failures = Vec::new();
    for (name, recipe, book) in &chosen {
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        };
        let css = read(d.join(format!("recipes/{recipe}.css")));
        let raw = read(d.join(format!("raw/{book}_raw.html")));
        let expected = read(d.join(format!("baked/{name}_baked.html")));
        let baked = Recipe::parse(&css)
            .and_then(|r| r.bake(&raw))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (want, got) = (
            normalise(&expected, &xmlpp).expect("perl ran"),
            normalise(&baked.html, &xmlpp).expect("perl ran"),
        );
        if want == got {
            eprintln!("real book {name}: equal to the reference");
            continue;
        }
        let first = want
            .lines()
            .zip(got.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(got.lines().count()));
        let excerpt = |s: &str| -> String {
            s.lines()
                .skip(first.saturating_sub(3))
                .take(8)
                .collect::<Vec<_>>()
                .join("\n")
        };
        failures.push(format!(
            "{name} differs from the reference at normalised line {}:\n--- reference\n{}\n--- ours\n{}",
            first + 1,
            excerpt(&want),
            excerpt(&got)
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_normalisation_helpers_do_what_check_py_does() {
    assert_eq!(
        unref("a&#8217;b&#x41;&#xe9;&#10;"),
        "a\u{2019}b&#x41;\u{e9}&#10;"
    );
    assert_eq!(
        mask_uuids("id=\"auto_0b3c2f6e-8f0a-4c5e-9a51-2d3b8c1e7f00x\" 0b3c2f6e"),
        "id=\"auto_UUIDx\" 0b3c2f6e"
    );
}
