//! Running declarations during the walk: each property's effect on
//! variables (strings, counters, buckets) and the actions it records.
//!
//! Every function here is a port of the matching `do_*` method of
//! cnx-easybake's `Oven`, token by token, because recipes rely on its exact
//! reading of values (what a comma ends, what an identifier means, which
//! malformed pieces are skipped with a warning).

use std::borrow::Cow;
use std::rc::Rc;

use super::css::{self, Cv};
use super::dom::{NodeId, EMPTY};
use super::error::CollateError;
use super::oven::{Action, Oven, PendKind, Target};
use super::recipe::{Decl, DeclKind, Pseudo};
use super::value::Piece;
use super::warning::Level;

impl<'r> Oven<'r> {
    pub(crate) fn run_decl(
        &mut self,
        node: NodeId,
        decl: &'r Decl,
        pseudo: Option<Pseudo>,
    ) -> Result<(), CollateError> {
        match &decl.kind {
            DeclKind::StringSet => self.do_string_set(node, decl)?,
            DeclKind::CounterReset => self.do_counters(decl, false),
            DeclKind::CounterIncrement => self.do_counters(decl, true),
            DeclKind::MoveTo(bucket) => self.do_bucket(bucket, PendKind::Move),
            DeclKind::CopyTo(bucket) => self.do_bucket(bucket, PendKind::Copy),
            DeclKind::NodeSet(bucket) => self.do_bucket(bucket, PendKind::NodeSet),
            DeclKind::Container { .. } => self.do_container(decl),
            DeclKind::Attribute(name) => {
                let vals = self.eval_string(node, &decl.value)?;
                self.push(Action::Attrib(name, vals.into_boxed_slice()));
            }
            DeclKind::Content => self.do_content(node, decl, pseudo)?,
            DeclKind::Sort {
                sort,
                group,
                is_group,
            } => self.do_sort(node, *sort, *group, *is_group),
            DeclKind::BrokenSort => {}
            DeclKind::OldPass => self.warning(format!(
                "Old-style pass as declaration not allowed.{}",
                css::serialize(&decl.value)
            )),
            DeclKind::Unknown => {
                self.warning(format!("Missing method {}", decl.name.replace('-', "_")))
            }
        }
        Ok(())
    }

    /// Sets a string of the current pass. The value is charged as new
    /// text, and so is the copy of the pass's strings that changing them
    /// makes while an element's snapshot still shares them.
    fn set_string(&mut self, name: String, value: String) -> Result<(), CollateError> {
        let p = self.current_pass();
        let step = &mut self.steps[p];
        let mut charge = value.len() + name.len();
        if Rc::strong_count(&step.strings) > 1 {
            charge += step.strings_bytes;
        }
        self.doc.budget.text(charge)?;
        let id = self.var(&name);
        let step = &mut self.steps[p];
        let added = value.len();
        // the map holds each name once: only a new name adds its length
        match Rc::make_mut(&mut step.strings).insert(id, value) {
            Some(old) => {
                step.strings_bytes = (step.strings_bytes + added).saturating_sub(old.len())
            }
            None => step.strings_bytes += added + name.len(),
        }
        Ok(())
    }

    fn do_string_set(&mut self, node: NodeId, decl: &Decl) -> Result<(), CollateError> {
        let args = css::serialize(&decl.value);
        let bad = |me: &mut Self| me.warning(format!("Bad string-set: {args}"));
        let mut text = String::new();
        let mut name: Option<String> = None;
        for term in &decl.value {
            match term {
                Cv::Ws(_) => {}
                Cv::Str(s) => match name {
                    Some(_) => text.push_str(s),
                    None => bad(self),
                },
                Cv::Ident(s) => match name {
                    Some(_) => bad(self),
                    None => name = Some(s.clone()),
                },
                Cv::Lit(_) => match name.take() {
                    Some(n) => self.set_string(n, std::mem::take(&mut text))?,
                    None => bad(self),
                },
                Cv::Func {
                    name: f,
                    args: fargs,
                } => match f.as_str() {
                    "string" => {
                        let v = self.string_fn(node, fargs)?;
                        match name {
                            Some(_) => text.push_str(&v),
                            None => bad(self),
                        }
                    }
                    "counter" | "counters" => {
                        let v = self.counter_fn(f, fargs);
                        text.push_str(&v);
                    }
                    "attr" if name.is_some() => {
                        if let Some(v) = self.attr_fn(node, fargs)? {
                            text.push_str(&v);
                        }
                    }
                    "content" if name.is_some() => text.push_str(&self.content_text(node)?),
                    "attr" | "content" => bad(self),
                    "first-letter" => {
                        let inner = self.eval_string(node, fargs)?;
                        match inner.first() {
                            Some(Piece::Text(s)) => {
                                if let Some(c) = s.chars().next() {
                                    text.push(c);
                                }
                            }
                            Some(Piece::Target { .. }) => self.warning(format!(
                                "Bad string value: nested target-* not allowed. {args}"
                            )),
                            None => {}
                        }
                    }
                    "pending" => {
                        self.warning(format!("Bad string-set:pending() not allowed. {args}"))
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        if let Some(n) = name {
            self.set_string(n, text)?;
        }
        Ok(())
    }

    /// `counter-reset` (`increment == false`) and `counter-increment`:
    /// `name [number], name [number] …`.
    fn do_counters(&mut self, decl: &Decl, increment: bool) {
        let p = self.current_pass();
        let mut pending_name: &str = "";
        let mut updates: Vec<(u32, Option<i64>)> = Vec::new();
        for term in &decl.value {
            match term {
                Cv::Ws(_) => {}
                Cv::Ident(s) => {
                    if !pending_name.is_empty() {
                        updates.push((self.var(pending_name), None));
                    }
                    pending_name = s;
                }
                Cv::Lit(_) => {
                    if !pending_name.is_empty() {
                        updates.push((self.var(pending_name), None));
                        pending_name = "";
                    }
                }
                Cv::Num { value, .. } => {
                    if !pending_name.is_empty() {
                        updates.push((self.var(pending_name), Some(value.trunc() as i64)));
                        pending_name = "";
                    }
                }
                other => {
                    let kind = if increment { "increment" } else { "reset" };
                    self.warning(format!(
                        "Unrecognized counter-{kind} term {}",
                        css::serialize(std::slice::from_ref(other)).trim()
                    ));
                }
            }
        }
        if !pending_name.is_empty() {
            updates.push((self.var(pending_name), None));
        }
        let counters = Rc::make_mut(&mut self.steps[p].counters);
        for (name, n) in updates {
            if increment {
                let by = n.unwrap_or(1);
                let slot = counters.entry(name).or_insert(0);
                *slot = slot.saturating_add(by);
            } else {
                counters.insert(name, n.unwrap_or(0));
            }
        }
    }

    /// `move-to`, `copy-to` and `node-set`: put the current target in a bucket.
    fn do_bucket(&mut self, bucket: &str, kind: PendKind) {
        let Some(elem) = self.current_tree() else {
            return;
        };
        if kind == PendKind::Move {
            // a node moves once: a later move-to replaces a placement already recorded
            self.cancel_move(elem);
        }
        let (owner, bucket) = match self.lookup_pending(bucket) {
            Some(found) => found,
            None => (self.current_pass(), self.var(bucket)),
        };
        let pending = &mut self.steps[owner].pending;
        match kind {
            PendKind::NodeSet => {
                pending.insert(bucket, vec![(kind, elem)]);
            }
            _ => pending.entry(bucket).or_default().push((kind, elem)),
        }
    }

    fn do_container(&mut self, decl: &'r Decl) {
        let (prefix, local) = match &decl.kind {
            DeclKind::Container { prefix, local } => (prefix.as_deref(), local.as_str()),
            _ => return,
        };
        let recipe = self.recipe;
        let ns = match prefix {
            None => "",
            Some(p) => match recipe.namespaces.get(p) {
                Some(uri) => uri.as_str(),
                None => {
                    self.warning(format!("undefined namespace prefix: {p}"));
                    ""
                }
            },
        };
        if !super::validate::is_xml_name(local) {
            self.warning(format!(
                "Invalid container name {:?} ignored",
                css::serialize(&decl.value).trim()
            ));
            return;
        }
        self.push(Action::Tag(ns, local));
    }

    fn do_sort(&mut self, node: NodeId, sort: Option<u32>, group: Option<u32>, is_group: bool) {
        let lang = self.entered_lang();
        if let Some(t) = self.current_target() {
            let tg = &mut self.targets[t as usize];
            tg.sort = sort;
            tg.lang = Some(lang);
            tg.is_group = is_group;
            tg.group = group;
        }
        // easybake also sets the sort on the latest target of the element
        // itself (not its language)
        let host = self
            .target_pos
            .iter()
            .rev()
            .find_map(|&pos| match self.actions[pos].action {
                Action::Target(t) if self.targets[t as usize].tree == node => Some(t),
                _ => None,
            });
        if let Some(t) = host {
            let tg = &mut self.targets[t as usize];
            tg.sort = sort;
            tg.is_group = is_group;
            tg.group = group;
        }
    }

    fn do_content(
        &mut self,
        node: NodeId,
        decl: &Decl,
        pseudo: Option<Pseudo>,
    ) -> Result<(), CollateError> {
        let Some(elem) = self.current_tree() else {
            return Ok(());
        };
        if elem == node || pseudo == Some(Pseudo::Inside) {
            self.push(Action::Clear);
        }
        let before = self.actions.len();
        let mut wastebin: Vec<(PendKind, NodeId)> = Vec::new();
        for term in &decl.value {
            match term {
                Cv::Ws(_) => {}
                Cv::Str(s) | Cv::Lit(s) => {
                    let s = self.copied(s)?;
                    self.push(Action::Text(s));
                }
                Cv::Func { name, args } => match name.as_str() {
                    "string" => {
                        let v = self.string_fn(node, args)?;
                        if !v.is_empty() {
                            self.push(Action::Text(v));
                        }
                    }
                    "counter" | "counters" => {
                        let v = self.counter_fn(name, args);
                        self.push(Action::Text(v));
                    }
                    n if n.starts_with("target-") => {
                        if let Some(p) = self.target_fn(node, n, args)? {
                            self.push(piece_action(p));
                        }
                    }
                    "attr" => {
                        if let Some(v) = self.attr_fn(node, args)? {
                            self.push(Action::Text(v));
                        }
                    }
                    "uuid" => {
                        let id = self.generate_id();
                        self.push(Action::Text(id));
                    }
                    "first-letter" => {
                        // easybake pushes the whole first value here, not one letter
                        let inner = self.eval_string(node, args)?;
                        if let Some(p) = inner.into_iter().next() {
                            self.push(piece_action(p));
                        }
                    }
                    "content" => match pseudo {
                        Some(Pseudo::Before) | Some(Pseudo::After) => {
                            let copy = self.doc.deep_copy(node, "_copy")?;
                            self.push(Action::Content(Some(copy)));
                        }
                        Some(Pseudo::Outside) => self.push(Action::Move(node)),
                        _ => self.push(Action::Content(None)),
                    },
                    "pending" | "nodes" | "clear" => {
                        self.content_bucket(name, args, &mut wastebin)?
                    }
                    _ => self.warning(format!("Unknown function {name}")),
                },
                other => self.warning(format!(
                    "Unknown term {}",
                    css::serialize(std::slice::from_ref(other)).trim()
                )),
            }
        }
        if pseudo.is_some() && self.actions.len() == before {
            wastebin.push((PendKind::Move, elem));
        }
        self.throw_away(wastebin)
    }

    /// `pending()`, `nodes()`, `clear()` in `content`: queue the bucket's
    /// nodes here (`nodes()` keeps the bucket), or put them in the bin.
    fn content_bucket(
        &mut self,
        func: &str,
        args: &[Cv],
        wastebin: &mut Vec<(PendKind, NodeId)>,
    ) -> Result<(), CollateError> {
        let bucket = match css::single_token(args) {
            Some(b) => Cow::Borrowed(b),
            None => Cow::Owned(css::serialize(args)),
        };
        let Some((owner, bucket)) = self.lookup_pending(&bucket) else {
            self.note(Level::Info, format!("{bucket} empty bucket"));
            return Ok(());
        };
        let pending = &mut self.steps[owner].pending;
        let items = if func == "nodes" {
            pending.get(&bucket).cloned().unwrap_or_default()
        } else {
            pending.remove(&bucket).unwrap_or_default()
        };
        if func == "clear" {
            wastebin.extend(items);
            return Ok(());
        }
        for (kind, n) in items {
            let kind = match (func, kind) {
                ("nodes", PendKind::Move) => PendKind::NodeSet,
                (_, k) => k,
            };
            self.push_pending(kind, n)?;
        }
        Ok(())
    }

    /// What is cleared (or an empty wrapper) goes into a detached bin.
    fn throw_away(&mut self, wastebin: Vec<(PendKind, NodeId)>) -> Result<(), CollateError> {
        if !wastebin.is_empty() {
            let div = self.doc.known.div;
            let bin = self.doc.new_element(EMPTY, div)?;
            self.doc.set_attr(bin, "class", "delete-me".into());
            if matches!(self.last(), Some(Action::Target(_))) {
                self.pop();
            }
            let t = self.new_target(Target::plain(bin));
            self.push(Action::Target(t));
            for (kind, n) in wastebin {
                self.push_pending(kind, n)?;
            }
        }
        Ok(())
    }
}

fn piece_action(p: Piece) -> Action<'static> {
    match p {
        Piece::Text(s) => Action::Text(s),
        other => Action::Str(Box::new([other])),
    }
}

impl Oven<'_> {
    /// Queues a node of a bucket; a copy reserves the node it will add.
    fn push_pending(&mut self, kind: PendKind, n: NodeId) -> Result<(), CollateError> {
        let action = match kind {
            PendKind::Move => Action::Move(n),
            PendKind::Copy => Action::Copy(n),
            PendKind::NodeSet => Action::NodeSet(n),
        };
        if kind != PendKind::Move {
            self.doc.budget.reserve_node(self.doc.len())?;
        }
        self.push(action);
        Ok(())
    }
}
