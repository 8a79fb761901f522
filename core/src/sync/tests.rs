//! Scenario tests of the sync core: matching rules, each action, hand-over, the guard on real
//! plans, the CSV's exact bytes, and the engine against the in-memory directory.

use std::collections::HashSet;

use crate::directory::{Directory, DirectoryError, User};
use crate::sync::config::{DeletionPolicy, SyncConfig, UpnMode};
use crate::sync::csv::write_preview_csv;
use crate::sync::engine::{
    ApplyObserver, ApplyOptions, NoProgress, OtherResources, PlannedRun, RunError, RunResult,
    apply_run, plan_run,
};
use crate::sync::managed::{ManagedEntry, ManagedSet};
use crate::sync::mapping::map_source_users;
use crate::sync::plan::{Action, Change, Field, Plan, PlanContext, PlanItem, UpdateKind, plan};
use crate::sync::testing::{
    FakeDirectory, entra_user, guid, hand_made, immutable_id_of, scim_twin,
};

const DOMAIN: &str = "example.com";

fn cfg() -> SyncConfig {
    SyncConfig::new(DOMAIN, UpnMode::Enabled, 65)
}

fn managed_of(users: &[(u128, &str, &str)]) -> ManagedSet {
    users
        .iter()
        .map(|(n, dest_id, user_name)| {
            (
                immutable_id_of(*n),
                ManagedEntry {
                    destination_id: (*dest_id).to_owned(),
                    source_id: guid(*n),
                    user_name: (*user_name).to_owned(),
                },
            )
        })
        .collect()
}

struct Others {
    elsewhere: HashSet<String>,
    handed: HashSet<String>,
}

impl Others {
    fn none() -> Self {
        Self {
            elsewhere: HashSet::new(),
            handed: HashSet::new(),
        }
    }
}

fn plan_with(
    cfg: &SyncConfig,
    source: Vec<User>,
    dest: Vec<User>,
    managed: &ManagedSet,
    others: &Others,
) -> Plan {
    let mapped = map_source_users(cfg, source).expect("source maps");
    let ctx = PlanContext {
        managed,
        managed_elsewhere: &others.elsewhere,
        handed_over: &others.handed,
    };
    plan(cfg, mapped.users, dest, &ctx)
}

fn plan_simple(cfg: &SyncConfig, source: Vec<User>, dest: Vec<User>, managed: &ManagedSet) -> Plan {
    plan_with(cfg, source, dest, managed, &Others::none())
}

fn actions(plan: &Plan) -> Vec<(Action, String)> {
    plan.items
        .iter()
        .map(|i| (i.action(), i.user_name().to_owned()))
        .collect()
}

fn only(plan: &Plan) -> &PlanItem {
    assert_eq!(plan.items.len(), 1, "expected one row: {:#?}", plan.items);
    &plan.items[0]
}

fn reason(item: &PlanItem) -> &str {
    match item {
        PlanItem::Conflict { reason, .. } => reason,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

// ---------------------------------------------------------------- matching and actions

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

// ---------------------------------------------------------------- hand-over in the plan

#[test]
fn a_user_handed_over_is_released_without_a_write() {
    let a = entra_user(1, "alice@example.com");
    let managed = managed_of(&[(1, "d1", "alice@example.com")]);
    let others = Others {
        elsewhere: HashSet::new(),
        handed: [immutable_id_of(1)].into_iter().collect(),
    };
    let p = plan_with(&cfg(), vec![], vec![scim_twin("d1", &a)], &managed, &others);
    assert!(p.items.is_empty(), "{:#?}", p.items);
    assert_eq!(p.handed_over.len(), 1);
    assert_eq!(p.handed_over[0].user_name, "alice@example.com");
    assert!(p.baseline.is_empty());
    assert_eq!(p.deletions(), 0);
}

#[test]
fn a_user_another_resource_already_took_is_released_too() {
    let a = entra_user(1, "alice@example.com");
    let managed = managed_of(&[(1, "d1", "alice@example.com")]);
    let others = Others {
        elsewhere: [immutable_id_of(1)].into_iter().collect(),
        handed: HashSet::new(),
    };
    let p = plan_with(&cfg(), vec![], vec![scim_twin("d1", &a)], &managed, &others);
    assert!(p.items.is_empty());
    assert_eq!(p.handed_over.len(), 1);
}

#[test]
fn the_receiving_resource_takes_over_by_external_id() {
    let moved = entra_user(1, "alice@b.com");
    let mut old = scim_twin("d1", &moved);
    old.user_name = "alice@a.com".into();
    let others = Others {
        elsewhere: [immutable_id_of(1)].into_iter().collect(),
        handed: HashSet::new(),
    };
    let p = plan_with(
        &SyncConfig::new("b.com", UpnMode::Enabled, 65),
        vec![moved],
        vec![old],
        &ManagedSet::new(),
        &others,
    );
    let PlanItem::Update(u) = only(&p) else {
        panic!("{p:#?}")
    };
    assert_eq!(u.kind, UpdateKind::TakeOver);
    assert_eq!(
        u.current.id, "d1",
        "the same destination user: never deleted and re-created"
    );
    assert_eq!(
        only(&p).changes_text(),
        "userName: alice@a.com -> alice@b.com; note: handed over from another DirectorySync"
    );
}

// ---------------------------------------------------------------- the guard on plans

fn managed_population(n: u128) -> (Vec<User>, Vec<User>, ManagedSet) {
    let source: Vec<User> = (1..=n)
        .map(|i| entra_user(i, &format!("u{i}@example.com")))
        .collect();
    let dest: Vec<User> = source
        .iter()
        .map(|u| scim_twin(&format!("d{}", u.id), u))
        .collect();
    let managed = source
        .iter()
        .zip(&dest)
        .map(|(s, d)| {
            (
                d.immutable_id.clone().unwrap_or_default(),
                ManagedEntry {
                    destination_id: d.id.clone(),
                    source_id: s.id.clone(),
                    user_name: d.user_name.clone(),
                },
            )
        })
        .collect();
    (source, dest, managed)
}

#[test]
fn guard_at_sixty_five_percent_on_real_plans() {
    for (removed, tripped) in [(64usize, false), (65, true), (66, true)] {
        let (source, dest, managed) = managed_population(100);
        let p = plan_simple(&cfg(), source[removed..].to_vec(), dest, &managed);
        let v = crate::sync::guard::evaluate(&p, 65);
        assert_eq!(
            (v.deletes, v.managed, v.tripped),
            (removed, 100, tripped),
            "{removed} removed"
        );
    }
}

#[test]
fn guard_counts_deactivations_under_deactivate() {
    let mut c = cfg();
    c.deletion_policy = DeletionPolicy::Deactivate;
    let (source, dest, managed) = managed_population(10);
    let p = plan_simple(&c, source[7..].to_vec(), dest, &managed);
    let v = crate::sync::guard::evaluate(&p, 65);
    assert_eq!(p.count(Action::Update), 7);
    assert_eq!(p.count(Action::Delete), 0);
    assert_eq!((v.deletes, v.managed, v.tripped), (7, 10, true));
}

#[test]
fn an_empty_source_read_counts_as_deleting_everyone_and_trips_even_at_100() {
    let (_, dest, managed) = managed_population(5);
    let p = plan_simple(&cfg(), vec![], dest, &managed);
    assert_eq!(p.count(Action::Delete), 5);
    for max in [0, 65, 100] {
        assert!(crate::sync::guard::evaluate(&p, max).tripped, "max {max}");
    }
}

#[test]
fn zero_and_hundred_on_real_plans() {
    let (source, dest, managed) = managed_population(4);
    let p = plan_simple(&cfg(), source[1..].to_vec(), dest.clone(), &managed);
    assert!(crate::sync::guard::evaluate(&p, 0).tripped);
    assert!(!crate::sync::guard::evaluate(&p, 100).tripped);
    let p = plan_simple(&cfg(), source.clone(), dest, &managed);
    assert!(
        !crate::sync::guard::evaluate(&p, 0).tripped,
        "nothing deleted"
    );
}

// ---------------------------------------------------------------- order and determinism

#[test]
fn rows_are_ordered_by_action_then_lower_cased_user_name_whatever_the_listing_order() {
    let users: Vec<User> = [
        "b@example.com",
        "C@example.com",
        "a@example.com",
        "Ab@example.com",
    ]
    .iter()
    .enumerate()
    .map(|(i, u)| entra_user(i as u128 + 1, u))
    .collect();
    let stray = hand_made("h1", "zz@example.com");
    let p1 = plan_simple(
        &cfg(),
        users.clone(),
        vec![stray.clone()],
        &ManagedSet::new(),
    );
    let mut reversed = users;
    reversed.reverse();
    let p2 = plan_simple(&cfg(), reversed, vec![stray], &ManagedSet::new());
    assert_eq!(p1, p2);
    assert_eq!(
        actions(&p1),
        vec![
            (Action::Add, "a@example.com".into()),
            (Action::Add, "Ab@example.com".into()),
            (Action::Add, "b@example.com".into()),
            (Action::Add, "C@example.com".into()),
            (Action::Unmanaged, "zz@example.com".into()),
        ]
    );
}

#[test]
fn many_rows_in_any_listing_order_come_out_sorted_and_whole() {
    // Enough users that planning moves them in several shrinking steps, in a scrambled order,
    // with every fifth already in the destination under another display name (an Update).
    let n: u128 = 3001;
    let keys: Vec<u128> = (0..n).map(|i| (i * 1237) % n + 1).collect();
    let name = |k: u128| format!("u{:04}@example.com", (k * 7919) % n);
    let users: Vec<User> = keys.iter().map(|&k| entra_user(k, &name(k))).collect();
    let updated: Vec<u128> = keys.iter().copied().filter(|k| k % 5 == 0).collect();
    let dest: Vec<User> = updated
        .iter()
        .map(|&k| {
            let mut twin = scim_twin(&format!("d{k}"), &entra_user(k, &name(k)));
            twin.display_name = Some("Old".into());
            twin
        })
        .collect();
    let entries: Vec<(u128, String, String)> = updated
        .iter()
        .map(|&k| (k, format!("d{k}"), name(k)))
        .collect();
    let managed = managed_of(
        &entries
            .iter()
            .map(|(k, d, u)| (*k, d.as_str(), u.as_str()))
            .collect::<Vec<_>>(),
    );
    let p1 = plan_simple(&cfg(), users.clone(), dest.clone(), &managed);
    let mut reversed = users;
    reversed.reverse();
    assert_eq!(p1, plan_simple(&cfg(), reversed, dest.clone(), &managed));

    let got = actions(&p1);
    let mut want = got.clone();
    want.sort_by_key(|(action, name)| (*action, name.to_lowercase()));
    assert_eq!(got, want);
    assert_eq!(got.len(), n as usize);
    assert_eq!(p1.count(Action::Update), dest.len());
    let names: std::collections::HashSet<&str> =
        got.iter().map(|(_, name)| name.as_str()).collect();
    assert_eq!(names.len(), n as usize, "every user once");
}

// ---------------------------------------------------------------- CSV

#[test]
fn csv_exact_bytes() {
    let mut yamada = entra_user(1, "yamada@example.com");
    yamada.display_name = Some("山田 太郎".into());
    yamada.given_name = Some("太郎".into());
    yamada.surname = Some("山田".into());
    yamada.immutable_id = Some("+abc==".into());

    let mut comma = entra_user(2, "comma@example.com");
    comma.display_name = Some("Doe, \"Jo\"".into());
    comma.given_name = Some("Jo".into());
    comma.surname = Some("Doe".into());
    comma.email = None;

    let mut evil = entra_user(3, "evil@example.com");
    evil.display_name = Some("=cmd()".into());
    evil.given_name = Some("line1\nline2".into());
    evil.surname = Some("-x".into());
    let mut evil_twin = scim_twin("d3", &evil);
    evil_twin.display_name = Some("Old".into());

    let mut room = entra_user(4, "room@example.com");
    room.display_name = Some("Room 1".into());
    room.given_name = None;
    room.surname = None;
    room.active = false;

    let gone = entra_user(5, "gone@example.com");
    let taken = entra_user(6, "taken@example.com");

    let managed = managed_of(&[(3, "d3", "evil@example.com"), (5, "d5", "gone@example.com")]);
    let dest = vec![
        evil_twin,
        scim_twin("d5", &gone),
        hand_made("h1", "taken@example.com"),
        hand_made("h2", "admin@example.com"),
    ];
    let p = plan_simple(
        &cfg(),
        vec![yamada, comma, evil, room, taken],
        dest,
        &managed,
    );

    let mut out = Vec::new();
    let stats = write_preview_csv(&p, &mut out).expect("writes");
    let (id2, id3, id4, id5, id6) = (
        immutable_id_of(2),
        immutable_id_of(3),
        immutable_id_of(4),
        immutable_id_of(5),
        immutable_id_of(6),
    );
    let expected = format!(
        "\u{feff}action,userName,userPrincipalName,displayName,givenName,surname,email,active,changes,immutableId\r\n\
         Add,comma@example.com,comma@example.com,\"Doe, \"\"Jo\"\"\",Jo,Doe,,true,note: initial password required,{id2}\r\n\
         Add,room@example.com,room@example.com,Room 1,,,room@example.com,false,warning: resource-like account; note: initial password required,{id4}\r\n\
         Add,yamada@example.com,yamada@example.com,山田 太郎,太郎,山田,yamada@example.com,true,note: initial password required,'+abc==\r\n\
         Update,evil@example.com,evil@example.com,'=cmd(),\"line1\nline2\",'-x,evil@example.com,true,displayName: Old -> =cmd(),{id3}\r\n\
         Delete,gone@example.com,,gone display,gone given,gone surname,gone@example.com,true,,{id5}\r\n\
         Conflict,taken@example.com,taken@example.com,taken display,taken given,taken surname,taken@example.com,true,a destination user with this userName exists without externalId; set adoptExisting: true to take it over,{id6}\r\n\
         Unmanaged,admin@example.com,,admin@example.com (hand-made),,,,true,,\r\n"
    );
    assert_eq!(String::from_utf8(out.clone()).expect("utf-8"), expected);
    assert!(out.starts_with(b"\xEF\xBB\xBF"));
    assert_eq!(stats.rows, 7);
    assert_eq!(stats.bytes, out.len() as u64);
    use sha2::Digest as _;
    assert_eq!(
        stats.sha256,
        crate::sync::csv::hex(&sha2::Sha256::digest(&out))
    );
}

#[test]
fn csv_of_an_empty_plan_is_bom_and_header() {
    let mut out = Vec::new();
    let stats = write_preview_csv(&Plan::default(), &mut out).expect("writes");
    assert_eq!(
        out,
        b"\xEF\xBB\xBFaction,userName,userPrincipalName,displayName,givenName,surname,email,active,changes,immutableId\r\n"
    );
    assert_eq!(stats.rows, 0);
    // sha256 of exactly those bytes.
    assert_eq!(stats.sha256.len(), 64);
}

#[test]
fn every_formula_lead_character_is_neutralised() {
    use crate::sync::csv::neutralise;
    for cell in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
        assert_eq!(neutralise(cell), format!("'{cell}"));
    }
    for cell in ["", "a=b", "'x", " =x", "山田"] {
        assert_eq!(neutralise(cell), cell);
    }
}

#[test]
fn summary_json_is_camel_case_with_counts_and_verdict() {
    let (source, dest, managed) = managed_population(3);
    let p = plan_simple(&cfg(), source[1..].to_vec(), dest, &managed);
    let guard = crate::sync::guard::evaluate(&p, 10);
    let s = crate::sync::summary::Summary::new(DOMAIN, &p, Default::default(), &guard, true, false);
    let json: serde_json::Value = serde_json::from_str(&s.to_json()).expect("json");
    assert_eq!(json["counts"]["delete"], 1);
    assert_eq!(json["counts"]["unchanged"], 2);
    assert_eq!(json["counts"]["handedOver"], 0);
    assert_eq!(json["guard"]["tripped"], true);
    assert_eq!(json["dryRun"], true);
    assert!(
        json["guardMessage"]
            .as_str()
            .is_some_and(|m| m.starts_with("Applying this plan would be canceled"))
    );
}

// ---------------------------------------------------------------- the engine

fn others_none() -> OtherResources {
    OtherResources::default()
}

async fn plan_and_apply(
    source: &FakeDirectory,
    dest: &FakeDirectory,
    cfg: &SyncConfig,
    managed: &ManagedSet,
    others: &OtherResources,
) -> (PlannedRun, crate::sync::engine::ApplyOutcome) {
    let planned = plan_run(source, dest, cfg, managed, others)
        .await
        .expect("plans");
    let outcome = apply_run(&planned, dest, &ApplyOptions::default(), &mut NoProgress).await;
    (planned, outcome)
}

fn tenant(users: &[(u128, &str)]) -> FakeDirectory {
    FakeDirectory::with_users(users.iter().map(|(n, upn)| entra_user(*n, upn)))
}

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

/// A destination whose writes take `delay` each, all at once (a server that works in
/// parallel), counting how many are in flight.
struct SlowDestination {
    inner: FakeDirectory,
    delay: std::time::Duration,
    now: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

impl SlowDestination {
    async fn write<T>(&self, f: impl Future<Output = T>) -> T {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(n, SeqCst);
        tokio::time::sleep(self.delay).await;
        let r = f.await;
        self.now.fetch_sub(1, SeqCst);
        r
    }
}

#[async_trait::async_trait]
impl Directory for SlowDestination {
    async fn list_users(
        &self,
        scope: &crate::directory::ListScope,
    ) -> Result<Vec<User>, DirectoryError> {
        self.inner.list_users(scope).await
    }
    async fn get_user(&self, id: &str) -> Result<Option<User>, DirectoryError> {
        self.inner.get_user(id).await
    }
    async fn find_by_user_name(&self, user_name: &str) -> Result<Vec<User>, DirectoryError> {
        self.inner.find_by_user_name(user_name).await
    }
    async fn create_user(
        &self,
        user: &crate::directory::DesiredUser,
    ) -> Result<User, DirectoryError> {
        self.write(self.inner.create_user(user)).await
    }
    async fn update_user(
        &self,
        id: &str,
        current: &User,
        desired: &crate::directory::DesiredUser,
        expected: Option<&str>,
    ) -> Result<(), DirectoryError> {
        self.write(self.inner.update_user(id, current, desired, expected))
            .await
    }
    async fn delete_user(&self, id: &str, expected: Option<&str>) -> Result<(), DirectoryError> {
        self.write(self.inner.delete_user(id, expected)).await
    }
}

#[tokio::test]
async fn engine_raises_writes_in_flight_up_to_the_bound_on_a_parallel_destination() {
    let users: Vec<(u128, String)> = (1..=40).map(|i| (i, format!("u{i}@example.com"))).collect();
    let source = FakeDirectory::with_users(users.iter().map(|(n, u)| entra_user(*n, u)));
    let dest = SlowDestination {
        inner: FakeDirectory::new(),
        delay: std::time::Duration::from_millis(20),
        now: Default::default(),
        peak: Default::default(),
    };
    let planned = plan_run(&source, &dest, &cfg(), &ManagedSet::new(), &others_none())
        .await
        .expect("plans");
    let opts = ApplyOptions {
        concurrency: 3,
        checkpoint_every: 0,
    };
    let out = apply_run(&planned, &dest, &opts, &mut NoProgress).await;
    assert_eq!(out.created, 40);
    let peak = dest.peak.load(std::sync::atomic::Ordering::SeqCst);
    // Starts at one write and climbs while latency stays flat; never above --concurrency.
    assert!((2..=3).contains(&peak), "peak in flight {peak}");
}

#[derive(Default)]
struct Recorder {
    progress: Vec<(usize, usize)>,
    checkpoints: Vec<usize>,
}

#[async_trait::async_trait]
impl ApplyObserver for Recorder {
    fn progress(&mut self, done: usize, total: usize) {
        self.progress.push((done, total));
    }
    async fn checkpoint(&mut self, managed: &ManagedSet) {
        self.checkpoints.push(managed.len());
    }
}

#[tokio::test]
async fn engine_reports_progress_and_checkpoints_the_managed_set() {
    let users: Vec<(u128, String)> = (1..=5).map(|i| (i, format!("u{i}@example.com"))).collect();
    let source = FakeDirectory::with_users(users.iter().map(|(n, u)| entra_user(*n, u)));
    let dest = FakeDirectory::new();
    let planned = plan_run(&source, &dest, &cfg(), &ManagedSet::new(), &others_none())
        .await
        .expect("plans");
    let mut rec = Recorder::default();
    let out = apply_run(
        &planned,
        &dest,
        &ApplyOptions {
            concurrency: 2,
            checkpoint_every: 2,
        },
        &mut rec,
    )
    .await;
    assert_eq!(out.result, RunResult::Success);
    assert_eq!(rec.progress, vec![(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]);
    assert_eq!(
        rec.checkpoints,
        vec![2, 4],
        "each checkpoint holds the writes done so far"
    );

    // A plain closure is an observer too.
    let mut seen = 0;
    let planned = plan_run(
        &source,
        &FakeDirectory::new(),
        &cfg(),
        &ManagedSet::new(),
        &others_none(),
    )
    .await
    .expect("plans");
    let mut closure = |done: usize, _total: usize| seen = done;
    apply_run(
        &planned,
        &FakeDirectory::new(),
        &ApplyOptions::default(),
        &mut closure,
    )
    .await;
    assert_eq!(seen, 5);
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

/// Two resources, a.com and b.com, share one destination; alice moves from a.com to b.com.
struct TwoDomains {
    tenant: FakeDirectory,
    dest: FakeDirectory,
    a: SyncConfig,
    b: SyncConfig,
    managed_a: ManagedSet,
    managed_b: ManagedSet,
    alice_dest_id: String,
}

impl TwoDomains {
    async fn set_up() -> Self {
        let tenant = tenant(&[(1, "alice@a.com"), (2, "bob@b.com")]);
        let dest = FakeDirectory::new();
        let a = SyncConfig::new("a.com", UpnMode::Enabled, 65);
        let b = SyncConfig::new("b.com", UpnMode::Enabled, 65);
        let (_, out_a) =
            plan_and_apply(&tenant, &dest, &a, &ManagedSet::new(), &others_none()).await;
        let (_, out_b) =
            plan_and_apply(&tenant, &dest, &b, &ManagedSet::new(), &others_none()).await;
        let alice_dest_id = dest
            .user_named("alice@a.com")
            .map(|u| u.id)
            .unwrap_or_default();
        tenant.insert(entra_user(1, "alice@b.com"));
        Self {
            tenant,
            dest,
            a,
            b,
            managed_a: out_a.managed.unwrap_or_default(),
            managed_b: out_b.managed.unwrap_or_default(),
            alice_dest_id,
        }
    }

    fn others_of(managed: &ManagedSet, domain: &str) -> OtherResources {
        OtherResources {
            managed_elsewhere: managed.iter().map(|(k, _)| k.to_owned()).collect(),
            synced_domains: vec![domain.into()],
        }
    }

    fn assert_handed_over(&self) {
        let alice = self.dest.user_named("alice@b.com").expect("alice renamed");
        assert_eq!(
            alice.id, self.alice_dest_id,
            "same destination user, never re-created"
        );
        assert_eq!(self.dest.calls().deletes, 0);
        assert_eq!(self.dest.calls().creates, 2);
        assert!(!self.managed_a.contains(&immutable_id_of(1)));
        assert!(self.managed_b.contains(&immutable_id_of(1)));
    }
}

#[tokio::test]
async fn hand_over_when_the_losing_resource_runs_first() {
    let mut t = TwoDomains::set_up().await;
    let others = TwoDomains::others_of(&t.managed_b, "b.com");
    let (planned, out) = plan_and_apply(&t.tenant, &t.dest, &t.a, &t.managed_a, &others).await;
    assert!(planned.plan.items.is_empty(), "{:#?}", planned.plan.items);
    assert_eq!(planned.plan.handed_over.len(), 1);
    assert_eq!(
        planned.summary(false).handed_over,
        vec!["alice@a.com".to_string()]
    );
    assert_eq!(planned.guard.deletes, 0);
    t.managed_a = out.managed.expect("managed");

    let others = TwoDomains::others_of(&t.managed_a, "a.com");
    let (planned, out) = plan_and_apply(&t.tenant, &t.dest, &t.b, &t.managed_b, &others).await;
    assert_eq!(
        actions(&planned.plan),
        vec![(Action::Update, "alice@b.com".into())]
    );
    t.managed_b = out.managed.expect("managed");
    t.assert_handed_over();
}

#[tokio::test]
async fn hand_over_when_the_receiving_resource_runs_first() {
    let mut t = TwoDomains::set_up().await;
    let others = TwoDomains::others_of(&t.managed_a, "a.com");
    let (planned, out) = plan_and_apply(&t.tenant, &t.dest, &t.b, &t.managed_b, &others).await;
    let PlanItem::Update(u) = only(&planned.plan) else {
        panic!("{:#?}", planned.plan)
    };
    assert_eq!(u.kind, UpdateKind::TakeOver);
    t.managed_b = out.managed.expect("managed");

    let others = TwoDomains::others_of(&t.managed_b, "b.com");
    let gets_before = t.tenant.calls().gets;
    let (planned, out) = plan_and_apply(&t.tenant, &t.dest, &t.a, &t.managed_a, &others).await;
    assert!(planned.plan.items.is_empty());
    assert_eq!(planned.plan.handed_over.len(), 1);
    assert_eq!(
        t.tenant.calls().gets,
        gets_before,
        "already taken: no look-up needed"
    );
    t.managed_a = out.managed.expect("managed");
    t.assert_handed_over();
}

#[tokio::test]
async fn a_user_who_left_the_tenant_is_deleted_even_with_other_domains() {
    let mut t = TwoDomains::set_up().await;
    t.tenant.remove(&guid(1));
    t.a.max_allowed_deletions = 100;
    let others = TwoDomains::others_of(&t.managed_b, "b.com");
    t.tenant.insert(entra_user(3, "carol@a.com"));
    let (planned, _) = plan_and_apply(&t.tenant, &t.dest, &t.a, &t.managed_a, &others).await;
    assert_eq!(planned.plan.count(Action::Delete), 1);
    assert!(planned.plan.handed_over.is_empty());
}

#[tokio::test]
async fn a_failed_hand_over_look_up_aborts_the_run() {
    let t = TwoDomains::set_up().await;
    t.tenant.insert(entra_user(3, "carol@a.com"));
    t.tenant.fail_get(DirectoryError::Unavailable("503".into()));
    let others = TwoDomains::others_of(&t.managed_b, "b.com");
    let err = plan_run(&t.tenant, &t.dest, &t.a, &t.managed_a, &others)
        .await
        .expect_err("fails");
    assert!(matches!(
        err,
        RunError::Source(DirectoryError::Unavailable(_))
    ));
}

// ---------------------------------------------------------------- scale sanity

#[test]
fn plans_and_writes_100k_users() {
    const N: u128 = 100_000;
    let cfg = cfg();
    let source: Vec<User> = (1..=N)
        .map(|i| entra_user(i, &format!("user{i}@example.com")))
        .collect();

    // Into an empty destination.
    let p = plan_simple(&cfg, source.clone(), vec![], &ManagedSet::new());
    assert_eq!(p.count(Action::Add), N as usize);
    let stats = write_preview_csv(&p, std::io::sink()).expect("writes");
    assert_eq!(stats.rows, N as usize);
    drop(p);

    // Against a destination already holding them, with a few changes.
    let mut dest: Vec<User> = source
        .iter()
        .map(|u| scim_twin(&format!("d{}", u.id), u))
        .collect();
    let managed: ManagedSet = dest
        .iter()
        .zip(&source)
        .map(|(d, s)| {
            (
                d.immutable_id.clone().unwrap_or_default(),
                ManagedEntry {
                    destination_id: d.id.clone(),
                    source_id: s.id.clone(),
                    user_name: d.user_name.clone(),
                },
            )
        })
        .collect();
    dest[10].display_name = Some("changed".into());
    dest.reverse();
    let p = plan_simple(&cfg, source, dest, &managed);
    assert_eq!(p.count(Action::Update), 1);
    assert_eq!(p.unchanged, N as usize - 1);
    assert_eq!(p.managed_present, N as usize);
    assert_eq!(
        ManagedSet::from_parts(managed.to_gzip_parts(900 * 1024).iter().map(Vec::as_slice)),
        Ok(managed)
    );
}

// Keep the trait object form used by the CLI and operator compiling.
#[allow(dead_code)]
fn directories_are_object_safe(d: &dyn Directory) -> &dyn Directory {
    d
}
