//! dirsync: keeps a SCIM 2.0 user directory in step with Microsoft Entra ID.
//!
//! Layout (see README "Design notes"):
//! - [`directory`]: the common user model and the `Directory` trait both systems implement;
//! - [`sync`]: the pure core (mapping, Immutable ID, matching, plan, guard, CSV, managed set),
//!   with no Kubernetes and no HTTP in it;
//! - [`crd`]: the `DirectorySync` resource types (the CRD is generated from them);
//! - [`http`]: the outbound HTTP rules shared by both clients (timeouts, caps, retries);
//! - [`graph`], [`scim`]: the Microsoft Graph and SCIM 2.0 clients implementing `Directory`;
//! - [`controller`]: the Kubernetes operator (schedule, status, previews, managed set, leader election);
//! - [`cli`]: the command line.

pub mod cli;
pub mod controller;
pub mod crd;
pub mod directory;
pub mod duration;
pub mod graph;
pub mod http;
pub mod policy;
pub mod scim;
pub mod state_file;
pub mod sync;
