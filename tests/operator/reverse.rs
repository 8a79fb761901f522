//! A reverse resource (docs/behaviour.md §6: scim2-server as the source, the Graph emulator as
//! the destination) on the real control plane, through DryRun, Once and Periodic: the same
//! status, preview, Events and guard as the forward direction, and writes only into Entra ID.

use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const ADMIN_ID: &str = "b0000000-0000-4000-8000-000000000001";

fn writing_tenant() -> Value {
    json!({
        "tenantId": TENANT_ID,
        "domains": [{"id": "example.com"}],
        "applications": [{
            "clientId": CLIENT_ID,
            "clientSecret": CLIENT_SECRET,
            "roles": ["User.Read.All", "User.ReadWrite.All", "Domain.Read.All"],
        }],
        "users": [{
            "id": ADMIN_ID, "userPrincipalName": "admin@example.com", "displayName": "Admin",
            "accountEnabled": true, "userType": "Member",
        }],
        "directoryRoles": [{"displayName": "Global Administrator", "members": [ADMIN_ID]}],
    })
}

/// The forward spec of operator_common with its sides swapped.
fn reverse_spec(mode: &str, sc: &Scenario) -> Value {
    let mut s = spec("example.com", mode, &sc.emu, &sc.scim.base_url());
    s["upnMode"] = json!("Disabled");
    let entra = s["source"]["entraID"].clone();
    let scim = s["destination"]["scim"].clone();
    s["source"] = json!({ "scim": scim });
    s["destination"] = json!({ "entraID": entra });
    s
}

fn graph_writes(sc: &Scenario) -> u64 {
    sc.emu.state().stats.snapshot(0)["writes"]["succeeded"]
        .as_u64()
        .unwrap_or(0)
}

fn entra_user(sc: &Scenario, upn: &str) -> Option<Value> {
    sc.emu
        .tenant()
        .snapshot()
        .find(upn)
        .map(|u| u.to_full_json())
}

async fn patch_spec(sc: &Scenario, name: &str, patch: Value) {
    sc.ns
        .api::<dirsync::crd::DirectorySync>()
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&json!({ "spec": patch })),
        )
        .await
        .expect("spec patched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverse_resource_previews_applies_and_is_guarded_like_a_forward_one() {
    let emu = emulator(&writing_tenant()).await;
    let sc = Scenario::start("op-reverse", emu, "op-r", &[]).await;
    let base = sc.scim.base_url();
    let mut ids = Vec::new();
    for (name, given, family, ext) in [
        ("alice", "Alice", "Liddell", "YWxpY2U="),
        ("bob", "Bob", "Builder", "Ym9i"),
        ("carol", "Carol", "Stray", "Y2Fyb2w="),
    ] {
        let u = scim_create(
            &base,
            json!({"userName": name, "externalId": ext, "displayName": format!("{given} {family}"),
                   "name": {"givenName": given, "familyName": family}, "active": true}),
        )
        .await;
        ids.push(u["id"].as_str().unwrap().to_string());
    }
    scim_create(
        &base,
        json!({"userName": "admin", "displayName": "Ada Admin", "active": true,
               "name": {"givenName": "Ada", "familyName": "Admin"}}),
    )
    .await;

    // DryRun: the exact preview, nothing written.
    create(&sc.ns, "reverse", reverse_spec("DryRun", &sc)).await;
    let d = wait_for_reason(&sc.ns, "reverse", "PreviewReady", T, Some(&sc.op)).await;
    let run = status(&d).last_run.expect("lastRun");
    assert_eq!(
        (run.adds, run.updates, run.deletes, run.conflicts),
        (3, 0, 0, 1)
    );
    let csv = configmap(&sc.ns, "reverse-preview")
        .await
        .and_then(|c| c.data)
        .and_then(|m| m.get("preview.csv").cloned())
        .expect("preview");
    let rows: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        rows[1],
        "Add,alice,alice@example.com,Alice Liddell,Alice,Liddell,,true,\"note: random password, never shown\",YWxpY2U="
    );
    assert!(
        rows[4].starts_with("Conflict,admin,admin@example.com,Ada Admin,")
            && rows[4].contains("adoptExisting"),
        "{csv}"
    );
    assert_eq!(rows.len(), 5, "{csv}");
    assert_eq!(graph_writes(&sc), 0, "a preview writes nothing");

    // Once: applied into Entra ID; the administrator untouched.
    let admin_before = entra_user(&sc, "admin@example.com");
    patch_spec(&sc, "reverse", json!({"mode": "Once"})).await;
    let d = wait_for_reason(&sc.ns, "reverse", "Synced", T, Some(&sc.op)).await;
    let run = status(&d).last_run.expect("lastRun");
    assert_eq!((run.adds, run.conflicts), (3, 1));
    assert_eq!(status(&d).managed_users, Some(3));
    let alice = entra_user(&sc, "alice@example.com").expect("alice in Entra ID");
    assert_eq!(alice["onPremisesImmutableId"], "YWxpY2U=");
    assert_eq!(alice["mailNickname"], "alice");
    assert_eq!(graph_writes(&sc), 3);
    assert_eq!(entra_user(&sc, "admin@example.com"), admin_before);
    let evs = events_when(&sc.ns, "reverse", |e| e.iter().any(|e| e.1 == "Synced")).await;
    assert!(
        evs.iter()
            .all(|e| !e.2.contains(CLIENT_SECRET) && !e.2.contains(SCIM_TOKEN)),
        "{evs:?}"
    );

    // Periodic: two of three leave the source; 67 % ≥ 65 %, so the slot is cancelled with
    // nothing written, exactly as forward.
    for id in &ids[..2] {
        let r = reqwest::Client::new()
            .delete(format!("{base}/Users/{id}"))
            .bearer_auth(SCIM_TOKEN)
            .send()
            .await
            .expect("SCIM delete");
        assert!(r.status().is_success());
    }
    patch_spec(
        &sc,
        "reverse",
        json!({"mode": "Periodic", "interval": "12s"}),
    )
    .await;
    let d = wait_for_reason(
        &sc.ns,
        "reverse",
        "DeletionThresholdExceeded",
        Duration::from_secs(90),
        Some(&sc.op),
    )
    .await;
    assert_eq!(
        condition(&d, "Stalled").map(|c| c.0).as_deref(),
        Some("True")
    );
    assert_eq!(graph_writes(&sc), 3, "the guard writes nothing");
    assert!(entra_user(&sc, "alice@example.com").is_some());

    // Raising the threshold lets the next applying run soft-delete both.
    patch_spec(&sc, "reverse", json!({"maxAllowedDeletions": 100})).await;
    let d = wait_for(
        &sc.ns,
        "reverse",
        "Synced after raising",
        T,
        Some(&sc.op),
        |d| {
            status(d)
                .last_run
                .as_ref()
                .is_some_and(|r| r.result == "Synced" && r.deletes == 2)
        },
    )
    .await;
    assert_eq!(status(&d).managed_users, Some(1));
    assert!(entra_user(&sc, "alice@example.com").is_none());
    assert_eq!(
        sc.emu.tenant().deleted_users().len(),
        2,
        "soft-deleted, restorable"
    );
}
