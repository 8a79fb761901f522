//! The other direction (docs/behaviour.md §6): a SCIM source written into an Entra-like
//! destination with soft deletes — what the rows show, what is never touched, Restore rows, an
//! Immutable ID the source changed, and a per-row refusal that is a Conflict, not a failure.

use super::*;
use crate::sync::config::Direction;
use crate::sync::csv::write_preview_csv;

fn rcfg() -> SyncConfig {
    let mut c = SyncConfig::new(DOMAIN, UpnMode::Disabled, 65);
    c.direction = Direction::ScimToEntraId;
    c
}

/// A SCIM source user: id `s<n>`, no externalId (the Immutable ID is derived from the id).
fn scim_user(n: u32, user_name: &str) -> User {
    User {
        id: format!("s{n}"),
        user_name: user_name.into(),
        display_name: Some(format!("User {n}")),
        given_name: Some(format!("Given{n}")),
        surname: Some("Family".into()),
        email: Some(format!("{user_name}@mail.example.net")),
        active: true,
        ..User::default()
    }
}

/// An Entra user made by hand (no Immutable ID), with a mailbox address.
fn entra_hand_made(id: &str, upn: &str) -> User {
    User {
        id: id.into(),
        user_name: upn.into(),
        upn: Some(upn.into()),
        display_name: Some(upn.into()),
        email: Some(upn.into()),
        active: true,
        ..User::default()
    }
}

fn entra() -> FakeDirectory {
    FakeDirectory::new().with_recycle_bin()
}

fn csv_text(plan: &Plan) -> String {
    let mut out = Vec::new();
    write_preview_csv(plan, &mut out).expect("csv");
    String::from_utf8(out).expect("utf-8")
}

#[tokio::test]
async fn rows_show_the_source_user_name_and_the_entra_upn() {
    let source = FakeDirectory::with_users([
        scim_user(1, "alice"),
        scim_user(2, "bob smith"),
        scim_user(3, "carol@elsewhere.org"),
    ]);
    let dest = entra();
    let planned = plan_run(&source, &dest, &rcfg(), &ManagedSet::new(), &others_none())
        .await
        .expect("plans");
    let csv = csv_text(&planned.plan);
    let lines: Vec<&str> = csv.trim_start_matches('\u{feff}').lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert_eq!(
        lines[1],
        "Add,alice,alice@example.com,User 1,Given1,Family,,true,\"note: random password, never shown\",czE="
    );
    assert!(
        lines[2].starts_with("Conflict,bob smith,bob smith@example.com,"),
        "{csv}"
    );
    assert!(
        lines[2].contains("would be refused by Entra ID: its local part may hold only letters"),
        "{csv}"
    );
    assert_eq!(
        planned.skipped.out_of_domain, 1,
        "carol@… is not this domain's"
    );
}

#[tokio::test]
async fn apply_then_a_second_run_writes_nothing_and_mail_is_left_alone() {
    let source = FakeDirectory::with_users([scim_user(1, "alice"), scim_user(2, "bob")]);
    let dest = entra();
    let (_, out) =
        plan_and_apply(&source, &dest, &rcfg(), &ManagedSet::new(), &others_none()).await;
    assert_eq!(out.result, RunResult::Success);
    assert_eq!(out.created, 2);
    let managed = out.managed.expect("managed");
    // Exchange sets `mail` in a real tenant; it is not a sync item of this direction.
    let mut alice = dest.user_named("alice@example.com").expect("created");
    assert_eq!(alice.email, None, "mail is not written");
    alice.email = Some("alice@example.com".into());
    dest.insert(alice);
    let writes = dest.calls().writes();
    let (planned, _) = plan_and_apply(&source, &dest, &rcfg(), &managed, &others_none()).await;
    assert_eq!(planned.plan.writes(), 0, "{:#?}", planned.plan.items);
    assert_eq!(dest.calls().writes(), writes);
}

#[tokio::test]
async fn hand_made_guests_admins_and_protected_users_are_never_written() {
    let mut cfg = rcfg();
    cfg.protected_user_names = vec!["breakglass@example.com".into()];
    let source = FakeDirectory::with_users([
        scim_user(1, "admin"),
        scim_user(2, "breakglass"),
        scim_user(3, "guest"),
    ]);
    let mut guest = entra_hand_made("g", "guest@example.com");
    guest.guest = true;
    let dest = FakeDirectory::with_users([
        entra_hand_made("a", "admin@example.com"),
        entra_hand_made("b", "breakglass@example.com"),
        guest,
        entra_hand_made("o", "someone@other.org"),
    ])
    .with_recycle_bin();
    let (planned, out) =
        plan_and_apply(&source, &dest, &cfg, &ManagedSet::new(), &others_none()).await;
    let rows: Vec<(Action, String, String)> = planned
        .plan
        .items
        .iter()
        .map(|i| (i.action(), i.user_name().to_owned(), i.changes_text()))
        .collect();
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert!(rows.iter().all(|r| r.0 == Action::Conflict), "{rows:#?}");
    assert!(rows[0].2.contains("adoptExisting"), "{rows:#?}");
    assert!(rows[1].2.contains("protectedUserNames"), "{rows:#?}");
    assert!(rows[2].2.contains("guest"), "{rows:#?}");
    assert_eq!(dest.calls().writes(), 0);
    assert_eq!(out.result, RunResult::Success);

    // adoptExisting takes over the hand-made user (an Update that sets the Immutable ID), but
    // still never the guest or the protected account.
    cfg.adopt_existing = true;
    let planned = plan_run(&source, &dest, &cfg, &ManagedSet::new(), &others_none())
        .await
        .expect("plans");
    let adopt = planned
        .plan
        .items
        .iter()
        .find(|i| i.action() == Action::Update)
        .expect("an adoption");
    assert_eq!(adopt.user_name(), "admin");
    assert!(
        adopt.changes_text().contains("externalId: (none) -> czE="),
        "{adopt:?}"
    );
    assert_eq!(planned.plan.count(Action::Conflict), 2);
}

#[tokio::test]
async fn a_refused_write_is_a_conflict_row_not_a_failed_run() {
    let mut cfg = rcfg();
    cfg.adopt_existing = true;
    let source = FakeDirectory::with_users([scim_user(1, "admin"), scim_user(2, "bob")]);
    let dest =
        FakeDirectory::with_users([entra_hand_made("a", "admin@example.com")]).with_recycle_bin();
    dest.fail_writes_for(
        "admin@example.com",
        DirectoryError::Forbidden("HTTP 403 Authorization_RequestDenied: privileged user".into()),
    );
    let (_, out) = plan_and_apply(&source, &dest, &cfg, &ManagedSet::new(), &others_none()).await;
    assert_eq!(out.result, RunResult::Success, "{out:#?}");
    assert!(out.failures.is_empty(), "{out:#?}");
    assert_eq!(out.created, 1);
    let r = &out.replanned[0];
    assert_eq!(
        (r.action, r.user_name.as_str()),
        (Action::Conflict, "admin@example.com")
    );
    assert!(r.detail.contains("privileged user"), "{r:?}");
    assert!(
        out.managed.expect("managed").get("czE=").is_none(),
        "a user we may not write is not adopted"
    );
}

#[tokio::test]
async fn a_returning_user_is_restored_as_the_same_object() {
    let source = FakeDirectory::with_users([scim_user(1, "alice"), scim_user(2, "bob")]);
    let dest = entra();
    let (_, out) =
        plan_and_apply(&source, &dest, &rcfg(), &ManagedSet::new(), &others_none()).await;
    let managed = out.managed.expect("managed");
    let bob_id = dest.user_named("bob@example.com").expect("bob").id;

    // Bob leaves the source: a soft delete.
    source.remove("s2");
    let (planned, out) = plan_and_apply(&source, &dest, &rcfg(), &managed, &others_none()).await;
    assert_eq!(planned.plan.count(Action::Delete), 1);
    assert_eq!(out.deleted, 1);
    assert_eq!(dest.deleted().len(), 1, "in the recycle bin");
    let managed = out.managed.expect("managed");

    // Bob comes back with a new surname: a Restore row (after Add), not a second account.
    let mut bob = scim_user(2, "bob");
    bob.surname = Some("Builder".into());
    source.insert(bob);
    source.insert(scim_user(3, "carol"));
    let (planned, out) = plan_and_apply(&source, &dest, &rcfg(), &managed, &others_none()).await;
    let rows = actions(&planned.plan);
    assert_eq!(
        rows,
        vec![
            (Action::Add, "carol".into()),
            (Action::Restore, "bob".into())
        ]
    );
    let restore = &planned.plan.items[1];
    assert!(
        restore.changes_text().starts_with(&format!(
            "restore soft-deleted user {bob_id}; surname: Family -> Builder"
        )),
        "{}",
        restore.changes_text()
    );
    assert_eq!(planned.summary(false).counts.restore, 1);
    assert_eq!((out.created, out.restored), (1, 1), "{out:#?}");
    assert_eq!(dest.restores(), 1);
    let bob = dest.user_named("bob@example.com").expect("bob is back");
    assert_eq!(bob.id, bob_id, "the same object");
    assert_eq!(bob.surname.as_deref(), Some("Builder"));
    let managed = out.managed.expect("managed");
    assert_eq!(
        managed.get("czI=").map(|e| e.destination_id.as_str()),
        Some(bob_id.as_str())
    );
    let (planned, _) = plan_and_apply(&source, &dest, &rcfg(), &managed, &others_none()).await;
    assert_eq!(planned.plan.writes(), 0, "{:#?}", planned.plan.items);
}

#[tokio::test]
async fn a_changed_immutable_id_is_a_conflict_never_a_delete_and_add() {
    let source = FakeDirectory::with_users([scim_user(1, "alice"), scim_user(2, "bob")]);
    let dest = entra();
    let (_, out) =
        plan_and_apply(&source, &dest, &rcfg(), &ManagedSet::new(), &others_none()).await;
    let managed = out.managed.expect("managed");
    // The source starts sending an externalId for Alice.
    let mut alice = scim_user(1, "alice");
    alice.immutable_id = Some("bmV3LWlk".into());
    source.insert(alice);
    let planned = plan_run(&source, &dest, &rcfg(), &managed, &others_none())
        .await
        .expect("plans");
    assert_eq!(planned.plan.writes(), 0, "{:#?}", planned.plan.items);
    let reasons: Vec<String> = planned
        .plan
        .items
        .iter()
        .map(PlanItem::changes_text)
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:#?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("Immutable ID bmV3LWlk") && r.contains("created with czE=")),
        "{reasons:#?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("not removed")),
        "{reasons:#?}"
    );
}

#[tokio::test]
async fn two_soft_deleted_users_with_one_immutable_id_are_a_conflict() {
    let source = FakeDirectory::with_users([scim_user(1, "alice")]);
    let dest = entra();
    let mut managed = ManagedSet::new();
    for id in ["x1", "x2"] {
        dest.insert(User {
            immutable_id: Some("czE=".into()),
            ..entra_hand_made(id, &format!("alice-{id}@example.com"))
        });
        managed = plan_and_apply(
            &FakeDirectory::new(),
            &dest,
            &rcfg(),
            &ManagedSet::new(),
            &others_none(),
        )
        .await
        .1
        .managed
        .unwrap_or(managed);
        dest.delete_user(id, Some("czE=")).await.expect("deleted");
    }
    assert_eq!(dest.deleted().len(), 2);
    let planned = plan_run(&source, &dest, &rcfg(), &ManagedSet::new(), &others_none())
        .await
        .expect("plans");
    let row = only(&planned.plan);
    assert!(reason(row).contains("2 soft-deleted users"), "{row:?}");
}
