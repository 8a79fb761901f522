//! Conditions and status maths (docs/behaviour.md §4 "Status"), pure: `now` is a parameter.
//!
//! Three conditions, kstatus style: `Ready` (the summary), `Reconciling` (work in progress or a
//! transient failure being retried) and `Stalled` (needs a person: bad credentials, a missing
//! Secret, a guard trip, ...). `lastTransitionTime` is kept unless a condition's status flips,
//! so recomputing the status with nothing changed gives an equal value and no patch is sent.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value};

use crate::crd::DirectorySyncStatus;

pub mod types {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
}

pub use crate::sync::{Health, Reason};

/// Condition and event reasons as the strings status carries: the names of the core's
/// [`Reason`] (one vocabulary, `core/src/sync/reason.rs`).
pub mod reasons {
    use crate::sync::Reason;

    pub const PREVIEW_READY: &str = Reason::PreviewReady.as_str();
    pub const SYNCED: &str = Reason::Synced.as_str();
    pub const PARTIALLY_FAILED: &str = Reason::PartiallyFailed.as_str();
    pub const DELETION_THRESHOLD_EXCEEDED: &str = Reason::DeletionThresholdExceeded.as_str();
    pub const NO_SOURCE_USERS: &str = Reason::NoSourceUsers.as_str();
    pub const DOMAIN_NOT_FOUND: &str = Reason::DomainNotFound.as_str();
    pub const INVALID_CREDENTIALS: &str = Reason::InvalidCredentials.as_str();
    pub const SECRET_NOT_FOUND: &str = Reason::SecretNotFound.as_str();
    pub const SOURCE_UNAVAILABLE: &str = Reason::SourceUnavailable.as_str();
    pub const DESTINATION_UNAVAILABLE: &str = Reason::DestinationUnavailable.as_str();
    pub const ENDPOINT_NOT_ALLOWED: &str = Reason::EndpointNotAllowed.as_str();
    pub const PREVIEW_CONFLICT: &str = Reason::PreviewConflict.as_str();
    pub const INVALID_SPEC: &str = Reason::InvalidSpec.as_str();
    pub const MANAGED_SET_UNAVAILABLE: &str = Reason::ManagedSetUnavailable.as_str();
    pub const KUBERNETES_API_ERROR: &str = Reason::KubernetesApiError.as_str();
    pub const RUNNING: &str = Reason::Running.as_str();
    pub const WAITING: &str = Reason::Waiting.as_str();
    pub const RUN_CLAIMED: &str = Reason::RunClaimedElsewhere.as_str();
    pub const AWAITING_APPROVAL: &str = Reason::AwaitingApproval.as_str();
    pub const APPROVAL_CONSUMED: &str = Reason::ApprovalConsumed.as_str();
    pub const APPROVAL_EXPIRED: &str = Reason::ApprovalExpired.as_str();
    pub const PREVIEW_CHANGED: &str = Reason::PreviewChanged.as_str();
}

/// The health a run result (a reason's name) stands for; an unknown name is treated as
/// needing a person.
pub fn health_of(reason: &str) -> Health {
    Reason::parse(reason).map_or(Health::Stalled, Reason::health)
}

/// Sets condition `type_` in `list`, keeping `lastTransitionTime` unless the status flips.
pub fn set_condition(
    list: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status_s = if status { "True" } else { "False" };
    let message = cut_message(message);
    match list.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status_s {
                c.last_transition_time = Time(now);
            }
            c.status = status_s.to_owned();
            c.reason = reason.to_owned();
            c.message = message;
            c.observed_generation = generation;
        }
        None => list.push(Condition {
            type_: type_.to_owned(),
            status: status_s.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time: Time(now),
        }),
    }
}

/// Sets all three conditions from a reason and its message.
pub fn set_health(
    list: &mut Vec<Condition>,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let h = health_of(reason);
    set_condition(
        list,
        types::READY,
        h == Health::Ready,
        reason,
        message,
        generation,
        now,
    );
    let (rec, rec_reason, rec_msg) = match h {
        Health::Progressing => (true, reason, message),
        _ => (false, reason, ""),
    };
    set_condition(
        list,
        types::RECONCILING,
        rec,
        rec_reason,
        rec_msg,
        generation,
        now,
    );
    let (st, st_msg) = match h {
        Health::Stalled => (true, message),
        _ => (false, ""),
    };
    set_condition(list, types::STALLED, st, reason, st_msg, generation, now);
    list.sort_by(|a, b| {
        order(&a.type_)
            .cmp(&order(&b.type_))
            .then_with(|| a.type_.cmp(&b.type_))
    });
}

fn order(t: &str) -> u8 {
    match t {
        types::READY => 0,
        types::RECONCILING => 1,
        types::STALLED => 2,
        _ => 3,
    }
}

/// Condition messages stay short (the API allows 32 KiB; people read one line).
pub fn cut_message(m: &str) -> String {
    const MAX: usize = 1024;
    if m.len() <= MAX {
        return m.to_owned();
    }
    let mut end = MAX;
    while !m.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &m[..end])
}

/// Whole seconds: what a `Time` keeps once written (RFC 3339 with second precision), so that
/// a status built in memory compares equal to the same status read back.
pub fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// A JSON merge patch of `status` that turns `old` into `new`: every field of `new`, and
/// `null` for each field `old` has and `new` lacks, in nested objects too (a merge patch keeps
/// what it does not mention).
pub fn merge_patch(old: &DirectorySyncStatus, new: &DirectorySyncStatus) -> Value {
    let old_v = serde_json::to_value(old).unwrap_or(Value::Null);
    let mut new_v = match serde_json::to_value(new) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    };
    null_removed(&old_v, &mut new_v);
    new_v
}

fn null_removed(old: &Value, new: &mut Value) {
    if let (Value::Object(old_map), Value::Object(new_map)) = (old, new) {
        for (k, old_field) in old_map {
            match new_map.get_mut(k) {
                None => {
                    new_map.insert(k.clone(), Value::Null);
                }
                Some(new_field) => null_removed(old_field, new_field),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn get<'a>(l: &'a [Condition], ty: &str) -> &'a Condition {
        l.iter()
            .find(|c| c.type_ == ty)
            .unwrap_or_else(|| panic!("{ty} missing"))
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let mut l = Vec::new();
        set_health(&mut l, reasons::PREVIEW_READY, "ok", Some(1), t(10));
        assert_eq!(get(&l, "Ready").status, "True");
        assert_eq!(get(&l, "Ready").last_transition_time, Time(t(10)));
        let before = l.clone();
        set_health(&mut l, reasons::PREVIEW_READY, "ok", Some(1), t(20));
        assert_eq!(
            l, before,
            "same health: nothing changes, timestamps included"
        );
        set_health(&mut l, reasons::SYNCED, "synced", Some(2), t(30));
        assert_eq!(
            get(&l, "Ready").last_transition_time,
            Time(t(10)),
            "still True"
        );
        assert_eq!(get(&l, "Ready").reason, "Synced");
        assert_eq!(get(&l, "Ready").observed_generation, Some(2));
        set_health(
            &mut l,
            reasons::DELETION_THRESHOLD_EXCEEDED,
            "guard",
            Some(2),
            t(40),
        );
        assert_eq!(get(&l, "Ready").status, "False");
        assert_eq!(get(&l, "Ready").last_transition_time, Time(t(40)));
        assert_eq!(get(&l, "Stalled").status, "True");
        assert_eq!(get(&l, "Stalled").reason, "DeletionThresholdExceeded");
        assert_eq!(get(&l, "Reconciling").status, "False");
        assert_eq!(
            l.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            ["Ready", "Reconciling", "Stalled"]
        );
    }

    #[test]
    fn transient_reasons_are_reconciling_not_stalled() {
        let mut l = Vec::new();
        set_health(
            &mut l,
            reasons::DESTINATION_UNAVAILABLE,
            "down",
            Some(1),
            t(1),
        );
        assert_eq!(get(&l, "Ready").status, "False");
        assert_eq!(get(&l, "Reconciling").status, "True");
        assert_eq!(get(&l, "Stalled").status, "False");
        set_health(&mut l, reasons::SECRET_NOT_FOUND, "missing", Some(1), t(2));
        assert_eq!(get(&l, "Reconciling").status, "False");
        assert_eq!(get(&l, "Stalled").status, "True");
        set_health(&mut l, reasons::PARTIALLY_FAILED, "2 failed", Some(1), t(3));
        assert_eq!(get(&l, "Ready").status, "False");
        assert_eq!(get(&l, "Stalled").status, "False");
        assert_eq!(get(&l, "Reconciling").status, "False");
    }

    #[test]
    fn merge_patch_nulls_removed_fields() {
        let old = DirectorySyncStatus {
            managed_users: Some(3),
            last_sync_now: Some("x".into()),
            ..Default::default()
        };
        let new = DirectorySyncStatus {
            managed_users: Some(4),
            ..Default::default()
        };
        let p = merge_patch(&old, &new);
        assert_eq!(p["managedUsers"], 4);
        assert_eq!(p["lastSyncNow"], Value::Null);
        assert!(p.as_object().is_some_and(|m| m.contains_key("lastSyncNow")));
    }

    #[test]
    fn merge_patch_nulls_removed_nested_fields() {
        let old = DirectorySyncStatus {
            approval: Some(crate::crd::ApprovalStatus {
                consumed: Some("sha256:a".into()),
                expired: Some("sha256:b".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let new = DirectorySyncStatus {
            approval: Some(crate::crd::ApprovalStatus {
                consumed: Some("sha256:c".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = merge_patch(&old, &new);
        assert_eq!(
            p["approval"],
            serde_json::json!({"consumed": "sha256:c", "expired": null})
        );
    }

    #[test]
    fn waiting_for_approval_is_neither_reconciling_nor_stalled() {
        for reason in [
            reasons::AWAITING_APPROVAL,
            reasons::APPROVAL_CONSUMED,
            reasons::APPROVAL_EXPIRED,
            reasons::PREVIEW_CHANGED,
        ] {
            let mut l = Vec::new();
            set_health(&mut l, reason, "waiting", Some(1), t(1));
            assert_eq!(get(&l, "Ready").status, "False", "{reason}");
            assert_eq!(get(&l, "Ready").reason, reason);
            assert_eq!(get(&l, "Reconciling").status, "False", "{reason}");
            assert_eq!(get(&l, "Stalled").status, "False", "{reason}");
        }
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let m = "é".repeat(1000);
        let c = cut_message(&m);
        assert!(c.len() <= 1024 + 3);
        assert!(c.ends_with('…'));
    }
}
