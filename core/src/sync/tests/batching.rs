//! Updates and Deletes sent in batches to a destination that takes several per request
//! (`Directory::batch_limit`, Graph's `$batch`): the same users written, the same outcome and
//! managed set as one by one, and per-user results kept apart.

use super::engine_progress::Recorder;
use super::*;

/// 60 managed users; the source renames 1..=25 (Updates) and drops 41..=60 (Deletes). Users 3
/// (Update) and 45 (Delete) are refused.
fn scenario(batch_limit: usize) -> (FakeDirectory, FakeDirectory, ManagedSet, SyncConfig) {
    let (mut source, dest, managed) = managed_population(60);
    for u in source.iter_mut().take(25) {
        u.display_name = Some(format!("Renamed {}", u.user_name));
    }
    source.truncate(40);
    let dest_dir = FakeDirectory::with_users(dest.clone()).with_batch_limit(batch_limit);
    dest_dir.fail_writes_for(
        "u3@example.com",
        DirectoryError::Rejected("400 invalidValue".into()),
    );
    dest_dir.fail_writes_for(
        "u45@example.com",
        DirectoryError::Rejected("400 badRequest".into()),
    );
    let mut c = cfg();
    c.max_allowed_deletions = 100;
    (FakeDirectory::with_users(source), dest_dir, managed, c)
}

async fn run(batch_limit: usize) -> (crate::sync::engine::ApplyOutcome, Recorder, FakeDirectory) {
    let (source, dest, managed, c) = scenario(batch_limit);
    let planned = plan_run(&source, &dest, &c, &managed, &others_none())
        .await
        .expect("plans");
    assert_eq!(planned.plan.writes(), 45, "25 updates and 20 deletes");
    // Since planning, user 7 lost our Immutable ID (the precondition) and user 50 is gone.
    let mut seven = dest.user_named("u7@example.com").expect("u7");
    seven.immutable_id = Some("somebody-else".into());
    dest.insert(seven);
    let fifty = dest.user_named("u50@example.com").expect("u50");
    dest.remove(&fifty.id);
    let mut rec = Recorder::default();
    let out = apply_run(
        &planned,
        &dest,
        &ApplyOptions {
            concurrency: 2,
            checkpoint_every: 7,
        },
        &mut rec,
    )
    .await;
    (out, rec, dest)
}

#[tokio::test]
async fn batched_writes_end_exactly_like_single_ones() {
    let (single, single_rec, single_dest) = run(1).await;
    let (batched, batched_rec, batched_dest) = run(20).await;

    assert_eq!(
        single_dest.calls().batches,
        0,
        "batch limit 1: one at a time"
    );
    let calls = batched_dest.calls();
    assert_eq!(
        calls.batches, 3,
        "25 updates in 20 + 5, 20 deletes in one: {calls:?}"
    );
    assert_eq!((calls.updates, calls.deletes), (25, 20));

    assert_eq!(batched, single, "same counts, failures and managed set");
    assert_eq!(batched_dest.users(), single_dest.users());
    assert_eq!(batched.result, RunResult::PartiallyFailed);
    assert_eq!((batched.updated, batched.deleted), (23, 19));
    let failed: Vec<(&str, Action)> = batched
        .failures
        .iter()
        .map(|f| (f.user_name.as_str(), f.action))
        .collect();
    assert_eq!(
        failed,
        vec![
            ("u3@example.com", Action::Update),
            ("u45@example.com", Action::Delete),
            ("u7@example.com", Action::Update),
        ]
    );
    assert!(batched.met_changed_destination, "user 7's precondition");
    let managed = batched.managed.as_ref().expect("managed");
    assert_eq!(managed.len(), 41, "40 kept, plus u45 whose delete failed");
    assert!(
        !managed.contains(&immutable_id_of(50)),
        "already gone: done"
    );

    // Progress counts every user of a batch; checkpoints still come about every 7 writes.
    assert_eq!(batched_rec.progress.last(), Some(&(45, 45)));
    assert_eq!(batched_rec.progress.len(), 45);
    assert_eq!(single_rec.checkpoints.len(), 6, "7, 14, … 42");
    assert!(
        (2..=6).contains(&batched_rec.checkpoints.len()),
        "{:?}",
        batched_rec.checkpoints
    );
}

/// Refused credentials on one batch stop the writes not yet sent, as they do one by one.
#[tokio::test]
async fn refused_credentials_in_a_batch_stop_later_batches() {
    let (source, dest, managed, c) = scenario(5);
    for n in 1..=25 {
        dest.fail_writes_for(
            &format!("u{n}@example.com"),
            DirectoryError::InvalidCredentials("401".into()),
        );
    }
    let planned = plan_run(&source, &dest, &c, &managed, &others_none())
        .await
        .expect("plans");
    let out = apply_run(
        &planned,
        &dest,
        &ApplyOptions {
            concurrency: 1,
            checkpoint_every: 0,
        },
        &mut NoProgress,
    )
    .await;
    assert!(matches!(
        out.aborted,
        Some(DirectoryError::InvalidCredentials(_))
    ));
    assert_eq!(
        dest.calls().batches,
        1,
        "nothing sent after the first batch"
    );
    assert_eq!(out.failures.len(), 5);
    assert_eq!(out.not_attempted, 40);
    assert_eq!(out.deleted, 0);
}
