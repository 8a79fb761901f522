//! The other direction end to end (docs/behaviour.md §6): the real scim2-server as the source,
//! the Graph emulator as the destination, the real `dirsync` binary in between.
//!
//! What a user of this direction depends on: the exact preview; an apply, then a second apply
//! that makes no Graph write; hand-made Entra users (an administrator in a directory role, a
//! protected break-glass account, an AD-synced user, a guest, a user of another domain) never
//! touched; the guard; a soft delete and a restore of the same object; `kill -9` mid-apply and a
//! rerun that leaves every user exactly once; throttled writes that still complete.

#[path = "cli_common/mod.rs"]
mod cli_common;

use std::time::{Duration, Instant};

use cli_common::*;
use serde_json::{Value, json};

const ADMIN_ID: &str = "a0000000-0000-4000-8000-000000000001";
const BREAKGLASS_ID: &str = "a0000000-0000-4000-8000-000000000002";
const ADSYNC_ID: &str = "a0000000-0000-4000-8000-000000000003";
const GUEST_ID: &str = "a0000000-0000-4000-8000-000000000004";
const OTHER_ID: &str = "a0000000-0000-4000-8000-000000000005";

/// The tenant: an app allowed to write users, and the hand-made users dirsync must never touch.
fn tenant_fixture() -> Value {
    let hand_made = |id: &str, upn: &str| {
        json!({
            "id": id, "userPrincipalName": upn, "displayName": upn, "accountEnabled": true,
            "userType": "Member", "mail": upn,
        })
    };
    let mut adsync = hand_made(ADSYNC_ID, "adsync@example.com");
    adsync["onPremisesSyncEnabled"] = json!(true);
    adsync["onPremisesImmutableId"] = json!("QURzeW5jZWQ=");
    let mut guest = hand_made(GUEST_ID, "guest1@example.com");
    guest["userType"] = json!("Guest");
    json!({
        "tenantId": TENANT_ID,
        "displayName": "Contoso (reverse tests)",
        "initialDomain": "contosotests.onmicrosoft.com",
        "domains": [{"id": "example.com"}, {"id": "other.com"}],
        "applications": [{
            "clientId": CLIENT_ID,
            "clientSecret": CLIENT_SECRET,
            "roles": ["User.Read.All", "User.ReadWrite.All", "Domain.Read.All"],
        }],
        "users": [
            hand_made(ADMIN_ID, "admin@example.com"),
            hand_made(BREAKGLASS_ID, "breakglass@example.com"),
            adsync,
            guest,
            hand_made(OTHER_ID, "someone@other.com"),
        ],
        "directoryRoles": [{"displayName": "Global Administrator", "members": [ADMIN_ID]}],
    })
}

/// Knobs of the reverse resource the tests vary.
struct Reverse {
    max_allowed_deletions: u8,
    adopt_existing: bool,
}

impl Default for Reverse {
    fn default() -> Self {
        Reverse {
            max_allowed_deletions: 50,
            adopt_existing: false,
        }
    }
}

/// An emulator + scim2-server pair with the reverse resource written over the forward one.
fn reverse_env(emulator_args: &[&str], r: &Reverse) -> Env {
    let env = Env::with(tenant_fixture(), emulator_args, Spec::default());
    write_reverse(&env, r);
    env
}

fn write_reverse(env: &Env, r: &Reverse) {
    let yaml = format!(
        "apiVersion: dirsync.io/v1alpha1\n\
         kind: DirectorySync\n\
         metadata:\n  name: example-com\n  namespace: identity\n\
         spec:\n  domain: example.com\n  upnMode: Disabled\n  maxAllowedDeletions: {max}\n  mode: Once\n\
         \x20 adoptExisting: {adopt}\n  protectedUserNames: [breakglass@example.com]\n\
         \x20 source:\n    scim:\n      endpoint: {scim}\n      bearerTokenRef: {{ name: access-control-scim, key: token }}\n\
         \x20 destination:\n    entraID:\n      tenantID: {TENANT_ID}\n      clientID: {CLIENT_ID}\n\
         \x20     clientSecretRef: {{ name: entra-app, key: client-secret }}\n\
         \x20     authorityHost: {base}\n      graphEndpoint: {base}\n",
        max = r.max_allowed_deletions,
        adopt = r.adopt_existing,
        scim = env.scim.base_url(),
        base = env.emu.base_url(),
    );
    std::fs::write(env.resource_path(), yaml).unwrap();
}

/// A SCIM source user; `external_id` becomes the Immutable ID when given.
fn scim(user_name: &str, given: &str, family: &str, external_id: Option<&str>) -> Value {
    let mut u = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "name": {"givenName": given, "familyName": family},
        "displayName": format!("{given} {family}"),
        "active": true,
    });
    if let Some(e) = external_id {
        u["externalId"] = json!(e);
    }
    u
}

/// The Immutable ID docs/behaviour.md §6 derives from a SCIM id without externalId (computed
/// here independently): a GUID gives base64 of its bytes in .NET order, anything else base64
/// of its UTF-8 bytes.
fn derived_immutable_id(scim_id: &str) -> String {
    use base64::Engine as _;
    let hex: String = scim_id.chars().filter(|c| *c != '-').collect();
    if hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        immutable_id(scim_id)
    } else {
        base64::engine::general_purpose::STANDARD.encode(scim_id.as_bytes())
    }
}

/// Graph writes the emulator counted as done, and all counters.
fn graph_writes(env: &Env) -> (u64, Value) {
    let c = env.emu.requests(0);
    (c["writes"]["succeeded"].as_u64().unwrap_or(0), c)
}

fn tenant_user_count(env: &Env) -> u64 {
    let v = env.emu.control("GET", "/tenants", None).expect("tenants").1;
    let t = &v["tenants"][0];
    t["users"]
        .as_u64()
        .or_else(|| t["userCount"].as_u64())
        .or_else(|| t["users"]["total"].as_u64())
        .unwrap_or_else(|| panic!("no user count in {v}"))
}

/// The hand-made users as the emulator stores them, to compare before and after.
fn hand_made_users(env: &Env) -> Vec<Value> {
    [ADMIN_ID, BREAKGLASS_ID, ADSYNC_ID, GUEST_ID, OTHER_ID]
        .iter()
        .map(|id| env.emu.user(id))
        .collect()
}

#[test]
fn preview_apply_and_a_second_apply_that_writes_nothing() {
    let env = reverse_env(&[], &Reverse::default());
    env.scim_create(scim("alice", "Alice", "Liddell", Some("YWxpY2U=")));
    let bob = env.scim_create(scim("bob", "Bob", "Builder", None));
    for (name, given, family) in [
        ("dave smith", "Dave", "Smith"),
        ("admin", "Ada", "Admin"),
        ("breakglass", "Break", "Glass"),
        ("adsync", "Ad", "Sync"),
        ("guest1", "Gus", "Guest"),
        ("erin@elsewhere.org", "Erin", "Else"),
    ] {
        env.scim_create(scim(name, given, family, None));
    }
    // As a preview cell: a leading = + - @ is neutralised with ' (docs/behaviour.md §4).
    let cell = |v: String| {
        if v.starts_with(['=', '+', '-', '@']) {
            format!("'{v}")
        } else {
            v
        }
    };
    let derived = |user_name: &str| {
        let id = env.scim_user_required(user_name)["id"]
            .as_str()
            .unwrap()
            .to_string();
        cell(derived_immutable_id(&id))
    };
    let before = hand_made_users(&env);

    let plan = env.plan().expect(0);
    let bob_imm = derived_immutable_id(bob["id"].as_str().unwrap());
    let expected = format!(
        "\u{feff}{HEADER}\r\n\
         Add,alice,alice@example.com,Alice Liddell,Alice,Liddell,,true,\"note: random password, never shown\",YWxpY2U=\r\n\
         Add,bob,bob@example.com,Bob Builder,Bob,Builder,,true,\"note: random password, never shown\",{bob_cell}\r\n\
         Conflict,admin,admin@example.com,Ada Admin,Ada,Admin,,true,a destination user with this userName exists without externalId; set adoptExisting: true to take it over,{admin}\r\n\
         Conflict,adsync,adsync@example.com,Ad Sync,Ad,Sync,,true,userName is taken by another destination user (externalId QURzeW5jZWQ=),{adsync}\r\n\
         Conflict,breakglass,breakglass@example.com,Break Glass,Break,Glass,,true,\"userName is in protectedUserNames; never adopted, updated or deleted\",{breakglass}\r\n\
         Conflict,dave smith,dave smith@example.com,Dave Smith,Dave,Smith,,true,\"userPrincipalName \"\"dave smith@example.com\"\" would be refused by Entra ID: its local part may hold only letters A-Z, digits and ' . - _ ! # ^ ~ (no spaces, no other characters); not written\",{dave}\r\n\
         Conflict,guest1,guest1@example.com,Gus Guest,Gus,Guest,,true,the destination user with this userPrincipalName is a guest; guests are never changed,{guest}\r\n",
        bob_cell = cell(bob_imm.clone()),
        admin = derived("admin"),
        adsync = derived("adsync"),
        breakglass = derived("breakglass"),
        dave = derived("dave smith"),
        guest = derived("guest1"),
    );
    assert_eq!(plan.stdout, expected, "stderr:\n{}", plan.stderr);
    assert_eq!(graph_writes(&env).0, 0, "a plan writes nothing");

    let users_before = tenant_user_count(&env);
    let run = env.apply().expect(0);
    assert!(run.stderr.contains("2 created"), "{}", run.stderr);
    let (writes, counters) = graph_writes(&env);
    assert_eq!(writes, 2, "{counters}");
    assert_eq!(tenant_user_count(&env), users_before + 2);
    let alice = env.emu.user("alice@example.com");
    assert_eq!(alice["onPremisesImmutableId"], "YWxpY2U=");
    assert_eq!(alice["displayName"], "Alice Liddell");
    assert_eq!(alice["givenName"], "Alice");
    assert_eq!(alice["surname"], "Liddell");
    assert_eq!(alice["mailNickname"], "alice");
    assert_eq!(alice["accountEnabled"], true);
    assert_eq!(
        env.emu.user("bob@example.com")["onPremisesImmutableId"],
        json!(bob_imm)
    );
    assert_eq!(hand_made_users(&env), before, "hand-made users untouched");
    assert_eq!(env.state_managed().len(), 2);

    // A second apply: nothing to write, and nothing written.
    let run = env.apply().expect(0);
    assert!(run.stderr.contains("0 created"), "{}", run.stderr);
    let (writes_after, counters) = graph_writes(&env);
    assert_eq!(writes_after, writes, "no Graph write: {counters}");
    assert_eq!(hand_made_users(&env), before);

    // adoptExisting: the administrator is adopted in the plan, and Entra ID's 403 on the
    // write is a Conflict row ("privileged user"), not a failed run; others stay untouched.
    write_reverse(
        &env,
        &Reverse {
            adopt_existing: true,
            ..Reverse::default()
        },
    );
    let plan = env.plan().expect(0);
    let admin_row = plan
        .rows()
        .into_iter()
        .find(|r| r.user_name == "admin")
        .expect("admin row");
    assert_eq!(admin_row.action, "Update", "{admin_row:?}");
    let run = env.apply().expect(0);
    assert!(
        run.stderr.contains("admin@example.com -> Conflict")
            && run.stderr.contains("privileged user"),
        "{}",
        run.stderr
    );
    assert_eq!(
        hand_made_users(&env),
        before,
        "the administrator is untouched"
    );
}

#[test]
fn the_guard_cancels_with_exit_3_and_no_write_and_deletes_are_soft_and_restorable() {
    let env = reverse_env(&[], &Reverse::default());
    let mut ids = Vec::new();
    for n in 1..=5 {
        let ext = format!("dXNlcj{n}=");
        let u = env.scim_create(scim(
            &format!("user{n}"),
            "User",
            &format!("N{n}"),
            Some(&ext),
        ));
        ids.push(u["id"].as_str().unwrap().to_string());
    }
    env.apply().expect(0);
    let (writes, _) = graph_writes(&env);
    assert_eq!(writes, 5);
    let user3 = env.emu.user("user3@example.com");
    let user3_id = user3["id"].as_str().unwrap().to_string();

    // Three of five leave the source: 60 % ≥ 50 %, so the run is cancelled, nothing written.
    for id in &ids[..3] {
        env.scim_delete(id);
    }
    let run = env.apply().expect(3);
    assert!(run.stderr.contains("--approved-preview"), "{}", run.stderr);
    assert_eq!(graph_writes(&env).0, writes, "the guard writes nothing");
    assert_eq!(
        env.emu.user(&user3_id)["userPrincipalName"],
        "user3@example.com"
    );

    // Only user3 leaves: a soft delete (the object waits in deleted items).
    for n in [1, 2] {
        env.scim_create(scim(
            &format!("user{n}"),
            "User",
            &format!("N{n}"),
            Some(&format!("dXNlcj{n}=")),
        ));
    }
    let before = env.emu.requests(0);
    let run = env.apply().expect(0);
    assert!(run.stderr.contains("1 deleted"), "{}", run.stderr);
    // The delete went through `$batch` (the guarded read, then the DELETE), never alone.
    let after = env.emu.requests(0);
    let count = |c: &Value, path: &str| c.pointer(path).and_then(Value::as_u64).unwrap_or(0);
    assert_eq!(
        count(&after, "/byEndpoint/batch") - count(&before, "/byEndpoint/batch"),
        2,
        "{after}"
    );
    assert_eq!(
        count(&after, "/byEndpoint/userWrite"),
        count(&before, "/byEndpoint/userWrite"),
        "{after}"
    );
    let (status, _) = env
        .emu
        .control("GET", &format!("/users/{user3_id}"), None)
        .expect("control");
    assert_ne!(status, 200, "user3 is no longer live");

    // user3 returns (a new SCIM object, the same externalId): a Restore row, then the same
    // Entra object is back, updated.
    env.scim_create(scim("user3", "User", "Returned", Some("dXNlcj3=")));
    let plan = env.plan().expect(0);
    // The hand-made users of the domain are shown as Unmanaged (never written).
    let rows: Vec<Row> = plan
        .rows()
        .into_iter()
        .filter(|r| r.action != "Unmanaged")
        .collect();
    assert_eq!(
        actions(&rows),
        vec![("Restore".to_string(), "user3".to_string())],
        "{}",
        plan.stdout
    );
    assert_eq!(
        rows[0].changes,
        format!(
            "restore soft-deleted user {user3_id}; displayName: User N3 -> User Returned; surname: N3 -> Returned"
        ),
    );
    let run = env.apply().expect(0);
    assert!(run.stderr.contains("1 restored"), "{}", run.stderr);
    let back = env.emu.user("user3@example.com");
    assert_eq!(back["id"], json!(user3_id), "the same object");
    assert_eq!(back["surname"], "Returned");
    let run = env.plan().expect(0);
    assert!(
        run.rows()
            .iter()
            .all(|r| r.action == "Conflict" || r.action == "Unmanaged"),
        "{}",
        run.stdout
    );
}

/// Users `bulkNNN` with externalIds, created in the SCIM source.
fn bulk(env: &Env, n: u32) {
    for i in 0..n {
        env.scim_create(scim(
            &format!("bulk{i:03}"),
            "Bulk",
            &format!("N{i}"),
            Some(&format!("YnVsa{i:03}")),
        ));
    }
}

/// Every bulk user exists once in Entra ID with its Immutable ID, the state records each once,
/// and a fresh plan has no write.
fn assert_each_exactly_once(env: &Env, n: u32) {
    for i in 0..n {
        let u = env.emu.user(&format!("bulk{i:03}@example.com"));
        assert_eq!(u["onPremisesImmutableId"], json!(format!("YnVsa{i:03}")));
    }
    let managed = env.state_managed();
    assert_eq!(managed.len(), n as usize, "{managed:?}");
    let plan = env.plan().expect(0);
    assert!(
        plan.rows()
            .iter()
            .all(|r| r.action != "Add" && r.action != "Update" && r.action != "Delete"),
        "{}",
        plan.stdout
    );
}

#[test]
fn kill_9_mid_apply_then_a_rerun_leaves_every_user_exactly_once() {
    // 10 writes per second at most: the apply takes ~12 s, long enough to kill it midway.
    let env = reverse_env(
        &["--write-limit", "20", "--write-window", "2"],
        &Reverse::default(),
    );
    const N: u32 = 120;
    bulk(&env, N);
    let users_before = tenant_user_count(&env);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(env.args(
            "apply",
            &["--state", &env.state_path().display().to_string()],
        ))
        .current_dir(env.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while graph_writes(&env).0 < 30 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the apply made no progress"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let written = graph_writes(&env).0;
    assert!(
        written < u64::from(N),
        "killed before the end ({written} writes)"
    );

    let run = env.apply().expect(0);
    assert!(run.stderr.contains("created"), "{}", run.stderr);
    assert_eq!(
        tenant_user_count(&env),
        users_before + u64::from(N),
        "no duplicates"
    );
    assert_each_exactly_once(&env, N);
}

#[test]
fn throttled_writes_complete() {
    // The emulator allows 10 writes per second; dirsync's own pacing allows 18: Graph answers
    // 429 with Retry-After, and every write still lands.
    let env = reverse_env(
        &["--write-limit", "10", "--write-window", "1"],
        &Reverse::default(),
    );
    const N: u32 = 60;
    bulk(&env, N);
    let run = env.apply().expect(0);
    assert!(
        run.stderr.contains(&format!("{N} created")),
        "{}",
        run.stderr
    );
    let (_, counters) = graph_writes(&env);
    assert!(
        counters["writes"]["throttled"].as_u64().unwrap_or(0) > 0,
        "the limit was met: {counters}"
    );
    assert_each_exactly_once(&env, N);
}
