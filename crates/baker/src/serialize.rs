//! Writing the baked document back out as XML.
//!
//! The output mirrors what cnx-easybake prints (`etree.tostring(doc,
//! method="xml")` after its "close every empty element" pass): empty elements
//! are written `<x></x>` except XHTML void elements (`<br/>`), so the result
//! also survives an HTML5 parser. Elements that easybake creates carry no
//! namespace; like libxml2 we write them unprefixed, so they inherit the
//! default namespace of where they land (in an XHTML book: XHTML). Original
//! `xmlns` declarations are kept where they were, and a declaration is added
//! only when a moved node's namespace is not in scope at its new place.
//! Output is UTF-8 (no XML declaration, which UTF-8 does not need).

use super::dom::{Atom, Document, Kind, NodeId, EMPTY, XHTML_NS, XML_NS};
use super::error::CollateError;

const VOID: &[&str] = &[
    "area", "base", "br", "col", "command", "embed", "hr", "img", "input", "keygen", "link",
    "meta", "param", "source", "track", "wbr",
];

/// Serialises the whole document, failing once the output passes `max_bytes`.
pub(crate) fn serialize(doc: &Document, max_bytes: usize) -> Result<String, CollateError> {
    let mut w = Writer {
        doc,
        out: String::with_capacity(doc.len() * 48),
        scope: Vec::new(),
        marks: Vec::new(),
        generated: Vec::new(),
        xml_prefix: doc.atoms.lookup("xml"),
        xml_ns: doc.atoms.lookup(XML_NS),
        max_bytes,
    };
    if let Some(dt) = &doc.doctype {
        w.out.push_str("<!DOCTYPE ");
        w.out.push_str(dt);
        w.out.push_str(">\n");
    }
    for &n in &doc.prolog {
        w.other(n);
        w.out.push('\n');
    }
    w.subtree(doc.root)?;
    for &n in &doc.epilog {
        w.out.push('\n');
        w.other(n);
    }
    w.out.push('\n');
    w.check()?;
    Ok(w.out)
}

/// A prefix: a document atom, or (with this bit set) a generated `nsN`.
type Pfx = u32;
const GENERATED: Pfx = 1 << 31;
/// "No prefix" in the stack of open element names.
const UNPREFIXED: Pfx = u32::MAX;

struct Writer<'a> {
    doc: &'a Document,
    out: String,
    /// In-scope bindings (prefix, uri atom); the empty atom is the default namespace.
    scope: Vec<(Pfx, Atom)>,
    marks: Vec<usize>,
    /// Names of generated prefixes (`ns0`, `ns1`, …).
    generated: Vec<String>,
    xml_prefix: Option<Atom>,
    xml_ns: Option<Atom>,
    max_bytes: usize,
}

impl Writer<'_> {
    fn check(&self) -> Result<(), CollateError> {
        if self.out.len() > self.max_bytes {
            return Err(CollateError::Limit {
                what: "output size in bytes",
                limit: self.max_bytes as u64,
            });
        }
        Ok(())
    }

    fn pfx_str(&self, p: Pfx) -> &str {
        if p & GENERATED != 0 && p != UNPREFIXED {
            self.generated
                .get((p & !GENERATED) as usize)
                .map(|s| s.as_str())
                .unwrap_or("")
        } else {
            self.doc.atoms.get(p)
        }
    }

    fn lookup(&self, prefix: Pfx) -> Option<Atom> {
        if Some(prefix) == self.xml_prefix {
            return self.xml_ns;
        }
        self.scope
            .iter()
            .rev()
            .find(|(p, _)| *p == prefix)
            .map(|&(_, u)| u)
    }

    /// A prefix currently bound to `uri` (not shadowed), if any.
    fn prefix_for(&self, uri: Atom, allow_default: bool) -> Option<Pfx> {
        if Some(uri) == self.xml_ns {
            if let Some(x) = self.xml_prefix {
                return Some(x);
            }
        }
        self.scope
            .iter()
            .rev()
            .find(|&&(p, u)| {
                u == uri && (allow_default || p != EMPTY) && self.lookup(p) == Some(uri)
            })
            .map(|&(p, _)| p)
    }

    fn fresh_prefix(&mut self) -> Pfx {
        loop {
            let name = format!("ns{}", self.generated.len());
            let taken = self
                .doc
                .atoms
                .lookup(&name)
                .is_some_and(|a| self.lookup(a).is_some());
            self.generated.push(name);
            let p = GENERATED | (self.generated.len() as u32 - 1);
            if !taken {
                return p;
            }
        }
    }

    /// Writes ` xmlns[:p]="uri"` and brings the binding into scope.
    fn declare(&mut self, prefix: Pfx, uri: Atom) {
        let doc = self.doc;
        if prefix == EMPTY {
            self.out.push_str(" xmlns=\"");
        } else {
            self.out.push_str(" xmlns:");
            let p = self.pfx_str(prefix).to_string();
            self.out.push_str(&p);
            self.out.push_str("=\"");
        }
        escape_attr(&mut self.out, doc.atoms.get(uri));
        self.out.push('"');
        self.scope.push((prefix, uri));
    }

    /// The prefix to write `uri` with, or `None` when a declaration is
    /// needed first (returned as the prefix to declare). Attributes cannot
    /// use the default namespace.
    fn choose(&mut self, uri: Atom, want: Atom, is_attr: bool) -> (Pfx, bool) {
        let usable = !(is_attr && want == EMPTY);
        if usable && self.lookup(want) == Some(uri) {
            return (want, false);
        }
        if let Some(p) = self.prefix_for(uri, !is_attr) {
            return (p, false);
        }
        let p = if want == EMPTY || self.lookup(want).is_some() {
            self.fresh_prefix()
        } else {
            want
        };
        (p, true)
    }

    /// Writes the start tag (without its closing `>`) and returns the
    /// prefix and local name for the end tag.
    fn start_tag(&mut self, id: NodeId) -> (Pfx, Atom) {
        let doc = self.doc;
        let node = doc.node(id);
        self.marks.push(self.scope.len());
        let decls = doc.ns_decls(id);
        for &(p, u) in decls {
            self.scope.push((p, u));
        }
        let (prefix, declare) = if node.ns == EMPTY {
            (UNPREFIXED, false)
        } else {
            self.choose(node.ns, node.prefix, false)
        };
        self.out.push('<');
        if prefix != UNPREFIXED && prefix != EMPTY {
            let p = self.pfx_str(prefix).to_string();
            self.out.push_str(&p);
            self.out.push(':');
        }
        self.out.push_str(doc.atoms.get(node.local));
        for &(p, u) in decls {
            if p == EMPTY {
                self.out.push_str(" xmlns=\"");
            } else {
                self.out.push_str(" xmlns:");
                self.out.push_str(doc.atoms.get(p));
                self.out.push_str("=\"");
            }
            escape_attr(&mut self.out, doc.atoms.get(u));
            self.out.push('"');
        }
        if declare {
            self.declare(prefix, node.ns);
        }
        for a in &node.attrs {
            if a.ns != EMPTY {
                let (p, declare) = self.choose(a.ns, a.prefix, true);
                if declare {
                    self.declare(p, a.ns);
                }
                self.out.push(' ');
                let ps = self.pfx_str(p).to_string();
                self.out.push_str(&ps);
                self.out.push(':');
            } else {
                self.out.push(' ');
            }
            self.out.push_str(doc.atoms.get(a.local));
            self.out.push_str("=\"");
            escape_attr(&mut self.out, &a.value);
            self.out.push('"');
        }
        (prefix, node.local)
    }

    fn other(&mut self, id: NodeId) {
        let node = self.doc.node(id);
        match node.kind {
            Kind::Comment => {
                self.out.push_str("<!--");
                self.out.push_str(&node.text);
                self.out.push_str("-->");
            }
            Kind::Pi => {
                self.out.push_str("<?");
                self.out.push_str(self.doc.atoms.get(node.local));
                if !node.text.is_empty() {
                    self.out.push(' ');
                    self.out.push_str(&node.text);
                }
                self.out.push_str("?>");
            }
            Kind::Element => {}
        }
    }

    /// Writes the subtree of `top` (without its tail), iteratively so that
    /// deep documents cannot overflow the stack.
    fn subtree(&mut self, top: NodeId) -> Result<(), CollateError> {
        let doc = self.doc;
        let mut names: Vec<(Pfx, Atom)> = Vec::new();
        let mut cur = top;
        loop {
            // enter `cur`
            let mut descended = false;
            if doc.is_element(cur) {
                let name = self.start_tag(cur);
                let node = doc.node(cur);
                if doc.has_children(cur) || !node.text.is_empty() {
                    self.out.push('>');
                    escape_text(&mut self.out, &node.text);
                    match doc.first_child(cur) {
                        Some(first) => {
                            names.push(name);
                            cur = first;
                            descended = true;
                        }
                        None => self.close(name),
                    }
                } else if matches!(doc.namespace(cur), XHTML_NS | "")
                    && VOID.contains(&doc.local_name(cur))
                {
                    // HTML's void elements also in a fragment without a namespace: a
                    // document published as `<div>…<img …/>…</div>` must not come back
                    // with `<img></img>`, which HTML parsers do not accept.
                    self.out.push_str("/>");
                    self.pop_scope();
                } else {
                    self.out.push('>');
                    self.close(name);
                }
            } else {
                self.other(cur);
            }
            if self.out.len() > self.max_bytes {
                self.check()?;
            }
            if descended {
                continue;
            }
            // leave `cur` (its start and end are written): tail, then move on
            loop {
                if cur == top {
                    return Ok(());
                }
                escape_text(&mut self.out, doc.tail(cur));
                if let Some(n) = doc.next(cur) {
                    cur = n;
                    break;
                }
                match doc.parent(cur) {
                    Some(p) => {
                        cur = p;
                        let name = names.pop().unwrap_or((UNPREFIXED, EMPTY));
                        self.close(name);
                    }
                    None => return Ok(()),
                }
            }
        }
    }

    fn close(&mut self, (prefix, local): (Pfx, Atom)) {
        self.out.push_str("</");
        if prefix != UNPREFIXED && prefix != EMPTY {
            let p = self.pfx_str(prefix).to_string();
            self.out.push_str(&p);
            self.out.push(':');
        }
        self.out.push_str(self.doc.atoms.get(local));
        self.out.push('>');
        self.pop_scope();
    }

    fn pop_scope(&mut self) {
        if let Some(m) = self.marks.pop() {
            self.scope.truncate(m);
        }
    }
}

fn escape_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            _ => out.push(c),
        }
    }
}

fn escape_attr(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::xml::parse;
    use super::*;

    fn round(s: &str) -> String {
        let doc = parse(s, 1000, 100).unwrap();
        serialize(&doc, 1 << 20).unwrap()
    }

    #[test]
    fn void_elements_stay_void_in_a_fragment_without_namespace() {
        assert_eq!(
            round("<div><img src=\"a.png\"/><br/><span/><x:img xmlns:x=\"urn:x\"/></div>"),
            "<div><img src=\"a.png\"/><br/><span></span><x:img xmlns:x=\"urn:x\"></x:img></div>\n"
        );
    }

    #[test]
    fn round_trips_namespaces_and_empty_elements() {
        let s = "<html xmlns=\"http://www.w3.org/1999/xhtml\"><body><br/><span/>a&amp;b<p xmlns:e=\"urn:e\" e:x=\"1\">t</p></body></html>";
        assert_eq!(
            round(s),
            "<html xmlns=\"http://www.w3.org/1999/xhtml\"><body><br/><span></span>a&amp;b<p xmlns:e=\"urn:e\" e:x=\"1\">t</p></body></html>\n"
        );
    }

    #[test]
    fn keeps_prolog_and_comments() {
        let s = "<!DOCTYPE html>\n<!-- c --><a><?pi x?><!--in--></a>";
        assert_eq!(
            round(s),
            "<!DOCTYPE html>\n<!-- c -->\n<a><?pi x?><!--in--></a>\n"
        );
    }

    #[test]
    fn declares_namespaces_missing_after_a_move() {
        let mut doc = parse("<a><b xmlns:e=\"urn:e\"><e:c/></b></a>", 100, 100).unwrap();
        let b = doc.first_child(doc.root).unwrap();
        let c = doc.first_child(b).unwrap();
        doc.append(doc.root, c).unwrap();
        let out = serialize(&doc, 1 << 20).unwrap();
        assert_eq!(
            out,
            "<a><b xmlns:e=\"urn:e\"></b><e:c xmlns:e=\"urn:e\"></e:c></a>\n"
        );
    }
}
