//! CSS selectors over the arena tree, with the dialect's extensions.
//!
//! Parsing and matching are the `selectors` crate's (Servo's engine); this
//! module supplies what that crate leaves to its user: string types, the
//! dialect's pseudo-classes (`:pass()`, `:deferred`, `:match()`), its
//! pseudo-elements (`::before`, `::after`, `::inside`, `::outside`,
//! `::deferred`, and for sort keys `::first-letter`, `::attr(x)`,
//! `::first-letter(x)`). The [`selectors::Element`] view of a node is in
//! `element.rs`.
//!
//! Matching follows cssselect2 as cnx-easybake uses it: documents count as
//! HTML (type and attribute names compare lower-cased), an unprefixed type
//! selector matches any namespace, comments are invisible.

use std::collections::HashMap;
use std::fmt;

use cssparser::{ParseError, ParseErrorKind, Parser as CssParser, ToCss, Token};
use precomputed_hash::PrecomputedHash;
use selectors::parser::{ParseRelative, Selector, SelectorParseErrorKind};
use selectors::SelectorList;

use super::atom::{intern_compiling, Atom};
pub(crate) use super::element::{lang_of, matches, own_lang, root_content_language, El};

/// The `SelectorImpl` of the dialect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Impl;

/// Identifiers, local names and prefixes, with their atom in the recipe's
/// interner (see `atom.rs`), so that matching compares numbers.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ident {
    pub(crate) name: String,
    pub(crate) atom: Atom,
}

/// Attribute values and namespace URLs, with their atom.
#[derive(Clone, Debug, Default)]
pub(crate) struct Value {
    pub(crate) text: String,
    pub(crate) atom: Atom,
}

fn hash32(s: &str) -> u32 {
    // FNV-1a: only feeds selectors' optional bloom filter
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl<'a> From<&'a str> for Ident {
    fn from(s: &'a str) -> Self {
        Ident {
            name: s.to_string(),
            atom: intern_compiling(s),
        }
    }
}
impl<'a> From<&'a str> for Value {
    fn from(s: &'a str) -> Self {
        Value {
            text: s.to_string(),
            atom: intern_compiling(s),
        }
    }
}
impl PartialEq for Ident {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for Ident {}
impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
impl Eq for Value {}
impl std::hash::Hash for Ident {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}
impl std::hash::Hash for Value {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state)
    }
}
impl AsRef<str> for Value {
    fn as_ref(&self) -> &str {
        &self.text
    }
}
impl PrecomputedHash for Ident {
    fn precomputed_hash(&self) -> u32 {
        hash32(&self.name)
    }
}
impl PrecomputedHash for Value {
    fn precomputed_hash(&self) -> u32 {
        hash32(&self.text)
    }
}
impl ToCss for Ident {
    fn to_css<W: fmt::Write>(&self, dest: &mut W) -> fmt::Result {
        cssparser::serialize_identifier(&self.name, dest)
    }
}
impl ToCss for Value {
    fn to_css<W: fmt::Write>(&self, dest: &mut W) -> fmt::Result {
        cssparser::serialize_string(&self.text, dest)
    }
}

/// A compiled `:match()` regular expression (compared by its source).
#[derive(Clone, Debug)]
pub(crate) struct MatchRegex(pub(crate) regex::Regex);

impl PartialEq for MatchRegex {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}
impl Eq for MatchRegex {}

/// Pseudo-classes beyond the structural ones `selectors` handles itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PseudoClass {
    /// `:pass(name)`: always matches; puts the rule into that pass.
    Pass(String),
    /// `:deferred`: always matches; runs the rule after the children.
    Deferred,
    /// `:match(regex)`: the element's text (and tail) matches.
    Match(MatchRegex),
    Link,
    /// `:hover`, `:visited`, … never match in a static document.
    Never(String),
    Lang(String),
    Checked,
    Enabled,
    Disabled,
}

impl selectors::parser::NonTSPseudoClass for PseudoClass {
    fn is_active_or_hover(&self) -> bool {
        false
    }
    fn is_user_action_state(&self) -> bool {
        false
    }
}

impl ToCss for PseudoClass {
    fn to_css<W: fmt::Write>(&self, dest: &mut W) -> fmt::Result {
        match self {
            PseudoClass::Pass(p) => write!(dest, ":pass({p})"),
            PseudoClass::Deferred => dest.write_str(":deferred"),
            PseudoClass::Match(r) => write!(dest, ":match({})", r.0.as_str()),
            PseudoClass::Link => dest.write_str(":link"),
            PseudoClass::Never(n) => write!(dest, ":{n}"),
            PseudoClass::Lang(l) => write!(dest, ":lang({l})"),
            PseudoClass::Checked => dest.write_str(":checked"),
            PseudoClass::Enabled => dest.write_str(":enabled"),
            PseudoClass::Disabled => dest.write_str(":disabled"),
        }
    }
}

/// Pseudo-elements of the dialect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PseudoElement {
    Before,
    After,
    Inside,
    Outside,
    Deferred,
    FirstLetter,
    FirstLine,
    /// `::attr(name)` (sort/group keys only).
    Attr(String),
    /// `::first-letter(name)` (sort/group keys only).
    FirstLetterOf(String),
    /// Accepted only in compatibility mode, where such rules never apply
    /// (as in cnx-easybake).
    Unknown(String),
}

impl selectors::parser::PseudoElement for PseudoElement {}

impl ToCss for PseudoElement {
    fn to_css<W: fmt::Write>(&self, dest: &mut W) -> fmt::Result {
        dest.write_str("::")?;
        dest.write_str(&self.label())
    }
}

impl PseudoElement {
    /// The name easybake's rule grouping uses for this pseudo-element.
    pub(crate) fn label(&self) -> String {
        match self {
            PseudoElement::Before => "before".into(),
            PseudoElement::After => "after".into(),
            PseudoElement::Inside => "inside".into(),
            PseudoElement::Outside => "outside".into(),
            PseudoElement::Deferred => "deferred".into(),
            PseudoElement::FirstLetter => "first-letter".into(),
            PseudoElement::FirstLine => "first-line".into(),
            PseudoElement::Attr(a) => format!("attr({a})"),
            PseudoElement::FirstLetterOf(a) => format!("first-letter({a})"),
            PseudoElement::Unknown(n) => n.clone(),
        }
    }
}

impl selectors::SelectorImpl for Impl {
    type ExtraMatchingData<'a> = ();
    type AttrValue = Value;
    type Identifier = Ident;
    type LocalName = Ident;
    type NamespaceUrl = Value;
    type NamespacePrefix = Ident;
    type BorrowedNamespaceUrl = Value;
    type BorrowedLocalName = Ident;
    type NonTSPseudoClass = PseudoClass;
    type PseudoElement = PseudoElement;
}

/// Why a selector was rejected, worded for the recipe author.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SelError {
    Syntax(SelectorParseErrorKind),
    UnknownPseudoClass(String),
    UnknownPseudoElement(String),
    BadArgument(String),
}

impl From<SelectorParseErrorKind> for SelError {
    fn from(k: SelectorParseErrorKind) -> Self {
        SelError::Syntax(k)
    }
}

/// Turns a selector parse error into a one-line message.
pub(crate) fn describe(e: &ParseError<SelError>) -> String {
    match &e.kind {
        ParseErrorKind::Custom(SelError::UnknownPseudoClass(n)) => {
            format!("unknown pseudo-class :{n}")
        }
        ParseErrorKind::Custom(SelError::UnknownPseudoElement(n)) => {
            format!("unknown pseudo-element ::{n}")
        }
        ParseErrorKind::Custom(SelError::BadArgument(m)) => m.clone(),
        ParseErrorKind::Custom(SelError::Syntax(k)) => match k {
            SelectorParseErrorKind::ExpectedNamespace => "undefined namespace prefix".into(),
            SelectorParseErrorKind::UnsupportedPseudoClassOrElement => {
                "unsupported pseudo-class or pseudo-element".into()
            }
            SelectorParseErrorKind::EmptySelector => "empty selector".into(),
            SelectorParseErrorKind::DanglingCombinator => {
                "combinator without a selector after it".into()
            }
            other => format!("invalid selector ({other:?})"),
        },
        ParseErrorKind::Basic(b) => format!("invalid selector ({b})"),
    }
}

/// What a selector is parsed for.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub(crate) enum SelMode {
    /// A rule's selector; `strict` rejects pseudo-elements easybake ignores.
    Rule { strict: bool },
    /// A `sort-by` / `group-by` key selector; `strict` rejects
    /// pseudo-elements easybake would ignore there.
    Key { strict: bool },
}

pub(crate) struct SelParser<'a> {
    pub(crate) namespaces: &'a HashMap<String, String>,
    pub(crate) mode: SelMode,
}

/// Consumes the rest of `parser` and returns its source text.
fn raw_args(parser: &mut CssParser<'_>) -> (String, Option<String>) {
    let start = parser.position();
    let mut only_string = None;
    let mut count = 0;
    while let Ok(tok) = parser.next_including_whitespace() {
        match tok {
            Token::WhiteSpace(_) => {}
            Token::QuotedString(s) => {
                count += 1;
                only_string = Some(s.to_string());
            }
            _ => count += 1,
        }
    }
    let raw = parser.slice_from(start).to_string();
    (raw, if count == 1 { only_string } else { None })
}

impl<'i> selectors::Parser<'i> for SelParser<'_> {
    type Impl = Impl;
    type Error = SelError;

    fn parse_has(&self) -> bool {
        true
    }
    fn parse_is_and_where(&self) -> bool {
        true
    }
    fn parse_nth_child_of(&self) -> bool {
        true
    }

    fn parse_non_ts_pseudo_class(&self, name: &str) -> Result<PseudoClass, ParseError<SelError>> {
        let lower = name.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "deferred" => PseudoClass::Deferred,
            "link" | "any-link" => PseudoClass::Link,
            "visited" | "hover" | "active" | "focus" | "target" | "focus-within"
            | "focus-visible" => PseudoClass::Never(lower),
            "checked" => PseudoClass::Checked,
            "enabled" => PseudoClass::Enabled,
            "disabled" => PseudoClass::Disabled,
            _ => {
                return Err(ParseError::custom(SelError::UnknownPseudoClass(
                    name.to_string(),
                )))
            }
        })
    }

    fn parse_non_ts_functional_pseudo_class(
        &self,
        name: &str,
        parser: &mut CssParser<'i>,
        _after_part: bool,
    ) -> Result<PseudoClass, ParseError<SelError>> {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "pass" => {
                let (raw, _) = raw_args(parser);
                let pass = raw.trim_matches(|c| c == '"' || c == '\'').to_string();
                Ok(PseudoClass::Pass(pass))
            }
            "match" => {
                let (raw, string) = raw_args(parser);
                let pattern = match string {
                    Some(s) => s,
                    None => unescape_regex(&raw),
                };
                match regex::Regex::new(&pattern) {
                    Ok(r) => Ok(PseudoClass::Match(MatchRegex(r))),
                    Err(e) => Err(ParseError::custom(SelError::BadArgument(format!(
                        "bad regular expression in :match({pattern}): {}",
                        e.to_string().lines().last().unwrap_or("")
                    )))),
                }
            }
            "lang" => {
                let (raw, _) = raw_args(parser);
                let lang = raw.trim();
                if lang.is_empty() || lang.contains(char::is_whitespace) {
                    return Err(ParseError::custom(SelError::BadArgument(
                        "invalid arguments for :lang()".into(),
                    )));
                }
                Ok(PseudoClass::Lang(lang.to_ascii_lowercase()))
            }
            _ => Err(ParseError::custom(SelError::UnknownPseudoClass(format!(
                "{name}()"
            )))),
        }
    }

    fn parse_pseudo_element(&self, name: &str) -> Result<PseudoElement, ParseError<SelError>> {
        let lower = name.to_ascii_lowercase();
        let pe = match lower.as_str() {
            "before" => PseudoElement::Before,
            "after" => PseudoElement::After,
            "inside" => PseudoElement::Inside,
            "outside" => PseudoElement::Outside,
            "deferred" => PseudoElement::Deferred,
            "first-letter" => PseudoElement::FirstLetter,
            "first-line" => PseudoElement::FirstLine,
            _ => PseudoElement::Unknown(lower),
        };
        let ok = match (self.mode, &pe) {
            (SelMode::Key { .. }, PseudoElement::FirstLetter) => true,
            (SelMode::Key { strict }, _) => !strict,
            (SelMode::Rule { strict: false }, _) => true,
            (SelMode::Rule { strict: true }, p) => !matches!(
                p,
                PseudoElement::Unknown(_) | PseudoElement::FirstLetter | PseudoElement::FirstLine
            ),
        };
        if ok {
            Ok(pe)
        } else {
            Err(ParseError::custom(SelError::UnknownPseudoElement(
                name.to_string(),
            )))
        }
    }

    fn parse_functional_pseudo_element(
        &self,
        name: &str,
        arguments: &mut CssParser<'i>,
    ) -> Result<PseudoElement, ParseError<SelError>> {
        let lower = name.to_ascii_lowercase();
        if matches!(self.mode, SelMode::Key { .. }) && (lower == "attr" || lower == "first-letter")
        {
            let arg = match arguments.expect_ident() {
                Ok(i) => i.to_string(),
                Err(_) => {
                    return Err(ParseError::custom(SelError::BadArgument(format!(
                        "::{name}() needs an attribute name"
                    ))))
                }
            };
            arguments.expect_exhausted().map_err(|_| {
                ParseError::custom(SelError::BadArgument(format!("::{name}() takes one name")))
            })?;
            return Ok(if lower == "attr" {
                PseudoElement::Attr(arg)
            } else {
                PseudoElement::FirstLetterOf(arg)
            });
        }
        Err(ParseError::custom(SelError::UnknownPseudoElement(format!(
            "{name}()"
        ))))
    }

    fn namespace_for_prefix(&self, prefix: &Ident) -> Option<Value> {
        self.namespaces
            .get(&prefix.name)
            .map(|u| Value::from(u.as_str()))
    }
}

/// easybake's handling of an unquoted `:match()` argument: drop backslashes
/// that are not themselves escaped.
fn unescape_regex(raw: &str) -> String {
    let mut out = String::new();
    let mut prev_backslash = false;
    for c in raw.chars() {
        if c == '\\' && !prev_backslash {
            prev_backslash = true;
            continue;
        }
        prev_backslash = false;
        out.push(c);
    }
    out
}

/// Parses exactly one selector.
pub(crate) fn parse_one(
    text: &str,
    namespaces: &HashMap<String, String>,
    mode: SelMode,
) -> Result<Selector<Impl>, String> {
    let parser = SelParser { namespaces, mode };
    let mut input = CssParser::new(text);
    let list =
        SelectorList::parse(&parser, &mut input, ParseRelative::No).map_err(|e| describe(&e))?;
    match list.slice() {
        [one] => Ok(one.clone()),
        _ => Err("expected one selector".into()),
    }
}

/// Splits a selector list at top-level commas, keeping each piece's source
/// text, so one bad selector in a list does not discard its siblings
/// (easybake compiles them one by one).
pub(crate) fn split_list(text: &str) -> Vec<(usize, String)> {
    let mut input = CssParser::new(text);
    let mut pieces = Vec::new();
    let mut start = input.position();
    loop {
        let before = input.position();
        match input.next_including_whitespace_and_comments() {
            Ok(Token::Comma) => {
                let piece = input.slice(start..before).to_string();
                pieces.push((start.byte_index(), piece));
                start = input.position();
            }
            Ok(Token::Function(_))
            | Ok(Token::ParenthesisBlock)
            | Ok(Token::SquareBracketBlock)
            | Ok(Token::CurlyBracketBlock) => {
                // consume the block now, so positions land after it
                let _ = input.parse_nested_block(|i| {
                    while i.next_including_whitespace_and_comments().is_ok() {}
                    Ok::<_, ParseError<()>>(())
                });
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    pieces.push((start.byte_index(), input.slice_from(start).to_string()));
    pieces
}

/// Rewrites a key selector so unprefixed type selectors only match elements
/// without a namespace: easybake evaluates sort/group keys through XPath,
/// where `dt` never matches an XHTML `dt` (recipes write `xhtml|dt`).
pub(crate) fn xpath_namespace_semantics(text: &str) -> String {
    let mut out = String::new();
    let mut input = CssParser::new(text);
    rewrite_types(&mut input, &mut out);
    out
}

fn rewrite_types(input: &mut CssParser<'_>, out: &mut String) {
    // true where a type selector may start: after whitespace, a combinator,
    // a comma, or at the start
    let mut at_compound_start = true;
    loop {
        let start = input.position();
        let tok = match input.next_including_whitespace_and_comments() {
            Ok(t) => t.clone(),
            Err(_) => break,
        };
        let raw = input.slice_from(start).to_string();
        match tok {
            Token::Ident(_) if at_compound_start => {
                let state = input.state();
                let followed_by_bar = matches!(
                    input.next_including_whitespace_and_comments(),
                    Ok(Token::Delim('|'))
                );
                input.reset(&state);
                if !followed_by_bar {
                    out.push('|');
                }
                out.push_str(&raw);
                at_compound_start = false;
            }
            Token::Function(ref name)
                if ["not", "is", "where", "has", "matches"]
                    .contains(&name.to_ascii_lowercase().as_str()) =>
            {
                out.push_str(&raw);
                let _ = input.parse_nested_block(|i| {
                    rewrite_types(i, out);
                    Ok::<_, ParseError<()>>(())
                });
                out.push(')');
                at_compound_start = false;
            }
            Token::Function(_)
            | Token::ParenthesisBlock
            | Token::SquareBracketBlock
            | Token::CurlyBracketBlock => {
                // copy the block verbatim
                out.push_str(&raw);
                let inner_start = input.position();
                let _ = input.parse_nested_block(|i| {
                    while i.next_including_whitespace_and_comments().is_ok() {}
                    Ok::<_, ParseError<()>>(())
                });
                let whole = input.slice_from(inner_start);
                out.push_str(whole);
                at_compound_start = false;
            }
            Token::WhiteSpace(_)
            | Token::Comma
            | Token::Delim('>')
            | Token::Delim('+')
            | Token::Delim('~') => {
                out.push_str(&raw);
                at_compound_start = true;
            }
            _ => {
                out.push_str(&raw);
                at_compound_start = false;
            }
        }
    }
}

/// Used by tests and error paths to name a selector.
#[allow(dead_code)]
pub(crate) fn to_css(sel: &Selector<Impl>) -> String {
    let mut s = String::new();
    let _ = sel.to_css(&mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::super::dom::Document;
    use super::super::xml::parse;
    use super::*;
    use selectors::context::SelectorCaches;

    fn ns() -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("x".to_string(), super::super::dom::XHTML_NS.to_string());
        m
    }

    fn count(doc: &Document, sel: &str) -> usize {
        let s = parse_one(sel, &ns(), SelMode::Rule { strict: true }).unwrap();
        let mut caches = SelectorCaches::default();
        doc.descendants_or_self(doc.root)
            .filter(|&n| {
                matches(
                    &s,
                    El {
                        doc,
                        id: n,
                        scope: None,
                        root_lang: "",
                    },
                    &mut caches,
                )
            })
            .count()
    }

    #[test]
    fn matches_like_cssselect2() {
        let doc = parse(
            "<html xmlns='http://www.w3.org/1999/xhtml'><body><div class='a b' id='d'><p>x</p><p/><!--c--><p>yes</p></div></body></html>",
            100,
            100,
        )
        .unwrap();
        assert_eq!(count(&doc, "p"), 3);
        assert_eq!(count(&doc, "x|p"), 3);
        assert_eq!(count(&doc, "DIV.a.b > p:first-of-type"), 1);
        assert_eq!(count(&doc, "div p:not(:first-child)"), 2);
        assert_eq!(count(&doc, "p:nth-child(2n+1)"), 2);
        assert_eq!(count(&doc, "div:has(> p:empty)"), 1);
        assert_eq!(count(&doc, "p:match(^y)"), 1);
        assert_eq!(count(&doc, ":pass(2) p::after"), 3);
        assert_eq!(count(&doc, "p:deferred"), 3);
        assert_eq!(count(&doc, "#d"), 1);
    }

    #[test]
    fn rejects_unknown_pseudos_in_strict_mode() {
        let e = parse_one("div::insde", &ns(), SelMode::Rule { strict: true }).unwrap_err();
        assert_eq!(e, "unknown pseudo-element ::insde");
        let e = parse_one("div:nonsuch", &ns(), SelMode::Rule { strict: false }).unwrap_err();
        assert_eq!(e, "unknown pseudo-class :nonsuch");
        assert!(parse_one("div::insde", &ns(), SelMode::Rule { strict: false }).is_ok());
        assert!(parse_one("q|div", &ns(), SelMode::Rule { strict: false }).is_err());
    }

    #[test]
    fn key_selectors_get_xpath_namespace_semantics() {
        assert_eq!(xpath_namespace_semantics("dl > dt"), "|dl > |dt");
        assert_eq!(
            xpath_namespace_semantics("x|dl>x|dt::attr(k)"),
            "x|dl>x|dt::attr(k)"
        );
        assert_eq!(
            xpath_namespace_semantics("span::first-letter"),
            "|span::first-letter"
        );
        assert_eq!(xpath_namespace_semantics("*.c span[a=b]"), "*.c |span[a=b]");
        assert_eq!(xpath_namespace_semantics("a:not(b)"), "|a:not(|b)");
    }

    #[test]
    fn splits_lists_at_top_level_commas() {
        let v = split_list("a, :pass(1, 2) b[x=\"1,2\"],\n c");
        let texts: Vec<&str> = v.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(texts, vec!["a", " :pass(1, 2) b[x=\"1,2\"]", "\n c"]);
    }
}
