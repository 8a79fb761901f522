//! Credentials from the resource's own namespace (Secrets, or a workload identity token), the
//! outbound endpoint policy ([`crate::controller::endpoint_policy`]) applied to them, and the per-resource Graph and
//! SCIM clients (docs/behaviour.md §8: per resource, keyed by its uid and a hash
//! of its credential and CA; `caBundleRef` only adds trust).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use url::Url;

use k8s_openapi::api::core::v1::ServiceAccount;
use prometheus_client::metrics::counter::Counter;

use crate::clients::graph::{ClientCertificate, GraphClient, GraphConfig, GraphCredential};
use crate::clients::outbound::{HttpConfig, RetryPolicy};
use crate::clients::scim::{ScimClient, ScimConfig};
use crate::controller::error::{Error, Result};
use crate::controller::workload_identity::{self, ServiceAccountToken};
use crate::crd::{DirectorySyncSpec, SecretKeyRef};
use crate::directory::ListingLimits;

pub use crate::controller::endpoint_policy::EndpointPolicy;

/// Settings for the clients the operator builds.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// The outbound endpoint policy (docs/behaviour.md §8).
    pub policy: Arc<EndpointPolicy>,
    /// Attempts per HTTP request (at most 6).
    pub http_max_attempts: u32,
    /// First retry delay of an HTTP request.
    pub http_retry_base: Duration,
    pub connect_timeout: Duration,
    /// Concurrent requests per destination.
    pub apply_concurrency: usize,
    /// Ceilings on one listing (users, bytes).
    pub listing_limits: ListingLimits,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            policy: Arc::new(EndpointPolicy::default()),
            http_max_attempts: RetryPolicy::MAX_ATTEMPTS,
            http_retry_base: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            apply_concurrency: 8,
            listing_limits: ListingLimits::default(),
        }
    }
}

impl ClientSettings {
    fn http(&self, extra_ca: Option<Vec<u8>>) -> HttpConfig {
        HttpConfig {
            connect_timeout: self.connect_timeout,
            run_timeout: None,
            extra_ca_pem: extra_ca,
            max_in_flight: self.apply_concurrency.max(1),
            retry: RetryPolicy {
                max_attempts: self.http_max_attempts,
                base_delay: self.http_retry_base,
                ..RetryPolicy::default()
            },
            ..HttpConfig::default()
        }
    }
}

/// Reads `r.key` of Secret `r.name` in `namespace`. `field` names the spec field in messages.
/// The value is never formatted anywhere.
pub async fn read_secret_key(
    secrets: &Api<Secret>,
    namespace: &str,
    r: &SecretKeyRef,
    field: &str,
) -> Result<Vec<u8>> {
    let secret = secrets
        .get_opt(&r.name)
        .await
        .map_err(Error::Kube)?
        .ok_or_else(|| {
            Error::LoadSecret(format!(
                "Secret {:?} (from {field}) was not found in namespace {namespace:?}",
                r.name
            ))
        })?;
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| b.0.clone());
    let from_string = || {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(&r.key))
            .map(|s| s.clone().into_bytes())
    };
    match from_data.or_else(from_string) {
        Some(v) if !v.is_empty() => Ok(v),
        Some(_) => Err(Error::LoadSecret(format!(
            "key {:?} of Secret {:?} (from {field}) in namespace {namespace:?} is empty",
            r.key, r.name
        ))),
        None => Err(Error::LoadSecret(format!(
            "Secret {:?} (from {field}) in namespace {namespace:?} has no key {:?}",
            r.name, r.key
        ))),
    }
}

fn to_secret_string(bytes: Vec<u8>, what: &str) -> Result<SecretString> {
    let s = String::from_utf8(bytes)
        .map_err(|_| Error::LoadSecret(format!("the {what} is not UTF-8 text")))?;
    Ok(SecretString::from(s.trim().to_owned()))
}

/// The credentials a resource's clients need, and a fingerprint of them plus the endpoints.
pub struct Credentials {
    graph: GraphCredential,
    graph_ca: Option<Vec<u8>>,
    scim_token: SecretString,
    scim_ca: Option<Vec<u8>>,
    fingerprint: String,
}

/// Loads every Secret key the spec references (SecretNotFound when one is missing).
/// `token_requests` counts the workload identity TokenRequests.
pub async fn load_credentials(
    client: &kube::Client,
    namespace: &str,
    spec: &DirectorySyncSpec,
    token_requests: &Counter,
) -> Result<Credentials> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let src = &spec.source.entra_id;
    let dst = &spec.destination.scim;
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&spec.source).unwrap_or_default());
    h.update(serde_json::to_vec(&spec.destination).unwrap_or_default());
    let mut feed = |label: &str, bytes: &[u8]| {
        h.update(label.as_bytes());
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    let graph = if let Some(r) = &src.client_secret_ref {
        let v = read_secret_key(
            &secrets,
            namespace,
            r,
            "spec.source.entraID.clientSecretRef",
        )
        .await?;
        feed("client-secret", &v);
        GraphCredential::ClientSecret(to_secret_string(v, "client secret")?)
    } else if let Some(r) = &src.client_certificate_ref {
        let v = read_secret_key(
            &secrets,
            namespace,
            r,
            "spec.source.entraID.clientCertificateRef",
        )
        .await?;
        feed("client-certificate", &v);
        let cert = ClientCertificate::from_pem(&v).map_err(|source| Error::BuildClient {
            side: "source",
            source,
        })?;
        GraphCredential::ClientCertificate(Arc::new(cert))
    } else if let Some(wi) = &src.workload_identity {
        // Checked here, before any token is requested; the provider checks again before
        // each later TokenRequest. The account's name and the client ID are in the spec,
        // which the fingerprint already covers.
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        let name = wi.service_account_name.clone();
        workload_identity::verify(&api, &name, namespace, &src.client_id)
            .await
            .map_err(Error::Kube)?
            .map_err(Error::WorkloadIdentity)?;
        GraphCredential::FederatedToken(Arc::new(ServiceAccountToken {
            api,
            name,
            namespace: namespace.to_owned(),
            client_id: src.client_id.clone(),
            requests: token_requests.clone(),
        }))
    } else {
        return Err(Error::InvalidSpec(
            "spec.source.entraID names no credential".into(),
        ));
    };
    let graph_ca = match &src.ca_bundle_ref {
        Some(r) => {
            let v =
                read_secret_key(&secrets, namespace, r, "spec.source.entraID.caBundleRef").await?;
            feed("graph-ca", &v);
            Some(v)
        }
        None => None,
    };
    let token = read_secret_key(
        &secrets,
        namespace,
        &dst.bearer_token_ref,
        "spec.destination.scim.bearerTokenRef",
    )
    .await?;
    feed("scim-token", &token);
    let scim_token = to_secret_string(token, "SCIM bearer token")?;
    let scim_ca = match &dst.ca_bundle_ref {
        Some(r) => {
            let v = read_secret_key(&secrets, namespace, r, "spec.destination.scim.caBundleRef")
                .await?;
            feed("scim-ca", &v);
            Some(v)
        }
        None => None,
    };
    let fingerprint = crate::sync::csv::hex(&h.finalize());
    Ok(Credentials {
        graph,
        graph_ca,
        scim_token,
        scim_ca,
        fingerprint,
    })
}

/// The two clients of one resource.
#[derive(Clone)]
pub struct ResourceClients {
    pub graph: GraphClient,
    pub scim: ScimClient,
}

/// Clients per resource uid, rebuilt when the credentials, CA or endpoints change (so a
/// token is reused across runs but never across resources).
#[derive(Default)]
pub struct ClientCache {
    entries: Mutex<HashMap<String, (String, ResourceClients)>>,
}

impl ClientCache {
    pub fn get_or_build(
        &self,
        uid: &str,
        spec: &DirectorySyncSpec,
        creds: Credentials,
        settings: &ClientSettings,
    ) -> Result<ResourceClients> {
        if let Ok(map) = self.entries.lock()
            && let Some((fp, c)) = map.get(uid)
            && *fp == creds.fingerprint
        {
            return Ok(c.clone());
        }
        let src = &spec.source.entra_id;
        let parse = |what: &str, s: &str| {
            Url::parse(s).map_err(|_| Error::InvalidSpec(format!("{what} is not a valid URL")))
        };
        let authority = parse("spec.source.entraID.authorityHost", &src.authority_host)?;
        let graph_endpoint = parse("spec.source.entraID.graphEndpoint", &src.graph_endpoint)?;
        let scim_url = parse(
            "spec.destination.scim.endpoint",
            &spec.destination.scim.endpoint,
        )?;
        let policy = &settings.policy;
        policy
            .check_authority(&authority)
            .and_then(|()| policy.check_graph(&graph_endpoint))
            .and_then(|()| policy.check_scim_url(&scim_url))
            .map_err(Error::EndpointPolicy)?;

        let mut gcfg = GraphConfig::new(src.tenant_id.clone(), src.client_id.clone(), creds.graph);
        gcfg.authority_host = authority;
        gcfg.graph_endpoint = graph_endpoint;
        gcfg.http = settings.http(creds.graph_ca);
        gcfg.limits = settings.listing_limits;
        let graph = GraphClient::new(gcfg).map_err(|source| Error::BuildClient {
            side: "source",
            source,
        })?;

        let mut scfg = ScimConfig::new(scim_url, creds.scim_token);
        let attr = spec.destination.scim.user_principal_name_attribute.trim();
        scfg.upn_attribute = (!attr.is_empty()).then(|| attr.to_owned());
        scfg.http = settings.http(creds.scim_ca);
        scfg.limits = settings.listing_limits;
        // Host names are checked at every connect (IP literals were checked above).
        scfg.http.resolver = Some(policy.resolver());
        let scim = ScimClient::new(scfg).map_err(|source| Error::BuildClient {
            side: "destination",
            source,
        })?;

        let clients = ResourceClients { graph, scim };
        if let Ok(mut map) = self.entries.lock() {
            map.insert(uid.to_owned(), (creds.fingerprint, clients.clone()));
        }
        Ok(clients)
    }

    /// Forgets a resource's clients (it was deleted).
    pub fn forget(&self, uid: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.remove(uid);
        }
    }
}

/// The one normal form of a SCIM endpoint for comparing two resources' destinations (and keying
/// the per-destination lock): trimmed, without a trailing slash, lower-case.
pub fn endpoint_key(endpoint: &str) -> String {
    endpoint.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Whether a Secret named `secret` is referenced by `obj`.
pub fn references_secret(obj: &crate::crd::DirectorySync, secret: &str) -> bool {
    let src = &obj.spec.source.entra_id;
    let dst = &obj.spec.destination.scim;
    let names: std::collections::HashSet<&str> = [
        src.client_secret_ref.as_ref().map(|r| r.name.as_str()),
        src.client_certificate_ref.as_ref().map(|r| r.name.as_str()),
        src.ca_bundle_ref.as_ref().map(|r| r.name.as_str()),
        Some(dst.bearer_token_ref.name.as_str()),
        dst.ca_bundle_ref.as_ref().map(|r| r.name.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect();
    names.contains(secret)
}
