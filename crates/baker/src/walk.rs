//! The walk of one pass: match rules, run declarations, record actions.
//!
//! Order matters and is easybake's: on entering an element its plain rules
//! run, then (for an element with an id) its variables are recorded for
//! `target-*()`, then `::before` rules; after its children come `::after`,
//! `::outside`, `::inside` and finally the deferred rules. Within a group,
//! rules run by specificity, then source order. A pseudo-element rule first
//! creates its wrapper (a `div` unless `container` says otherwise); a wrapper
//! of `::before`/`::after` that received nothing is dropped again.
//!
//! The walk is iterative (an explicit stack), so document depth cannot
//! overflow the thread's stack.

use std::rc::Rc;

use selectors::context::SelectorCaches;

use super::dom::{NodeId, ATOM_CLASS, ATOM_ID, EMPTY};
use super::error::CollateError;
use super::index::Slot;
use super::oven::{Action, Oven, Target};
use super::recipe::{Label, Pseudo};
use super::select::{self, El};

enum Frame {
    Enter(NodeId),
    Exit(NodeId, Vec<(Label, u32)>),
}

/// Buffers a walk reuses for every element.
#[derive(Default)]
struct Scratch<'r> {
    cands: Vec<&'r [Slot]>,
    hits: Vec<(u32, u32, u32)>,
}

impl<'r> Oven<'r> {
    pub(crate) fn walk(&mut self, pass: usize) -> Result<(), CollateError> {
        self.actions.clear();
        self.targets.clear();
        self.target_pos.clear();
        self.move_pos.clear();
        // the tree does not change during the walk, so nth-child and :has()
        // results can be cached for the whole pass
        let mut caches = SelectorCaches::default();
        let mut scratch = Scratch::default();
        let root = self.doc.root;
        // the fallback language (a walk over the document) only matters when
        // the root element has no language of its own
        self.root_lang = if select::own_lang(&self.doc, root).is_none() {
            Rc::from(select::root_content_language(&self.doc))
        } else {
            Rc::from("")
        };
        let root_lang = self.root_lang.clone();
        let mut stack = vec![Frame::Enter(root)];
        while let Some(frame) = stack.pop() {
            self.tick()?;
            match frame {
                Frame::Enter(node) => {
                    self.entered = node;
                    let matched =
                        self.match_rules(pass, node, &root_lang, &mut caches, &mut scratch);
                    self.enter(node, &matched)
                        .map_err(|e| self.locate(e, self.rule))?;
                    // nothing to do on leaving an element no rule matched
                    if !matched.is_empty() {
                        stack.push(Frame::Exit(node, matched));
                    }
                    // children in reverse, so the first is entered first
                    let mut child = self.doc.last_child(node);
                    while let Some(k) = child {
                        if self.doc.is_element(k) {
                            stack.push(Frame::Enter(k));
                        }
                        child = self.doc.prev(k);
                    }
                }
                Frame::Exit(node, matched) => self
                    .exit(node, &matched)
                    .map_err(|e| self.locate(e, self.rule))?,
            }
        }
        Ok(())
    }

    /// Language of the element entered last (easybake's `state['lang']`,
    /// which `sort-by`/`group-by` collate with): cssselect2's `xml:lang`,
    /// else `lang`, else the parent's, else the document's fallback.
    pub(crate) fn entered_lang(&self) -> Rc<str> {
        Rc::from(select::lang_of(&self.doc, self.entered, &self.root_lang))
    }

    /// The index's lists of rules of `pass` that may match `node`: by its
    /// id, classes, attributes, type and namespace, and those filed nowhere.
    fn candidates(&self, pass: usize, node: NodeId, cands: &mut Vec<&'r [Slot]>) {
        let recipe = self.recipe;
        let index = &recipe.passes[pass].index;
        let doc = &self.doc;
        let n = doc.node(node);
        cands.clear();
        for a in &n.attrs {
            if a.ns != EMPTY {
                continue;
            }
            if a.local == ATOM_ID {
                if !index.by_id.is_empty() {
                    if let Some(v) = index.by_id.get(a.value.as_str()) {
                        cands.push(v);
                    }
                }
            } else if a.local == ATOM_CLASS && !index.by_class.is_empty() {
                for c in a.value.split_ascii_whitespace() {
                    if let Some(v) = index.by_class.get(c) {
                        cands.push(v);
                    }
                }
            }
            if !index.has_attr(a.local) {
                continue;
            }
            if let Some(by_value) = index.by_attr_value.get(&a.local) {
                if let Some(v) = by_value.get(a.value.as_str()) {
                    cands.push(v);
                }
            }
            if let Some(v) = index.by_attr.get(&a.local) {
                cands.push(v);
            }
        }
        if let Some(v) = index.by_local.get(&n.local) {
            cands.push(v);
        } else {
            // type selectors are indexed lower-cased (documents count as HTML)
            let local = doc.atoms.get(n.local);
            if local.bytes().any(|b| b.is_ascii_uppercase()) {
                let lower = doc.atoms.lookup(&local.to_ascii_lowercase());
                if let Some(v) = lower.and_then(|l| index.by_local.get(&l)) {
                    cands.push(v);
                }
            }
        }
        if let Some(v) = index.by_ns.get(&n.ns) {
            cands.push(v);
        }
        if !index.other.is_empty() {
            cands.push(&index.other);
        }
    }

    /// Rules of `pass` matching `node`, by specificity then source order.
    fn match_rules(
        &self,
        pass: usize,
        node: NodeId,
        root_lang: &str,
        caches: &mut SelectorCaches,
        scratch: &mut Scratch<'r>,
    ) -> Vec<(Label, u32)> {
        let recipe = self.recipe;
        let doc = &self.doc;
        self.candidates(pass, node, &mut scratch.cands);
        let cands = &scratch.cands;
        let hits = &mut scratch.hits;
        hits.clear();
        for &list in cands.iter() {
            for &(order, entry) in list {
                let e = &recipe.entries[entry as usize];
                let el = El {
                    doc,
                    id: node,
                    scope: None,
                    root_lang,
                };
                if select::matches(&e.selector, el, caches) {
                    hits.push((e.specificity, order, entry));
                }
            }
        }
        hits.sort_unstable();
        hits.iter()
            .map(|&(_, _, entry)| {
                let e = &recipe.entries[entry as usize];
                (e.label, e.rule)
            })
            .collect()
    }

    /// The rules of `matched` with `label`, in order.
    fn rules_for(matched: &[(Label, u32)], label: Label) -> impl Iterator<Item = u32> + '_ {
        matched
            .iter()
            .filter(move |(l, _)| *l == label)
            .map(|&(_, r)| r)
    }

    fn enter(&mut self, node: NodeId, matched: &[(Label, u32)]) -> Result<(), CollateError> {
        for rule in Self::rules_for(matched, Label::Plain) {
            self.push_target_elem(node, None);
            self.run_rule(node, rule, None)?;
        }
        self.record_snapshot(node);
        for rule in Self::rules_for(matched, Label::Before) {
            self.pseudo_rule(node, rule, Pseudo::Before, true)?;
        }
        Ok(())
    }

    fn exit(&mut self, node: NodeId, matched: &[(Label, u32)]) -> Result<(), CollateError> {
        for rule in Self::rules_for(matched, Label::After) {
            self.pseudo_rule(node, rule, Pseudo::After, true)?;
        }
        for rule in Self::rules_for(matched, Label::Outside) {
            self.pseudo_rule(node, rule, Pseudo::Outside, false)?;
        }
        for rule in Self::rules_for(matched, Label::Inside) {
            self.pseudo_rule(node, rule, Pseudo::Inside, false)?;
        }
        let deferred = [
            Label::Deferred,
            Label::BeforeDeferred,
            Label::AfterDeferred,
            Label::OutsideDeferred,
            Label::InsideDeferred,
        ];
        if !matched.iter().any(|(l, _)| deferred.contains(l)) {
            return Ok(());
        }
        for rule in Self::rules_for(matched, Label::Deferred) {
            self.push_target_elem(node, None);
            self.run_rule(node, rule, None)?;
        }
        for rule in Self::rules_for(matched, Label::BeforeDeferred) {
            self.pseudo_rule(node, rule, Pseudo::Before, true)?;
        }
        for rule in Self::rules_for(matched, Label::AfterDeferred) {
            self.pseudo_rule(node, rule, Pseudo::After, true)?;
        }
        for rule in Self::rules_for(matched, Label::OutsideDeferred) {
            self.pseudo_rule(node, rule, Pseudo::Outside, false)?;
        }
        for rule in Self::rules_for(matched, Label::InsideDeferred) {
            self.pseudo_rule(node, rule, Pseudo::Inside, false)?;
        }
        // deferred rules may change variables: the element's record follows
        self.record_snapshot(node);
        Ok(())
    }

    /// Records `node`'s variables for `target-*()` if it has an id.
    #[inline]
    fn record_snapshot(&mut self, node: NodeId) {
        if self.recipe.uses_targets && self.doc.id_attr(node).is_some_and(|id| !id.is_empty()) {
            self.record_snapshot_of_id(node);
        }
    }

    #[inline(never)]
    fn record_snapshot_of_id(&mut self, node: NodeId) {
        let Some(id) = self.doc.id_attr(node) else {
            return;
        };
        // the node remembers its slot, so that the id (often a long one) is
        // hashed once per bake rather than at every pass
        let i = node.index();
        let cached = self.snap_slot_of.get(i).copied().unwrap_or(u32::MAX);
        let slot = match self.snapshots.get(cached as usize) {
            Some((key, _)) if **key == *id => cached as usize,
            _ => {
                let slot = match self.snapshot_ids.get(id) {
                    Some(&s) => s as usize,
                    None => {
                        let s = self.snapshots.len();
                        self.snapshot_ids.insert(id.into(), s as u32);
                        let placeholder = self.snapshot();
                        self.snapshots.push((id.into(), placeholder));
                        s
                    }
                };
                if i >= self.snap_slot_of.len() {
                    self.snap_slot_of.resize(i + 1, u32::MAX);
                }
                self.snap_slot_of[i] = slot as u32;
                slot
            }
        };
        let snap = self.snapshot();
        self.snapshots[slot].1 = snap;
    }

    fn pseudo_rule(
        &mut self,
        node: NodeId,
        rule: u32,
        pseudo: Pseudo,
        drop_if_empty: bool,
    ) -> Result<(), CollateError> {
        self.rule = rule;
        self.push_pending_elem(node, pseudo)?;
        self.run_rule(node, rule, Some(pseudo))?;
        if drop_if_empty {
            self.pop_pending_if_empty();
        }
        Ok(())
    }

    fn run_rule(
        &mut self,
        node: NodeId,
        rule: u32,
        pseudo: Option<Pseudo>,
    ) -> Result<(), CollateError> {
        self.rule = rule;
        let recipe = self.recipe;
        for decl in &recipe.rules[rule as usize].decls {
            self.run_decl(node, decl, pseudo)?;
        }
        Ok(())
    }

    pub(crate) fn push_target_elem(&mut self, node: NodeId, pseudo: Option<Pseudo>) {
        if matches!(self.last(), Some(Action::Target(_))) {
            self.pop();
        }
        let t = self.new_target(Target {
            tree: node,
            loc: pseudo,
            parent: self.doc.parent(node),
            sort: None,
            is_group: false,
            group: None,
            lang: None,
        });
        self.push(Action::Target(t));
    }

    /// Creates the wrapper of a pseudo-element rule and targets it.
    fn push_pending_elem(&mut self, node: NodeId, pseudo: Pseudo) -> Result<(), CollateError> {
        self.push_target_elem(node, Some(pseudo));
        let div = self.doc.known.div;
        let wrapper = self.doc.new_element(EMPTY, div)?;
        self.push(Action::Move(wrapper));
        let t = self.new_target(Target::plain(wrapper));
        self.push(Action::Target(t));
        Ok(())
    }

    /// Drops a wrapper nothing was put into (and its placement).
    fn pop_pending_if_empty(&mut self) {
        let Some(elem) = self.current_tree() else {
            return;
        };
        if let Some(Action::Target(t)) = self.last() {
            if self.targets[*t as usize].tree == elem {
                self.pop();
                self.pop();
                self.pop();
            }
        }
    }
}
