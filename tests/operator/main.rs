//! `dirsync operator` against the real control plane (etcd + kube-apiserver built from their
//! Go modules, testenv), the Graph emulator and the real `scim2-server`: one test binary, so
//! every test shares one control plane (a namespace each) instead of starting its own.
//! `common` holds the harness and the [`common::Scenario`] builder most tests start with.

// Shared with tests/chart (the chart's install test runs the operator too).
#[path = "../operator_common/mod.rs"]
mod common;

mod approval;
mod basic;
mod errors;
mod ha;
mod housekeeping;
mod incremental;
mod periodic;
mod reverse;
mod scale;
mod secrets;
mod security;
mod store;
