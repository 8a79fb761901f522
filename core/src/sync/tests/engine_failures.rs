//! The engine when reads or writes fail: read errors abort before any write, write failures
//! are reported one by one, a 409 on create is re-planned, refused credentials stop the run.

use super::*;

#[tokio::test]
async fn engine_read_failures_abort_before_any_write() {
    let source = tenant(&[(1, "alice@example.com")]);
    let dest = FakeDirectory::new();
    source.fail_list(DirectoryError::Protocol(
        "nextLink points at another host".into(),
    ));
    let err = plan_run(&source, &dest, &cfg(), &ManagedSet::new(), &others_none())
        .await
        .expect_err("fails");
    assert!(matches!(err, RunError::Source(DirectoryError::Protocol(_))));

    let source = tenant(&[(1, "alice@example.com")]);
    dest.fail_list(DirectoryError::Unavailable("503".into()));
    let err = plan_run(&source, &dest, &cfg(), &ManagedSet::new(), &others_none())
        .await
        .expect_err("fails");
    assert!(matches!(err, RunError::Destination(_)));
    assert_eq!(dest.calls().writes(), 0);

    // A record the plan cannot key is a read error, not a panic or a default.
    let bad = FakeDirectory::with_users([User {
        id: "not-a-guid".into(),
        ..entra_user(9, "x@example.com")
    }]);
    let err = plan_run(
        &bad,
        &FakeDirectory::new(),
        &cfg(),
        &ManagedSet::new(),
        &others_none(),
    )
    .await
    .expect_err("fails");
    assert!(
        matches!(err, RunError::Source(DirectoryError::Protocol(m)) if m.contains("not-a-guid"))
    );

    let mut bad_cfg = cfg();
    bad_cfg.max_allowed_deletions = 101;
    assert!(matches!(
        plan_run(
            &source,
            &FakeDirectory::new(),
            &bad_cfg,
            &ManagedSet::new(),
            &others_none()
        )
        .await,
        Err(RunError::Config(_))
    ));
}

#[tokio::test]
async fn engine_partial_failure_does_not_stop_the_others() {
    let source = tenant(&[
        (1, "alice@example.com"),
        (2, "bob@example.com"),
        (3, "carol@example.com"),
    ]);
    let dest = FakeDirectory::new();
    dest.fail_writes_for(
        "bob@example.com",
        DirectoryError::Rejected("400 invalidValue".into()),
    );
    let (_, out) = plan_and_apply(&source, &dest, &cfg(), &ManagedSet::new(), &others_none()).await;
    assert_eq!(out.result, RunResult::PartiallyFailed);
    assert_eq!(out.created, 2);
    assert_eq!(out.failures.len(), 1);
    assert_eq!(out.failures[0].user_name, "bob@example.com");
    assert_eq!(out.failures[0].action, Action::Add);
    assert!(out.failures[0].reason.contains("400 invalidValue"));
    let managed = out.managed.expect("managed");
    assert_eq!(managed.len(), 2);
    assert!(!managed.contains(&immutable_id_of(2)));
}

#[tokio::test]
async fn engine_precondition_failed_is_a_reported_failure_not_retried() {
    let source = tenant(&[(1, "alice@example.com")]);
    let dest = FakeDirectory::new();
    let (_, out) = plan_and_apply(&source, &dest, &cfg(), &ManagedSet::new(), &others_none()).await;
    let managed = out.managed.expect("managed");
    let mut changed = entra_user(1, "alice@example.com");
    changed.display_name = Some("New".into());
    source.insert(changed);
    let planned = plan_run(&source, &dest, &cfg(), &managed, &others_none())
        .await
        .expect("plans");
    // Someone re-keys the user between plan and apply.
    let mut hijacked = dest.user_named("alice@example.com").expect("exists");
    hijacked.immutable_id = Some("someone-else".into());
    dest.insert(hijacked);
    let updates_before = dest.calls().updates;
    let out = apply_run(&planned, &dest, &ApplyOptions::default(), &mut NoProgress).await;
    assert_eq!(out.result, RunResult::PartiallyFailed);
    assert_eq!(
        dest.calls().updates,
        updates_before + 1,
        "sent once, not retried"
    );
    assert!(
        out.failures[0].reason.contains("precondition failed"),
        "{}",
        out.failures[0].reason
    );
    assert_eq!(
        dest.user_named("alice@example.com")
            .and_then(|u| u.display_name),
        Some("alice display".into())
    );
}

#[tokio::test]
async fn engine_409_on_create_is_re_planned() {
    // Without adoptExisting: someone created the same userName meanwhile → a conflict, not a failure.
    let source = tenant(&[(1, "alice@example.com")]);
    let dest = FakeDirectory::new();
    dest.race_on_create("alice@example.com", hand_made("h1", "alice@example.com"));
    let (_, out) = plan_and_apply(&source, &dest, &cfg(), &ManagedSet::new(), &others_none()).await;
    assert_eq!(out.result, RunResult::Success);
    assert!(out.failures.is_empty());
    assert_eq!(out.replanned.len(), 1);
    assert_eq!(out.replanned[0].action, Action::Conflict);
    assert!(out.managed.expect("managed").is_empty());
    assert_eq!(
        dest.user_named("alice@example.com")
            .and_then(|u| u.immutable_id),
        None,
        "not touched"
    );

    // With adoptExisting: adopted and recorded.
    let dest = FakeDirectory::new();
    dest.race_on_create("alice@example.com", hand_made("h1", "alice@example.com"));
    let mut c = cfg();
    c.adopt_existing = true;
    let (_, out) = plan_and_apply(&source, &dest, &c, &ManagedSet::new(), &others_none()).await;
    assert_eq!(out.result, RunResult::Success);
    assert_eq!(out.replanned[0].action, Action::Update);
    assert_eq!(out.updated, 1);
    let managed = out.managed.expect("managed");
    assert_eq!(
        managed
            .get(&immutable_id_of(1))
            .map(|e| e.destination_id.as_str()),
        Some("h1")
    );
    assert_eq!(
        dest.user_named("alice@example.com")
            .and_then(|u| u.immutable_id),
        Some(immutable_id_of(1))
    );

    // Our own earlier create (carrying our externalId) appeared: recorded, no further write.
    let dest = FakeDirectory::new();
    dest.race_on_create(
        "alice@example.com",
        scim_twin("d9", &entra_user(1, "alice@example.com")),
    );
    let (_, out) = plan_and_apply(&source, &dest, &cfg(), &ManagedSet::new(), &others_none()).await;
    assert_eq!(out.result, RunResult::Success);
    assert_eq!(out.replanned[0].action, Action::Update);
    assert_eq!(dest.calls().updates, 0);
    assert!(out.managed.expect("managed").contains(&immutable_id_of(1)));
}

#[tokio::test]
async fn engine_refused_credentials_stop_further_writes() {
    let source = tenant(&[
        (1, "a0@example.com"),
        (2, "a1@example.com"),
        (3, "a2@example.com"),
    ]);
    let dest = FakeDirectory::new();
    dest.fail_writes_for(
        "a0@example.com",
        DirectoryError::InvalidCredentials("401".into()),
    );
    let planned = plan_run(&source, &dest, &cfg(), &ManagedSet::new(), &others_none())
        .await
        .expect("plans");
    let opts = ApplyOptions {
        concurrency: 1,
        checkpoint_every: 0,
    };
    let out = apply_run(&planned, &dest, &opts, &mut NoProgress).await;
    assert_eq!(out.result, RunResult::PartiallyFailed);
    assert!(matches!(
        out.aborted,
        Some(DirectoryError::InvalidCredentials(_))
    ));
    assert_eq!(out.not_attempted, 2);
    assert_eq!(dest.calls().creates, 1);
}
