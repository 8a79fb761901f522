//! The Argo CD health check: the snippet carries `argocd/health.lua` verbatim, and gopher-lua
//! (`tools/lua-check`) evaluates it against `argocd/testdata/*`.

use super::*;

#[test]
fn argocd_snippet_carries_health_lua_verbatim() {
    let lua = std::fs::read_to_string(root().join("argocd/health.lua")).unwrap();
    let snippet = std::fs::read_to_string(root().join("argocd/argocd-cm-snippet.yaml")).unwrap();
    let cm: Value = serde_saphyr::from_str(&snippet).unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let body = cm["data"]["resource.customizations.health.dirsync.io_DirectorySync"]
        .as_str()
        .expect("the health key");
    assert!(
        body == lua,
        "argocd/argocd-cm-snippet.yaml does not carry argocd/health.lua verbatim"
    );
}

/// The health check in gopher-lua (the interpreter Argo CD embeds), built by tools/setup.sh
/// from tools/lua-check.
#[test]
fn argocd_health_check_in_gopher_lua() {
    let bin = tools().bin("lua-check");
    let o = Command::new(bin)
        .arg(root().join("argocd/health.lua"))
        .arg(root().join("argocd/testdata"))
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "lua-check failed:\n{t}");
    assert!(t.contains(" 0 failed"), "{t}");
    // Every health the check can answer is covered by a sample.
    for h in ["Healthy", "Progressing", "Degraded"] {
        assert!(t.contains(&format!(": {h}: ")), "no sample ends {h}:\n{t}");
    }
}
