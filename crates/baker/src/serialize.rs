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

use super::dom::{Atom, Document, Kind, NodeId, EMPTY, NS_NONE, NS_XML, XHTML_NS};
use super::error::CollateError;

const VOID: &[&str] = &[
    "area", "base", "br", "col", "command", "embed", "hr", "img", "input", "keygen", "link",
    "meta", "param", "source", "track", "wbr",
];

/// Serialises the whole document, failing once the output passes `max_bytes`.
pub(crate) fn serialize(doc: &Document, max_bytes: usize) -> Result<String, CollateError> {
    let xml = doc.ns_decl(NS_XML);
    let mut w = Writer {
        doc,
        out: String::with_capacity(doc.len() * 48),
        scope: vec![(xml.prefix, xml.href)],
        marks: Vec::new(),
        generated: Vec::new(),
        attr_prefixes: Vec::new(),
        max_bytes,
        ok: true,
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
    if !w.ok {
        return Err(CollateError::Output(
            "the baked document would contain a character XML does not allow".into(),
        ));
    }
    Ok(w.out)
}

/// A prefix: a document atom, or (with this bit set) a generated `nsN`.
type Pfx = u32;
const GENERATED: Pfx = 1 << 31;
/// "No prefix" in the stack of open element names.
const UNPREFIXED: Pfx = u32::MAX;

/// The text of prefix `p`: a document atom or a generated name.
fn pfx_of<'a>(doc: &'a Document, generated: &'a [String], p: Pfx) -> &'a str {
    if p & GENERATED != 0 && p != UNPREFIXED {
        generated
            .get((p & !GENERATED) as usize)
            .map(|s| s.as_str())
            .unwrap_or("")
    } else {
        doc.atoms.get(p)
    }
}

struct Writer<'a> {
    doc: &'a Document,
    out: String,
    /// Bindings in scope in the output (prefix, uri atom); the empty atom
    /// is the default namespace.
    scope: Vec<(Pfx, Atom)>,
    marks: Vec<usize>,
    /// Names of generated prefixes (`ns0`, `ns1`, …).
    generated: Vec<String>,
    /// Prefixes chosen for the attributes of the element being written.
    attr_prefixes: Vec<Pfx>,
    max_bytes: usize,
    /// False once a character XML does not allow was met.
    ok: bool,
}

impl Writer<'_> {
    fn check(&self) -> Result<(), CollateError> {
        if self.out.len() > self.max_bytes {
            return Err(CollateError::limit(
                "output size in bytes",
                self.max_bytes as u64,
            ));
        }
        Ok(())
    }

    fn lookup(&self, prefix: Pfx) -> Option<Atom> {
        self.scope
            .iter()
            .rev()
            .find(|(p, _)| *p == prefix)
            .map(|&(_, u)| u)
    }

    /// A prefix currently bound to `uri` (not shadowed), if any.
    fn prefix_for(&self, uri: Atom, allow_default: bool) -> Option<Pfx> {
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

    /// The prefix to write a name in `uri` with: the one its declaration
    /// has, when that is bound to `uri` here (always, for the trees `ns.rs`
    /// maintains). Otherwise a binding is added to the element being
    /// written (`mark` is where its own start), so that the output is
    /// namespace-well-formed whatever happened to the tree.
    fn usable(&mut self, want: Pfx, uri: Atom, is_attr: bool, mark: usize) -> Pfx {
        if !(is_attr && want == EMPTY) && self.lookup(want) == Some(uri) {
            return want;
        }
        if let Some(p) = self.prefix_for(uri, !is_attr) {
            return p;
        }
        let declared_here = self.scope[mark..].iter().any(|&(p, _)| p == want);
        let p = if want != EMPTY && !declared_here {
            want
        } else {
            self.fresh_prefix()
        };
        self.scope.push((p, uri));
        p
    }

    fn write_decl(&mut self, prefix: Pfx, uri: Atom) {
        if prefix == EMPTY {
            self.out.push_str(" xmlns=\"");
        } else {
            self.out.push_str(" xmlns:");
            self.out.push_str(pfx_of(self.doc, &self.generated, prefix));
            self.out.push_str("=\"");
        }
        self.ok &= escape(&mut self.out, self.doc.atoms.get(uri), true);
        self.out.push('"');
    }

    fn write_prefixed(&mut self, prefix: Pfx, local: Atom) {
        if prefix != UNPREFIXED && prefix != EMPTY {
            self.out.push_str(pfx_of(self.doc, &self.generated, prefix));
            self.out.push(':');
        }
        self.out.push_str(self.doc.atoms.get(local));
    }

    /// Writes the start tag (without its closing `>`): the name, the
    /// element's own declarations (as libxml2 writes them), any binding
    /// the names still need, the attributes. Returns the prefix and local
    /// name for the end tag.
    fn start_tag(&mut self, id: NodeId) -> (Pfx, Atom) {
        let doc = self.doc;
        let node = doc.node(id);
        let mark = self.scope.len();
        self.marks.push(mark);
        for &d in doc.nsdef(id) {
            let decl = doc.ns_decl(d);
            self.scope.push((decl.prefix, decl.href));
        }
        let prefix = if node.ns_ref == NS_NONE {
            UNPREFIXED
        } else {
            let want = doc.ns_decl(node.ns_ref).prefix;
            self.usable(want, node.ns, false, mark)
        };
        let mut attr_prefixes = std::mem::take(&mut self.attr_prefixes);
        attr_prefixes.clear();
        for a in &node.attrs {
            let p = if a.ns_ref == NS_NONE {
                UNPREFIXED
            } else {
                let want = doc.ns_decl(a.ns_ref).prefix;
                self.usable(want, a.ns, true, mark)
            };
            attr_prefixes.push(p);
        }
        self.out.push('<');
        self.write_prefixed(prefix, node.local);
        for i in mark..self.scope.len() {
            let (p, u) = self.scope[i];
            self.write_decl(p, u);
        }
        for (a, &p) in node.attrs.iter().zip(&attr_prefixes) {
            self.out.push(' ');
            self.write_prefixed(p, a.local);
            self.out.push_str("=\"");
            self.ok &= escape(&mut self.out, &a.value, true);
            self.out.push('"');
        }
        self.attr_prefixes = attr_prefixes;
        (prefix, node.local)
    }

    fn other(&mut self, id: NodeId) {
        let node = self.doc.node(id);
        let text = &self.doc.cold(id).text;
        match node.kind {
            Kind::Comment => {
                self.out.push_str("<!--");
                self.out.push_str(text);
                self.out.push_str("-->");
            }
            Kind::Pi => {
                self.out.push_str("<?");
                self.out.push_str(self.doc.atoms.get(node.local));
                if !text.is_empty() {
                    self.out.push(' ');
                    self.out.push_str(text);
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
                let text = doc.text(cur);
                if doc.has_children(cur) || !text.is_empty() {
                    self.out.push('>');
                    self.ok &= escape(&mut self.out, text, false);
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
                self.ok &= escape(&mut self.out, doc.tail(cur), false);
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
        self.write_prefixed(prefix, local);
        self.out.push('>');
        self.pop_scope();
    }

    fn pop_scope(&mut self) {
        if let Some(m) = self.marks.pop() {
            self.scope.truncate(m);
        }
    }
}

/// Writes `s` as XML text (`attr`: as an attribute value), escaping what
/// must be. Returns `false` when `s` holds a character XML does not allow,
/// which the parser and the recipe checks never let into the tree: the
/// output is then refused rather than written.
fn escape(out: &mut String, s: &str, attr: bool) -> bool {
    let b = s.as_bytes();
    let mut ok = true;
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let rep = match c {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'\r' => "&#13;",
            b'"' if attr => "&quot;",
            b'\n' if attr => "&#10;",
            b'\t' if attr => "&#9;",
            b'\n' | b'\t' => continue,
            0..=0x1F => {
                ok = false;
                continue;
            }
            0xEF if b.get(i + 1) == Some(&0xBF) && matches!(b.get(i + 2), Some(0xBE | 0xBF)) => {
                ok = false;
                continue;
            }
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(rep);
        start = i + 1;
    }
    out.push_str(&s[start..]);
    ok
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
