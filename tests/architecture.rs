//! The layering ARCHITECTURE.md promises, checked on the source: no import cycle between
//! top-level modules, and nothing on the inference path imports the phantoms, training or
//! evaluation code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules the daemon and `analyze` run: what a study goes through from the wire to PACS.
const INFERENCE_PATH: &[&str] = &[
    "clock", "config", "daemon", "dicom", "errors", "model", "notify", "outbox", "pacs", "panel",
    "pipeline", "redact", "render", "result", "sdnotify", "store", "volume", "worker",
];

/// Modules that exist for training, evaluation, the demo and the command line only.
const OFF_PATH: &[&str] = &[
    "cli",
    "eval",
    "evalphantom",
    "phantom",
    "synth",
    "training",
    "demo",
];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module → the other top-level modules its code (tests excluded) names through
/// `crate::`, with one place each.
fn dependencies() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        if name == "main" || name == "lib" {
            continue;
        }
        let mut files = Vec::new();
        if p.is_dir() {
            rs_files(&p, &mut files);
        } else {
            files.push(p);
        }
        modules.insert(name, files);
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let mut deps = BTreeMap::new();
    for (m, files) in &modules {
        let mut d: BTreeMap<String, String> = BTreeMap::new();
        for f in files {
            let text = std::fs::read_to_string(f).unwrap();
            // Unit tests may use anything.
            let code = text.split("#[cfg(test)]").next().unwrap();
            for (n, line) in code.lines().enumerate() {
                let line = line.trim_start();
                if line.starts_with("//") {
                    continue;
                }
                let mut rest = line;
                while let Some(i) = rest.find("crate::") {
                    rest = &rest[i + "crate::".len()..];
                    let first: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '{')
                        .collect();
                    let mut targets: Vec<String> = Vec::new();
                    if first.ends_with('{') {
                        // use crate::{a, b::c};
                        let inner = &rest[1..rest.find('}').unwrap_or(rest.len())];
                        for part in inner.split(',') {
                            let head = part.trim().split("::").next().unwrap_or("");
                            targets.push(head.trim().to_string());
                        }
                    } else {
                        targets.push(first);
                    }
                    for t in targets {
                        if t != *m && names.contains(&t) {
                            d.entry(t)
                                .or_insert_with(|| format!("{}:{}", f.display(), n + 1));
                        }
                    }
                }
            }
        }
        deps.insert(m.clone(), d);
    }
    deps
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let deps = dependencies();
    // Depth-first search for a back edge, reporting the cycle with where each edge is.
    fn visit(
        m: &str,
        deps: &BTreeMap<String, BTreeMap<String, String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for next in deps[m].keys() {
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == next).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, deps, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in deps.keys() {
        if state.get(m).copied().unwrap_or(0) == 0 {
            if let Some(cycle) = visit(m, &deps, &mut state, &mut Vec::new()) {
                let edges: Vec<String> = cycle
                    .windows(2)
                    .map(|w| format!("{} -> {} ({})", w[0], w[1], deps[&w[0]][&w[1]]))
                    .collect();
                panic!("import cycle:\n{}", edges.join("\n"));
            }
        }
    }
}

#[test]
fn the_inference_path_imports_no_phantom_training_or_evaluation_code() {
    let deps = dependencies();
    for m in INFERENCE_PATH {
        let d = deps
            .get(*m)
            .unwrap_or_else(|| panic!("module {m} not found under src/"));
        for bad in OFF_PATH {
            assert!(!d.contains_key(*bad), "{m} imports {bad} ({})", d[*bad]);
        }
    }
    // Every module is placed on one side or the other.
    for m in deps.keys() {
        assert!(
            INFERENCE_PATH.contains(&m.as_str()) || OFF_PATH.contains(&m.as_str()),
            "module {m} is in neither list of tests/architecture.rs"
        );
    }
}
