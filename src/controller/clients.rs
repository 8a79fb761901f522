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
use crate::crd::{Direction, DirectorySyncSpec, EntraId, Scim, SecretKeyRef, SpecError, side_name};
use crate::directory::{Directory, ListingLimits};

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
    let sides = spec
        .sides()
        .map_err(|e| Error::InvalidSpec(e.to_string()))?;
    // Field paths in messages name the side each block is on.
    let entra = sides.entra_id;
    let entra_at = |field: &str| format!("{}.{field}", sides.entra_id_field());
    let scim = sides.scim;
    let scim_at = |field: &str| format!("{}.{field}", sides.scim_field());
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&spec.source).unwrap_or_default());
    h.update(serde_json::to_vec(&spec.destination).unwrap_or_default());
    let mut feed = |label: &str, bytes: &[u8]| {
        h.update(label.as_bytes());
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    let graph = if let Some(r) = &entra.client_secret_ref {
        let v = read_secret_key(&secrets, namespace, r, &entra_at("clientSecretRef")).await?;
        feed("client-secret", &v);
        GraphCredential::ClientSecret(to_secret_string(v, "client secret")?)
    } else if let Some(r) = &entra.client_certificate_ref {
        let v = read_secret_key(&secrets, namespace, r, &entra_at("clientCertificateRef")).await?;
        feed("client-certificate", &v);
        let cert = ClientCertificate::from_pem(&v).map_err(|source| Error::BuildClient {
            side: side_name(sides.entra_id_side()),
            source,
        })?;
        GraphCredential::ClientCertificate(Arc::new(cert))
    } else if let Some(wi) = &entra.workload_identity {
        // Checked here, before any token is requested; the provider checks again before
        // each later TokenRequest. The account's name and the client ID are in the spec,
        // which the fingerprint already covers.
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        let name = wi.service_account_name.clone();
        workload_identity::verify(
            &api,
            &name,
            namespace,
            &entra.client_id,
            sides.entra_id_field(),
        )
        .await
        .map_err(Error::Kube)?
        .map_err(Error::WorkloadIdentity)?;
        GraphCredential::FederatedToken(Arc::new(ServiceAccountToken {
            api,
            name,
            namespace: namespace.to_owned(),
            client_id: entra.client_id.clone(),
            entra_field: sides.entra_id_field(),
            requests: token_requests.clone(),
        }))
    } else {
        return Err(Error::InvalidSpec(format!(
            "{} names no credential",
            sides.entra_id_field()
        )));
    };
    let graph_ca = match &entra.ca_bundle_ref {
        Some(r) => {
            let v = read_secret_key(&secrets, namespace, r, &entra_at("caBundleRef")).await?;
            feed("graph-ca", &v);
            Some(v)
        }
        None => None,
    };
    let token = read_secret_key(
        &secrets,
        namespace,
        &scim.bearer_token_ref,
        &scim_at("bearerTokenRef"),
    )
    .await?;
    feed("scim-token", &token);
    let scim_token = to_secret_string(token, "SCIM bearer token")?;
    let scim_ca = match &scim.ca_bundle_ref {
        Some(r) => {
            let v = read_secret_key(&secrets, namespace, r, &scim_at("caBundleRef")).await?;
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

/// The two clients of one resource, and which one is the source.
#[derive(Clone)]
pub struct ResourceClients {
    pub direction: Direction,
    pub graph: GraphClient,
    pub scim: ScimClient,
}

impl ResourceClients {
    /// The same clients with another run deadline.
    pub fn with_deadline(&self, deadline: Option<std::time::Instant>) -> Self {
        Self {
            direction: self.direction,
            graph: self.graph.with_deadline(deadline),
            scim: self.scim.with_deadline(deadline),
        }
    }

    /// The side users are read from (docs/behaviour.md §6).
    pub fn source(&self) -> &dyn Directory {
        match self.direction {
            Direction::EntraIdToScim => &self.graph,
            Direction::ScimToEntraId => &self.scim,
        }
    }

    /// The side users are written to.
    pub fn destination(&self) -> &dyn Directory {
        match self.direction {
            Direction::EntraIdToScim => &self.scim,
            Direction::ScimToEntraId => &self.graph,
        }
    }
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
        let sides = spec
            .sides()
            .map_err(|e| Error::InvalidSpec(e.to_string()))?;
        let entra = sides.entra_id;
        let parse = |what: String, s: &str| {
            Url::parse(s).map_err(|_| Error::InvalidSpec(format!("{what} is not a valid URL")))
        };
        let authority = parse(
            format!("{}.authorityHost", sides.entra_id_field()),
            &entra.authority_host,
        )?;
        let graph_endpoint = parse(
            format!("{}.graphEndpoint", sides.entra_id_field()),
            &entra.graph_endpoint,
        )?;
        let scim_url = parse(
            format!("{}.endpoint", sides.scim_field()),
            &sides.scim.endpoint,
        )?;
        // The same policy whichever side each is on: the authority and Graph hosts on their
        // allowlists, the SCIM endpoint's addresses checked (src/controller/endpoint_policy.rs).
        let policy = &settings.policy;
        policy
            .check_authority(&authority)
            .and_then(|()| policy.check_graph(&graph_endpoint))
            .and_then(|()| policy.check_scim_url(&scim_url))
            .map_err(Error::EndpointPolicy)?;

        let mut gcfg = GraphConfig::new(
            entra.tenant_id.clone(),
            entra.client_id.clone(),
            creds.graph,
        );
        gcfg.authority_host = authority;
        gcfg.graph_endpoint = graph_endpoint;
        gcfg.http = settings.http(creds.graph_ca);
        gcfg.limits = settings.listing_limits;
        gcfg.write_pacing = sides.graph_write_pacing();
        let graph = GraphClient::new(gcfg).map_err(|source| Error::BuildClient {
            side: side_name(sides.entra_id_side()),
            source,
        })?;

        let mut scfg = ScimConfig::new(scim_url, creds.scim_token);
        let attr = sides.scim.user_principal_name_attribute.trim();
        scfg.upn_attribute = (!attr.is_empty()).then(|| attr.to_owned());
        scfg.http = settings.http(creds.scim_ca);
        scfg.limits = settings.listing_limits;
        // Host names are checked at every connect (IP literals were checked above).
        scfg.http.resolver = Some(policy.resolver());
        let scim = ScimClient::new(scfg).map_err(|source| Error::BuildClient {
            side: side_name(sides.scim_side()),
            source,
        })?;

        let clients = ResourceClients {
            direction: sides.direction,
            graph,
            scim,
        };
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

/// The one normal form of an endpoint URL for comparing two resources' sides: trimmed, without
/// a trailing slash, lower-case.
pub fn endpoint_key(endpoint: &str) -> String {
    endpoint.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The directory a SCIM block names: its endpoint.
fn scim_key(scim: &Scim) -> String {
    format!("scim {}", endpoint_key(&scim.endpoint))
}

/// The directory an Entra ID block names: the tenant on its Graph endpoint (the same tenant ID
/// on another Graph, e.g. an emulator, is another directory). A tenant named once by GUID and
/// once by domain name counts as two.
fn entra_key(entra: &EntraId) -> String {
    format!(
        "entraID {} {}",
        entra.tenant_id.trim().to_ascii_lowercase(),
        endpoint_key(&entra.graph_endpoint)
    )
}

/// Where a resource writes: the key of the per-destination lock and of the other resources
/// that share its destination (their managed sets, `src/controller/run.rs`). The SCIM endpoint
/// (Entra ID to SCIM) or the Entra tenant (SCIM to Entra ID); the kind is part of the key, so a
/// resource that only reads a directory never shares a key with one that writes it. An error
/// for a spec without a direction (which the API server refuses).
pub fn destination_key(spec: &DirectorySyncSpec) -> Result<String, SpecError> {
    let sides = spec.sides()?;
    Ok(match sides.direction {
        Direction::EntraIdToScim => scim_key(sides.scim),
        Direction::ScimToEntraId => entra_key(sides.entra_id),
    })
}

/// Where a resource reads, keyed as [`destination_key`]: resources with the same source and
/// destination hand users over between their domains.
pub fn source_key(spec: &DirectorySyncSpec) -> Result<String, SpecError> {
    let sides = spec.sides()?;
    Ok(match sides.direction {
        Direction::EntraIdToScim => entra_key(sides.entra_id),
        Direction::ScimToEntraId => scim_key(sides.scim),
    })
}

/// Whether a Secret named `secret` is referenced by `obj`, on either side.
pub fn references_secret(obj: &crate::crd::DirectorySync, secret: &str) -> bool {
    obj.spec.secret_refs().iter().any(|r| r.name == secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(source: serde_json::Value, destination: serde_json::Value) -> DirectorySyncSpec {
        serde_json::from_value(json!({
            "domain": "example.com", "upnMode": "Enabled", "maxAllowedDeletions": 5,
            "source": source, "destination": destination,
        }))
        .expect("spec")
    }

    fn entra(tenant: &str, graph: &str) -> serde_json::Value {
        json!({"entraID": {"tenantID": tenant, "clientID": "3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c",
            "graphEndpoint": graph, "clientSecretRef": {"name": "entra-app", "key": "s"}}})
    }

    fn scim(endpoint: &str, token_secret: &str) -> serde_json::Value {
        json!({"scim": {"endpoint": endpoint, "bearerTokenRef": {"name": token_secret, "key": "t"}}})
    }

    const TENANT: &str = "7d6f3c2a-1b4e-4f8a-9c5d-2e1f0a9b8c7d";
    const GRAPH: &str = "https://graph.microsoft.com";

    /// The per-destination lock and the search for resources sharing a destination key by
    /// where users are written: the SCIM endpoint one way, the Entra tenant the other.
    #[test]
    fn the_destination_is_the_scim_endpoint_forward_and_the_tenant_reverse() {
        let fwd = spec(entra(TENANT, GRAPH), scim("https://S.example.net/v2/", "a"));
        let fwd2 = spec(
            entra("contoso.example", GRAPH),
            scim("https://s.example.net/v2", "b"),
        );
        let rev = spec(scim("https://s.example.net/v2", "a"), entra(TENANT, GRAPH));
        let rev2 = spec(
            scim("https://other.example.net/v2", "c"),
            entra(&TENANT.to_ascii_uppercase(), "https://graph.microsoft.com/"),
        );
        let rev_elsewhere = spec(
            scim("https://s.example.net/v2", "a"),
            entra(TENANT, "https://graph.example.net"),
        );
        // Two forward resources writing to one SCIM service share it, whatever their tenants.
        assert_eq!(destination_key(&fwd), destination_key(&fwd2));
        // Two reverse resources writing into one tenant share it, whatever their sources.
        assert_eq!(destination_key(&rev), destination_key(&rev2));
        // Reading a directory is not writing to it: a forward resource never shares a key
        // with a reverse one, even on the same endpoint and tenant.
        assert_ne!(destination_key(&fwd), destination_key(&rev));
        // The keys name directories: the service one resource writes is the one the other reads.
        assert_eq!(destination_key(&fwd), source_key(&rev));
        // The same tenant ID behind another Graph endpoint is another directory.
        assert_ne!(destination_key(&rev), destination_key(&rev_elsewhere));
        // Hand-overs need the same source as well.
        assert_eq!(
            source_key(&fwd),
            source_key(&spec(
                entra(TENANT, GRAPH),
                scim("https://x.example/v2", "a")
            ))
        );
        assert_ne!(source_key(&fwd), source_key(&fwd2));
        assert_ne!(source_key(&rev), source_key(&rev2));
        // A spec without a direction has no key (and no panic).
        let invalid = spec(entra(TENANT, GRAPH), entra(TENANT, GRAPH));
        assert!(destination_key(&invalid).is_err());
        assert!(source_key(&invalid).is_err());
    }

    #[test]
    fn secrets_are_found_on_either_side() {
        let rev = crate::crd::DirectorySync::new(
            "r",
            spec(
                scim("https://s.example.net/v2", "scim-token"),
                entra(TENANT, GRAPH),
            ),
        );
        assert!(references_secret(&rev, "scim-token"));
        assert!(references_secret(&rev, "entra-app"));
        assert!(!references_secret(&rev, "other"));
    }
}
