//! The managed set kept in the cluster, against the real API server: a 100,000-user set is
//! compressed and split over several ConfigMaps and read back equal; a smaller save removes
//! the parts it no longer needs; an unchanged set is not rewritten; a head owned by another
//! resource is refused. Kept in Secrets (`--store-in=secrets`), the same; and a change of kind
//! moves the set without losing it, never prefers a stale copy and ignores a foreign one.

use crate::common::*;
use dirsync::controller::objects::{Owner, StoreKind};
use dirsync::controller::store::ManagedSetObjects;
use dirsync::sync::{ManagedEntry, ManagedSet, ManagedStore};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};

fn set(n: usize) -> ManagedSet {
    (0..n)
        .map(|i| {
            (
                format!(
                    "{:016x}{:08x}==",
                    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    i
                ),
                ManagedEntry {
                    destination_id: format!(
                        "{:032x}",
                        (i as u128).wrapping_mul(0x2545_F491_4F6C_DD1D_9E37_79B9)
                    ),
                    source_id: format!("{:08x}-1111-2222-3333-{:012x}", i, i * 7),
                    user_name: format!("user.{i}.{}@example.com", i * 31 % 9973),
                },
            )
        })
        .collect()
}

async fn parts(ns: &dirsync_testenv::TestNamespace) -> Vec<String> {
    let mut names: Vec<String> = ns
        .api::<ConfigMap>()
        .list(&ListParams::default().labels("dirsync.io/role=managed-part"))
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    names.sort();
    names
}

/// A DryRun resource (its SCIM endpoint is never reached here) and its owner facts, for
/// driving the store directly.
async fn owner_in(
    ns: &dirsync_testenv::TestNamespace,
    emu: &entra_emulator::RunningEmulator,
) -> Owner {
    let obj = create(
        ns,
        "example-com",
        spec("example.com", "DryRun", emu, "http://127.0.0.1:9/v2"),
    )
    .await;
    Owner::of(&obj).expect("owner")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_managed_set_is_split_read_back_and_shrinks_cleanly() {
    let cp = control_plane().await;
    let ns = cp.namespace("op-store").await;
    let emu = emulator(&tenant(&["example.com"], vec![])).await;
    let owner = owner_in(&ns, &emu).await;
    let store = ManagedSetObjects::new(ns.client(), owner.clone(), StoreKind::ConfigMap);
    assert_eq!(store.load().await.expect("empty load"), ManagedSet::new());

    let big = set(100_000);
    store.save(&big).await.expect("save 100k");
    let p = parts(&ns).await;
    assert!(p.len() >= 2, "a 100k set spans several ConfigMaps: {p:?}");
    let fresh = ManagedSetObjects::new(ns.client(), owner.clone(), StoreKind::ConfigMap);
    assert_eq!(
        fresh.load().await.expect("load 100k"),
        big,
        "read back equal"
    );
    let head = configmap(&ns, "example-com-managed").await.expect("head");
    assert_eq!(
        annotation(&head.metadata, "dirsync.io/count"),
        Some("100000")
    );
    println!("100k managed set: head + {} parts", p.len());

    // Saving the same set again writes nothing.
    let rv = head.metadata.resource_version.clone();
    fresh.save(&big).await.expect("save again");
    assert_eq!(
        configmap(&ns, "example-com-managed")
            .await
            .and_then(|c| c.metadata.resource_version),
        rv
    );

    // A small set replaces it; the old parts go.
    let small = set(10);
    fresh.save(&small).await.expect("save 10");
    assert!(parts(&ns).await.is_empty(), "old parts removed");
    assert_eq!(
        ManagedSetObjects::new(ns.client(), owner.clone(), StoreKind::ConfigMap)
            .load()
            .await
            .expect("load 10"),
        small
    );

    // Another resource (another uid) cannot use this set.
    let other = create(
        &ns,
        "other",
        spec("other.example.com", "DryRun", &emu, "http://127.0.0.1:9/v2"),
    )
    .await;
    let mut foreign = Owner::of(&other).expect("owner");
    foreign.name = "example-com".into();
    let err = ManagedSetObjects::new(ns.client(), foreign, StoreKind::ConfigMap)
        .load()
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("not owned by this DirectorySync"),
        "{err}"
    );
}

/// Names of the objects with `role`, ConfigMaps and Secrets apart, each sorted.
async fn by_kind(ns: &dirsync_testenv::TestNamespace, role: &str) -> (Vec<String>, Vec<String>) {
    let lp = ListParams::default().labels(&format!("dirsync.io/role={role}"));
    let mut cms: Vec<String> = ns
        .api::<ConfigMap>()
        .list(&lp)
        .await
        .expect("list ConfigMaps")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    let mut secrets: Vec<String> = ns
        .api::<Secret>()
        .list(&lp)
        .await
        .expect("list Secrets")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    cms.sort();
    secrets.sort();
    (cms, secrets)
}

/// Compares two sets without printing tens of thousands of entries on a mismatch.
fn same_set(got: &ManagedSet, want: &ManagedSet, what: &str) {
    assert!(
        got == want,
        "{what}: {} entries read, {} expected",
        got.len(),
        want.len()
    );
}

fn save_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<String> {
    annotation(meta, "dirsync.io/save").map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_kinds_moves_the_managed_set_and_never_prefers_a_stale_copy() {
    let cp = control_plane().await;
    let ns = cp.namespace("op-store-kinds").await;
    let emu = emulator(&tenant(&["example.com"], vec![])).await;
    let owner = owner_in(&ns, &emu).await;
    let in_cms = || ManagedSetObjects::new(ns.client(), owner.clone(), StoreKind::ConfigMap);
    let in_secrets = || ManagedSetObjects::new(ns.client(), owner.clone(), StoreKind::Secret);

    // Saved in ConfigMaps, big enough for parts.
    let big = set(40_000);
    in_cms().save(&big).await.expect("save in ConfigMaps");
    let (cm_parts, secret_parts) = by_kind(&ns, "managed-part").await;
    assert!(!cm_parts.is_empty(), "40k entries need parts");
    assert!(secret_parts.is_empty());

    // An operator with --store-in=secrets finds it and moves it: head and parts.
    same_set(
        &in_secrets().load().await.expect("load from the other kind"),
        &big,
        "load from the other kind",
    );
    let (cm_heads, secret_heads) = by_kind(&ns, "managed").await;
    assert_eq!(
        cm_heads,
        Vec::<String>::new(),
        "the ConfigMap copy is removed"
    );
    assert_eq!(secret_heads, vec!["example-com-managed".to_string()]);
    let (cm_parts2, secret_parts2) = by_kind(&ns, "managed-part").await;
    assert!(cm_parts2.is_empty(), "old parts removed: {cm_parts2:?}");
    assert_eq!(secret_parts2.len(), cm_parts.len());
    let head: Secret = ns.api().get("example-com-managed").await.expect("head");
    assert_eq!(head.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        save_of(&head.metadata).as_deref(),
        Some("2"),
        "save numbers go on"
    );
    assert!(owner.controls(&head.metadata));
    // Read back from Secrets alone by a fresh store, and an unchanged save writes nothing.
    let sec = in_secrets();
    same_set(
        &sec.load().await.expect("load from Secrets"),
        &big,
        "load from Secrets",
    );
    sec.save(&big).await.expect("unchanged save");
    let again: Secret = ns.api().get("example-com-managed").await.expect("head");
    assert_eq!(
        again.metadata.resource_version,
        head.metadata.resource_version
    );

    // A same-named ConfigMap this resource does not own is neither read nor removed.
    let foreign = ConfigMap {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("example-com-managed".into()),
            labels: Some([("dirsync.io/role".to_string(), "managed".to_string())].into()),
            annotations: Some([("dirsync.io/save".to_string(), "99".to_string())].into()),
            ..Default::default()
        },
        data: Some([("note".to_string(), "someone else's".to_string())].into()),
        ..Default::default()
    };
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &foreign)
        .await
        .expect("foreign ConfigMap");
    let small = set(10);
    let sec = in_secrets();
    same_set(
        &sec.load().await.expect("load ignores the foreign copy"),
        &big,
        "load ignores the foreign copy",
    );
    sec.save(&small).await.expect("save");
    assert!(
        configmap(&ns, "example-com-managed").await.is_some(),
        "a foreign object is never deleted"
    );
    ns.api::<ConfigMap>()
        .delete("example-com-managed", &Default::default())
        .await
        .expect("delete the foreign ConfigMap");
    let stale: Secret = ns.api().get("example-com-managed").await.expect("head");

    // Back to ConfigMaps, then a newer save there.
    let cms = in_cms();
    same_set(&cms.load().await.expect("load back"), &small, "load back");
    assert_eq!(by_kind(&ns, "managed").await.1, Vec::<String>::new());
    let newer = set(20);
    cms.save(&newer).await.expect("newer save");
    // A copy of the other kind that could not be removed (say, no RBAC to delete Secrets)
    // is older than the configured one: a load must never take it.
    let mut copy = stale.clone();
    copy.metadata.resource_version = None;
    copy.metadata.uid = None;
    copy.metadata.creation_timestamp = None;
    copy.metadata.managed_fields = None;
    ns.api::<Secret>()
        .create(&PostParams::default(), &copy)
        .await
        .expect("stale Secret put back");
    same_set(
        &in_cms().load().await.expect("configured kind is newer"),
        &newer,
        "configured kind is newer",
    );
    // ...and an operator switched to Secrets again takes the newer ConfigMap, not its own
    // kind's stale copy, and replaces the stale copy.
    same_set(
        &in_secrets().load().await.expect("other kind is newer"),
        &newer,
        "other kind is newer",
    );
    let (cm_heads, secret_heads) = by_kind(&ns, "managed").await;
    assert!(cm_heads.is_empty());
    assert_eq!(secret_heads, vec!["example-com-managed".to_string()]);
    same_set(&in_secrets().load().await.expect("load"), &newer, "load");
    let moved: Secret = ns.api().get("example-com-managed").await.expect("head");
    let n = |m: &Secret| {
        save_of(&m.metadata)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(n(&moved) > n(&stale), "{} > {}", n(&moved), n(&stale));

    // A Secret-kind head owned by another resource is refused like a ConfigMap one.
    let patch = serde_json::json!({"metadata": {"ownerReferences": null}});
    ns.api::<Secret>()
        .patch(
            "example-com-managed",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("orphan the head");
    let err = in_secrets().load().await.expect_err("refused");
    assert!(
        err.to_string()
            .contains("Secret \"example-com-managed\" is not owned"),
        "{err}"
    );
}
