//! The library's layers, checked: every `crate::` path in `src/` is mapped to its module's
//! layer (`layers.txt` beside `Cargo.toml`), and an import that goes up a layer, or that closes
//! a circle between modules of one layer, fails this test naming the file and the import.
//! Known exceptions are listed in the same table (`allow` lines), each with its reason, and
//! may only shrink: one that no longer occurs fails too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The table: `module layer` lines and `allow from -> to  # why` lines.
struct Table {
    layer: BTreeMap<String, u32>,
    allowed: BTreeSet<(String, String)>,
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn table() -> Table {
    let text = std::fs::read_to_string(crate_dir().join("layers.txt")).expect("layers.txt");
    let mut t = Table {
        layer: BTreeMap::new(),
        allowed: BTreeSet::new(),
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("allow ") {
            let (from, to) = rest.split_once("->").expect("allow FROM -> TO");
            t.allowed
                .insert((from.trim().to_owned(), to.trim().to_owned()));
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(module), Some(layer)) = (parts.next(), parts.next()) else {
            panic!("layers.txt: bad line {line:?}");
        };
        t.layer
            .insert(module.to_owned(), layer.parse().expect("a layer number"));
    }
    t
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`lib` for `lib.rs`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    let name = first.as_os_str().to_string_lossy();
    // `x_tests.rs` holds the tests of `x.rs`.
    name.trim_end_matches(".rs")
        .trim_end_matches("_tests")
        .to_owned()
}

/// The code of a file without its comments (doc comments included): links in docs are not
/// imports.
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut cut = line.len();
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'"' if i == 0 || bytes[i - 1] != b'\\' => in_str = !in_str,
                b'/' if !in_str && bytes.get(i + 1) == Some(&b'/') => {
                    cut = i;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    without_test_modules(&out)
}

/// `code` without its `#[cfg(test)] mod … { … }` blocks: tests may use any layer.
fn without_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        if !trimmed.starts_with("mod ") {
            out.push_str("#[cfg(test)]");
            rest = after;
            continue;
        }
        // A module in its own file (`mod tests;`) has nothing here to skip.
        let Some(open) = trimmed.find(['{', ';']) else {
            break;
        };
        if trimmed.as_bytes()[open] == b';' {
            rest = &trimmed[open + 1..];
            continue;
        }
        let mut depth = 0;
        let mut end = trimmed.len();
        for (i, c) in trimmed.char_indices().skip(open) {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &trimmed[end..];
    }
    out.push_str(rest);
    out
}

/// The first segment after each `crate::` (and `$crate::`), expanding `crate::{a, b::c}`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        // `pgdbm_crate::` or similar identifiers are not the keyword.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let trimmed = rest.trim_start();
        if let Some(group) = trimmed.strip_prefix('{') {
            let mut depth = 1;
            let mut end = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let mut depth = 0;
            let mut item = String::new();
            for c in group[..end].chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let name: String = item
                            .trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() {
                            out.push(name);
                        }
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
        } else {
            let name: String = trimmed
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// Names re-exported at the crate root (`pub use module::{A, B}`), by the module they come
/// from.
fn root_names(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let code = code(lib);
    let mut rest = code.as_str();
    while let Some(at) = rest.find("pub use ") {
        rest = &rest[at + "pub use ".len()..];
        let stmt = &rest[..rest.find(';').unwrap_or(rest.len())];
        let module: String = stmt
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let tail = stmt.rsplit("::").next().unwrap_or("");
        let list = tail.trim_start_matches('{').trim_end_matches('}');
        for name in list.split(',') {
            let name = name.split(" as ").last().unwrap_or("").trim();
            if !name.is_empty() && name != "self" {
                names.insert(name.to_owned(), module.clone());
            }
        }
    }
    names
}

#[test]
fn imports_go_down_the_layers_and_close_no_circle() {
    let table = table();
    let src = crate_dir().join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let root = root_names(&lib);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    // module -> module, with the first file and path that imports it.
    let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        let from = module_of(&src, file);
        if from == "lib" {
            continue;
        }
        if !table.layer.contains_key(&from) {
            problems.push(format!(
                "{}: module `{from}` has no layer in layers.txt",
                file.display()
            ));
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read");
        for seg in crate_paths(&code(&text)) {
            let to = if table.layer.contains_key(&seg) {
                seg.clone()
            } else if let Some(m) = root.get(&seg) {
                m.clone()
            } else if seg.starts_with("__") || seg == "testing" {
                // Items for macros' expansions, re-exported crates.
                continue;
            } else {
                problems.push(format!(
                    "{}: `crate::{seg}` maps to no module in layers.txt",
                    file.display()
                ));
                continue;
            };
            if to == from || !table.layer.contains_key(&to) {
                continue;
            }
            edges.entry((from.clone(), to.clone())).or_insert_with(|| {
                format!(
                    "{} (crate::{seg})",
                    file.strip_prefix(crate_dir()).unwrap_or(file).display()
                )
            });
        }
    }
    let mut used_allowances = BTreeSet::new();
    for ((from, to), at) in &edges {
        let (lf, lt) = (table.layer[from], table.layer[to]);
        if lt > lf {
            if table.allowed.contains(&(from.clone(), to.clone())) {
                used_allowances.insert((from.clone(), to.clone()));
            } else {
                problems.push(format!(
                    "{at}: `{from}` (layer {lf}) imports `{to}` (layer {lt}), a layer above it"
                ));
            }
        }
    }
    // A circle needs an edge that does not go down: up-arrows are reported above, so what is
    // left to find are circles among the modules of one layer.
    let graph: BTreeMap<String, BTreeSet<String>> = edges
        .keys()
        .filter(|(a, b)| {
            table.layer[b] <= table.layer[a] && !table.allowed.contains(&(a.clone(), b.clone()))
        })
        .fold(
            BTreeMap::new(),
            |mut m: BTreeMap<_, BTreeSet<_>>, (a, b)| {
                m.entry(a.clone()).or_default().insert(b.clone());
                m
            },
        );
    for ((from, to), at) in &edges {
        if table.layer[from] != table.layer[to]
            || table.allowed.contains(&(from.clone(), to.clone()))
        {
            continue;
        }
        if reaches(&graph, to, from) {
            problems.push(format!(
                "{at}: `{from}` imports `{to}` of its own layer, which reaches `{from}` again: a circle"
            ));
        }
    }
    for allowed in &table.allowed {
        if !used_allowances.contains(allowed) && !edges.contains_key(allowed) {
            problems.push(format!(
                "layers.txt: `allow {} -> {}` no longer occurs; remove it",
                allowed.0, allowed.1
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

fn reaches(g: &BTreeMap<String, BTreeSet<String>>, from: &str, target: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(n) = stack.pop() {
        if n == target {
            return true;
        }
        if !seen.insert(n.clone()) {
            continue;
        }
        if let Some(next) = g.get(&n) {
            stack.extend(next.iter().cloned());
        }
    }
    false
}

#[test]
fn the_parser_sees_grouped_and_macro_paths() {
    let code = code(
        "use crate::{config::X, pool::{A, B}};\n// crate::ignored\nlet x = $crate::observe::y;",
    );
    assert_eq!(crate_paths(&code), ["config", "pool", "observe"]);
}

/// Every `.rs` file of the workspace: each crate's `src/`, `tests/`, `examples/` and `benches/`
/// (those it has) under `crates/`, and the workspace's own `examples/`, all recursively.
fn workspace_rust_files(workspace: &Path) -> Vec<PathBuf> {
    let mut roots = vec![workspace.join("examples")];
    for entry in std::fs::read_dir(workspace.join("crates")).expect("crates/") {
        let krate = entry.expect("entry").path();
        if krate.is_dir() {
            for dir in ["src", "tests", "examples", "benches"] {
                roots.push(krate.join(dir));
            }
        }
    }
    let mut files = Vec::new();
    for root in roots.iter().filter(|r| r.is_dir()) {
        rust_files(root, &mut files);
    }
    files
}

#[test]
fn source_files_fit_in_one_reading() {
    let workspace = crate_dir()
        .join("../..")
        .canonicalize()
        .expect("the workspace");
    let files = workspace_rust_files(&workspace);
    // The walk reaches the tests themselves, so that a broken walk cannot pass on no files.
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("crates/pgdbm/tests/architecture.rs")),
        "the walk missed crates/pgdbm/tests/architecture.rs"
    );
    let mut long = Vec::new();
    for file in files {
        let lines = std::fs::read_to_string(&file)
            .expect("read")
            .lines()
            .count();
        let rel = file
            .strip_prefix(&workspace)
            .unwrap_or(&file)
            .display()
            .to_string();
        if lines > 600 {
            long.push(format!("{rel}: {lines} lines"));
        }
    }
    long.sort();
    assert!(
        long.is_empty(),
        "files over 600 lines:\n{}",
        long.join("\n")
    );
}

/// Which sibling files (modules of one directory, besides its `mod.rs`, `lib.rs` or `main.rs`)
/// each file of `dir` imports: `super::x` from a nested file, `crate::…::x` for the
/// directory's own path, and `crate::x` in a crate's root directory.
fn sibling_edges(src: &Path, dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let rel: Vec<String> = dir
        .strip_prefix(src)
        .expect("under src")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let prefix = if rel.is_empty() {
        "crate::".to_owned()
    } else {
        format!("crate::{}::", rel.join("::"))
    };
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        match stem {
            Some(s) if path.is_dir() => {
                names.insert(s);
            }
            Some(s)
                if path.extension().is_some_and(|e| e == "rs")
                    && !["mod", "lib", "main"].contains(&s.as_str())
                    && !s.ends_with("_tests") =>
            {
                names.insert(s);
            }
            _ => {}
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for name in &names {
        let file = dir.join(format!("{name}.rs"));
        let mut texts = Vec::new();
        if file.is_file() {
            texts.push(std::fs::read_to_string(&file).expect("read"));
        } else {
            let mut nested = Vec::new();
            rust_files(&dir.join(name), &mut nested);
            for f in nested {
                texts.push(std::fs::read_to_string(f).expect("read"));
            }
        }
        for text in texts {
            let code = code(&text);
            for other in &names {
                if other == name {
                    continue;
                }
                let used = [
                    format!("super::{other}::"),
                    format!("super::{other}::{{"),
                    format!("{prefix}{other}::"),
                ]
                .iter()
                .any(|p| code.contains(p.as_str()))
                    || code.contains(&format!("use super::{other};"))
                    || code.contains(&format!("use {prefix}{other};"));
                if used {
                    edges.entry(name.clone()).or_default().insert(other.clone());
                }
            }
        }
    }
    edges
}

#[test]
fn no_circle_between_the_files_of_one_directory_anywhere_in_the_workspace() {
    let workspace = crate_dir().join("../..");
    let mut problems = Vec::new();
    for krate in [
        "crates/pgdbm",
        "crates/pgdbm-cli",
        "crates/pgdbm-bench",
        "crates/pgdbm-macros",
        "crates/pgdbm-icount",
    ] {
        let src = workspace.join(krate).join("src");
        let mut dirs = vec![src.clone()];
        let mut i = 0;
        while i < dirs.len() {
            for entry in std::fs::read_dir(&dirs[i]).expect("dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                }
            }
            i += 1;
        }
        for dir in dirs {
            // The library's top-level modules are checked by layer, with their exceptions.
            if krate == "crates/pgdbm" && dir == src {
                continue;
            }
            let edges = sibling_edges(&src, &dir);
            for (from, tos) in &edges {
                for to in tos {
                    if from < to && reaches(&edges, to, from) {
                        problems.push(format!(
                            "{krate}/src/{}: `{from}` and `{to}` import each other (a circle)",
                            dir.strip_prefix(&src).unwrap_or(&dir).display()
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}
