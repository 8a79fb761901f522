//! Who is whose: renames onto taken names, our externalId outside the managed set, adoption,
//! protected user names, another resource's externalId, and duplicates in the source.

use super::*;

#[test]
fn a_rename_onto_a_taken_user_name_is_a_conflict() {
    let a = entra_user(1, "alice@example.com");
    let d = scim_twin("d1", &a);
    let mut renamed = a.clone();
    renamed.user_name = "admin@example.com".into();
    let p = plan_simple(
        &cfg(),
        vec![renamed],
        vec![d, hand_made("h1", "ADMIN@example.com")],
        &managed_of(&[(1, "d1", "alice@example.com")]),
    );
    // The hand-made user is a stray of this domain, and stays one.
    assert_eq!(
        actions(&p),
        vec![
            (Action::Conflict, "admin@example.com".into()),
            (Action::Unmanaged, "ADMIN@example.com".into())
        ]
    );
    assert!(reason(&p.items[0]).contains("cannot rename alice@example.com to admin@example.com"));
    // The managed user is neither deleted nor listed as stray.
    assert_eq!(p.deletions(), 0);
    assert_eq!(p.baseline.len(), 1);
}

#[test]
fn a_user_carrying_our_immutable_id_outside_the_managed_set_is_retaken() {
    // E.g. a crash between create and record: the next run heals by the externalId match.
    let a = entra_user(1, "alice@example.com");
    let d = scim_twin("d1", &a);
    let p = plan_simple(&cfg(), vec![a.clone()], vec![d.clone()], &ManagedSet::new());
    assert!(p.items.is_empty());
    assert_eq!(p.unchanged, 1);
    assert_eq!(
        p.baseline
            .get(&immutable_id_of(1))
            .map(|e| e.destination_id.as_str()),
        Some("d1")
    );

    // With a change, it is an Update of kind Retake (recorded when the write succeeds).
    let mut changed = a;
    changed.display_name = Some("New".into());
    let p = plan_simple(&cfg(), vec![changed], vec![d], &ManagedSet::new());
    let PlanItem::Update(u) = only(&p) else {
        panic!("{p:#?}")
    };
    assert_eq!(u.kind, UpdateKind::Retake);
    assert!(p.baseline.is_empty());
}

#[test]
fn a_pre_existing_user_is_adopted_only_with_adopt_existing() {
    let a = entra_user(1, "alice@example.com");
    let existing = hand_made("h1", "ALICE@example.com");

    let p = plan_simple(
        &cfg(),
        vec![a.clone()],
        vec![existing.clone()],
        &ManagedSet::new(),
    );
    assert_eq!(only(&p).action(), Action::Conflict);
    assert!(reason(only(&p)).contains("set adoptExisting: true"));
    assert_eq!(
        p.count(Action::Unmanaged),
        0,
        "the conflict's destination user is not listed twice"
    );

    let mut c = cfg();
    c.adopt_existing = true;
    let p = plan_simple(&c, vec![a], vec![existing], &ManagedSet::new());
    let PlanItem::Update(u) = only(&p) else {
        panic!("{p:#?}")
    };
    assert_eq!(u.kind, UpdateKind::Adopt);
    assert_eq!(
        u.expected_immutable_id, None,
        "adoption is sent only while the target has no externalId"
    );
    assert_eq!(u.current.id, "h1");
    assert_eq!(
        u.changes.last(),
        Some(&Change {
            field: Field::ExternalId,
            old: None,
            new: Some(immutable_id_of(1))
        })
    );
    assert!(
        only(&p)
            .changes_text()
            .ends_with(&format!("externalId: (none) -> {}", immutable_id_of(1)))
    );
}

#[test]
fn protected_user_names_are_never_adopted_updated_or_deleted() {
    let mut c = cfg();
    c.adopt_existing = true;
    c.protected_user_names = vec!["Admin@Example.com".into()];

    // A source user with a protected name is a Conflict, even with adoptExisting.
    let admin_src = entra_user(1, "admin@example.com");
    let p = plan_simple(
        &c,
        vec![admin_src.clone()],
        vec![hand_made("h1", "admin@example.com")],
        &ManagedSet::new(),
    );
    assert_eq!(only(&p).action(), Action::Conflict);
    assert!(reason(only(&p)).contains("protectedUserNames"));

    // ...also when no destination user exists yet.
    let p = plan_simple(&c, vec![admin_src.clone()], vec![], &ManagedSet::new());
    assert_eq!(only(&p).action(), Action::Conflict);

    // A destination user with a protected name carrying our externalId is not updated.
    let mut twin = scim_twin("d1", &admin_src);
    twin.display_name = Some("changed".into());
    let mut renamed = admin_src.clone();
    renamed.user_name = "root@example.com".into();
    let p = plan_simple(
        &c,
        vec![renamed],
        vec![twin.clone()],
        &managed_of(&[(1, "d1", "admin@example.com")]),
    );
    assert_eq!(only(&p).action(), Action::Conflict);

    // A managed user whose name became protected is not deleted when it leaves the source.
    let p = plan_simple(
        &c,
        vec![],
        vec![twin],
        &managed_of(&[(1, "d1", "admin@example.com")]),
    );
    assert_eq!(only(&p).action(), Action::Conflict);
    assert_eq!(p.deletions(), 0);
}

#[test]
fn user_name_owned_by_someone_elses_external_id_is_a_conflict() {
    // UPN Mode Disabled, two domains sharing a destination, both with alice@.
    let mut c = SyncConfig::new("b.com", UpnMode::Disabled, 65);
    c.adopt_existing = true;
    let other_alice = User {
        id: "d1".into(),
        user_name: "alice".into(),
        immutable_id: Some(immutable_id_of(1)),
        active: true,
        ..User::default()
    };
    let ours = entra_user(2, "alice@b.com");
    let others = Others {
        elsewhere: [immutable_id_of(1)].into_iter().collect(),
        handed: HashSet::new(),
    };
    let p = plan_with(
        &c,
        vec![ours.clone()],
        vec![other_alice.clone()],
        &ManagedSet::new(),
        &others,
    );
    assert_eq!(actions(&p), vec![(Action::Conflict, "alice".into())]);
    assert!(
        reason(&p.items[0]).contains("another DirectorySync manages"),
        "{}",
        reason(&p.items[0])
    );

    let p = plan_simple(&c, vec![ours], vec![other_alice], &ManagedSet::new());
    assert!(reason(only(&p)).contains("taken by another destination user"));
}

#[test]
fn duplicates_in_the_source_are_conflicts() {
    let a = entra_user(1, "alice@a.example.com");
    let mut b = entra_user(2, "ALICE@example.com");
    let mut b2 = entra_user(3, "alice@example.com");
    b.immutable_id = Some("same".into());
    b2.immutable_id = Some("same".into());
    let p = plan_simple(&cfg(), vec![a, b, b2], vec![], &ManagedSet::new());
    assert_eq!(p.count(Action::Conflict), 2);
    assert_eq!(p.count(Action::Add), 0);
}
