//! Inserting into sorted containers (`sort-by`, `group-by`) without
//! rescanning them.
//!
//! easybake inserts a node before the first child whose key sorts after it
//! (`sort-by`), or merges it into the first child with an equal key
//! (`group-by`), scanning the children and recomputing every key each time:
//! quadratic in the size of a glossary or index. The result only depends on
//! the children's keys in order, so this keeps, per container, the list of
//! its children with their sort keys (a *run*) and whether it is sorted,
//! valid while the container's subtree has not changed since the last
//! insertion. A sorted run is searched by bisection, which finds the same
//! child as the scan; an unsorted one is scanned, still without recomputing
//! keys. Anything unusual (moving a node that is already inside the
//! container) takes the plain path.

use std::cmp::Ordering;

use rustc_hash::FxHashMap;

use super::dom::NodeId;
use super::error::CollateError;
use super::oven::{Oven, Target};
use super::sortkey::KeyAt;

/// Children of a container with their sort keys, as of `version`.
struct Run {
    version: u32,
    entries: Vec<(NodeId, Vec<u8>)>,
    sorted: bool,
}

/// Runs by (container, key function, collator).
#[derive(Default)]
pub(crate) struct Runs(FxHashMap<(NodeId, u32, usize), Run>);

type RunId = (NodeId, u32, usize);

impl Oven<'_> {
    /// Makes sure the run of `id` reflects the container as it is now.
    fn refresh_run(&mut self, id: RunId) {
        let (container, k, coll) = id;
        let version = self.doc.version(container);
        if matches!(self.runs.0.get(&id), Some(r) if r.version == version) {
            return;
        }
        let recipe = self.recipe;
        let Some(key_fn) = recipe.keys.get(k as usize) else {
            return;
        };
        let kids: Vec<NodeId> = self.doc.children(container).collect();
        let entries: Vec<(NodeId, Vec<u8>)> = kids
            .into_iter()
            .map(|c| {
                (
                    c,
                    self.collation
                        .node_key(&self.doc, KeyAt::new(c, k, key_fn, coll)),
                )
            })
            .collect();
        let sorted = entries.windows(2).all(|w| w[0].1 <= w[1].1);
        self.runs.0.insert(
            id,
            Run {
                version,
                entries,
                sorted,
            },
        );
    }

    /// Position of the first entry whose key is greater (`strict`) or not
    /// less than `mine`: what easybake's scan stops at.
    fn search(&self, id: RunId, mine: &[u8], strict: bool) -> usize {
        let Some(run) = self.runs.0.get(&id) else {
            return 0;
        };
        let stop = |e: &[u8]| if strict { e > mine } else { e >= mine };
        if run.sorted {
            run.entries.partition_point(|(_, e)| !stop(e))
        } else {
            run.entries
                .iter()
                .position(|(_, e)| stop(e))
                .unwrap_or(run.entries.len())
        }
    }

    /// Inserts `node` at run position `pos` (before that child, or last).
    fn place(
        &mut self,
        id: RunId,
        pos: usize,
        node: NodeId,
        key: Vec<u8>,
    ) -> Result<(), CollateError> {
        let before = self
            .runs
            .0
            .get(&id)
            .and_then(|r| r.entries.get(pos))
            .map(|e| e.0);
        match before {
            Some(c) => self.doc.insert_before(c, node)?,
            None => self.doc.append(id.0, node)?,
        }
        let version = self.doc.version(id.0);
        if let Some(run) = self.runs.0.get_mut(&id) {
            run.entries.insert(pos.min(run.entries.len()), (node, key));
            run.version = version;
        }
        Ok(())
    }

    /// Whether the fast path applies: `node` is not inside the container
    /// (moving it would change the container's children or their keys).
    fn outside_of(&self, container: NodeId, node: NodeId) -> bool {
        !self.doc.is_ancestor_or_self(container, node)
    }

    /// What a sorted insertion starts with: the run of the target's
    /// children (fresh) and the new node's sort key, or `None` when the
    /// node was inserted already (no sort key function, or the plain scan
    /// for a node inside the container).
    fn prepare_run(
        &mut self,
        tg: &Target,
        node: NodeId,
        key: &Option<String>,
        merge: bool,
    ) -> Result<Option<(RunId, Vec<u8>)>, CollateError> {
        let coll = self.collator_for(&tg.lang);
        let mine = self.bytes_of(coll, key);
        let Some(k) = tg.sort else {
            self.doc.append(tg.tree, node)?;
            return Ok(None);
        };
        let id = (tg.tree, k, coll);
        if !self.outside_of(tg.tree, node) {
            self.runs.0.remove(&id);
            self.scan_insert(tg.tree, k, coll, node, &mine, merge)?;
            return Ok(None);
        }
        self.refresh_run(id);
        Ok(Some((id, mine)))
    }

    /// Inserts `node` into a sorted container. `sort-by` (`merge ==
    /// false`): before the first child whose key sorts after the new one.
    /// `group-by` without labels, or inside one label group (`merge`): a
    /// node whose key equals a child's is merged into it (all but its first
    /// child), otherwise inserted before the first child with a greater key.
    pub(crate) fn insert_keyed(
        &mut self,
        tg: &Target,
        node: NodeId,
        key: &Option<String>,
        merge: bool,
    ) -> Result<(), CollateError> {
        let Some((id, mine)) = self.prepare_run(tg, node, key, merge)? else {
            return Ok(());
        };
        if !merge {
            let pos = self.search(id, &mine, true);
            return self.place(id, pos, node, mine);
        }
        let (k, coll) = (id.1, id.2);
        let pos = self.search(id, &mine, false);
        let equal = self
            .runs
            .0
            .get(&id)
            .and_then(|r| r.entries.get(pos))
            .filter(|(_, e)| *e == mine)
            .map(|(c, _)| *c);
        let Some(into) = equal else {
            return self.place(id, pos, node, mine);
        };
        let rest: Vec<NodeId> = self.doc.children(node).skip(1).collect();
        for r in rest {
            self.doc.append(into, r)?;
        }
        // the merged entry's subtree changed: refresh its key and the
        // run's order around it
        let recipe = self.recipe;
        let fresh = match recipe.keys.get(k as usize) {
            Some(key_fn) => self
                .collation
                .node_key(&self.doc, KeyAt::new(into, k, key_fn, coll)),
            None => mine,
        };
        let version = self.doc.version(tg.tree);
        if let Some(run) = self.runs.0.get_mut(&id) {
            if let Some(e) = run.entries.get_mut(pos) {
                e.1 = fresh;
            }
            let ok_before = pos == 0 || run.entries[pos - 1].1 <= run.entries[pos].1;
            let ok_after =
                pos + 1 >= run.entries.len() || run.entries[pos].1 <= run.entries[pos + 1].1;
            run.sorted = run.sorted && ok_before && ok_after;
            run.version = version;
        }
        Ok(())
    }

    /// easybake's plain scan, for the unusual cases.
    fn scan_insert(
        &mut self,
        container: NodeId,
        k: u32,
        coll: usize,
        node: NodeId,
        mine: &[u8],
        merge: bool,
    ) -> Result<(), CollateError> {
        let recipe = self.recipe;
        let Some(key_fn) = recipe.keys.get(k as usize) else {
            return self.doc.append(container, node);
        };
        let mut child = self.doc.first_child(container);
        while let Some(c) = child {
            match self
                .collation
                .cmp_node_key(&self.doc, KeyAt::new(c, k, key_fn, coll), mine)
            {
                Ordering::Equal if merge => {
                    let rest: Vec<NodeId> = self.doc.children(node).skip(1).collect();
                    for r in rest {
                        self.doc.append(c, r)?;
                    }
                    return Ok(());
                }
                Ordering::Greater => return self.doc.insert_before(c, node),
                _ => {}
            }
            child = self.doc.next(c);
        }
        self.doc.append(container, node)
    }
}
