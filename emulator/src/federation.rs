//! Workload identity federation: fetch an issuer's signing keys through its OpenID discovery
//! document (`<issuer>/.well-known/openid-configuration` → `jwks_uri`), as Entra does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;

use crate::jwt::PublicKey;

const CACHE_FOR: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub struct IssuerKey {
    pub kid: Option<String>,
    pub key: PublicKey,
}

type KeyCache = HashMap<String, (Instant, Arc<Vec<IssuerKey>>)>;

#[derive(Debug)]
pub struct Federation {
    client: reqwest::Client,
    cache: Mutex<KeyCache>,
}

impl Federation {
    /// `trust_pems`: extra CA certificates (PEM text) for issuers' TLS, on top of the system roots.
    pub fn new(trust_pems: &[String]) -> Result<Federation, String> {
        let mut roots = rustls::RootCertStore::empty();
        for pem in trust_pems {
            let mut n = 0;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("bad PEM: {e:?}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("unusable CA certificate: {e}"))?;
                n += 1;
            }
            if n == 0 {
                return Err("no CERTIFICATE block found".into());
            }
        }
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTPS client: {e}"))?;
        Ok(Federation {
            client,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The issuer's keys (cached for 5 minutes unless `refresh`).
    pub async fn keys(&self, issuer: &str, refresh: bool) -> Result<Arc<Vec<IssuerKey>>, String> {
        if !refresh {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, keys)) = cache.get(issuer)
                && at.elapsed() < CACHE_FOR
            {
                return Ok(keys.clone());
            }
        }
        let keys = Arc::new(self.fetch(issuer).await?);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(issuer.to_string(), (Instant::now(), keys.clone()));
        Ok(keys)
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        if !url.starts_with("https://") {
            return Err(format!("'{url}' is not an https URL"));
        }
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        resp.json::<Value>()
            .await
            .map_err(|e| format!("GET {url}: {e}"))
    }

    async fn fetch(&self, issuer: &str) -> Result<Vec<IssuerKey>, String> {
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc = self.get_json(&discovery).await?;
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{discovery} has no jwks_uri"))?
            .to_string();
        let jwks = self.get_json(&jwks_uri).await?;
        let keys = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{jwks_uri} has no keys"))?;
        Ok(keys
            .iter()
            .filter_map(|k| {
                let m = k.as_object()?;
                Some(IssuerKey {
                    kid: m.get("kid").and_then(Value::as_str).map(str::to_string),
                    key: PublicKey::from_jwk(m)?,
                })
            })
            .collect())
    }
}
