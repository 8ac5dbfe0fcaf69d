//! The baking state: variables per pass, the action list, and the pass loop.
//!
//! Baking follows cnx-easybake's two-phase design, because its observable
//! behaviour depends on it: for each pass, a walk over the *unchanged* tree
//! records an ordered list of actions (`walk.rs`), then the actions are
//! applied in order (`apply.rs`). Content captured during the walk (a
//! `content()` copy) reflects the tree before the pass; nodes moved or copied
//! while applying reflect everything applied before them.
//!
//! Variables (strings, counters, buckets of pending nodes) live per pass, and
//! a name not set in the current pass is looked up in earlier passes, newest
//! first — the reference's "scope". Where the reference searches its whole
//! action list (finding a node's previous move, the current target), this
//! keeps indexes, so the work per element stays constant.

use rustc_hash::FxHashMap;
use std::rc::Rc;

use super::dom::{Document, NodeId};
use super::error::CollateError;
use super::ordered::Runs;
use super::recipe::{Compiled, Pseudo};
use super::sortkey::Collation;
use super::value::Piece;
use super::warning::{Level, Warnings};
use super::BakeOptions;

/// Variables by name id (see [`Oven::var`]): looking a name up in every
/// pass of the scope hashes it once, not once per pass.
pub(crate) type Counters = FxHashMap<u32, i64>;
pub(crate) type Strings = FxHashMap<u32, String>;

/// How a pending node lands where its bucket is emptied.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum PendKind {
    Move,
    Copy,
    /// A copy with a numbered id suffix (`node-set` / `nodes()`).
    NodeSet,
}

/// Variables of one pass.
#[derive(Default)]
pub(crate) struct StepState {
    pub(crate) pending: FxHashMap<u32, Vec<(PendKind, NodeId)>>,
    /// Shared with id snapshots until changed (copy on write), so taking a
    /// snapshot at every element with an id costs two reference counts.
    pub(crate) counters: Rc<Counters>,
    pub(crate) strings: Rc<Strings>,
    /// Bytes of names and values in `strings` (what copying them costs).
    pub(crate) strings_bytes: usize,
}

/// Variables as they were at an element with an `id`, for `target-counter()`
/// and `target-string()`. Only the pass that recorded it is kept: earlier
/// passes' variables no longer change, so lookups fall back to their final
/// values, which equal what easybake copies.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub(crate) pass: usize,
    pub(crate) counters: Rc<Counters>,
    pub(crate) strings: Rc<Strings>,
}

/// Where a group of actions applies: a node, and how content lands in it.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) tree: NodeId,
    pub(crate) loc: Option<Pseudo>,
    /// The node's parent during the walk (needed by `::outside`).
    pub(crate) parent: Option<NodeId>,
    pub(crate) sort: Option<u32>,
    pub(crate) is_group: bool,
    pub(crate) group: Option<u32>,
    pub(crate) lang: Option<Rc<str>>,
}

impl Target {
    /// A target that takes content as it comes (no pseudo-element place, no
    /// sorting): a wrapper, the bin.
    pub(crate) fn plain(tree: NodeId) -> Target {
        Target {
            tree,
            loc: None,
            parent: None,
            sort: None,
            is_group: false,
            group: None,
            lang: None,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Action<'r> {
    Target(u32),
    /// `container`: rename the target (namespace URI, local name).
    Tag(&'r str, &'r str),
    /// Remove the target's content, remembering it for `content()`.
    Clear,
    /// `content()`: a copy taken during the walk, or the cleared content.
    Content(Option<NodeId>),
    Attrib(&'r str, Box<[Piece]>),
    /// Text to append (the common case of [`Action::Str`]).
    Text(String),
    Str(Box<[Piece]>),
    Move(NodeId),
    Copy(NodeId),
    NodeSet(NodeId),
    /// A move that a later `move-to` cancelled.
    Nop,
}

const NO_POS: u32 = u32::MAX;

/// An action and the rule that produced it (for error messages).
#[derive(Clone, Debug)]
pub(crate) struct Act<'r> {
    pub(crate) action: Action<'r>,
    pub(crate) rule: u32,
    /// For a `Move`: position of the previous live move of the same node.
    prev_move: u32,
}

pub(crate) struct Oven<'r> {
    pub(crate) recipe: &'r Compiled,
    pub(crate) doc: Document,
    pub(crate) warn: Warnings,
    /// Variables of every pass, by pass index.
    pub(crate) steps: Vec<StepState>,
    /// Passes run so far, current first.
    pub(crate) scope: Vec<usize>,
    /// (id, variables) recorded at the latest element with that id, found
    /// by `snapshot_ids`; `snap_slot_of` remembers each node's slot.
    pub(crate) snapshots: Vec<(Box<str>, Snapshot)>,
    pub(crate) snapshot_ids: FxHashMap<Box<str>, u32>,
    pub(crate) snap_slot_of: Vec<u32>,
    /// The element entered last in the walk (its language is easybake's
    /// `state['lang']`, see [`Oven::entered_lang`]).
    pub(crate) entered: NodeId,
    /// The document's fallback language this pass (`<meta>`).
    pub(crate) root_lang: Rc<str>,
    pub(crate) actions: Vec<Act<'r>>,
    pub(crate) targets: Vec<Target>,
    /// Positions of the live `Target` actions, in order.
    pub(crate) target_pos: Vec<usize>,
    /// Position of the latest live `Move` action of each node (earlier ones
    /// are chained through [`Act::prev_move`]).
    pub(crate) move_pos: FxHashMap<NodeId, u32>,
    /// Rule whose declarations are running (attached to new actions).
    pub(crate) rule: u32,
    pub(crate) collation: Collation,
    pub(crate) runs: Runs,
    repeatable_ids: bool,
    next_id: u64,
    /// Ids of variable names (see [`Oven::var`]).
    var_ids: FxHashMap<Box<str>, u32>,
}

impl<'r> Oven<'r> {
    pub(crate) fn new(recipe: &'r Compiled, doc: Document, opts: &BakeOptions) -> Self {
        let dropped_subset = doc.dropped_subset;
        Oven {
            recipe,
            doc,
            warn: {
                let mut w = Warnings::new(opts.limits.max_warnings);
                for p in &recipe.warnings {
                    w.push(p.level, p.line, p.message.clone());
                }
                if dropped_subset {
                    w.push(
                        Level::Warning,
                        0,
                        "the document's DTD internal subset was dropped (its declarations are not used)"
                            .to_string(),
                    );
                }
                w
            },
            steps: (0..recipe.passes.len())
                .map(|_| StepState::default())
                .collect(),
            scope: Vec::new(),
            snapshots: Vec::new(),
            snapshot_ids: FxHashMap::default(),
            snap_slot_of: Vec::new(),
            entered: NodeId::ROOT,
            root_lang: Rc::from(""),
            actions: Vec::new(),
            targets: Vec::new(),
            target_pos: Vec::new(),
            move_pos: FxHashMap::default(),
            rule: 0,
            collation: Collation::default(),
            runs: Runs::default(),
            repeatable_ids: opts.repeatable_ids,
            next_id: 0,
            var_ids: FxHashMap::default(),
        }
    }

    /// Runs every pass, in order, stopping before `stop_before` if given.
    pub(crate) fn bake(&mut self, stop_before: Option<&str>) -> Result<(), CollateError> {
        for pass in 0..self.recipe.passes.len() {
            if stop_before == Some(self.recipe.passes[pass].name.as_str()) {
                break;
            }
            self.scope.insert(0, pass);
            self.walk(pass)?;
            self.apply()?;
        }
        Ok(())
    }

    /// Called in every loop over nodes or actions: enforces the time limit.
    #[inline]
    pub(crate) fn tick(&self) -> Result<(), CollateError> {
        self.doc.budget.time()
    }

    /// A WARNING-level message from the rule running now.
    pub(crate) fn warning(&mut self, msg: impl Into<String>) {
        self.note(Level::Warning, msg.into());
    }

    /// A message at `level` from the rule running now.
    pub(crate) fn note(&mut self, level: Level, msg: String) {
        let line = self
            .recipe
            .rules
            .get(self.rule as usize)
            .map(|r| r.line)
            .unwrap_or(0);
        self.warn.push(level, line, msg);
    }

    pub(crate) fn current_pass(&self) -> usize {
        self.scope.first().copied().unwrap_or(0)
    }

    /// A fresh id for `uuid()`: a random UUID, or `autobaked-N` when
    /// repeatable ids were asked for (stable output for diffs and tests).
    pub(crate) fn generate_id(&mut self) -> String {
        if self.repeatable_ids {
            self.next_id += 1;
            format!("autobaked-{}", self.next_id)
        } else {
            uuid::Uuid::new_v4().to_string()
        }
    }

    // ----- variable lookup across passes ---------------------------------

    /// The id of a variable name (string, counter or bucket), made on
    /// first use.
    pub(crate) fn var(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.var_ids.get(name) {
            return id;
        }
        let id = self.var_ids.len() as u32;
        self.var_ids.insert(name.into(), id);
        id
    }

    /// The id of a name some variable has had, if any.
    pub(crate) fn var_id(&self, name: &str) -> Option<u32> {
        self.var_ids.get(name).copied()
    }

    pub(crate) fn lookup_string(&self, name: &str) -> Option<&str> {
        let id = self.var_id(name)?;
        self.scope
            .iter()
            .find_map(|&p| self.steps[p].strings.get(&id).map(|s| s.as_str()))
    }

    pub(crate) fn lookup_counter(&self, name: &str) -> Option<i64> {
        let id = self.var_id(name)?;
        self.scope
            .iter()
            .find_map(|&p| self.steps[p].counters.get(&id).copied())
    }

    /// The pass whose bucket `name` is pending, if any, and the bucket's id.
    pub(crate) fn lookup_pending(&self, name: &str) -> Option<(usize, u32)> {
        let id = self.var_id(name)?;
        self.scope
            .iter()
            .copied()
            .find(|&p| self.steps[p].pending.contains_key(&id))
            .map(|p| (p, id))
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let pass = self.current_pass();
        Snapshot {
            pass,
            counters: self.steps[pass].counters.clone(),
            strings: self.steps[pass].strings.clone(),
        }
    }

    /// Looks a variable up in a snapshot, then in the passes before it.
    pub(crate) fn lookup_in_snapshot(
        &self,
        snap: &Snapshot,
        name: &str,
        counter: bool,
    ) -> Option<String> {
        let id = self.var_id(name)?;
        let get = |c: &Counters, s: &Strings| {
            if counter {
                c.get(&id).map(|v| v.to_string())
            } else {
                s.get(&id).cloned()
            }
        };
        if let Some(v) = get(&snap.counters, &snap.strings) {
            return Some(v);
        }
        let at = self.scope.iter().position(|&p| p == snap.pass)?;
        self.scope[at + 1..]
            .iter()
            .find_map(|&p| get(&self.steps[p].counters, &self.steps[p].strings))
    }

    // ----- the action list ------------------------------------------------

    pub(crate) fn push(&mut self, action: Action<'r>) {
        let pos = self.actions.len();
        let mut prev_move = NO_POS;
        match action {
            Action::Move(n) => prev_move = self.move_pos.insert(n, pos as u32).unwrap_or(NO_POS),
            Action::Target(_) => self.target_pos.push(pos),
            _ => {}
        }
        self.actions.push(Act {
            action,
            rule: self.rule,
            prev_move,
        });
    }

    /// Forgets the latest move of `n`, whose action is `act`.
    fn unlink_move(&mut self, n: NodeId, prev_move: u32) {
        if prev_move == NO_POS {
            self.move_pos.remove(&n);
        } else {
            self.move_pos.insert(n, prev_move);
        }
    }

    pub(crate) fn new_target(&mut self, t: Target) -> u32 {
        self.targets.push(t);
        (self.targets.len() - 1) as u32
    }

    /// The last action (cancelled moves are never last: they are trimmed).
    pub(crate) fn last(&self) -> Option<&Action<'r>> {
        self.actions.last().map(|a| &a.action)
    }

    pub(crate) fn pop(&mut self) {
        if let Some(act) = self.actions.pop() {
            match act.action {
                Action::Move(n) => self.unlink_move(n, act.prev_move),
                Action::Target(_) => {
                    self.target_pos.pop();
                }
                _ => {}
            }
        }
        self.trim();
    }

    fn trim(&mut self) {
        while matches!(self.last(), Some(Action::Nop)) {
            self.actions.pop();
        }
    }

    /// Cancels the latest pending placement of `node` (a second `move-to`
    /// replaces the first).
    pub(crate) fn cancel_move(&mut self, node: NodeId) {
        if let Some(&pos) = self.move_pos.get(&node) {
            let prev = self
                .actions
                .get(pos as usize)
                .map(|a| a.prev_move)
                .unwrap_or(NO_POS);
            self.unlink_move(node, prev);
            if let Some(a) = self.actions.get_mut(pos as usize) {
                a.action = Action::Nop;
            }
            self.trim();
        }
    }

    pub(crate) fn current_target(&self) -> Option<u32> {
        let pos = *self.target_pos.last()?;
        match self.actions.get(pos).map(|a| &a.action) {
            Some(Action::Target(t)) => Some(*t),
            _ => None,
        }
    }

    pub(crate) fn current_tree(&self) -> Option<NodeId> {
        self.current_target().map(|t| self.targets[t as usize].tree)
    }
}
