//! Scenario tests of the sync core: matching rules, each action, hand-over, the guard on real
//! plans, the CSV's exact bytes, and the engine against the in-memory directory.
//!
//! One file per topic; the imports and fixtures they share are here (`use super::*;`).

mod batching;
mod csv_and_summary;
mod engine;
mod engine_failures;
mod engine_progress;
mod guard;
mod handover;
mod incremental;
mod matching;
mod ordering;
mod plan_actions;
mod removal;
mod reverse;
mod scale;

use std::collections::HashSet;

use crate::directory::{Directory, DirectoryError, User};
use crate::sync::config::{DeletionPolicy, SyncConfig, UpnMode};
use crate::sync::csv::write_preview_csv;
use crate::sync::engine::{
    ApplyObserver, ApplyOptions, NoProgress, OtherResources, PlannedRun, RunError, RunResult,
    apply_run, plan_run,
};
use crate::sync::managed::{ManagedEntry, ManagedSet};
use crate::sync::mapping::map_source_users;
use crate::sync::plan::{Action, Change, Field, Plan, PlanContext, PlanItem, UpdateKind, plan};
use crate::sync::testing::{
    FakeDirectory, entra_user, guid, hand_made, immutable_id_of, scim_twin,
};

const DOMAIN: &str = "example.com";

fn cfg() -> SyncConfig {
    SyncConfig::new(DOMAIN, UpnMode::Enabled, 65)
}

fn managed_of(users: &[(u128, &str, &str)]) -> ManagedSet {
    users
        .iter()
        .map(|(n, dest_id, user_name)| {
            (
                immutable_id_of(*n),
                ManagedEntry {
                    destination_id: (*dest_id).to_owned(),
                    source_id: guid(*n),
                    user_name: (*user_name).to_owned(),
                },
            )
        })
        .collect()
}

struct Others {
    elsewhere: HashSet<String>,
    handed: HashSet<String>,
}

impl Others {
    fn none() -> Self {
        Self {
            elsewhere: HashSet::new(),
            handed: HashSet::new(),
        }
    }
}

fn plan_with(
    cfg: &SyncConfig,
    source: Vec<User>,
    dest: Vec<User>,
    managed: &ManagedSet,
    others: &Others,
) -> Plan {
    let mapped = map_source_users(cfg, source).expect("source maps");
    let ctx = PlanContext {
        managed,
        managed_elsewhere: &others.elsewhere,
        handed_over: &others.handed,
    };
    plan(cfg, mapped.users, dest, &ctx)
}

fn plan_simple(cfg: &SyncConfig, source: Vec<User>, dest: Vec<User>, managed: &ManagedSet) -> Plan {
    plan_with(cfg, source, dest, managed, &Others::none())
}

fn actions(plan: &Plan) -> Vec<(Action, String)> {
    plan.items
        .iter()
        .map(|i| (i.action(), i.user_name().to_owned()))
        .collect()
}

fn only(plan: &Plan) -> &PlanItem {
    assert_eq!(plan.items.len(), 1, "expected one row: {:#?}", plan.items);
    &plan.items[0]
}

fn reason(item: &PlanItem) -> &str {
    match item {
        PlanItem::Conflict { reason, .. } => reason,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn managed_population(n: u128) -> (Vec<User>, Vec<User>, ManagedSet) {
    let source: Vec<User> = (1..=n)
        .map(|i| entra_user(i, &format!("u{i}@example.com")))
        .collect();
    let dest: Vec<User> = source
        .iter()
        .map(|u| scim_twin(&format!("d{}", u.id), u))
        .collect();
    let managed = source
        .iter()
        .zip(&dest)
        .map(|(s, d)| {
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
    (source, dest, managed)
}

// ---------------------------------------------------------------- the engine

fn others_none() -> OtherResources {
    OtherResources::default()
}

async fn plan_and_apply(
    source: &FakeDirectory,
    dest: &FakeDirectory,
    cfg: &SyncConfig,
    managed: &ManagedSet,
    others: &OtherResources,
) -> (PlannedRun, crate::sync::engine::ApplyOutcome) {
    let planned = plan_run(source, dest, cfg, managed, others)
        .await
        .expect("plans");
    let outcome = apply_run(&planned, dest, &ApplyOptions::default(), &mut NoProgress).await;
    (planned, outcome)
}

fn tenant(users: &[(u128, &str)]) -> FakeDirectory {
    FakeDirectory::with_users(users.iter().map(|(n, upn)| entra_user(*n, upn)))
}

/// A destination whose reads (`get_user`, `find_by_user_name`) or writes take `delay` each, all
/// at once (a server that works in parallel), counting how many are in flight.
struct Slow {
    inner: FakeDirectory,
    delay: std::time::Duration,
    reads: bool,
    now: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

impl Slow {
    fn writes(inner: FakeDirectory, delay: std::time::Duration) -> Self {
        Self {
            inner,
            delay,
            reads: false,
            now: Default::default(),
            peak: Default::default(),
        }
    }

    fn reads(inner: FakeDirectory, delay: std::time::Duration) -> Self {
        Self {
            reads: true,
            ..Self::writes(inner, delay)
        }
    }

    /// The most slow calls that were in flight at once.
    fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn call<T>(&self, slow: bool, f: impl Future<Output = T>) -> T {
        use std::sync::atomic::Ordering::SeqCst;
        if !slow {
            return f.await;
        }
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(n, SeqCst);
        tokio::time::sleep(self.delay).await;
        let r = f.await;
        self.now.fetch_sub(1, SeqCst);
        r
    }
}

#[async_trait::async_trait]
impl Directory for Slow {
    async fn list_users(
        &self,
        scope: &crate::directory::ListScope,
    ) -> Result<Vec<User>, DirectoryError> {
        self.inner.list_users(scope).await
    }
    async fn get_user(&self, id: &str) -> Result<Option<User>, DirectoryError> {
        self.call(self.reads, self.inner.get_user(id)).await
    }
    async fn find_by_user_name(&self, user_name: &str) -> Result<Vec<User>, DirectoryError> {
        self.call(self.reads, self.inner.find_by_user_name(user_name))
            .await
    }
    async fn create_user(
        &self,
        user: &crate::directory::DesiredUser,
    ) -> Result<User, DirectoryError> {
        self.call(!self.reads, self.inner.create_user(user)).await
    }
    async fn update_user(
        &self,
        id: &str,
        current: &User,
        desired: &crate::directory::DesiredUser,
        expected: Option<&str>,
    ) -> Result<(), DirectoryError> {
        self.call(
            !self.reads,
            self.inner.update_user(id, current, desired, expected),
        )
        .await
    }
    async fn delete_user(&self, id: &str, expected: Option<&str>) -> Result<(), DirectoryError> {
        self.call(!self.reads, self.inner.delete_user(id, expected))
            .await
    }
}

// Keep the trait object form used by the CLI and operator compiling.
#[allow(dead_code)]
fn directories_are_object_safe(d: &dyn Directory) -> &dyn Directory {
    d
}
