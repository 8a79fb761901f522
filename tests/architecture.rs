//! The rules of docs/ARCHITECTURE.md that a compiler does not check by itself, checked over the
//! sources: the clients never reach into the engine, the operator or the CLI; the operator never
//! imports the CLI; comments cite files in the repository, not an outside spec. (The core's purity
//! is a crate boundary plus `core/tests/dependencies.rs`.)

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no Rust files under {}", dir.display());
    out
}

/// Whether `line` names `needle` as a whole path segment (`crate::cli` but not `crate::clients`).
fn mentions(line: &str, needle: &str) -> bool {
    line.match_indices(needle).any(|(i, _)| {
        !line[i + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// `(file, line number, line)` of every line under `dir` that mentions one of `needles`.
fn find(dir: &str, needles: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    for file in rust_files(&root().join(dir)) {
        let text = std::fs::read_to_string(&file).expect("read source");
        for (i, line) in text.lines().enumerate() {
            if needles.iter().any(|n| mentions(line, n)) {
                let rel = file
                    .strip_prefix(root())
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                hits.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    hits
}

#[test]
fn the_clients_use_only_the_core_model_and_outbound_rules() {
    let hits = find(
        "src/clients",
        &[
            "crate::sync",
            "dirsync_core::sync",
            "crate::controller",
            "crate::cli",
            "crate::crd",
            "use kube",
            "kube::",
        ],
    );
    assert!(
        hits.is_empty(),
        "the clients must not reach into the engine, the operator or the CLI:\n{}",
        hits.join("\n")
    );
}

#[test]
fn the_operator_never_imports_the_command_line() {
    let hits = find("src/controller", &["crate::cli"]);
    assert!(
        hits.is_empty(),
        "src/controller imports the CLI:\n{}",
        hits.join("\n")
    );
}

#[test]
fn comments_cite_files_in_the_repository() {
    let mut hits = find("src", &["SPEC §", "SPEC.md"]);
    hits.extend(find("core/src", &["SPEC §", "SPEC.md"]));
    assert!(
        hits.is_empty(),
        "cite docs/behaviour.md (or another file in the repository) instead:\n{}",
        hits.join("\n")
    );
}

/// The checks above find what they look for (a check that cannot fail is no check).
#[test]
fn the_checks_see_the_sources() {
    assert!(!find("src/controller", &["crate::sync"]).is_empty());
    assert!(!find("src/cli", &["crate::controller"]).is_empty());
    assert!(mentions("use crate::cli::exit;", "crate::cli"));
    assert!(!mentions("use crate::clients::outbound;", "crate::cli"));
}
