//! Compiling a recipe once: rules, their passes, and a rule index.
//!
//! Everything that does not depend on the document is done here, so baking
//! many documents with one cached recipe only walks and applies. Each
//! selector of a rule list is compiled separately (a bad one does not take
//! its siblings down, as in easybake), assigned to its passes (`:pass()`),
//! labelled by its pseudo-element (`before`, `after_deferred`, …) and indexed
//! by the id, class, type or namespace of its rightmost compound, so that an
//! element is only tested against rules that can possibly match it — what
//! cssselect2's `Matcher` does for the reference.
//!
//! Strict mode (the default) refuses what the reference only warns about at
//! bake time: unknown properties, functions, pseudo-classes and
//! pseudo-elements, malformed `string-set`/counter values, undefined
//! namespace prefixes. Compatibility mode keeps those as warnings.

use std::collections::HashMap;
use std::sync::Arc;

use selectors::parser::{Component, Selector};

use super::atom::{self, Interner};
use super::css::{self, Cv, RawDecl, TopItem};
use super::error::CollateError;
use super::index::{IndexKey, RuleIndex};
use super::select::{self, Impl, PseudoClass, PseudoElement, SelMode};
use super::sortkey::KeyFn;
use super::validate;
use super::warning::{Level, Warning};

/// Which group of a matched element's rules a selector belongs to.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Hash)]
pub(crate) enum Label {
    Plain,
    Before,
    After,
    Outside,
    Inside,
    Deferred,
    BeforeDeferred,
    AfterDeferred,
    OutsideDeferred,
    InsideDeferred,
    /// A pseudo-element easybake accepts but never acts on.
    Ignored,
}

/// Where generated content goes, i.e. the pseudo-element a rule runs for.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub(crate) enum Pseudo {
    Before,
    After,
    Outside,
    Inside,
}

/// A declaration, with its property resolved once.
#[derive(Clone, Debug)]
pub(crate) struct Decl {
    pub(crate) name: String,
    pub(crate) value: Vec<Cv>,
    pub(crate) kind: DeclKind,
}

#[derive(Clone, Debug)]
pub(crate) enum DeclKind {
    StringSet,
    CounterReset,
    CounterIncrement,
    /// `node-set`, `copy-to`, `move-to`: the bucket's name (its value as
    /// text, as easybake names it).
    NodeSet(String),
    CopyTo(String),
    MoveTo(String),
    /// `container: [prefix|]local`.
    Container {
        prefix: Option<String>,
        local: String,
    },
    /// `class`, `attr-*` and `data-*`: set this attribute on the target.
    Attribute(String),
    Content,
    /// `sort-by` / `group-by`: indices into [`Compiled::keys`].
    Sort {
        sort: Option<u32>,
        group: Option<u32>,
        is_group: bool,
    },
    /// A key selector that did not compile (compatibility mode only).
    BrokenSort,
    OldPass,
    Unknown,
}

#[derive(Clone, Debug)]
pub(crate) struct RuleDef {
    pub(crate) line: u32,
    pub(crate) prelude: String,
    pub(crate) decls: Vec<Decl>,
}

/// One compiled selector of a rule.
pub(crate) struct Entry {
    pub(crate) selector: Selector<Impl>,
    pub(crate) rule: u32,
    pub(crate) label: Label,
    pub(crate) specificity: u32,
}

pub(crate) struct PassDef {
    pub(crate) name: String,
    pub(crate) index: RuleIndex,
}

/// A recipe ready to bake with.
pub(crate) struct Compiled {
    /// Every name the selectors use; documents extend it (see `atom.rs`).
    pub(crate) atoms: Arc<Interner>,
    pub(crate) strict: bool,
    pub(crate) namespaces: HashMap<String, String>,
    pub(crate) rules: Vec<RuleDef>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) passes: Vec<PassDef>,
    pub(crate) keys: Vec<KeyFn>,
    /// Problems found while parsing (default mode), reported with every bake.
    pub(crate) warnings: Vec<Warning>,
    /// Whether any value uses `target-counter()`/`target-string()`; only
    /// then are variables recorded at every element with an id.
    pub(crate) uses_targets: bool,
}

struct Compiler {
    strict: bool,
    namespaces: HashMap<String, String>,
    rules: Vec<RuleDef>,
    entries: Vec<Entry>,
    pass_names: Vec<String>,
    pass_index: HashMap<String, RuleIndex>,
    order: u32,
    keys: Vec<KeyFn>,
    warnings: Vec<Warning>,
}

/// Compiles `css`; `strict` turns the reference's warnings into errors.
pub(crate) fn compile(css_text: &str, strict: bool) -> Result<Compiled, CollateError> {
    let (compiled, atoms) = atom::compiling(|| compile_rules(css_text, strict));
    let mut compiled = compiled?;
    compiled.atoms = Arc::new(atoms);
    Ok(compiled)
}

/// [`compile`], with the recipe's interner active.
fn compile_rules(css_text: &str, strict: bool) -> Result<Compiled, CollateError> {
    let (items, dropped) = css::parse_stylesheet(css_text)?;
    let mut c = Compiler {
        strict,
        namespaces: HashMap::new(),
        rules: Vec::new(),
        entries: Vec::new(),
        pass_names: Vec::new(),
        pass_index: HashMap::new(),
        order: 0,
        keys: Vec::new(),
        warnings: Vec::new(),
    };
    if let Some((line, text)) = dropped.first() {
        if strict {
            return Err(CollateError::recipe(
                *line,
                text,
                "invalid declaration (expected `name: value`)",
            ));
        }
    }
    for (line, text) in &dropped {
        // the reference drops these silently
        c.warn(
            Level::Info,
            *line,
            format!("Invalid declaration ignored: {}", css_short(text)),
        );
    }
    for item in items {
        match item {
            TopItem::AtRule {
                line,
                column,
                name,
                prelude,
            } => c.at_rule(line, column, &name, &prelude)?,
            TopItem::Rule {
                line,
                prelude,
                decls,
            } => c.rule(line, prelude, decls)?,
        }
    }
    let passes = c.order_passes();
    let uses_targets = c
        .rules
        .iter()
        .flat_map(|r| r.decls.iter())
        .any(|d| mentions_target(&d.value));
    Ok(Compiled {
        atoms: Arc::default(),
        uses_targets,
        strict,
        namespaces: c.namespaces,
        rules: c.rules,
        entries: c.entries,
        passes,
        keys: c.keys,
        warnings: c.warnings,
    })
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("strict", &self.strict)
            .field("rules", &self.rules.len())
            .field(
                "passes",
                &self
                    .passes
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn css_short(s: &str) -> String {
    super::error::shorten(s)
}

impl Compiler {
    fn warn(&mut self, level: Level, line: u32, message: String) {
        self.warnings.push(Warning {
            level,
            line,
            message,
            count: 1,
        });
    }

    fn at_rule(
        &mut self,
        line: u32,
        column: u32,
        name: &str,
        prelude: &[Cv],
    ) -> Result<(), CollateError> {
        if !name.eq_ignore_ascii_case("namespace") {
            if self.strict {
                return Err(CollateError::recipe(
                    line,
                    &format!("@{name}"),
                    "unsupported at-rule",
                ));
            }
            // the reference skips other at-rules silently
            self.warn(Level::Info, line, format!("Ignored at-rule @{name}"));
            return Ok(());
        }
        match prelude {
            [Cv::Ws(_), Cv::Ident(prefix), Cv::Ws(_), Cv::Str(uri)] => {
                self.namespaces.insert(prefix.clone(), uri.clone());
                Ok(())
            }
            _ if self.strict => Err(CollateError::recipe(
                line,
                &format!("@{name}{}", css::serialize(prelude)),
                "unsupported @namespace form; write @namespace prefix \"uri\"; (default namespaces are not supported)",
            )),
            _ => {
                self.warn(
                    Level::Warning,
                    line,
                    format!("Unknown @namespace format at {line}:{column}"),
                );
                Ok(())
            }
        }
    }

    fn rule(
        &mut self,
        line: u32,
        prelude: String,
        raw_decls: Vec<RawDecl>,
    ) -> Result<(), CollateError> {
        let rule_no = self.rules.len() as u32;
        let mut decls = Vec::with_capacity(raw_decls.len());
        for d in raw_decls {
            let kind = self.decl_kind(&d).map_err(|msg| {
                CollateError::recipe(d.line, &prelude, format!("{}: {msg}", d.name))
            })?;
            decls.push(Decl {
                name: d.name,
                value: d.value,
                kind,
            });
        }
        for (offset, piece) in select::split_list(&prelude) {
            let lead = piece.len() - piece.trim_start().len();
            let sel_line = line + prelude[..offset + lead].matches('\n').count() as u32;
            let text = piece.trim();
            let mode = SelMode::Rule {
                strict: self.strict,
            };
            let selector = match select::parse_one(text, &self.namespaces, mode) {
                Ok(s) => s,
                Err(msg) if self.strict => return Err(CollateError::recipe(sel_line, text, msg)),
                Err(msg) => {
                    self.warn(
                        Level::Warning,
                        sel_line,
                        format!("Invalid selector: {prelude} ({msg})"),
                    );
                    continue;
                }
            };
            self.add_selector(selector, rule_no, sel_line, text);
        }
        self.rules.push(RuleDef {
            line,
            prelude,
            decls,
        });
        Ok(())
    }

    /// Files one compiled selector of rule `rule_no` in the index of each
    /// of its passes, labelled by its pseudo-element.
    fn add_selector(&mut self, selector: Selector<Impl>, rule_no: u32, line: u32, text: &str) {
        let mut passes = Vec::new();
        let mut deferred = false;
        collect_extras(&selector, &mut passes, &mut deferred);
        passes.sort();
        passes.dedup();
        if passes.is_empty() {
            passes.push("default".to_string());
        }
        let label = label_of(selector.pseudo_element(), deferred);
        if label == Label::Ignored {
            // the reference accepts such a rule and silently never runs it
            let pe = selector
                .pseudo_element()
                .map(|p| p.label())
                .unwrap_or_default();
            self.warn(
                Level::Info,
                line,
                format!("Rules for ::{pe} never run: {text}"),
            );
        }
        let entry = self.entries.len() as u32;
        let specificity = selector.specificity();
        let key = (label != Label::Ignored).then(|| IndexKey::of(&selector));
        self.entries.push(Entry {
            selector,
            rule: rule_no,
            label,
            specificity,
        });
        for p in passes {
            if !self.pass_index.contains_key(&p) {
                self.pass_names.push(p.clone());
            }
            self.order += 1;
            let index = self.pass_index.entry(p).or_default();
            // a rule easybake never runs is not indexed (its pass still exists)
            if let Some(key) = &key {
                index.insert(key, self.order, entry);
            }
        }
    }

    /// Pass order as easybake computes it: `default` first (renamed `0` when
    /// the other passes are numbers), then numeric order if every other name
    /// is an integer, else lexicographic.
    fn order_passes(&mut self) -> Vec<PassDef> {
        let mut names = self.pass_names.clone();
        names.sort();
        let numeric = |v: &[String]| v.iter().all(|n| n.trim().parse::<i64>().is_ok());
        let sort_numeric =
            |v: &mut Vec<String>| v.sort_by_key(|n| n.trim().parse::<i64>().unwrap_or(0));
        let mut order: Vec<(String, String)> = Vec::new(); // (display name, key in pass_index)
        if names.len() > 1 {
            if let Some(pos) = names.iter().position(|n| n == "default") {
                names.remove(pos);
                if numeric(&names) {
                    sort_numeric(&mut names);
                    order.push(("0".into(), "default".into()));
                } else {
                    order.push(("default".into(), "default".into()));
                }
            } else if numeric(&names) {
                sort_numeric(&mut names);
            }
        }
        order.extend(names.into_iter().map(|n| (n.clone(), n)));
        order
            .into_iter()
            .map(|(name, key)| PassDef {
                name,
                index: self.pass_index.remove(&key).unwrap_or_default(),
            })
            .collect()
    }

    fn decl_kind(&mut self, d: &RawDecl) -> Result<DeclKind, String> {
        let method = d.name.replace('-', "_");
        let kind = match method.as_str() {
            "string_set" => DeclKind::StringSet,
            "counter_reset" => DeclKind::CounterReset,
            "counter_increment" => DeclKind::CounterIncrement,
            "node_set" => DeclKind::NodeSet(bucket_name(&d.value)),
            "copy_to" => DeclKind::CopyTo(bucket_name(&d.value)),
            "move_to" => DeclKind::MoveTo(bucket_name(&d.value)),
            "container" => {
                let name = css::serialize(&d.value).trim().to_string();
                match name.split_once('|') {
                    Some((p, l)) => DeclKind::Container {
                        prefix: Some(p.to_string()),
                        local: l.to_string(),
                    },
                    None => DeclKind::Container {
                        prefix: None,
                        local: name,
                    },
                }
            }
            "class" => DeclKind::Attribute("class".into()),
            "content" => DeclKind::Content,
            "group_by" => return self.sort_kind(d, true),
            "sort_by" => return self.sort_kind(d, false),
            "pass" => DeclKind::OldPass,
            "attr_any" => DeclKind::Attribute("any".into()),
            "data_any" => DeclKind::Attribute(d.name.clone()),
            _ if d.name.starts_with("data-") => DeclKind::Attribute(d.name.clone()),
            _ if d.name.starts_with("attr-") => DeclKind::Attribute(d.name[5..].to_string()),
            _ => DeclKind::Unknown,
        };
        if self.strict {
            validate::declaration(&kind, d, &self.namespaces)?;
        }
        Ok(kind)
    }

    /// `sort-by: SELECTOR[, nocase]`, `group-by: SELECTOR[, SELECTOR][, nocase]`.
    fn sort_kind(&mut self, d: &RawDecl, is_group: bool) -> Result<DeclKind, String> {
        let pieces: Vec<String> = css::split(&d.value, ",")
            .iter()
            .map(|p| css::serialize(p))
            .collect();
        let commas = d.value.iter().filter(|t| t.is_lit(",")).count();
        let shape_ok;
        let (mut sort_css, mut group_css, mut flags) =
            (String::new(), String::new(), String::new());
        if is_group {
            if commas == 0 {
                sort_css = css::serialize(&d.value);
                shape_ok = true;
            } else if commas == 2 && pieces.len() == 3 {
                sort_css = pieces[0].clone();
                group_css = pieces[1].clone();
                flags = pieces[2].clone();
                shape_ok = true;
            } else if commas != 2 && pieces.len() == 2 {
                sort_css = pieces[0].clone();
                group_css = pieces[1].clone();
                shape_ok = true;
            } else {
                shape_ok = false;
            }
            if group_css.trim() == "nocase" {
                flags = std::mem::take(&mut group_css);
            }
        } else if commas == 0 {
            sort_css = css::serialize(&d.value);
            shape_ok = true;
        } else if pieces.len() == 2 {
            sort_css = pieces[0].clone();
            flags = pieces[1].clone();
            shape_ok = true;
        } else {
            shape_ok = false;
        }
        let result = if shape_ok {
            let nocase = flags.contains("nocase");
            self.key(&sort_css, nocase).and_then(|sort| {
                let group = self.key(&group_css, nocase)?;
                Ok(DeclKind::Sort {
                    sort,
                    group,
                    is_group,
                })
            })
        } else {
            Err(format!(
                "expected {}",
                if is_group {
                    "SELECTOR[, SELECTOR][, nocase]"
                } else {
                    "SELECTOR[, nocase]"
                }
            ))
        };
        match result {
            Ok(k) => Ok(k),
            Err(msg) if self.strict => Err(msg),
            Err(msg) => {
                // The reference logs nothing here (it would only fail once a node
                // is inserted into such a target; upstream's recipes carry one such
                // key on purpose), so this is information, not a warning.
                self.warn(
                    Level::Info,
                    d.line,
                    format!(
                        "{} ignored: {} ({msg})",
                        d.name,
                        css::serialize(&d.value).trim()
                    ),
                );
                Ok(DeclKind::BrokenSort)
            }
        }
    }

    fn key(&mut self, text: &str, nocase: bool) -> Result<Option<u32>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        let key = KeyFn::compile(text, nocase, &self.namespaces, self.strict)?;
        self.keys.push(key);
        Ok(Some(self.keys.len() as u32 - 1))
    }
}

/// The name of a bucket a `move-to`/`copy-to`/`node-set` value names.
fn bucket_name(value: &[Cv]) -> String {
    css::serialize(value).trim().to_string()
}

fn mentions_target(values: &[Cv]) -> bool {
    values.iter().any(|v| match v {
        Cv::Func { name, args } => name.starts_with("target-") || mentions_target(args),
        Cv::Block { content, .. } => mentions_target(content),
        _ => false,
    })
}

/// Walks a selector (and its `:not()` arguments, as easybake does) for
/// `:pass()` names and `:deferred`.
fn collect_extras(sel: &Selector<Impl>, passes: &mut Vec<String>, deferred: &mut bool) {
    for c in sel.iter_raw_match_order() {
        match c {
            Component::NonTSPseudoClass(PseudoClass::Pass(p)) => passes.push(p.clone()),
            Component::NonTSPseudoClass(PseudoClass::Deferred) => *deferred = true,
            Component::Negation(list) => {
                for s in list.slice() {
                    collect_extras(s, passes, deferred);
                }
            }
            _ => {}
        }
    }
}

fn label_of(pseudo: Option<&PseudoElement>, deferred: bool) -> Label {
    use PseudoElement as P;
    match (pseudo, deferred) {
        (None, false) => Label::Plain,
        (None, true) | (Some(P::Deferred), false) => Label::Deferred,
        (Some(P::Before), false) => Label::Before,
        (Some(P::After), false) => Label::After,
        (Some(P::Outside), false) => Label::Outside,
        (Some(P::Inside), false) => Label::Inside,
        (Some(P::Before), true) => Label::BeforeDeferred,
        (Some(P::After), true) => Label::AfterDeferred,
        (Some(P::Outside), true) => Label::OutsideDeferred,
        (Some(P::Inside), true) => Label::InsideDeferred,
        _ => Label::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(c: &Compiled) -> Vec<String> {
        c.passes.iter().map(|p| p.name.clone()).collect()
    }

    #[test]
    fn orders_passes_like_easybake() {
        let c = compile("a {} b:pass(10) {} c:pass(2) {}", true).unwrap();
        assert_eq!(names(&c), vec!["0", "2", "10"]);
        let c = compile("a {} :pass(second) b {} :pass(first) c {}", true).unwrap();
        assert_eq!(names(&c), vec!["default", "first", "second"]);
        let c = compile(":pass(b) x {} :pass(a) y {}", true).unwrap();
        assert_eq!(names(&c), vec!["a", "b"]);
        let c = compile("", true).unwrap();
        assert!(names(&c).is_empty());
    }

    #[test]
    fn strict_mode_names_line_and_rule() {
        let err = compile(
            "a { content: 'x'; }\n\ndiv::insde {\n content: 'y';\n}",
            true,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "recipe line 3, rule \"div::insde\": unknown pseudo-element ::insde"
        );
        let err = compile("div {\n  colour: red;\n}", true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "recipe line 2, rule \"div\": colour: unknown property"
        );
        let err = compile("div { content: nosuch(); }", true).unwrap_err();
        assert!(
            err.to_string().contains("unknown function nosuch()"),
            "{err}"
        );
        let err = compile("div { string-set: \"bad\"; }", true).unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
        let err = compile("/* x */\np,\n  li:nope { content: 'x'; }", true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "recipe line 3, rule \"li:nope\": unknown pseudo-class :nope"
        );
    }

    #[test]
    fn compat_mode_warns_instead() {
        let c = compile(
            "div:nonsuch { a: b } @namespace 'x'; div { colour: red; }",
            false,
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert_eq!(c.entries.len(), 1);
    }

    #[test]
    fn labels_and_index() {
        let c = compile(
            "div.a::after:deferred {} #x::before {} p {} *::inside {}",
            false,
        );
        // pseudo-classes after a pseudo-element are not valid CSS
        assert!(c.is_ok());
        let c = compile(
            "div.a:deferred::after {} #x::before {} p {} *::inside {}",
            true,
        )
        .unwrap();
        let labels: Vec<Label> = c.entries.iter().map(|e| e.label).collect();
        assert_eq!(
            labels,
            vec![
                Label::AfterDeferred,
                Label::Before,
                Label::Plain,
                Label::Inside
            ]
        );
        let idx = &c.passes[0].index;
        assert!(idx.by_class.contains_key("a"));
        assert!(idx.by_id.contains_key("x"));
        let p = c.atoms.lookup("p").unwrap();
        assert!(idx.by_local.contains_key(&p));
        assert_eq!(idx.other.len(), 1);
        let c = compile(
            "[data-type=note] {} [data-type=note i] {} p[data-x] {} [data-y] {}",
            true,
        )
        .unwrap();
        let idx = &c.passes[0].index;
        let dt = c.atoms.lookup("data-type").unwrap();
        assert_eq!(idx.by_attr_value[&dt]["note"].len(), 1);
        assert_eq!(idx.by_attr[&dt].len(), 1);
        assert_eq!(idx.by_local.len(), 1);
        assert_eq!(idx.by_attr.len(), 2);
    }
}
