//! Hand-over between two resources sharing a destination: in the plan, then through the engine
//! whichever resource runs first.

use super::*;

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
