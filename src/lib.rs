//! dirsync: keeps a SCIM 2.0 user directory in step with Microsoft Entra ID.
//!
//! Layout (see README "Design notes"):
//! - [`directory`]: the common user model and the `Directory` trait both systems implement;
//! - [`sync`]: the pure core (mapping, Immutable ID, matching, plan, guard, CSV, managed set),
//!   with no Kubernetes and no HTTP in it;
//! - [`crd`]: the `DirectorySync` resource types (the CRD is generated from them);
//! - [`cli`]: the command line.

pub mod cli;
pub mod crd;
pub mod directory;
pub mod sync;
