//! The preview's `summary.json` (docs/behaviour.md §4): counts, hand-overs and the guard verdict.

use serde::{Deserialize, Serialize};

use crate::sync::csv::CsvStats;
use crate::sync::guard::GuardVerdict;
use crate::sync::incremental::RunKind;
use crate::sync::mapping::Skipped;
use crate::sync::plan::{Action, Plan, PlanItem, UpdateKind};

/// Rows and users by what the plan does with them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub add: usize,
    /// Soft-deleted destination users brought back (docs/behaviour.md §6).
    #[serde(default)]
    pub restore: usize,
    pub update: usize,
    pub delete: usize,
    pub conflict: usize,
    pub unmanaged: usize,
    pub unchanged: usize,
    /// Released to another resource sharing the destination, with no write.
    pub handed_over: usize,
    /// Updates that are deactivations (`active` true → false), a subset of `update`.
    pub deactivate: usize,
    /// Updates that adopt a pre-existing destination user, a subset of `update`.
    pub adopt: usize,
    /// Rows flagged as resource-like accounts.
    pub resource_like: usize,
    /// Source users left out: guests, excluded resource-like accounts, UPNs outside the domain.
    pub skipped_guests: usize,
    pub skipped_resource_like: usize,
    pub skipped_out_of_domain: usize,
}

impl Counts {
    pub fn of(plan: &Plan, skipped: Skipped) -> Self {
        let mut c = Counts {
            unchanged: plan.unchanged,
            handed_over: plan.handed_over.len(),
            skipped_guests: skipped.guests,
            skipped_resource_like: skipped.resource_like,
            skipped_out_of_domain: skipped.out_of_domain,
            ..Counts::default()
        };
        for item in &plan.items {
            match item.action() {
                Action::Add => c.add += 1,
                Action::Restore => c.restore += 1,
                Action::Update => c.update += 1,
                Action::Delete => c.delete += 1,
                Action::Conflict => c.conflict += 1,
                Action::Unmanaged => c.unmanaged += 1,
            }
            match item {
                PlanItem::Update(u) => {
                    if item.is_deletion() {
                        c.deactivate += 1;
                    }
                    if u.kind == UpdateKind::Adopt {
                        c.adopt += 1;
                    }
                    c.resource_like += usize::from(u.resource_like);
                }
                PlanItem::Add { resource_like, .. } | PlanItem::Conflict { resource_like, .. } => {
                    c.resource_like += usize::from(*resource_like)
                }
                PlanItem::Restore(_) | PlanItem::Delete { .. } | PlanItem::Unmanaged { .. } => {}
            }
        }
        c
    }
}

/// `summary.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub domain: String,
    /// A preview only: nothing was or will be written by this run.
    pub dry_run: bool,
    /// The source had no users and nothing is managed (reason `NoSourceUsers`).
    pub no_source_users: bool,
    pub counts: Counts,
    pub guard: GuardVerdict,
    /// Set when the guard tripped: the cancel message, or for a dry run the note that applying
    /// would be cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard_message: Option<String>,
    /// userNames released to another resource (they are not CSV rows).
    #[serde(default)]
    pub handed_over: Vec<String>,
    /// CSV data rows (header excluded).
    pub rows: usize,
    /// sha256 of the CSV bytes, once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `Full` or `Incremental` (docs/behaviour.md §7): an incremental preview holds only the
    /// rows of the users that changed, and no Unmanaged rows.
    #[serde(default = "full")]
    pub kind: String,
    /// Why the run was full (a [`crate::sync::incremental::FullReason`] name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_reason: Option<String>,
}

fn full() -> String {
    "Full".to_owned()
}

impl Summary {
    pub fn new(
        domain: &str,
        plan: &Plan,
        skipped: Skipped,
        guard: &GuardVerdict,
        dry_run: bool,
        no_source_users: bool,
    ) -> Self {
        let guard_message = if dry_run {
            guard.dry_run_message()
        } else {
            guard.message()
        };
        Self {
            domain: domain.to_owned(),
            dry_run,
            no_source_users,
            counts: Counts::of(plan, skipped),
            guard: guard.clone(),
            guard_message,
            handed_over: plan
                .handed_over
                .iter()
                .map(|h| h.user_name.clone())
                .collect(),
            rows: plan.items.len(),
            sha256: None,
            kind: full(),
            full_reason: None,
        }
    }

    /// Records the run's kind.
    pub fn with_kind(self, kind: RunKind) -> Self {
        Self {
            kind: kind.as_str().to_owned(),
            full_reason: kind.full_reason().map(|r| r.as_str().to_owned()),
            ..self
        }
    }

    /// Records the written CSV's checksum.
    pub fn with_csv(mut self, stats: &CsvStats) -> Self {
        self.rows = stats.rows;
        self.sha256 = Some(stats.sha256.clone());
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
