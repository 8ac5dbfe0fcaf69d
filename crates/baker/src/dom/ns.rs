//! Namespace declarations the way libxml2 keeps them, and lxml's repairs
//! when content moves.
//!
//! In libxml2 every element and attribute points at one declaration
//! (`xmlNs`: a prefix and a URI) owned by some element's `nsDef` list, and
//! the serialiser writes exactly those declarations and prefixes. What
//! cnx-easybake writes on moved and copied content therefore depends on how
//! lxml rebinds those pointers when a subtree moves (`moveNodeToDocument`):
//! in pre-order, each element drops the declarations whose URI is already
//! declared above it at the destination, and everything that used a dropped
//! declaration uses the one found instead — possibly under another prefix;
//! a pointer to a declaration left behind (on a former ancestor) is
//! resolved by URI from the top of the moved subtree, or declared there.
//! A deep copy (`xmlStaticCopyNode`) declares at the copy's root what its
//! nodes used from outside it. This module reproduces those rules with the
//! same search orders, so the baked output carries the same declarations
//! as the reference's; the serialiser only adds one where a prefix would
//! otherwise be unbound (which the rules here never leave).

use super::{Atom, Document, NodeId, EMPTY, NIL};

/// Index of the predeclared `xml` prefix in every document's table.
pub(crate) const NS_XML: u32 = 0;
/// "No namespace" for an element or attribute.
pub(crate) const NS_NONE: u32 = NIL;

/// One namespace declaration (libxml2's `xmlNs`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct NsDecl {
    /// [`EMPTY`] for the default namespace.
    pub(crate) prefix: Atom,
    pub(crate) href: Atom,
}

/// lxml's `_DEFAULT_NAMESPACE_PREFIXES`: the prefix a declaration built for
/// an unprefixed name gets.
const DEFAULT_PREFIXES: &[(&str, &str)] = &[
    ("http://www.w3.org/XML/1998/namespace", "xml"),
    ("http://www.w3.org/1999/xhtml", "html"),
    ("http://www.w3.org/1999/XSL/Transform", "xsl"),
    ("http://www.w3.org/1999/02/22-rdf-syntax-ns#", "rdf"),
    ("http://schemas.xmlsoap.org/wsdl/", "wsdl"),
    ("http://www.w3.org/2001/XMLSchema", "xs"),
    ("http://www.w3.org/2001/XMLSchema-instance", "xsi"),
    ("http://purl.org/dc/elements/1.1/", "dc"),
    ("http://codespeak.net/lxml/objectify/pytype", "py"),
];

impl Document {
    pub(crate) fn ns_decl(&self, d: u32) -> NsDecl {
        self.ns_table.get(d as usize).copied().unwrap_or(NsDecl {
            prefix: EMPTY,
            href: EMPTY,
        })
    }

    /// A new declaration, not yet attached to an element.
    pub(crate) fn new_ns(&mut self, prefix: Atom, href: Atom) -> u32 {
        self.ns_table.push(NsDecl { prefix, href });
        (self.ns_table.len() - 1) as u32
    }

    /// The declarations written on `id`.
    pub(crate) fn nsdef(&self, id: NodeId) -> &[u32] {
        self.cold(id).nsdef.as_deref().unwrap_or(&[])
    }

    /// Whether the document is in the state where rebinding is a no-op
    /// (see [`Document::ns_simple`]): the root's declarations have distinct
    /// URIs, no other element declares anything, every name uses one of the
    /// root's declarations (or none, or `xml:`).
    pub(crate) fn compute_ns_simple(&self) -> bool {
        let root_decls = self.nsdef(self.root);
        let hrefs: Vec<Atom> = root_decls.iter().map(|&d| self.ns_decl(d).href).collect();
        if (1..hrefs.len()).any(|i| hrefs[..i].contains(&hrefs[i])) {
            return false;
        }
        let bound = |d: u32| d == NS_NONE || d == NS_XML || root_decls.contains(&d);
        (0..self.len()).all(|i| {
            let id = NodeId(i as u32);
            let n = self.node(id);
            (id == self.root || self.cold(id).nsdef.is_none())
                && bound(n.ns_ref)
                && n.attrs.iter().all(|a| bound(a.ns_ref))
        })
    }

    /// Declares `(prefix, href)` on `id` (libxml2's `xmlNewNs`, which
    /// appends to the element's list).
    fn declare_on(&mut self, id: NodeId, prefix: Atom, href: Atom) -> u32 {
        if id != self.root {
            self.ns_simple = false;
        }
        let d = self.new_ns(prefix, href);
        let n = self.cold_mut(id);
        let mut list: Vec<u32> = n.nsdef.take().map(Vec::from).unwrap_or_default();
        list.push(d);
        n.nsdef = Some(list.into_boxed_slice());
        d
    }

    fn is_xml_prefix(&self, prefix: Atom) -> bool {
        prefix != EMPTY && self.ns_decl(NS_XML).prefix == prefix
    }

    /// `xmlSearchNs`: the declaration `prefix` resolves to at `node` — its
    /// own declarations first, then for each ancestor its declarations and
    /// the one its name uses.
    pub(crate) fn search_ns(&self, node: NodeId, prefix: Atom) -> Option<u32> {
        if self.is_xml_prefix(prefix) {
            return Some(NS_XML);
        }
        let mut cur = Some(node);
        while let Some(c) = cur {
            if self.is_element(c) {
                if let Some(&d) = self
                    .nsdef(c)
                    .iter()
                    .find(|&&d| self.ns_decl(d).prefix == prefix)
                {
                    return Some(d);
                }
                let used = self.node(c).ns_ref;
                if c != node && used != NS_NONE && self.ns_decl(used).prefix == prefix {
                    return Some(used);
                }
            }
            cur = self.parent(c);
        }
        None
    }

    /// `xmlNsInScope`: whether no element from `orig` up to (not including)
    /// `ancestor` redeclares `prefix`.
    fn ns_in_scope(&self, orig: NodeId, ancestor: NodeId, prefix: Atom) -> bool {
        let mut cur = Some(orig);
        while let Some(c) = cur {
            if c == ancestor {
                return true;
            }
            if self
                .nsdef(c)
                .iter()
                .any(|&d| self.ns_decl(d).prefix == prefix)
            {
                return false;
            }
            cur = self.parent(c);
        }
        false
    }

    /// `xmlSearchNsByHref` for an element: the nearest declaration of
    /// `href` in scope at `node` whose prefix is not shadowed.
    fn search_ns_by_href(&self, node: NodeId, href: Atom) -> Option<u32> {
        if href == self.ns_decl(NS_XML).href {
            return Some(NS_XML);
        }
        let mut cur = Some(node);
        while let Some(c) = cur {
            for &d in self.nsdef(c) {
                let decl = self.ns_decl(d);
                if decl.href == href && self.ns_in_scope(node, c, decl.prefix) {
                    return Some(d);
                }
            }
            let used = self.node(c).ns_ref;
            if c != node && used != NS_NONE {
                let decl = self.ns_decl(used);
                if decl.href == href && self.ns_in_scope(node, c, decl.prefix) {
                    return Some(used);
                }
            }
            cur = self.parent(c);
        }
        None
    }

    /// lxml's `_searchNsByHref`: like [`Self::search_ns_by_href`], but for
    /// an attribute a prefixed declaration is preferred to the default one.
    fn lxml_search_ns_by_href(&self, node: NodeId, href: Atom, is_attr: bool) -> Option<u32> {
        if href == self.ns_decl(NS_XML).href {
            return self.search_ns_by_href(node, href);
        }
        let mut default = None;
        let mut cur = Some(node);
        while let Some(c) = cur {
            let used = self.node(c).ns_ref;
            let own = self.nsdef(c).iter().copied();
            let from_name = (c != node && used != NS_NONE).then_some(used);
            for d in own.chain(from_name) {
                let decl = self.ns_decl(d);
                if decl.href != href {
                    continue;
                }
                if decl.prefix == EMPTY && is_attr {
                    default.get_or_insert(d);
                } else if self.search_ns(node, decl.prefix) == Some(d) {
                    return Some(d);
                }
            }
            cur = self.parent(c);
        }
        default.filter(|&d| self.search_ns(node, EMPTY) == Some(d))
    }

    /// lxml's `buildNewPrefix`: `ns0`, `ns1`, … per document.
    fn build_new_prefix(&mut self) -> Atom {
        let name = format!("ns{}", self.ns_counter);
        self.ns_counter += 1;
        self.atoms.intern(&name)
    }

    /// lxml's `_findOrBuildNodeNs`: a declaration of `href` usable at
    /// `node`, found by URI or else declared on `node` (with `prefix`, or
    /// lxml's default prefix for the URI, or a new `nsN`).
    pub(crate) fn find_or_build_ns(
        &mut self,
        node: NodeId,
        href: Atom,
        prefix: Atom,
        is_attr: bool,
    ) -> u32 {
        if let Some(d) = self.lxml_search_ns_by_href(node, href, is_attr) {
            if !(is_attr && self.ns_decl(d).prefix == EMPTY) {
                return d;
            }
        }
        let mut p = prefix;
        if p == EMPTY {
            let uri = self.atoms.get(href);
            p = match DEFAULT_PREFIXES.iter().find(|(u, _)| *u == uri) {
                Some((_, name)) => self.atoms.intern(name),
                None => self.build_new_prefix(),
            };
        }
        while self.search_ns(node, p).is_some() {
            p = self.build_new_prefix();
        }
        self.declare_on(node, p, href)
    }

    /// lxml's `moveNodeToDocument`, run after `top` was linked at its new
    /// place (or unlinked): drops declarations the new ancestors make
    /// already and rebinds every name of the subtree.
    pub(crate) fn reconcile(&mut self, top: NodeId) {
        // Only the root declares namespaces, with distinct URIs, and every
        // name uses one of them: lxml would find each name's declaration, by
        // its URI, on the root again (a copy's or a removed subtree's own
        // declarations of those URIs are dropped again when it lands in the
        // tree), so nothing changes.
        if self.ns_simple || !self.is_element(top) {
            return;
        }
        // (old declaration, new one) pairs, as lxml's `_nscache`
        let mut cache = std::mem::take(&mut self.ns_scratch);
        cache.clear();
        let mut cur = Some(top);
        while let Some(el) = cur {
            if self.is_element(el) {
                self.strip_redundant(el, &mut cache);
                let used = self.node(el).ns_ref;
                if used != NS_NONE {
                    let new = self.fix_ns(top, used, false, &mut cache);
                    self.node_mut(el).ns_ref = new;
                }
                for i in 0..self.node(el).attrs.len() {
                    let used = self.node(el).attrs[i].ns_ref;
                    if used != NS_NONE && used != NS_XML {
                        let new = self.fix_ns(top, used, true, &mut cache);
                        self.node_mut(el).attrs[i].ns_ref = new;
                    }
                }
            }
            cur = self.next_in(el, top);
        }
        self.ns_scratch = cache;
    }

    /// lxml's `_stripRedundantNamespaceDeclarations`.
    fn strip_redundant(&mut self, el: NodeId, cache: &mut Vec<(u32, u32)>) {
        let Some(list) = self.cold(el).nsdef.as_deref() else {
            return;
        };
        let list = list.to_vec();
        let parent = self.parent(el);
        let mut kept = Vec::with_capacity(list.len());
        for d in list {
            let found = parent.and_then(|p| self.search_ns_by_href(p, self.ns_decl(d).href));
            match found {
                Some(f) => cache.push((d, f)),
                None => {
                    cache.push((d, d));
                    kept.push(d);
                }
            }
        }
        self.cold_mut(el).nsdef = (!kept.is_empty()).then(|| kept.into_boxed_slice());
    }

    /// lxml's `_fixCNs`: the declaration a name using `old` uses after the move.
    fn fix_ns(&mut self, top: NodeId, old: u32, is_attr: bool, cache: &mut Vec<(u32, u32)>) -> u32 {
        let old_decl = self.ns_decl(old);
        let prefixed_attr = is_attr && old_decl.prefix != EMPTY;
        for &(o, n) in cache.iter() {
            if o == old && !(prefixed_attr && self.ns_decl(n).prefix == EMPTY) {
                return n;
            }
        }
        let new = self.find_or_build_ns(top, old_decl.href, old_decl.prefix, is_attr);
        cache.push((old, new));
        new
    }

    /// What `xmlStaticCopyNode` does for the names of `copy`, a new copy of
    /// `src` already linked under its copied parent (if any) in a subtree
    /// whose root is `root`: declarations are copied, names are bound by
    /// prefix inside the copy, or to a declaration added on the root.
    pub(crate) fn copy_ns(&mut self, src: NodeId, copy: NodeId, root: NodeId) {
        if let Some(list) = self.cold(src).nsdef.as_deref() {
            let decls: Vec<NsDecl> = list.iter().map(|&d| self.ns_decl(d)).collect();
            let copied: Vec<u32> = decls
                .into_iter()
                .map(|decl| self.new_ns(decl.prefix, decl.href))
                .collect();
            self.cold_mut(copy).nsdef = Some(copied.into_boxed_slice());
        }
        let used = self.node(src).ns_ref;
        if used != NS_NONE {
            let decl = self.ns_decl(used);
            let new = match self.search_ns(copy, decl.prefix) {
                Some(d) => d,
                None => match self.search_ns(src, decl.prefix) {
                    Some(o) => {
                        let o = self.ns_decl(o);
                        self.declare_on(root, o.prefix, o.href)
                    }
                    None => self.reconciled_ns(copy, decl),
                },
            };
            self.node_mut(copy).ns_ref = new;
        }
        for i in 0..self.node(src).attrs.len() {
            let used = self.node(src).attrs[i].ns_ref;
            if used == NS_NONE || used == NS_XML {
                continue;
            }
            let decl = self.ns_decl(used);
            let new = match self.search_ns(copy, decl.prefix) {
                Some(d) if self.ns_decl(d).href == decl.href => d,
                Some(_) => self.reconciled_ns(copy, decl),
                None => match self.search_ns(src, decl.prefix) {
                    Some(o) => {
                        let o = self.ns_decl(o);
                        self.declare_on(root, o.prefix, o.href)
                    }
                    None => {
                        // a dangling name (xmlCopyProp leaves it without namespace)
                        let a = &mut self.node_mut(copy).attrs[i];
                        a.ns_ref = NS_NONE;
                        a.ns = EMPTY;
                        continue;
                    }
                },
            };
            self.node_mut(copy).attrs[i].ns_ref = new;
        }
    }

    /// `xmlNewReconciledNs`: a declaration of `decl`'s URI in scope at
    /// `node`, or a new one on `node` under its prefix (`default` for
    /// none) numbered until free.
    fn reconciled_ns(&mut self, node: NodeId, decl: NsDecl) -> u32 {
        if let Some(d) = self.search_ns_by_href(node, decl.href) {
            return d;
        }
        let base = if decl.prefix == EMPTY {
            "default".to_string()
        } else {
            self.atoms.get(decl.prefix).chars().take(20).collect()
        };
        let mut p = self.atoms.intern(&base);
        let mut counter = 1;
        while self.search_ns(node, p).is_some() {
            p = self.atoms.intern(&format!("{base}{counter}"));
            counter += 1;
        }
        self.declare_on(node, p, decl.href)
    }

    /// Renames `id` into namespace `href` (lxml's `tag` setter): the name
    /// uses a declaration of `href` in scope, or one declared on `id`.
    pub(crate) fn bind_element_ns(&mut self, id: NodeId, href: Atom) {
        let d = if href == EMPTY {
            NS_NONE
        } else {
            self.find_or_build_ns(id, href, EMPTY, false)
        };
        self.node_mut(id).ns_ref = d;
    }
}

#[cfg(test)]
mod tests {
    //! Each expected output is what lxml 4.9.4 (the reference's) writes
    //! after the same operation.
    use super::super::Document;
    use crate::serialize::serialize;
    use crate::xml::parse;

    fn doc(s: &str) -> Document {
        parse(s, 1000, 100).unwrap()
    }
    fn out(d: &Document) -> String {
        serialize(d, 1 << 20).unwrap()
    }
    /// The `i`-th child of the `j`-th child of the root, and so on.
    fn at(d: &Document, path: &[usize]) -> super::NodeId {
        path.iter().fold(d.root, |n, &i| d.nth_child(n, i).unwrap())
    }

    #[test]
    fn a_moved_declaration_known_at_the_destination_is_dropped_and_rebound() {
        let mut d = doc(
            r#"<r xmlns="X" xmlns:a="H"><d/><s xmlns:b="H"><b:e b:at="1"><b:f/></b:e></s></r>"#,
        );
        let (dst, e) = (at(&d, &[0]), at(&d, &[1, 0]));
        d.append(dst, e).unwrap();
        assert_eq!(
            out(&d),
            "<r xmlns=\"X\" xmlns:a=\"H\"><d><a:e a:at=\"1\"><a:f></a:f></a:e></d><s xmlns:b=\"H\"></s></r>\n"
        );
    }

    #[test]
    fn a_declaration_left_behind_is_made_on_the_moved_element() {
        let mut d = doc(r#"<r xmlns="X"><d xmlns:a="H2"/><s xmlns:b="H"><b:e b:at="1"/></s></r>"#);
        let (dst, e) = (at(&d, &[0]), at(&d, &[1, 0]));
        d.append(dst, e).unwrap();
        assert_eq!(
            out(&d),
            "<r xmlns=\"X\"><d xmlns:a=\"H2\"><b:e xmlns:b=\"H\" b:at=\"1\"></b:e></d><s xmlns:b=\"H\"></s></r>\n"
        );
    }

    #[test]
    fn a_copy_declares_what_it_uses_then_loses_it_where_it_lands() {
        let mut d = doc(
            r#"<r xmlns="X" xmlns:a="H"><d/><s xmlns:b="H"><b:e b:at="1"><b:f/></b:e></s></r>"#,
        );
        let (dst, e) = (at(&d, &[0]), at(&d, &[1, 0]));
        let c = d.deep_copy(e, "").unwrap();
        let decls: Vec<_> = d.nsdef(c).iter().map(|&x| d.ns_decl(x)).collect();
        assert_eq!(decls.len(), 1);
        assert_eq!(d.atoms.get(decls[0].prefix), "b");
        d.append(dst, c).unwrap();
        assert_eq!(
            out(&d),
            "<r xmlns=\"X\" xmlns:a=\"H\"><d><a:e a:at=\"1\"><a:f></a:f></a:e></d><s xmlns:b=\"H\"><b:e b:at=\"1\"><b:f></b:f></b:e></s></r>\n"
        );
    }

    #[test]
    fn a_descendant_redeclaring_a_uri_in_scope_is_rebound_to_the_nearer_prefix() {
        let mut d = doc(r#"<r xmlns="X"><d/><s xmlns:p="H"><p:e><q:f xmlns:q="H"/></p:e></s></r>"#);
        let (dst, e) = (at(&d, &[0]), at(&d, &[1, 0]));
        d.append(dst, e).unwrap();
        assert_eq!(
            out(&d),
            "<r xmlns=\"X\"><d><p:e xmlns:p=\"H\"><p:f></p:f></p:e></d><s xmlns:p=\"H\"></s></r>\n"
        );
    }

    #[test]
    fn a_removed_element_declares_its_default_namespace_until_it_is_back() {
        let mut d = doc(r#"<r xmlns="X"><d><p>t</p></d></r>"#);
        // the full algorithm (the document would take the shortcut otherwise)
        d.ns_simple = false;
        let (dst, p) = (at(&d, &[0]), at(&d, &[0, 0]));
        d.remove(p);
        let decls: Vec<_> = d.nsdef(p).iter().map(|&x| d.ns_decl(x)).collect();
        assert_eq!(d.atoms.get(decls[0].prefix), "ns0");
        d.append(dst, p).unwrap();
        assert_eq!(out(&d), "<r xmlns=\"X\"><d><p>t</p></d></r>\n");
    }

    #[test]
    fn a_prefixed_attribute_never_takes_the_default_namespace() {
        let mut d = doc(r#"<r xmlns="H"><d/><s xmlns:b="H"><b:e b:at="1"/></s></r>"#);
        let (dst, e) = (at(&d, &[0]), at(&d, &[1, 0]));
        d.append(dst, e).unwrap();
        assert_eq!(
            out(&d),
            "<r xmlns=\"H\"><d><e xmlns:b=\"H\" b:at=\"1\"></e></d><s xmlns:b=\"H\"></s></r>\n"
        );
    }

    #[test]
    fn the_uri_search_sees_the_names_of_ancestors() {
        let mut d = doc(
            r#"<r xmlns:p="H"><x xmlns:q="H"><p:y><d/></p:y></x><s xmlns:z="H"><z:e/></s></r>"#,
        );
        let (dst, e) = (at(&d, &[0, 0, 0]), at(&d, &[1, 0]));
        d.append(dst, e).unwrap();
        assert_eq!(
            out(&d),
            "<r xmlns:p=\"H\"><x xmlns:q=\"H\"><p:y><d><p:e></p:e></d></p:y></x><s xmlns:z=\"H\"></s></r>\n"
        );
    }

    #[test]
    fn skipping_the_rebinding_when_only_the_root_declares_changes_nothing() {
        let source = r#"<r xmlns="X" xmlns:m="M"><a id="1"><m:b m:c="1"/>t</a><d/><e/></r>"#;
        let run = |simple: bool| {
            let mut d = doc(source);
            assert!(d.ns_simple, "only the root declares here");
            d.ns_simple = simple;
            let (a, dd, e) = (at(&d, &[0]), at(&d, &[1]), at(&d, &[2]));
            let c = d.deep_copy(a, "_copy").unwrap();
            d.append(e, c).unwrap();
            let b = d.first_child(a).unwrap();
            d.remove(b);
            d.append(dd, b).unwrap();
            d.append(dd, a).unwrap();
            d.rename(e, "M", "f");
            let c2 = d.deep_copy(dd, "_2").unwrap();
            d.append(e, c2).unwrap();
            out(&d)
        };
        assert_eq!(run(true), run(false));
    }

    #[test]
    fn renaming_into_a_namespace_binds_like_lxml() {
        let mut d = doc(r#"<r xmlns="X"><d/></r>"#);
        let e = at(&d, &[0]);
        d.rename(e, "H", "span");
        assert_eq!(
            out(&d),
            "<r xmlns=\"X\"><ns0:span xmlns:ns0=\"H\"></ns0:span></r>\n"
        );
        d.rename(e, "X", "span");
        assert_eq!(
            out(&d),
            "<r xmlns=\"X\"><span xmlns:ns0=\"H\"></span></r>\n"
        );
    }
}
