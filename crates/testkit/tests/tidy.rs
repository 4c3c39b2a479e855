//! The workspace's written rules, checked: which crate may depend on which (the map in
//! `docs/architecture.md`), a `//!` line opening every Rust file, no ignored or
//! panic-expecting test, and no dependency a crate does not use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace's crates (folder names) and the workspace crates each may use. Dependencies
/// point one way: domain and store know nothing of berth; the registry joins them; surfaces
/// use the registry; the agent and the CLI reach berth only through the client; the binary
/// wires everything.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("store", &[]),
    ("registry", &["domain", "store"]),
    ("api", &["domain", "registry"]),
    ("dns", &["domain", "registry"]),
    ("xds", &["domain", "registry"]),
    ("client", &[]),
    ("agent", &["client", "domain"]),
    (
        "berth",
        &[
            "agent", "api", "client", "dns", "domain", "registry", "store", "xds",
        ],
    ),
    ("bench", &["client", "domain", "store", "testkit"]),
    ("testkit", &[]),
];

/// What any crate may use in its tests besides its own dependencies.
const ALLOWED_IN_TESTS: &[&str] = &["testkit"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn crate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(workspace().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, found);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

fn manifest(dir: &Path) -> toml::Table {
    toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap()
}

fn dependencies(manifest: &toml::Table, section: &str) -> BTreeSet<String> {
    manifest
        .get(section)
        .and_then(toml::Value::as_table)
        .map(|table| table.keys().cloned().collect())
        .unwrap_or_default()
}

fn folder(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn dependencies_point_the_way_the_map_says() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut problems = Vec::new();
    for dir in crate_dirs() {
        let name = folder(&dir);
        let Some(may_use) = allowed.get(name.as_str()) else {
            problems.push(format!(
                "crates/{name} is not in the tidy test's map (nor docs/architecture.md's)"
            ));
            continue;
        };
        let manifest = manifest(&dir);
        for (section, extra) in [
            ("dependencies", &[][..]),
            ("build-dependencies", &[][..]),
            ("dev-dependencies", ALLOWED_IN_TESTS),
        ] {
            for dependency in dependencies(&manifest, section) {
                let Some(internal) = dependency.strip_prefix("berth-") else {
                    continue;
                };
                let test_only = section == "dev-dependencies";
                let used_anyway =
                    test_only && dependencies(&manifest, "dependencies").contains(&dependency);
                if !may_use.contains(&internal) && !extra.contains(&internal) && !used_anyway {
                    problems.push(format!(
                        "crates/{name} depends on berth-{internal} ({section}), which the map does not allow"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_rust_file_says_what_it_is_for() {
    let mut files = Vec::new();
    for dir in crate_dirs() {
        rust_files(&dir, &mut files);
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            !text
                .lines()
                .find(|line| !line.trim().is_empty())
                .is_some_and(|line| line.starts_with("//!"))
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` line saying what they are for:\n{}",
        missing.join("\n")
    );
}

#[test]
fn no_test_is_ignored_or_expects_a_panic() {
    // Spelled in two halves so this file does not find itself.
    let banned = [format!("#[{}", "ignore"), format!("#[{}", "should_panic")];
    let mut files = Vec::new();
    for dir in crate_dirs() {
        rust_files(&dir, &mut files);
    }
    let mut found = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            if banned
                .iter()
                .any(|b| line.trim_start().starts_with(b.as_str()))
            {
                found.push(format!(
                    "{}:{}: {}",
                    path.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "a test must run and assert what it means:\n{}",
        found.join("\n")
    );
}

/// Whether `text` uses the crate `name` (as a path, a macro or an import).
fn mentions(text: &str, name: &str) -> bool {
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(at) = text[start..].find(name) {
        let index = start + at;
        let before = index.checked_sub(1).map(|i| bytes[i]);
        let after = &text[index + name.len()..];
        let starts_word = before.is_none_or(|b| !(b.is_ascii_alphanumeric() || b == b'_'));
        if starts_word
            && (after.starts_with("::")
                || after.starts_with('!')
                || after.starts_with(';')
                || after.starts_with(" as "))
        {
            return true;
        }
        start = index + name.len();
    }
    false
}

#[test]
fn every_dependency_is_used() {
    let mut unused = Vec::new();
    for dir in crate_dirs() {
        let name = folder(&dir);
        let manifest = manifest(&dir);
        let code = |sub: &[&str]| -> String {
            let mut files = Vec::new();
            for part in sub {
                let path = dir.join(part);
                if path.is_dir() {
                    rust_files(&path, &mut files);
                } else if path.is_file() {
                    files.push(path);
                }
            }
            files
                .iter()
                .map(|f| std::fs::read_to_string(f).unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let main_code = code(&["src"]);
        let build_code = code(&["build.rs"]);
        let all_code = code(&["src", "tests", "benches", "build.rs"]);
        for (section, text) in [
            ("dependencies", &main_code),
            ("build-dependencies", &build_code),
            ("dev-dependencies", &all_code),
        ] {
            for dependency in dependencies(&manifest, section) {
                let path_name = dependency.replace('-', "_");
                if !mentions(text, &path_name) {
                    unused.push(format!("crates/{name}: {dependency} ({section})"));
                }
            }
        }
    }
    assert!(
        unused.is_empty(),
        "dependencies no code uses:\n{}",
        unused.join("\n")
    );
}
