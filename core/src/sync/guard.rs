//! The deletion guard (docs/behaviour.md §2.6): cancels a whole run before any write when it would delete
//! or deactivate too large a share of the managed users.

use serde::{Deserialize, Serialize};

use crate::sync::plan::Plan;

/// The guard's verdict on a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuardVerdict {
    /// True when applying the plan is (or, for a dry run, would be) cancelled.
    pub tripped: bool,
    /// Delete rows plus deactivations (`active` true → false).
    pub deletes: usize,
    /// Managed users still present in the destination at plan time.
    pub managed: usize,
    /// `deletes` as an integer percentage of `managed`, rounded down, so that the shown figure
    /// reaches `maxAllowedDeletions` exactly when the guard trips. 100 when nothing is managed
    /// but something would be deactivated.
    pub percent: u64,
    pub max_allowed_deletions: u8,
}

/// Applies docs/behaviour.md §2.6: trips iff `deletes > 0 && deletes * 100 >= max * managed`.
/// (So 0 cancels any deletion, 100 cancels only deleting everyone, and an empty source read
/// while users are managed — every managed user a Delete row — always trips.)
pub fn check(deletes: usize, managed: usize, max_allowed_deletions: u8) -> GuardVerdict {
    let d = deletes as u128;
    let m = managed as u128;
    let tripped = deletes > 0 && d * 100 >= u128::from(max_allowed_deletions) * m;
    let percent = match (deletes, managed) {
        (0, _) => 0,
        (_, 0) => 100,
        _ => u64::try_from(d * 100 / m).unwrap_or(u64::MAX),
    };
    GuardVerdict {
        tripped,
        deletes,
        managed,
        percent,
        max_allowed_deletions,
    }
}

/// The guard's verdict on `plan`.
pub fn evaluate(plan: &Plan, max_allowed_deletions: u8) -> GuardVerdict {
    check(
        plan.deletions(),
        plan.managed_present,
        max_allowed_deletions,
    )
}

impl GuardVerdict {
    /// The figures part of the messages.
    fn figures(&self) -> String {
        format!(
            "{} of {} managed users ({} %) would be deleted or deactivated; maxAllowedDeletions is {} %.",
            self.deletes, self.managed, self.percent, self.max_allowed_deletions
        )
    }

    /// What happened to an applying run that is cancelled; `None` when not tripped. It speaks of
    /// the run only: each front end adds what to do next in its own terms.
    pub fn message(&self) -> Option<String> {
        self.tripped.then(|| {
            format!(
                "Synchronization was canceled because the deletion percentage reached the threshold: {}",
                self.figures()
            )
        })
    }

    /// The dry run's note: a preview is never cancelled, but says that applying it would be.
    pub fn dry_run_message(&self) -> Option<String> {
        self.tripped.then(|| {
            format!(
                "Applying this plan would be canceled because the deletion percentage reaches the threshold: {}",
                self.figures()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_message_with_the_run_numbers() {
        let v = check(70, 100, 65);
        assert!(v.tripped);
        assert_eq!(
            v.message().as_deref(),
            Some(
                "Synchronization was canceled because the deletion percentage reached the threshold: 70 of 100 managed users (70 %) would be deleted or deactivated; maxAllowedDeletions is 65 %."
            )
        );
        assert!(
            v.dry_run_message()
                .is_some_and(|m| m.contains("70 of 100 managed users (70 %)"))
        );
        // The core speaks of the run, not of how a front end is driven.
        for m in [v.message(), v.dry_run_message()].into_iter().flatten() {
            assert!(
                !m.contains("dirsync.io/") && !m.contains("annotation"),
                "{m}"
            );
        }
        assert_eq!(check(1, 100, 65).message(), None);
        assert_eq!(check(1, 100, 65).dry_run_message(), None);
    }

    #[test]
    fn sixty_five_cancels_at_sixty_five_percent_or_more() {
        assert!(!check(64, 100, 65).tripped);
        assert!(check(65, 100, 65).tripped);
        assert!(check(66, 100, 65).tripped);
        // 64.5 % is below 65 %, and shown as 64 %.
        let v = check(129, 200, 65);
        assert!(!v.tripped);
        assert_eq!(v.percent, 64);
        // 65.5 % trips and is shown as 65 %, never below the threshold.
        let v = check(131, 200, 65);
        assert!(v.tripped);
        assert_eq!(v.percent, 65);
    }

    #[test]
    fn zero_cancels_any_deletion() {
        assert!(check(1, 100_000, 0).tripped);
        assert_eq!(check(1, 100_000, 0).percent, 0);
        assert!(!check(0, 100, 0).tripped);
        assert!(!check(0, 0, 0).tripped);
    }

    #[test]
    fn hundred_cancels_only_deleting_everyone() {
        assert!(!check(99, 100, 100).tripped);
        assert!(check(100, 100, 100).tripped);
        assert!(check(1, 1, 100).tripped);
    }

    #[test]
    fn nothing_to_delete_never_trips() {
        for max in [0, 1, 65, 100] {
            assert!(!check(0, 0, max).tripped);
            assert!(!check(0, 10, max).tripped);
        }
    }

    #[test]
    fn deactivations_with_nothing_managed_trip_and_show_one_hundred() {
        let v = check(3, 0, 65);
        assert!(v.tripped);
        assert_eq!(v.percent, 100);
    }

    #[test]
    fn huge_numbers_do_not_overflow() {
        let v = check(usize::MAX, usize::MAX, 100);
        assert!(v.tripped);
        assert_eq!(v.percent, 100);
    }

    #[test]
    fn verdict_serializes_camel_case() {
        let json = serde_json::to_value(check(70, 100, 65)).expect("serializes");
        assert_eq!(json["maxAllowedDeletions"], 65);
        assert_eq!(json["tripped"], true);
    }
}
