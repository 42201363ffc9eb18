//! The architecture as a test: dependencies between palisade's modules point one way,
//! and the capability types are made only where they may be.
//!
//! It reads the source (every `crate::` and `super::` path, also inside nested
//! `use crate::{a::{b, c}, d}` groups) and fails on any edge between modules the
//! layering does not allow, and on any cycle between two files, within a module too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and what it may use. Leaves use nothing of palisade.
const ALLOWED: &[(&str, &[&str])] = &[
    ("access", &[]),
    ("config", &[]),
    ("secret", &[]),
    ("timeutil", &[]),
    // Metric names and recording helpers: a leaf every layer may report through.
    ("telemetry", &[]),
    // The words every layer shares (messages, passages, documents, audit events); only
    // leaves below it.
    ("model", &["access", "timeutil"]),
    (
        "store",
        &["access", "config", "model", "secret", "timeutil"],
    ),
    (
        "audit",
        &["access", "model", "store", "telemetry", "timeutil"],
    ),
    (
        "auth",
        &[
            "access",
            "audit",
            "config",
            "model",
            "secret",
            "store",
            "telemetry",
            "timeutil",
        ],
    ),
    (
        "threads",
        &[
            "access",
            "audit",
            "config",
            "model",
            "secret",
            "store",
            "telemetry",
            "timeutil",
        ],
    ),
    (
        "rag",
        &[
            "access",
            "audit",
            "config",
            "model",
            "secret",
            "store",
            "telemetry",
            "timeutil",
        ],
    ),
    // The model's wire formats: no persistence, no access decisions.
    (
        "llm",
        &["config", "model", "secret", "telemetry", "timeutil"],
    ),
    (
        "chat",
        &[
            "access",
            "audit",
            "config",
            "llm",
            "model",
            "rag",
            "secret",
            "store",
            "telemetry",
            "threads",
            "timeutil",
        ],
    ),
    // The HTTP face talks to services, never to the store.
    (
        "http",
        &[
            "access",
            "audit",
            "auth",
            "chat",
            "config",
            "llm",
            "model",
            "rag",
            "secret",
            "telemetry",
            "threads",
            "timeutil",
        ],
    ),
    (
        "app",
        &[
            "access",
            "audit",
            "auth",
            "chat",
            "config",
            "http",
            "llm",
            "model",
            "rag",
            "secret",
            "store",
            "telemetry",
            "threads",
            "timeutil",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`src/store/sqlite/mod.rs` → store).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// Every path named after `crate::` or `super::` in `text`, expanded: `use
/// crate::{a::{b, c as d}, e::*}` gives `a::b`, `a::c`, `e::*`. Each path starts with its
/// anchor (`crate`, or one `super` per level).
fn paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let anchor = ["crate::", "super::"]
            .into_iter()
            .find(|a| rest.starts_with(a));
        let boundary =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || b"_:".contains(&bytes[i - 1]));
        match anchor {
            Some(a) if boundary => {
                let mut pos = 0;
                for mut p in tree(rest, &mut pos) {
                    if p.len() > 1 {
                        p[0] = a.trim_end_matches(':').to_owned();
                        out.push(p);
                    }
                }
                i += pos.max(a.len());
            }
            _ => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    out
}

/// Parses one use tree at `s[*pos..]` into the paths it names.
fn tree(s: &str, pos: &mut usize) -> Vec<Vec<String>> {
    let b = s.as_bytes();
    let skip_ws = |pos: &mut usize| {
        while *pos < b.len() && b[*pos].is_ascii_whitespace() {
            *pos += 1;
        }
    };
    let mut prefix = Vec::new();
    loop {
        skip_ws(pos);
        if *pos < b.len() && b[*pos] == b'{' {
            *pos += 1;
            let mut out = Vec::new();
            loop {
                skip_ws(pos);
                if *pos >= b.len() {
                    return out;
                }
                if b[*pos] == b'}' {
                    *pos += 1;
                    return out;
                }
                for sub in tree(s, pos) {
                    let mut p = prefix.clone();
                    p.extend(sub);
                    out.push(p);
                }
                skip_ws(pos);
                if *pos < b.len() && b[*pos] == b',' {
                    *pos += 1;
                } else if *pos < b.len() && b[*pos] != b'}' {
                    // Not a use tree after all (code such as `crate::f({ … })`).
                    return out;
                }
            }
        }
        let start = *pos;
        while *pos < b.len()
            && (b[*pos].is_ascii_alphanumeric() || b[*pos] == b'_' || b[*pos] == b'*')
        {
            *pos += 1;
        }
        if *pos == start {
            return vec![prefix];
        }
        prefix.push(s[start..*pos].to_owned());
        if s[*pos..].starts_with("::") {
            *pos += 2;
            continue;
        }
        // `x as y`: the alias names nothing new.
        let save = *pos;
        skip_ws(pos);
        if s[*pos..].starts_with("as ") {
            *pos += 3;
            skip_ws(pos);
            while *pos < b.len() && (b[*pos].is_ascii_alphanumeric() || b[*pos] == b'_') {
                *pos += 1;
            }
        } else {
            *pos = save;
        }
        return vec![prefix];
    }
}

/// Every top-level module named after `crate::` in `text`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    paths(text)
        .into_iter()
        .filter(|p| p[0] == "crate")
        .map(|p| p[1].clone())
        .filter(|m| m != "*")
        .collect()
}

/// The module path of a source file: `src/http/mod.rs` → `[http]`, `src/lib.rs` → `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

/// The file that defines the deepest module named by `path` (anchored at `from`).
fn file_of(src: &Path, from: &[String], path: &[String]) -> Option<PathBuf> {
    let mut module: Vec<String> = Vec::new();
    let mut rest = path;
    if path[0] == "crate" {
        rest = &path[1..];
    } else {
        module = from.to_vec();
        while rest.first().is_some_and(|s| s == "super") {
            module.pop()?;
            rest = &rest[1..];
        }
    }
    let file = |m: &[String]| -> Option<PathBuf> {
        if m.is_empty() {
            return Some(src.join("lib.rs"));
        }
        let dir: PathBuf = m.iter().collect();
        [
            src.join(&dir).with_extension("rs"),
            src.join(&dir).join("mod.rs"),
        ]
        .into_iter()
        .find(|p| p.exists())
    };
    let mut found = file(&module)?;
    for seg in rest {
        module.push(seg.clone());
        match file(&module) {
            Some(f) => found = f,
            None => break,
        }
    }
    Some(found)
}

fn sources() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    (src, files)
}

#[test]
fn dependencies_point_one_way() {
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let (src, files) = sources();
    let mut violations = Vec::new();
    for f in &files {
        let Some(module) = module_of(&src, f) else {
            continue;
        };
        let Some(ok) = allowed.get(module.as_str()) else {
            violations.push(format!(
                "{}: module {module} is not in the layering",
                f.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for used in crate_refs(&text) {
            if used != module && !ok.contains(used.as_str()) {
                violations.push(format!("{}: {module} -> {used}", f.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "edges against the layering:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_and_nested_paths() {
    let refs = crate_refs(
        "use crate::{store::{X, threads::{Y, Z as W}}, auth};\nlet x = crate::rag::f({ 1 });\n\
         use crate::{model::{a, b}, llm};",
    );
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["auth", "llm", "model", "rag", "store"]
    );
    assert_eq!(
        paths("use super::{a::{b, c}, d};"),
        [
            vec!["super", "a", "b"],
            vec!["super", "a", "c"],
            vec!["super", "d"]
        ]
    );
}

/// Edges between files: `a.rs` names something defined in `b.rs`. A module's own
/// children (named by relative paths) are not edges: a parent contains its children.
fn file_graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let (src, files) = sources();
    let mut graph = BTreeMap::new();
    for f in &files {
        let from = module_path(&src, f);
        let text = std::fs::read_to_string(f).unwrap();
        let edges: BTreeSet<PathBuf> = paths(&text)
            .iter()
            .filter_map(|p| file_of(&src, &from, p))
            .filter(|to| to != f)
            .collect();
        graph.insert(f.clone(), edges);
    }
    graph
}

/// Strongly connected components of more than one file (Tarjan).
fn cycles(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        out: Vec<Vec<PathBuf>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a PathBuf) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    self.out.push(scc);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.out
}

#[test]
fn no_two_files_depend_on_each_other() {
    let (src, _) = sources();
    let found: Vec<String> = cycles(&file_graph())
        .into_iter()
        .map(|scc| {
            scc.iter()
                .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
                .collect::<Vec<_>>()
                .join(" <-> ")
        })
        .collect();
    assert!(
        found.is_empty(),
        "import cycles between files:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let g: BTreeMap<PathBuf, BTreeSet<PathBuf>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (PathBuf::from(k), v.into_iter().map(PathBuf::from).collect()))
    .collect();
    let found = cycles(&g);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].len(), 3);
}

#[test]
fn capabilities_are_made_only_where_they_may_be() {
    let (src, files) = sources();
    for f in &files {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(f).unwrap();
        // Identities come from the token verifier (and the crate's own unit tests).
        if text.contains("Principal::verified(") {
            assert!(
                rel.starts_with("auth/")
                    || rel == "access.rs"
                    || rel.starts_with("store/conformance/"),
                "{rel} mints a Principal"
            );
        }
        // The operator capability never appears on an HTTP path.
        if rel.starts_with("http/") {
            assert!(
                !text.contains("Operator"),
                "{rel} names the operator capability"
            );
        }
        // Handlers never see SQL.
        if !rel.starts_with("store/") {
            assert!(!text.contains("rusqlite"), "{rel} talks to SQLite directly");
        }
    }
}
