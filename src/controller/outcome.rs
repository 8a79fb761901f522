//! What a run produced — reason, message, counts — and what it tells people: the run record in
//! status and the Events. Building them is pure (tested below); only [`publish_events`] talks to
//! the cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::runtime::events::{Event, EventType};
use tracing::warn;

use crate::controller::Context;
use crate::controller::error::Error;
use crate::controller::objects::StoreKind;
use crate::controller::schedule::Trigger;
use crate::controller::status::{self, Reason};
use crate::crd::{ApprovalStatus, DirectorySync, PreviewStatus, RunRecord, SyncMode};
use crate::sync::RunKind;
use crate::sync::engine::{ApplyOutcome, RunResult};
use crate::sync::summary::Counts;

/// What a run produced, for status and events.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOutcome {
    pub reason: Reason,
    pub message: String,
    pub adds: i64,
    pub updates: i64,
    pub deletes: i64,
    pub conflicts: i64,
    pub unmanaged: i64,
    pub failed: i64,
    pub preview: Option<PreviewStatus>,
    pub managed_users: Option<i64>,
    pub applied: bool,
    /// A dry run whose plan the guard would cancel.
    pub guard_note: Option<String>,
    /// `status.approval` as this run leaves it, when it changed it.
    pub approval: Option<ApprovalStatus>,
    /// Full or incremental; `None` when the run failed before it planned.
    pub kind: Option<RunKind>,
    /// An incremental run that found nothing changed: no event (its only write is the status).
    pub quiet: bool,
}

/// What the operator says to do after a guard trip (the core's message speaks of the run only).
pub const GUARD_NEXT_STEP: &str =
    "Fix the source or raise the value, then set dirsync.io/sync-now.";

/// The operator's message for a run the guard cancelled.
pub fn guard_message(core_message: Option<String>) -> String {
    format!("{} {GUARD_NEXT_STEP}", core_message.unwrap_or_default())
}

/// A count as status keeps it.
pub fn count(x: usize) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

impl RunOutcome {
    /// A run that ended in `e`: nothing was applied (unless `e` is about saving after it).
    pub fn failed(e: &Error) -> Self {
        RunOutcome {
            reason: e.reason(),
            message: format!("{} failed: {e}", e.step()),
            kind: None,
            ..RunOutcome::planned(&Counts::default(), RunKind::Incremental, None, None)
        }
    }

    /// A planned run with its preview written: `PreviewReady` until something else is known.
    pub fn planned(
        c: &Counts,
        kind: RunKind,
        preview: Option<PreviewStatus>,
        managed_users: Option<i64>,
    ) -> Self {
        RunOutcome {
            reason: Reason::PreviewReady,
            message: String::new(),
            adds: count(c.add),
            updates: count(c.update),
            deletes: count(c.delete),
            conflicts: count(c.conflict),
            unmanaged: count(c.unmanaged),
            failed: 0,
            preview,
            managed_users,
            applied: false,
            guard_note: None,
            approval: None,
            kind: Some(kind),
            quiet: false,
        }
    }

    /// The run's entry in `status.lastRun` and `status.history`.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        run_id: &str,
        mode: SyncMode,
        applied: bool,
        start: Timestamp,
        end: Timestamp,
        generation: i64,
        trigger: &Trigger,
    ) -> RunRecord {
        RunRecord {
            id: run_id.to_owned(),
            mode,
            applied,
            start_time: Time(start),
            end_time: Some(Time(end)),
            result: self.reason.as_str().to_owned(),
            adds: self.adds,
            updates: self.updates,
            deletes: self.deletes,
            conflicts: self.conflicts,
            unmanaged: self.unmanaged,
            failed: self.failed,
            generation: Some(generation),
            trigger: Some(trigger.as_str().to_owned()),
            kind: self.kind.map(|k| k.as_str().to_owned()),
            full_reason: self
                .kind
                .and_then(RunKind::full_reason)
                .map(|r| r.as_str().to_owned()),
            message: Some(status::cut_message(&self.message)),
        }
    }
}

/// A dry run's message: where the preview is and what it holds (and the guard's note).
pub fn preview_message(
    kind: StoreKind,
    preview_name: &str,
    c: &Counts,
    guard_note: Option<&str>,
) -> String {
    let mut m = format!(
        "Preview ready in {kind} {preview_name}: {} to add, {} to update, {} to delete, {} conflicts, {} unmanaged.",
        c.add, c.update, c.delete, c.conflict, c.unmanaged
    );
    if let Some(g) = guard_note {
        m = format!("{m} {g}");
    }
    m
}

/// The message of an incremental run that found nothing changed.
pub fn idle_message(managed: usize) -> String {
    format!(
        "Incremental run: nothing changed in Entra ID since the last run; nothing was read from or written to the destination. {managed} users are managed."
    )
}

/// The message of a run whose source has no user in the domain and nothing managed.
pub fn no_source_users_message(domain: &str) -> String {
    format!(
        "No user of the tenant has a userPrincipalName ending in @{domain} and none is managed; nothing to do. Check spec.domain."
    )
}

/// The reason and message of an applied run. `report` names the run report, when one was
/// written; `planned_writes` is how many writes the plan held.
pub fn applied_reason_and_message(
    outcome: &ApplyOutcome,
    planned_writes: usize,
    c: &Counts,
    managed_users: i64,
    report: Option<(StoreKind, &str)>,
    guard_message: Option<String>,
) -> (Reason, String) {
    let report_text = report
        .map(|(kind, r)| format!(" Run report: {kind} {r}."))
        .unwrap_or_default();
    let restored = match outcome.restored {
        0 => String::new(),
        n => format!(", {n} restored"),
    };
    let applied_text = format!(
        "{} added{restored}, {} updated, {} deleted, {} conflicts, {} unmanaged; {managed_users} managed users.",
        outcome.created, outcome.updated, outcome.deleted, c.conflict, c.unmanaged,
    );
    match outcome.result {
        RunResult::Success => (
            Reason::Synced,
            format!("Synced: {applied_text}{report_text}"),
        ),
        RunResult::PartiallyFailed => {
            let failed = outcome.failures.len() + outcome.not_attempted;
            let aborted = outcome
                .aborted
                .as_ref()
                .map(|e| format!(" Writes stopped early: {e}."))
                .unwrap_or_default();
            (
                Reason::PartiallyFailed,
                format!(
                    "{failed} of {planned_writes} writes failed or were not attempted; {applied_text}{aborted}{report_text}"
                ),
            )
        }
        RunResult::GuardTripped => (
            Reason::DeletionThresholdExceeded,
            self::guard_message(guard_message),
        ),
        RunResult::NoSourceUsers => (
            Reason::NoSourceUsers,
            "No source users and nothing managed.".to_owned(),
        ),
    }
}

/// One event per run (Warning unless it succeeded), and one per guard verdict that would
/// cancel a dry run's plan. Counts only, never user data.
pub fn events_for(outcome: &RunOutcome, applied: bool) -> Vec<Event> {
    if outcome.quiet {
        return Vec::new();
    }
    let ok = matches!(outcome.reason, Reason::PreviewReady | Reason::Synced);
    let mut events = vec![Event {
        type_: if ok {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: outcome.reason.as_str().to_owned(),
        note: Some(status::cut_message(&outcome.message)),
        action: if applied { "Apply" } else { "Preview" }.to_owned(),
        secondary: None,
    }];
    if let Some(g) = &outcome.guard_note {
        events.push(Event {
            type_: EventType::Warning,
            reason: Reason::DeletionThresholdExceeded.as_str().to_owned(),
            note: Some(status::cut_message(&format!(
                "Dry run (nothing was cancelled): {g}"
            ))),
            action: "Preview".to_owned(),
            secondary: None,
        });
    }
    events
}

/// Publishes [`events_for`] the run; a failure is logged, not fatal.
pub async fn publish_events(
    ctx: &Context,
    obj: &DirectorySync,
    record: &RunRecord,
    outcome: &RunOutcome,
) {
    let reference = obj.object_ref(&());
    for ev in events_for(outcome, record.applied) {
        match ctx.recorder.publish(&ev, &reference).await {
            Ok(()) => ctx.metrics.write("event"),
            Err(e) => warn!(error = %e, "could not publish an event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::DirectoryError;
    use crate::sync::engine::UserFailure;

    fn counts() -> Counts {
        Counts {
            add: 3,
            update: 2,
            delete: 1,
            conflict: 4,
            unmanaged: 5,
            ..Counts::default()
        }
    }

    fn applied(result: RunResult) -> ApplyOutcome {
        ApplyOutcome {
            result,
            managed: None,
            created: 3,
            restored: 0,
            updated: 1,
            deleted: 1,
            failures: Vec::new(),
            replanned: Vec::new(),
            not_attempted: 0,
            aborted: None,
            met_changed_destination: false,
        }
    }

    #[test]
    fn a_preview_says_where_it_is_and_what_it_holds() {
        assert_eq!(
            preview_message(StoreKind::ConfigMap, "x-preview", &counts(), None),
            "Preview ready in ConfigMap x-preview: 3 to add, 2 to update, 1 to delete, 4 conflicts, 5 unmanaged."
        );
        assert!(
            preview_message(StoreKind::Secret, "x-preview", &counts(), Some("Careful."))
                .ends_with("5 unmanaged. Careful.")
        );
    }

    #[test]
    fn applied_runs_say_what_was_done_and_where_the_report_is() {
        let (reason, message) = applied_reason_and_message(
            &applied(RunResult::Success),
            6,
            &counts(),
            7,
            Some((StoreKind::ConfigMap, "x-report-1")),
            None,
        );
        assert_eq!(reason, Reason::Synced);
        assert_eq!(
            message,
            "Synced: 3 added, 1 updated, 1 deleted, 4 conflicts, 5 unmanaged; 7 managed users. Run report: ConfigMap x-report-1."
        );
        let mut partial = applied(RunResult::PartiallyFailed);
        partial.failures.push(UserFailure {
            user_name: "a".into(),
            action: crate::sync::plan::Action::Update,
            reason: "HTTP 500".into(),
        });
        partial.not_attempted = 2;
        partial.aborted = Some(DirectoryError::InvalidCredentials("HTTP 401".into()));
        let (reason, message) = applied_reason_and_message(&partial, 8, &counts(), 7, None, None);
        assert_eq!(reason, Reason::PartiallyFailed);
        assert!(
            message.starts_with("3 of 8 writes failed or were not attempted; 3 added")
                && message.contains("Writes stopped early: "),
            "{message}"
        );
    }

    #[test]
    fn only_successes_are_normal_events_and_a_dry_runs_guard_note_warns() {
        let mut o = RunOutcome::planned(
            &counts(),
            crate::sync::RunKind::Full(crate::sync::FullReason::NoDeltaLink),
            None,
            Some(7),
        );
        o.message = "ok".into();
        let evs = events_for(&o, false);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].type_, EventType::Normal);
        assert_eq!(evs[0].action, "Preview");
        o.guard_note = Some("would cancel".into());
        let evs = events_for(&o, false);
        assert_eq!(evs[1].type_, EventType::Warning);
        assert_eq!(evs[1].reason, "DeletionThresholdExceeded");
        assert_eq!(
            evs[1].note.as_deref(),
            Some("Dry run (nothing was cancelled): would cancel")
        );
        o.reason = Reason::AwaitingApproval;
        o.guard_note = None;
        let evs = events_for(&o, true);
        assert_eq!(
            (evs[0].type_, evs[0].action.as_str()),
            (EventType::Warning, "Apply")
        );
    }

    #[test]
    fn a_failed_run_records_its_step_and_no_counts() {
        let o = RunOutcome::failed(&Error::DomainNotFound("example.com".into()));
        assert_eq!(o.reason, Reason::DomainNotFound);
        assert_eq!(
            o.message,
            "FetchSourceUsers failed: the tenant has no domain \"example.com\" (Graph /domains)"
        );
        let r = o.record(
            "r1",
            SyncMode::Once,
            true,
            Timestamp::UNIX_EPOCH,
            Timestamp::UNIX_EPOCH,
            3,
            &Trigger::SpecChange,
        );
        assert_eq!((r.adds, r.deletes, r.failed), (0, 0, 0));
        assert_eq!(r.result, "DomainNotFound");
        assert_eq!(r.generation, Some(3));
        assert_eq!(r.trigger.as_deref(), Some("SpecChange"));
    }
}
