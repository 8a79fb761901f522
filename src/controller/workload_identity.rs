//! Workload identity (docs/behaviour.md §8): the resource names a ServiceAccount in its own namespace; the
//! operator asks the API server for that account's token (TokenRequest, audience exactly
//! `api://AzureADTokenExchange`, 10-minute lifetime) and presents it to Entra as the client
//! assertion of a federated credential.
//!
//! - Only when the account carries `azure.workload.identity/client-id` equal to the resource's
//!   `clientID` — checked before the first token and again before every later one, so removing
//!   the annotation takes effect at the next Graph token request.
//! - The account is looked up in the resource's namespace only (the CRD's name pattern admits
//!   no `/` or `:`), so one namespace can never borrow another's identity.
//! - The token is never cached (a new TokenRequest for every Graph token request, which the
//!   Graph client itself makes about hourly) and never logged: it lives in a `SecretString`
//!   from the API server's answer to the token form field.

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
use prometheus_client::metrics::counter::Counter;
use secrecy::SecretString;

use crate::clients::graph::AssertionProvider;
use crate::directory::DirectoryError;

/// The annotation Azure Workload Identity puts on a ServiceAccount.
pub const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
/// The audience Entra expects of a federated token.
pub const AUDIENCE: &str = "api://AzureADTokenExchange";
/// Lifetime asked of the API server (its minimum).
pub const EXPIRATION_SECONDS: i64 = 600;

/// Why a ServiceAccount may not be used for a resource, or `Ok` when it may.
/// `entra_field` is where the Entra ID block is (`spec.source.entraID` or
/// `spec.destination.entraID`), for the message.
pub fn check_account(
    sa: Option<&ServiceAccount>,
    name: &str,
    namespace: &str,
    client_id: &str,
    entra_field: &str,
) -> Result<(), String> {
    let Some(sa) = sa else {
        return Err(format!(
            "workloadIdentity: ServiceAccount {name:?} was not found in namespace {namespace:?} \
             (it must be in the resource's own namespace)"
        ));
    };
    match sa
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLIENT_ID_ANNOTATION))
    {
        None => Err(format!(
            "workloadIdentity: ServiceAccount {name:?} in namespace {namespace:?} has no \
             annotation {CLIENT_ID_ANNOTATION}; set it to this resource's clientID"
        )),
        Some(v) if v.trim() != client_id.trim() => Err(format!(
            "workloadIdentity: the annotation {CLIENT_ID_ANNOTATION} of ServiceAccount {name:?} \
             in namespace {namespace:?} does not equal {entra_field}.clientID; no token \
             was requested"
        )),
        Some(_) => Ok(()),
    }
}

/// Reads the ServiceAccount and checks it (see [`check_account`]). The outer error is a
/// Kubernetes API failure, the inner one a refusal.
pub async fn verify(
    api: &Api<ServiceAccount>,
    name: &str,
    namespace: &str,
    client_id: &str,
    entra_field: &str,
) -> Result<Result<(), String>, kube::Error> {
    let sa = api.get_opt(name).await?;
    Ok(check_account(
        sa.as_ref(),
        name,
        namespace,
        client_id,
        entra_field,
    ))
}

/// The [`AssertionProvider`] of one resource: a TokenRequest per Graph token request.
pub struct ServiceAccountToken {
    pub api: Api<ServiceAccount>,
    pub name: String,
    pub namespace: String,
    pub client_id: String,
    /// `spec.source.entraID` or `spec.destination.entraID`, for messages.
    pub entra_field: &'static str,
    /// `dirsync_token_requests_total`.
    pub requests: Counter,
}

#[async_trait]
impl AssertionProvider for ServiceAccountToken {
    async fn assertion(&self) -> Result<SecretString, DirectoryError> {
        let unavailable = |e: kube::Error| {
            DirectoryError::Unavailable(crate::clients::outbound::cut(&format!(
                "workloadIdentity: Kubernetes API: {}",
                kube_error_summary(&e)
            )))
        };
        verify(
            &self.api,
            &self.name,
            &self.namespace,
            &self.client_id,
            self.entra_field,
        )
        .await
        .map_err(unavailable)?
        .map_err(DirectoryError::InvalidCredentials)?;
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![AUDIENCE.to_owned()]),
                expiration_seconds: Some(EXPIRATION_SECONDS),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.requests.inc();
        let answer = self
            .api
            .create_token_request(&self.name, &PostParams::default(), &req)
            .await
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 403 || s.code == 404 => {
                    DirectoryError::InvalidCredentials(crate::clients::outbound::cut(&format!(
                        "workloadIdentity: the API server refused a token for ServiceAccount {:?}: HTTP {} {}",
                        self.name, s.code, s.reason
                    )))
                }
                _ => unavailable(e),
            })?;
        let token = answer.status.and_then(|s| s.token).unwrap_or_default();
        if token.is_empty() {
            return Err(DirectoryError::Unavailable(
                "workloadIdentity: the API server returned no token".into(),
            ));
        }
        Ok(SecretString::from(token))
    }
}

/// A Kubernetes error without its body text: the status code and reason only.
fn kube_error_summary(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("HTTP {} {}", s.code, s.reason),
        other => {
            // Transport errors name no secret; keep the first line only.
            let s = other.to_string();
            s.lines().next().unwrap_or_default().to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn sa(annotation: Option<&str>) -> ServiceAccount {
        let mut sa = ServiceAccount::default();
        sa.metadata.name = Some("dirsync".into());
        if let Some(v) = annotation {
            sa.metadata.annotations = Some(BTreeMap::from([(
                CLIENT_ID_ANNOTATION.to_owned(),
                v.to_owned(),
            )]));
        }
        sa
    }

    #[test]
    fn only_an_account_annotated_with_the_client_id_is_used() {
        let at = "spec.destination.entraID";
        assert!(check_account(Some(&sa(Some("app-1"))), "dirsync", "a", "app-1", at).is_ok());
        let e = check_account(Some(&sa(Some("app-2"))), "dirsync", "a", "app-1", at).unwrap_err();
        assert!(
            e.contains("does not equal spec.destination.entraID.clientID") && !e.contains("app-2"),
            "{e}"
        );
        let e = check_account(Some(&sa(None)), "dirsync", "a", "app-1", at).unwrap_err();
        assert!(e.contains("has no annotation"), "{e}");
        let e = check_account(None, "dirsync", "a", "app-1", at).unwrap_err();
        assert!(e.contains("not found in namespace \"a\""), "{e}");
        assert!(check_account(Some(&sa(Some(""))), "dirsync", "a", "app-1", at).is_err());
    }
}
