//! berth builds on a machine without protoc: every build script in berth's dependency graph
//! that compiles .proto files (they use prost-build or tonic-build, which call protoc) runs in a
//! clean target directory with a PATH on which no protoc can be found, and succeeds — answered by
//! tools/protoc-shim from descriptor sets recorded once. Only build scripts can run protoc and
//! only these do, so the rest of the graph builds the same with or without it.
#![allow(
    clippy::disallowed_methods,
    reason = "the build under test gets a PATH of its own, made from the caller's"
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The packages (as `name@version`) whose build scripts depend on a protobuf code generator.
fn packages_compiling_protos() -> BTreeSet<String> {
    // This platform's graph only: the crates of others (Windows consoles…) need not be
    // downloaded on a fresh machine.
    let rustc = Command::new("rustc").arg("-vV").output().unwrap();
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: ").map(String::from))
        .expect("rustc -vV names the host");
    let output = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let name_of = |id: &str| -> String {
        let package = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap();
        format!(
            "{}@{}",
            package["name"].as_str().unwrap(),
            package["version"].as_str().unwrap()
        )
    };
    let generators = [
        "prost-build",
        "tonic-build",
        "tonic-prost-build",
        "protobuf-codegen",
    ];
    let mut found = BTreeSet::new();
    for node in metadata["resolve"]["nodes"].as_array().unwrap() {
        for dependency in node["deps"].as_array().unwrap() {
            let generator = generators
                .iter()
                .any(|g| dependency["name"] == g.replace('-', "_"));
            let at_build_time = dependency["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|kind| kind["kind"] == "build");
            if generator && at_build_time {
                found.insert(name_of(node["id"].as_str().unwrap()));
            }
        }
    }
    found
}

/// A directory of links to every program on `PATH` except protoc.
fn path_without_protoc(into: &Path) -> PathBuf {
    let bin = into.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = std::env::var_os("PATH").unwrap();
    for directory in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&directory) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let link = bin.join(&name);
            if name == "protoc" || link.exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(entry.path(), link);
        }
    }
    bin
}

#[test]
fn the_build_needs_no_protoc() {
    let packages = packages_compiling_protos();
    assert!(
        packages.iter().any(|p| p.starts_with("etcd-client@")),
        "etcd-client compiles etcd's protos at build time: {packages:?}"
    );
    let scratch = tempfile::tempdir().unwrap();
    let bin = path_without_protoc(scratch.path());
    let lookup = Command::new("/bin/sh")
        .args(["-c", "command -v protoc"])
        .env("PATH", &bin)
        .output()
        .unwrap();
    assert!(!lookup.status.success(), "protoc is still on the PATH");

    let mut check = Command::new(cargo());
    check
        .args(["check", "--offline", "--quiet"])
        .current_dir(workspace_root())
        .env("PATH", &bin)
        .env("CARGO_TARGET_DIR", scratch.path().join("target"))
        .env_remove("PROTOC")
        .env_remove("PROTOC_INCLUDE");
    for package in &packages {
        check.args(["-p", package]);
    }
    let output = check.output().unwrap();
    assert!(
        output.status.success(),
        "a build without protoc failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
