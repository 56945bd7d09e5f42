//! The shape of `src/`, checked: the top-level modules form the layers
//! ARCHITECTURE.md draws (each imports only modules of lower layers, so
//! there is no cycle), every module is in that table, and no file holds
//! more than 500 lines before its tests.
//!
//! Imports are read from the source text: every `crate::name` path outside
//! a comment (grouped `crate::{a, b}` included), counted for the top-level
//! module of the file it is in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lines a file may hold before its `#[cfg(test)]` module.
const MOST_LINES: usize = 500;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The top-level module a file of `src/` belongs to (`None` for the crate
/// root and the binary).
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(root().join("src")).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The top-level modules `line` names through `crate::`.
fn imports(line: &str) -> Vec<String> {
    let code = line.trim_start();
    if code.starts_with("//") {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c}`: the first segment of each entry.
            let group = &group[..group.find('}').unwrap_or(group.len())];
            found.extend(
                group
                    .split(',')
                    .filter_map(|entry| first_segment(entry.trim())),
            );
        } else {
            found.extend(first_segment(rest));
        }
    }
    found
}

fn first_segment(path: &str) -> Option<String> {
    let name: String = path
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Which top-level module imports which, from the source.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in sources(&root().join("src")) {
        let Some(module) = module_of(&file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let targets = graph.entry(module.clone()).or_default();
        for line in text.lines() {
            for target in imports(line) {
                if target != module {
                    targets.insert(target);
                }
            }
        }
    }
    graph
}

/// The layer table of ARCHITECTURE.md: `| n | name | `module`, … |` rows.
fn layers() -> BTreeMap<String, u32> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let start = text
        .find("<!-- layers -->")
        .expect("ARCHITECTURE.md marks its layer table with <!-- layers -->");
    let mut layers = BTreeMap::new();
    for row in text[start..].lines().skip(1) {
        let cells: Vec<&str> = row
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if !row.trim_start().starts_with('|') {
            if layers.is_empty() {
                continue;
            }
            break;
        }
        let Ok(layer) = cells[0].parse::<u32>() else {
            continue; // the header and its rule
        };
        for module in cells[2].split(',') {
            let module = module.trim().trim_matches('`').to_string();
            assert!(
                layers.insert(module.clone(), layer).is_none(),
                "`{module}` is in two layers"
            );
        }
    }
    assert!(!layers.is_empty(), "the layer table is empty");
    layers
}

#[test]
fn every_module_imports_only_lower_layers() {
    let graph = graph();
    let layers = layers();
    let modules: BTreeSet<&String> = graph.keys().collect();
    let table: BTreeSet<&String> = layers.keys().collect();
    assert_eq!(
        modules, table,
        "the top-level modules of src/ and ARCHITECTURE.md's layer table differ"
    );
    let mut upward = Vec::new();
    for (module, targets) in &graph {
        for target in targets {
            let (from, to) = (layers[module], layers[target]);
            if to >= from {
                upward.push(format!(
                    "{module} (layer {from}) imports {target} (layer {to})"
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_modules_form_no_cycle() {
    // Checked apart from the table: even a table that put two modules in
    // one order could not hide a cycle from this.
    let graph = graph();
    fn visit<'a>(
        module: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(at) = path.iter().position(|m| *m == module) {
            panic!("a cycle: {} -> {module}", path[at..].join(" -> "));
        }
        if !done.insert(module) {
            return;
        }
        path.push(module);
        for target in graph.get(module).into_iter().flatten() {
            visit(target, graph, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_reader_finds_every_form_of_import() {
    assert_eq!(imports("use crate::store::Store;"), ["store"]);
    assert_eq!(
        imports("use crate::{clock::now_ms, refusal};"),
        ["clock", "refusal"]
    );
    assert_eq!(imports("    let x = crate::clock::now_ms();"), ["clock"]);
    assert!(imports("//! see [`crate::serve()`]").is_empty());
    assert!(imports("use tally_crate::x;").is_empty());
}

#[test]
fn no_file_is_over_500_lines_before_its_tests() {
    let mut long = Vec::new();
    for file in sources(&root().join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines = text
            .lines()
            .take_while(|line| line.trim() != "#[cfg(test)]")
            .count();
        if lines > MOST_LINES {
            long.push(format!("{} ({lines} lines)", file.display()));
        }
    }
    assert!(long.is_empty(), "files over {MOST_LINES} lines: {long:?}");
}
