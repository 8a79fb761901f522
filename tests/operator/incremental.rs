//! Incremental runs in the operator (docs/behaviour.md §7), on the real control plane: the
//! first applying slot is full and keeps a delta link with the managed set; a later slot with
//! nothing changed in Entra ID is incremental and costs one Graph request, no SCIM request and
//! no Kubernetes write but its status; a change between slots is applied incrementally.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;

/// Every ConfigMap and Event in the namespace, by name, with its resourceVersion.
async fn kube_objects(ns: &dirsync_testenv::TestNamespace) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for cm in ns
        .api::<ConfigMap>()
        .list(&ListParams::default())
        .await
        .expect("list ConfigMaps")
        .items
    {
        out.insert(
            format!("configmap/{}", cm.metadata.name.unwrap_or_default()),
            cm.metadata.resource_version.unwrap_or_default(),
        );
    }
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = ns.api();
    for e in events
        .list(&ListParams::default())
        .await
        .expect("list Events")
        .items
    {
        out.insert(
            format!("event/{}", e.metadata.name.unwrap_or_default()),
            e.metadata.resource_version.unwrap_or_default(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_periodic_slot_is_one_graph_request_and_writes_only_its_status() {
    let fixture = tenant(
        &["example.com"],
        vec![
            user("alice@example.com", "Alice", "Liddell", "YWxpY2U="),
            user("bob@example.com", "Bob", "Builder", "Ym9i"),
        ],
    );
    let sc = Scenario::start("op-incremental", emulator(&fixture).await, "op-a", &[]).await;
    let mut s = spec("example.com", "Periodic", &sc.emu, &sc.scim.base_url());
    s["interval"] = serde_json::json!("8s");
    create(&sc.ns, "example-com", s).await;

    // The preview (full: DryRun), then the first slot (full: no link yet).
    let d = wait_for(
        &sc.ns,
        "example-com",
        "first slot",
        Duration::from_secs(40),
        Some(&sc.op),
        |d| status(d).history.len() == 2,
    )
    .await;
    let st = status(&d);
    let first = st.last_run.clone().expect("lastRun");
    assert_eq!(
        (
            first.result.as_str(),
            first.kind.as_deref(),
            first.full_reason.as_deref()
        ),
        ("Synced", Some("Full"), Some("NoDeltaLink"))
    );
    let preview = st
        .history
        .iter()
        .find(|r| !r.applied)
        .expect("the preview in the history");
    assert_eq!(
        (preview.kind.as_deref(), preview.full_reason.as_deref()),
        (Some("Full"), Some("DryRun"))
    );
    let head = configmap(&sc.ns, "example-com-managed")
        .await
        .expect("managed set");
    let kept = head
        .data
        .as_ref()
        .and_then(|d| d.get("delta.json"))
        .expect("the delta state is kept with the managed set");
    assert!(kept.contains("$deltatoken="), "{kept}");
    let status_text = serde_json::to_string(&st).expect("status");
    assert!(
        !status_text.contains("deltatoken"),
        "never in status: {status_text}"
    );

    // Let the first slot's last writes (its events) land, then watch an idle slot.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = kube_objects(&sc.ns).await;
    let scim_before = sc.scim.request_count();
    sc.emu.state().stats.reset();
    let d = wait_for(
        &sc.ns,
        "example-com",
        "idle slot",
        Duration::from_secs(40),
        Some(&sc.op),
        |d| status(d).history.len() == 3,
    )
    .await;
    let idle = status(&d).last_run.clone().expect("lastRun");
    assert_eq!(
        (
            idle.result.as_str(),
            idle.trigger.as_deref(),
            idle.kind.as_deref(),
            idle.full_reason.as_deref(),
            idle.adds + idle.updates + idle.deletes
        ),
        ("Synced", Some("Slot"), Some("Incremental"), None, 0)
    );
    let graph = sc.emu.state().stats.snapshot(0);
    let by = graph["byEndpoint"].as_object().cloned().unwrap_or_default();
    let api = dirsync_testenv::emulator::api_requests(&graph);
    assert_eq!(api, 1, "one delta request: {by:?}");
    assert_eq!(by.get("delta").and_then(|v| v.as_u64()), Some(1), "{by:?}");
    assert!(by.get("token").and_then(|v| v.as_u64()).unwrap_or(0) <= 1);
    assert_eq!(sc.scim.request_count(), scim_before, "no SCIM request");
    assert_eq!(
        kube_objects(&sc.ns).await,
        before,
        "no ConfigMap or Event written by the idle slot"
    );
    let metrics = sc.op.metrics().await;
    assert!(
        metrics.contains("dirsync_runs_total{result=\"Synced\",kind=\"Incremental\"} 1"),
        "{metrics}"
    );

    // A change in Entra: the next slot applies it incrementally, its preview says so.
    sc.emu
        .tenant()
        .update_user(
            "bob@example.com",
            serde_json::json!({"displayName": "Bob the Builder"})
                .as_object()
                .expect("object"),
        )
        .expect("bob updated");
    let d = wait_for(
        &sc.ns,
        "example-com",
        "changed slot",
        Duration::from_secs(40),
        Some(&sc.op),
        |d| status(d).history.len() == 4,
    )
    .await;
    let changed = status(&d).last_run.clone().expect("lastRun");
    assert_eq!(
        (
            changed.result.as_str(),
            changed.kind.as_deref(),
            changed.updates
        ),
        ("Synced", Some("Incremental"), 1)
    );
    let bob = scim_users(&sc.scim.base_url())
        .await
        .into_iter()
        .find(|u| u["userName"] == "bob@example.com")
        .expect("bob");
    assert_eq!(bob["displayName"], "Bob the Builder");
    let (csv, _) = preview_get(sc.cp, sc.ns.name(), "example-com", &[]);
    let csv = String::from_utf8(csv).expect("utf-8");
    assert_eq!(
        csv.lines().count(),
        2,
        "an incremental preview holds only the rows it planned: {csv}"
    );
    let summary = configmap(&sc.ns, "example-com-preview")
        .await
        .and_then(|c| c.data)
        .and_then(|d| d.get("summary.json").cloned())
        .unwrap_or_default();
    let summary: serde_json::Value = serde_json::from_str(&summary).expect("summary.json");
    assert_eq!(summary["kind"], "Incremental", "{summary}");
}
