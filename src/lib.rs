//! dirsync: keeps a SCIM 2.0 user directory in step with Microsoft Entra ID.
//!
//! Layout (docs/ARCHITECTURE.md):
//! - [`directory`], [`sync`]: the pure core, its own crate (`dirsync-core`, re-exported here):
//!   the user model and the `Directory` trait, mapping, plan, guard, CSV, approvals, managed set
//!   and engine, with no Kubernetes and no HTTP in it;
//! - [`crd`]: the `DirectorySync` resource types (the CRD is generated from them);
//! - [`clients`]: the Microsoft Graph and SCIM 2.0 clients implementing `Directory`, and the
//!   outbound HTTP rules they share (timeouts, caps, retries);
//! - [`controller`]: the Kubernetes operator (pipeline, schedule, status, previews, managed set,
//!   approvals, endpoint policy, leader election);
//! - [`cli`]: the command line (plan, apply and its state file, preview get, the operator's
//!   flags).

pub mod cli;
pub mod clients;
pub mod controller;
pub mod crd;
pub mod duration;

pub use dirsync_core::{directory, sync};
