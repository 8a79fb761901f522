//! The engine's writes in flight, progress and managed-set checkpoints.

use super::*;

#[tokio::test]
async fn engine_raises_writes_in_flight_up_to_the_bound_on_a_parallel_destination() {
    let users: Vec<(u128, String)> = (1..=40).map(|i| (i, format!("u{i}@example.com"))).collect();
    let source = FakeDirectory::with_users(users.iter().map(|(n, u)| entra_user(*n, u)));
    let dest = Slow::writes(FakeDirectory::new(), std::time::Duration::from_millis(20));
    let planned = plan_run(&source, &dest, &cfg(), &ManagedSet::new(), &others_none())
        .await
        .expect("plans");
    let opts = ApplyOptions {
        concurrency: 3,
        checkpoint_every: 0,
    };
    let out = apply_run(&planned, &dest, &opts, &mut NoProgress).await;
    assert_eq!(out.created, 40);
    let peak = dest.peak();
    // Starts at one write and climbs while latency stays flat; never above --concurrency.
    assert!((2..=3).contains(&peak), "peak in flight {peak}");
}

#[derive(Default)]
pub(super) struct Recorder {
    pub(super) progress: Vec<(usize, usize)>,
    pub(super) checkpoints: Vec<usize>,
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
