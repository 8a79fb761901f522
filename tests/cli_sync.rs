//! `dirsync plan` / `dirsync apply` end to end (docs/behaviour.md §2, §5): the real binary against the
//! project's Graph emulator (HTTPS) and the real scim2-server (PyPI, pinned).
//!
//! Needs `tools/setup.sh` (scim2-server) and `cargo build -p entra-emulator` (the project's test
//! command builds the whole workspace first).

mod cli_common;

use std::time::Duration;

use cli_common::*;
use serde_json::{Value, json};

fn alice() -> Value {
    member(1, "alice@example.com", "Alice", "Archer")
}
fn bob() -> Value {
    member(2, "bob@example.com", "Bob", "Baker")
}
fn carol() -> Value {
    member(3, "carol@example.com", "Carol", "Cooper")
}
fn dave() -> Value {
    member(4, "dave@example.com", "Dave", "Dunn")
}

fn with(mut v: Value, patch: Value) -> Value {
    for (k, x) in patch.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

#[test]
fn first_sync_creates_every_member_with_each_sync_item_and_a_second_run_writes_nothing() {
    let users = vec![
        alice(),
        // No mail: the primary SMTP: proxy address is the email.
        with(
            bob(),
            json!({"mail": null, "proxyAddresses": ["smtp:bob.alias@example.com", "SMTP:Bob.Primary@example.com"]}),
        ),
        // Neither mail nor proxy address: no email at all.
        with(carol(), json!({"mail": null})),
        with(dave(), json!({"accountEnabled": false})),
        with(
            member(5, "erin@example.com", "Erin", "Evans"),
            json!({"onPremisesImmutableId": "Zm9vYmFyMTIzNDU2Nzg5MA=="}),
        ),
        // Guests are never synced, even with a UPN in the domain.
        with(
            member(6, "guest_partner.net#EXT#@example.com", "Gus", "Guest"),
            json!({"userType": "Guest"}),
        ),
        // Another domain: out of scope.
        member(7, "frank@other.com", "Frank", "Foster"),
        // Resource-like: disabled, neither given name nor surname.
        json!({"id": guid(8), "userPrincipalName": "room1@example.com", "displayName": "Room 1", "givenName": null,
               "surname": null, "mail": "room1@example.com", "accountEnabled": false, "userType": "Member",
               "proxyAddresses": [], "onPremisesImmutableId": null}),
        with(
            member(9, "taro.yamada@example.com", "太郎", "山田"),
            json!({"displayName": "山田 太郎"}),
        ),
    ];
    let env = Env::new(users);

    // plan (no --state): the full preview, nothing written.
    let plan = env.plan_stateless().expect(0);
    let rows = plan.rows();
    assert_eq!(
        actions(&rows),
        [
            "alice",
            "bob",
            "carol",
            "dave",
            "erin",
            "room1",
            "taro.yamada"
        ]
        .iter()
        .map(|n| ("Add".to_string(), format!("{n}@example.com")))
        .collect::<Vec<_>>(),
        "{}",
        plan.stdout
    );
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.user_name.starts_with(name))
            .unwrap()
            .clone()
    };
    assert_eq!(
        row("alice"),
        Row {
            action: "Add".into(),
            user_name: "alice@example.com".into(),
            upn: "alice@example.com".into(),
            display_name: "Alice Archer".into(),
            given_name: "Alice".into(),
            surname: "Archer".into(),
            email: "alice@example.com".into(),
            active: "true".into(),
            changes: "note: initial password required".into(),
            immutable_id: immutable_id(&guid(1)),
        }
    );
    assert_eq!(row("bob").email, "Bob.Primary@example.com");
    assert_eq!(row("carol").email, "");
    assert_eq!(row("dave").active, "false");
    assert_eq!(row("erin").immutable_id, "Zm9vYmFyMTIzNDU2Nzg5MA==");
    assert_eq!(
        row("room1").changes,
        "warning: resource-like account; note: initial password required"
    );
    assert_eq!(
        (
            row("taro").display_name.as_str(),
            row("taro").surname.as_str()
        ),
        ("山田 太郎", "山田")
    );
    assert!(
        plan.stderr.contains("7 add, 0 update, 0 delete"),
        "{}",
        plan.stderr
    );
    assert_eq!(
        env.scim_writes().total(),
        0,
        "plan wrote to the destination"
    );
    assert!(env.scim_users().is_empty());
    assert!(!env.state_path().exists(), "plan created a state file");

    // apply: every user lands with every sync item.
    let run = env.apply().expect(0);
    assert!(
        run.stderr.contains("7 created, 0 updated, 0 deleted"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("initial password"), "{}", run.stderr);
    assert_eq!(env.scim_users().len(), 7);
    let a = env.scim_user_required("alice@example.com");
    assert_eq!(a["externalId"], json!(immutable_id(&guid(1))));
    assert_eq!(a["displayName"], "Alice Archer");
    assert_eq!(a["name"]["givenName"], "Alice");
    assert_eq!(a["name"]["familyName"], "Archer");
    assert_eq!(a["active"], true);
    assert_eq!(
        a["emails"],
        json!([{"value": "alice@example.com", "type": "work", "primary": true}])
    );
    assert!(a.get("password").is_none());
    assert_eq!(
        primary_email(&env.scim_user_required("bob@example.com")).as_deref(),
        Some("Bob.Primary@example.com")
    );
    let c = env.scim_user_required("carol@example.com");
    assert!(c["emails"].as_array().is_none_or(|e| e.is_empty()), "{c}");
    assert_eq!(env.scim_user_required("dave@example.com")["active"], false);
    assert_eq!(
        env.scim_user_required("erin@example.com")["externalId"],
        "Zm9vYmFyMTIzNDU2Nzg5MA=="
    );
    assert_eq!(
        env.scim_user_required("taro.yamada@example.com")["displayName"],
        "山田 太郎"
    );
    assert!(
        env.scim_user("frank@other.com").is_none()
            && env
                .scim_user("guest_partner.net#EXT#@example.com")
                .is_none()
    );
    assert_eq!(mode(&env.state_path()), 0o600, "state file mode");
    assert_eq!(env.state_managed().len(), 7);

    // A second run with nothing changed: no write at all, every resource version unchanged.
    let (writes, versions) = (env.scim_writes(), env.scim_versions());
    let again = env.apply().expect(0);
    assert!(
        again.stderr.contains("0 created, 0 updated, 0 deleted"),
        "{}",
        again.stderr
    );
    assert_eq!(
        env.scim_writes(),
        writes,
        "a run with no changes wrote to the destination"
    );
    assert_eq!(env.scim_versions(), versions);
    let plan = env.plan().expect(0);
    assert!(plan.rows().is_empty(), "{}", plan.stdout);
    assert!(plan.stderr.contains("7 unchanged"), "{}", plan.stderr);
}

#[test]
fn plan_writes_the_csv_to_out_and_never_writes_to_the_destination() {
    let env = Env::new(vec![alice(), bob(), carol()]);
    env.apply().expect(0);
    env.emu.update_user(
        "alice@example.com",
        &json!({"displayName": "Alice Changed"}),
    );
    env.emu.delete_user("bob@example.com");
    env.emu.add_user(&dave());
    let (writes, versions, state) = (
        env.scim_writes(),
        env.scim_versions(),
        std::fs::read(env.state_path()).unwrap(),
    );

    let out = env.dir.path().join("preview.csv");
    let state_arg = env.state_path().display().to_string();
    let out_arg = out.display().to_string();
    let run = env
        .dirsync(&env.args("plan", &["--state", &state_arg, "--out", &out_arg]))
        .expect(0);
    assert!(
        run.stdout.is_empty(),
        "CSV went to stdout despite --out: {}",
        run.stdout
    );
    assert!(run.stderr.contains("preview.csv"), "{}", run.stderr);
    let csv = std::fs::read_to_string(&out).unwrap();
    assert_no_secrets(&csv, "the preview CSV");
    assert_eq!(
        actions(&rows(&csv)),
        [
            ("Add", "dave@example.com"),
            ("Update", "alice@example.com"),
            ("Delete", "bob@example.com")
        ]
        .map(|(a, n)| (a.to_string(), n.to_string()))
    );
    // The same plan on stdout is byte-identical.
    assert_eq!(env.plan().expect(0).stdout, csv);
    assert_eq!(env.scim_writes(), writes, "plan wrote to the destination");
    assert_eq!(env.scim_versions(), versions);
    assert_eq!(
        std::fs::read(env.state_path()).unwrap(),
        state,
        "plan changed the state file"
    );
}

#[test]
fn exclude_resource_like_accounts_leaves_them_out() {
    let room = json!({"id": guid(8), "userPrincipalName": "room1@example.com", "displayName": "Room 1", "givenName": null,
                      "surname": null, "mail": "room1@example.com", "accountEnabled": false, "userType": "Member",
                      "proxyAddresses": [], "onPremisesImmutableId": null});
    let mut env = Env::new(vec![alice(), room]);
    let rows = env.plan_stateless().expect(0).rows();
    assert_eq!(
        rows.iter()
            .map(|r| r.user_name.as_str())
            .collect::<Vec<_>>(),
        ["alice@example.com", "room1@example.com"]
    );
    assert!(rows[1].changes.contains("warning: resource-like account"));
    env.set_spec(|s| s.exclude_resource_like_accounts = true);
    env.apply().expect(0);
    assert_eq!(env.scim_users().len(), 1);
    assert!(env.scim_user("room1@example.com").is_none());
}

#[test]
fn updates_of_every_sync_item_are_applied_in_place() {
    let users = vec![
        alice(),
        bob(),
        carol(),
        dave(),
        member(5, "erin@example.com", "Erin", "Evans"),
        member(6, "frank@example.com", "Frank", "Foster"),
        with(
            member(7, "grace@example.com", "Grace", "Green"),
            json!({"accountEnabled": false}),
        ),
        member(8, "henry@example.com", "Henry", "Hill"),
    ];
    let env = Env::new(users);
    env.apply().expect(0);
    let before = env.scim_versions();

    env.emu.update_user(
        "alice@example.com",
        &json!({"displayName": "Alice A. Archer"}),
    );
    env.emu
        .update_user("bob@example.com", &json!({"givenName": "Robert"}));
    env.emu
        .update_user("carol@example.com", &json!({"surname": "Clarke"}));
    env.emu
        .update_user("dave@example.com", &json!({"mail": "dave.new@example.com"}));
    env.emu
        .update_user("erin@example.com", &json!({"accountEnabled": false}));
    env.emu.update_user(
        "frank@example.com",
        &json!({"userPrincipalName": "franklin@example.com"}),
    );
    env.emu
        .update_user("grace@example.com", &json!({"accountEnabled": true}));

    let plan = env.plan().expect(0);
    let rows = plan.rows();
    let expected = [
        (
            "alice@example.com",
            "displayName: Alice Archer -> Alice A. Archer",
        ),
        ("bob@example.com", "givenName: Bob -> Robert"),
        ("carol@example.com", "surname: Cooper -> Clarke"),
        (
            "dave@example.com",
            "email: dave@example.com -> dave.new@example.com",
        ),
        ("erin@example.com", "active: true -> false"),
        (
            "franklin@example.com",
            "userName: frank@example.com -> franklin@example.com",
        ),
        ("grace@example.com", "active: false -> true"),
    ];
    assert_eq!(rows.len(), expected.len(), "{}", plan.stdout);
    for (row, (name, change)) in rows.iter().zip(expected) {
        assert_eq!(
            (row.action.as_str(), row.user_name.as_str()),
            ("Update", name),
            "{}",
            plan.stdout
        );
        assert!(
            row.changes.contains(change),
            "{name}: changes {:?} lack {change:?}",
            row.changes
        );
    }
    // One deactivation of eight managed users: counted, under the 65 % guard.
    assert!(
        plan.stderr.contains("1 of 8 managed users"),
        "{}",
        plan.stderr
    );

    let w0 = env.scim_writes();
    let run = env.apply().expect(0);
    assert!(
        run.stderr.contains("0 created, 7 updated, 0 deleted"),
        "{}",
        run.stderr
    );
    let w = env.scim_writes();
    assert_eq!(
        (w.post - w0.post, w.delete - w0.delete),
        (0, 0),
        "an update was done as delete + create"
    );
    assert_eq!((w.patch + w.put) - (w0.patch + w0.put), 7);

    let u = |n: &str| env.scim_user_required(n);
    assert_eq!(u("alice@example.com")["displayName"], "Alice A. Archer");
    assert_eq!(u("bob@example.com")["name"]["givenName"], "Robert");
    assert_eq!(u("carol@example.com")["name"]["familyName"], "Clarke");
    assert_eq!(
        primary_email(&u("dave@example.com")).as_deref(),
        Some("dave.new@example.com")
    );
    assert_eq!(u("erin@example.com")["active"], false);
    assert_eq!(u("grace@example.com")["active"], true);
    assert!(env.scim_user("frank@example.com").is_none());
    let franklin = u("franklin@example.com");
    // The rename kept the destination user (its id), so nothing it held is lost.
    assert_eq!(
        franklin["id"].as_str().unwrap(),
        before["frank@example.com"].0
    );
    assert_eq!(franklin["externalId"], json!(immutable_id(&guid(6))));
    assert_eq!(
        u("henry@example.com")["meta"]["version"].as_str().unwrap(),
        before["henry@example.com"].1
    );
    assert!(
        env.managed_user_names()
            .contains(&"franklin@example.com".to_string())
    );

    let w = env.scim_writes();
    env.apply().expect(0);
    assert_eq!(
        env.scim_writes(),
        w,
        "the run after the updates wrote again"
    );
}

#[test]
fn users_removed_from_entra_or_moved_to_another_domain_are_deleted() {
    let mut users = vec![alice(), bob()];
    users.extend(members(10, 6, "example.com"));
    let env = Env::new(users);
    env.apply().expect(0);
    let before = env.scim_versions();

    env.emu.delete_user("alice@example.com");
    env.emu.update_user(
        "bob@example.com",
        &json!({"userPrincipalName": "bob@other.com"}),
    );
    let plan = env.plan().expect(0);
    let rows = plan.rows();
    assert_eq!(
        actions(&rows),
        [
            ("Delete", "alice@example.com"),
            ("Delete", "bob@example.com")
        ]
        .map(|(a, n)| (a.to_string(), n.to_string()))
    );
    // Delete rows show the destination's values.
    assert_eq!(rows[0].display_name, "Alice Archer");
    assert_eq!(rows[0].immutable_id, immutable_id(&guid(1)));
    assert!(
        plan.stderr.contains("2 of 8 managed users"),
        "{}",
        plan.stderr
    );

    let w0 = env.scim_writes();
    env.apply().expect(0);
    let w = env.scim_writes();
    assert_eq!((w.delete - w0.delete, w.total() - w0.total()), (2, 2));
    assert!(
        env.scim_user("alice@example.com").is_none() && env.scim_user("bob@example.com").is_none()
    );
    assert!(
        env.scim_user("bob@other.com").is_none(),
        "the moved user was re-created under its new name"
    );
    let after = env.scim_versions();
    assert_eq!(after.len(), 6);
    for (name, v) in &after {
        assert_eq!(&before[name], v, "{name} was touched");
    }
    assert_eq!(env.state_managed().len(), 6);
    assert!(
        !env.managed_user_names()
            .iter()
            .any(|n| n.starts_with("alice") || n.starts_with("bob"))
    );
}

#[test]
fn upn_mode_disabled_syncs_the_part_before_the_at_sign() {
    let mut env = Env::new(vec![
        alice(),
        bob(),
        member(3, "carol@other.com", "Carol", "Cooper"),
    ]);
    env.set_spec(|s| s.upn_mode = "Disabled");
    let plan = env.plan_stateless().expect(0);
    assert_eq!(
        actions(&plan.rows()),
        [("Add", "alice"), ("Add", "bob")].map(|(a, n)| (a.to_string(), n.to_string()))
    );
    assert_eq!(plan.rows()[0].upn, "alice@example.com");
    env.apply().expect(0);
    let a = env.scim_user_required("alice");
    assert_eq!(a["externalId"], json!(immutable_id(&guid(1))));
    assert_eq!(primary_email(&a).as_deref(), Some("alice@example.com"));
    assert!(env.scim_user("alice@example.com").is_none());

    let w = env.scim_writes();
    env.apply().expect(0);
    assert_eq!(env.scim_writes(), w, "second run wrote");

    env.emu.update_user(
        "alice@example.com",
        &json!({"userPrincipalName": "alicia@example.com"}),
    );
    let plan = env.plan().expect(0);
    assert_eq!(
        actions(&plan.rows()),
        [("Update".to_string(), "alicia".to_string())]
    );
    assert!(
        plan.rows()[0].changes.contains("userName: alice -> alicia"),
        "{}",
        plan.stdout
    );
    env.apply().expect(0);
    assert_eq!(env.scim_user_required("alicia")["id"], a["id"]);
}

#[test]
fn a_pre_existing_destination_user_is_adopted_only_with_adopt_existing() {
    let mut env = Env::new(vec![alice(), bob(), carol()]);
    let pre = env.scim_create(
        json!({"userName": "alice@example.com", "displayName": "Old Alice",
                                     "title": "kept by the destination"}),
    );
    // Same userName, someone else's externalId: always a Conflict.
    let foreign =
        env.scim_create(json!({"userName": "bob@example.com", "externalId": "c29tZW9uZS1lbHNl"}));

    let plan = env.plan().expect(0);
    let rows = plan.rows();
    assert_eq!(
        actions(&rows),
        [
            ("Add", "carol@example.com"),
            ("Conflict", "alice@example.com"),
            ("Conflict", "bob@example.com")
        ]
        .map(|(a, n)| (a.to_string(), n.to_string()))
    );
    assert!(
        rows[1].changes.contains("adoptExisting"),
        "{}",
        rows[1].changes
    );
    assert!(
        rows[2].changes.contains("c29tZW9uZS1lbHNl"),
        "{}",
        rows[2].changes
    );

    let versions = env.scim_versions();
    env.apply().expect(0);
    let now = env.scim_versions();
    assert_eq!(
        now["alice@example.com"], versions["alice@example.com"],
        "conflict applied"
    );
    assert_eq!(
        now["bob@example.com"], versions["bob@example.com"],
        "conflict applied"
    );
    assert!(
        env.scim_user_required("alice@example.com")
            .get("externalId")
            .is_none()
    );
    assert_eq!(env.managed_user_names(), ["carol@example.com"]);

    env.set_spec(|s| s.adopt_existing = true);
    let plan = env.plan().expect(0);
    let rows = plan.rows();
    assert_eq!(
        actions(&rows),
        [
            ("Update", "alice@example.com"),
            ("Conflict", "bob@example.com")
        ]
        .map(|(a, n)| (a.to_string(), n.to_string()))
    );
    let adopt_change = format!("externalId: (none) -> {}", immutable_id(&guid(1)));
    assert!(
        rows[0].changes.contains(&adopt_change),
        "{}",
        rows[0].changes
    );
    assert!(
        rows[0]
            .changes
            .contains("displayName: Old Alice -> Alice Archer"),
        "{}",
        rows[0].changes
    );
    env.apply().expect(0);
    let a = env.scim_user_required("alice@example.com");
    assert_eq!(a["id"], pre["id"], "adoption re-created the user");
    assert_eq!(a["externalId"], json!(immutable_id(&guid(1))));
    assert_eq!(a["displayName"], "Alice Archer");
    assert_eq!(
        a["title"], "kept by the destination",
        "an attribute dirsync does not manage was lost"
    );
    assert_eq!(
        env.scim_user_required("bob@example.com")["meta"]["version"],
        foreign["meta"]["version"]
    );
    assert_eq!(
        env.managed_user_names(),
        ["alice@example.com", "carol@example.com"]
    );
}

#[test]
fn hand_made_and_protected_destination_users_are_never_touched() {
    let mut env = Env::new(vec![alice(), bob(), carol(), dave()]);
    // The service's initial administrator, made by hand, in the domain's scope.
    let admin =
        env.scim_create(json!({"userName": "admin@example.com", "displayName": "Administrator"}));
    // A hand-made user outside the scope.
    let root = env.scim_create(json!({"userName": "root", "displayName": "Root"}));
    // A source user pre-existing in the destination, but protected.
    let carol_pre =
        env.scim_create(json!({"userName": "carol@example.com", "displayName": "Carol (by hand)"}));
    env.set_spec(|s| {
        s.adopt_existing = true;
        s.protected_user_names = vec!["carol@example.com".into(), "DAVE@example.com".into()];
    });

    let plan = env.plan().expect(0);
    let rows = plan.rows();
    assert_eq!(
        actions(&rows),
        [
            ("Add", "alice@example.com"),
            ("Add", "bob@example.com"),
            ("Conflict", "carol@example.com"),
            ("Conflict", "dave@example.com"),
            ("Unmanaged", "admin@example.com"),
        ]
        .map(|(a, n)| (a.to_string(), n.to_string()))
    );
    assert!(
        rows[2].changes.contains("protectedUserNames")
            && rows[3].changes.contains("protectedUserNames")
    );
    assert_eq!(rows[4].display_name, "Administrator");
    // Unmanaged users are not counted by the guard.
    assert!(plan.stderr.contains("0 of 0 managed"), "{}", plan.stderr);

    env.apply().expect(0);
    assert!(
        env.scim_user("dave@example.com").is_none(),
        "a protected name was created"
    );
    env.emu.delete_user("alice@example.com");
    env.set_spec(|s| s.max_allowed_deletions = 100);
    env.apply().expect(0);
    assert!(env.scim_user("alice@example.com").is_none());

    let versions = env.scim_versions();
    for (name, pre) in [
        ("admin@example.com", &admin),
        ("root", &root),
        ("carol@example.com", &carol_pre),
    ] {
        assert_eq!(
            versions[name].1,
            pre["meta"]["version"].as_str().unwrap(),
            "{name} was modified"
        );
    }
    assert_eq!(
        env.scim_user_required("carol@example.com")["displayName"],
        "Carol (by hand)"
    );
    assert_eq!(env.managed_user_names(), ["bob@example.com"]);
}

#[test]
fn the_guard_cancels_the_whole_run_before_any_write() {
    let mut env = Env::new(members(1, 10, "example.com"));
    env.apply().expect(0);
    for n in 1..=7 {
        env.emu.delete_user(&format!("user{n:03}@example.com"));
    }
    env.emu
        .add_user(&member(50, "alice@example.com", "Alice", "Archer"));
    env.emu
        .update_user("user008@example.com", &json!({"displayName": "Changed"}));
    env.set_spec(|s| s.max_allowed_deletions = 70);
    let (writes, versions, state) = (
        env.scim_writes(),
        env.scim_versions(),
        std::fs::read(env.state_path()).unwrap(),
    );

    // A dry run is never cancelled, but says that applying would be.
    let plan = env.plan().expect(0);
    assert_eq!(
        plan.rows().iter().filter(|r| r.action == "Delete").count(),
        7
    );
    assert!(plan.stderr.contains("TRIPPED"), "{}", plan.stderr);

    let run = env.apply().expect(3);
    let msg = "Synchronization was canceled because the deletion percentage reached the threshold: 7 of 10 managed users (70 %) would be deleted or deactivated; maxAllowedDeletions is 70 %.";
    assert!(run.stderr.contains(msg), "{}", run.stderr);
    assert_eq!(
        run.stderr.lines().last().unwrap().matches("error:").count(),
        1,
        "{}",
        run.stderr
    );
    assert_eq!(
        env.scim_writes(),
        writes,
        "the cancelled run wrote (not even the Add or the Update may go)"
    );
    assert_eq!(env.scim_versions(), versions);
    assert_eq!(
        std::fs::read(env.state_path()).unwrap(),
        state,
        "the cancelled run changed the state file"
    );

    // 7 of 10 is under 71 %: the run goes through, all of it.
    env.set_spec(|s| s.max_allowed_deletions = 71);
    let run = env.apply().expect(0);
    assert!(
        run.stderr.contains("1 created, 1 updated, 7 deleted"),
        "{}",
        run.stderr
    );
    assert_eq!(env.scim_users().len(), 4);
}

#[test]
fn an_empty_source_read_counts_as_deleting_everyone() {
    let mut env = Env::new(members(1, 5, "example.com"));
    env.apply().expect(0);
    for n in 1..=5 {
        env.emu.delete_user(&format!("user{n:03}@example.com"));
    }
    // 100 still cancels deleting everyone.
    env.set_spec(|s| s.max_allowed_deletions = 100);
    let writes = env.scim_writes();
    let plan = env.plan().expect(0);
    assert_eq!(
        plan.rows().iter().filter(|r| r.action == "Delete").count(),
        5
    );
    let run = env.apply().expect(3);
    assert!(
        run.stderr.contains("5 of 5 managed users (100 %)"),
        "{}",
        run.stderr
    );
    assert_eq!(env.scim_writes(), writes);
    assert_eq!(env.scim_users().len(), 5);
    assert_eq!(env.state_managed().len(), 5);
}

#[test]
fn deactivations_count_for_the_guard_and_deletion_policy_deactivate_keeps_users() {
    let mut env = Env::new(members(1, 10, "example.com"));
    env.apply().expect(0);

    // Delete policy: disabling 3 of 10 is 30 % — cancelled at maxAllowedDeletions 30.
    for n in 1..=3 {
        env.emu.update_user(
            &format!("user{n:03}@example.com"),
            &json!({"accountEnabled": false}),
        );
    }
    env.set_spec(|s| s.max_allowed_deletions = 30);
    let w = env.scim_writes();
    let run = env.apply().expect(3);
    assert!(
        run.stderr.contains("3 of 10 managed users (30 %)"),
        "{}",
        run.stderr
    );
    assert_eq!(env.scim_writes(), w);

    // Deactivate policy: 1 disabled + 2 removed = 3 deactivations, still 30 %.
    for n in 2..=3 {
        env.emu.update_user(
            &format!("user{n:03}@example.com"),
            &json!({"accountEnabled": true}),
        );
    }
    env.emu.delete_user("user002@example.com");
    env.emu.update_user(
        "user003@example.com",
        &json!({"userPrincipalName": "user003@other.com"}),
    );
    env.set_spec(|s| s.deletion_policy = "Deactivate");
    let plan = env.plan().expect(0);
    let rows = plan.rows();
    assert_eq!(
        rows.iter().filter(|r| r.action == "Delete").count(),
        0,
        "{}",
        plan.stdout
    );
    let deactivations: Vec<&Row> = rows
        .iter()
        .filter(|r| r.changes.contains("active: true -> false"))
        .collect();
    assert_eq!(deactivations.len(), 3, "{}", plan.stdout);
    let run = env.apply().expect(3);
    assert!(
        run.stderr.contains("3 of 10 managed users (30 %)"),
        "{}",
        run.stderr
    );
    assert_eq!(env.scim_writes(), w);

    env.set_spec(|s| s.max_allowed_deletions = 31);
    let run = env.apply().expect(0);
    assert!(
        run.stderr.contains("0 created, 3 updated, 0 deleted"),
        "{}",
        run.stderr
    );
    assert_eq!(env.scim_users().len(), 10, "Deactivate deleted users");
    for n in 1..=3 {
        assert_eq!(
            env.scim_user_required(&format!("user{n:03}@example.com"))["active"],
            false
        );
    }
    assert_eq!(env.state_managed().len(), 10);
    let w = env.scim_writes();
    env.apply().expect(0);
    assert_eq!(env.scim_writes(), w, "deactivated users were written again");
}

#[test]
fn no_source_users_and_domain_not_found() {
    let mut env = Env::new(vec![alice()]);
    env.set_spec(|s| s.domain = "empty.example".into());
    let plan = env.plan().expect(0);
    assert!(plan.rows().is_empty());
    assert!(plan.stderr.contains("NoSourceUsers"), "{}", plan.stderr);
    let run = env.apply().expect(0);
    assert!(run.stderr.contains("NoSourceUsers"), "{}", run.stderr);
    assert_eq!(env.scim_writes().total(), 0);

    env.set_spec(|s| s.domain = "missing.example".into());
    std::fs::remove_file(env.state_path()).ok();
    let run = env.plan().expect(1);
    assert!(run.stderr.contains("DomainNotFound"), "{}", run.stderr);
    assert_eq!(
        run.stderr
            .trim()
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1,
        "{}",
        run.stderr
    );
}

/// Starts `dirsync apply` with the Graph read slowed down, and runs `meanwhile` once dirsync has
/// listed the SCIM users — i.e. between planning and applying.
fn apply_with_a_change_between_plan_and_apply(env: &Env, meanwhile: impl FnOnce()) -> Run {
    env.emu
        .add_fault(&json!({"kind": "delay", "endpoint": "users", "delayMs": 2500, "count": 1}));
    let lists = env.scim_list_requests();
    // `--full`: the pause is in the Graph listing, which an incremental apply does not read.
    let args = env.args(
        "apply",
        &["--state", &env.state_path().display().to_string(), "--full"],
    );
    let dir = env.dir.path().to_path_buf();
    let handle = std::thread::spawn(move || run_dirsync(&args, &dir));
    assert!(
        wait_until(Duration::from_secs(20), || env.scim_list_requests() > lists),
        "dirsync never listed the SCIM users"
    );
    meanwhile();
    let run = handle.join().unwrap();
    assert_no_secrets(&run.stdout, "stdout");
    assert_no_secrets(&run.stderr, "stderr");
    run
}

#[test]
fn a_409_on_create_is_re_planned_not_failed() {
    let env = Env::new(vec![alice(), bob(), carol()]);
    let mut carol_id = String::new();
    let run = apply_with_a_change_between_plan_and_apply(&env, || {
        // Someone (an earlier, crashed run) created carol with our Immutable ID; and someone
        // made bob by hand.
        carol_id = env.scim_create(
            json!({"userName": "carol@example.com", "externalId": immutable_id(&guid(3)),
                                "displayName": "Carol (stale)"}),
        )["id"]
            .as_str()
            .unwrap()
            .to_string();
        env.scim_create(json!({"userName": "bob@example.com", "displayName": "Bob (by hand)"}));
    });
    let run = run.expect(0);
    assert!(
        run.stderr
            .contains("re-planned after 409 on create: carol@example.com -> Update"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("re-planned after 409 on create: bob@example.com -> Conflict"),
        "{}",
        run.stderr
    );
    let c = env.scim_user_required("carol@example.com");
    assert_eq!(c["id"].as_str().unwrap(), carol_id, "carol was re-created");
    assert_eq!(c["displayName"], "Carol Cooper");
    assert_eq!(
        env.scim_user_required("bob@example.com")["displayName"],
        "Bob (by hand)"
    );
    assert_eq!(
        env.managed_user_names(),
        ["alice@example.com", "carol@example.com"]
    );
}

#[test]
fn a_user_whose_external_id_changed_after_planning_fails_alone() {
    let env = Env::new(vec![alice(), bob(), carol()]);
    env.apply().expect(0);
    env.emu
        .update_user("alice@example.com", &json!({"displayName": "Alice New"}));
    env.emu
        .update_user("bob@example.com", &json!({"displayName": "Bob New"}));
    env.emu.add_user(&dave());
    let alice_id = env.scim_user_required("alice@example.com")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = apply_with_a_change_between_plan_and_apply(&env, || {
        env.scim_patch(
            &alice_id,
            json!([{"op": "replace", "path": "externalId", "value": "dGFrZW4tb3Zlcg=="}]),
        );
    });
    let run = run.expect(4);
    assert!(
        run.stderr.contains("FAILED Update alice@example.com"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("PartiallyFailed"), "{}", run.stderr);
    let a = env.scim_user_required("alice@example.com");
    assert_eq!(
        (a["displayName"].as_str(), a["externalId"].as_str()),
        (Some("Alice Archer"), Some("dGFrZW4tb3Zlcg=="))
    );
    // The others were written.
    assert_eq!(
        env.scim_user_required("bob@example.com")["displayName"],
        "Bob New"
    );
    assert!(env.scim_user("dave@example.com").is_some());
}

#[test]
fn the_state_file_is_private_replaced_atomically_and_bound_to_its_resource() {
    use std::os::unix::fs::MetadataExt as _;
    let mut env = Env::new(vec![alice(), bob()]);
    env.apply().expect(0);
    let state = env.state_path();
    assert_eq!(mode(&state), 0o600);
    let ino = std::fs::metadata(&state).unwrap().ino();
    // Loosen the mode by hand: the next write must make a fresh 0600 file (rename over it).
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    env.emu.add_user(&carol());
    env.apply().expect(0);
    assert_eq!(mode(&state), 0o600);
    assert_ne!(
        std::fs::metadata(&state).unwrap().ino(),
        ino,
        "the state file was rewritten in place"
    );
    let mut names: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["directorysync.yaml", "secrets.yaml", "state.json"],
        "temporary files left behind"
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(
        doc["resource"],
        json!({"namespace": "identity", "name": "example-com", "domain": "example.com"})
    );
    assert_eq!(env.state_managed().len(), 3);

    // Another resource's state file is refused, and left as it is.
    let before = std::fs::read(&state).unwrap();
    env.set_spec(|s| s.name = "another".into());
    let w = env.scim_writes();
    for run in [env.plan(), env.apply()] {
        let run = run.expect(1);
        assert!(run.stderr.contains("belongs to"), "{}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    }
    assert_eq!(std::fs::read(&state).unwrap(), before);
    assert_eq!(env.scim_writes(), w);
}

#[test]
fn client_certificate_credentials_work_and_an_unknown_certificate_is_refused() {
    let fixture_key = |file: &str| {
        let pem = std::fs::read_to_string(format!(
            "{}/tests/fixtures/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let start = pem.find("-----BEGIN PRIVATE KEY-----").unwrap();
        pem[start..].to_string()
    };
    // Fresh self-signed RSA certificates made here with rcgen (RSA keys from the fixtures:
    // rcgen's ring backend signs with RSA but cannot generate RSA keys).
    let make_cert = |key_pem: &str, cn: &str| {
        let key = rcgen::KeyPair::from_pem_and_sign_algo(key_pem, &rcgen::PKCS_RSA_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), format!("{}{}", cert.pem(), key.serialize_pem()))
    };
    let (registered_cert, registered_bundle) =
        make_cert(&fixture_key("client-cert-pkcs8.pem"), "dirsync-cli-test");
    let (_, unknown_bundle) = make_cert(
        &fixture_key("client-cert-mismatched.pem"),
        "dirsync-cli-unknown",
    );

    let spec = Spec {
        credential: Credential::Certificate(registered_bundle),
        ..Spec::default()
    };
    let mut env = Env::with(tenant(vec![alice(), bob()], &[&registered_cert]), &[], spec);
    env.apply().expect(0);
    assert_eq!(env.scim_users().len(), 2);
    let tokens = env.emu.requests(2000);
    assert!(
        tokens["recent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["endpoint"] == "token" && r["status"] == 200),
        "{tokens}"
    );

    env.set_spec(|s| s.credential = Credential::Certificate(unknown_bundle));
    let run = env.plan().expect(1);
    assert!(run.stderr.contains("InvalidCredentials"), "{}", run.stderr);
    assert!(!run.stderr.contains("PRIVATE KEY"), "{}", run.stderr);
}

#[test]
fn refused_credentials_end_with_one_clear_line_and_never_show_a_secret() {
    let mut env = Env::new(vec![alice()]);
    // A wrong client secret (itself a canary value).
    let wrong_secret = "canary-wrong-secret-Vb8Tn1";
    env.set_spec(|s| s.credential = Credential::Secret(wrong_secret.into()));
    for run in [env.plan(), env.apply()] {
        let run = run.expect(1);
        assert!(
            run.stderr.contains("InvalidCredentials: Entra ID refused"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("AADSTS"), "{}", run.stderr);
        assert!(
            !run.stderr.contains(wrong_secret) && !run.stdout.contains(wrong_secret),
            "{}",
            run.stderr
        );
        assert_eq!(
            run.stderr
                .lines()
                .filter(|l| l.starts_with("error:"))
                .count(),
            1,
            "{}",
            run.stderr
        );
    }

    // A wrong SCIM token.
    let wrong_token = "canary-wrong-token-Jx5Rc0";
    env.set_spec(|s| {
        s.credential = Credential::Secret(CLIENT_SECRET.into());
        s.scim_token = wrong_token.into();
    });
    for run in [env.plan(), env.apply()] {
        let run = run.expect(1);
        assert!(
            run.stderr
                .contains("InvalidCredentials: the SCIM destination refused"),
            "{}",
            run.stderr
        );
        assert!(
            !run.stderr.contains(wrong_token) && !run.stdout.contains(wrong_token),
            "{}",
            run.stderr
        );
    }
    assert_eq!(env.scim_writes().total(), 0);
    assert!(
        !env.state_path().exists()
            || !std::fs::read_to_string(env.state_path())
                .unwrap()
                .contains(wrong_token)
    );
}
