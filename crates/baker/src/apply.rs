//! Applying a pass's actions to the tree.
//!
//! Each action works on the current target. Strings append to the target's
//! text (or to its last child's tail), nodes are inserted according to the
//! target: sorted (`sort-by`), grouped and merged (`group-by`), wrapped
//! around the host's content (`::inside`), around the host (`::outside`),
//! first in the host (`::before`) or last. A node that is moved leaves its
//! tail text behind, so surrounding text stays where it was.

use std::cmp::Ordering;

use rustc_hash::FxHashMap;
use std::rc::Rc;

use super::dom::{NodeId, EMPTY};
use super::error::CollateError;
use super::oven::{Act, Action, Oven, Target};
use super::recipe::Pseudo;
use super::sortkey::KeyAt;
use super::xml::{forbidden_char, is_qname};

impl Oven<'_> {
    pub(crate) fn apply(&mut self) -> Result<(), CollateError> {
        let actions = std::mem::take(&mut self.actions);
        let mut state = ApplyState::default();
        for act in actions {
            let rule = act.rule;
            // warnings raised while applying name the rule that recorded the action
            self.rule = rule;
            self.tick()
                .and_then(|()| self.apply_one(act, &mut state))
                .map_err(|e| self.locate(e, rule))?;
        }
        // the copies queued by this pass are made
        self.doc.budget.release_reserved();
        Ok(())
    }

    /// Attaches the rule to errors raised by tree operations and budgets.
    pub(crate) fn locate(&self, e: CollateError, rule: u32) -> CollateError {
        match self.recipe.rules.get(rule as usize) {
            Some(r) => e.in_rule(r.line, &r.prelude),
            None => e,
        }
    }

    fn apply_one(&mut self, act: Act<'_>, st: &mut ApplyState) -> Result<(), CollateError> {
        if let Action::Target(t) = act.action {
            st.target = Some(t);
            st.old = None;
            return Ok(());
        }
        let Some(t) = st.target else { return Ok(()) };
        let tree = self.targets[t as usize].tree;
        match act.action {
            Action::Target(_) | Action::Nop => {}
            Action::Tag(ns, local) => {
                xml_text(ns)?;
                self.doc.rename(tree, ns, local)
            }
            Action::Clear => {
                let text = self.doc.take_text(tree);
                let kids: Vec<NodeId> = self.doc.children(tree).collect();
                for &k in &kids {
                    self.doc.remove(k);
                }
                st.old = Some((text, kids));
            }
            Action::Content(copy) => self.content(tree, copy, st)?,
            Action::Attrib(name, pieces) => {
                if !is_qname(name) || name.contains(':') {
                    // lxml refuses the name too, failing the reference's bake
                    return Err(CollateError::apply(
                        0,
                        "",
                        format!("{name:?} is not an attribute name"),
                    ));
                }
                let value = self.resolve(&pieces)?;
                xml_text(&value)?;
                self.doc.set_attr(tree, name, value);
            }
            Action::Text(s) => {
                xml_text(&s)?;
                if self.targets[t as usize].loc == Some(Pseudo::Before) {
                    self.doc.push_text(tree, &s);
                } else {
                    self.append_string(tree, &s);
                }
            }
            Action::Str(pieces) => {
                let s = self.resolve(&pieces)?;
                xml_text(&s)?;
                if self.targets[t as usize].loc == Some(Pseudo::Before) {
                    self.doc.push_text(tree, &s);
                } else {
                    self.append_string(tree, &s);
                }
            }
            Action::Move(n) => self.grouped_insert(t, n)?,
            Action::Copy(n) => {
                let c = self.doc.deep_copy(n, "_copy")?;
                self.doc.set_tail(c, String::new());
                self.grouped_insert(t, c)?;
            }
            Action::NodeSet(n) => {
                let count = st.node_counts.entry(n).or_insert(0);
                *count += 1;
                let suffix = format!("_copy_{count}");
                let c = self.doc.deep_copy(n, &suffix)?;
                self.doc.set_tail(c, String::new());
                self.grouped_insert(t, c)?;
            }
        }
        Ok(())
    }

    /// `content()`: the copy taken during the walk (in `::before`/`::after`),
    /// or what the last `Clear` removed, appended to `tree`.
    fn content(
        &mut self,
        tree: NodeId,
        copy: Option<NodeId>,
        st: &ApplyState,
    ) -> Result<(), CollateError> {
        let (text, kids) = match copy {
            Some(copy) => (
                self.doc.take_text(copy),
                self.doc.children(copy).collect::<Vec<NodeId>>(),
            ),
            None => match &st.old {
                Some((text, kids)) => {
                    // a second content() writes the text again
                    self.doc.budget.text(text.len())?;
                    (text.clone(), kids.clone())
                }
                None => return Ok(()),
            },
        };
        self.append_string(tree, &text);
        for k in kids {
            self.doc.append(tree, k)?;
        }
        Ok(())
    }

    /// Appends text at the end of `node`'s content.
    fn append_string(&mut self, node: NodeId, s: &str) {
        if s.is_empty() {
            return;
        }
        match self.doc.last_child(node) {
            Some(last) => self.doc.push_tail(last, s),
            None => self.doc.push_text(node, s),
        }
    }

    fn key_of(&mut self, key: u32, node: NodeId) -> Result<Option<String>, CollateError> {
        let recipe = self.recipe;
        let key = recipe
            .keys
            .get(key as usize)
            .and_then(|k| k.eval(&self.doc, node));
        self.doc.budget.text(key.as_ref().map_or(0, String::len))?;
        Ok(key)
    }

    pub(crate) fn collator_for(&mut self, lang: &Option<Rc<str>>) -> usize {
        let l = lang.as_deref().unwrap_or("");
        self.collation.collator(l).unwrap_or(0)
    }

    /// Sort key bytes of a (possibly missing) key.
    pub(crate) fn bytes_of(&self, coll: usize, key: &Option<String>) -> Vec<u8> {
        self.collation.sort_key(coll, key.as_deref().unwrap_or(""))
    }

    /// Compares `node`'s key with `other` (sort key bytes).
    fn cmp_key(&mut self, key: u32, node: NodeId, coll: usize, other: &[u8]) -> Ordering {
        let recipe = self.recipe;
        match recipe.keys.get(key as usize) {
            Some(k) => {
                self.collation
                    .cmp_node_key(&self.doc, KeyAt::new(node, key, k, coll), other)
            }
            None => Ordering::Less,
        }
    }

    /// Inserts `value` into target `t` (easybake's `grouped_insert`).
    fn grouped_insert(&mut self, t: u32, value: NodeId) -> Result<(), CollateError> {
        let tail = self.doc.take_tail(value);
        if !tail.is_empty() {
            if let Some(prev) = self.doc.prev(value) {
                self.doc.push_tail(prev, &tail);
            } else if let Some(parent) = self.doc.parent(value) {
                self.doc.push_text(parent, &tail);
            }
        }
        let tg = self.targets[t as usize].clone();
        let sort_key = match tg.sort {
            Some(k) => self.key_of(k, value)?,
            None => None,
        };
        if tg.is_group && sort_key.is_some() {
            match tg.group {
                Some(g) => self.insert_into_groups(&tg, g, value),
                None => self.insert_keyed(&tg, value, &sort_key, true),
            }
        } else if sort_key.is_some() {
            self.insert_keyed(&tg, value, &sort_key, false)
        } else {
            match tg.loc {
                Some(Pseudo::Inside) => {
                    let kids: Vec<NodeId> = self.doc.children(tg.tree).collect();
                    for k in kids {
                        self.doc.append(value, k)?;
                    }
                    let text = self.doc.take_text(tg.tree);
                    self.doc.set_text(value, text);
                    self.doc.append(tg.tree, value)
                }
                Some(Pseudo::Outside) => self.wrap_outside(&tg, value),
                Some(Pseudo::Before) => {
                    let text = self.doc.take_text(tg.tree);
                    self.doc.set_tail(value, text);
                    self.doc.prepend(tg.tree, value)
                }
                _ => self.doc.append(tg.tree, value),
            }
        }
    }

    /// `::outside`: the wrapper takes the host's place and the host moves in.
    fn wrap_outside(&mut self, tg: &Target, value: NodeId) -> Result<(), CollateError> {
        let host = tg.tree;
        let still_there = match (tg.parent, self.doc.parent(host)) {
            (Some(orig), Some(_)) => self
                .doc
                .parent(host)
                .is_some_and(|p| self.doc.is_ancestor_or_self(orig, p)),
            _ => false,
        };
        if !still_there {
            return Err(CollateError::apply(
                0,
                "",
                "the element of an ::outside rule was moved or deleted",
            ));
        }
        let tail = self.doc.take_tail(host);
        self.doc.set_tail(value, tail);
        self.doc.insert_before(host, value)?;
        self.doc.append(value, host)
    }

    /// `group-by` with a label selector: find or create the labelled group.
    fn insert_into_groups(
        &mut self,
        tg: &Target,
        g: u32,
        value: NodeId,
    ) -> Result<(), CollateError> {
        let coll = self.collator_for(&tg.lang);
        let label = self.key_of(g, value)?;
        let mine = self.bytes_of(coll, &label);
        let mut child = self.doc.first_child(tg.tree);
        while let Some(c) = child {
            if self.doc.is_element(c) && self.doc.attr(c, "class") == Some("group-by") {
                // the group's first entry follows its label span
                let order = match self.doc.nth_child(c, 1) {
                    Some(first) => self.cmp_key(g, first, coll, &mine),
                    None => self.collation.sort_key(coll, "").as_slice().cmp(&mine),
                };
                match order {
                    Ordering::Equal => {
                        let inner = Target {
                            tree: c,
                            loc: None,
                            parent: None,
                            sort: tg.sort,
                            is_group: false,
                            group: None,
                            lang: tg.lang.clone(),
                        };
                        let key = match tg.sort {
                            Some(k) => self.key_of(k, value)?,
                            None => None,
                        };
                        return self.insert_keyed(&inner, value, &key, true);
                    }
                    Ordering::Greater => {
                        let group = self.create_group(label)?;
                        self.doc.append(group, value)?;
                        return self.doc.insert_before(c, group);
                    }
                    Ordering::Less => {}
                }
            }
            child = self.doc.next(c);
        }
        let group = self.create_group(label)?;
        self.doc.append(group, value)?;
        self.doc.append(tg.tree, group)
    }

    /// `<div class="group-by"><span class="group-label">LABEL</span></div>`
    fn create_group(&mut self, label: Option<String>) -> Result<NodeId, CollateError> {
        let (div, span) = (self.doc.known.div, self.doc.known.span);
        let group = self.doc.new_element(EMPTY, div)?;
        self.doc.set_attr(group, "class", "group-by".into());
        let l = self.doc.new_element(EMPTY, span)?;
        self.doc.set_attr(l, "class", "group-label".into());
        self.doc.set_text(l, label.unwrap_or_default());
        self.doc.append(group, l)?;
        Ok(group)
    }
}

/// Refuses text XML cannot carry (a recipe string with a control character
/// escaped into it): lxml refuses to store it, which fails the reference's
/// bake too, and the output must stay XML.
fn xml_text(s: &str) -> Result<(), CollateError> {
    match forbidden_char(s) {
        None => Ok(()),
        Some(at) => Err(CollateError::apply(
            0,
            "",
            format!(
                "the recipe writes U+{:04X}, which XML does not allow",
                s[at..].chars().next().map_or(0, |c| c as u32)
            ),
        )),
    }
}

#[derive(Default)]
struct ApplyState {
    target: Option<u32>,
    /// What the last `Clear` removed: (text, children).
    old: Option<(String, Vec<NodeId>)>,
    /// Copies made per node by `nodes()`/`node-set`, for their id suffixes.
    node_counts: FxHashMap<NodeId, u32>,
}
