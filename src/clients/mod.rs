//! The outbound side: the clients of the two directories, behind the core's `Directory` trait
//! (`core/src/directory.rs`), and the rules every outbound request follows. They use the core's
//! user model only — never the sync engine, the operator or the CLI (`tests/architecture.rs`).
//!
//! - [`outbound`]: timeouts, body caps, retries, no redirects, TLS roots (shared by both);
//! - [`graph`]: Microsoft Graph (tokens, paging, throttling);
//! - [`scim`]: SCIM 2.0.

pub mod graph;
pub mod outbound;
pub mod scim;
