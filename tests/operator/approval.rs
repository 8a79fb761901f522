//! Approved previews on the real control plane (docs/behaviour.md §9): `approval: OnDeletes`
//! waits when a Delete appears and not otherwise, pins the preview as `<name>-pending` (kept
//! while the plan is unchanged), and applies it when `spec.approvedPreview` names its hash — once.
//! Unknown, used and expired hashes write nothing; an approved guard trip applies exactly its
//! deletions.

use std::time::Duration;

use crate::common::*;
use dirsync::crd::{DirectorySync, PendingApproval};
use dirsync_testenv::TestNamespace;
use serde_json::json;
use sha2::Digest;

const T: Duration = Duration::from_secs(60);

fn four_users() -> serde_json::Value {
    tenant(
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
    )
}

/// Waits for run number `runs` (history length) to end with `reason`.
async fn wait_run(ns: &TestNamespace, runs: usize, reason: &str, op: &Operator) -> DirectorySync {
    wait_for(
        ns,
        "example-com",
        &format!("run {runs} ending {reason}"),
        T,
        Some(op),
        |d| status(d).history.len() >= runs && ready_reason(d).as_deref() == Some(reason),
    )
    .await
}

async fn patch_spec(ns: &TestNamespace, spec: serde_json::Value) {
    ns.api::<DirectorySync>()
        .patch(
            "example-com",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&json!({ "spec": spec })),
        )
        .await
        .expect("spec patched");
}

fn pending(d: &DirectorySync) -> PendingApproval {
    status(d)
        .approval
        .and_then(|a| a.pending)
        .expect("status.approval.pending")
}

/// `dirsync preview get example-com -n NS --pending`: the CSV bytes.
fn pending_csv(cp: &dirsync_testenv::ControlPlane, ns: &str) -> Vec<u8> {
    preview_get(cp, ns, "example-com", &["--pending"]).0
}

fn sha256sum(b: &[u8]) -> String {
    format!(
        "sha256:{}",
        dirsync::sync::csv::hex(&sha2::Sha256::digest(b))
    )
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_deletes_waits_for_a_delete_and_its_approval_applies_once() {
    let Scenario {
        cp,
        ns,
        emu,
        scim,
        op,
    } = Scenario::start("op-approval", emulator(&four_users()).await, "op-a", &[]).await;
    let mut s = spec("example.com", "Once", &emu, &scim.base_url());
    s["approval"] = json!("OnDeletes");
    s["maxAllowedDeletions"] = json!(100);
    create(&ns, "example-com", s).await;

    // Adds only: no approval needed.
    let d = wait_run(&ns, 1, "Synced", &op).await;
    assert_eq!(status(&d).approval, None);
    assert_eq!(scim_users(&scim.base_url()).await.len(), 4);

    // A Delete appears: the run writes nothing and waits, with its preview pinned.
    emu.tenant()
        .delete_user("user1@example.com", true)
        .expect("deleted in Entra");
    annotate(&ns, "example-com", "dirsync.io/sync-now", "1").await;
    let d = wait_run(&ns, 2, "AwaitingApproval", &op).await;
    let p = pending(&d);
    assert_eq!((p.adds, p.updates, p.deletes), (0, 0, 1));
    assert!(!p.guard_tripped);
    assert_eq!(p.objects, ["example-com-pending"]);
    let (ready, _, msg) = condition(&d, "Ready").expect("Ready");
    assert_eq!(ready, "False");
    assert_eq!(
        msg,
        format!(
            "Awaiting approval (spec.approval: OnDeletes): this run wrote nothing. Review the pending preview (dirsync preview get example-com -n {} --pending), then set spec.approvedPreview: {} to apply: 0 adds, 0 updates, 1 deletes. It expires at {}.",
            ns.name(),
            p.sha256,
            p.expires_at.0
        )
    );
    for ty in ["Stalled", "Reconciling"] {
        assert_eq!(
            condition(&d, ty).map(|c| c.0).as_deref(),
            Some("False"),
            "{ty}"
        );
    }
    assert_eq!(
        status(&d).last_run.map(|r| r.result).as_deref(),
        Some("AwaitingApproval")
    );
    assert_eq!(
        scim_users(&scim.base_url()).await.len(),
        4,
        "nothing written"
    );
    let evs = events_when(&ns, "example-com", |e| {
        e.iter().any(|e| e.1 == "AwaitingApproval")
    })
    .await;
    let ev = evs
        .iter()
        .find(|e| e.1 == "AwaitingApproval")
        .expect("AwaitingApproval event");
    assert_eq!(ev.0, "Warning");
    assert!(ev.2.contains(&p.sha256), "{ev:?}");
    // What a reviewer computes is what status shows; the CSV holds the Delete row.
    let csv = pending_csv(cp, ns.name());
    assert_eq!(sha256sum(&csv), p.sha256);
    let text = String::from_utf8(csv).expect("UTF-8");
    let deletes: Vec<&str> = text
        .split("\r\n")
        .filter(|l| l.starts_with("Delete,"))
        .collect();
    assert_eq!(deletes.len(), 1, "{text}");
    assert!(deletes[0].starts_with("Delete,user1@example.com,"));
    // The gauges follow the watch (the reconcile after this status write sets them).
    let mut gauges = String::new();
    for _ in 0..40 {
        gauges = op.metrics().await;
        if metric(&gauges, "dirsync_approvals_pending ") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        metric(&gauges, "dirsync_approvals_pending "),
        Some(1.0),
        "{gauges}"
    );
    assert_eq!(
        metric(
            &gauges,
            "dirsync_approval_oldest_pending_timestamp_seconds "
        ),
        Some(p.since.0.as_second() as f64)
    );

    // A later run with the same plan keeps the pin as it is.
    annotate(&ns, "example-com", "dirsync.io/sync-now", "2").await;
    let d = wait_run(&ns, 3, "AwaitingApproval", &op).await;
    assert_eq!(pending(&d), p, "the pin survives an unchanged plan");

    // An unknown hash writes nothing.
    patch_spec(
        &ns,
        json!({"approvedPreview": format!("sha256:{}", "0".repeat(64))}),
    )
    .await;
    let d = wait_run(&ns, 4, "PreviewChanged", &op).await;
    assert_eq!(scim_users(&scim.base_url()).await.len(), 4);
    assert_eq!(pending(&d), p);

    // The pinned hash applies: exactly the reviewed deletion.
    patch_spec(&ns, json!({"approvedPreview": p.sha256})).await;
    let d = wait_run(&ns, 5, "Synced", &op).await;
    let st = status(&d);
    let approval = st.approval.clone().expect("status.approval");
    assert_eq!(approval.consumed.as_deref(), Some(p.sha256.as_str()));
    assert_eq!(approval.pending, None);
    let run = st.last_run.clone().expect("lastRun");
    assert_eq!((run.adds, run.updates, run.deletes), (0, 0, 1));
    assert!(
        run.message.as_deref().unwrap_or_default().starts_with(&format!(
            "Applied the approved preview {}: 1 rows applied, 0 stale (skipped), 0 not approved",
            p.sha256
        )),
        "{:?}",
        run.message
    );
    let names: Vec<String> = scim_users(&scim.base_url())
        .await
        .iter()
        .map(|u| u["userName"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        !names.contains(&"user1@example.com".to_owned()) && names.len() == 3,
        "{names:?}"
    );
    assert!(
        configmap(&ns, "example-com-pending").await.is_none(),
        "an applied pin is removed"
    );
    let text = op.metrics().await;
    assert_eq!(
        metric(&text, "dirsync_approvals_total{result=\"applied\"}"),
        Some(1.0),
        "{text}"
    );

    // Used once: the next Delete waits again, and the used hash does not apply it.
    emu.tenant()
        .delete_user("user2@example.com", true)
        .expect("deleted in Entra");
    annotate(&ns, "example-com", "dirsync.io/sync-now", "3").await;
    let d = wait_run(&ns, 6, "ApprovalConsumed", &op).await;
    assert_eq!(
        scim_users(&scim.base_url()).await.len(),
        3,
        "nothing written"
    );
    let p2 = pending(&d);
    assert_ne!(p2.sha256, p.sha256);
    assert_eq!(p2.deletes, 1);
    let (_, _, msg) = condition(&d, "Ready").expect("Ready");
    assert!(
        msg.starts_with(&format!(
            "spec.approvedPreview {} was already applied once",
            p.sha256
        )),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_approval_writes_nothing_and_an_approved_guard_trip_applies() {
    let Scenario {
        cp,
        ns,
        emu,
        scim,
        op,
    } = Scenario::start(
        "op-approval-guard",
        emulator(&four_users()).await,
        "op-a",
        &["--preview-ttl", "10s"],
    )
    .await;
    create(
        &ns,
        "example-com",
        spec("example.com", "Once", &emu, &scim.base_url()),
    )
    .await;
    wait_run(&ns, 1, "Synced", &op).await;

    // Three of four leave: the guard (65 %) cancels, and pins the plan for approval.
    for i in 1..=3 {
        emu.tenant()
            .delete_user(&format!("user{i}@example.com"), true)
            .expect("deleted in Entra");
    }
    annotate(&ns, "example-com", "dirsync.io/sync-now", "1").await;
    let d = wait_run(&ns, 2, "DeletionThresholdExceeded", &op).await;
    let p = pending(&d);
    assert!(p.guard_tripped);
    assert_eq!(p.deletes, 3);
    assert_eq!(
        condition(&d, "Stalled").map(|c| c.0).as_deref(),
        Some("True"),
        "a guard trip still stalls"
    );
    assert_eq!(sha256sum(&pending_csv(cp, ns.name())), p.sha256);

    // Unapproved past the preview TTL: the pin is removed and its hash remembered as expired.
    let d = wait_for(&ns, "example-com", "the pin to expire", T, Some(&op), |d| {
        status(d)
            .approval
            .is_some_and(|a| a.pending.is_none() && a.expired.as_deref() == Some(p.sha256.as_str()))
    })
    .await;
    assert!(configmap(&ns, "example-com-pending").await.is_none());
    assert!(
        condition(&d, "Ready").is_some_and(|c| c.2.contains("expired")),
        "{:?}",
        condition(&d, "Ready")
    );

    // Approving the expired hash writes nothing; the same plan is pinned again.
    patch_spec(&ns, json!({"approvedPreview": p.sha256})).await;
    let d = wait_run(&ns, 3, "ApprovalExpired", &op).await;
    assert_eq!(
        scim_users(&scim.base_url()).await.len(),
        4,
        "nothing written"
    );
    let again = pending(&d);
    assert_eq!(again.sha256, p.sha256, "the same plan, the same hash");
    // A refused approval stays refused while spec.approvedPreview still names it.
    annotate(&ns, "example-com", "dirsync.io/sync-now", "2").await;
    wait_run(&ns, 4, "ApprovalExpired", &op).await;
    assert_eq!(scim_users(&scim.base_url()).await.len(), 4);

    // Set anew (removed, then set again) on a fresh pin: exactly the three reviewed deletions
    // apply, past the guard, because approving them is the confirmation the guard asks for.
    wait_for(
        &ns,
        "example-com",
        "the second pin to expire",
        T,
        Some(&op),
        |d| status(d).approval.is_some_and(|a| a.pending.is_none()),
    )
    .await;
    patch_spec(&ns, json!({"approvedPreview": null})).await;
    let d = wait_run(&ns, 5, "DeletionThresholdExceeded", &op).await;
    let fresh = pending(&d);
    assert_eq!(fresh.sha256, p.sha256);
    patch_spec(&ns, json!({"approvedPreview": fresh.sha256})).await;
    let d = wait_run(&ns, 6, "Synced", &op).await;
    let run = status(&d).last_run.expect("lastRun");
    assert_eq!(run.deletes, 3);
    let users = scim_users(&scim.base_url()).await;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["userName"], "user4@example.com");
    assert_eq!(status(&d).managed_users, Some(1));
}

/// Periodic with `approval: Always`: every slot re-plans and waits; while the plan stays the same
/// the pin stays exactly as the first waiting run made it; approving applies at once (the spec
/// change does not wait for the next slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_slots_keep_an_unchanged_pin_and_an_approval_applies_at_once() {
    let Scenario {
        cp: _,
        ns,
        emu,
        scim,
        op,
    } = Scenario::start(
        "op-approval-periodic",
        emulator(&four_users()).await,
        "op-a",
        &[],
    )
    .await;
    let mut s = spec("example.com", "Periodic", &emu, &scim.base_url());
    s["approval"] = json!("Always");
    s["interval"] = json!("2s");
    create(&ns, "example-com", s).await;
    let waiting = |d: &DirectorySync| {
        status(d)
            .history
            .into_iter()
            .filter(|r| r.result == "AwaitingApproval")
            .collect::<Vec<_>>()
    };
    let d = wait_for(
        &ns,
        "example-com",
        "three slots waiting for approval",
        T,
        Some(&op),
        |d| waiting(d).len() >= 3,
    )
    .await;
    let p = pending(&d);
    assert_eq!((p.adds, p.deletes), (4, 0));
    let runs = waiting(&d);
    assert!(
        runs.iter().all(|r| r.trigger.as_deref() == Some("Slot")),
        "{runs:?}"
    );
    assert_eq!(
        Some(p.run_id.as_str()),
        runs.last().map(|r| r.id.as_str()),
        "pinned by the first waiting slot and kept by the later ones"
    );
    assert!(
        scim_users(&scim.base_url()).await.is_empty(),
        "nothing written"
    );

    patch_spec(&ns, json!({"approvedPreview": p.sha256})).await;
    let d = wait_for(
        &ns,
        "example-com",
        "the approval applied",
        T,
        Some(&op),
        |d| ready_reason(d).as_deref() == Some("Synced"),
    )
    .await;
    let last = status(&d).last_run.expect("lastRun");
    assert_eq!(
        last.trigger.as_deref(),
        Some("SpecChange"),
        "at once, not at a slot"
    );
    assert_eq!(last.adds, 4);
    assert_eq!(scim_users(&scim.base_url()).await.len(), 4);
}
