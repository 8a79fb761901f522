//! The chart installed into the real control plane, then `dirsync operator` as a local process
//! with the chart's ServiceAccount token: a dry run and a sync prove that the RBAC is enough.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_with_the_charts_service_account_previews_and_syncs() {
    dirsync::clients::outbound::init_crypto();
    let started = Instant::now();
    let cp = control_plane().await;
    let ns = cp.namespace("chart-install").await;
    install(cp, RELEASE, ns.name(), &[]);

    let dir = tempfile::tempdir().unwrap();
    let token = sa_token(cp, ns.name(), SA);
    let kubeconfig = token_kubeconfig(cp, dir.path(), ns.name(), &token);

    let emu = emulator(&tenant(
        &["example.com"],
        vec![
            user("alice@example.com", "Alice", "Liddell", "YWxpY2UtaWQ="),
            user("bob@example.com", "Bob", "Builder", "Ym9iLWlk"),
            user("zed@other.org", "Zed", "Other", "emVk"),
        ],
    ))
    .await;
    let scim = scim();
    secrets(&ns, &emu, CLIENT_SECRET).await;

    // A preview TTL short enough that the test sees the operator delete an expired preview.
    let op = LocalOperator::start(&kubeconfig, dir.path(), ns.name(), &["--preview-ttl", "8s"]);
    op.wait_ready().await;
    create(
        &ns,
        "example-com",
        spec("example.com", "DryRun", &emu, &scim.base_url()),
    )
    .await;
    let d = wait_reason(&ns, "example-com", "PreviewReady", &op).await;
    let run = status(&d).last_run.expect("lastRun");
    assert_eq!((run.adds, run.deletes), (2, 0));
    assert!(configmap(&ns, "example-com-preview").await.is_some());
    assert!(
        scim_users(&scim.base_url()).await.is_empty(),
        "a dry run wrote users"
    );

    // Once: applies.
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
    let users: Vec<String> = scim_users(&scim.base_url())
        .await
        .iter()
        .map(|u| u["userName"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(users, vec!["alice@example.com", "bob@example.com"]);
    assert!(configmap(&ns, "example-com-managed").await.is_some());

    // Events were written (events.k8s.io create), the Lease is held by this identity.
    let evs = events(&ns, "example-com").await;
    assert!(evs.iter().any(|e| e.1 == "Synced"), "{evs:?}");
    let lease = run_ok(cp.kubectl().args([
        "get",
        "lease",
        LEASE,
        "-n",
        ns.name(),
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]));
    assert_eq!(lease, "chart-sa");

    // The expired preview is removed (configmaps delete).
    let deadline = Instant::now() + T;
    while configmap(&ns, "example-com-preview").await.is_some() {
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
    let m = op.metrics().await;
    assert!(
        m.contains("dirsync_runs_total{result=\"Synced\",kind=\"Full\"} 1"),
        "{m}"
    );
    eprintln!(
        "chart install + dry run + sync + preview expiry: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
