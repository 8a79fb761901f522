//! `dirsync operator --store-in=secrets` (docs/behaviour.md §5, §8: previews in Secrets where the `view`
//! role must not read the directory), against the real control plane:
//! - a dry run's preview, a sync's managed set and run report are Secrets, and the operator
//!   makes no ConfigMap at all; `dirsync preview get` reads the preview back (sha256 checked);
//! - a preview cut into gzip parts is stored and read back as Secrets, replaces the preview of
//!   the other kind, and leaves foreign objects of either kind alone;
//! - switching a running installation from ConfigMaps to Secrets and back keeps the managed
//!   set: the next run writes nothing to the destination, and what the old setting left is
//!   moved or removed.

use std::time::{Duration, Instant};

use crate::common::*;
use dirsync::controller::objects::{Objects, Owner, StoreKind};
use dirsync::controller::preview;
use dirsync::crd::DirectorySync;
use dirsync::sync::testing::{FakeDirectory, entra_user};
use dirsync::sync::{ManagedSet, OtherResources, SyncConfig, UpnMode, plan_run};
use dirsync_testenv::TestNamespace;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sha2::Digest;

const T: Duration = Duration::from_secs(60);

fn two_users() -> serde_json::Value {
    tenant(
        &["example.com"],
        vec![
            user("alice@example.com", "Alice", "Liddell", "YWxpY2UtaWQ="),
            user("bob@example.com", "Bob", "Builder", "Ym9iLWlk"),
            user("zed@other.org", "Zed", "Other", "emVk"),
        ],
    )
}

async fn secret(ns: &TestNamespace, name: &str) -> Option<Secret> {
    ns.api::<Secret>().get_opt(name).await.expect("get Secret")
}

/// Names of the ConfigMaps and Secrets labelled as objects of the resource with `uid`.
async fn owned(ns: &TestNamespace, uid: &str) -> (Vec<String>, Vec<String>) {
    let lp = ListParams::default().labels(&format!("dirsync.io/owner-uid={uid}"));
    let names = |items: Vec<ObjectMeta>| {
        let mut v: Vec<String> = items.into_iter().filter_map(|m| m.name).collect();
        v.sort();
        v
    };
    let cms = ns.api::<ConfigMap>().list(&lp).await.expect("list").items;
    let secrets = ns.api::<Secret>().list(&lp).await.expect("list").items;
    (
        names(cms.into_iter().map(|c| c.metadata).collect()),
        names(secrets.into_iter().map(|s| s.metadata).collect()),
    )
}

fn uid(d: &DirectorySync) -> String {
    d.metadata.uid.clone().unwrap_or_default()
}

/// `dirsync preview get NAME -n NS --verbose`: (stdout, stderr).
fn preview_get_verbose(
    cp: &dirsync_testenv::ControlPlane,
    ns: &str,
    name: &str,
) -> (Vec<u8>, String) {
    preview_get(cp, ns, name, &["--verbose"])
}

fn sha(b: &[u8]) -> String {
    dirsync::sync::csv::hex(&sha2::Sha256::digest(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_secrets_the_operator_writes_no_configmap() {
    let Scenario {
        cp,
        ns,
        emu,
        scim,
        op,
    } = Scenario::start(
        "op-secrets",
        emulator(&two_users()).await,
        "op-a",
        &["--store-in", "secrets"],
    )
    .await;
    create(
        &ns,
        "example-com",
        spec("example.com", "DryRun", &emu, &scim.base_url()),
    )
    .await;
    let d = wait_for_reason(&ns, "example-com", "PreviewReady", T, Some(&op)).await;
    let p = status(&d).preview.expect("status.preview");
    assert_eq!(p.kind, StoreKind::Secret);
    assert_eq!(p.objects, vec!["example-com-preview".to_string()]);
    let msg = condition(&d, "Ready").map(|c| c.2).unwrap_or_default();
    assert!(
        msg.contains("Preview ready in Secret example-com-preview"),
        "{msg}"
    );

    let s = secret(&ns, "example-com-preview")
        .await
        .expect("preview Secret");
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    let refs = s.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(refs.len(), 1);
    assert_eq!(
        (refs[0].uid.as_str(), refs[0].controller),
        (uid(&d).as_str(), Some(true))
    );
    let labels = s.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("dirsync.io/role").map(String::as_str),
        Some("preview")
    );
    let data = s.data.clone().unwrap_or_default();
    let csv = data
        .get("preview.csv")
        .map(|b| b.0.clone())
        .expect("data.preview.csv");
    assert_eq!(sha(&csv), p.sha256);
    let summary: serde_json::Value =
        serde_json::from_slice(&data.get("summary.json").expect("summary.json").0).expect("json");
    assert_eq!(summary["storage"]["kind"], "Secret");
    assert_eq!(summary["storage"]["layout"], "csv");

    // `dirsync preview get` finds it without being told the kind, and checks the sha256.
    let (out, err) = preview_get_verbose(cp, ns.name(), "example-com");
    assert_eq!(out, csv);
    assert!(String::from_utf8_lossy(&out).contains("\r\nAdd,alice@example.com,"));
    assert!(
        err.contains("in Secrets [\"example-com-preview\"]"),
        "{err}"
    );

    // Once: the managed set and the run report are Secrets too.
    let patch = json!({"spec": {"mode": "Once"}});
    ns.api::<DirectorySync>()
        .patch(
            "example-com",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("patched");
    let d = wait_for_reason(&ns, "example-com", "Synced", T, Some(&op)).await;
    let st = status(&d);
    assert_eq!(st.managed_users, Some(2));
    let names: Vec<String> = scim_users(&scim.base_url())
        .await
        .iter()
        .filter_map(|u| u["userName"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names, ["alice@example.com", "bob@example.com"]);
    let managed = secret(&ns, "example-com-managed")
        .await
        .expect("managed set Secret");
    assert_eq!(annotation(&managed.metadata, "dirsync.io/count"), Some("2"));
    let reports = ns
        .api::<Secret>()
        .list(&ListParams::default().labels("dirsync.io/role=report"))
        .await
        .expect("reports")
        .items;
    assert_eq!(reports.len(), 1);
    let report: serde_json::Value = serde_json::from_slice(
        &reports[0]
            .data
            .as_ref()
            .and_then(|d| d.get("report.json"))
            .expect("report.json")
            .0,
    )
    .expect("json");
    assert_eq!(report["created"], 2);
    let msg = condition(&d, "Ready").map(|c| c.2).unwrap_or_default();
    assert!(
        msg.contains("Run report: Secret example-com-report-"),
        "{msg}"
    );

    // Not one ConfigMap: none of the resource's, and none at all in the namespace.
    let (cms, secrets) = owned(&ns, &uid(&d)).await;
    assert_eq!(cms, Vec::<String>::new());
    assert_eq!(
        secrets.len(),
        3,
        "preview, managed set, report: {secrets:?}"
    );
    let all: Vec<String> = ns
        .api::<ConfigMap>()
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        // Published into every namespace by kube-controller-manager.
        .filter(|n| n != "kube-root-ca.crt")
        .collect();
    assert_eq!(all, Vec::<String>::new(), "the operator made no ConfigMap");
    let m = op.metrics().await;
    assert!(
        m.contains("dirsync_kube_writes_total{verb=\"secret\"}"),
        "{m}"
    );
    assert!(!m.contains("verb=\"configmap\""), "{m}");
    let log = op.log_text();
    assert!(!log.contains(CLIENT_SECRET) && !log.contains(SCIM_TOKEN));
    assert!(
        !log.contains("alice@example.com"),
        "no user data in the log"
    );
}

async fn planned(n: u128) -> dirsync::sync::PlannedRun {
    let source =
        FakeDirectory::with_users((1..=n).map(|i| entra_user(i, &format!("user{i}@example.com"))));
    plan_run(
        &source,
        &FakeDirectory::new(),
        &SyncConfig::new("example.com", UpnMode::Enabled, 65),
        &ManagedSet::new(),
        &OtherResources::default(),
    )
    .await
    .expect("plan")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_in_gzip_parts_is_stored_as_secrets_and_replaces_the_configmap_one() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-secret-parts").await;
    let emu = emulator(&two_users()).await;
    let obj = create(
        &ns,
        "example-com",
        spec("example.com", "DryRun", &emu, "http://127.0.0.1:9/v2"),
    )
    .await;
    let owner = Owner::of(&obj).expect("owner");
    let run = planned(400).await;
    let now = k8s_openapi::jiff::Timestamp::now();
    let later = now + k8s_openapi::jiff::SignedDuration::from_hours(1);
    // Parts of 4 KiB stand in for 900 KiB ones (the layout is the same at any size).
    let max = 4096;
    let in_cms = Objects::new(ns.client(), ns.name(), StoreKind::ConfigMap);
    let in_secrets = Objects::new(ns.client(), ns.name(), StoreKind::Secret);

    // What an operator with ConfigMaps left: a preview in parts.
    let old = preview::layout(
        &owner,
        StoreKind::ConfigMap,
        max,
        &run,
        true,
        "run-1",
        now,
        later,
    )
    .expect("layout");
    preview::publish(&in_cms, &owner, &old)
        .await
        .expect("publish ConfigMaps");
    let (cms, _) = owned(&ns, &owner.uid).await;
    assert!(cms.len() >= 3, "main + parts: {cms:?}");

    // The next preview, with Secrets: written in parts, the ConfigMap one removed.
    let later2 = later + k8s_openapi::jiff::SignedDuration::from_secs(1);
    let new = preview::layout(
        &owner,
        StoreKind::Secret,
        max,
        &run,
        true,
        "run-2",
        now,
        later2,
    )
    .expect("layout");
    assert_eq!(new.summary["storage"]["layout"], "gzip-parts");
    assert!(new.status.objects.len() >= 3, "{:?}", new.status.objects);
    preview::publish(&in_secrets, &owner, &new)
        .await
        .expect("publish Secrets");
    let (cms, secrets) = owned(&ns, &owner.uid).await;
    assert_eq!(
        cms,
        Vec::<String>::new(),
        "the ConfigMap preview is removed"
    );
    let mut want = new.status.objects.clone();
    want.sort();
    assert_eq!(secrets, want);
    for name in &new.status.objects[1..] {
        let part = secret(&ns, name).await.expect("part");
        let n = part
            .data
            .as_ref()
            .and_then(|d| d.get("preview.csv.gz.part"))
            .map(|b| b.0.len())
            .unwrap_or(0);
        assert!(n > 0 && n <= max, "{name}: {n} bytes");
        assert_eq!(
            part.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("dirsync.io/role"))
                .map(String::as_str),
            Some("preview-part")
        );
    }
    let (csv, err) = preview_get_verbose(cp, ns.name(), "example-com");
    assert_eq!(sha(&csv), new.status.sha256);
    assert!(err.contains("layout gzip-parts in Secrets"), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&csv).matches("\r\nAdd,").count(),
        400
    );

    // A foreign ConfigMap with the preview's name is left alone by the next Secret preview.
    let foreign_cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("example-com-preview".into()),
            ..Default::default()
        },
        data: Some([("mine".to_string(), "not dirsync's".to_string())].into()),
        ..Default::default()
    };
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &foreign_cm)
        .await
        .expect("foreign ConfigMap");
    let small = preview::layout(
        &owner,
        StoreKind::Secret,
        1 << 20,
        &run,
        true,
        "run-3",
        now,
        later2,
    )
    .expect("layout");
    preview::publish(&in_secrets, &owner, &small)
        .await
        .expect("publish");
    assert_eq!(
        configmap(&ns, "example-com-preview")
            .await
            .and_then(|c| c.data),
        foreign_cm.data,
        "a foreign ConfigMap is never touched"
    );
    let (_, secrets) = owned(&ns, &owner.uid).await;
    assert_eq!(
        secrets,
        ["example-com-preview"],
        "the smaller preview drops its parts"
    );
    // preview get passes over the ConfigMap, which is no preview, and reads the Secret.
    let (csv, err) = preview_get_verbose(cp, ns.name(), "example-com");
    assert_eq!(sha(&csv), small.status.sha256);
    assert!(err.contains("layout csv in Secrets"), "{err}");
    // With a real preview in both kinds (a switch not yet cleaned up), the newer is read.
    ns.api::<ConfigMap>()
        .delete("example-com-preview", &Default::default())
        .await
        .expect("delete the foreign ConfigMap");
    let newer = preview::layout(
        &owner,
        StoreKind::ConfigMap,
        max,
        &planned(5).await,
        true,
        "run-4",
        now + k8s_openapi::jiff::SignedDuration::from_secs(10),
        later2,
    )
    .expect("layout");
    for o in &newer.objects {
        in_cms.apply(o).await.expect("apply");
    }
    let (csv, err) = preview_get_verbose(cp, ns.name(), "example-com");
    assert_eq!(sha(&csv), newer.status.sha256);
    assert!(err.contains("in ConfigMaps"), "{err}");
    preview::remove(&in_cms, &owner).await.expect("remove");
    assert_eq!(
        owned(&ns, &owner.uid).await,
        (vec![], vec![]),
        "remove takes both kinds"
    );

    // A foreign Secret with the preview's name: PreviewConflict, and it is left untouched.
    let other = create(
        &ns,
        "other",
        spec("other.example.com", "DryRun", &emu, "http://127.0.0.1:9/v2"),
    )
    .await;
    let other_owner = Owner::of(&other).expect("owner");
    put_secret(
        &ns,
        "other-preview",
        &[("token", "someone else's credential")],
    )
    .await;
    let l = preview::layout(
        &other_owner,
        StoreKind::Secret,
        max,
        &run,
        true,
        "run-1",
        now,
        later,
    )
    .expect("layout");
    let e = preview::publish(&in_secrets, &other_owner, &l)
        .await
        .expect_err("conflict");
    assert!(
        e.to_string()
            .contains("Secret \"other-preview\" exists and is not owned"),
        "{e}"
    );
    let kept = secret(&ns, "other-preview").await.expect("kept");
    assert_eq!(
        kept.data.and_then(|d| d.get("token").map(|b| b.0.clone())),
        Some(b"someone else's credential".to_vec())
    );
    assert_eq!(
        owned(&ns, &other_owner.uid).await,
        (vec![], vec![]),
        "no part was written"
    );
}

/// Waits until the resource has answered `sync-now = value` with a finished run.
async fn sync_now(ns: &TestNamespace, op: &Operator, value: &str) -> DirectorySync {
    annotate(ns, "example-com", "dirsync.io/sync-now", value).await;
    wait_for(ns, "example-com", "the sync-now run", T, Some(op), |d| {
        let s = status(d);
        s.last_sync_now.as_deref() == Some(value) && s.claim.is_none()
    })
    .await
}

fn user_names(users: &[serde_json::Value]) -> Vec<(String, String)> {
    users
        .iter()
        .map(|u| {
            (
                u["userName"].as_str().unwrap_or_default().to_owned(),
                u["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Each switch is followed by a run after a user left the source: it deletes exactly that
/// user only if the managed set was found where the other setting left it (without it, the
/// remaining users would be adopted again and the one who left would only be Unmanaged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_to_secrets_and_back_keeps_the_managed_set() {
    dirsync::clients::outbound::init_crypto();
    let started = Instant::now();
    let cp = control_plane().await;
    let ns = cp.namespace("op-switch").await;
    let emu = emulator(&tenant(
        &["example.com"],
        vec![
            user("alice@example.com", "Alice", "Liddell", "YWxpY2UtaWQ="),
            user("bob@example.com", "Bob", "Builder", "Ym9iLWlk"),
            user("carol@example.com", "Carol", "Jones", "Y2Fyb2w="),
        ],
    ))
    .await;
    let scim = scim();
    secrets(&ns, &emu, CLIENT_SECRET).await;

    // ConfigMaps (the default): a sync.
    let mut op = Operator::start(cp, ns.name(), "op-cm", &[]);
    create(
        &ns,
        "example-com",
        spec("example.com", "Once", &emu, &scim.base_url()),
    )
    .await;
    let d = wait_for_reason(&ns, "example-com", "Synced", T, Some(&op)).await;
    let uid = uid(&d);
    assert_eq!(status(&d).managed_users, Some(3));
    let users = user_names(&scim_users(&scim.base_url()).await);
    assert_eq!(users.len(), 3);
    let (cms, secrets) = owned(&ns, &uid).await;
    assert_eq!(cms.len(), 3, "preview, managed set, report: {cms:?}");
    assert_eq!(secrets, Vec::<String>::new());
    assert_eq!(op.terminate(), Some(0));

    // Secrets, with a report retention short enough to see the old report expire.
    emu.tenant()
        .delete_user("carol@example.com", false)
        .expect("carol leaves");
    let mut op = Operator::start(
        cp,
        ns.name(),
        "op-secret",
        &["--store-in", "secrets", "--report-retention", "8s"],
    );
    let d = sync_now(&ns, &op, "to-secrets").await;
    let st = status(&d);
    let run = st.last_run.clone().expect("lastRun");
    assert_eq!(
        (run.result.as_str(), run.applied),
        ("Synced", true),
        "{run:?}"
    );
    assert_eq!(
        (
            run.adds,
            run.updates,
            run.deletes,
            run.conflicts,
            run.unmanaged,
            run.failed
        ),
        (0, 0, 1, 0, 0, 0),
        "the managed set was found in ConfigMaps: carol, and only carol, is deleted"
    );
    assert_eq!(st.managed_users, Some(2));
    assert_eq!(
        user_names(&scim_users(&scim.base_url()).await),
        users[..2].to_vec(),
        "alice and bob untouched (same ids, no duplicate)"
    );
    assert_eq!(st.preview.as_ref().map(|p| p.kind), Some(StoreKind::Secret));
    assert!(
        configmap(&ns, "example-com-preview").await.is_none(),
        "old preview removed"
    );
    assert!(
        configmap(&ns, "example-com-managed").await.is_none(),
        "managed set moved"
    );
    assert!(secret(&ns, "example-com-preview").await.is_some());
    let managed = secret(&ns, "example-com-managed")
        .await
        .expect("managed Secret");
    assert_eq!(annotation(&managed.metadata, "dirsync.io/count"), Some("2"));
    // The ConfigMap report expires as reports do; then no ConfigMap of the resource is left.
    let deadline = Instant::now() + T;
    loop {
        let (cms, _) = owned(&ns, &uid).await;
        if cms.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left in ConfigMaps: {cms:?}\n{}",
            op.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(op.terminate(), Some(0));

    // And back to ConfigMaps: the set is found in Secrets, the Secret preview and managed
    // set are gone (the Secret report of the run before, unless already expired, goes with
    // the usual retention).
    emu.tenant()
        .delete_user("bob@example.com", false)
        .expect("bob leaves");
    let mut op = Operator::start(cp, ns.name(), "op-cm-again", &[]);
    let d = sync_now(&ns, &op, "back").await;
    let run = status(&d).last_run.expect("lastRun");
    assert_eq!(
        (
            run.result.as_str(),
            run.adds,
            run.updates,
            run.deletes,
            run.unmanaged,
            run.failed
        ),
        ("Synced", 0, 0, 1, 0, 0),
        "the managed set was found in Secrets: bob, and only bob, is deleted"
    );
    assert_eq!(
        user_names(&scim_users(&scim.base_url()).await),
        users[..1].to_vec()
    );
    assert_eq!(
        status(&d).preview.map(|p| p.kind),
        Some(StoreKind::ConfigMap)
    );
    let (cms, secrets) = owned(&ns, &uid).await;
    assert!(
        cms.starts_with(&["example-com-managed".into(), "example-com-preview".into()])
            && cms.len() == 3
            && cms[2].starts_with("example-com-report-"),
        "{cms:?}"
    );
    assert!(
        secrets.len() <= 1 && secrets.iter().all(|s| s.starts_with("example-com-report-")),
        "at most the report of the run before is left in Secrets: {secrets:?}"
    );
    assert_eq!(op.terminate(), Some(0));
    eprintln!(
        "configmaps -> secrets -> configmaps: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
