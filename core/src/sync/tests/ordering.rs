//! Row order and determinism, whatever the listing order.

use super::*;

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
