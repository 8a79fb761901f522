//! Users gone from the source or the destination: deletion, forgetting, re-adding, strays left
//! alone, the Deactivate policy and users disabled in Entra.

use super::*;

#[test]
fn a_managed_user_gone_from_the_source_is_deleted_showing_destination_values() {
    let a = entra_user(1, "alice@example.com");
    let mut d = scim_twin("d1", &a);
    d.display_name = Some("As stored".into());
    let p = plan_simple(
        &cfg(),
        vec![],
        vec![d],
        &managed_of(&[(1, "d1", "alice@example.com")]),
    );
    let PlanItem::Delete {
        current,
        immutable_id,
    } = only(&p)
    else {
        panic!("{p:#?}")
    };
    assert_eq!(current.id, "d1");
    assert_eq!(immutable_id, &immutable_id_of(1));
    assert_eq!(only(&p).view().display_name, Some("As stored"));
    assert_eq!(only(&p).changes_text(), "");
    assert_eq!(p.deletions(), 1);
    assert_eq!(p.managed_present, 1);
}

#[test]
fn a_managed_user_gone_from_both_sides_is_just_forgotten() {
    let p = plan_simple(
        &cfg(),
        vec![],
        vec![],
        &managed_of(&[(1, "d1", "alice@example.com")]),
    );
    assert!(p.items.is_empty());
    assert_eq!(p.managed_gone, 1);
    assert_eq!(p.managed_present, 0);
    assert!(p.baseline.is_empty());
}

#[test]
fn a_managed_user_deleted_by_hand_in_the_destination_is_re_added() {
    let a = entra_user(1, "alice@example.com");
    let p = plan_simple(
        &cfg(),
        vec![a],
        vec![],
        &managed_of(&[(1, "d1", "alice@example.com")]),
    );
    assert_eq!(only(&p).action(), Action::Add);
    assert!(
        p.baseline.is_empty(),
        "the stale entry is replaced when the create succeeds"
    );
}

#[test]
fn stray_users_in_the_domain_scope_are_unmanaged_and_never_applied() {
    let mut c = SyncConfig::new(DOMAIN, UpnMode::Disabled, 65);
    c.upn_attribute = Some("urn:x:upn".into());
    let mut by_upn = hand_made("h2", "carol");
    by_upn.upn = Some("carol@EXAMPLE.com".into());
    let elsewhere = User {
        id: "h4".into(),
        user_name: "dave@example.com".into(),
        immutable_id: Some("theirs".into()),
        ..User::default()
    };
    let dest = vec![
        hand_made("h1", "admin@example.com"),
        by_upn,
        hand_made("h3", "someone@other.org"),
        elsewhere,
        hand_made("h5", "eve"),
    ];
    let others = Others {
        elsewhere: ["theirs".to_string()].into_iter().collect(),
        handed: HashSet::new(),
    };
    let p = plan_with(&c, vec![], dest, &ManagedSet::new(), &others);
    assert_eq!(
        actions(&p),
        vec![
            (Action::Unmanaged, "admin@example.com".into()),
            (Action::Unmanaged, "carol".into())
        ]
    );
    assert!(p.items.iter().all(|i| !i.is_write() && !i.is_deletion()));
    assert_eq!(p.writes(), 0);
}

#[test]
fn deactivate_policy_turns_removal_into_active_false() {
    let mut c = cfg();
    c.deletion_policy = DeletionPolicy::Deactivate;
    let a = entra_user(1, "alice@example.com");
    let b = entra_user(2, "bob@example.com");
    let mut b_twin = scim_twin("d2", &b);
    b_twin.active = false;
    let managed = managed_of(&[(1, "d1", "alice@example.com"), (2, "d2", "bob@example.com")]);
    let p = plan_simple(&c, vec![], vec![scim_twin("d1", &a), b_twin], &managed);
    let PlanItem::Update(u) = only(&p) else {
        panic!("{p:#?}")
    };
    assert_eq!(u.kind, UpdateKind::Deactivate);
    assert!(!u.desired.active);
    assert_eq!(u.desired.user_name, "alice@example.com");
    assert_eq!(u.source_id, guid(1));
    assert_eq!(
        u.expected_immutable_id.as_deref(),
        Some(immutable_id_of(1).as_str())
    );
    assert_eq!(only(&p).changes_text(), "active: true -> false");
    assert!(only(&p).is_deletion());
    assert_eq!(p.unchanged, 1, "bob is already inactive: nothing to do");
    assert_eq!(p.baseline, managed, "deactivated users stay managed");

    // Coming back re-activates.
    let mut back = scim_twin("d1", &a);
    back.active = false;
    let p = plan_simple(&c, vec![a], vec![back], &managed);
    assert_eq!(only(&p).changes_text(), "active: false -> true");
}

#[test]
fn a_source_user_disabled_in_entra_is_a_deactivation_for_the_guard() {
    let mut a = entra_user(1, "alice@example.com");
    let d = scim_twin("d1", &a);
    a.active = false;
    let p = plan_simple(
        &cfg(),
        vec![a],
        vec![d],
        &managed_of(&[(1, "d1", "alice@example.com")]),
    );
    assert!(only(&p).is_deletion());
    assert_eq!(p.deletions(), 1);
}
