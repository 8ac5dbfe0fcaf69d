//! Hostile recipes and documents: each one that would exhaust memory or
//! time fails at once with a limit error naming the rule and the limit,
//! instead of taking the process down.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use postpub_baker::{BakeOptions, CollateError, Limits, Recipe};

/// Well above what each case needs in a debug build; a bomb that is not
/// stopped takes minutes or aborts.
const QUICK: Duration = Duration::from_secs(10);

fn divs(n: usize) -> String {
    format!(
        "<html><body>{}</body></html>",
        "<div x=\"ab\">a</div>".repeat(n)
    )
}

/// Bakes, expecting a limit error naming a rule; returns its message.
fn limited(css: &str, html: &str, what: &str) -> String {
    let recipe = Recipe::parse(css).expect("recipe parses");
    let t = Instant::now();
    let err = recipe.bake(html).expect_err("a bomb must not bake");
    let took = t.elapsed();
    let msg = err.to_string();
    assert!(
        matches!(&err, CollateError::Limit { line, what: w, .. } if *line > 0 && w.contains(what)),
        "expected a {what} limit naming the rule, got: {msg}"
    );
    assert!(
        msg.contains("recipe line") && msg.contains("limit"),
        "{msg}"
    );
    assert!(took < QUICK, "took {took:?}: {msg}");
    msg
}

#[test]
fn a_string_doubling_at_every_element_stops_at_the_text_budget() {
    let msg = limited(
        "div { string-set: s string(s) string(s) \"x\"; } body::after { content: string(s); }",
        &divs(40),
        "text",
    );
    assert!(msg.starts_with("recipe line 1, rule \"div\": "), "{msg}");
}

#[test]
fn counters_attributes_and_content_doubling_stop_at_the_text_budget() {
    // a counter inside the doubling string
    limited(
        "div { counter-increment: n; string-set: s string(s) counter(n) string(s); }",
        &divs(40),
        "text",
    );
    // an attribute that doubles at every pass
    let mut css = String::new();
    for p in 1..=40 {
        css.push_str(&format!(":pass({p}) div {{ attr-x: attr(x) attr(x); }}\n"));
    }
    limited(&css, &divs(2), "text");
    // content() written twice at every pass: the children move, the text doubles
    let mut css = String::new();
    for p in 1..=40 {
        css.push_str(&format!(
            ":pass({p}) body {{ content: content() content(); }}\n"
        ));
    }
    limited(&css, "<html><body>text</body></html>", "text");
    // a string set from the content of a subtree that grows with the string
    limited(
        "div { string-set: s string(s) content() string(s); }\ndiv::after { content: string(s); }",
        &divs(40),
        "text",
    );
}

#[test]
fn copies_of_a_growing_subtree_stop_at_the_node_budget() {
    // every pass copies the whole body into itself: doubles each time
    let mut css = String::new();
    for p in 1..=40 {
        css.push_str(&format!(
            ":pass({p}) body {{ copy-to: all{p}; }}\n:pass({p}) body::after {{ content: pending(all{p}); }}\n"
        ));
    }
    limited(&css, &divs(1), "node");
    // ::after copies of an element that holds the previous copies
    let mut css = String::new();
    for p in 1..=40 {
        css.push_str(&format!(
            ":pass({p}) body::after {{ content: content() content(); }}\n"
        ));
    }
    limited(&css, &divs(2), "");
}

#[test]
fn node_sets_of_a_growing_bucket_stop_at_the_node_budget() {
    // nodes() keeps its bucket: every element copies every element seen so far
    limited(
        "div { copy-to: b; } div::after { content: nodes(b); }",
        &divs(3000),
        "node",
    );
    // a node-set copied several times at every pass
    let mut css = String::new();
    for p in 1..=40 {
        css.push_str(&format!(
            ":pass({p}) body {{ node-set: n{p}; }}\n:pass({p}) body::after {{ content: nodes(n{p}) nodes(n{p}); }}\n"
        ));
    }
    limited(&css, &divs(1), "node");
}

#[test]
fn the_time_limit_fires_even_when_each_step_is_expensive() {
    // every element sets a string to the text of its whole subtree: each step
    // of the walk copies megabytes, so checking the clock every few hundred
    // steps would be seconds late
    let depth = 1000;
    let html = format!(
        "<a>{}{}</a>",
        format!("<b>{}", "t".repeat(20_000)).repeat(depth),
        "</b>".repeat(depth)
    );
    let recipe = Recipe::parse("b { string-set: s content(); }").expect("recipe parses");
    let limit = Duration::from_millis(300);
    let opts = BakeOptions {
        limits: Limits {
            max_duration: Some(limit),
            max_text_factor: 1 << 20,
            ..Limits::default()
        },
        ..BakeOptions::default()
    };
    let t = Instant::now();
    let err = recipe.bake_with(&html, &opts).expect_err("time limit");
    let took = t.elapsed();
    assert!(err.to_string().contains("bake time"), "{err}");
    assert!(
        took < limit + Duration::from_millis(700),
        "fired after {took:?}"
    );

    // a large generated book with a tiny limit
    let big = postpub_baker::bench::generate_book(300_000);
    let recipe = Recipe::parse_strict(postpub_baker::bench::BOOK_RECIPE).expect("recipe parses");
    let opts = BakeOptions {
        limits: Limits {
            max_duration: Some(Duration::from_millis(1)),
            ..Limits::default()
        },
        ..BakeOptions::default()
    };
    let err = recipe.bake_with(&big, &opts).expect_err("time limit");
    assert!(err.to_string().contains("time"), "{err}");
}

#[test]
fn budgets_grow_with_the_book_not_with_the_square_of_it() {
    // one string set again and again while every element's variables are
    // recorded for target-counter(): charged as copies of the (small) map of
    // strings, never of everything set so far
    let n = 20_000;
    let mut html = String::from("<html><body>");
    for i in 0..n {
        html.push_str(&format!("<p id=\"p{i}\">x</p>"));
    }
    html.push_str("<a href=\"#p7\">see</a></body></html>");
    let recipe = Recipe::parse(
        "p { counter-increment: c; string-set: some-long-string-name \"x\"; }\n\
         a::after { content: target-counter(attr(href), c); }",
    )
    .expect("recipe parses");
    let baked = recipe
        .bake(&html)
        .expect("a linear recipe stays within the budgets");
    assert!(
        baked.html.contains("see<div>8</div>"),
        "{}",
        &baked.html[baked.html.len() - 80..]
    );
}

#[test]
fn deep_documents_and_deeply_nested_recipes_are_refused_without_panicking() {
    let deep = format!("<a>{}{}</a>", "<b>".repeat(5000), "</b>".repeat(5000));
    let err = Recipe::parse_strict("b { content: 'x'; }")
        .and_then(|r| r.bake(&deep))
        .expect_err("too deep");
    assert!(err.to_string().contains("nesting depth"), "{err}");
    for css in [
        format!(
            "a {{ content: {}'x'{}; }}",
            "string(".repeat(20_000),
            ")".repeat(20_000)
        ),
        format!(
            "{}a{} {{ content: 'x'; }}",
            ":is(".repeat(20_000),
            ")".repeat(20_000)
        ),
        format!("a {{ content: 'x'; }} {}", "{".repeat(20_000)),
    ] {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            Recipe::parse(&css).and_then(|r| r.bake("<a><b/></a>"))
        }));
        assert!(outcome.is_ok(), "panicked on a deeply nested recipe");
    }
}
