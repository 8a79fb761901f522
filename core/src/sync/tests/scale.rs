//! Scale sanity: planning, writing and storing 100k users.

use super::*;

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
