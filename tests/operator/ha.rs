//! Availability and ownership: two operator processes (only the Lease holder writes, and the
//! other takes over when it dies); two resources for two domains sharing one SCIM destination
//! hand over a user who moved (same SCIM id, never deleted and re-created), whichever runs
//! first; killing the operator in the middle of an apply and starting another ends in the
//! right state with no duplicate users.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_writes_and_a_follower_takes_over() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-leader").await;
    let fixture = tenant(
        &["example.com"],
        (1..=3)
            .map(|i| {
                user(
                    &format!("u{i}@example.com"),
                    "U",
                    &format!("N{i}"),
                    &format!("dTE{i}"),
                )
            })
            .collect(),
    );
    let emu = emulator(&fixture).await;
    let scim = scim();
    secrets(&ns, &emu, CLIENT_SECRET).await;
    let mut a = Operator::start(cp, ns.name(), "replica-a", &[]);
    a.wait_ready(Duration::from_secs(30)).await;
    // Give A the Lease first.
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.counter("dirsync_leader").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "A never led:\n{}",
            a.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let b = Operator::start(cp, ns.name(), "replica-b", &[]);
    b.wait_ready(Duration::from_secs(30)).await;
    create(
        &ns,
        "example-com",
        spec("example.com", "Once", &emu, &scim.base_url()),
    )
    .await;
    wait_for_reason(&ns, "example-com", "Synced", T, Some(&a)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(a.counter("dirsync_leader").await, 1.0);
    assert_eq!(b.counter("dirsync_leader").await, 0.0);
    assert!(a.counter("dirsync_kube_writes_total").await > 0.0);
    assert_eq!(
        b.counter("dirsync_kube_writes_total").await,
        0.0,
        "the follower writes nothing"
    );
    assert_eq!(
        b.counter("dirsync_reconciles_total").await,
        0.0,
        "the follower does not even reconcile"
    );
    let evs = events_when(&ns, "example-com", |e| !e.is_empty()).await;
    assert!(!evs.is_empty());
    assert!(
        evs.iter().all(|e| e.3 == "replica-a"),
        "every event comes from the leader: {evs:?}"
    );
    assert_eq!(scim_users(&scim.base_url()).await.len(), 3);

    // The leader dies; the follower takes the Lease over and serves the resource.
    a.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.counter("dirsync_leader").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "B never took over:\n{}",
            b.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    annotate(&ns, "example-com", "dirsync.io/sync-now", "after-failover").await;
    let d = wait_for(&ns, "example-com", "run by B", T, Some(&b), |d| {
        status(d).last_sync_now.as_deref() == Some("after-failover")
    })
    .await;
    assert_eq!(ready_reason(&d).as_deref(), Some("Synced"));
    let evs = events_when(&ns, "example-com", |e| e.iter().any(|e| e.3 == "replica-b")).await;
    assert!(evs.iter().any(|e| e.3 == "replica-b"), "{evs:?}");
    assert_eq!(scim_users(&scim.base_url()).await.len(), 3, "no duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_releases_the_lease() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-sigterm").await;
    let mut a = Operator::start(cp, ns.name(), "replica-a", &[]);
    a.wait_ready(Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.counter("dirsync_leader").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "A never led:\n{}",
            a.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        a.terminate(),
        Some(0),
        "exit 0 on SIGTERM; log:\n{}",
        a.log_tail(20)
    );
    assert!(
        a.log_text().contains("released the leader Lease"),
        "{}",
        a.log_tail(20)
    );
}

fn moved(emu: &entra_emulator::RunningEmulator, from: &str, to: &str) {
    let mut patch = serde_json::Map::new();
    patch.insert("userPrincipalName".into(), json!(to));
    patch.insert("mail".into(), json!(to));
    emu.tenant()
        .update_user(from, &patch)
        .expect("UPN changed in Entra");
}

async fn scim_by_name(base: &str) -> std::collections::HashMap<String, String> {
    scim_users(base)
        .await
        .iter()
        .filter_map(|u| {
            Some((
                u["userName"].as_str()?.to_string(),
                u["id"].as_str()?.to_string(),
            ))
        })
        .collect()
}

async fn sync_now(
    ns: &dirsync_testenv::TestNamespace,
    name: &str,
    value: &str,
    op: &Operator,
) -> dirsync::crd::DirectorySync {
    annotate(ns, name, "dirsync.io/sync-now", value).await;
    wait_for(ns, name, value, T, Some(op), |d| {
        status(d).last_sync_now.as_deref() == Some(value)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_moved_between_two_domains_is_handed_over_whichever_resource_runs_first() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-handover").await;
    let fixture = tenant(
        &["alpha.test", "beta.test"],
        vec![
            user("alice@alpha.test", "Alice", "A", "YWxpY2U="),
            user("bob@alpha.test", "Bob", "B", "Ym9i"),
            user("carol@beta.test", "Carol", "C", "Y2Fyb2w="),
            user("dave@beta.test", "Dave", "D", "ZGF2ZQ=="),
        ],
    );
    let emu = emulator(&fixture).await;
    let scim = scim();
    secrets(&ns, &emu, CLIENT_SECRET).await;
    let op = Operator::start(cp, ns.name(), "op-a", &[]);
    create(
        &ns,
        "alpha",
        spec("alpha.test", "Once", &emu, &scim.base_url()),
    )
    .await;
    create(
        &ns,
        "beta",
        spec("beta.test", "Once", &emu, &scim.base_url()),
    )
    .await;
    for name in ["alpha", "beta"] {
        wait_for_reason(&ns, name, "Synced", T, Some(&op)).await;
    }
    let before = scim_by_name(&scim.base_url()).await;
    assert_eq!(before.len(), 4);

    // alice: alpha → beta; the losing resource (alpha) runs first.
    moved(&emu, "alice@alpha.test", "alice@beta.test");
    let a = sync_now(&ns, "alpha", "1", &op).await;
    assert_eq!(
        status(&a).last_run.map(|r| (r.result, r.deletes)),
        Some(("Synced".into(), 0)),
        "alpha releases alice, never deletes her"
    );
    let b = sync_now(&ns, "beta", "1", &op).await;
    assert_eq!(
        status(&b).last_run.map(|r| (r.result, r.updates, r.adds)),
        Some(("Synced".into(), 1, 0))
    );
    let after = scim_by_name(&scim.base_url()).await;
    assert_eq!(
        after.get("alice@beta.test"),
        before.get("alice@alpha.test"),
        "same SCIM user: {after:?}"
    );
    assert!(!after.contains_key("alice@alpha.test"));

    // dave: beta → alpha; the gaining resource (alpha) runs first.
    moved(&emu, "dave@beta.test", "dave@alpha.test");
    let a = sync_now(&ns, "alpha", "2", &op).await;
    assert_eq!(
        status(&a).last_run.map(|r| (r.result, r.updates, r.adds)),
        Some(("Synced".into(), 1, 0))
    );
    let b = sync_now(&ns, "beta", "2", &op).await;
    assert_eq!(
        status(&b).last_run.map(|r| (r.result, r.deletes)),
        Some(("Synced".into(), 0))
    );
    let after = scim_by_name(&scim.base_url()).await;
    assert_eq!(
        after.get("dave@alpha.test"),
        before.get("dave@beta.test"),
        "same SCIM user: {after:?}"
    );
    assert_eq!(after.len(), 4, "nothing deleted or duplicated: {after:?}");
    assert_eq!(status(&get(&ns, "alpha").await).managed_users, Some(2));
    assert_eq!(status(&get(&ns, "beta").await).managed_users, Some(2));
    // Another round changes nothing.
    let a = sync_now(&ns, "alpha", "3", &op).await;
    let b = sync_now(&ns, "beta", "3", &op).await;
    for d in [a, b] {
        let r = status(&d).last_run.expect("lastRun");
        assert_eq!((r.adds, r.updates, r.deletes), (0, 0, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_operator_mid_apply_then_restarting_ends_right_without_duplicates() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-crash").await;
    let emu = emulator_generated(1500, "example.com").await;
    let scim = scim();
    secrets(&ns, &emu, CLIENT_SECRET).await;
    let flags = ["--apply-concurrency", "2", "--checkpoint-every", "50"];
    let mut a = Operator::start(cp, ns.name(), "replica-a", &flags);
    create(
        &ns,
        "example-com",
        spec("example.com", "Once", &emu, &scim.base_url()),
    )
    .await;

    // Kill it once a good share of the creates went through.
    let deadline = Instant::now() + T;
    loop {
        let n = scim_users(&scim.base_url()).await.len();
        if n >= 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the apply did not progress ({n} users):\n{}",
            a.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.kill();
    let d = get(&ns, "example-com").await;
    assert!(
        status(&d).claim.is_some(),
        "the run was claimed when it died"
    );
    // A long apply shows how far it has come (every checkpoint, here 50 writes).
    let progress = status(&d)
        .claim
        .and_then(|c| c.progress)
        .unwrap_or_default();
    let counts: Vec<usize> = progress.split(' ').filter_map(|w| w.parse().ok()).collect();
    assert!(
        progress.starts_with("applied ")
            && progress.ends_with(" changes")
            && counts.len() == 2
            && counts[0] >= 50
            && counts[0] < counts[1]
            && counts[1] > 1000,
        "{progress:?}"
    );
    let partial = scim_users(&scim.base_url()).await.len();
    let checkpointed = configmap(&ns, "example-com-managed")
        .await
        .and_then(|c| c.metadata.annotations)
        .and_then(|a| {
            a.get("dirsync.io/count")
                .and_then(|c| c.parse::<usize>().ok())
        })
        .unwrap_or(0);
    println!("killed with {partial} users created, {checkpointed} in the last checkpoint");

    // Another replica (a new identity) waits out the stale claim, then finishes the job.
    let b = Operator::start(cp, ns.name(), "replica-b", &flags);
    let d = wait_for_reason(
        &ns,
        "example-com",
        "Synced",
        Duration::from_secs(180),
        Some(&b),
    )
    .await;
    let users = scim_users(&scim.base_url()).await;
    let names: HashSet<String> = users
        .iter()
        .filter_map(|u| u["userName"].as_str().map(str::to_lowercase))
        .collect();
    let ext: HashSet<String> = users
        .iter()
        .filter_map(|u| u["externalId"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names.len(), users.len(), "no duplicate userName");
    assert_eq!(ext.len(), users.len(), "no duplicate externalId");
    assert_eq!(
        status(&d).managed_users,
        Some(users.len() as i64),
        "every created user is managed"
    );
    assert!(status(&d).claim.is_none());
    assert!(users.len() > partial);
    // And a check run finds nothing to do.
    annotate(&ns, "example-com", "dirsync.io/sync-now", "check").await;
    let d = wait_for(&ns, "example-com", "check run", T, Some(&b), |d| {
        status(d).last_sync_now.as_deref() == Some("check")
    })
    .await;
    let r = status(&d).last_run.expect("lastRun");
    assert_eq!(
        (r.result.as_str(), r.adds, r.updates, r.deletes),
        ("Synced", 0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_claim_is_exclusive_and_a_live_foreign_claim_is_respected() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-claim").await;
    let fixture = tenant(
        &["example.com"],
        vec![user("alice@example.com", "Alice", "Liddell", "YWxpY2U=")],
    );
    let emu = emulator(&fixture).await;
    let scim = scim();
    secrets(&ns, &emu, CLIENT_SECRET).await;
    let created = create(
        &ns,
        "example-com",
        spec("example.com", "Once", &emu, &scim.base_url()),
    )
    .await;
    let api = ns.api::<dirsync::crd::DirectorySync>();

    // The API server refuses a claim made against a stale resourceVersion: two replicas can
    // never both claim one run.
    let rv = created.metadata.resource_version.clone();
    let claim = |holder: &str| {
        json!({
            "metadata": {"resourceVersion": rv},
            "status": {"claim": {"holder": holder, "runId": "r1", "since": k8s_openapi::jiff::Timestamp::now().to_string()}},
        })
    };
    api.patch_status(
        "example-com",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&claim("ghost")),
    )
    .await
    .expect("the first claim wins");
    match api
        .patch_status(
            "example-com",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&claim("other")),
        )
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("a second claim on the same resourceVersion must conflict, got {other:?}"),
    }

    // An operator finds the live claim of "ghost" and waits until it is stale (--claim-ttl 6s).
    let started = Instant::now();
    let op = Operator::start(cp, ns.name(), "replica-a", &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        scim_users(&scim.base_url()).await.is_empty(),
        "nothing written while another replica holds the run"
    );
    let d = wait_for_reason(&ns, "example-com", "Synced", T, Some(&op)).await;
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "waited for the claim to go stale"
    );
    assert!(status(&d).claim.is_none());
    assert!(
        op.log_text().contains("claimed by another replica"),
        "{}",
        op.log_tail(20)
    );
    assert_eq!(scim_users(&scim.base_url()).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_apply_finishes_the_run_and_its_status_first() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-term-apply").await;
    let emu = emulator_generated(600, "example.com").await;
    let scim = scim();
    secrets(&ns, &emu, CLIENT_SECRET).await;
    let mut a = Operator::start(cp, ns.name(), "replica-a", &["--apply-concurrency", "2"]);
    create(
        &ns,
        "example-com",
        spec("example.com", "Once", &emu, &scim.base_url()),
    )
    .await;
    let deadline = Instant::now() + T;
    while scim_users(&scim.base_url()).await.len() < 50 {
        assert!(
            Instant::now() < deadline,
            "the apply did not start:\n{}",
            a.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        a.terminate(),
        Some(0),
        "exit 0 after a graceful stop:\n{}",
        a.log_tail(30)
    );
    let d = get(&ns, "example-com").await;
    assert_eq!(
        ready_reason(&d).as_deref(),
        Some("Synced"),
        "the in-flight run finished and wrote its status"
    );
    assert!(
        status(&d).claim.is_none(),
        "no half-written status: the claim is released"
    );
    assert_eq!(
        status(&d).managed_users,
        Some(scim_users(&scim.base_url()).await.len() as i64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_lease_stops_the_operator() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-leaselost").await;
    let mut a = Operator::start(cp, ns.name(), "replica-a", &[]);
    a.wait_ready(Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.counter("dirsync_leader").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "A never led:\n{}",
            a.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Someone else takes the Lease (as a replica whose clock says A's lease ran out would).
    let leases = ns.api::<k8s_openapi::api::coordination::v1::Lease>();
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let patch = json!({"spec": {"holderIdentity": "intruder", "acquireTime": now, "renewTime": now, "leaseDurationSeconds": 60}});
    leases
        .patch(
            "dirsync-leader",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("Lease taken");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = a.exited() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "A kept running without the Lease:\n{}",
            a.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        status.code(),
        Some(1),
        "exit 1 so that Kubernetes restarts it"
    );
    assert!(
        a.log_text().contains("leadership lost"),
        "{}",
        a.log_tail(20)
    );
}
