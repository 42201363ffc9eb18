//! The architecture as a test: dependencies between palisade's modules point one way,
//! and the capability types are made only where they may be.
//!
//! It reads the source (every `crate::module` path, also inside `use crate::{…}`
//! groups) and fails on any edge the layering does not allow — a cycle can only start
//! with such an edge.

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
    ("store", &["access", "config", "secret", "timeutil"]),
    ("audit", &["access", "store", "telemetry", "timeutil"]),
    (
        "auth",
        &[
            "access",
            "audit",
            "config",
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
            "secret",
            "store",
            "telemetry",
            "timeutil",
        ],
    ),
    (
        "llm",
        &["config", "secret", "store", "telemetry", "timeutil"],
    ),
    (
        "chat",
        &[
            "access",
            "audit",
            "config",
            "llm",
            "rag",
            "secret",
            "store",
            "telemetry",
            "threads",
            "timeutil",
        ],
    ),
    (
        "http",
        &[
            "access",
            "audit",
            "auth",
            "chat",
            "config",
            "llm",
            "rag",
            "secret",
            "store",
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

/// Every module named after `crate::` in `text`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
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
    let refs = crate_refs("use crate::{store::X, auth};\nlet x = crate::rag::f();");
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["auth", "rag", "store"]
    );
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
                rel.starts_with("auth/") || rel == "access.rs" || rel == "store/conformance.rs",
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
