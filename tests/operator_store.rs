//! The managed set kept in the cluster, against the real API server: a 100,000-user set is
//! compressed and split over several ConfigMaps and read back equal; a smaller save removes
//! the parts it no longer needs; an unchanged set is not rewritten; a head owned by another
//! resource is refused.

mod operator_common;

use dirsync::controller::objects::{ObjectKind, Owner};
use dirsync::controller::store::ClusterStore;
use dirsync::sync::{ManagedEntry, ManagedSet, ManagedStore};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use operator_common::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_managed_set_is_split_read_back_and_shrinks_cleanly() {
    let cp = control_plane().await;
    let ns = cp.namespace("op-store").await;
    let emu = emulator(&tenant(&["example.com"], vec![])).await;
    let obj = create(
        &ns,
        "example-com",
        spec("example.com", "DryRun", &emu, "http://127.0.0.1:9/v2"),
    )
    .await;
    let owner = Owner::of(&obj).expect("owner");
    let store = ClusterStore::new(ns.client(), owner.clone(), ObjectKind::ConfigMap);
    assert_eq!(store.load().await.expect("empty load"), ManagedSet::new());

    let big = set(100_000);
    store.save(&big).await.expect("save 100k");
    let p = parts(&ns).await;
    assert!(p.len() >= 2, "a 100k set spans several ConfigMaps: {p:?}");
    let fresh = ClusterStore::new(ns.client(), owner.clone(), ObjectKind::ConfigMap);
    assert_eq!(
        fresh.load().await.expect("load 100k"),
        big,
        "read back equal"
    );
    let head = configmap(&ns, "example-com-managed").await.expect("head");
    assert_eq!(
        head.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("dirsync.io/count"))
            .map(String::as_str),
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
        ClusterStore::new(ns.client(), owner.clone(), ObjectKind::ConfigMap)
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
    let err = ClusterStore::new(ns.client(), foreign, ObjectKind::ConfigMap)
        .load()
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("not owned by this DirectorySync"),
        "{err}"
    );
}
