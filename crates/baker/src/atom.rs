//! Interned names: element and attribute names, prefixes, namespace URIs.
//!
//! Matching compares names thousands of times per element, so names are
//! numbers. The recipe interns every name its selectors use while it is
//! compiled (the selector parser builds its identifiers through
//! [`Atom`]-carrying types, see `select.rs`), and each document's interner
//! starts from the recipe's: a name a selector tests has the same number in
//! every document baked with that recipe, so a test is an integer compare,
//! never a hash lookup.

use std::cell::RefCell;
use std::sync::Arc;

use std::hash::BuildHasher as _;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

/// An interned string.
pub(crate) type Atom = u32;

/// The empty string, which is also "no namespace" and "no prefix".
pub(crate) const EMPTY: Atom = 0;
/// `id` and `class`, interned first everywhere: looked up for every element.
pub(crate) const ATOM_ID: Atom = 1;
pub(crate) const ATOM_CLASS: Atom = 2;
/// A name interned outside of a recipe compilation (selectors parsed on
/// their own, in tests): compared by its text.
pub(crate) const NO_ATOM: Atom = u32::MAX;

/// Interns strings so that names compare as integers; optionally extends a
/// frozen base (a recipe's names) without copying it.
#[derive(Default, Debug)]
pub(crate) struct Interner {
    base: Option<Arc<Interner>>,
    /// Atoms below this are the base's.
    base_len: u32,
    strings: Vec<Box<str>>,
    /// Every atom (the base's too: its table is copied, a few kilobytes of
    /// numbers, so that a lookup is one probe), found by its string's hash.
    table: HashTable<Atom>,
}

fn hash(s: &str) -> u64 {
    FxBuildHasher.hash_one(s)
}

impl Interner {
    pub(crate) fn new() -> Self {
        let mut me = Interner::default();
        me.intern("");
        me.intern("id");
        me.intern("class");
        me
    }

    /// An interner that knows `base`'s atoms and adds its own after them.
    pub(crate) fn over(base: Arc<Interner>) -> Self {
        Interner {
            base_len: base.len(),
            table: base.table.clone(),
            base: Some(base),
            strings: Vec::new(),
        }
    }

    fn len(&self) -> u32 {
        self.base_len + self.strings.len() as u32
    }

    fn lookup_hashed(&self, h: u64, s: &str) -> Option<Atom> {
        self.table.find(h, |&a| self.get(a) == s).copied()
    }

    pub(crate) fn intern(&mut self, s: &str) -> Atom {
        let h = hash(s);
        if let Some(a) = self.lookup_hashed(h, s) {
            return a;
        }
        let a = self.len();
        self.strings.push(s.into());
        let (base, strings, base_len) = (&self.base, &self.strings, self.base_len);
        let text = |x: Atom| -> &str {
            if x < base_len {
                base.as_ref().map_or("", |b| b.get(x))
            } else {
                strings.get((x - base_len) as usize).map_or("", |s| &**s)
            }
        };
        self.table.insert_unique(h, a, |&x| hash(text(x)));
        a
    }

    pub(crate) fn lookup(&self, s: &str) -> Option<Atom> {
        self.lookup_hashed(hash(s), s)
    }

    pub(crate) fn get(&self, a: Atom) -> &str {
        if a < self.base_len {
            return self.base.as_ref().map_or("", |b| b.get(a));
        }
        self.strings
            .get((a - self.base_len) as usize)
            .map(|s| &**s)
            .unwrap_or("")
    }
}

thread_local! {
    /// The interner of the recipe being compiled on this thread, if any.
    static COMPILING: RefCell<Option<Interner>> = const { RefCell::new(None) };
}

/// Runs `f` (a recipe compilation) with an interner that the selector types
/// intern into, and returns it with `f`'s result.
pub(crate) fn compiling<T>(f: impl FnOnce() -> T) -> (T, Interner) {
    /// Puts back what was there before, even if `f` panics.
    struct Restore(Option<Interner>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            COMPILING.with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = COMPILING.with(|c| c.replace(Some(Interner::new())));
    let _restore = Restore(previous);
    let out = f();
    let atoms = COMPILING
        .with(|c| c.borrow_mut().take())
        .unwrap_or_default();
    (out, atoms)
}

/// The atom of `s` in the recipe being compiled, or [`NO_ATOM`] outside
/// of a compilation.
pub(crate) fn intern_compiling(s: &str) -> Atom {
    COMPILING.with(|c| match c.borrow_mut().as_mut() {
        Some(i) => i.intern(s),
        None => NO_ATOM,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_interner_extends_the_recipe_one() {
        let ((), base) = compiling(|| {
            assert_eq!(intern_compiling("div"), 3);
            assert_eq!(intern_compiling("id"), ATOM_ID);
        });
        assert_eq!(intern_compiling("div"), NO_ATOM);
        let mut doc = Interner::over(Arc::new(base));
        assert_eq!(doc.intern("div"), 3);
        let p = doc.intern("p");
        assert_eq!(p, 4);
        assert_eq!(doc.get(3), "div");
        assert_eq!(doc.get(p), "p");
        assert_eq!(doc.lookup("class"), Some(ATOM_CLASS));
        assert_eq!(doc.lookup("nope"), None);
    }
}
