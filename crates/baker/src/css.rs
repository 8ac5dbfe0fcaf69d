//! Reading the recipe's CSS syntax: rules, declarations and their values.
//!
//! Tokenising and block structure are cssparser's job. Declaration values are
//! kept as a small tree of component values ([`Cv`]) shaped like the tinycss2
//! tokens cnx-easybake interprets (whitespace, strings, idents, literals,
//! functions), because the dialect's semantics are defined token by token:
//! `string-set: a "x", b attr(y)` is read left to right, commas included.
//! Serialisation follows tinycss2 too (strings in double quotes), since some
//! names are derived from serialised values (`counter('x')` names a counter
//! called `"x"` in easybake).

use cssparser::{
    AtRuleParser, CowRcStr, DeclarationParser, ParseError, Parser, ParserState,
    QualifiedRuleParser, RuleBodyItemParser, RuleBodyParser, StyleSheetParser, Token,
};

use super::error::CollateError;

/// The braces of a `{ }` block, kept as a pair so that code reading them
/// stays balanced for line-based tools.
const CURLY: (char, char) = ('{', '}');

/// A component value of a declaration.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cv {
    Ws(String),
    Ident(String),
    Str(String),
    Num {
        value: f64,
        raw: String,
    },
    /// Delimiters and punctuation: `,` `:` `|` `>` `~=` …
    Lit(String),
    Func {
        name: String,
        args: Vec<Cv>,
    },
    Block {
        open: char,
        content: Vec<Cv>,
    },
    /// Any other token, kept as source text (hashes, dimensions, urls…).
    Other(String),
}

impl Cv {
    pub(crate) fn is_ws(&self) -> bool {
        matches!(self, Cv::Ws(_))
    }

    pub(crate) fn is_lit(&self, s: &str) -> bool {
        matches!(self, Cv::Lit(l) if l == s)
    }
}

/// tinycss2-style serialisation of a value list.
pub(crate) fn serialize(values: &[Cv]) -> String {
    let mut out = String::new();
    for v in values {
        write_cv(&mut out, v);
    }
    out
}

fn write_cv(out: &mut String, v: &Cv) {
    match v {
        Cv::Ws(s) | Cv::Lit(s) | Cv::Other(s) => out.push_str(s),
        Cv::Num { raw, .. } => out.push_str(raw),
        Cv::Ident(s) => {
            let _ = cssparser::serialize_identifier(s, out);
        }
        Cv::Str(s) => {
            let _ = cssparser::serialize_string(s, out);
        }
        Cv::Func { name, args } => {
            let _ = cssparser::serialize_identifier(name, out);
            out.push('(');
            for a in args {
                write_cv(out, a);
            }
            out.push(')');
        }
        Cv::Block { open, content } => {
            out.push(*open);
            for a in content {
                write_cv(out, a);
            }
            out.push(match open {
                '(' => ')',
                '[' => ']',
                _ => CURLY.1,
            });
        }
    }
}

/// The serialisation of a value that is exactly one identifier (the usual
/// form of a name), without building it.
pub(crate) fn single_token(values: &[Cv]) -> Option<&str> {
    match values {
        [Cv::Ident(s)] if !needs_escape(s) => Some(s),
        _ => None,
    }
}

/// Whether serialising identifier `s` would escape something.
fn needs_escape(s: &str) -> bool {
    let b = s.as_bytes();
    let plain = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c >= 0x80;
    let simple = b.iter().all(|&c| plain(c))
        && !b.first().is_some_and(u8::is_ascii_digit)
        && !(b.first() == Some(&b'-') && b.get(1).is_none_or(u8::is_ascii_digit));
    if simple {
        return false;
    }
    let mut out = String::new();
    let _ = cssparser::serialize_identifier(s, &mut out);
    out != s
}

/// Splits a value list at top-level tokens equal to `sep`, dropping empty
/// pieces (easybake's `split`).
pub(crate) fn split<'a>(values: &'a [Cv], sep: &str) -> Vec<&'a [Cv]> {
    values
        .split(|v| v.is_lit(sep))
        .filter(|piece| !piece.is_empty())
        .collect()
}

/// [`split`] without collecting.
pub(crate) fn pieces<'a>(values: &'a [Cv], sep: &'a str) -> impl Iterator<Item = &'a [Cv]> + 'a {
    values
        .split(move |v| v.is_lit(sep))
        .filter(|piece| !piece.is_empty())
}

/// A piece's text with surrounding spaces (and quotes, as easybake strips
/// them from counter names) removed: borrowed when the piece is one
/// identifier between spaces, serialised otherwise.
pub(crate) fn trimmed_name(piece: &[Cv]) -> std::borrow::Cow<'_, str> {
    let start = piece.iter().position(|v| !v.is_ws()).unwrap_or(piece.len());
    let end = piece
        .iter()
        .rposition(|v| !v.is_ws())
        .map_or(start, |e| e + 1);
    if let Some(t) = single_token(&piece[start..end.max(start)]) {
        return std::borrow::Cow::Borrowed(t);
    }
    std::borrow::Cow::Owned(
        serialize(piece)
            .trim_matches(|c| c == ' ' || c == '\'')
            .to_string(),
    )
}

/// Reads every remaining component value of `input`.
pub(crate) fn read_values(input: &mut Parser<'_>) -> Vec<Cv> {
    let mut out = Vec::new();
    loop {
        let start = input.position();
        let tok = match input.next_including_whitespace_and_comments() {
            Ok(t) => t.clone(),
            Err(_) => break,
        };
        let raw = || input.slice_from(start).to_string();
        let cv = match tok {
            Token::WhiteSpace(s) => Cv::Ws(s.to_string()),
            Token::Comment(_) => continue,
            Token::Ident(s) => Cv::Ident(s.to_string()),
            Token::QuotedString(s) => Cv::Str(s.to_string()),
            Token::Number {
                value, int_value, ..
            } => Cv::Num {
                value: int_value.map(f64::from).unwrap_or(value as f64),
                raw: raw(),
            },
            Token::Delim(c) => Cv::Lit(c.to_string()),
            Token::Colon => Cv::Lit(":".into()),
            Token::Semicolon => Cv::Lit(";".into()),
            Token::Comma => Cv::Lit(",".into()),
            Token::IncludeMatch => Cv::Lit("~=".into()),
            Token::DashMatch => Cv::Lit("|=".into()),
            Token::PrefixMatch => Cv::Lit("^=".into()),
            Token::SuffixMatch => Cv::Lit("$=".into()),
            Token::SubstringMatch => Cv::Lit("*=".into()),
            Token::CDO => Cv::Lit("<!--".into()),
            Token::CDC => Cv::Lit("-->".into()),
            Token::Function(name) => {
                let name = name.to_string();
                let args = input
                    .parse_nested_block(|i| Ok::<_, ParseError<()>>(read_values(i)))
                    .unwrap_or_default();
                Cv::Func { name, args }
            }
            Token::ParenthesisBlock | Token::SquareBracketBlock | Token::CurlyBracketBlock => {
                let open = match tok {
                    Token::ParenthesisBlock => '(',
                    Token::SquareBracketBlock => '[',
                    _ => CURLY.0,
                };
                let content = input
                    .parse_nested_block(|i| Ok::<_, ParseError<()>>(read_values(i)))
                    .unwrap_or_default();
                Cv::Block { open, content }
            }
            _ => Cv::Other(raw()),
        };
        out.push(cv);
    }
    out
}

/// One `name: value` declaration of a rule.
#[derive(Clone, Debug)]
pub(crate) struct RawDecl {
    pub(crate) name: String,
    pub(crate) value: Vec<Cv>,
    pub(crate) line: u32,
}

/// A top-level item of the stylesheet, in source order.
#[derive(Clone, Debug)]
pub(crate) enum TopItem {
    /// `selectors { declarations }`; `prelude` is the selector source text.
    Rule {
        line: u32,
        prelude: String,
        decls: Vec<RawDecl>,
    },
    /// `@name prelude;` or `@name prelude { … }`.
    AtRule {
        line: u32,
        column: u32,
        name: String,
        prelude: Vec<Cv>,
    },
}

/// Declarations the reference silently drops, as (line, source text).
pub(crate) type Dropped = Vec<(u32, String)>;

/// Parses a stylesheet into top-level items plus the invalid declarations.
pub(crate) fn parse_stylesheet(css: &str) -> Result<(Vec<TopItem>, Dropped), CollateError> {
    let mut parser = Parser::new(css);
    let mut top = TopParser {
        dropped: Vec::new(),
    };
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for item in StyleSheetParser::new(&mut parser, &mut top) {
        match item {
            Ok(i) => items.push(i),
            Err((_, slice, loc)) => errors.push((loc.line + 1, slice.to_string())),
        }
    }
    if let Some((line, slice)) = errors.into_iter().next() {
        return Err(CollateError::recipe(
            line,
            &slice,
            "not valid CSS (a rule needs a selector and a { } block)",
        ));
    }
    Ok((items, top.dropped))
}

struct TopParser {
    dropped: Dropped,
}

impl<'i> QualifiedRuleParser<'i> for TopParser {
    type Prelude = (u32, String);
    type QualifiedRule = TopItem;
    type Error = ();

    fn parse_prelude(&mut self, input: &mut Parser<'i>) -> Result<Self::Prelude, ParseError<()>> {
        let loc = input.current_source_location();
        let start = input.position();
        while input.next_including_whitespace_and_comments().is_ok() {}
        Ok((loc.line + 1, input.slice_from(start).to_string()))
    }

    fn parse_block(
        &mut self,
        prelude: Self::Prelude,
        _start: &ParserState,
        input: &mut Parser<'i>,
    ) -> Result<TopItem, ParseError<()>> {
        let (line, text) = prelude;
        // the line of the first selector, not of leading comments/blank lines
        let leading = text.len() - text.trim_start().len();
        let prelude_line = line + text[..leading].matches('\n').count() as u32;
        let decls = parse_declarations(input, &mut self.dropped);
        Ok(TopItem::Rule {
            line: prelude_line,
            prelude: text.trim().to_string(),
            decls,
        })
    }
}

impl<'i> AtRuleParser<'i> for TopParser {
    type Prelude = (u32, u32, String, Vec<Cv>);
    type AtRule = TopItem;
    type Error = ();

    fn parse_prelude(
        &mut self,
        name: CowRcStr<'i>,
        input: &mut Parser<'i>,
    ) -> Result<Self::Prelude, ParseError<()>> {
        let loc = input.current_source_location();
        Ok((
            loc.line + 1,
            loc.column,
            name.to_string(),
            read_values(input),
        ))
    }

    fn rule_without_block(&mut self, p: Self::Prelude, start: &ParserState) -> Result<TopItem, ()> {
        Ok(at_rule(p, start))
    }

    fn parse_block(
        &mut self,
        p: Self::Prelude,
        start: &ParserState,
        input: &mut Parser<'i>,
    ) -> Result<TopItem, ParseError<()>> {
        while input.next_including_whitespace_and_comments().is_ok() {}
        Ok(at_rule(p, start))
    }
}

/// An at-rule item from its prelude: the line is the earlier of where
/// the name and the prelude were read.
fn at_rule(p: (u32, u32, String, Vec<Cv>), start: &ParserState) -> TopItem {
    let loc = start.source_location();
    TopItem::AtRule {
        line: p.0.min(loc.line + 1),
        column: loc.column,
        name: p.2,
        prelude: p.3,
    }
}

/// Declarations of a rule body (at-rules and nested rules are dropped).
fn parse_declarations(input: &mut Parser<'_>, dropped: &mut Dropped) -> Vec<RawDecl> {
    let mut body = BodyParser;
    let mut out = Vec::new();
    for item in RuleBodyParser::new(input, &mut body) {
        match item {
            Ok(Some(d)) => out.push(d),
            Ok(None) => {}
            Err((_, slice, loc)) => dropped.push((loc.line + 1, slice.trim().to_string())),
        }
    }
    out
}

struct BodyParser;

impl<'i> DeclarationParser<'i> for BodyParser {
    type Declaration = Option<RawDecl>;
    type Error = ();

    fn parse_value(
        &mut self,
        name: CowRcStr<'i>,
        input: &mut Parser<'i>,
        start: &ParserState,
    ) -> Result<Self::Declaration, ParseError<()>> {
        let mut value = read_values(input);
        strip_important(&mut value);
        Ok(Some(RawDecl {
            name: name.to_string(),
            value,
            line: start.source_location().line + 1,
        }))
    }
}

impl<'i> AtRuleParser<'i> for BodyParser {
    type Prelude = ();
    type AtRule = Option<RawDecl>;
    type Error = ();
}

impl<'i> QualifiedRuleParser<'i> for BodyParser {
    type Prelude = ();
    type QualifiedRule = Option<RawDecl>;
    type Error = ();
}

impl<'i> RuleBodyItemParser<'i, Option<RawDecl>, ()> for BodyParser {
    fn parse_declarations(&self) -> bool {
        true
    }
    fn parse_qualified(&self) -> bool {
        false
    }
}

/// Drops a trailing `!important`, as tinycss2 does before easybake sees the value.
fn strip_important(value: &mut Vec<Cv>) {
    let sig: Vec<usize> = (0..value.len()).filter(|&i| !value[i].is_ws()).collect();
    if let [.., bang, imp] = sig[..] {
        if value[bang].is_lit("!")
            && matches!(&value[imp], Cv::Ident(s) if s.eq_ignore_ascii_case("important"))
        {
            value.truncate(bang);
        }
    }
}

/// Parses a standalone value string (used for `group-by`/`sort-by` pieces
/// given as quoted strings, and in tests).
#[cfg(test)]
pub(crate) fn parse_value_str(s: &str) -> Vec<Cv> {
    let mut parser = Parser::new(s);
    read_values(&mut parser)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rules_declarations_and_lines() {
        let css = "/* c */\n@namespace x 'u';\n\ndiv > p,\n li::after {\n  content: \"a\" counter(c, upper-roman) !important;\n  move-to: b;\n}\n";
        let (items, dropped) = parse_stylesheet(css).unwrap();
        assert!(dropped.is_empty());
        assert_eq!(items.len(), 2);
        match &items[1] {
            TopItem::Rule {
                line,
                prelude,
                decls,
                ..
            } => {
                assert_eq!(*line, 4);
                assert_eq!(prelude, "div > p,\n li::after");
                assert_eq!(decls[0].name, "content");
                assert_eq!(decls[0].line, 6);
                assert_eq!(
                    serialize(&decls[0].value),
                    " \"a\" counter(c, upper-roman) "
                );
                assert_eq!(decls[1].line, 7);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_rule_without_block_is_an_error() {
        let err = parse_stylesheet("div { a: b }\n\nspan").unwrap_err();
        assert!(matches!(err, CollateError::Recipe { line: 3, .. }), "{err}");
    }

    #[test]
    fn a_single_identifier_is_its_own_serialisation() {
        for v in [
            "b", "a-b_c", "x1", "--x", "-a", "é", "1a", "-1", "a b", "a\\.b",
        ] {
            let values = parse_value_str(v);
            if let Some(t) = single_token(&values) {
                assert_eq!(t, serialize(&values), "{v}");
            }
        }
        assert_eq!(single_token(&parse_value_str("b")), Some("b"));
        assert_eq!(single_token(&parse_value_str(" b")), None);
    }

    #[test]
    fn strings_serialize_with_double_quotes() {
        let v = parse_value_str("counter('x') a");
        assert_eq!(serialize(&v), "counter(\"x\") a");
        assert_eq!(split(&v, ",").len(), 1);
    }
}
