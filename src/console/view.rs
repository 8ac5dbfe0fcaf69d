//! The console's HTML pieces (maud: compiled templates that escape every value unless
//! told otherwise, and nothing here is told otherwise): the page shell, links, states,
//! error reasons and the server-drawn SVG charts.

use maud::{html, Markup, DOCTYPE};

use super::access::Principal;
use super::live::Minute;

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The document page's address.
pub fn document_href(document: &str) -> String {
    format!("/console/document?name={}", enc(document))
}

/// A page: header with navigation, the title, the body, the live-updates footer.
pub fn page(title: &str, who: &Principal, flash: Option<&str>, body: Markup) -> Markup {
    let role = if who.is_operator() {
        "operator"
    } else {
        "read-only"
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · postpub console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header {
                    span.brand { "postpub console" }
                    nav aria-label="Console pages" {
                        a href="/console" { "Overview" }
                        a href="/console/versions" { "Versions" }
                        a href="/console/versions?state=errored" { "Errors" }
                    }
                    span.who { "Signed in as " (who.name) " (" (role) ")" }
                }
                main {
                    h1 { (title) }
                    @if let Some(msg) = flash {
                        p.flash role="status" { (msg) }
                    }
                    (body)
                }
                footer {
                    p #live-status aria-live="polite" data-live="off" {
                        "Live updates: off (they need JavaScript)."
                    }
                }
            }
        }
    }
}

/// A version's state, with the attribute live updates use to change it in place.
pub fn state(version_id: i64, state: &str) -> Markup {
    html! {
        span class=(format!("state s-{state}")) data-version-state=(version_id) { (state) }
    }
}

/// `step NAME: reason` split into the step and the reason ("" when no step is named).
pub fn split_error(error: &str) -> (&str, &str) {
    error
        .strip_prefix("step ")
        .and_then(|rest| rest.split_once(": "))
        .filter(|(step, _)| !step.contains(' '))
        .unwrap_or(("", error))
}

/// An error as recorded ("step NAME: reason"), in one piece so that it can be searched
/// for and copied as it is in `last_error`; the step is also named in its title.
pub fn error(error: &str) -> Markup {
    let (step, _) = split_error(error);
    html! {
        @if step.is_empty() { span.reason { (error) } }
        @else { span.reason title=(format!("failed in step {step}")) { (error) } }
    }
}

/// Seconds as "3m 20s".
pub fn age(seconds: f64) -> String {
    let d = std::time::Duration::from_secs(seconds.max(0.0).round() as u64);
    humantime::format_duration(d).to_string()
}

/// A count capped by the query: "more than N" past the cap.
pub fn capped(n: i64, cap: i64) -> String {
    if n > cap {
        format!("more than {cap}")
    } else {
        n.to_string()
    }
}

/// The hidden CSRF field of a form.
pub fn csrf(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A bar chart of two series per minute (good and bad outcomes), newest on the right.
pub fn chart(label: &str, minutes: &[Minute], pick: fn(&Minute) -> (u64, u64)) -> Markup {
    let (w, h, pad) = (600u64, 120u64, 18u64);
    let max = minutes
        .iter()
        .map(|m| {
            let (a, b) = pick(m);
            a + b
        })
        .max()
        .unwrap_or(0)
        .max(1);
    let n = minutes.len().max(1) as u64;
    let bw = (w / n).max(1);
    let scale = |v: u64| v * (h - pad) / max;
    html! {
        svg.chart role="img" aria-label=(label) viewBox=(format!("0 0 {w} {h}"))
            width=(w) height=(h) xmlns="http://www.w3.org/2000/svg" {
            title { (label) }
            @for (i, m) in minutes.iter().enumerate() {
                @let (good, bad) = pick(m);
                @let x = i as u64 * bw;
                @let gh = scale(good);
                @let eh = scale(bad);
                @if gh > 0 { rect.bar-ok x=(x) y=(h - pad - gh) width=(bw.saturating_sub(1)) height=(gh) {} }
                @if eh > 0 { rect.bar-err x=(x) y=(h - pad - gh - eh) width=(bw.saturating_sub(1)) height=(eh) {} }
            }
            line.axis x1="0" y1=(h - pad) x2=(w) y2=(h - pad) {}
            text x="0" y=(h - 4) { "60 min ago" }
            text x=(w - 30) y=(h - 4) { "now" }
            text x="0" y="11" { "max " (max) "/min" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_errors_are_split_and_other_errors_kept_whole() {
        assert_eq!(
            split_error("step validate: line 1: unclosed <p>"),
            ("validate", "line 1: unclosed <p>")
        );
        assert_eq!(
            split_error("lease expired while x held it"),
            ("", "lease expired while x held it")
        );
    }

    #[test]
    fn values_are_escaped() {
        let who = Principal {
            name: "<b>".into(),
            role: crate::config::ConsoleRole::ReadOnly,
        };
        let out = page("<script>x</script>", &who, Some("<i>"), error("<script>")).into_string();
        assert!(!out.contains("<script>x"), "{out}");
        assert!(out.contains("&lt;script&gt;x"), "{out}");
        assert!(!out.contains("<b>"), "{out}");
    }
}
