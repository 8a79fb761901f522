//! `operator.storeIn=secrets`: the chart's ServiceAccount is enough to move what a ConfigMap
//! setting left, preview and sync into Secrets, and the built-in `view` role cannot read them.

use super::*;

/// Gives the built-in `view` ClusterRole its rules the way kube-controller-manager's
/// clusterrole-aggregation controller does (the test control plane does not run that
/// controller, so `view` starts empty): the union of the rules of the ClusterRoles its
/// aggregationRule selects (`system:aggregate-to-view`, ...).
async fn aggregate_view(cp: &ControlPlane) {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let api: Api<ClusterRole> = Api::all(cp.client());
    let view = api
        .get("view")
        .await
        .expect("the bootstrap view ClusterRole");
    if view.rules.as_ref().is_some_and(|r| !r.is_empty()) {
        return;
    }
    let mut rules = Vec::new();
    for selector in view
        .aggregation_rule
        .and_then(|a| a.cluster_role_selectors)
        .unwrap_or_default()
    {
        let labels: Vec<String> = selector
            .match_labels
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let list = api
            .list(&kube::api::ListParams::default().labels(&labels.join(",")))
            .await
            .unwrap();
        for role in list.items {
            rules.extend(role.rules.unwrap_or_default());
        }
    }
    assert!(!rules.is_empty(), "no ClusterRole aggregates into view");
    api.patch(
        "view",
        &PatchParams::default(),
        &Patch::Merge(&json!({"rules": rules})),
    )
    .await
    .unwrap();
}

/// `kubectl auth can-i VERB RESOURCE -n NS --as=USER`: whether it says yes.
fn can_i(cp: &ControlPlane, ns: &str, user: &str, verb: &str, resource: &str) -> bool {
    let o = cp
        .kubectl()
        .args([
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            ns,
            &format!("--as={user}"),
        ])
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "kubectl auth can-i {verb} {resource}: {}",
        text(&o)
    );
    answer == "yes"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_previews_in_secrets_the_charts_service_account_is_enough_and_view_cannot_read_them() {
    use dirsync::controller::objects::{Objects, Owner, StoreKind};
    use dirsync::sync::ManagedStore as _;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};

    dirsync::clients::outbound::init_crypto();
    let started = Instant::now();
    let cp = control_plane().await;
    let ns = cp.namespace("chart-secrets").await;
    let values = ["--set", "operator.storeIn=secrets"];
    install(cp, RELEASE, ns.name(), &values);
    // The operator gets the flag the chart's Deployment passes.
    let home = tempfile::tempdir().unwrap();
    let store_in = args_of(&template(home.path(), ns.name(), &values))
        .into_iter()
        .find(|a| a.starts_with("--store-in="))
        .expect("the Deployment passes --store-in");
    assert_eq!(store_in, "--store-in=secrets");

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = token_kubeconfig(cp, dir.path(), ns.name(), &sa_token(cp, ns.name(), SA));
    let emu = emulator(&tenant(
        &["example.com"],
        vec![
            user("alice@example.com", "Alice", "Liddell", "YWxpY2UtaWQ="),
            user("bob@example.com", "Bob", "Builder", "Ym9iLWlk"),
        ],
    ))
    .await;
    let scim = scim();
    secrets(&ns, &emu, CLIENT_SECRET).await;
    let d = create(
        &ns,
        "example-com",
        spec("example.com", "DryRun", &emu, &scim.base_url()),
    )
    .await;

    // What an operator with ConfigMaps left (written here as the admin): a preview and a
    // managed set. The Secret setting must move or remove them with the chart's RBAC.
    let owner = Owner::of(&d).unwrap();
    let in_cms = Objects::new(ns.client(), ns.name(), StoreKind::ConfigMap);
    let old = dirsync::controller::preview::layout(
        &owner,
        StoreKind::ConfigMap,
        4096,
        &dirsync::sync::plan_run(
            &dirsync::sync::testing::FakeDirectory::with_users(
                (1..=300)
                    .map(|i| dirsync::sync::testing::entra_user(i, &format!("old{i}@example.com"))),
            ),
            &dirsync::sync::testing::FakeDirectory::new(),
            &dirsync::sync::SyncConfig::new("example.com", dirsync::sync::UpnMode::Enabled, 65),
            &dirsync::sync::ManagedSet::new(),
            &dirsync::sync::OtherResources::default(),
        )
        .await
        .unwrap(),
        true,
        "old-run",
        k8s_openapi::jiff::Timestamp::now(),
        k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(1),
    )
    .unwrap();
    assert!(old.objects.len() >= 3, "a main ConfigMap and parts");
    dirsync::controller::preview::publish(&in_cms, &owner, &old)
        .await
        .unwrap();
    dirsync::controller::store::ManagedSetObjects::new(
        ns.client(),
        owner.clone(),
        StoreKind::ConfigMap,
    )
    .save(&dirsync::sync::ManagedSet::new())
    .await
    .unwrap();
    let labelled = |kind: &'static str| {
        let ns = ns.clone();
        let uid = owner.uid.clone();
        async move {
            let lp =
                kube::api::ListParams::default().labels(&format!("dirsync.io/owner-uid={uid}"));
            let mut names: Vec<String> = if kind == "ConfigMap" {
                ns.api::<ConfigMap>()
                    .list(&lp)
                    .await
                    .unwrap()
                    .items
                    .into_iter()
                    .filter_map(|c| c.metadata.name)
                    .collect()
            } else {
                ns.api::<Secret>()
                    .list(&lp)
                    .await
                    .unwrap()
                    .items
                    .into_iter()
                    .filter_map(|c| c.metadata.name)
                    .collect()
            };
            names.sort();
            names
        }
    };
    assert_eq!(labelled("ConfigMap").await.len(), old.objects.len() + 1);

    // A dry run as the chart's ServiceAccount: the preview in a Secret, nothing left in
    // ConfigMaps.
    let op = LocalOperator::start(
        &kubeconfig,
        dir.path(),
        ns.name(),
        &[store_in.as_str(), "--preview-ttl", "8s"],
    );
    op.wait_ready().await;
    let d = wait_reason(&ns, "example-com", "PreviewReady", &op).await;
    let p = status(&d).preview.expect("preview");
    assert_eq!(
        (p.kind, p.objects.clone()),
        (StoreKind::Secret, vec!["example-com-preview".to_string()])
    );
    assert_eq!(
        labelled("ConfigMap").await,
        Vec::<String>::new(),
        "the ConfigMap preview and managed set are gone"
    );
    assert_eq!(
        labelled("Secret").await,
        ["example-com-managed", "example-com-preview"]
    );
    assert!(
        scim_users(&scim.base_url()).await.is_empty(),
        "a dry run wrote users"
    );

    // The built-in `view` role (bound to a test user here) reads ConfigMaps but not the
    // preview Secret.
    aggregate_view(cp).await;
    run_ok(cp.kubectl().args([
        "create",
        "rolebinding",
        "viewer",
        "--clusterrole=view",
        "--user=viewer",
        "-n",
        ns.name(),
    ]));
    // The control (view reads ConfigMaps) also waits for the binding to reach the authorizer.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !can_i(cp, ns.name(), "viewer", "get", "configmaps") {
        assert!(
            Instant::now() < deadline,
            "the view binding never took effect"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!can_i(
        cp,
        ns.name(),
        "viewer",
        "get",
        "secrets/example-com-preview"
    ));
    let o = cp
        .kubectl()
        .args([
            "get",
            "secret",
            "example-com-preview",
            "-n",
            ns.name(),
            "--as=viewer",
        ])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && text(&o).contains("Forbidden"),
        "{}",
        text(&o)
    );
    let o = cp
        .kubectl()
        .args(["get", "secrets", "-n", ns.name(), "--as=viewer"])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && text(&o).contains("Forbidden"),
        "{}",
        text(&o)
    );
    // The ServiceAccount keeps no more on ConfigMaps than moving old objects needs.
    let sa_user = format!("system:serviceaccount:{}:{SA}", ns.name());
    for verb in ["create", "patch", "update", "watch"] {
        assert!(
            !can_i(cp, ns.name(), &sa_user, verb, "configmaps"),
            "{verb} configmaps"
        );
    }
    for verb in ["get", "list", "delete"] {
        assert!(
            can_i(cp, ns.name(), &sa_user, verb, "configmaps"),
            "{verb} configmaps"
        );
    }

    // Once: the sync, its managed set and its run report, all Secrets.
    let patch = json!({"spec": {"mode": "Once"}});
    ns.api::<dirsync::crd::DirectorySync>()
        .patch(
            "example-com",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let d = wait_reason(&ns, "example-com", "Synced", &op).await;
    let run = status(&d).last_run.expect("lastRun");
    assert_eq!((run.adds, run.failed), (2, 0), "{run:?}");
    assert_eq!(scim_users(&scim.base_url()).await.len(), 2);
    let secrets_now = labelled("Secret").await;
    assert!(
        secrets_now
            .iter()
            .any(|n| n.starts_with("example-com-report-")),
        "{secrets_now:?}"
    );
    assert!(
        secrets_now.contains(&"example-com-managed".to_string()),
        "{secrets_now:?}"
    );
    assert_eq!(labelled("ConfigMap").await, Vec::<String>::new());

    // The expired preview is removed (secrets delete).
    let deadline = Instant::now() + T;
    while labelled("Secret")
        .await
        .contains(&"example-com-preview".to_string())
    {
        assert!(
            Instant::now() < deadline,
            "expired preview not removed; log:\n{}",
            op.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = op.log();
    assert!(
        forbidden_lines(&log).is_empty(),
        "the operator was refused something:\n{}",
        forbidden_lines(&log).join("\n")
    );
    assert!(!log.contains("could not remove"), "{log}");
    eprintln!(
        "chart (Secrets) install + move + dry run + sync + expiry: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
