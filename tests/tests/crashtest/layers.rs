//! Guards the module layering of `ptm` and `nvme-backing`: every module imports only modules
//! below it in a declared order (the engine below the public front), so no import circle comes
//! back. A new module must be placed in the order here.
//!
//! The check reads the sources: every `crate::` path outside comments and unit-test modules
//! (`use` lines and inline paths alike) names the module it points into; a path to an item
//! re-exported at the crate root counts as a path into the module it comes from.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// `ptm`'s modules, lowest first: a module may use only modules listed before it (and its own
/// submodules). The engine (`engine::*`) never reaches the front (`tx`, `pool`, the cells, ...).
const PTM: &[&str] = &[
    "error",
    "sync",
    "engine",
    "engine::lockword",
    "engine::completions",
    "engine::lanes",
    "engine::heap",
    "engine::layout",
    "engine::tx_heap",
    "engine::range_index",
    "engine::lane_state",
    "engine::nested_refs",
    "engine::shared",
    "engine::log",
    "tx",
    "nested",
    "alloc",
    "cell",
    "checked",
    "schema",
    "pool",
    "grow",
    "inspect",
    "internals",
    "",
];

/// `nvme-backing`'s modules, lowest first: the page state machine (`engine`) above the system
/// interfaces it uses (`sys`, the `uffd` ioctls) and below the fault paths that call it
/// (`handler`, the userfaultfd `service` thread) and the region that owns it.
const NVME: &[&str] = &[
    "error", "checksum", "sys", "uffd", "engine", "handler", "service", "region", "pool", "",
];

#[test]
fn ptm_modules_import_only_downward() {
    check(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../ptm/src"), PTM);
}

#[test]
fn nvme_backing_modules_import_only_downward() {
    check(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../nvme-backing/src"),
        NVME,
    );
}

/// The checker itself finds a circle.
#[test]
fn a_circle_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    fs::write(src.join("lib.rs"), "mod a;\nmod b;\npub use a::Thing;\n").unwrap();
    fs::write(src.join("a.rs"), "use crate::b::Other;\npub struct Thing;\n").unwrap();
    fs::write(
        src.join("b.rs"),
        "// crate::a::Thing in a comment is no use\npub struct Other;\n",
    )
    .unwrap();
    assert!(violations(src, &["b", "a", ""]).is_empty());
    fs::write(src.join("b.rs"), "pub struct Other(crate::Thing);\n").unwrap();
    assert_eq!(
        violations(src, &["b", "a", ""]),
        vec!["b uses a (crate::Thing)".to_string()]
    );
}

fn check(src: &Path, order: &[&str]) {
    let v = violations(src, order);
    assert!(
        v.is_empty(),
        "modules that import upward (or are missing from the order):\n{}",
        v.join("\n")
    );
}

/// Every use of a module that is not below the user, as `"user uses target (path)"`.
fn violations(src: &Path, order: &[&str]) -> Vec<String> {
    let files = module_files(src);
    let modules: Vec<String> = files.keys().cloned().collect();
    let reexports = root_reexports(&fs::read_to_string(src.join("lib.rs")).unwrap());
    let rank = |m: &str| order.iter().position(|o| *o == m);
    let mut out = Vec::new();
    for (module, path) in &files {
        let Some(own) = rank(module) else {
            out.push(format!("{module} is not in the declared order"));
            continue;
        };
        let text = code_of(&fs::read_to_string(path).unwrap());
        for (target, shown) in crate_paths(&text, &modules, &reexports) {
            let inside = target == *module || target.starts_with(&format!("{module}::"));
            match rank(&target) {
                _ if inside => {}
                Some(t) if t < own => {}
                _ => out.push(format!("{module} uses {target} ({shown})")),
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Module path (`""` for the crate root, `engine::heap`, ...) -> file.
fn module_files(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            out.insert(parts.join("::"), p);
        }
    }
    out
}

/// The source without comments, string contents and `#[cfg(test)] mod tests` blocks.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i = text[i..].find("*/").map_or(b.len(), |e| i + e + 2);
        } else if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Names re-exported at the crate root (`pub use module::{A, B};`) -> the module they come from.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let code = code_of(lib);
    let mut out = BTreeMap::new();
    for stmt in code.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let rest: String = rest.split_whitespace().collect();
        let (module, names) = match rest.find("::{") {
            Some(i) => (&rest[..i], rest[i + 3..].trim_end_matches('}').to_string()),
            None => match rest.rfind("::") {
                Some(i) => (&rest[..i], rest[i + 2..].to_string()),
                None => continue,
            },
        };
        for name in names.split(',').filter(|n| !n.is_empty()) {
            let name = name.rsplit(" as ").next().unwrap();
            out.insert(name.to_string(), module.trim_start_matches("crate::").to_string());
        }
    }
    out
}

/// The modules `crate::` paths in `code` point into, with the path as written.
fn crate_paths(
    code: &str,
    modules: &[String],
    reexports: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && is_ident(code.as_bytes()[i - 1]) {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        for path in paths_at(rest) {
            let segs: Vec<&str> = path.split("::").collect();
            let target = match longest_module(&path, modules) {
                Some(t) => t,
                // An item at the root: a re-export counts as its source module; an item the root
                // defines itself (a constant) is a leaf.
                None => match reexports.get(segs[0]).and_then(|m| longest_module(m, modules)) {
                    Some(m) => m,
                    None => continue,
                },
            };
            out.push((target, format!("crate::{path}")));
        }
    }
    out
}

/// The longest prefix of `path` that is a module of the crate (none for another crate's path).
fn longest_module(path: &str, modules: &[String]) -> Option<String> {
    let segs: Vec<&str> = path.split("::").collect();
    (1..=segs.len())
        .rev()
        .map(|n| segs[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// The paths starting at `rest` (just after `crate::`): one, or several for a `{...}` group.
fn paths_at(rest: &str) -> Vec<String> {
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut end = group.len();
        for (j, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = j;
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        let mut out = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        let inner = &group[..end];
        for (j, c) in inner.char_indices().chain([(inner.len(), ',')]) {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    let item: String = inner[start..j].split_whitespace().collect();
                    if !item.is_empty() {
                        out.extend(paths_at(&item));
                    }
                    start = j + 1;
                }
                _ => {}
            }
        }
        return out;
    }
    let len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    let path = &rest[..len];
    if let Some(prefix) = path.strip_suffix("::") {
        if rest[len..].starts_with('{') {
            return paths_at(&rest[len..])
                .into_iter()
                .map(|p| format!("{prefix}::{p}"))
                .collect();
        }
    }
    vec![path.trim_end_matches(':').to_string()]
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
