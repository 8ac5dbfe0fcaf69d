//! The rule index: which rules can match an element, found without testing
//! them all.
//!
//! A selector can only match elements that have the id, a class, the type
//! or the namespace of its rightmost compound, so each compiled selector is
//! filed under the most selective of those (id, then class, then type, then
//! namespace); an element then looks up its own id, classes, type and
//! namespace, plus the selectors that fit no bucket. This is what
//! cssselect2's `Matcher` does for the reference.

use rustc_hash::FxHashMap;
use selectors::parser::{Combinator, Component, Selector};

use super::select::Impl;

/// Rules of one pass, bucketed by the rightmost compound of their selector.
#[derive(Default)]
pub(crate) struct RuleIndex {
    pub(crate) by_id: FxHashMap<String, Vec<(u32, u32)>>,
    pub(crate) by_class: FxHashMap<String, Vec<(u32, u32)>>,
    pub(crate) by_local: FxHashMap<String, Vec<(u32, u32)>>,
    pub(crate) by_ns: FxHashMap<String, Vec<(u32, u32)>>,
    /// (registration order, entry) pairs that fit no bucket.
    pub(crate) other: Vec<(u32, u32)>,
}

impl RuleIndex {
    /// Files selector `entry`, registered as the `order`-th of its pass.
    pub(crate) fn insert(&mut self, key: &IndexKey, order: u32, entry: u32) {
        let slot = (order, entry);
        match key {
            IndexKey::Id(v) => self.by_id.entry(v.clone()).or_default().push(slot),
            IndexKey::Class(v) => self.by_class.entry(v.clone()).or_default().push(slot),
            IndexKey::Local(v) => self.by_local.entry(v.clone()).or_default().push(slot),
            IndexKey::Ns(v) => self.by_ns.entry(v.clone()).or_default().push(slot),
            IndexKey::None => self.other.push(slot),
        }
    }
}

pub(crate) enum IndexKey {
    Id(String),
    Class(String),
    Local(String),
    Ns(String),
    None,
}

impl IndexKey {
    /// The most selective simple selector of the rightmost compound.
    pub(crate) fn of(sel: &Selector<Impl>) -> IndexKey {
        let (mut id, mut class, mut local, mut ns) = (None, None, None, None);
        let mut iter = sel.iter();
        loop {
            for c in &mut iter {
                match c {
                    Component::ID(i) => id = Some(i.0.clone()),
                    Component::Class(c) => class = Some(c.0.clone()),
                    Component::LocalName(l) => local = Some(l.lower_name.0.clone()),
                    Component::Namespace(_, url) | Component::DefaultNamespace(url) => {
                        ns = Some(url.0.clone())
                    }
                    _ => {}
                }
            }
            match iter.next_sequence() {
                Some(Combinator::PseudoElement) => continue,
                _ => break,
            }
        }
        if let Some(v) = id {
            IndexKey::Id(v)
        } else if let Some(v) = class {
            IndexKey::Class(v)
        } else if let Some(v) = local {
            IndexKey::Local(v)
        } else if let Some(v) = ns {
            IndexKey::Ns(v)
        } else {
            IndexKey::None
        }
    }
}
