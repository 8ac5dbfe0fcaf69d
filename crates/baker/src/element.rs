//! The arena tree as seen by the `selectors` crate, and selector matching.
//!
//! [`El`] implements [`selectors::Element`] for a node: HTML-document
//! semantics (lower-cased names), comments invisible, nth-index identity by
//! arena index. With a `scope`, a node acts as the root of a fragment,
//! which is how sort/group keys are evaluated below the node being sorted.

use std::fmt;

use selectors::attr::{AttrSelectorOperation, CaseSensitivity, NamespaceConstraint};
use selectors::bloom::BloomFilter;
use selectors::context::{
    MatchingContext, MatchingForInvalidation, MatchingMode, NeedsSelectorFlags, QuirksMode,
    SelectorCaches,
};
use selectors::matching::{matches_selector, ElementSelectorFlags};
use selectors::parser::Selector;
use selectors::OpaqueElement;

use super::atom::{Atom, NO_ATOM};
use super::dom::{Document, NodeId, EMPTY};
use super::select::{Ident, Impl, PseudoClass, PseudoElement, Value};

/// A node seen by the selector engine. With `scope` set, the element acts as
/// the root of a fragment (no parent or siblings), which is how key
/// selectors are evaluated from the node being sorted.
#[derive(Clone, Copy)]
pub(crate) struct El<'a> {
    pub(crate) doc: &'a Document,
    pub(crate) id: NodeId,
    pub(crate) scope: Option<NodeId>,
    /// The document's fallback language (`<meta http-equiv=
    /// "Content-Language">`), computed once per pass rather than per match.
    pub(crate) root_lang: &'a str,
}

impl fmt::Debug for El<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} #{}>", self.doc.local_name(self.id), self.id.index())
    }
}

impl<'a> El<'a> {
    fn with(&self, id: Option<NodeId>) -> Option<El<'a>> {
        id.map(|id| El {
            doc: self.doc,
            id,
            scope: self.scope,
            root_lang: self.root_lang,
        })
    }
    fn at_scope(&self) -> bool {
        self.scope == Some(self.id)
    }
}

/// Text of an element for `:match()`: its text, its element children's
/// (recursively, comments skipped with their tails) and its own tail.
fn match_text(doc: &Document, id: NodeId) -> String {
    let mut out = String::new();
    let mut stack = vec![(id, false)];
    while let Some((n, done)) = stack.pop() {
        if done {
            out.push_str(doc.tail(n));
            continue;
        }
        out.push_str(doc.text(n));
        stack.push((n, true));
        let kids: Vec<NodeId> = doc.element_children(n).collect();
        for k in kids.into_iter().rev() {
            stack.push((k, false));
        }
    }
    out
}

/// `xml:lang`, else `lang`, of `id` itself.
pub(crate) fn own_lang(doc: &Document, id: NodeId) -> Option<&str> {
    let k = doc.known;
    doc.attr_atom(id, k.xml_ns, k.lang)
        .or_else(|| doc.attr_atom(id, EMPTY, k.lang))
}

/// Language of an element as cssselect2 computes it (lower-cased).
pub(crate) fn lang_of(doc: &Document, id: NodeId, root_lang: &str) -> String {
    let mut cur = Some(id);
    while let Some(n) = cur {
        if let Some(l) = own_lang(doc, n) {
            return l.to_ascii_lowercase();
        }
        cur = doc.parent(n);
    }
    root_lang.to_string()
}

/// `<meta http-equiv="Content-Language" content="…">` under the root: the
/// language of a document whose root has no `lang`.
pub(crate) fn root_content_language(doc: &Document) -> String {
    let k = doc.known;
    let mut found = String::new();
    for n in doc.descendants_or_self(doc.root) {
        let node = doc.node(n);
        if node.local == k.meta
            && node.ns == k.xhtml_ns
            && doc
                .attr_atom(n, EMPTY, k.http_equiv)
                .is_some_and(|v| v.eq_ignore_ascii_case("content-language"))
        {
            if let Some(v) = doc.attr_atom(n, EMPTY, k.content) {
                let parts: Vec<&str> = v.split_whitespace().collect();
                found = if !v.contains(',') && parts.len() == 1 {
                    parts[0].to_ascii_lowercase()
                } else {
                    String::new()
                };
            }
        }
    }
    found
}

/// Elements cssselect2's `:enabled` and `:disabled` consider.
fn is_form_control(name: &str) -> bool {
    matches!(
        name,
        "button"
            | "input"
            | "select"
            | "textarea"
            | "option"
            | "optgroup"
            | "menuitem"
            | "fieldset"
    )
}

impl<'a> selectors::Element for El<'a> {
    type Impl = Impl;

    fn opaque(&self) -> OpaqueElement {
        // Identity by arena index, which stays stable while the arena grows
        // (node addresses do not); never dereferenced by `selectors`.
        let addr = self.id.index() + 1;
        OpaqueElement::from_ptr(
            std::ptr::NonNull::<()>::dangling().with_addr(
                std::num::NonZeroUsize::new(addr).unwrap_or(std::num::NonZeroUsize::MIN),
            ),
        )
    }

    fn parent_element(&self) -> Option<Self> {
        if self.at_scope() {
            return None;
        }
        self.with(self.doc.parent(self.id))
    }

    fn parent_node_is_shadow_root(&self) -> bool {
        false
    }

    fn containing_shadow_host(&self) -> Option<Self> {
        None
    }

    fn is_pseudo_element(&self) -> bool {
        false
    }

    fn prev_sibling_element(&self) -> Option<Self> {
        if self.at_scope() {
            return None;
        }
        self.with(self.doc.prev_element(self.id))
    }

    fn next_sibling_element(&self) -> Option<Self> {
        if self.at_scope() {
            return None;
        }
        self.with(self.doc.next_element(self.id))
    }

    fn first_element_child(&self) -> Option<Self> {
        self.with(self.doc.element_children(self.id).next())
    }

    fn is_html_element_in_html_document(&self) -> bool {
        true
    }

    fn has_local_name(&self, local_name: &Ident) -> bool {
        let mine = self.doc.node(self.id).local;
        if local_name.atom == NO_ATOM {
            return self.doc.atoms.get(mine) == local_name.name;
        }
        mine == local_name.atom
    }

    fn has_namespace(&self, ns: &Value) -> bool {
        let mine = self.doc.node(self.id).ns;
        if ns.atom == NO_ATOM {
            return self.doc.atoms.get(mine) == ns.text;
        }
        mine == ns.atom
    }

    fn is_same_type(&self, other: &Self) -> bool {
        let (a, b) = (self.doc.node(self.id), other.doc.node(other.id));
        a.local == b.local && a.ns == b.ns
    }

    fn attr_matches(
        &self,
        ns: &NamespaceConstraint<&Value>,
        local_name: &Ident,
        operation: &AttrSelectorOperation<&Value>,
    ) -> bool {
        let doc = self.doc;
        // names of the recipe are atoms already; only selectors parsed on
        // their own (tests) are looked up
        let atom = |a: Atom, text: &str| {
            if a == NO_ATOM {
                doc.atoms.lookup(text)
            } else {
                Some(a)
            }
        };
        let Some(local) = atom(local_name.atom, &local_name.name) else {
            return false;
        };
        let ns = match ns {
            NamespaceConstraint::Any => None,
            NamespaceConstraint::Specific(url) => match atom(url.atom, &url.text) {
                Some(a) => Some(a),
                None => return false,
            },
        };
        doc.node(self.id).attrs.iter().any(|a| {
            a.local == local && ns.is_none_or(|n| n == a.ns) && operation.eval_str(&a.value)
        })
    }

    fn match_non_ts_pseudo_class(
        &self,
        pc: &PseudoClass,
        _context: &mut MatchingContext<Impl>,
    ) -> bool {
        let doc = self.doc;
        let name = doc.local_name(self.id);
        let attr = |n: &str| doc.attr(self.id, n);
        match pc {
            PseudoClass::Pass(_) | PseudoClass::Deferred => true,
            PseudoClass::Match(re) => re.0.is_match(&match_text(doc, self.id)),
            PseudoClass::Link => matches!(name, "a" | "area" | "link") && attr("href").is_some(),
            PseudoClass::Never(_) => false,
            PseudoClass::Lang(l) => {
                let lang = lang_of(doc, self.id, self.root_lang);
                lang == *l || lang.starts_with(&format!("{l}-"))
            }
            PseudoClass::Checked => {
                (matches!(name, "input" | "menuitem")
                    && attr("checked").is_some()
                    && attr("type").is_some_and(|t| {
                        t.eq_ignore_ascii_case("checkbox") || t.eq_ignore_ascii_case("radio")
                    }))
                    || (name == "option" && attr("selected").is_some())
            }
            PseudoClass::Enabled => {
                (is_form_control(name) && attr("disabled").is_none())
                    || (matches!(name, "a" | "area" | "link") && attr("href").is_some())
            }
            PseudoClass::Disabled => is_form_control(name) && attr("disabled").is_some(),
        }
    }

    fn match_pseudo_element(
        &self,
        _pe: &PseudoElement,
        _context: &mut MatchingContext<Impl>,
    ) -> bool {
        // pseudo-elements are consumed by the matching mode, see `matches`
        true
    }

    fn apply_selector_flags(&self, _flags: ElementSelectorFlags) {}

    fn is_link(&self) -> bool {
        // asked for every compound matched, so atoms only
        let k = self.doc.known;
        let local = self.doc.node(self.id).local;
        (local == k.a || local == k.area || local == k.link)
            && self.doc.attr_atom(self.id, EMPTY, k.href).is_some()
    }

    fn is_html_slot_element(&self) -> bool {
        false
    }

    fn has_id(&self, id: &Ident, case_sensitivity: CaseSensitivity) -> bool {
        self.doc
            .id_attr(self.id)
            .is_some_and(|v| case_sensitivity.eq(v.as_bytes(), id.name.as_bytes()))
    }

    fn has_class(&self, name: &Ident, case_sensitivity: CaseSensitivity) -> bool {
        self.doc.class_attr(self.id).is_some_and(|v| {
            v.split_ascii_whitespace()
                .any(|c| case_sensitivity.eq(c.as_bytes(), name.name.as_bytes()))
        })
    }

    fn has_custom_state(&self, _name: &Ident) -> bool {
        false
    }

    fn imported_part(&self, _name: &Ident) -> Option<Ident> {
        None
    }

    fn is_part(&self, _name: &Ident) -> bool {
        false
    }

    fn is_empty(&self) -> bool {
        self.doc.element_children(self.id).next().is_none() && self.doc.text(self.id).is_empty()
    }

    fn is_root(&self) -> bool {
        self.doc.parent(self.id).is_none()
    }

    fn add_element_unique_hashes(&self, _filter: &mut BloomFilter) -> bool {
        false
    }
}

/// Whether `el` matches `sel`; a trailing pseudo-element is ignored here
/// (the caller groups rules by it).
pub(crate) fn matches(sel: &Selector<Impl>, el: El<'_>, caches: &mut SelectorCaches) -> bool {
    let mode = if sel.has_pseudo_element() {
        MatchingMode::ForStatelessPseudoElement
    } else {
        MatchingMode::Normal
    };
    let mut ctx = MatchingContext::new(
        mode,
        None,
        caches,
        QuirksMode::NoQuirks,
        NeedsSelectorFlags::No,
        MatchingForInvalidation::No,
    );
    matches_selector(sel, 0, None, el, &mut ctx)
}
