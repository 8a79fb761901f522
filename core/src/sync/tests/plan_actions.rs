//! What each planned row is when source and destination are matched: the first sync's Adds, the
//! Updates with old and new values, what is not a change, and the flags a row carries.

use super::*;

#[test]
fn first_sync_into_an_empty_destination_adds_everyone() {
    let source = vec![
        entra_user(2, "bob@example.com"),
        entra_user(1, "Alice@example.com"),
    ];
    let p = plan_simple(&cfg(), source, vec![], &ManagedSet::new());
    assert_eq!(
        actions(&p),
        vec![
            (Action::Add, "Alice@example.com".into()),
            (Action::Add, "bob@example.com".into())
        ]
    );
    assert_eq!(p.items[0].changes_text(), "note: initial password required");
    match &p.items[0] {
        PlanItem::Add {
            desired, source_id, ..
        } => {
            assert_eq!(desired.immutable_id, immutable_id_of(1));
            assert_eq!(source_id, &guid(1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.unchanged, 0);
    assert_eq!(p.managed_present, 0);
    assert!(p.baseline.is_empty());
}

#[test]
fn a_second_run_with_no_changes_plans_nothing() {
    let a = entra_user(1, "alice@example.com");
    let b = entra_user(2, "bob@example.com");
    let dest = vec![scim_twin("d1", &a), scim_twin("d2", &b)];
    let managed = managed_of(&[(1, "d1", "alice@example.com"), (2, "d2", "bob@example.com")]);
    let p = plan_simple(&cfg(), vec![a, b], dest, &managed);
    assert!(p.items.is_empty(), "{:#?}", p.items);
    assert_eq!(p.unchanged, 2);
    assert_eq!(p.managed_present, 2);
    assert_eq!(p.baseline, managed);
}

#[test]
fn each_sync_item_that_differs_is_an_update_with_old_and_new() {
    let mut c = cfg();
    c.upn_attribute = Some("urn:x:upn".into());
    let a = entra_user(1, "alice@example.com");
    let mut d = scim_twin("d1", &a);
    d.display_name = Some("Old Name".into());
    d.given_name = None;
    d.surname = Some("Old".into());
    d.email = Some("old@example.com".into());
    d.active = false;
    d.upn = Some("old@example.com".into());
    let managed = managed_of(&[(1, "d1", "alice@example.com")]);
    let p = plan_simple(&c, vec![a], vec![d], &managed);
    let PlanItem::Update(u) = only(&p) else {
        panic!("{p:#?}")
    };
    assert_eq!(u.kind, UpdateKind::Sync);
    assert_eq!(
        u.expected_immutable_id.as_deref(),
        Some(immutable_id_of(1).as_str())
    );
    assert_eq!(
        only(&p).changes_text(),
        "userPrincipalName: old@example.com -> alice@example.com; displayName: Old Name -> alice display; \
         givenName: (none) -> alice given; surname: Old -> alice surname; email: old@example.com -> alice@example.com; \
         active: false -> true"
    );
    assert_eq!(u.changes.len(), 6);
    assert!(
        !only(&p).is_deletion(),
        "re-activation is not a deactivation"
    );
}

#[test]
fn a_source_value_removed_clears_the_destination_value() {
    let mut a = entra_user(1, "alice@example.com");
    let d = scim_twin("d1", &a);
    a.email = None;
    let p = plan_simple(
        &cfg(),
        vec![a],
        vec![d],
        &managed_of(&[(1, "d1", "alice@example.com")]),
    );
    assert_eq!(
        only(&p).changes_text(),
        "email: alice@example.com -> (none)"
    );
}

#[test]
fn user_name_case_alone_is_not_a_change() {
    let a = entra_user(1, "Alice@Example.com");
    let mut d = scim_twin("d1", &a);
    d.user_name = "alice@example.com".into();
    let p = plan_simple(
        &cfg(),
        vec![a],
        vec![d],
        &managed_of(&[(1, "d1", "alice@example.com")]),
    );
    assert!(p.items.is_empty());
    assert_eq!(p.unchanged, 1);
}

#[test]
fn a_renamed_upn_is_an_update_of_user_name() {
    let old = entra_user(1, "alice@example.com");
    let d = scim_twin("d1", &old);
    let mut renamed = old.clone();
    renamed.user_name = "alice.liddell@example.com".into();
    let p = plan_simple(
        &cfg(),
        vec![renamed],
        vec![d],
        &managed_of(&[(1, "d1", "alice@example.com")]),
    );
    let item = only(&p);
    assert_eq!(item.action(), Action::Update);
    assert_eq!(
        item.changes_text(),
        "userName: alice@example.com -> alice.liddell@example.com"
    );
}

#[test]
fn resource_like_accounts_are_flagged_in_every_row_kind() {
    let mut room = entra_user(1, "room@example.com");
    room.active = false;
    room.given_name = None;
    room.surname = None;
    let p = plan_simple(&cfg(), vec![room.clone()], vec![], &ManagedSet::new());
    assert_eq!(
        only(&p).changes_text(),
        "warning: resource-like account; note: initial password required"
    );
    let mut twin = scim_twin("d1", &room);
    twin.display_name = Some("old".into());
    let p = plan_simple(
        &cfg(),
        vec![room],
        vec![twin],
        &managed_of(&[(1, "d1", "room@example.com")]),
    );
    assert_eq!(
        only(&p).changes_text(),
        "displayName: old -> room display; warning: resource-like account"
    );
}
