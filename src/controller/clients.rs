//! Credentials from the resource's own namespace, the (minimal) outbound endpoint policy and
//! the per-resource Graph and SCIM clients (SPEC §8: per resource, keyed by its uid and a hash
//! of its credential and CA; `caBundleRef` only adds trust).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use url::Url;

use crate::controller::error::{Error, Result};
use crate::crd::{DirectorySyncSpec, SecretKeyRef};
use crate::graph::{ClientCertificate, GraphClient, GraphConfig, GraphCredential};
use crate::http::{HttpConfig, RetryPolicy};
use crate::scim::{ScimClient, ScimConfig};

/// Authority hosts of Microsoft's clouds, allowed by default (SPEC §8).
pub const DEFAULT_AUTHORITY_HOSTS: &[&str] = &[
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
];
/// Graph hosts of Microsoft's clouds, allowed by default.
pub const DEFAULT_GRAPH_HOSTS: &[&str] = &[
    "graph.microsoft.com",
    "graph.microsoft.us",
    "dod-graph.microsoft.us",
    "microsoftgraph.chinacloudapi.cn",
];

/// The outbound endpoint policy, as far as this build enforces it: authority and Graph must be
/// https and on the allowlist. (The SCIM address checks of SPEC §8 are accepted as flags and
/// enforced by a later release.)
#[derive(Clone, Debug, Default)]
pub struct EndpointPolicy {
    /// Extra allowed authority/Graph hosts, `host` or `host:port`.
    pub extra_hosts: Vec<String>,
}

impl EndpointPolicy {
    fn allowed(&self, url: &Url, defaults: &[&str]) -> bool {
        let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let with_port = url.port().map(|p| format!("{host}:{p}"));
        if url.port().is_none() && defaults.contains(&host.as_str()) {
            return true;
        }
        self.extra_hosts.iter().any(|h| {
            let h = h.trim().to_ascii_lowercase();
            let h = h
                .trim_start_matches('[')
                .replace("]:", ":")
                .trim_end_matches(']')
                .to_string();
            h == host || with_port.as_deref() == Some(h.as_str())
        })
    }

    /// Checks the authority host and the Graph endpoint.
    pub fn check_source(&self, authority: &Url, graph: &Url) -> Result<()> {
        for (what, url, defaults) in [
            ("authority host", authority, DEFAULT_AUTHORITY_HOSTS),
            ("Graph endpoint", graph, DEFAULT_GRAPH_HOSTS),
        ] {
            if url.scheme() != "https" {
                return Err(Error::EndpointPolicy(format!("the {what} must use https")));
            }
            if !self.allowed(url, defaults) {
                return Err(Error::EndpointPolicy(format!(
                    "the {what} {} is not on the allowlist (Microsoft's clouds and --allowed-authority-hosts)",
                    url.host_str().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}

/// Settings for the clients the operator builds.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub policy: EndpointPolicy,
    /// Attempts per HTTP request (at most 6).
    pub http_max_attempts: u32,
    /// First retry delay of an HTTP request.
    pub http_retry_base: Duration,
    pub connect_timeout: Duration,
    /// Concurrent requests per destination.
    pub apply_concurrency: usize,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            policy: EndpointPolicy::default(),
            http_max_attempts: RetryPolicy::MAX_ATTEMPTS,
            http_retry_base: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            apply_concurrency: 8,
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
pub async fn load_credentials(
    client: &kube::Client,
    namespace: &str,
    spec: &DirectorySyncSpec,
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
    } else if src.workload_identity.is_some() {
        return Err(Error::InvalidSpec(
            "workloadIdentity is not supported by this operator build yet; use clientSecretRef or clientCertificateRef"
                .into(),
        ));
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
        settings.policy.check_source(&authority, &graph_endpoint)?;
        let scim_url = parse(
            "spec.destination.scim.endpoint",
            &spec.destination.scim.endpoint,
        )?;

        let mut gcfg = GraphConfig::new(src.tenant_id.clone(), src.client_id.clone(), creds.graph);
        gcfg.authority_host = authority;
        gcfg.graph_endpoint = graph_endpoint;
        gcfg.http = settings.http(creds.graph_ca);
        let graph = GraphClient::new(gcfg).map_err(|source| Error::BuildClient {
            side: "source",
            source,
        })?;

        let mut scfg = ScimConfig::new(scim_url, creds.scim_token);
        let attr = spec.destination.scim.user_principal_name_attribute.trim();
        scfg.upn_attribute = (!attr.is_empty()).then(|| attr.to_owned());
        scfg.http = settings.http(creds.scim_ca);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn microsoft_clouds_are_allowed_by_default() {
        let p = EndpointPolicy::default();
        assert!(
            p.check_source(
                &url("https://login.microsoftonline.com"),
                &url("https://graph.microsoft.com")
            )
            .is_ok()
        );
        assert!(
            p.check_source(
                &url("https://login.microsoftonline.us/"),
                &url("https://graph.microsoft.us")
            )
            .is_ok()
        );
        let e = p
            .check_source(
                &url("https://127.0.0.1:8443"),
                &url("https://127.0.0.1:8443"),
            )
            .unwrap_err();
        assert_eq!(e.reason(), "EndpointNotAllowed");
        let e = p
            .check_source(
                &url("http://login.microsoftonline.com"),
                &url("https://graph.microsoft.com"),
            )
            .unwrap_err();
        assert!(e.to_string().contains("https"));
    }

    #[test]
    fn extra_hosts_match_host_or_host_and_port() {
        let p = EndpointPolicy {
            extra_hosts: vec!["127.0.0.1".into()],
        };
        assert!(
            p.check_source(
                &url("https://127.0.0.1:8443"),
                &url("https://127.0.0.1:8443")
            )
            .is_ok()
        );
        let p = EndpointPolicy {
            extra_hosts: vec!["emu.local:9443".into()],
        };
        assert!(
            p.check_source(
                &url("https://emu.local:9443"),
                &url("https://emu.local:9443")
            )
            .is_ok()
        );
        assert!(
            p.check_source(
                &url("https://emu.local:9444"),
                &url("https://emu.local:9443")
            )
            .is_err()
        );
        // A default host on another port is not the default host.
        let p = EndpointPolicy::default();
        assert!(
            p.check_source(
                &url("https://login.microsoftonline.com:444"),
                &url("https://graph.microsoft.com")
            )
            .is_err()
        );
    }
}
