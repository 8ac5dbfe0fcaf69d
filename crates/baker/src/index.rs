//! The rule index: which rules can match an element, found without testing
//! them all.
//!
//! A selector can only match elements that have the id, a class, an
//! attribute (with a given value, for `[name="value"]`), the type or the
//! namespace its rightmost compound requires, so each compiled selector is
//! filed under the most selective of those: id, class, attribute with
//! value, type, attribute, namespace. An element then looks up its own id,
//! classes, attributes, type and namespace, plus the selectors that fit no
//! bucket. Real recipes select mostly by `data-type` and class, so indexing
//! attributes is what keeps the candidates per element to a handful
//! (cssselect2's `Matcher` indexes id, class and type only).

use rustc_hash::FxHashMap;
use selectors::attr::{AttrSelectorOperator, ParsedCaseSensitivity};
use selectors::parser::{Combinator, Component, Selector};

use super::atom::{Atom, NO_ATOM};
use super::select::Impl;

/// (registration order in its pass, entry) of a selector.
pub(crate) type Slot = (u32, u32);

/// Rules of one pass, bucketed by the rightmost compound of their selector.
#[derive(Default)]
pub(crate) struct RuleIndex {
    pub(crate) by_id: FxHashMap<Box<str>, Vec<Slot>>,
    pub(crate) by_class: FxHashMap<Box<str>, Vec<Slot>>,
    /// `[name="value"]` compared case-sensitively: by name, then value.
    pub(crate) by_attr_value: FxHashMap<Atom, FxHashMap<Box<str>, Vec<Slot>>>,
    pub(crate) by_local: FxHashMap<Atom, Vec<Slot>>,
    /// Other tests of an attribute without namespace, by its name.
    pub(crate) by_attr: FxHashMap<Atom, Vec<Slot>>,
    pub(crate) by_ns: FxHashMap<Atom, Vec<Slot>>,
    /// Selectors that fit no bucket.
    pub(crate) other: Vec<Slot>,
    /// Bit set of the attribute names `by_attr_value` and `by_attr` know,
    /// so that most attributes of an element are passed over without a
    /// hash lookup.
    attr_names: Vec<u64>,
}

impl RuleIndex {
    /// Files selector `entry`, registered as the `order`-th of its pass.
    pub(crate) fn insert(&mut self, key: &IndexKey, order: u32, entry: u32) {
        let slot = (order, entry);
        match key {
            IndexKey::Id(v) => self.by_id.entry(v.as_str().into()).or_default().push(slot),
            IndexKey::Class(v) => self
                .by_class
                .entry(v.as_str().into())
                .or_default()
                .push(slot),
            IndexKey::AttrValue(name, v) => {
                self.note_attr(*name);
                self.by_attr_value
                    .entry(*name)
                    .or_default()
                    .entry(v.as_str().into())
                    .or_default()
                    .push(slot)
            }
            IndexKey::Local(a) => self.by_local.entry(*a).or_default().push(slot),
            IndexKey::Attr(a) => {
                self.note_attr(*a);
                self.by_attr.entry(*a).or_default().push(slot)
            }
            IndexKey::Ns(a) => self.by_ns.entry(*a).or_default().push(slot),
            IndexKey::None => self.other.push(slot),
        }
    }
}

impl RuleIndex {
    fn note_attr(&mut self, name: Atom) {
        let (word, bit) = (name as usize / 64, name % 64);
        if word >= self.attr_names.len() {
            self.attr_names.resize(word + 1, 0);
        }
        self.attr_names[word] |= 1 << bit;
    }

    /// Whether some selector of this pass is filed under attribute `name`.
    #[inline]
    pub(crate) fn has_attr(&self, name: Atom) -> bool {
        self.attr_names
            .get(name as usize / 64)
            .is_some_and(|w| w & (1 << (name % 64)) != 0)
    }
}

/// Where a selector is filed.
pub(crate) enum IndexKey {
    Id(String),
    Class(String),
    AttrValue(Atom, String),
    Local(Atom),
    Attr(Atom),
    Ns(Atom),
    None,
}

impl IndexKey {
    /// The most selective simple selector of the rightmost compound.
    pub(crate) fn of(sel: &Selector<Impl>) -> IndexKey {
        let (mut id, mut class, mut attr_value, mut local, mut attr, mut ns) =
            (None, None, None, None, None, None);
        let known = |a: Atom| (a != NO_ATOM).then_some(a);
        let mut iter = sel.iter();
        loop {
            for c in &mut iter {
                match c {
                    Component::ID(i) => id = Some(i.name.clone()),
                    Component::Class(c) => class = Some(c.name.clone()),
                    Component::LocalName(l) => local = known(l.lower_name.atom),
                    Component::Namespace(_, url) | Component::DefaultNamespace(url) => {
                        ns = known(url.atom)
                    }
                    Component::AttributeInNoNamespace {
                        local_name,
                        operator,
                        value,
                        case_sensitivity,
                    } => {
                        let exact = matches!(
                            case_sensitivity,
                            ParsedCaseSensitivity::CaseSensitive
                                | ParsedCaseSensitivity::ExplicitCaseSensitive
                        );
                        match known(local_name.atom) {
                            Some(a) if exact && *operator == AttrSelectorOperator::Equal => {
                                attr_value = Some((a, value.text.clone()))
                            }
                            Some(a) => attr = Some(a),
                            None => {}
                        }
                    }
                    Component::AttributeInNoNamespaceExists {
                        local_name,
                        local_name_lower,
                    } if local_name == local_name_lower => {
                        if let Some(a) = known(local_name_lower.atom) {
                            attr = Some(a);
                        }
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
        } else if let Some((a, v)) = attr_value {
            IndexKey::AttrValue(a, v)
        } else if let Some(v) = local {
            IndexKey::Local(v)
        } else if let Some(v) = attr {
            IndexKey::Attr(v)
        } else if let Some(v) = ns {
            IndexKey::Ns(v)
        } else {
            IndexKey::None
        }
    }
}
