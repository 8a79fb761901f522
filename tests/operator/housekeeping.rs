//! What the operator keeps and removes: previews expire after `--preview-ttl`, run reports
//! after `--report-retention`; a same-named ConfigMap it does not own is left untouched
//! (`PreviewConflict`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, PostParams};

const T: Duration = Duration::from_secs(60);

fn fixture() -> serde_json::Value {
    tenant(
        &["example.com"],
        vec![user("alice@example.com", "Alice", "Liddell", "YWxpY2U=")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_and_run_reports_expire() {
    let Scenario {
        cp: _,
        ns,
        emu,
        scim,
        op,
    } = Scenario::start(
        "op-expiry",
        emulator(&fixture()).await,
        "op-a",
        &["--preview-ttl", "6s", "--report-retention", "6s"],
    )
    .await;
    create(
        &ns,
        "example-com",
        spec("example.com", "Once", &emu, &scim.base_url()),
    )
    .await;
    let d = wait_for_reason(&ns, "example-com", "Synced", T, Some(&op)).await;
    let p = status(&d).preview.expect("preview");
    assert_eq!(p.expires_at.0.as_second() - p.generated_at.0.as_second(), 6);
    assert!(configmap(&ns, "example-com-preview").await.is_some());
    let reports = |ns: dirsync_testenv::TestNamespace| async move {
        ns.api::<ConfigMap>()
            .list(&ListParams::default().labels("dirsync.io/role=report"))
            .await
            .expect("list")
            .items
            .len()
    };
    assert_eq!(reports(ns.clone()).await, 1);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = get(&ns, "example-com").await;
        let gone = configmap(&ns, "example-com-preview").await.is_none();
        if gone && status(&d).preview.is_none() && reports(ns.clone()).await == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "preview or report not removed; log:\n{}",
            op.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The managed set is never expired.
    assert!(configmap(&ns, "example-com-managed").await.is_some());
    assert_eq!(
        ready_reason(&get(&ns, "example-com").await).as_deref(),
        Some("Synced")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_configmap_with_the_preview_name_is_left_untouched() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-conflict").await;
    let emu = emulator(&fixture()).await;
    let scim = scim();
    secrets(&ns, &emu, CLIENT_SECRET).await;
    let foreign = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("example-com-preview".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "mine".to_string(),
            "do not touch".to_string(),
        )])),
        ..Default::default()
    };
    let created = ns
        .api::<ConfigMap>()
        .create(&PostParams::default(), &foreign)
        .await
        .expect("foreign ConfigMap");
    let op = Operator::start(cp, ns.name(), "op-a", &[]);
    create(
        &ns,
        "example-com",
        spec("example.com", "DryRun", &emu, &scim.base_url()),
    )
    .await;
    let d = wait_for_reason(&ns, "example-com", "PreviewConflict", T, Some(&op)).await;
    assert_eq!(
        condition(&d, "Stalled").map(|c| c.0).as_deref(),
        Some("True")
    );
    assert!(
        condition(&d, "Ready").is_some_and(|c| c.2.contains("not owned by this DirectorySync"))
    );
    let now = configmap(&ns, "example-com-preview")
        .await
        .expect("still there");
    assert_eq!(
        now.metadata.resource_version, created.metadata.resource_version,
        "untouched"
    );
    assert_eq!(now.data, foreign.data);
}
