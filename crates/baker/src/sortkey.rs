//! Sort and group keys for `sort-by` / `group-by`, and their collation.
//!
//! easybake turns a key selector into XPath (`descendant-or-self::…`) and
//! takes the text (tail included) of the first element it finds in the node
//! being inserted, or an attribute with `::attr(name)`, or just the first
//! character with `::first-letter`; `nocase` upper-cases the key. Keys are
//! then compared with an ICU collator for the document's language. Here the
//! selector is evaluated with the node as a fragment root, and keys are
//! turned into ICU4X sort keys (byte strings that compare like the collator)
//! and cached per node until the node's subtree changes — easybake recomputes
//! every key of every sibling on every insertion, which is what makes large
//! indexes quadratic.
//!
//! A document without a language is collated like ICU's default locale in a
//! `C`/POSIX environment (`en-US-posix`, close to code point order),
//! since that is what the reference does on such systems.

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use icu_collator::options::CollatorOptions;
use icu_collator::{CollatorBorrowed, CollatorPreferences};
use icu_locale_core::Locale;
use selectors::context::SelectorCaches;
use selectors::parser::Selector;

use super::dom::{Document, NodeId};
use super::select::{self, El, Impl, PseudoElement, SelMode};

/// A compiled key selector.
pub(crate) struct KeyFn {
    selector: Selector<Impl>,
    attr: Option<String>,
    first_letter: bool,
    nocase: bool,
}

impl KeyFn {
    /// Compiles the text of one `sort-by`/`group-by` argument (quotes allowed).
    pub(crate) fn compile(
        text: &str,
        nocase: bool,
        namespaces: &HashMap<String, String>,
        strict: bool,
    ) -> Result<KeyFn, String> {
        let text = text.trim_matches(|c: char| c == '"' || c.is_whitespace());
        if text.is_empty() {
            return Err("empty key selector".into());
        }
        // like cssselect's parse(...)[0]: only the first selector of a list counts
        let first = select::split_list(text)
            .into_iter()
            .next()
            .map(|(_, s)| s)
            .unwrap_or_default();
        let rewritten = select::xpath_namespace_semantics(first.trim());
        let selector = select::parse_one(&rewritten, namespaces, SelMode::Key { strict })
            .map_err(|m| format!("key selector {first:?}: {m}"))?;
        let (attr, first_letter) = match selector.pseudo_element() {
            Some(PseudoElement::FirstLetter) => (None, true),
            Some(PseudoElement::Attr(a)) => (Some(a.clone()), false),
            Some(PseudoElement::FirstLetterOf(a)) => (Some(a.clone()), true),
            _ => (None, false),
        };
        Ok(KeyFn {
            selector,
            attr,
            first_letter,
            nocase,
        })
    }

    /// The key of `node`, or `None` when the selector finds nothing.
    pub(crate) fn eval(&self, doc: &Document, node: NodeId) -> Option<String> {
        if !doc.is_element(node) {
            return None;
        }
        // the tree changes between evaluations, so no cache outlives one call
        let mut caches = SelectorCaches::default();
        for el in doc.descendants_or_self(node) {
            let view = El {
                doc,
                id: el,
                scope: Some(node),
                root_lang: "",
            };
            if !select::matches(&self.selector, view, &mut caches) {
                continue;
            }
            let text = match &self.attr {
                Some(a) => match doc.attr(el, a) {
                    Some(v) => v.to_string(),
                    None => continue,
                },
                None => doc.text_content(el, true),
            };
            return Some(self.finish(text));
        }
        None
    }

    fn finish(&self, s: String) -> String {
        if self.first_letter {
            match s.chars().next() {
                Some(c) if self.nocase => c.to_uppercase().collect(),
                Some(c) => c.to_string(),
                None => s,
            }
        } else if self.nocase {
            s.to_uppercase()
        } else {
            s
        }
    }
}

/// A key to compute: key function `key_fn` (number `key_id` of the
/// recipe) on `node`, collated with collator `coll`.
#[derive(Clone, Copy)]
pub(crate) struct KeyAt<'k> {
    pub(crate) node: NodeId,
    pub(crate) key_id: u32,
    pub(crate) key_fn: &'k KeyFn,
    pub(crate) coll: usize,
}

impl<'k> KeyAt<'k> {
    pub(crate) fn new(node: NodeId, key_id: u32, key_fn: &'k KeyFn, coll: usize) -> Self {
        KeyAt {
            node,
            key_id,
            key_fn,
            coll,
        }
    }
}

/// Collators per language and cached sort keys.
#[derive(Default)]
pub(crate) struct Collation {
    collators: Vec<CollatorBorrowed<'static>>,
    by_lang: FxHashMap<String, usize>,
    /// (node, key function, collator) -> (node version, sort key of key-or-"")
    cache: FxHashMap<(NodeId, u32, usize), (u32, Vec<u8>)>,
}

fn make_collator(lang: &str) -> Option<CollatorBorrowed<'static>> {
    let tag = if lang.is_empty() {
        "en-US-posix".to_string()
    } else {
        lang.replace('_', "-")
    };
    let locale = Locale::try_from_str(&tag)
        .or_else(|_| Locale::try_from_str(tag.split('-').next().unwrap_or("und")))
        .unwrap_or(Locale::UNKNOWN);
    let prefs = CollatorPreferences::from(&locale);
    CollatorBorrowed::try_new(prefs, CollatorOptions::default())
        .ok()
        .or_else(|| {
            CollatorBorrowed::try_new(CollatorPreferences::default(), CollatorOptions::default())
                .ok()
        })
}

impl Collation {
    /// Index of the collator for `lang` (created on first use).
    pub(crate) fn collator(&mut self, lang: &str) -> Option<usize> {
        if let Some(&i) = self.by_lang.get(lang) {
            return Some(i);
        }
        let c = make_collator(lang)?;
        self.collators.push(c);
        let i = self.collators.len() - 1;
        self.by_lang.insert(lang.to_string(), i);
        Some(i)
    }

    /// Sort key bytes of `s` under collator `coll`.
    pub(crate) fn sort_key(&self, coll: usize, s: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(s.len() * 2 + 8);
        if let Some(c) = self.collators.get(coll) {
            let _ = c.write_sort_key_to(s, &mut out);
        } else {
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    /// The cached sort key of `at`'s key function on its node (a missing
    /// key counts as ""), computed again only when the node's subtree changed.
    fn cached_key(&mut self, doc: &Document, at: KeyAt<'_>) -> &[u8] {
        let slot = (at.node, at.key_id, at.coll);
        let version = doc.version(at.node);
        let fresh = matches!(self.cache.get(&slot), Some((v, _)) if *v == version);
        if !fresh {
            let text = at.key_fn.eval(doc, at.node).unwrap_or_default();
            let k = self.sort_key(at.coll, &text);
            self.cache.insert(slot, (version, k));
        }
        self.cache.get(&slot).map_or(&[], |(_, k)| k.as_slice())
    }

    /// Sort key bytes of a node's key, cached.
    pub(crate) fn node_key(&mut self, doc: &Document, at: KeyAt<'_>) -> Vec<u8> {
        self.cached_key(doc, at).to_vec()
    }

    /// Compares a node's key with `other`, without copying it.
    pub(crate) fn cmp_node_key(
        &mut self,
        doc: &Document,
        at: KeyAt<'_>,
        other: &[u8],
    ) -> std::cmp::Ordering {
        self.cached_key(doc, at).cmp(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posix_and_english_collation_differ_like_icu() {
        let mut c = Collation::default();
        let posix = c.collator("").unwrap();
        let en = c.collator("en_US").unwrap();
        assert!(c.sort_key(posix, "B") < c.sort_key(posix, "a"));
        assert!(c.sort_key(en, "a") < c.sort_key(en, "B"));
        assert!(c.sort_key(en, "a") < c.sort_key(en, "A"));
        assert!(
            c.sort_key(en, "e") < c.sort_key(en, "é") && c.sort_key(en, "é") < c.sort_key(en, "f")
        );
    }

    #[test]
    fn keys_use_xpath_namespaces_and_tails() {
        let doc = super::super::xml::parse(
            "<r xmlns='http://www.w3.org/1999/xhtml'><dl><dt>Zed</dt> <dd k='q'>x</dd></dl><span>gen</span></r>",
            100,
            100,
        )
        .unwrap();
        let mut ns = HashMap::new();
        ns.insert("x".to_string(), super::super::dom::XHTML_NS.to_string());
        let dl = doc.first_child(doc.root).unwrap();
        let k = KeyFn::compile("x|dl > x|dt", false, &ns, true).unwrap();
        assert_eq!(k.eval(&doc, dl).as_deref(), Some("Zed "));
        // unprefixed names only match elements without namespace
        let k = KeyFn::compile("dt", false, &ns, true).unwrap();
        assert_eq!(k.eval(&doc, dl), None);
        let k = KeyFn::compile("\"x|dd::first-letter(k)\"", true, &ns, true).unwrap();
        assert_eq!(k.eval(&doc, dl).as_deref(), Some("Q"));
    }
}
