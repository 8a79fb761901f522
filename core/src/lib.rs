//! dirsync's pure core: what a run means, with no Kubernetes and no HTTP in it.
//!
//! - [`directory`]: the common user model and the [`directory::Directory`] trait that the Graph
//!   and SCIM clients (in the `dirsync` crate) implement, either as source or as destination;
//! - [`sync`]: mapping, the Immutable ID, matching and the plan, the deletion guard, the preview
//!   CSV and summary, approvals, the managed set, and the engine that plans and applies through
//!   two `Directory`s.
//!
//! `tests/dependencies.rs` keeps it that way: CI fails if a Kubernetes, HTTP or networking crate
//! enters this crate's dependencies (docs/ARCHITECTURE.md).

pub mod directory;
pub mod sync;
