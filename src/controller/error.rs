//! The reconciler's errors, one variant per pipeline step. [`Error::reason`] is the core's
//! [`Reason`] used for conditions, events and the `reason` label of metrics; messages never carry
//! a secret (Secret values are never formatted, and directory errors are already cut to a
//! status and an error code).

use crate::directory::DirectoryError;
use crate::sync::{Reason, Side, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the object has no {0}")]
    MissingObjectKey(&'static str),

    /// A referenced Secret, or the key in it, does not exist (or is empty).
    #[error("{0}")]
    LoadSecret(String),

    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    /// The workload identity's ServiceAccount is missing or not annotated for this app
    /// (no token was requested).
    #[error("{0}")]
    WorkloadIdentity(String),

    /// Refused by the outbound endpoint policy (docs/behaviour.md §8).
    #[error("endpoint not allowed: {0}")]
    EndpointPolicy(String),

    #[error("building the {side} client: {source}")]
    BuildClient {
        side: &'static str,
        #[source]
        source: DirectoryError,
    },

    #[error("reading the source: {0}")]
    FetchSource(DirectoryError),

    #[error("reading the destination: {0}")]
    FetchDestination(DirectoryError),

    #[error("the tenant has no domain {0:?} (Graph /domains)")]
    DomainNotFound(String),

    #[error("loading the managed set: {0}")]
    LoadManagedSet(#[source] StoreError),

    #[error("saving the managed set: {0}")]
    SaveManagedSet(#[source] StoreError),

    #[error("{0}")]
    PreviewConflict(String),

    #[error("publishing the preview: {0}")]
    PublishPreview(#[source] kube::Error),

    #[error("writing the run report: {0}")]
    WriteReport(#[source] kube::Error),

    #[error("claiming the run: {0}")]
    ClaimRun(#[source] kube::Error),

    #[error("writing status: {0}")]
    PatchStatus(#[source] kube::Error),

    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
}

impl Error {
    /// The reason for conditions, events and metrics.
    pub fn reason(&self) -> Reason {
        match self {
            Error::MissingObjectKey(_) | Error::InvalidSpec(_) => Reason::InvalidSpec,
            Error::LoadSecret(_) => Reason::SecretNotFound,
            Error::WorkloadIdentity(_) => Reason::InvalidCredentials,
            Error::EndpointPolicy(_) => Reason::EndpointNotAllowed,
            Error::BuildClient { source, .. } => match source {
                DirectoryError::InvalidCredentials(_) => Reason::InvalidCredentials,
                DirectoryError::EndpointNotAllowed(_) => Reason::EndpointNotAllowed,
                _ => Reason::InvalidSpec,
            },
            Error::FetchSource(e) => Reason::of_directory_error(e, Side::Source),
            Error::FetchDestination(e) => Reason::of_directory_error(e, Side::Destination),
            Error::DomainNotFound(_) => Reason::DomainNotFound,
            Error::LoadManagedSet(_) | Error::SaveManagedSet(_) => Reason::ManagedSetUnavailable,
            Error::PreviewConflict(_) => Reason::PreviewConflict,
            Error::PublishPreview(_)
            | Error::WriteReport(_)
            | Error::ClaimRun(_)
            | Error::PatchStatus(_)
            | Error::Kube(_) => Reason::KubernetesApiError,
        }
    }

    /// The step that failed, for logs.
    pub fn step(&self) -> &'static str {
        match self {
            Error::MissingObjectKey(_) | Error::InvalidSpec(_) => "Validate",
            Error::LoadSecret(_) | Error::WorkloadIdentity(_) => "LoadCredentials",
            Error::EndpointPolicy(_) | Error::BuildClient { .. } => "BuildClients",
            Error::FetchSource(_) | Error::DomainNotFound(_) => "FetchSourceUsers",
            Error::FetchDestination(_) => "ListDestinationUsers",
            Error::LoadManagedSet(_) => "LoadManagedSet",
            Error::SaveManagedSet(_) => "SaveManagedSet",
            Error::PreviewConflict(_) | Error::PublishPreview(_) => "PublishPreview",
            Error::WriteReport(_) => "WriteReport",
            Error::ClaimRun(_) => "ClaimRun",
            Error::PatchStatus(_) => "PatchStatus",
            Error::Kube(_) => "KubernetesApi",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
