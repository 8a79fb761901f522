//! A real Kubernetes control plane for dirsync's tests and demo: etcd + kube-apiserver (and,
//! when installed, kube-controller-manager) built by `tools/setup.sh`, started on free loopback
//! ports with generated certificates. See `testenv/README.md`.
//!
//! ```no_run
//! # async fn demo() {
//! use dirsync_testenv::ControlPlane;
//! let cp = ControlPlane::shared();              // one per test binary, started on first use
//! let ns = cp.namespace("my-test").await;       // a fresh namespace per test
//! let cms = ns.api::<k8s_openapi::api::core::v1::ConfigMap>();
//! let out = cp.kubectl().args(["get", "ns", ns.name()]).output().unwrap();
//! # }
//! ```

pub mod certs;
pub mod control_plane;
pub mod emulator;
pub mod proc;
pub mod scim;
pub mod tools;

pub use control_plane::{
    ControlPlane, FIELD_MANAGER, Options, TestNamespace, apply_crds, read_crds,
};
pub use scim::Scim2Server;
pub use tools::{Tools, tools};
