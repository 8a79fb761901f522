//! The approval gate of an applying run (docs/behaviour.md §9), for the operator.
//!
//! A run whose plan needs approval ([`approval_need`]) writes nothing and pins its preview as
//! `<name>-pending` — kept while the plan stays the same, replaced when it changes, removed when
//! it expires or is applied. `spec.approvedPreview` naming the pinned preview lets the next
//! applying run apply the rows identical in the pinned CSV and the fresh plan, once.
//!
//! [`gate`] and the messages are pure; [`pass_gate`], [`pin`] and [`load_pinned`] touch the
//! cluster.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::controller::Context;
use crate::controller::error::{Error, Result};
use crate::controller::objects::{MAX_PART_BYTES, Objects, Owner};
use crate::controller::outcome::count;
use crate::controller::preview::{self, Shelf};
use crate::controller::status::Reason;
use crate::controller::timing::add;
use crate::crd::{ApprovalPolicy, ApprovalStatus, DirectorySync, PendingApproval};
use crate::sync::PlannedRun;
use crate::sync::approval::{ApprovalNeed, ApprovedPreview, Selection, parse_preview};
use crate::sync::summary::Counts;

pub use crate::sync::approval::approval_need;

/// What an applying run that needs approval does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// `spec.approvedPreview` names the pinned, unexpired, unused preview: apply its rows.
    Apply,
    /// Write nothing, pin the preview, and report `reason`.
    Wait { reason: Reason },
}

/// Decides what a run that needs approval (`need`) does, from `status.approval` and
/// `spec.approvedPreview`.
pub fn gate(
    state: &ApprovalStatus,
    approved: Option<&str>,
    need: ApprovalNeed,
    now: Timestamp,
) -> Gate {
    let Some(approved) = approved else {
        return Gate::Wait {
            reason: match need {
                ApprovalNeed::GuardTripped => Reason::DeletionThresholdExceeded,
                ApprovalNeed::Policy => Reason::AwaitingApproval,
            },
        };
    };
    if state.consumed.as_deref() == Some(approved) {
        return Gate::Wait {
            reason: Reason::ApprovalConsumed,
        };
    }
    // Checked before the pin: a plan that did not change is pinned again with the same hash, and
    // an approval refused as expired must not apply to it later on its own. It stays refused
    // until spec.approvedPreview changes ([`forget_refusal`]).
    if state.expired.as_deref() == Some(approved) {
        return Gate::Wait {
            reason: Reason::ApprovalExpired,
        };
    }
    match &state.pending {
        Some(p) if p.sha256 == approved && p.expires_at.0 > now => Gate::Apply,
        Some(p) if p.sha256 == approved => Gate::Wait {
            reason: Reason::ApprovalExpired,
        },
        _ => Gate::Wait {
            reason: Reason::PreviewChanged,
        },
    }
}

/// Forgets an expired hash once `spec.approvedPreview` no longer names it, so that a plan pinned
/// again with the same hash can be approved by setting it anew.
pub fn forget_refusal(state: &mut ApprovalStatus, approved: Option<&str>) {
    if state.expired.is_some() && state.expired.as_deref() != approved {
        state.expired = None;
    }
}

/// What the gate lets through.
pub enum Gated {
    /// Apply this plan; `approved` holds the note on what the approval covered and the approval
    /// status to record, when an approval selected the rows.
    /// Boxed: a plan holds every row.
    Apply {
        planned: Box<PlannedRun>,
        approved: Option<(String, ApprovalStatus)>,
    },
    /// Write nothing: the preview is pinned; record `state`.
    Wait {
        reason: Reason,
        message: String,
        state: ApprovalStatus,
    },
}

/// The approval gate of an applying run whose preview is written (`fresh_sha256`, hex): lets
/// the plan through when it needs no approval; otherwise applies the pinned preview's rows when
/// `spec.approvedPreview` names it, or pins the plan and waits.
#[allow(clippy::too_many_arguments)]
pub async fn pass_gate(
    ctx: &Context,
    obj: &DirectorySync,
    owner: &Owner,
    objects: &Objects,
    planned: PlannedRun,
    fresh_sha256: &str,
    run_id: &str,
    now: Timestamp,
) -> Result<Gated> {
    let Some(need) = approval_need(obj.spec.approval, &planned) else {
        return Ok(Gated::Apply {
            planned: Box::new(planned),
            approved: None,
        });
    };
    let mut state = obj
        .status
        .as_ref()
        .and_then(|s| s.approval.clone())
        .unwrap_or_default();
    let approved_hash = obj.spec.approved_preview.as_deref();
    forget_refusal(&mut state, approved_hash);
    let (reason, problem) = match gate(&state, approved_hash, need, now) {
        Gate::Wait { reason } => (reason, None),
        Gate::Apply => {
            let Some(pending) = state.pending.clone() else {
                return Err(Error::InvalidSpec(
                    "an approval without a pending preview".into(),
                ));
            };
            match load_pinned(objects, owner, &pending).await {
                Ok(approved) => {
                    let (selected, selection) = crate::sync::approval::select(planned, &approved);
                    state.pending = None;
                    state.consumed = Some(pending.sha256.clone());
                    state.consumed_at = Some(Time(now));
                    let note = applied_note(&pending.sha256, &selection);
                    return Ok(Gated::Apply {
                        planned: Box::new(selected),
                        approved: Some((note, state)),
                    });
                }
                // Pin afresh: the old pin cannot be trusted.
                Err(why) => {
                    state.pending = None;
                    (Reason::PreviewChanged, Some(why))
                }
            }
        }
    };
    if reason == Reason::ApprovalExpired {
        state.expired = approved_hash.map(str::to_owned);
    }
    let (pending, wrote) = pin(
        objects,
        owner,
        &mut state,
        &planned,
        fresh_sha256,
        run_id,
        now,
        ctx.settings.preview_ttl,
    )
    .await?;
    if wrote {
        ctx.metrics.write(&objects.write_verb());
        ctx.metrics.approval("requested");
    }
    if reason != Reason::AwaitingApproval && reason != Reason::DeletionThresholdExceeded {
        ctx.metrics.approval(reason.as_str());
    }
    let mut message = waiting_message(
        reason,
        obj.spec.approval,
        &pending,
        approved_hash,
        planned.guard.message().as_deref(),
        &owner.name,
        &owner.namespace,
    );
    if let Some(p) = problem {
        message = format!("{p}. {message}");
    }
    Ok(Gated::Wait {
        reason,
        message,
        state,
    })
}

/// Moves a pending preview past its expiry to `expired`; returns it (its objects are to be
/// removed).
pub fn expire(state: &mut ApprovalStatus, now: Timestamp) -> Option<PendingApproval> {
    if state
        .pending
        .as_ref()
        .is_some_and(|p| p.expires_at.0 <= now)
    {
        let p = state.pending.take()?;
        state.expired = Some(p.sha256.clone());
        return Some(p);
    }
    None
}

/// The status and event message of a run that waits: why, what is pinned, and what to do.
pub fn waiting_message(
    reason: Reason,
    policy: ApprovalPolicy,
    pending: &PendingApproval,
    approved: Option<&str>,
    guard_message: Option<&str>,
    resource: &str,
    namespace: &str,
) -> String {
    let why = match reason {
        Reason::DeletionThresholdExceeded => {
            crate::controller::outcome::guard_message(guard_message.map(str::to_owned))
        }
        Reason::ApprovalConsumed => format!(
            "spec.approvedPreview {} was already applied once; an approval is used once, and this run wrote nothing.",
            approved.unwrap_or_default()
        ),
        Reason::ApprovalExpired if approved == Some(pending.sha256.as_str()) => format!(
            "spec.approvedPreview {} names a pending preview that expired before it was approved; this run wrote nothing. The plan is unchanged and pinned again with the same hash: to approve it, remove spec.approvedPreview, then set it again.",
            approved.unwrap_or_default()
        ),
        Reason::ApprovalExpired => format!(
            "spec.approvedPreview {} names a pending preview that expired before it was approved; this run wrote nothing.",
            approved.unwrap_or_default()
        ),
        Reason::PreviewChanged => format!(
            "spec.approvedPreview {} is not the pending preview (the plan changed since, or the hash is unknown); this run wrote nothing.",
            approved.unwrap_or_default()
        ),
        _ => format!(
            "Awaiting approval (spec.approval: {}): this run wrote nothing.",
            policy.as_str()
        ),
    };
    let what = if reason == Reason::DeletionThresholdExceeded {
        "to apply exactly these deletions"
    } else {
        "to apply"
    };
    format!(
        "{why} Review the pending preview (dirsync preview get {resource} -n {namespace} --pending), then set spec.approvedPreview: {} {what}: {} adds, {} updates, {} deletes. It expires at {}.",
        pending.sha256, pending.adds, pending.updates, pending.deletes, pending.expires_at.0
    )
}

/// The part of an approved run's message that says what the approval covered.
pub fn applied_note(hash: &str, s: &Selection) -> String {
    format!(
        "Applied the approved preview {hash}: {} rows applied, {} stale (skipped), {} not approved (they wait for the next preview).",
        s.approved, s.stale, s.not_approved
    )
}

/// Pins `planned`'s preview as pending, unless the same preview is already pinned and
/// unexpired (`fresh_sha256` is the hex sha256 of its CSV, from the latest preview). Returns
/// the pending entry and whether anything was written.
#[allow(clippy::too_many_arguments)]
pub async fn pin(
    objects: &Objects,
    owner: &Owner,
    state: &mut ApprovalStatus,
    planned: &PlannedRun,
    fresh_sha256: &str,
    run_id: &str,
    now: Timestamp,
    ttl: Duration,
) -> Result<(PendingApproval, bool)> {
    let fresh = format!("{}{fresh_sha256}", crate::sync::approval::HASH_PREFIX);
    if let Some(p) = &state.pending
        && p.sha256 == fresh
        && p.expires_at.0 > now
    {
        return Ok((p.clone(), false));
    }
    expire(state, now);
    let expires = add(now, ttl);
    let layout = preview::layout_on(
        Shelf::Pending,
        owner,
        objects.kind(),
        MAX_PART_BYTES,
        planned,
        false,
        run_id,
        now,
        expires,
    )
    .map_err(|e| Error::InvalidSpec(format!("rendering the pending preview: {e}")))?;
    preview::publish(objects, owner, &layout).await?;
    let counts = Counts::of(&planned.plan, planned.skipped);
    let pending = PendingApproval {
        sha256: fresh,
        objects: layout.status.objects.clone(),
        kind: objects.kind(),
        adds: count(counts.add),
        updates: count(counts.update),
        deletes: count(counts.delete),
        guard_tripped: planned.guard.tripped,
        run_id: run_id.to_owned(),
        since: Time(now),
        expires_at: Time(expires),
    };
    state.pending = Some(pending.clone());
    Ok((pending, true))
}

/// Reads the pinned preview back and checks that it is the one `pending` names; `Err` says
/// why it cannot be used (the run then waits for a new approval).
pub async fn load_pinned(
    objects: &Objects,
    owner: &Owner,
    pending: &PendingApproval,
) -> std::result::Result<ApprovedPreview, String> {
    let (csv, _) = preview::read(objects, &owner.name, Shelf::Pending)
        .await
        .map_err(|e| format!("the pending preview could not be read back: {e}"))?;
    let approved =
        parse_preview(&csv).map_err(|e| format!("the pending preview is not a preview: {e}"))?;
    if approved.hash != pending.sha256 {
        return Err(format!(
            "the pending preview's objects hold {} instead of {}",
            approved.hash, pending.sha256
        ));
    }
    Ok(approved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn pending(hash: &str, expires: i64) -> PendingApproval {
        PendingApproval {
            sha256: hash.into(),
            objects: vec!["x-pending".into()],
            kind: Default::default(),
            adds: 2,
            updates: 1,
            deletes: 3,
            guard_tripped: false,
            run_id: "r1".into(),
            since: Time(t(10)),
            expires_at: Time(t(expires)),
        }
    }

    #[test]
    fn only_the_pinned_unexpired_unused_hash_applies() {
        let state = ApprovalStatus {
            pending: Some(pending("sha256:p", 100)),
            consumed: Some("sha256:c".into()),
            expired: Some("sha256:e".into()),
            ..Default::default()
        };
        let g = |h: Option<&str>, now: i64| gate(&state, h, ApprovalNeed::Policy, t(now));
        assert_eq!(g(Some("sha256:p"), 50), Gate::Apply);
        let wait = |reason| Gate::Wait { reason };
        assert_eq!(g(Some("sha256:p"), 100), wait(Reason::ApprovalExpired));
        assert_eq!(g(Some("sha256:e"), 50), wait(Reason::ApprovalExpired));
        assert_eq!(g(Some("sha256:c"), 50), wait(Reason::ApprovalConsumed));
        // An expired hash stays refused even when the same plan is pinned again.
        let repinned = ApprovalStatus {
            pending: Some(pending("sha256:e", 100)),
            expired: Some("sha256:e".into()),
            ..Default::default()
        };
        assert_eq!(
            gate(&repinned, Some("sha256:e"), ApprovalNeed::Policy, t(50)),
            wait(Reason::ApprovalExpired)
        );
        let mut cleared = repinned.clone();
        forget_refusal(&mut cleared, Some("sha256:e"));
        assert_eq!(cleared, repinned, "still named: still refused");
        forget_refusal(&mut cleared, None);
        assert_eq!(cleared.expired, None);
        assert_eq!(
            gate(&cleared, Some("sha256:e"), ApprovalNeed::Policy, t(50)),
            Gate::Apply,
            "set anew after the new pin: applies"
        );
        assert_eq!(g(Some("sha256:x"), 50), wait(Reason::PreviewChanged));
        assert_eq!(g(None, 50), wait(Reason::AwaitingApproval));
        assert_eq!(
            gate(&state, None, ApprovalNeed::GuardTripped, t(50)),
            wait(Reason::DeletionThresholdExceeded),
            "a guard trip keeps its reason"
        );
    }

    #[test]
    fn an_expired_pin_moves_to_expired() {
        let mut state = ApprovalStatus {
            pending: Some(pending("sha256:p", 100)),
            ..Default::default()
        };
        assert_eq!(expire(&mut state, t(99)), None);
        assert!(expire(&mut state, t(100)).is_some());
        assert_eq!(state.pending, None);
        assert_eq!(state.expired.as_deref(), Some("sha256:p"));
    }

    #[test]
    fn messages_name_the_hash_the_counts_and_the_next_step() {
        let p = pending("sha256:abc", 100);
        assert_eq!(
            waiting_message(
                Reason::AwaitingApproval,
                ApprovalPolicy::Always,
                &p,
                None,
                None,
                "example-com",
                "identity"
            ),
            "Awaiting approval (spec.approval: Always): this run wrote nothing. Review the pending preview (dirsync preview get example-com -n identity --pending), then set spec.approvedPreview: sha256:abc to apply: 2 adds, 1 updates, 3 deletes. It expires at 1970-01-01T00:01:40Z."
        );
        let guard = waiting_message(
            Reason::DeletionThresholdExceeded,
            ApprovalPolicy::Never,
            &p,
            None,
            Some("Synchronization was canceled."),
            "example-com",
            "identity",
        );
        assert!(
            guard.starts_with(
                "Synchronization was canceled. Fix the source or raise the value, then set dirsync.io/sync-now. Review the pending preview"
            ),
            "{guard}"
        );
        assert!(
            guard.contains("to apply exactly these deletions"),
            "{guard}"
        );
        let used = waiting_message(
            Reason::ApprovalConsumed,
            ApprovalPolicy::OnDeletes,
            &p,
            Some("sha256:old"),
            None,
            "example-com",
            "identity",
        );
        assert!(used.starts_with("spec.approvedPreview sha256:old was already applied once"));
        assert_eq!(
            applied_note(
                "sha256:abc",
                &Selection {
                    approved: 3,
                    stale: 1,
                    not_approved: 2
                }
            ),
            "Applied the approved preview sha256:abc: 3 rows applied, 1 stale (skipped), 2 not approved (they wait for the next preview)."
        );
    }
}
