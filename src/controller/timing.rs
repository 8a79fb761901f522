//! When a resource runs and when it is looked at again, read from the resource: the inputs of
//! the pure schedule (`schedule.rs`), the requeue, run ids. No writes.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::controller::Context;
pub use crate::controller::schedule::add;
use crate::controller::schedule::{self, Decision};
use crate::controller::status::whole_seconds;
use crate::crd::{DirectorySync, DirectorySyncStatus, SYNC_NOW_ANNOTATION};

/// Longest wait between two looks at an idle resource (an idle look writes nothing).
pub const RESYNC: Duration = Duration::from_secs(3600);

/// Now, to the second (what status keeps).
pub fn now() -> Timestamp {
    whole_seconds(Timestamp::now())
}

/// The interval a resource runs at: its spec, bounded below by `--min-interval`.
pub fn effective_interval(spec_interval: &str, min: Duration) -> Duration {
    crate::duration::parse_duration(spec_interval)
        .unwrap_or(Duration::from_secs(3600))
        .max(min)
}

/// The `dirsync.io/sync-now` annotation's value, when set and not empty.
pub fn sync_now_value(obj: &DirectorySync) -> Option<String> {
    obj.annotations()
        .get(SYNC_NOW_ANNOTATION)
        .filter(|v| !v.is_empty())
        .cloned()
}

/// What the schedule (`schedule.rs`) decides for `obj` at `now`.
pub fn decide(obj: &DirectorySync, ctx: &Context, uid: &str, now: Timestamp) -> Decision {
    let status = obj.status.clone().unwrap_or_default();
    let interval = effective_interval(&obj.spec.interval, ctx.settings.min_interval);
    let sync_now = sync_now_value(obj);
    schedule::decide(&schedule::Inputs {
        mode: obj.spec.mode,
        generation: obj.metadata.generation.unwrap_or(0),
        interval,
        offset: schedule::slot_offset(uid, interval),
        sync_now: sync_now.as_deref(),
        last_sync_now: status.last_sync_now.as_deref(),
        history: &status.history,
        backoff: ctx.settings.backoff,
        now,
        approval_due: approval_due(obj, &status),
    })
}

/// `spec.approvedPreview` names the pinned preview, unused: the next run may apply it.
fn approval_due(obj: &DirectorySync, status: &DirectorySyncStatus) -> bool {
    let Some(approved) = obj.spec.approved_preview.as_deref() else {
        return false;
    };
    status.approval.as_ref().is_some_and(|a| {
        a.consumed.as_deref() != Some(approved)
            && a.pending.as_ref().is_some_and(|p| p.sha256 == approved)
    })
}

/// When to look at the resource again, given the next run and the preview's expiry.
pub fn requeue_for(
    next: Option<Timestamp>,
    status: &DirectorySyncStatus,
    now: Timestamp,
    ctx: &Context,
) -> Action {
    let mut at = add(now, RESYNC.min(ctx.settings.report_retention));
    if let Some(n) = next {
        at = at.min(n);
    }
    if let Some(p) = &status.preview {
        at = at.min(p.expires_at.0);
    }
    if let Some(p) = status.approval.as_ref().and_then(|a| a.pending.as_ref()) {
        at = at.min(p.expires_at.0);
    }
    let wait = at.duration_since(now).unsigned_abs();
    // A second of slack: slots and expiries are compared at whole seconds.
    Action::requeue(wait.max(Duration::from_millis(200)) + Duration::from_millis(500))
}

/// A run id: the start time and a random suffix (unique enough to name a run report).
pub fn new_run_id(now: Timestamp) -> String {
    let stamp = now.strftime("%Y%m%d-%H%M%S").to_string();
    let suffix: u16 = rand::random();
    format!("{stamp}-{suffix:04x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time_and_differ() {
        let t = Timestamp::from_second(1_780_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let a = new_run_id(t);
        assert!(a.starts_with("20260528-"), "{a}");
        assert_eq!(a.len(), "20260528-203320-abcd".len());
        assert!((0..20).any(|_| new_run_id(t) != a));
    }

    #[test]
    fn the_interval_is_bounded_below_by_the_minimum() {
        let min = Duration::from_secs(300);
        assert_eq!(effective_interval("1h", min), Duration::from_secs(3600));
        assert_eq!(effective_interval("1s", min), min);
    }
}
