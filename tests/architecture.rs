//! The layering of ARCHITECTURE.md, checked on the source: no module imports one above it,
//! modules on the same layer do not import each other, the runtime seam imports nothing from
//! the broker, no glommio outside the runtime, and domain code reaches files, the clock and
//! randomness only through the seam. (A `grep` over `use crate::` is enough: unit tests at the
//! bottom of a file, after `#[cfg(test)]`, may use anything.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each module and the modules it may import. Edges (cli, bench, tune) may import anything.
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    const BASE: &[&str] = &[
        "constants",
        "protocol",
        "config",
        "metrics",
        "placement",
        "runtime",
    ];
    let mut m: BTreeMap<&str, &[&str]> = BTreeMap::new();
    m.insert("runtime", &[]);
    m.insert("constants", &[]);
    m.insert("protocol", &["constants"]);
    m.insert("config", &["constants", "protocol"]);
    m.insert("placement", &["constants", "protocol"]);
    m.insert("alloc", &["constants"]);
    m.insert("metrics", &["constants", "protocol"]);
    m.insert("client", &["constants", "protocol"]);
    m.insert("testing", &["runtime", "constants"]);
    m.insert("storage", BASE);
    const MIDDLE: &[&str] = &[
        "constants",
        "protocol",
        "config",
        "metrics",
        "placement",
        "runtime",
        "storage",
    ];
    m.insert("replication", MIDDLE);
    m.insert("group", MIDDLE);
    m.insert("cluster", MIDDLE);
    m.insert(
        "shard",
        &[
            "constants",
            "protocol",
            "config",
            "metrics",
            "placement",
            "runtime",
            "storage",
            "replication",
            "group",
            "cluster",
        ],
    );
    m.insert(
        "server",
        &[
            "constants",
            "protocol",
            "config",
            "metrics",
            "placement",
            "runtime",
            "storage",
            "replication",
            "group",
            "cluster",
            "shard",
        ],
    );
    m.insert(
        "broker",
        &[
            "constants",
            "protocol",
            "config",
            "metrics",
            "placement",
            "runtime",
            "storage",
            "replication",
            "group",
            "cluster",
            "shard",
            "server",
        ],
    );
    m
}

const EDGES: &[&str] = &["cli", "bench", "tune", "simulation"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every .rs file of a top-level module, with its text up to its unit tests.
fn module_sources(module: &str) -> Vec<(PathBuf, String)> {
    let dir = src().join(module);
    let file = src().join(format!("{module}.rs"));
    let mut files = Vec::new();
    if dir.is_dir() {
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
    } else if file.is_file() {
        files.push(file);
    }
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let code = match text.find("#[cfg(test)]") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            // Files that are only tests (`*_tests.rs`) may use anything.
            let code = if p.to_string_lossy().ends_with("_tests.rs") {
                String::new()
            } else {
                code
            };
            (p, code)
        })
        .collect()
}

fn crate_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

fn top_modules() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(src())
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .filter(|n| n != "lib" && n != "main")
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn no_module_imports_one_above_it() {
    let allowed = allowed();
    let mut violations = Vec::new();
    for module in top_modules() {
        if EDGES.contains(&module.as_str()) {
            continue;
        }
        let Some(may) = allowed.get(module.as_str()) else {
            violations.push(format!(
                "src/{module} is not placed in the layers (add it to ARCHITECTURE.md and here)"
            ));
            continue;
        };
        for (path, code) in module_sources(&module) {
            for used in crate_modules(&code) {
                if used != module && !may.contains(&used.as_str()) {
                    violations.push(format!("{} imports crate::{used}", path.display()));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "arrows running up or sideways:\n{}",
        violations.join("\n")
    );
}

#[test]
fn glommio_files_clock_and_randomness_stay_behind_the_seam() {
    let mut violations = Vec::new();
    for module in top_modules() {
        if module == "runtime" || EDGES.contains(&module.as_str()) {
            continue;
        }
        for (path, code) in module_sources(&module) {
            let p = path.to_string_lossy();
            if code.contains("glommio::") {
                violations.push(format!("{p}: glommio outside runtime/"));
            }
            // The broker's start runs on the main thread before any shard (data-dir lock,
            // O_DIRECT probe), and the config file is read at start; the client is an edge.
            let domain = !p.ends_with("broker/mod.rs")
                && !p.ends_with("config/mod.rs")
                && !p.contains("src/client")
                && !p.contains("src/testing");
            if domain {
                for banned in ["std::fs", "Instant::now", "SystemTime", "/dev/urandom"] {
                    if code.contains(banned) {
                        violations.push(format!("{p}: {banned} in domain code"));
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
