//! The pure sync core: no Kubernetes, no HTTP, no clock (docs/behaviour.md §2, §4, §6) — except that the
//! apply engine times its writes to pace how many it keeps in flight ([`limiter`]).
//!
//! A run is: [`mapping`] (source users → desired destination users, with the
//! [`immutable_id`]), [`plan`] (matching and rows), [`guard`] (the deletion guard), [`csv`]
//! and [`summary`] (the preview), and [`engine`], which reads both [`crate::directory::Directory`]s,
//! plans and applies. The [`managed`] set says which destination users a resource may change.
//! Nothing here knows which system is the source and which the destination, except the
//! mapping: [`reverse`] maps a SCIM source user to an Entra ID user (docs/behaviour.md §6).

pub mod approval;
pub mod config;
pub mod csv;
pub mod display;
pub mod engine;
pub mod guard;
pub mod gzip;
pub mod immutable_id;
pub mod incremental;
pub mod limiter;
pub mod managed;
pub mod mapping;
pub mod plan;
pub mod reason;
pub mod reverse;
pub mod summary;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;

pub use config::{ApprovalPolicy, DeletionPolicy, Direction, SyncConfig, UpnMode};
pub use engine::{
    ApplyObserver, ApplyOptions, ApplyOutcome, OtherResources, PlannedRun, RunError, RunResult,
    apply_run, plan_run,
};
pub use incremental::{DeltaState, FullReason, RunKind};
pub use managed::{ManagedEntry, ManagedSet, ManagedStore, StoreError};
pub use reason::{Health, Reason, Side};
