//! `dirsync operator` against the real control plane, the Graph emulator and scim2-server:
//! DryRun previews (exact CSV, sync-now), Once syncs (and the zero-write second reconcile),
//! the deletion guard.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn small_tenant() -> serde_json::Value {
    let mut bob = user("bob@example.com", "Bob", "Builder", "+Ym9iLWlk");
    bob["mail"] = serde_json::Value::Null;
    bob["proxyAddresses"] = json!(["smtp:robert@example.com", "SMTP:bob@example.com"]);
    let mut guest = user(
        "guest_other.org#EXT#@example.com",
        "Gus",
        "Guest",
        "Z3Vlc3Q=",
    );
    guest["userType"] = json!("Guest");
    tenant(
        &["example.com"],
        vec![
            user("alice@example.com", "Alice", "Liddell", "YWxpY2UtaWQ="),
            bob,
            guest,
            user("zed@other.org", "Zed", "Other", "emVk"),
        ],
    )
}

fn lines(csv: &str) -> Vec<&str> {
    csv.split("\r\n").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_publishes_the_exact_preview_writes_nothing_and_reruns_on_sync_now() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-dryrun").await;
    let emu = emulator(&small_tenant()).await;
    let scim = scim();
    let carol = scim_create(
        &scim.base_url(),
        json!({"userName": "carol@example.com", "displayName": "Carol Stray", "name": {"givenName": "Carol", "familyName": "Stray"},
               "emails": [{"value": "carol@example.com", "type": "work", "primary": true}], "active": true}),
    )
    .await;
    secrets(&ns, &emu, CLIENT_SECRET).await;
    let op = Operator::start(cp, ns.name(), "op-a", &[]);
    create(
        &ns,
        "example-com",
        spec("example.com", "DryRun", &emu, &scim.base_url()),
    )
    .await;
    let before = scim_users(&scim.base_url()).await;

    let d = wait_for_reason(&ns, "example-com", "PreviewReady", T, Some(&op)).await;
    let st = status(&d);
    assert_eq!(condition(&d, "Ready").map(|c| c.0).as_deref(), Some("True"));
    assert_eq!(
        condition(&d, "Stalled").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(
        condition(&d, "Reconciling").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(st.observed_generation, d.metadata.generation);
    let run = st.last_run.clone().expect("lastRun");
    assert_eq!(
        (
            run.adds,
            run.updates,
            run.deletes,
            run.conflicts,
            run.unmanaged
        ),
        (2, 0, 0, 0, 1)
    );
    assert!(!run.applied);
    assert_eq!(run.result, "PreviewReady");
    assert_eq!(st.history.len(), 1);
    assert_eq!(st.next_run_time, None, "DryRun has no next run");
    let p = st.preview.clone().expect("status.preview");
    assert_eq!(p.objects, vec!["example-com-preview".to_string()]);
    assert_eq!(p.rows, 3);

    // The exact CSV: BOM, CRLF, Add rows by userName, then Unmanaged; formula-like cells quoted.
    let cm = configmap(&ns, "example-com-preview")
        .await
        .expect("preview ConfigMap");
    let owner = cm.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owner.len(), 1);
    assert_eq!(owner[0].uid, d.metadata.uid.clone().unwrap_or_default());
    assert_eq!(owner[0].controller, Some(true));
    let csv = cm
        .data
        .as_ref()
        .and_then(|m| m.get("preview.csv"))
        .cloned()
        .expect("data.preview.csv");
    let expected = "\u{feff}action,userName,userPrincipalName,displayName,givenName,surname,email,active,changes,immutableId\r\n\
        Add,alice@example.com,alice@example.com,Alice Liddell,Alice,Liddell,alice@example.com,true,note: initial password required,YWxpY2UtaWQ=\r\n\
        Add,bob@example.com,bob@example.com,Bob Builder,Bob,Builder,bob@example.com,true,note: initial password required,'+Ym9iLWlk\r\n\
        Unmanaged,carol@example.com,,Carol Stray,Carol,Stray,carol@example.com,true,,\r\n";
    assert_eq!(lines(&csv), lines(expected));
    assert_eq!(csv, expected);
    let sha = dirsync::sync::csv::hex(&<sha2::Sha256 as sha2::Digest>::digest(csv.as_bytes()));
    assert_eq!(p.sha256, sha);
    let summary: serde_json::Value = serde_json::from_str(
        cm.data
            .as_ref()
            .and_then(|m| m.get("summary.json"))
            .expect("summary.json"),
    )
    .expect("json");
    assert_eq!(summary["counts"]["add"], 2);
    assert_eq!(summary["dryRun"], true);
    assert_eq!(summary["storage"]["layout"], "csv");
    assert_eq!(summary["sha256"], sha.as_str());

    // No destination write.
    assert_eq!(scim_users(&scim.base_url()).await, before);
    assert_eq!(before.len(), 1);
    assert_eq!(before[0]["id"], carol["id"]);

    // A Normal event with counts only.
    let evs = events_when(&ns, "example-com", |e| {
        e.iter().any(|e| e.1 == "PreviewReady")
    })
    .await;
    let ev = evs
        .iter()
        .find(|e| e.1 == "PreviewReady")
        .expect("PreviewReady event");
    assert_eq!(ev.0, "Normal");
    assert!(ev.2.contains("2 to add"), "{ev:?}");
    assert!(!ev.2.contains("alice"), "events carry no user data: {ev:?}");

    // A reconcile with nothing due writes nothing (a label change triggers one).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = op.counter("dirsync_kube_writes_total").await;
    let reconciles = op.counter("dirsync_reconciles_total").await;
    let rv = get(&ns, "example-com").await.metadata.resource_version;
    let cm_rv = configmap(&ns, "example-com-preview")
        .await
        .and_then(|c| c.metadata.resource_version);
    label(&ns, "example-com", "touched", "1").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        op.counter("dirsync_reconciles_total").await > reconciles,
        "the label change was reconciled"
    );
    assert_eq!(
        op.counter("dirsync_kube_writes_total").await,
        writes,
        "an idle reconcile writes nothing"
    );
    let after = get(&ns, "example-com").await;
    assert_eq!(status(&after), st, "status unchanged");
    assert_ne!(
        after.metadata.resource_version, rv,
        "(the label did change the object)"
    );
    assert_eq!(
        configmap(&ns, "example-com-preview")
            .await
            .and_then(|c| c.metadata.resource_version),
        cm_rv
    );

    // sync-now re-runs the preview and replaces it; the new user shows up.
    let mut dave = serde_json::Map::new();
    for (k, v) in user("dave@example.com", "Dave", "Dent", "ZGF2ZQ==")
        .as_object()
        .cloned()
        .unwrap_or_default()
    {
        dave.insert(k, v);
    }
    emu.tenant().add_user(&dave).expect("dave added");
    annotate(
        &ns,
        "example-com",
        "dirsync.io/sync-now",
        "2026-11-23T10:00",
    )
    .await;
    let d = wait_for(&ns, "example-com", "sync-now re-run", T, Some(&op), |d| {
        status(d).last_sync_now.as_deref() == Some("2026-11-23T10:00")
            && status(d).history.len() == 2
    })
    .await;
    let st2 = status(&d);
    assert_eq!(
        st2.last_run.as_ref().map(|r| r.trigger.clone()),
        Some(Some("SyncNow".to_string()))
    );
    assert_eq!(st2.last_run.as_ref().map(|r| r.adds), Some(3));
    assert_ne!(st2.preview.as_ref().map(|p| &p.sha256), Some(&p.sha256));
    let csv = configmap(&ns, "example-com-preview")
        .await
        .and_then(|c| c.data)
        .and_then(|m| m.get("preview.csv").cloned())
        .unwrap_or_default();
    assert!(csv.contains("\r\nAdd,dave@example.com,"), "{csv}");
    assert_eq!(
        scim_users(&scim.base_url()).await,
        before,
        "still no destination write"
    );
    // The same annotation value again does not re-run.
    label(&ns, "example-com", "touched", "2").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status(&get(&ns, "example-com").await).history.len(), 2);
    assert!(
        !op.log_text().contains(CLIENT_SECRET),
        "the client secret never reaches the log"
    );
    assert!(
        !op.log_text().contains(SCIM_TOKEN),
        "the SCIM token never reaches the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_syncs_users_and_a_second_reconcile_changes_nothing() {
    let Scenario {
        cp: _,
        ns,
        emu,
        scim,
        op,
    } = Scenario::start("op-once", emulator(&small_tenant()).await, "op-a", &[]).await;
    create(
        &ns,
        "example-com",
        spec("example.com", "Once", &emu, &scim.base_url()),
    )
    .await;

    let d = wait_for_reason(&ns, "example-com", "Synced", T, Some(&op)).await;
    let st = status(&d);
    let run = st.last_run.clone().expect("lastRun");
    assert!(run.applied);
    assert_eq!(
        (run.adds, run.updates, run.deletes, run.failed),
        (2, 0, 0, 0)
    );
    assert_eq!(st.managed_users, Some(2));
    assert_eq!(st.applied_generation, d.metadata.generation);
    assert_eq!(st.claim, None, "the claim is released");
    let users = scim_users(&scim.base_url()).await;
    let names: Vec<&str> = users
        .iter()
        .filter_map(|u| u["userName"].as_str())
        .collect();
    assert_eq!(names, ["alice@example.com", "bob@example.com"]);
    assert_eq!(users[0]["externalId"], "YWxpY2UtaWQ=");
    assert_eq!(users[1]["externalId"], "+Ym9iLWlk");
    assert_eq!(users[0]["name"]["familyName"], "Liddell");
    // The managed set and a run report are stored in the cluster.
    let managed = configmap(&ns, "example-com-managed")
        .await
        .expect("managed set ConfigMap");
    assert_eq!(annotation(&managed.metadata, "dirsync.io/count"), Some("2"));
    let reports: Vec<_> = ns
        .api::<k8s_openapi::api::core::v1::ConfigMap>()
        .list(&kube::api::ListParams::default().labels("dirsync.io/role=report"))
        .await
        .expect("reports")
        .items;
    assert_eq!(reports.len(), 1);
    let report: serde_json::Value = serde_json::from_str(
        reports[0]
            .data
            .as_ref()
            .and_then(|d| d.get("report.json"))
            .expect("report.json"),
    )
    .expect("json");
    assert_eq!(report["created"], 2);
    let evs = events_when(&ns, "example-com", |e| e.iter().any(|e| e.1 == "Synced")).await;
    assert!(
        evs.iter().any(|e| e.0 == "Normal" && e.1 == "Synced"),
        "{evs:?}"
    );
    let metrics = op.metrics().await;
    assert!(
        metrics.contains("dirsync_runs_total{result=\"Synced\",kind=\"Full\"} 1"),
        "{metrics}"
    );

    // Nothing changed: another reconcile makes no API write and no destination write.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = op.counter("dirsync_kube_writes_total").await;
    let reconciles = op.counter("dirsync_reconciles_total").await;
    label(&ns, "example-com", "touched", "1").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = op.counter("dirsync_reconciles_total").await - reconciles;
    assert!(idle >= 1.0);
    assert_eq!(
        op.counter("dirsync_kube_writes_total").await - writes,
        0.0,
        "API writes per idle reconcile"
    );
    assert_eq!(status(&get(&ns, "example-com").await), st);
    assert_eq!(
        scim_users(&scim.base_url()).await,
        users,
        "no destination write"
    );
    println!("idle reconciles: {idle}, API writes during them: 0");

    // A spec change (generation) runs Once again: nothing to do, still Synced.
    let patch = json!({"spec": {"maxAllowedDeletions": 50}});
    ns.api::<dirsync::crd::DirectorySync>()
        .patch(
            "example-com",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("spec patched");
    let d = wait_for(&ns, "example-com", "second Once run", T, Some(&op), |d| {
        status(d).history.len() == 2
    })
    .await;
    let run = status(&d).last_run.expect("lastRun");
    assert_eq!(
        (run.result.as_str(), run.adds, run.updates, run.deletes),
        ("Synced", 0, 0, 0)
    );
    assert_eq!(
        scim_users(&scim.base_url()).await,
        users,
        "nothing to write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_cancels_the_run_before_any_write_and_the_plan_stays_readable() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-guard").await;
    let fixture = tenant(
        &["example.com"],
        (1..=4)
            .map(|i| {
                user(
                    &format!("user{i}@example.com"),
                    "User",
                    &format!("N{i}"),
                    &format!("aW1t{i}"),
                )
            })
            .collect(),
    );
    let emu = emulator(&fixture).await;
    let scim = scim();
    secrets(&ns, &emu, CLIENT_SECRET).await;
    let op = Operator::start(cp, ns.name(), "op-a", &[]);
    create(
        &ns,
        "example-com",
        spec("example.com", "Once", &emu, &scim.base_url()),
    )
    .await;
    wait_for_reason(&ns, "example-com", "Synced", T, Some(&op)).await;
    let users = scim_users(&scim.base_url()).await;
    assert_eq!(users.len(), 4);

    for i in 1..=3 {
        emu.tenant()
            .delete_user(&format!("user{i}@example.com"), true)
            .expect("deleted in Entra");
    }
    annotate(&ns, "example-com", "dirsync.io/sync-now", "guard").await;
    let d = wait_for_reason(
        &ns,
        "example-com",
        "DeletionThresholdExceeded",
        T,
        Some(&op),
    )
    .await;
    let (ready, _, msg) = condition(&d, "Ready").expect("Ready");
    assert_eq!(ready, "False");
    // The guard's own words first, then how to confirm exactly these deletions instead
    // (the pinned preview, docs/behaviour.md §9).
    let pending = status(&d)
        .approval
        .and_then(|a| a.pending)
        .expect("a guard trip pins its preview");
    assert!(pending.guard_tripped);
    assert_eq!(pending.deletes, 3);
    assert_eq!(
        msg,
        format!(
            "Synchronization was canceled because the deletion percentage reached the threshold: 3 of 4 managed users (75 %) would be deleted or deactivated; maxAllowedDeletions is 65 %. Fix the source or raise the value, then set dirsync.io/sync-now. \
             Review the pending preview (dirsync preview get example-com -n {} --pending), then set spec.approvedPreview: {} to apply exactly these deletions: 0 adds, 0 updates, 3 deletes. It expires at {}.",
            ns.name(),
            pending.sha256,
            pending.expires_at.0
        )
    );
    assert_eq!(
        condition(&d, "Stalled").map(|c| (c.0, c.1)),
        Some(("True".into(), "DeletionThresholdExceeded".into()))
    );
    assert_eq!(scim_users(&scim.base_url()).await, users, "no write");
    assert_eq!(
        status(&d).managed_users,
        Some(4),
        "the managed set is untouched"
    );
    let evs = events_when(&ns, "example-com", |e| {
        e.iter().any(|e| e.1 == "DeletionThresholdExceeded")
    })
    .await;
    let w = evs
        .iter()
        .find(|e| e.1 == "DeletionThresholdExceeded")
        .expect("guard event");
    assert_eq!(w.0, "Warning");
    assert!(w.2.contains("3 of 4"), "{w:?}");
    // The would-be plan is in the preview.
    let csv = configmap(&ns, "example-com-preview")
        .await
        .and_then(|c| c.data)
        .and_then(|m| m.get("preview.csv").cloned())
        .unwrap_or_default();
    let deletes: Vec<&str> = csv
        .split("\r\n")
        .filter(|l| l.starts_with("Delete,"))
        .collect();
    assert_eq!(deletes.len(), 3, "{csv}");
    // It waits: no retry on its own.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status(&get(&ns, "example-com").await).history.len(), 2);

    // Raising the threshold (a spec change) applies it.
    let patch = json!({"spec": {"maxAllowedDeletions": 100}});
    ns.api::<dirsync::crd::DirectorySync>()
        .patch(
            "example-com",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("spec patched");
    let d = wait_for(
        &ns,
        "example-com",
        "Synced after raising",
        T,
        Some(&op),
        |d| ready_reason(d).as_deref() == Some("Synced") && status(d).history.len() == 3,
    )
    .await;
    assert_eq!(status(&d).last_run.map(|r| r.deletes), Some(3));
    assert_eq!(scim_users(&scim.base_url()).await.len(), 1);
}
