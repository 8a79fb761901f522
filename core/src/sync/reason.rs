//! The one vocabulary of how a run ended (docs/behaviour.md §4): the reason every front end
//! shows — the operator's conditions, Events, metrics and run reports, the CLI's messages — and
//! the kstatus health each reason stands for. Front ends add their own "what to do next".

use serde::{Deserialize, Serialize};

use crate::directory::DirectoryError;

/// Why a run (or a reconcile) ended as it did. Serialised as its name, which is also the
/// condition reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// A dry run wrote its preview.
    PreviewReady,
    /// The plan was applied.
    Synced,
    /// Some writes failed; the others were made.
    PartiallyFailed,
    /// The deletion guard cancelled the run before any write.
    DeletionThresholdExceeded,
    /// The source had no users and nothing is managed.
    NoSourceUsers,
    /// The tenant has no such domain.
    DomainNotFound,
    /// The plan needs an approved preview (docs/behaviour.md §9); nothing was written.
    AwaitingApproval,
    /// The approval was already used; nothing was written.
    ApprovalConsumed,
    /// The approval names a pending preview that expired; nothing was written.
    ApprovalExpired,
    /// The approval is not the pending preview; nothing was written.
    PreviewChanged,
    InvalidCredentials,
    SecretNotFound,
    SourceUnavailable,
    DestinationUnavailable,
    EndpointNotAllowed,
    PreviewConflict,
    InvalidSpec,
    ManagedSetUnavailable,
    KubernetesApiError,
    /// A run is in progress (the Reconciling condition).
    Running,
    Waiting,
    RunClaimedElsewhere,
}

/// How a reason maps onto kstatus conditions (`Ready`, `Reconciling`, `Stalled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Ready=True.
    Ready,
    /// Ready=False, Reconciling=True: being retried with backoff, or running.
    Progressing,
    /// Ready=False, Stalled=True: needs a person (credentials, Secret, guard, policy, ...).
    Stalled,
    /// Ready=False, neither reconciling nor stalled: the run ended with failures and waits for
    /// the next slot, a spec change or sync-now.
    Degraded,
    /// Ready=False, neither reconciling nor stalled: nothing was written and the run waits for
    /// an approved preview (Argo CD: Suspended).
    Suspended,
}

impl Reason {
    /// Every reason, for lookups by name.
    pub const ALL: [Reason; 22] = [
        Reason::PreviewReady,
        Reason::Synced,
        Reason::PartiallyFailed,
        Reason::DeletionThresholdExceeded,
        Reason::NoSourceUsers,
        Reason::DomainNotFound,
        Reason::AwaitingApproval,
        Reason::ApprovalConsumed,
        Reason::ApprovalExpired,
        Reason::PreviewChanged,
        Reason::InvalidCredentials,
        Reason::SecretNotFound,
        Reason::SourceUnavailable,
        Reason::DestinationUnavailable,
        Reason::EndpointNotAllowed,
        Reason::PreviewConflict,
        Reason::InvalidSpec,
        Reason::ManagedSetUnavailable,
        Reason::KubernetesApiError,
        Reason::Running,
        Reason::Waiting,
        Reason::RunClaimedElsewhere,
    ];

    /// The CamelCase name conditions, events and metrics carry.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::PreviewReady => "PreviewReady",
            Reason::Synced => "Synced",
            Reason::PartiallyFailed => "PartiallyFailed",
            Reason::DeletionThresholdExceeded => "DeletionThresholdExceeded",
            Reason::NoSourceUsers => "NoSourceUsers",
            Reason::DomainNotFound => "DomainNotFound",
            Reason::AwaitingApproval => "AwaitingApproval",
            Reason::ApprovalConsumed => "ApprovalConsumed",
            Reason::ApprovalExpired => "ApprovalExpired",
            Reason::PreviewChanged => "PreviewChanged",
            Reason::InvalidCredentials => "InvalidCredentials",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SourceUnavailable => "SourceUnavailable",
            Reason::DestinationUnavailable => "DestinationUnavailable",
            Reason::EndpointNotAllowed => "EndpointNotAllowed",
            Reason::PreviewConflict => "PreviewConflict",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::ManagedSetUnavailable => "ManagedSetUnavailable",
            Reason::KubernetesApiError => "KubernetesApiError",
            Reason::Running => "Running",
            Reason::Waiting => "Waiting",
            Reason::RunClaimedElsewhere => "RunClaimedElsewhere",
        }
    }

    /// The reason named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// The kstatus health this reason stands for.
    pub fn health(self) -> Health {
        use Reason::*;
        match self {
            PreviewReady | Synced => Health::Ready,
            PartiallyFailed => Health::Degraded,
            AwaitingApproval | ApprovalConsumed | ApprovalExpired | PreviewChanged => {
                Health::Suspended
            }
            SourceUnavailable
            | DestinationUnavailable
            | KubernetesApiError
            | ManagedSetUnavailable
            | Running
            | Waiting
            | RunClaimedElsewhere => Health::Progressing,
            DeletionThresholdExceeded
            | NoSourceUsers
            | DomainNotFound
            | InvalidCredentials
            | SecretNotFound
            | EndpointNotAllowed
            | PreviewConflict
            | InvalidSpec => Health::Stalled,
        }
    }

    /// Whether a run that ended so is done for its trigger (nothing is retried until the next
    /// slot, a spec change or sync-now).
    pub fn is_settled(self) -> bool {
        use Reason::*;
        matches!(
            self,
            PreviewReady
                | Synced
                | PartiallyFailed
                | DeletionThresholdExceeded
                | NoSourceUsers
                | DomainNotFound
                | AwaitingApproval
                | ApprovalConsumed
                | ApprovalExpired
                | PreviewChanged
        )
    }

    /// The reason a failed read or write of one side gives: refused credentials and refused
    /// endpoints are their own reasons, anything else makes that side unavailable.
    pub fn of_directory_error(e: &DirectoryError, side: Side) -> Reason {
        match e {
            DirectoryError::InvalidCredentials(_) => Reason::InvalidCredentials,
            DirectoryError::EndpointNotAllowed(_) => Reason::EndpointNotAllowed,
            _ => match side {
                Side::Source => Reason::SourceUnavailable,
                Side::Destination => Reason::DestinationUnavailable,
            },
        }
    }
}

/// Which directory of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_serialise_as_themselves() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
            assert_eq!(
                serde_json::to_value(r).ok(),
                Some(serde_json::Value::String(r.as_str().into()))
            );
        }
        assert_eq!(Reason::parse("Success"), None);
    }

    #[test]
    fn waiting_for_approval_is_settled_and_suspended_and_errors_are_retried() {
        for r in [Reason::AwaitingApproval, Reason::PreviewChanged] {
            assert!(r.is_settled());
            assert_eq!(r.health(), Health::Suspended);
        }
        assert_eq!(Reason::DeletionThresholdExceeded.health(), Health::Stalled);
        assert!(!Reason::SourceUnavailable.is_settled());
        assert_eq!(Reason::SourceUnavailable.health(), Health::Progressing);
        assert!(!Reason::InvalidCredentials.is_settled());
        assert_eq!(
            Reason::of_directory_error(&DirectoryError::Unavailable("x".into()), Side::Destination),
            Reason::DestinationUnavailable
        );
        assert_eq!(
            Reason::of_directory_error(
                &DirectoryError::InvalidCredentials("x".into()),
                Side::Source
            ),
            Reason::InvalidCredentials
        );
    }
}
