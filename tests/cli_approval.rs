//! `dirsync apply --approved-preview` end to end (docs/behaviour.md §9): the real binary against
//! the Graph emulator and scim2-server. Only rows identical in the reviewed CSV and the fresh plan
//! are applied; `spec.approval` makes a plain apply wait; approving a guard trip applies exactly
//! its deletions.

mod cli_common;

use cli_common::*;
use serde_json::json;

fn four() -> Vec<serde_json::Value> {
    vec![
        member(1, "alice@example.com", "Alice", "Archer"),
        member(2, "bob@example.com", "Bob", "Baker"),
        member(3, "carol@example.com", "Carol", "Cooper"),
        member(4, "dave@example.com", "Dave", "Dunn"),
    ]
}

fn plan_to(env: &Env, file: &std::path::Path) -> Run {
    let state = env.state_path().display().to_string();
    let out = file.display().to_string();
    env.dirsync(&env.args("plan", &["--state", &state, "--out", &out]))
        .expect(0)
}

fn apply_approved(env: &Env, file: &std::path::Path) -> Run {
    let state = env.state_path().display().to_string();
    let approved = file.display().to_string();
    env.dirsync(&env.args(
        "apply",
        &["--state", &state, "--approved-preview", &approved],
    ))
}

fn sorted_user_names(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = env
        .scim_users()
        .iter()
        .map(|u| u["userName"].as_str().unwrap_or_default().to_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_reviewed_csv_is_applied_row_for_row_and_nothing_else() {
    let mut env = Env::new(four());
    env.set_spec(|s| s.approval = "Always");

    // spec.approval: Always, no approved preview: nothing is written, exit 5.
    let waiting = env.apply().expect(5);
    assert!(
        waiting.stderr.contains("AwaitingApproval")
            && waiting.stderr.contains("--approved-preview"),
        "{}",
        waiting.stderr
    );
    assert_eq!(env.scim_writes().total(), 0);

    // The review: the CSV as dirsync plan writes it.
    let reviewed = env.dir.path().join("reviewed.csv");
    plan_to(&env, &reviewed);
    let text = std::fs::read_to_string(&reviewed).unwrap();
    assert_eq!(
        actions(&rows(&text)),
        ["alice", "bob", "carol", "dave"].map(|n| ("Add".to_string(), format!("{n}@example.com")))
    );
    // A row edited by hand: carol's display name.
    let edited = text.replace("Carol Cooper", "Carol Hacker");
    assert_ne!(edited, text);
    std::fs::write(&reviewed, &edited).unwrap();
    // After the review, dave changes in the source (his row is stale) and erin arrives.
    env.emu
        .update_user("dave@example.com", &json!({"givenName": "David"}));
    env.emu
        .add_user(&member(5, "erin@example.com", "Erin", "Evans"));

    let run = apply_approved(&env, &reviewed).expect(0);
    assert!(
        run.stderr
            .contains("2 rows to apply, 2 stale (skipped), 3 not approved (not applied)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("approved preview: 2 rows applied, 2 stale, 3 not approved"),
        "{}",
        run.stderr
    );
    assert_eq!(
        sorted_user_names(&env),
        ["alice@example.com", "bob@example.com"]
    );
    let w = env.scim_writes();
    assert_eq!(
        (w.post, w.total()),
        (2, 2),
        "exactly the two approved creates"
    );
    // Each created user is the reviewed row, cell for cell.
    for row in rows(&edited)
        .iter()
        .filter(|r| r.user_name.starts_with("alice") || r.user_name.starts_with("bob"))
    {
        let u = env.scim_user_required(&row.user_name);
        assert_eq!(u["displayName"].as_str(), Some(row.display_name.as_str()));
        assert_eq!(
            u["name"]["givenName"].as_str(),
            Some(row.given_name.as_str())
        );
        assert_eq!(u["name"]["familyName"].as_str(), Some(row.surname.as_str()));
        assert_eq!(primary_email(&u).as_deref(), Some(row.email.as_str()));
        assert_eq!(
            u["externalId"].as_str(),
            Some(row.immutable_id.trim_start_matches('\''))
        );
    }
    assert_eq!(
        env.managed_user_names(),
        ["alice@example.com", "bob@example.com"]
    );

    // The same file again: what it approved is done or stale; nothing is written.
    let again = apply_approved(&env, &reviewed).expect(0);
    assert!(
        again
            .stderr
            .contains("0 rows to apply, 4 stale (skipped), 3 not approved (not applied)"),
        "{}",
        again.stderr
    );
    assert_eq!(
        env.scim_writes().total(),
        2,
        "a second apply writes nothing"
    );

    // A file that is not a preview is refused before anything is read.
    let bogus = env.dir.path().join("bogus.csv");
    std::fs::write(&bogus, "name,email\r\nx,y\r\n").unwrap();
    let refused = apply_approved(&env, &bogus).expect(1);
    assert!(
        refused.stderr.trim_end().lines().count() == 1
            && refused.stderr.contains(
                "bogus.csv: not an approvable preview: its first row is not the preview header"
            ),
        "{}",
        refused.stderr
    );
}

#[test]
fn approving_a_guard_trip_applies_exactly_its_deletions() {
    let env = Env::new(four());
    env.apply().expect(0);
    assert_eq!(sorted_user_names(&env).len(), 4);

    // Three of four leave the tenant: over the 65 % guard.
    for n in ["alice", "bob", "carol"] {
        env.emu.delete_user(&format!("{n}@example.com"));
    }
    let tripped = env.apply().expect(3);
    assert!(
        tripped.stderr.contains("--approved-preview"),
        "the guard says how to confirm: {}",
        tripped.stderr
    );
    let w0 = env.scim_writes();

    let reviewed = env.dir.path().join("deletions.csv");
    plan_to(&env, &reviewed);
    let text = std::fs::read_to_string(&reviewed).unwrap();
    assert_eq!(
        actions(&rows(&text)),
        ["alice", "bob", "carol"].map(|n| ("Delete".to_string(), format!("{n}@example.com")))
    );
    // After the review dave leaves too: his deletion was not reviewed.
    env.emu.delete_user("dave@example.com");

    let run = apply_approved(&env, &reviewed).expect(0);
    assert!(
        run.stderr
            .contains("3 rows to apply, 0 stale (skipped), 1 not approved"),
        "{}",
        run.stderr
    );
    let w = env.scim_writes();
    assert_eq!(
        (w.delete - w0.delete, w.total() - w0.total()),
        (3, 3),
        "exactly the three reviewed deletions"
    );
    assert_eq!(sorted_user_names(&env), ["dave@example.com"]);
    assert_eq!(env.managed_user_names(), ["dave@example.com"]);

    // Without a new review, dave's deletion still trips the guard (1 of 1 managed).
    env.apply().expect(3);
    assert_eq!(sorted_user_names(&env), ["dave@example.com"]);
}
