//! The engine against the in-memory directory: runs that succeed, delete, deactivate, trip the
//! guard or find no source users, and a crash between create and record.

use super::*;

#[tokio::test]
async fn engine_first_sync_then_a_second_run_makes_no_writes() {
    let source = tenant(&[
        (1, "alice@example.com"),
        (2, "bob@example.com"),
        (3, "carol@other.org"),
    ]);
    let dest = FakeDirectory::with_users([hand_made("admin", "admin@example.com")]);
    let (planned, out) =
        plan_and_apply(&source, &dest, &cfg(), &ManagedSet::new(), &others_none()).await;
    assert_eq!(planned.plan.count(Action::Add), 2);
    assert_eq!(planned.plan.count(Action::Unmanaged), 1);
    assert_eq!(out.result, RunResult::Success);
    assert_eq!(out.created, 2);
    let managed = out.managed.expect("managed set to save");
    assert_eq!(managed.len(), 2);
    let alice = dest.user_named("alice@example.com").expect("created");
    assert_eq!(
        alice.immutable_id,
        Some(immutable_id_of(1)),
        "created with externalId"
    );
    assert_eq!(
        managed
            .get(&immutable_id_of(1))
            .map(|e| e.destination_id.clone()),
        Some(alice.id)
    );
    assert_eq!(
        dest.user_named("admin@example.com").map(|u| u.immutable_id),
        Some(None),
        "hand-made untouched"
    );

    let writes_before = dest.calls().writes();
    let (planned, out) = plan_and_apply(&source, &dest, &cfg(), &managed, &others_none()).await;
    assert_eq!(planned.plan.writes(), 0);
    assert_eq!(planned.plan.unchanged, 2);
    assert_eq!(
        dest.calls().writes(),
        writes_before,
        "no writes on an unchanged run"
    );
    assert_eq!(out.result, RunResult::Success);
    assert_eq!(out.managed.as_ref(), Some(&managed));
}

#[tokio::test]
async fn engine_deletes_a_user_removed_from_entra() {
    let source = tenant(&[(1, "alice@example.com"), (2, "bob@example.com")]);
    let dest = FakeDirectory::new();
    let mut c = cfg();
    c.max_allowed_deletions = 100;
    let (_, out) = plan_and_apply(&source, &dest, &c, &ManagedSet::new(), &others_none()).await;
    let managed = out.managed.expect("managed");
    source.remove(&guid(2));
    let (planned, out) = plan_and_apply(&source, &dest, &c, &managed, &others_none()).await;
    assert_eq!(
        actions(&planned.plan),
        vec![(Action::Delete, "bob@example.com".into())]
    );
    assert_eq!(out.deleted, 1);
    assert!(dest.user_named("bob@example.com").is_none());
    assert!(!out.managed.expect("managed").contains(&immutable_id_of(2)));
}

#[tokio::test]
async fn engine_guard_trip_writes_nothing_and_keeps_the_stored_set() {
    let source = tenant(&[(1, "alice@example.com"), (2, "bob@example.com")]);
    let dest = FakeDirectory::new();
    let (_, out) = plan_and_apply(&source, &dest, &cfg(), &ManagedSet::new(), &others_none()).await;
    let managed = out.managed.expect("managed");
    source.remove(&guid(1));
    source.remove(&guid(2));
    source.insert(entra_user(3, "carol@example.com"));
    let writes_before = dest.calls().writes();
    let (planned, out) = plan_and_apply(&source, &dest, &cfg(), &managed, &others_none()).await;
    assert!(planned.guard.tripped);
    assert!(planned.guard.message().is_some());
    assert_eq!(out.result, RunResult::GuardTripped);
    assert_eq!(out.managed, None);
    assert_eq!(
        dest.calls().writes(),
        writes_before,
        "cancelled before any write, the Add included"
    );
    // The dry run's summary says applying would cancel.
    let summary = planned.summary(true);
    assert!(summary.guard.tripped && summary.guard_message.is_some());
}

#[tokio::test]
async fn engine_empty_source_read_with_managed_users_trips_after_one_look_up() {
    let users: Vec<(u128, String)> = (1..=50).map(|i| (i, format!("u{i}@example.com"))).collect();
    let source = FakeDirectory::with_users(users.iter().map(|(n, u)| entra_user(*n, u)));
    let dest = FakeDirectory::new();
    let mut c = cfg();
    c.max_allowed_deletions = 100;
    let (_, out) = plan_and_apply(&source, &dest, &c, &ManagedSet::new(), &others_none()).await;
    let managed = out.managed.expect("managed");
    assert_eq!(managed.len(), 50);

    // A broken read: the listing comes back empty, but the users are all still in the domain.
    source.list_returns(Vec::new());
    let others = OtherResources {
        managed_elsewhere: HashSet::new(),
        synced_domains: vec!["b.com".into()],
    };
    let gets_before = source.calls().gets;
    let planned = plan_run(&source, &dest, &c, &managed, &others)
        .await
        .expect("plans");
    assert!(planned.guard.tripped, "100 still cancels deleting everyone");
    assert_eq!(planned.guard.deletes, 50);
    assert!(!planned.no_source_users);
    assert!(
        source.calls().gets - gets_before <= crate::sync::engine::HANDOVER_LOOKUP_CONCURRENCY,
        "stopped early"
    );
    let out = apply_run(&planned, &dest, &ApplyOptions::default(), &mut NoProgress).await;
    assert_eq!(out.result, RunResult::GuardTripped);
    assert_eq!(dest.users().len(), 50);
}

#[tokio::test]
async fn engine_no_source_users_when_the_domain_is_empty_and_nothing_is_managed() {
    let source = tenant(&[(1, "alice@other.org")]);
    let dest = FakeDirectory::new();
    let (planned, out) =
        plan_and_apply(&source, &dest, &cfg(), &ManagedSet::new(), &others_none()).await;
    assert!(planned.no_source_users);
    assert_eq!(out.result, RunResult::NoSourceUsers);
    assert!(planned.summary(false).no_source_users);
}

#[tokio::test]
async fn engine_crash_between_create_and_record_heals_on_the_next_run() {
    let source = tenant(&[(1, "alice@example.com")]);
    let dest = FakeDirectory::new();
    let (_, _lost) =
        plan_and_apply(&source, &dest, &cfg(), &ManagedSet::new(), &others_none()).await;
    // The managed set was never saved: the next run starts from an empty one.
    let (planned, out) =
        plan_and_apply(&source, &dest, &cfg(), &ManagedSet::new(), &others_none()).await;
    assert_eq!(planned.plan.writes(), 0);
    assert_eq!(dest.calls().creates, 1, "not created twice");
    assert!(out.managed.expect("managed").contains(&immutable_id_of(1)));
}

#[tokio::test]
async fn engine_deactivate_policy_keeps_the_user_inactive_and_managed() {
    let source = tenant(&[(1, "alice@example.com"), (2, "bob@example.com")]);
    let dest = FakeDirectory::new();
    let mut c = cfg();
    c.deletion_policy = DeletionPolicy::Deactivate;
    let (_, out) = plan_and_apply(&source, &dest, &c, &ManagedSet::new(), &others_none()).await;
    let managed = out.managed.expect("managed");
    source.remove(&guid(2));
    let (planned, out) = plan_and_apply(&source, &dest, &c, &managed, &others_none()).await;
    assert_eq!(planned.guard.deletes, 1);
    assert_eq!(out.updated, 1);
    assert_eq!(
        dest.user_named("bob@example.com").map(|u| u.active),
        Some(false)
    );
    let managed = out.managed.expect("managed");
    assert!(managed.contains(&immutable_id_of(2)));
    // Already inactive: nothing more to do.
    let (planned, _) = plan_and_apply(&source, &dest, &c, &managed, &others_none()).await;
    assert_eq!(planned.plan.writes(), 0);
}
