//! The document tree the baker works on: a compact arena in lxml's model.
//!
//! cnx-easybake manipulates lxml elements, whose text lives in two places:
//! `text` (before the first child) and `tail` (after the element, inside its
//! parent). Its behaviour — which text moves along with a node, where a string
//! is appended — follows from that model, so the arena keeps it instead of DOM
//! text nodes; emulating it on DOM text nodes would be a source of endless
//! off-by-one differences.
//!
//! Nodes live in one `Vec` and link to each other by index (parent, first and
//! last child, previous and next sibling), so moving a node is O(1) and the
//! whole tree is freed at once. Detached nodes (the wrappers easybake puts in a
//! "trash" bucket) simply stay unreachable in the arena until the bake ends.
//! Names are interned per document so comparing them is cheap.

use super::budget::Budget;
use super::error::CollateError;

mod edit;
mod ns;

pub(crate) use ns::{NsDecl, NS_NONE, NS_XML};

pub(crate) use crate::atom::{Atom, Interner, ATOM_CLASS, ATOM_ID, EMPTY};

const NIL: u32 = u32::MAX;

/// Index of a node in its [`Document`].
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub(crate) struct NodeId(u32);

impl NodeId {
    /// Where a document's root element always is.
    pub(crate) const ROOT: NodeId = NodeId(0);

    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

fn opt(raw: u32) -> Option<NodeId> {
    (raw != NIL).then_some(NodeId(raw))
}

/// What a node is. Comments and processing instructions are children like
/// elements (as in lxml) and carry a tail, but selectors never see them.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Element,
    Comment,
    Pi,
}

/// One attribute.
#[derive(Clone, Debug)]
pub(crate) struct Attr {
    /// Namespace URI (matching compares this).
    pub(crate) ns: Atom,
    pub(crate) local: Atom,
    /// The declaration the name uses (its prefix is written), or [`NS_NONE`].
    pub(crate) ns_ref: u32,
    pub(crate) value: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    parent: u32,
    first_child: u32,
    last_child: u32,
    prev: u32,
    next: u32,
    pub(crate) kind: Kind,
    /// Namespace URI (elements; matching compares this); target name for
    /// processing instructions.
    pub(crate) ns: Atom,
    pub(crate) local: Atom,
    /// The declaration the element's name uses, or [`NS_NONE`] (see `ns.rs`).
    pub(crate) ns_ref: u32,
    pub(crate) attrs: Vec<Attr>,
    /// Bumped whenever this node's subtree (or its tail) changes; sort keys
    /// cached against it stay valid while it is unchanged.
    version: u32,
}

/// What a node holds that the walk of a pass never reads, kept apart from
/// [`Node`] so that the walk's nodes stay within a cache line each: every
/// pass visits every element, and its cost is mostly memory traffic.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cold {
    /// Declarations made on this element (indices into the document's
    /// table), in order; written as its `xmlns` attributes.
    pub(crate) nsdef: Option<Box<[u32]>>,
    /// Element text before the first child; comment text; PI data.
    pub(crate) text: String,
    /// Text after this node, inside its parent.
    pub(crate) tail: String,
}

/// The whole document: the root element plus what surrounds it.
#[derive(Debug)]
pub(crate) struct Document {
    nodes: Vec<Node>,
    /// The [`Cold`] part of each node, by the same index.
    cold: Vec<Cold>,
    pub(crate) atoms: Interner,
    pub(crate) root: NodeId,
    /// `<!DOCTYPE …>` content as written back: the name and external id.
    pub(crate) doctype: Option<String>,
    /// Whether the DOCTYPE had an internal subset, which was dropped.
    pub(crate) dropped_subset: bool,
    /// Comments and processing instructions before / after the root element.
    pub(crate) prolog: Vec<NodeId>,
    pub(crate) epilog: Vec<NodeId>,
    /// What the bake may still allocate (nodes, text) and for how long.
    pub(crate) budget: Budget,
    /// Every namespace declaration ever made; [`NS_XML`] is the `xml` prefix.
    ns_table: Vec<NsDecl>,
    /// Prefixes `nsN` built so far (lxml numbers them per document).
    ns_counter: u32,
    /// Reused by each `reconcile`.
    ns_scratch: Vec<(u32, u32)>,
    /// True while only the root element declares namespaces (with distinct
    /// URIs) and every name uses one of those: then lxml's rebinding of
    /// moved and copied content changes nothing, and is skipped (see
    /// `ns.rs`). Most books are like that.
    pub(crate) ns_simple: bool,
    /// Atoms of the names the baker itself looks up or creates.
    pub(crate) known: Known,
}

/// Atoms of names the baker uses on every element or often, interned once
/// per document so that using them is an integer compare.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Known {
    pub(crate) xml_ns: Atom,
    pub(crate) xhtml_ns: Atom,
    pub(crate) lang: Atom,
    pub(crate) meta: Atom,
    pub(crate) http_equiv: Atom,
    pub(crate) content: Atom,
    pub(crate) div: Atom,
    pub(crate) span: Atom,
    pub(crate) a: Atom,
    pub(crate) area: Atom,
    pub(crate) link: Atom,
    pub(crate) href: Atom,
}

/// Namespace of XHTML, the vocabulary easybake's documents are written in.
pub(crate) const XHTML_NS: &str = "http://www.w3.org/1999/xhtml";
/// Namespace of `xml:` attributes such as `xml:lang`.
pub(crate) const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

impl Document {
    /// An empty document whose names extend `atoms` (a recipe's).
    pub(crate) fn new(max_nodes: usize, atoms: Interner) -> Self {
        let mut doc = Document {
            nodes: Vec::new(),
            cold: Vec::new(),
            atoms,
            root: NodeId(0),
            doctype: None,
            dropped_subset: false,
            prolog: Vec::new(),
            epilog: Vec::new(),
            budget: Budget::nodes_only(max_nodes),
            ns_table: Vec::new(),
            ns_counter: 0,
            ns_scratch: Vec::new(),
            ns_simple: false,
            known: Known::default(),
        };
        let xml = doc.atoms.intern("xml");
        let xml_ns = doc.atoms.intern(XML_NS);
        doc.new_ns(xml, xml_ns);
        doc.known = Known {
            xml_ns,
            xhtml_ns: doc.atoms.intern(XHTML_NS),
            lang: doc.atoms.intern("lang"),
            meta: doc.atoms.intern("meta"),
            http_equiv: doc.atoms.intern("http-equiv"),
            content: doc.atoms.intern("content"),
            div: doc.atoms.intern("div"),
            span: doc.atoms.intern("span"),
            a: doc.atoms.intern("a"),
            area: doc.atoms.intern("area"),
            link: doc.atoms.intern("link"),
            href: doc.atoms.intern("href"),
        };
        // Placeholder root so that `root` is always valid; the parser replaces it.
        doc.nodes.push(Node::blank(Kind::Element));
        doc.cold.push(Cold::default());
        doc
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.index()]
    }

    pub(crate) fn cold(&self, id: NodeId) -> &Cold {
        &self.cold[id.index()]
    }

    fn cold_mut(&mut self, id: NodeId) -> &mut Cold {
        &mut self.cold[id.index()]
    }

    fn alloc(&mut self, node: Node, cold: Cold) -> Result<NodeId, CollateError> {
        self.budget.node(self.nodes.len())?;
        self.nodes.push(node);
        self.cold.push(cold);
        Ok(NodeId((self.nodes.len() - 1) as u32))
    }

    /// A new, detached element.
    pub(crate) fn new_element(&mut self, ns: Atom, local: Atom) -> Result<NodeId, CollateError> {
        let mut n = Node::blank(Kind::Element);
        n.ns = ns;
        n.local = local;
        self.alloc(n, Cold::default())
    }

    /// A new, detached comment or processing instruction.
    pub(crate) fn new_other(
        &mut self,
        kind: Kind,
        target: Atom,
        text: String,
    ) -> Result<NodeId, CollateError> {
        let mut n = Node::blank(kind);
        n.local = target;
        self.alloc(
            n,
            Cold {
                text,
                ..Cold::default()
            },
        )
    }

    // ----- navigation -------------------------------------------------

    pub(crate) fn parent(&self, id: NodeId) -> Option<NodeId> {
        opt(self.node(id).parent)
    }
    pub(crate) fn first_child(&self, id: NodeId) -> Option<NodeId> {
        opt(self.node(id).first_child)
    }
    pub(crate) fn last_child(&self, id: NodeId) -> Option<NodeId> {
        opt(self.node(id).last_child)
    }
    pub(crate) fn prev(&self, id: NodeId) -> Option<NodeId> {
        opt(self.node(id).prev)
    }
    pub(crate) fn next(&self, id: NodeId) -> Option<NodeId> {
        opt(self.node(id).next)
    }
    pub(crate) fn is_element(&self, id: NodeId) -> bool {
        self.node(id).kind == Kind::Element
    }

    /// All children (elements, comments, PIs) in order.
    pub(crate) fn children(&self, id: NodeId) -> Children<'_> {
        Children {
            doc: self,
            next: self.first_child(id),
        }
    }

    pub(crate) fn element_children(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.children(id).filter(move |&c| self.is_element(c))
    }

    pub(crate) fn has_children(&self, id: NodeId) -> bool {
        self.node(id).first_child != NIL
    }

    /// The `n`-th child (all kinds), like lxml's `element[n]`.
    pub(crate) fn nth_child(&self, id: NodeId, n: usize) -> Option<NodeId> {
        self.children(id).nth(n)
    }

    pub(crate) fn prev_element(&self, id: NodeId) -> Option<NodeId> {
        let mut cur = self.prev(id);
        while let Some(c) = cur {
            if self.is_element(c) {
                return Some(c);
            }
            cur = self.prev(c);
        }
        None
    }

    pub(crate) fn next_element(&self, id: NodeId) -> Option<NodeId> {
        let mut cur = self.next(id);
        while let Some(c) = cur {
            if self.is_element(c) {
                return Some(c);
            }
            cur = self.next(c);
        }
        None
    }

    /// Next node in document order within the subtree of `scope`
    /// (pre-order), elements and others alike.
    pub(crate) fn next_in(&self, id: NodeId, scope: NodeId) -> Option<NodeId> {
        if let Some(c) = self.first_child(id) {
            return Some(c);
        }
        let mut cur = id;
        loop {
            if cur == scope {
                return None;
            }
            if let Some(n) = self.next(cur) {
                return Some(n);
            }
            cur = self.parent(cur)?;
        }
    }

    /// Whether `anc` is `id` or one of its ancestors.
    pub(crate) fn is_ancestor_or_self(&self, anc: NodeId, id: NodeId) -> bool {
        let mut cur = Some(id);
        while let Some(c) = cur {
            if c == anc {
                return true;
            }
            cur = self.parent(c);
        }
        false
    }

    // ----- names and attributes ------------------------------------------

    pub(crate) fn local_name(&self, id: NodeId) -> &str {
        self.atoms.get(self.node(id).local)
    }

    pub(crate) fn namespace(&self, id: NodeId) -> &str {
        self.atoms.get(self.node(id).ns)
    }

    /// Attribute by namespace URI and local name ("" = no namespace), like
    /// lxml's `get('{ns}name')`.
    pub(crate) fn attr_ns(&self, id: NodeId, ns: &str, local: &str) -> Option<&str> {
        let ns = if ns.is_empty() {
            EMPTY
        } else {
            self.atoms.lookup(ns)?
        };
        self.attr_atom(id, ns, self.atoms.lookup(local)?)
    }

    /// Attribute without namespace.
    pub(crate) fn attr(&self, id: NodeId, local: &str) -> Option<&str> {
        self.attr_ns(id, "", local)
    }

    /// Attribute by interned namespace and local name.
    pub(crate) fn attr_atom(&self, id: NodeId, ns: Atom, local: Atom) -> Option<&str> {
        self.node(id)
            .attrs
            .iter()
            .find(|a| a.local == local && a.ns == ns)
            .map(|a| a.value.as_str())
    }

    pub(crate) fn id_attr(&self, id: NodeId) -> Option<&str> {
        self.attr_atom(id, EMPTY, ATOM_ID)
    }

    pub(crate) fn class_attr(&self, id: NodeId) -> Option<&str> {
        self.attr_atom(id, EMPTY, ATOM_CLASS)
    }

    pub(crate) fn version(&self, id: NodeId) -> u32 {
        self.node(id).version
    }

    /// Records that the subtree of `id` (and so of every ancestor) changed.
    fn touch(&mut self, id: NodeId) {
        let mut cur = id.0;
        while cur != NIL {
            let n = &mut self.nodes[cur as usize];
            n.version = n.version.wrapping_add(1);
            cur = n.parent;
        }
    }

    // ----- text ------------------------------------------------------------

    pub(crate) fn text(&self, id: NodeId) -> &str {
        &self.cold(id).text
    }
    pub(crate) fn tail(&self, id: NodeId) -> &str {
        &self.cold(id).tail
    }
    /// Text of the subtree like `etree.tostring(el, method="text")`: element
    /// text and tails of descendants (comments contribute only their tails).
    pub(crate) fn text_content(&self, id: NodeId, with_tail: bool) -> String {
        let mut out = String::new();
        if self.is_element(id) {
            out.push_str(&self.cold(id).text);
        }
        let mut cur = self.first_child(id);
        while let Some(c) = cur {
            // pre-order over the subtree, adding text on entry and the tail
            // when leaving a node
            if self.is_element(c) {
                out.push_str(&self.cold(c).text);
            }
            if let Some(f) = self.first_child(c) {
                cur = Some(f);
                continue;
            }
            let mut up = c;
            loop {
                out.push_str(&self.cold(up).tail);
                if let Some(n) = self.next(up) {
                    cur = Some(n);
                    break;
                }
                match self.parent(up) {
                    Some(p) if p != id => up = p,
                    _ => {
                        cur = None;
                        break;
                    }
                }
            }
        }
        if with_tail {
            out.push_str(&self.cold(id).tail);
        }
        out
    }

    /// Pre-order iterator over the elements of the subtree of `id`, itself included.
    pub(crate) fn descendants_or_self(&self, id: NodeId) -> Descendants<'_> {
        Descendants {
            doc: self,
            scope: id,
            next: Some(id),
        }
    }
}

impl Node {
    fn blank(kind: Kind) -> Node {
        Node {
            parent: NIL,
            first_child: NIL,
            last_child: NIL,
            prev: NIL,
            next: NIL,
            kind,
            ns: EMPTY,
            local: EMPTY,
            ns_ref: NS_NONE,
            attrs: Vec::new(),
            version: 0,
        }
    }
}

/// Children of a node, all kinds.
pub(crate) struct Children<'a> {
    doc: &'a Document,
    next: Option<NodeId>,
}

impl Iterator for Children<'_> {
    type Item = NodeId;
    fn next(&mut self) -> Option<NodeId> {
        let cur = self.next?;
        self.next = self.doc.next(cur);
        Some(cur)
    }
}

/// Elements of a subtree in document order.
pub(crate) struct Descendants<'a> {
    doc: &'a Document,
    scope: NodeId,
    next: Option<NodeId>,
}

impl Iterator for Descendants<'_> {
    type Item = NodeId;
    fn next(&mut self) -> Option<NodeId> {
        loop {
            let cur = self.next?;
            self.next = self.doc.next_in(cur, self.scope);
            if self.doc.is_element(cur) {
                return Some(cur);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> (Document, NodeId, NodeId, NodeId) {
        let mut d = Document::new(1000, Interner::new());
        let r = d.atoms.intern("r");
        let a = d.atoms.intern("a");
        let root = d
            .build_element(None, EMPTY, r, NS_NONE, vec![], vec![])
            .unwrap();
        d.build_text(root, "t");
        let x = d
            .build_element(Some(root), EMPTY, a, NS_NONE, vec![], vec![])
            .unwrap();
        d.build_text(root, "1");
        let y = d
            .build_element(Some(root), EMPTY, a, NS_NONE, vec![], vec![])
            .unwrap();
        d.build_text(y, "in");
        d.build_text(root, "2");
        (d, root, x, y)
    }

    #[test]
    fn a_node_fits_in_a_cache_line() {
        // the walk of every pass reads every element's node: keep it small
        assert!(
            std::mem::size_of::<Node>() <= 64,
            "{}",
            std::mem::size_of::<Node>()
        );
    }

    #[test]
    fn text_content_follows_lxml() {
        let (d, root, x, y) = small();
        assert_eq!(d.text_content(root, false), "t1in2");
        assert_eq!(d.text_content(x, true), "1");
        assert_eq!(d.text_content(y, false), "in");
    }

    #[test]
    fn moving_an_ancestor_inside_is_refused() {
        let (mut d, root, x, _) = small();
        assert!(d.append(x, root).is_err());
        assert!(d.append(x, x).is_err());
    }

    #[test]
    fn copies_suffix_ids() {
        let (mut d, root, x, _) = small();
        d.set_attr(x, "id", "a1".into());
        let c = d.deep_copy(root, "_copy").unwrap();
        let cx = d.first_child(c).unwrap();
        assert_eq!(d.attr(cx, "id"), Some("a1_copy"));
        assert_eq!(d.text_content(c, false), "t1in2");
    }

    #[test]
    fn node_limit_is_enforced() {
        let (mut d, root, _, _) = small();
        d.budget = Budget::nodes_only(d.len());
        assert!(matches!(
            d.deep_copy(root, ""),
            Err(CollateError::Limit { .. })
        ));
    }
}
