//! Periodic mode against the real control plane: a preview at once on create (no write), then
//! applies at consecutive slots of the (shortened) interval, shifted by the per-resource
//! offset; the second slot picks up a change made in the emulator; `nextRunTime` is right.

use std::time::Duration;

use crate::common::*;
use dirsync::controller::schedule::{next_slot_after, slot_offset};
use k8s_openapi::jiff::Timestamp;

const INTERVAL: Duration = Duration::from_secs(12);

fn ts(t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Timestamp {
    t.as_ref().map(|t| t.0).expect("a time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_previews_at_once_then_applies_at_each_offset_slot() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-periodic").await;
    let fixture = tenant(
        &["example.com"],
        vec![user("alice@example.com", "Alice", "Liddell", "YWxpY2U=")],
    );
    let emu = emulator(&fixture).await;
    let scim = scim();
    secrets(&ns, &emu, CLIENT_SECRET).await;
    let op = Operator::start(cp, ns.name(), "op-a", &[]);
    let mut s = spec("example.com", "Periodic", &emu, &scim.base_url());
    s["interval"] = serde_json::json!("12s");
    let created = create(&ns, "example-com", s).await;
    let uid = created.metadata.uid.clone().expect("uid");
    let offset = slot_offset(&uid, INTERVAL);

    // A preview at once, no destination write, nextRunTime = the next offset slot.
    let d = wait_for(
        &ns,
        "example-com",
        "first preview",
        Duration::from_secs(30),
        Some(&op),
        |d| status(d).history.len() == 1,
    )
    .await;
    let st = status(&d);
    let first = st.last_run.clone().expect("lastRun");
    assert_eq!(first.result, "PreviewReady");
    assert!(!first.applied);
    assert_eq!(first.trigger.as_deref(), Some("SpecChange"));
    assert!(st.preview.is_some());
    assert!(
        scim_users(&scim.base_url()).await.is_empty(),
        "enabling Periodic writes nothing at once"
    );
    let next1 = ts(&st.next_run_time);
    assert_eq!(next1, next_slot_after(first.start_time.0, INTERVAL, offset));
    assert_eq!(
        (next1.as_second() - offset.as_secs() as i64).rem_euclid(12),
        0,
        "slots carry the per-resource offset"
    );
    assert!(
        condition(&d, "Ready").is_some_and(|c| c.2.contains("The next run applies at")),
        "{:?}",
        condition(&d, "Ready")
    );

    // The first slot applies.
    let d = wait_for(
        &ns,
        "example-com",
        "first slot",
        Duration::from_secs(40),
        Some(&op),
        |d| status(d).history.len() == 2,
    )
    .await;
    let st = status(&d);
    let run2 = st.last_run.clone().expect("lastRun");
    assert_eq!(
        (
            run2.result.as_str(),
            run2.applied,
            run2.trigger.as_deref(),
            run2.adds
        ),
        ("Synced", true, Some("Slot"), 1)
    );
    let late = run2.start_time.0.as_second() - next1.as_second();
    assert!((0..=2).contains(&late), "ran at its slot ({late} s late)");
    let next2 = ts(&st.next_run_time);
    assert_eq!(
        next2.as_second() - next1.as_second(),
        12,
        "the next slot is one interval later"
    );
    assert_eq!(scim_users(&scim.base_url()).await.len(), 1);

    // A change in Entra between two slots is picked up by the next one.
    let mut bob = serde_json::Map::new();
    for (k, v) in user("bob@example.com", "Bob", "Builder", "Ym9i")
        .as_object()
        .cloned()
        .unwrap_or_default()
    {
        bob.insert(k, v);
    }
    emu.tenant().add_user(&bob).expect("bob added");
    let d = wait_for(
        &ns,
        "example-com",
        "second slot",
        Duration::from_secs(40),
        Some(&op),
        |d| status(d).history.len() == 3,
    )
    .await;
    let st = status(&d);
    let run3 = st.last_run.clone().expect("lastRun");
    assert_eq!(
        (run3.result.as_str(), run3.trigger.as_deref(), run3.adds),
        ("Synced", Some("Slot"), 1)
    );
    let late = run3.start_time.0.as_second() - next2.as_second();
    assert!((0..=2).contains(&late), "ran at its slot ({late} s late)");
    assert_eq!(ts(&st.next_run_time).as_second() - next2.as_second(), 12);
    let names: Vec<String> = scim_users(&scim.base_url())
        .await
        .iter()
        .filter_map(|u| u["userName"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names, ["alice@example.com", "bob@example.com"]);
    assert_eq!(st.managed_users, Some(2));
}
