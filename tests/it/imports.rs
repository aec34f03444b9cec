//! The library's modules form layers: no two sibling modules (top-level ones,
//! or the children of one module such as `model/onnx/`) may reach each other,
//! directly or round a cycle. This test reads `src/` and fails naming the
//! cycle and the lines that make it, so that a new import that closes a loop
//! is caught in CI rather than by the next person who tries to split a crate.
//!
//! What counts as an import: a path that starts with `crate::` or `super::`
//! (in `use` items, including nested `{...}` groups, and in expressions),
//! outside comments and outside a file's `#[cfg(test)]` test module: tests
//! may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path from the crate root: `["model", "onnx", "graph"]`.
type ModulePath = Vec<String>;

/// Every module file of the library with its module path (`lib.rs` is `[]`).
fn library_modules(src: &Path) -> Vec<(ModulePath, PathBuf)> {
    fn walk(dir: &Path, prefix: &ModulePath, out: &mut Vec<(ModulePath, PathBuf)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                // `src/cli/` is the binary, not the library.
                if prefix.is_empty() && name == "cli" {
                    continue;
                }
                let mut inner = prefix.clone();
                inner.push(name);
                walk(&path, &inner, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let module = match name.as_str() {
                    "mod" => prefix.clone(),
                    "lib" if prefix.is_empty() => Vec::new(),
                    "main" if prefix.is_empty() => continue,
                    _ => {
                        let mut module = prefix.clone();
                        module.push(name);
                        module
                    }
                };
                out.push((module, path));
            }
        }
    }
    let mut out = Vec::new();
    walk(src, &Vec::new(), &mut out);
    out
}

/// The code of a file without comments, string contents and its test module.
fn code_of(text: &str) -> String {
    // The test module: `mod tests {` under a `#[cfg(...test...)]` line.
    let mut end = text.len();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with("mod tests {") {
            let before = text[..offset].trim_end().rsplit('\n').next().unwrap_or("");
            if before.starts_with("#[cfg(") && before.contains("test") {
                end = offset - (text[..offset].len() - text[..offset].trim_end().len()) - before.len();
                break;
            }
        }
        offset += line.len();
    }
    let text = &text[..end];
    let mut code = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                // A string's text is not code (messages mention `crate::` paths).
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                code.push_str("\"\"");
            }
            b'\'' if bytes.get(i + 2) == Some(&b'\'') => {
                // A char literal such as '"' or '{'.
                i += 3;
            }
            other => {
                code.push(other as char);
                i += 1;
            }
        }
    }
    code
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The paths a file's code names from `crate::` or `super::`, with the line
/// each is on, resolved to absolute module paths (possibly ending in an
/// item's name, which is harmless: only modules are compared).
fn imports_of(module: &ModulePath, is_mod_file: bool, code: &str) -> Vec<(ModulePath, usize)> {
    // `super` from `a/b.rs` (module a::b) is `a`; from `a/b/mod.rs` (also a::b) it is `a` too.
    let _ = is_mod_file;
    let chars: Vec<char> = code.chars().collect();
    let line_at = |pos: usize| chars[..pos].iter().filter(|&&c| c == '\n').count() + 1;
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let at_word_start = i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == ':');
        let rest: String = chars[i..chars.len().min(i + 7)].iter().collect();
        let root = if at_word_start && rest.starts_with("crate::") {
            Some((Vec::new(), 7))
        } else if at_word_start && rest.starts_with("super::") {
            let mut base = module.clone();
            let mut j = i;
            while chars[j..].iter().take(7).collect::<String>() == "super::" {
                base.pop();
                j += 7;
            }
            Some((base, j - i))
        } else {
            None
        };
        let Some((base, skip)) = root else {
            i += 1;
            continue;
        };
        let start = i;
        i += skip;
        for path in paths_at(&chars, &mut i) {
            let mut full = base.clone();
            full.extend(path);
            found.push((full, line_at(start)));
        }
    }
    found
}

/// Reads `a::b::{c, d::{e}}` (or `a::b`) at `*i`, leaving `*i` after it.
fn paths_at(chars: &[char], i: &mut usize) -> Vec<Vec<String>> {
    let mut prefix = Vec::new();
    loop {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
        if *i < chars.len() && chars[*i] == '{' {
            *i += 1;
            let mut out = Vec::new();
            loop {
                while *i < chars.len() && (chars[*i].is_whitespace() || chars[*i] == ',') {
                    *i += 1;
                }
                if *i >= chars.len() || chars[*i] == '}' {
                    *i += 1;
                    break;
                }
                let before = *i;
                for inner in paths_at(chars, i) {
                    let mut path = prefix.clone();
                    path.extend(inner);
                    out.push(path);
                }
                // `as name`, `self`: skip to the next item of this group.
                let mut depth = 0;
                while *i < chars.len() {
                    match chars[*i] {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => break,
                        _ => {}
                    }
                    *i += 1;
                }
                if *i == before {
                    *i += 1;
                }
            }
            return out;
        }
        let start = *i;
        while *i < chars.len() && is_ident(chars[*i]) {
            *i += 1;
        }
        if *i == start {
            return vec![prefix];
        }
        let word: String = chars[start..*i].iter().collect();
        if word != "self" {
            prefix.push(word);
        }
        if chars.get(*i) == Some(&':') && chars.get(*i + 1) == Some(&':') {
            *i += 2;
        } else {
            return vec![prefix];
        }
    }
}

/// An import between two sibling modules: `from` and `to` are children of
/// `parent`; `at` says where (file:line).
struct Edge {
    parent: ModulePath,
    from: String,
    to: String,
    at: String,
}

fn sibling_edges(src: &Path) -> Vec<Edge> {
    let modules = library_modules(src);
    let known: BTreeSet<ModulePath> = modules.iter().map(|(m, _)| m.clone()).collect();
    let mut edges = Vec::new();
    for (module, path) in &modules {
        let text = std::fs::read_to_string(path).unwrap();
        let is_mod_file = path.file_stem().is_some_and(|s| s == "mod");
        for (target, line) in imports_of(module, is_mod_file, &code_of(&text)) {
            // The longest module prefix of the path (the rest names an item).
            let Some(target) = (0..=target.len())
                .rev()
                .map(|n| target[..n].to_vec())
                .find(|p| known.contains(p))
            else {
                continue;
            };
            let common = module.iter().zip(&target).take_while(|(a, b)| a == b).count();
            // One is inside the other (a module and its own parent or child).
            if common == module.len() || common == target.len() {
                continue;
            }
            edges.push(Edge {
                parent: module[..common].to_vec(),
                from: module[common].clone(),
                to: target[common].clone(),
                at: format!("{}:{line}", path.strip_prefix(src.parent().unwrap()).unwrap().display()),
            });
        }
    }
    edges
}

/// The cycles among the children of each module, as lists of names (one
/// strongly connected component of two or more each).
fn cycles(edges: &[Edge]) -> Vec<(ModulePath, Vec<String>)> {
    let mut by_parent: BTreeMap<&ModulePath, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for edge in edges {
        by_parent
            .entry(&edge.parent)
            .or_default()
            .entry(edge.from.as_str())
            .or_default()
            .insert(edge.to.as_str());
    }
    let mut found = Vec::new();
    for (parent, graph) in by_parent {
        let reaches = |from: &str| {
            let mut seen = BTreeSet::new();
            let mut stack = vec![from];
            while let Some(node) = stack.pop() {
                for &next in graph.get(node).into_iter().flatten() {
                    if seen.insert(next) {
                        stack.push(next);
                    }
                }
            }
            seen
        };
        let mut done = BTreeSet::new();
        for &node in graph.keys() {
            if done.contains(node) {
                continue;
            }
            let from_node = reaches(node);
            if !from_node.contains(node) {
                continue;
            }
            let component: Vec<String> = from_node
                .iter()
                .filter(|other| reaches(other).contains(node))
                .map(|s| s.to_string())
                .collect();
            done.extend(
                component
                    .iter()
                    .map(|s| graph.get_key_value(s.as_str()).map_or("", |(k, _)| k)),
            );
            done.insert(node);
            found.push((parent.clone(), component));
        }
    }
    found
}

#[test]
fn no_import_cycles_among_sibling_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = sibling_edges(&src);
    assert!(
        edges.len() > 50,
        "the import reader found only {} imports: it is broken",
        edges.len()
    );
    let found = cycles(&edges);
    let mut message = String::new();
    for (parent, members) in &found {
        let name = if parent.is_empty() {
            "crate".to_string()
        } else {
            parent.join("::")
        };
        message.push_str(&format!(
            "\ncycle among the modules of `{name}`: {}\n",
            members.join(", ")
        ));
        // One line per import between two members: where it first happens.
        let mut shown = BTreeSet::new();
        for edge in edges.iter().filter(|e| &e.parent == parent) {
            if members.contains(&edge.from) && members.contains(&edge.to) && shown.insert((&edge.from, &edge.to)) {
                message.push_str(&format!("  {} -> {}  ({})\n", edge.from, edge.to, edge.at));
            }
        }
    }
    assert!(found.is_empty(), "{message}");
}

#[test]
fn the_cycle_check_sees_a_cycle() {
    // The reader on a made-up tree: a -> b through a nested `use` group, b -> a
    // through an expression path, c -> a alone (no cycle), and a test module
    // and a comment that would close a loop if they counted.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").unwrap();
    std::fs::write(src.join("a/mod.rs"), "use crate::{x, b::{self, Thing}};\nmod inner;\n").unwrap();
    std::fs::write(src.join("a/inner.rs"), "fn f() { super::super::c::g(); }\n").unwrap();
    std::fs::write(src.join("b.rs"), "fn f() -> crate::a::Y { todo!() }\n").unwrap();
    std::fs::write(
        src.join("c.rs"),
        "// crate::b::nothing\nfn g() {}\n#[cfg(test)]\nmod tests {\n use crate::b;\n}\n",
    )
    .unwrap();
    let edges = sibling_edges(&src);
    let pairs: BTreeSet<(String, String)> = edges.iter().map(|e| (e.from.clone(), e.to.clone())).collect();
    let expected: BTreeSet<(String, String)> = [("a", "b"), ("b", "a"), ("a", "c")]
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    assert_eq!(pairs, expected);
    let found = cycles(&edges);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].1, vec!["a".to_string(), "b".to_string()]);
}
