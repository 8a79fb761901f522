//! The core stays pure (docs/ARCHITECTURE.md): its normal dependencies — everything a build of
//! `dirsync-core` links, transitively — hold no Kubernetes, HTTP or networking crate, and tokio,
//! if it ever comes in, without its networking. A comment can be ignored; this test cannot.

use std::collections::BTreeSet;
use std::process::Command;

/// Crates a pure core must never link.
const FORBIDDEN: &[&str] = &[
    "kube",
    "kube-client",
    "kube-core",
    "kube-runtime",
    "k8s-openapi",
    "reqwest",
    "hyper",
    "hyper-util",
    "h2",
    "http-body",
    "tower",
    "axum",
    "rustls",
    "tokio-rustls",
    "mio",
];

/// `(name, features)` of every package in the core's normal dependency tree.
fn core_tree() -> Vec<(String, BTreeSet<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--package",
            "dirsync-core",
            "--edges",
            "normal",
            "--prefix",
            "none",
            "--no-dedupe",
            "--locked",
            "--offline",
            "--format",
            "{p}|{f}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (package, features) = l.split_once('|')?;
            let name = package.split_whitespace().next()?.to_owned();
            let features = features
                .split(',')
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect();
            Some((name, features))
        })
        .collect()
}

#[test]
fn the_core_links_no_kubernetes_http_or_networking_crate() {
    let tree = core_tree();
    assert!(
        tree.iter().any(|(n, _)| n == "serde") && tree.iter().any(|(n, _)| n == "dirsync-core"),
        "cargo tree's output was not understood: {tree:?}"
    );
    let forbidden: BTreeSet<&str> = tree
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| FORBIDDEN.contains(n))
        .collect();
    assert!(
        forbidden.is_empty(),
        "dirsync-core must stay pure (no Kubernetes, HTTP or networking; docs/ARCHITECTURE.md), but depends on {forbidden:?}; \
         put that code in the dirsync crate (clients/, controller/) behind the Directory trait instead"
    );
    let tokio_net: Vec<&BTreeSet<String>> = tree
        .iter()
        .filter(|(n, f)| n == "tokio" && f.iter().any(|f| f == "net" || f == "full"))
        .map(|(_, f)| f)
        .collect();
    assert!(
        tokio_net.is_empty(),
        "dirsync-core links tokio with networking: {tokio_net:?}"
    );
}
