//! Reading the input document: well-formed XML (XHTML) into the arena.
//!
//! cnx-easybake parses its input with lxml's XML parser, so the same inputs
//! must be accepted here: namespaces, self-closing `<span/>`, CDATA, the five
//! predefined entities and character references. Anything that is not
//! well-formed XML is a permanent error naming the line, which is also what
//! lxml does. Tokenising is quick-xml's job; namespace scoping and the
//! well-formedness rules quick-xml leaves to its caller (one root, no text
//! outside it, known prefixes, known entities, characters XML 1.0 allows,
//! names that are XML names, no `xml` processing instruction) are checked
//! here, so that whatever is accepted can be written back as XML.
//!
//! A DTD's internal subset (`<!DOCTYPE html [ … ]>`) is dropped with a
//! warning: its entities are never expanded (no entity bombs, no external
//! files) and writing it back verbatim could not be trusted to be XML; the
//! rest of the DOCTYPE (name, public and system ids) is kept.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use quick_xml::XmlVersion;

use super::dom::{Atom, Attr, Document, Interner, Kind, NodeId, EMPTY, NS_NONE, NS_XML};
use super::error::CollateError;

/// Parses `input` into a new document that may grow to `max_nodes` nodes and
/// nests at most `max_depth` elements.
#[cfg(test)]
pub(crate) fn parse(
    input: &str,
    max_nodes: usize,
    max_depth: usize,
) -> Result<Document, CollateError> {
    parse_with(input, max_nodes, max_depth, Interner::new())
}

/// [`parse`] into a document whose names extend `atoms` (the recipe's).
pub(crate) fn parse_with(
    input: &str,
    max_nodes: usize,
    max_depth: usize,
    atoms: Interner,
) -> Result<Document, CollateError> {
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    if let Some(at) = forbidden_char(input) {
        let line = input.as_bytes()[..at]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u32
            + 1;
        let c = input[at..].chars().next().unwrap_or('\0');
        return Err(CollateError::Html {
            line,
            msg: format!("character U+{:04X} is not allowed in XML", c as u32),
        });
    }
    let mut p = XmlBuilder {
        input,
        doc: Document::new(max_nodes, atoms),
        open: Vec::new(),
        bindings: Vec::new(),
        marks: Vec::new(),
        saw_root: false,
        max_depth,
    };
    let xml_prefix = p.doc.ns_decl(NS_XML).prefix;
    p.bindings.push((xml_prefix, NS_XML));
    p.run()?;
    p.doc.ns_simple = p.doc.compute_ns_simple();
    Ok(p.doc)
}

struct XmlBuilder<'a> {
    input: &'a str,
    doc: Document,
    /// Elements not closed yet.
    open: Vec<NodeId>,
    /// In-scope namespace bindings (prefix, declaration); the empty prefix
    /// is the default namespace.
    bindings: Vec<(Atom, u32)>,
    /// `bindings.len()` before each open element declared its own.
    marks: Vec<usize>,
    saw_root: bool,
    max_depth: usize,
}

impl XmlBuilder<'_> {
    fn line_at(&self, pos: u64) -> u32 {
        let end = (pos as usize).min(self.input.len());
        let before = self.input.as_bytes().get(..end).unwrap_or(&[]);
        before.iter().filter(|&&b| b == b'\n').count() as u32 + 1
    }

    fn err(&self, pos: u64, msg: impl Into<String>) -> CollateError {
        CollateError::Html {
            line: self.line_at(pos),
            msg: msg.into(),
        }
    }

    fn run(&mut self) -> Result<(), CollateError> {
        let mut reader = Reader::from_str(self.input);
        {
            let cfg = reader.config_mut();
            cfg.check_end_names = true;
            cfg.check_comments = true;
            cfg.expand_empty_elements = false;
            cfg.trim_text(false);
        }
        loop {
            let pos = reader.buffer_position();
            let event = match reader.read_event() {
                Ok(e) => e,
                Err(e) => {
                    return Err(
                        self.err(reader.error_position(), format!("not well-formed XML: {e}"))
                    )
                }
            };
            match event {
                Event::Start(e) => self.start(&e, pos, false)?,
                Event::Empty(e) => self.start(&e, pos, true)?,
                Event::End(_) => self.end(),
                Event::Text(t) => {
                    let text = t.xml_content(XmlVersion::Implicit1_0);
                    self.text(&text, pos)?;
                }
                Event::CData(c) => {
                    let text = c.xml_content(XmlVersion::Implicit1_0);
                    self.text(&text, pos)?;
                }
                Event::GeneralRef(r) => {
                    let ch = match r.resolve_char_ref() {
                        Ok(Some(c)) if is_xml_char(c) => c.to_string(),
                        Ok(Some(c)) => {
                            return Err(self.err(
                                pos,
                                format!(
                                    "character reference to U+{:04X}, which XML does not allow",
                                    c as u32
                                ),
                            ))
                        }
                        Ok(None) => match predefined(&r) {
                            Some(s) => s.to_string(),
                            None if self.doc.dropped_subset => {
                                return Err(self.err(
                                    pos,
                                    format!(
                                        "entity &{}; (entities of a DTD internal subset are not expanded)",
                                        &*r
                                    ),
                                ));
                            }
                            None => {
                                return Err(self.err(pos, format!("undefined entity &{};", &*r)));
                            }
                        },
                        Err(e) => {
                            return Err(self.err(pos, format!("bad character reference: {e}")))
                        }
                    };
                    self.text(&ch, pos)?;
                }
                Event::Comment(c) => {
                    let text = c.xml_content(XmlVersion::Implicit1_0).into_owned();
                    if text.ends_with('-') {
                        return Err(self.err(pos, "a comment must not end with \"--->\""));
                    }
                    self.other(Kind::Comment, "", text)?;
                }
                Event::PI(pi) => {
                    let target = pi.target().to_string();
                    if !is_name(&target) || target.eq_ignore_ascii_case("xml") {
                        return Err(self.err(
                            pos,
                            format!("{target:?} is not a processing instruction target"),
                        ));
                    }
                    let data = pi.content().trim_start().to_string();
                    self.other(Kind::Pi, &target, data)?;
                }
                Event::DocType(d) => {
                    if self.saw_root {
                        return Err(self.err(pos, "DOCTYPE after the root element"));
                    }
                    let content = d.xml_content(XmlVersion::Implicit1_0);
                    let (kept, subset) = doctype(&content)
                        .map_err(|m| self.err(pos, format!("malformed DOCTYPE: {m}")))?;
                    self.doc.doctype = Some(kept);
                    self.doc.dropped_subset = subset;
                }
                Event::Decl(_) => {}
                Event::Eof => break,
            }
        }
        if let Some(&unclosed) = self.open.last() {
            let name = self.doc.local_name(unclosed).to_string();
            return Err(self.err(
                self.input.len() as u64,
                format!("element <{name}> is not closed"),
            ));
        }
        if !self.saw_root {
            return Err(self.err(0, "no root element"));
        }
        Ok(())
    }

    /// The declaration `prefix` is bound to here ([`NS_NONE`] for no
    /// namespace) and its URI.
    fn resolve_atom(&self, prefix: Atom, pos: u64) -> Result<(u32, Atom), CollateError> {
        match self.bindings.iter().rev().find(|(bp, _)| *bp == prefix) {
            // `xmlns=""` undeclares the default namespace
            Some(&(_, d)) if self.doc.ns_decl(d).href == EMPTY => Ok((NS_NONE, EMPTY)),
            Some(&(_, d)) => Ok((d, self.doc.ns_decl(d).href)),
            None if prefix == EMPTY => Ok((NS_NONE, EMPTY)),
            None => Err(self.err(
                pos,
                format!("undefined namespace prefix {}:", self.doc.atoms.get(prefix)),
            )),
        }
    }

    fn start(&mut self, e: &BytesStart<'_>, pos: u64, empty: bool) -> Result<(), CollateError> {
        if self.open.is_empty() && self.saw_root {
            return Err(self.err(pos, "more than one root element"));
        }
        if self.open.len() >= self.max_depth {
            return Err(CollateError::limit(
                "element nesting depth",
                self.max_depth as u64,
            ));
        }
        self.marks.push(self.bindings.len());
        // Namespace declarations scope over the element's own name and
        // attributes: attributes are collected first with their prefix (in
        // `ns_ref`), and bound once every declaration of the element is known.
        let mut decls = Vec::new();
        let mut attrs: Vec<Attr> = Vec::new();
        for a in e.attributes().with_checks(false) {
            let a = a.map_err(|err| self.err(pos, format!("bad attribute: {err}")))?;
            let key = a.key.into_inner();
            if !is_qname(key) {
                return Err(self.err(pos, format!("{key:?} is not an attribute name")));
            }
            let value = a
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|err| self.err(pos, format!("bad attribute value: {err}")))?;
            if key == "xmlns" || key.starts_with("xmlns:") {
                let prefix = key
                    .strip_prefix("xmlns")
                    .unwrap_or("")
                    .trim_start_matches(':');
                let pa = self.doc.atoms.intern(prefix);
                let ua = self.doc.atoms.intern(&value);
                let d = self.doc.new_ns(pa, ua);
                self.bindings.push((pa, d));
                decls.push(d);
                continue;
            }
            let (prefix, local) = match key.split_once(':') {
                Some((p, l)) => (self.doc.atoms.intern(p), l),
                None => (EMPTY, key),
            };
            attrs.push(Attr {
                ns: EMPTY,
                local: self.doc.atoms.intern(local),
                ns_ref: prefix,
                value: value.into_owned(),
            });
        }
        for i in 0..attrs.len() {
            let prefix = attrs[i].ns_ref;
            // unprefixed attributes are in no namespace, whatever the default
            let (aref, ans) = if prefix == EMPTY {
                (NS_NONE, EMPTY)
            } else {
                self.resolve_atom(prefix, pos)?
            };
            attrs[i].ns_ref = aref;
            attrs[i].ns = ans;
            if attrs[..i]
                .iter()
                .any(|b| b.ns == ans && b.local == attrs[i].local)
            {
                let name = self.doc.atoms.get(attrs[i].local).to_string();
                return Err(self.err(pos, format!("duplicate attribute {name}")));
            }
        }
        let qname = e.name();
        let raw_name: &str = qname.as_ref();
        if !is_qname(raw_name) {
            return Err(self.err(pos, format!("{raw_name:?} is not an element name")));
        }
        let (local, prefix) = qname.decompose();
        let prefix_atom = match prefix {
            Some(p) => self.doc.atoms.intern(p.as_ref()),
            None => EMPTY,
        };
        let (ns_ref, ns) = self.resolve_atom(prefix_atom, pos)?;
        let local_a = self.doc.atoms.intern(local.as_ref());
        let parent = self.open.last().copied();
        let id = self
            .doc
            .build_element(parent, ns, local_a, ns_ref, attrs, decls)?;
        self.saw_root = true;
        if parent.is_none() {
            self.doc.root = id;
        }
        self.open.push(id);
        if empty {
            self.end();
        }
        Ok(())
    }

    fn end(&mut self) {
        self.open.pop();
        if let Some(mark) = self.marks.pop() {
            self.bindings.truncate(mark);
        }
    }

    fn text(&mut self, text: &str, pos: u64) -> Result<(), CollateError> {
        match self.open.last() {
            Some(&cur) => {
                self.doc.build_text(cur, text);
                Ok(())
            }
            None if text.chars().all(|c| c.is_ascii_whitespace()) => Ok(()),
            None => Err(self.err(pos, "text outside the root element")),
        }
    }

    fn other(&mut self, kind: Kind, target: &str, text: String) -> Result<(), CollateError> {
        let t = self.doc.atoms.intern(target);
        let id = self.doc.new_other(kind, t, text)?;
        match self.open.last() {
            Some(&cur) => self.doc.link_new_last(cur, id),
            None if self.saw_root => self.doc.epilog.push(id),
            None => self.doc.prolog.push(id),
        }
        Ok(())
    }
}

/// Position of the first character XML 1.0 does not allow (controls other
/// than tab, newline and carriage return; U+FFFE and U+FFFF).
pub(crate) fn forbidden_char(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    // 32 bytes at a time: a control character or the lead byte of U+FFFx
    // is rare, and the test below compiles to vector instructions
    let suspicious =
        |c: u8| ((c < 0x20) & (c != b'\t') & (c != b'\n') & (c != b'\r')) as u8 | (c == 0xEF) as u8;
    let mut start = 0;
    for chunk in b.chunks(32) {
        if chunk.iter().fold(0u8, |acc, &c| acc | suspicious(c)) != 0 {
            for (k, &c) in chunk.iter().enumerate() {
                let i = start + k;
                if c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r') {
                    return Some(i);
                }
                if c == 0xEF
                    && b.get(i + 1) == Some(&0xBF)
                    && matches!(b.get(i + 2), Some(0xBE | 0xBF))
                {
                    return Some(i);
                }
            }
        }
        start += chunk.len();
    }
    None
}

/// Whether XML 1.0 allows `c` in a document.
pub(crate) fn is_xml_char(c: char) -> bool {
    let mut buf = [0u8; 4];
    forbidden_char(c.encode_utf8(&mut buf)).is_none()
}

/// XML's `NameStartChar`.
fn is_name_start(c: char) -> bool {
    matches!(c, 'A'..='Z' | 'a'..='z' | '_' | ':'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

/// XML's `NameChar`.
fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// Whether `s` is an XML `Name`.
pub(crate) fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_name_start) && chars.all(is_name_char)
}

/// Whether `s` is a qualified name: `local` or `prefix:local`, each a name
/// without a colon.
pub(crate) fn is_qname(s: &str) -> bool {
    // the usual case, ASCII, in one pass over a table of byte classes
    let mut at_start = true;
    let mut colon = false;
    for &c in s.as_bytes() {
        match NAME_CLASS.get(c as usize).copied().unwrap_or(NON_ASCII) {
            START => at_start = false,
            MIDDLE if !at_start => {}
            COLON if !at_start && !colon => {
                colon = true;
                at_start = true;
            }
            NON_ASCII => return is_qname_unicode(s),
            _ => return false,
        }
    }
    !at_start
}

const INVALID: u8 = 0;
const START: u8 = 1;
const MIDDLE: u8 = 2;
const COLON: u8 = 3;
const NON_ASCII: u8 = 4;

/// Classes of ASCII bytes in XML names.
static NAME_CLASS: [u8; 128] = {
    let mut t = [INVALID; 128];
    let mut c = 0;
    while c < 128 {
        let b = c as u8;
        t[c] = if b.is_ascii_alphabetic() || b == b'_' {
            START
        } else if b.is_ascii_digit() || b == b'-' || b == b'.' {
            MIDDLE
        } else if b == b':' {
            COLON
        } else {
            INVALID
        };
        c += 1;
    }
    t
};

/// [`is_qname`] for names with characters beyond ASCII.
fn is_qname_unicode(s: &str) -> bool {
    let ncname = |p: &str| is_name(p) && !p.contains(':');
    match s.split_once(':') {
        Some((p, l)) => ncname(p) && ncname(l),
        None => ncname(s),
    }
}

/// Reads a DOCTYPE's content (`html PUBLIC "…" "…" [ … ]`): returns what is
/// kept (the name and external id, as XML) and whether an internal subset
/// was dropped.
fn doctype(content: &str) -> Result<(String, bool), String> {
    let s = content.trim_start();
    let name_end = s
        .find(|c: char| c.is_ascii_whitespace() || c == '[')
        .unwrap_or(s.len());
    let name = &s[..name_end];
    if !is_qname(name) {
        return Err(format!("{name:?} is not a name"));
    }
    let mut kept = name.to_string();
    let mut rest = s[name_end..].trim_start();
    let literal = |r: &str, pubid: bool| -> Result<(String, usize), String> {
        let quote = r.chars().next().filter(|c| *c == '"' || *c == '\'');
        let Some(q) = quote else {
            return Err("expected a quoted literal".into());
        };
        let end = r[1..].find(q).ok_or("unterminated literal")? + 1;
        let body = &r[1..end];
        let ok = if pubid {
            body.chars()
                .all(|c| c.is_ascii_alphanumeric() || " \r\n-'()+,./:=?;!*#@$_%".contains(c))
        } else {
            true
        };
        if !ok {
            return Err("bad character in the public id".into());
        }
        Ok((format!("{q}{body}{q}"), end + 1))
    };
    for (keyword, literals) in [("PUBLIC", 2), ("SYSTEM", 1)] {
        if let Some(after) = rest.strip_prefix(keyword) {
            if !after.starts_with(|c: char| c.is_ascii_whitespace()) {
                return Err(format!("expected a space after {keyword}"));
            }
            kept.push(' ');
            kept.push_str(keyword);
            rest = after.trim_start();
            for i in 0..literals {
                let (lit, used) = literal(rest, keyword == "PUBLIC" && i == 0)?;
                kept.push(' ');
                kept.push_str(&lit);
                rest = rest[used..].trim_start();
            }
            break;
        }
    }
    let subset = rest.starts_with('[');
    if subset {
        rest = rest.trim_end();
        if !rest.ends_with(']') {
            return Err("unterminated internal subset".into());
        }
    } else if !rest.trim().is_empty() {
        return Err(format!("unexpected {:?}", rest.trim()));
    }
    Ok((kept, subset))
}

fn predefined(name: &str) -> Option<&'static str> {
    Some(match name {
        "lt" => "<",
        "gt" => ">",
        "amp" => "&",
        "apos" => "'",
        "quot" => "\"",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaces_text_and_tails() {
        let doc = parse(
            "<?xml version='1.0'?><html xmlns='http://www.w3.org/1999/xhtml' xmlns:e='urn:e'>\
             <p e:a='1'>x&amp;y<b/>t&#233;</p><e:q/></html>",
            100,
            100,
        )
        .unwrap();
        let p = doc.first_child(doc.root).unwrap();
        assert_eq!(doc.namespace(p), "http://www.w3.org/1999/xhtml");
        assert_eq!(doc.attr_ns(p, "urn:e", "a"), Some("1"));
        assert_eq!(doc.text(p), "x&y");
        let b = doc.first_child(p).unwrap();
        assert_eq!(doc.tail(b), "té");
        let q = doc.next(p).unwrap();
        assert_eq!(doc.namespace(q), "urn:e");
    }

    #[test]
    fn characters_xml_forbids_are_refused_naming_the_line() {
        for bad in [
            "<a>\n\u{1}</a>",
            "<a>\n&#1;</a>",
            "<a x='\n\u{0}'/>",
            "<a>\n&#xFFFE;</a>",
            "<a>\n\u{ffff}</a>",
        ] {
            let err = parse(bad, 100, 100).unwrap_err();
            assert!(
                matches!(&err, CollateError::Html { line: 2, msg } if msg.contains("U+")),
                "{bad:?}: {err}"
            );
        }
        assert!(parse("<a>\t\r\n&#9;&#xD;&#x10000;</a>", 100, 100).is_ok());
    }

    #[test]
    fn qualified_names_follow_xml() {
        for good in ["a", "a:b", "_x.y-z9", "é", "a:é", "h:DIV"] {
            assert!(is_qname(good), "{good}");
        }
        for bad in [
            "", ":a", "a:", "a::b", "a:b:c", "1a", "-a", "a b", "a\"", "a:1",
        ] {
            assert!(!is_qname(bad), "{bad}");
        }
    }

    #[test]
    fn names_comments_and_processing_instructions_must_be_xml() {
        for bad in [
            "<a><b c\"d='1'/></a>",
            "<a><1b/></a>",
            "<a><!-- x -- y --></a>",
            "<a><!-- x ---></a>",
            "<a><?XML x?></a>",
            "<a><x:y:z xmlns:x='u'/></a>",
        ] {
            assert!(parse(bad, 100, 100).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_dtd_internal_subset_is_dropped_and_malformed_doctypes_refused() {
        let doc = parse(
            "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Strict//EN\" 'x.dtd' [ <!ENTITY e \"&#1;\"> ]><html/>",
            100,
            100,
        )
        .unwrap();
        assert_eq!(
            doc.doctype.as_deref(),
            Some("html PUBLIC \"-//W3C//DTD XHTML 1.0 Strict//EN\" 'x.dtd'")
        );
        assert!(doc.dropped_subset);
        let doc = parse("<!DOCTYPE html><html/>", 100, 100).unwrap();
        assert_eq!(doc.doctype.as_deref(), Some("html"));
        assert!(!doc.dropped_subset);
        let err = parse(
            "<!DOCTYPE html [<!ENTITY e 'x'>]><html>&e;</html>",
            100,
            100,
        )
        .unwrap_err();
        assert!(err.to_string().contains("internal subset"), "{err}");
        for bad in [
            "<!DOCTYPE html PUBLIC><html/>",
            "<!DOCTYPE html SYSTEM 'a' junk><html/>",
            "<!DOCTYPE h\"tml><html/>",
            "<!DOCTYPE html PUBLIC \"{}\" 'x'><html/>",
        ] {
            assert!(parse(bad, 100, 100).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn malformed_input_names_the_line() {
        let err = parse("<a>\n<b>\n</a>", 100, 100).unwrap_err();
        assert!(matches!(err, CollateError::Html { line: 3, .. }), "{err}");
        assert!(parse("<a>&nbsp;</a>", 100, 100).is_err());
        assert!(parse("<a/><b/>", 100, 100).is_err());
        assert!(parse("<a>", 100, 100).is_err());
        assert!(parse("<x:a/>", 100, 100).is_err());
        assert!(parse("", 100, 100).is_err());
        assert!(parse("<a><a><a/></a></a>", 100, 2).is_err());
    }
}
