//! dirsync: keeps a SCIM 2.0 user directory in step with Microsoft Entra ID.
//!
//! Layout (docs/ARCHITECTURE.md):
//! - [`directory`], [`sync`]: the pure core, its own crate (`dirsync-core`, re-exported here):
//!   the user model and the `Directory` trait, mapping, plan, guard, CSV, approvals, managed set
//!   and engine, with no Kubernetes and no HTTP in it;
//! - [`crd`]: the `DirectorySync` resource types (the CRD is generated from them);
//! - [`http`]: the outbound HTTP rules shared by both clients (timeouts, caps, retries);
//! - [`graph`], [`scim`]: the Microsoft Graph and SCIM 2.0 clients implementing `Directory`;
//! - [`controller`]: the Kubernetes operator (schedule, status, previews, managed set, leader election);
//! - [`cli`]: the command line.

pub mod cli;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod graph;
pub mod http;
pub mod policy;
pub mod scim;
pub mod state_file;

pub use dirsync_core::{directory, sync};
