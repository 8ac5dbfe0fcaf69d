//! `validate`: the body must be well-formed HTML before anything else looks at it.
//!
//! "Well-formed" here is stricter than what a browser accepts: html5ever's tokenizer must
//! report no parse error, there must be no NUL character, and every element must be
//! closed in order (void elements like `<br>` and self-closing tags excepted). A browser
//! repairs `<div><p>x</div>` silently; a publishing pipeline should refuse it, because a
//! recipe would then move or number the repaired tree, not the one the author meant.

use std::cell::RefCell;

use futures_util::future::BoxFuture;
use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};
use html5ever::LocalName;

use super::{Step, StepError, Work};

/// The `validate` step.
pub struct Validate;

impl Step for Validate {
    fn name(&self) -> &'static str {
        "validate"
    }

    fn run<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move {
            // Tokenizing is CPU work proportional to the body (about a second for 50 MB
            // in release, twenty in debug): on a runtime thread it would stall the lease
            // renewer, the finisher and the listener of this daemon for that long, and a
            // one-CPU daemon would lose the lease of the very version it is validating.
            let body = std::mem::take(&mut work.body);
            let (body, result) = tokio::task::spawn_blocking(move || {
                let result = check(&body);
                (body, result)
            })
            .await
            .map_err(|e| StepError::Transient(format!("the validation task failed: {e}")))?;
            work.body = body;
            result.map_err(StepError::Permanent)
        })
    }
}

/// Elements that never have an end tag.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];

/// Checks that `html` is well-formed; the error names the line and the problem.
pub fn check(html: &str) -> Result<(), String> {
    if let Some(pos) = html.find('\0') {
        let line = html[..pos].matches('\n').count() + 1;
        return Err(format!("malformed HTML at line {line}: NUL character"));
    }
    let html = without_xml_constructs(html)?;
    let html = html.as_ref();
    let sink = Checker::default();
    let tokenizer = Tokenizer::new(
        sink,
        TokenizerOpts {
            exact_errors: true,
            ..TokenizerOpts::default()
        },
    );
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    let sink = tokenizer.sink;
    if let Some(problem) = sink.problem.into_inner() {
        return Err(problem);
    }
    let open = sink.open.into_inner();
    if let Some((name, line)) = open.last() {
        return Err(format!(
            "malformed HTML: <{name}> opened at line {line} is never closed"
        ));
    }
    Ok(())
}

/// The body with its XML-only constructs blanked out: the XML declaration and other
/// processing instructions (`<?xml version="1.0"?>`) and CDATA sections. XHTML may carry
/// them, the baker reads them as XML does, but the HTML tokenizer calls each a parse error.
/// They become spaces (newlines kept, so line numbers stay right); a CDATA section is text,
/// so blanking it hides nothing the checks look at. An unterminated one is refused.
fn without_xml_constructs(html: &str) -> Result<std::borrow::Cow<'_, str>, String> {
    if !html.contains("<?") && !html.contains("<![CDATA[") {
        return Ok(std::borrow::Cow::Borrowed(html));
    }
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    loop {
        let next = [("<?", "?>"), ("<![CDATA[", "]]>")]
            .into_iter()
            .filter_map(|(open, close)| rest.find(open).map(|at| (at, open, close)))
            .min_by_key(|(at, _, _)| *at);
        let Some((at, open, close)) = next else {
            out.push_str(rest);
            return Ok(std::borrow::Cow::Owned(out));
        };
        out.push_str(&rest[..at]);
        let Some(len) = rest[at + open.len()..].find(close) else {
            let line = html[..html.len() - rest.len() + at].matches('\n').count() + 1;
            let what = if open == "<?" {
                "processing instruction"
            } else {
                "CDATA section"
            };
            return Err(format!(
                "malformed HTML at line {line}: {what} {open}… is never closed with {close}"
            ));
        };
        let end = at + open.len() + len + close.len();
        out.extend(
            rest[at..end]
                .chars()
                .map(|c| if c == '\n' { '\n' } else { ' ' }),
        );
        rest = &rest[end..];
    }
}

/// Token sink that tracks open elements and remembers the first problem.
#[derive(Default)]
struct Checker {
    open: RefCell<Vec<(LocalName, u64)>>,
    problem: RefCell<Option<String>>,
}

impl Checker {
    fn fail(&self, line: u64, what: String) {
        let mut p = self.problem.borrow_mut();
        if p.is_none() {
            *p = Some(format!("malformed HTML at line {line}: {what}"));
        }
    }

    fn tag(&self, tag: Tag, line: u64) -> TokenSinkResult<()> {
        let name = tag.name;
        match tag.kind {
            TagKind::StartTag => {
                if tag.self_closing || VOID.contains(&&*name) {
                    return TokenSinkResult::Continue;
                }
                let raw = match &*name {
                    "script" => Some(RawKind::ScriptData),
                    "style" | "xmp" | "iframe" | "noembed" | "noframes" => Some(RawKind::Rawtext),
                    "textarea" | "title" => Some(RawKind::Rcdata),
                    _ => None,
                };
                self.open.borrow_mut().push((name, line));
                match raw {
                    Some(kind) => TokenSinkResult::RawData(kind),
                    None => TokenSinkResult::Continue,
                }
            }
            TagKind::EndTag => {
                if VOID.contains(&&*name) {
                    self.fail(line, format!("</{name}> closes a void element"));
                    return TokenSinkResult::Continue;
                }
                let mut open = self.open.borrow_mut();
                match open.pop() {
                    Some((top, _)) if top == name => {}
                    Some((top, opened)) => {
                        drop(open);
                        self.fail(
                            line,
                            format!("</{name}> closes <{top}> opened at line {opened}"),
                        );
                    }
                    None => {
                        drop(open);
                        self.fail(line, format!("</{name}> has no matching start tag"));
                    }
                }
                TokenSinkResult::Continue
            }
        }
    }
}

impl TokenSink for Checker {
    type Handle = ();

    fn process_token(&self, token: Token, line: u64) -> TokenSinkResult<()> {
        match token {
            Token::TagToken(tag) => return self.tag(tag, line),
            Token::ParseError(e) => self.fail(line, e.into_owned()),
            Token::NullCharacterToken => self.fail(line, "NUL character".to_owned()),
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_fragments_pass() {
        for ok in [
            "",
            "<p>plain</p>",
            "<div class=\"a\"><p>one<br>two<img src=x /></p></div>",
            "<html><head><title>a &lt; b</title><style>p > a { }</style></head><body><script>if (a < b) {}</script></body></html>",
            "<!DOCTYPE html><section><h1>T</h1><!-- note --></section>",
            "text only &amp; entities",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn xhtml_with_an_xml_declaration_passes() {
        for ok in [
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<html xmlns=\"http://www.w3.org/1999/xhtml\"><body><p>x</p></body></html>",
            "\u{feff}<?xml version=\"1.0\"?><html><body/></html>",
            "<?xml version=\"1.0\"?>\n<?xml-stylesheet href=\"a.css\"?>\n<!DOCTYPE html>\n<html><body><p>a</p></body></html>",
            "<html><body><p><![CDATA[ a < b && <div> ]]></p></body></html>",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        // Blanking keeps line numbers: the error is still on line 3.
        let err = check("<?xml version=\"1.0\"\n?>\n<div><p>x</div>").expect_err("malformed");
        assert!(err.contains("line 3"), "{err}");
        let err = check("<?xml version=\"1.0\"\n<html></html>").expect_err("unterminated");
        assert!(
            err.contains("line 1") && err.contains("never closed"),
            "{err}"
        );
    }

    #[test]
    fn malformed_bodies_are_refused_with_a_line_number() {
        for (bad, want) in [
            ("<div><p>x</div>", "</div> closes <p> opened at line 1"),
            ("<div>\n<p>x</p>", "<div> opened at line 1 is never closed"),
            (
                "<p>x</p>\n</div>",
                "line 2: </div> has no matching start tag",
            ),
            ("<p a=1 a=2>x</p>", "malformed HTML at line 1"),
            ("<p>nul\0</p>", "NUL character"),
            ("<p>x</br></p>", "void element"),
        ] {
            let err = check(bad).expect_err(bad);
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}
