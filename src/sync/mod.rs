//! The pure sync core: no Kubernetes, no HTTP.

pub mod config;
