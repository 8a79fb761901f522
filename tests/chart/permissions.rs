//! The chart's RBAC: verbs and objects the operator does not need are denied, and
//! `kubectl auth can-i --list` matches the golden files in `charts/dirsync/tests/`.

use super::*;

/// `kubectl` with the ServiceAccount's kubeconfig.
fn kubectl_as(kubeconfig: &Path) -> Command {
    let mut c = Command::new(tools().kubectl());
    c.env("KUBECONFIG", kubeconfig);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbs_the_operator_does_not_need_are_denied() {
    let cp = control_plane().await;
    let ns = cp.namespace("chart-deny").await;
    let other = cp.namespace("chart-deny-other").await;
    install(cp, RELEASE, ns.name(), &[]);
    put_secret(&ns, "scim", &[("token", "t")]).await;
    put_secret(&other, "scim", &[("token", "t")]).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = token_kubeconfig(cp, dir.path(), ns.name(), &sa_token(cp, ns.name(), SA));

    let allowed = |args: &[&str]| {
        let o = kubectl_as(&kubeconfig).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "kubectl {args:?} should be allowed:\n{}",
            text(&o)
        );
    };
    let denied = |args: &[&str]| {
        let o = kubectl_as(&kubeconfig).args(args).output().unwrap();
        let t = text(&o);
        assert!(
            !o.status.success() && t.to_lowercase().contains("forbidden"),
            "kubectl {args:?} should be Forbidden:\n{t}"
        );
    };
    let n = ns.name();
    let o = other.name();
    // What it needs works with the token...
    allowed(&["get", "secret", "scim", "-n", n]);
    allowed(&["get", "configmaps", "-n", n]);
    allowed(&["get", "directorysyncs", "-n", n]);
    // ...what it does not need is refused.
    denied(&["delete", "secret", "scim", "-n", n]);
    denied(&[
        "create",
        "secret",
        "generic",
        "x",
        "--from-literal=a=b",
        "-n",
        n,
    ]);
    denied(&["label", "secret", "scim", "x=y", "-n", n]);
    denied(&["get", "secret", "scim", "-n", o]);
    denied(&["get", "configmaps", "-n", o]);
    denied(&["get", "pods", "-n", n]);
    denied(&["get", "namespaces"]);
    denied(&["get", "lease", "someone-elses-lease", "-n", n]);
    denied(&["create", "serviceaccount", "x", "-n", n]);
    denied(&["create", "token", SA, "-n", o]);
    denied(&["delete", "lease", LEASE, "-n", n]);
    // Spec writes and deletes of DirectorySyncs are not the operator's business.
    let dsync = json!({"apiVersion": "dirsync.io/v1alpha1", "kind": "DirectorySync", "metadata": {"name": "x"},
        "spec": {"domain": "example.com", "upnMode": "Enabled", "maxAllowedDeletions": 10, "mode": "DryRun",
        "source": {"entraID": {"tenantID": "example.com", "clientID": CLIENT_ID, "clientSecretRef": {"name": "a", "key": "b"}}},
        "destination": {"scim": {"endpoint": "https://scim.example.net/v2", "bearerTokenRef": {"name": "scim", "key": "token"}}}}});
    let f = dir.path().join("dsync.json");
    std::fs::write(&f, dsync.to_string()).unwrap();
    denied(&["create", "-f", f.to_str().unwrap(), "-n", n]);
    run_ok(
        cp.kubectl()
            .args(["create", "-f", f.to_str().unwrap(), "-n", n]),
    );
    denied(&[
        "annotate",
        "directorysync",
        "x",
        "dirsync.io/sync-now=1",
        "-n",
        n,
    ]);
    denied(&["delete", "directorysync", "x", "-n", n]);

    // watchNamespaces: the same rules in exactly the listed namespaces.
    let home = cp.namespace("chart-ns-home").await;
    install(
        cp,
        "listed",
        home.name(),
        &["--set", &format!("watchNamespaces={{{n},{o}}}")],
    );
    let dir2 = tempfile::tempdir().unwrap();
    let kc2 = token_kubeconfig(
        cp,
        dir2.path(),
        home.name(),
        &sa_token(cp, home.name(), "listed-dirsync"),
    );
    for watched in [n, o] {
        let out = kubectl_as(&kc2)
            .args(["get", "secret", "scim", "-n", watched])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = kubectl_as(&kc2)
        .args(["get", "secrets", "-n", home.name()])
        .output()
        .unwrap();
    assert!(
        text(&out).to_lowercase().contains("forbidden"),
        "the release namespace is not watched: {}",
        text(&out)
    );
    let out = kubectl_as(&kc2)
        .args(["get", "lease", "listed-dirsync-leader", "-n", home.name()])
        .output()
        .unwrap();
    assert!(
        !text(&out).to_lowercase().contains("forbidden"),
        "{}",
        text(&out)
    );
}

/// `kubectl auth can-i --list` lines, whitespace collapsed and sorted.
fn can_i_list(cp: &ControlPlane, ns: &str, user: &str) -> Vec<String> {
    let out =
        run_ok(
            cp.kubectl()
                .args(["auth", "can-i", "--list", "-n", ns, &format!("--as={user}")]),
        );
    let mut lines: Vec<String> = out
        .lines()
        .skip(1) // header
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}

/// The chart's ServiceAccount's `kubectl auth can-i --list`, in the release namespace and
/// elsewhere, against `charts/dirsync/tests/<file>`.
async fn check_permissions_golden(
    cp: &ControlPlane,
    prefix: &str,
    values: &[&str],
    what: &str,
    file: &str,
) {
    let ns = cp.namespace(prefix).await;
    let elsewhere = cp.namespace(&format!("{prefix}-other")).await;
    install(cp, RELEASE, ns.name(), values);
    let user = format!("system:serviceaccount:{}:{SA}", ns.name());
    let here = can_i_list(cp, ns.name(), &user);
    let there = can_i_list(cp, elsewhere.name(), &user);

    let mut golden = format!(
        "# kubectl auth can-i --list as the chart's ServiceAccount ({what}), sorted.\n\
         # Reviewed: every line is a verb the operator uses (see templates/_helpers.tpl\n\
         # dirsync.namespaceRules) or a default of every authenticated user.\n\
         # Regenerate: DIRSYNC_UPDATE_GOLDEN=1 cargo test --test chart service_account_permissions\n\
         [release namespace]\n",
    );
    for l in &here {
        golden.push_str(l);
        golden.push('\n');
    }
    golden.push_str("[any other namespace]\n");
    for l in &there {
        golden.push_str(l);
        golden.push('\n');
    }
    let path = chart().join("tests").join(file);
    if std::env::var_os("DIRSYNC_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &golden).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    pretty_assertions::assert_eq!(
        want,
        golden,
        "permissions changed; review and regenerate {}",
        path.display()
    );
    // Whatever the golden file says: no Secret or ConfigMap access outside the watched namespace.
    assert!(
        !there
            .iter()
            .any(|l| l.starts_with("secrets") || l.starts_with("configmaps")),
        "{there:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_permissions_match_the_golden_file() {
    let cp = control_plane().await;
    check_permissions_golden(
        cp,
        "chart-perms",
        &[],
        "default values",
        "permissions.golden",
    )
    .await;
    check_permissions_golden(
        cp,
        "chart-perms-secrets",
        &["--set", "operator.storeIn=secrets"],
        "operator.storeIn=secrets",
        "permissions-secrets.golden",
    )
    .await;
}
