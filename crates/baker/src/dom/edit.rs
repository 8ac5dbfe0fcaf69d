//! Changing the tree: text, attributes, names, moves, copies, and the
//! parser's builders.
//!
//! Every change bumps the version of the node and its ancestors (so cached
//! sort keys know when to recompute), and every move refuses to put a node
//! inside itself — lxml raises there too, and going on would create a cycle.

use super::{Atom, Attr, Cold, Document, Kind, Node, NodeId, ATOM_ID, EMPTY, NIL, NS_NONE};
use crate::error::CollateError;

impl Document {
    /// Sets an attribute without namespace (what recipes set: `class`,
    /// `attr-*`, `data-*`).
    pub(crate) fn set_attr(&mut self, id: NodeId, local: &str, value: String) {
        let ns_a = EMPTY;
        let local_a = self.atoms.intern(local);
        let n = self.node_mut(id);
        if let Some(a) = n
            .attrs
            .iter_mut()
            .find(|a| a.local == local_a && a.ns == ns_a)
        {
            a.value = value;
        } else {
            n.attrs.push(Attr {
                ns: ns_a,
                local: local_a,
                ns_ref: NS_NONE,
                value,
            });
        }
        self.touch(id);
    }

    /// Renames an element (lxml's `tag` setter): into namespace `ns` ("" for
    /// none), bound as lxml binds it.
    pub(crate) fn rename(&mut self, id: NodeId, ns: &str, local: &str) {
        let ns_a = self.atoms.intern(ns);
        let local_a = self.atoms.intern(local);
        let n = self.node_mut(id);
        n.ns = ns_a;
        n.local = local_a;
        self.bind_element_ns(id, ns_a);
        self.touch(id);
    }

    pub(crate) fn set_text(&mut self, id: NodeId, text: String) {
        self.cold_mut(id).text = text;
        self.touch(id);
    }
    pub(crate) fn take_text(&mut self, id: NodeId) -> String {
        let t = std::mem::take(&mut self.cold_mut(id).text);
        self.touch(id);
        t
    }
    pub(crate) fn push_text(&mut self, id: NodeId, s: &str) {
        if !s.is_empty() {
            self.cold_mut(id).text.push_str(s);
            self.touch(id);
        }
    }
    pub(crate) fn set_tail(&mut self, id: NodeId, tail: String) {
        self.cold_mut(id).tail = tail;
        self.touch(id);
    }
    pub(crate) fn take_tail(&mut self, id: NodeId) -> String {
        if self.cold(id).tail.is_empty() {
            return String::new();
        }
        let t = std::mem::take(&mut self.cold_mut(id).tail);
        self.touch(id);
        t
    }
    pub(crate) fn push_tail(&mut self, id: NodeId, s: &str) {
        if !s.is_empty() {
            self.cold_mut(id).tail.push_str(s);
            self.touch(id);
        }
    }

    // ----- structure ---------------------------------------------------------

    /// Unlinks `id` from its parent (its tail goes with it, as in lxml).
    pub(crate) fn detach(&mut self, id: NodeId) {
        let (parent, prev, next) = {
            let n = self.node(id);
            (n.parent, n.prev, n.next)
        };
        if parent == NIL {
            return;
        }
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            self.nodes[parent as usize].first_child = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        } else {
            self.nodes[parent as usize].last_child = prev;
        }
        let n = self.node_mut(id);
        n.parent = NIL;
        n.prev = NIL;
        n.next = NIL;
        self.touch(NodeId(parent));
    }

    /// Refuses moves that would make a node its own ancestor; lxml raises
    /// here too, and going on would create a cycle.
    fn check_cycle(&self, node: NodeId, new_parent: NodeId) -> Result<(), CollateError> {
        if self.is_ancestor_or_self(node, new_parent) {
            return Err(CollateError::apply(
                0,
                "",
                format!(
                    "a <{}> element would be moved inside itself",
                    self.local_name(node)
                ),
            ));
        }
        Ok(())
    }

    /// Moves `child` to the end of `parent`'s children (lxml `append`,
    /// namespaces rebound as lxml does).
    pub(crate) fn append(&mut self, parent: NodeId, child: NodeId) -> Result<(), CollateError> {
        self.check_cycle(child, parent)?;
        if child == self.root {
            self.ns_simple = false;
        }
        self.link_last(parent, child);
        self.reconcile(child);
        Ok(())
    }

    /// Unlinks `node` from its parent (lxml `remove`): the names of its
    /// subtree are rebound to what is declared inside it.
    pub(crate) fn remove(&mut self, node: NodeId) {
        self.detach(node);
        self.reconcile(node);
    }

    /// Links `child` (from wherever it is) last under `parent`, namespaces
    /// as they are.
    fn link_last(&mut self, parent: NodeId, child: NodeId) {
        self.detach(child);
        self.link_new_last(parent, child);
        self.touch(parent);
    }

    /// Moves `node` just before `sibling` (lxml `addprevious`).
    pub(crate) fn insert_before(
        &mut self,
        sibling: NodeId,
        node: NodeId,
    ) -> Result<(), CollateError> {
        if sibling == node {
            return Ok(());
        }
        let Some(parent) = self.parent(sibling) else {
            return Err(CollateError::apply(
                0,
                "",
                "cannot insert next to a detached node",
            ));
        };
        self.check_cycle(node, parent)?;
        if node == self.root {
            self.ns_simple = false;
        }
        self.detach(node);
        let prev = self.node(sibling).prev;
        {
            let n = self.node_mut(node);
            n.parent = parent.0;
            n.prev = prev;
            n.next = sibling.0;
        }
        if prev != NIL {
            self.nodes[prev as usize].next = node.0;
        } else {
            self.node_mut(parent).first_child = node.0;
        }
        self.node_mut(sibling).prev = node.0;
        self.touch(parent);
        self.reconcile(node);
        Ok(())
    }

    /// Moves `node` to be the first child of `parent` (lxml `insert(0, …)`).
    pub(crate) fn prepend(&mut self, parent: NodeId, node: NodeId) -> Result<(), CollateError> {
        match self.first_child(parent) {
            Some(first) if first != node => self.insert_before(first, node),
            Some(_) => Ok(()),
            None => self.append(parent, node),
        }
    }

    /// Deep copy of `id` (with its tail), detached, its names bound as
    /// libxml2's copy binds them (see `ns.rs`). Every `id` attribute in the
    /// copy gets `id_suffix` appended, which is how easybake keeps ids
    /// unique when it copies content.
    pub(crate) fn deep_copy(
        &mut self,
        id: NodeId,
        id_suffix: &str,
    ) -> Result<NodeId, CollateError> {
        let copy_one = |doc: &mut Document, src: NodeId| -> Result<NodeId, CollateError> {
            // the copied text is new text: charged before it is made
            let bytes = {
                let (s, c) = (doc.node(src), doc.cold(src));
                c.text.len() + c.tail.len() + s.attrs.iter().map(|a| a.value.len()).sum::<usize>()
            };
            doc.budget.text(bytes)?;
            let c = doc.cold(src);
            let cold = Cold {
                nsdef: None,
                text: c.text.clone(),
                tail: c.tail.clone(),
            };
            let mut n = doc.node(src).clone();
            n.parent = NIL;
            n.first_child = NIL;
            n.last_child = NIL;
            n.prev = NIL;
            n.next = NIL;
            n.version = 0;
            if !id_suffix.is_empty() && n.kind == Kind::Element {
                for a in n.attrs.iter_mut() {
                    if a.local == ATOM_ID && a.ns == EMPTY {
                        a.value.push_str(id_suffix);
                    }
                }
            }
            doc.alloc(n, cold)
        };
        let top = copy_one(self, id)?;
        // pre-order: each copy is linked under its copied parent before its
        // names are bound, as in libxml2
        let mut stack = vec![(id, top)];
        let mut kids = Vec::new();
        while let Some((src, dst)) = stack.pop() {
            // (copies keep their names' bindings while only the root declares)
            if self.is_element(src) && !self.ns_simple {
                self.copy_ns(src, dst, top);
            }
            kids.clear();
            kids.extend(self.children(src));
            let mark = stack.len();
            for &k in &kids {
                let c = copy_one(self, k)?;
                self.link_new_last(dst, c);
                stack.push((k, c));
            }
            stack[mark..].reverse();
        }
        Ok(top)
    }

    /// Links a new, detached `child` last under `parent` (a subtree being
    /// built: no versions to bump).
    pub(crate) fn link_new_last(&mut self, parent: NodeId, child: NodeId) {
        let last = self.node(parent).last_child;
        {
            let c = self.node_mut(child);
            c.parent = parent.0;
            c.prev = last;
            c.next = NIL;
        }
        if last != NIL {
            self.nodes[last as usize].next = child.0;
        } else {
            self.node_mut(parent).first_child = child.0;
        }
        self.node_mut(parent).last_child = child.0;
    }
}

impl Document {
    /// Creates an element for the parser, linked under `parent` (or as root).
    pub(crate) fn build_element(
        &mut self,
        parent: Option<NodeId>,
        ns: Atom,
        local: Atom,
        ns_ref: u32,
        attrs: Vec<Attr>,
        nsdef: Vec<u32>,
    ) -> Result<NodeId, CollateError> {
        let mut n = Node::blank(Kind::Element);
        n.ns = ns;
        n.local = local;
        n.ns_ref = ns_ref;
        n.attrs = attrs;
        let cold = Cold {
            nsdef: (!nsdef.is_empty()).then(|| nsdef.into_boxed_slice()),
            ..Cold::default()
        };
        let id = match parent {
            None => {
                // the placeholder root at index 0 is reused for the real root
                self.nodes[0] = n;
                self.cold[0] = cold;
                NodeId(0)
            }
            Some(_) => self.alloc(n, cold)?,
        };
        if let Some(p) = parent {
            self.link_new_last(p, id);
        }
        Ok(id)
    }

    /// Appends parsed character data at the current position: the text of
    /// `open` if it has no child yet, else the tail of its last child.
    pub(crate) fn build_text(&mut self, open: NodeId, s: &str) {
        match self.last_child(open) {
            Some(last) => self.cold[last.index()].tail.push_str(s),
            None => self.cold[open.index()].text.push_str(s),
        }
    }
}
