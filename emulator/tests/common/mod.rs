//! Helpers shared by the integration tests: start an emulator in-process on 127.0.0.1:0,
//! a reqwest client that trusts its CA, tokens, and small request wrappers.
#![allow(dead_code)]

pub mod writes;

use std::sync::Arc;

use entra_emulator::{Config, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Emulator, RunningEmulator};
use reqwest::{Client, Response, StatusCode};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

pub struct Emu {
    pub emu: RunningEmulator,
    pub client: Client,
}

pub fn client_trusting(pems: &[&str]) -> Client {
    let mut roots = rustls::RootCertStore::empty();
    for pem in pems {
        for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(c.expect("pem")).expect("root");
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

impl Emu {
    pub async fn start(config: Config) -> Emu {
        let emu = Emulator::start(config).await.expect("emulator starts");
        let client = match &emu.ca_pem {
            Some(pem) => client_trusting(&[pem]),
            None => client_trusting(&[]),
        };
        Emu { emu, client }
    }

    /// HTTPS, generated tenant of `n` users on example.com, seed 1.
    pub async fn generated(n: usize) -> Emu {
        Emu::start(Config::generated(n, "example.com", 1).https()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emu.base_url)
    }

    pub fn tenant_id(&self) -> String {
        self.emu.tenant().id.clone()
    }

    pub async fn token_request(&self, tenant: &str, form: &[(&str, &str)]) -> Response {
        self.client
            .post(format!("{}/{tenant}/oauth2/v2.0/token", self.emu.base_url))
            .form(form)
            .send()
            .await
            .expect("token request")
    }

    /// A Graph token for the default generated app.
    pub async fn token(&self) -> String {
        self.token_for(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            .await
    }

    pub async fn token_for(&self, client_id: &str, secret: &str) -> String {
        let r = self
            .token_request(
                &self.tenant_id(),
                &[
                    ("client_id", client_id),
                    ("client_secret", secret),
                    ("grant_type", "client_credentials"),
                    ("scope", GRAPH_SCOPE),
                ],
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.expect("json");
        v["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    pub async fn get(&self, path_or_url: &str, token: &str, headers: &[(&str, &str)]) -> Response {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            self.url(path_or_url)
        };
        let mut rb = self.client.get(url).bearer_auth(token);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb.send().await.expect("request")
    }

    /// GET and parse JSON, asserting the status.
    pub async fn get_json(
        &self,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        status: u16,
    ) -> Value {
        let r = self.get(path, token, headers).await;
        let got = r.status().as_u16();
        let text = r.text().await.expect("body");
        assert_eq!(got, status, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"))
    }

    /// Any Graph request: `(status, headers, body as JSON or Null when empty)`.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut rb = self
            .client
            .request(method.clone(), self.url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"))
        };
        (status, headers, v)
    }

    pub async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self
            .client
            .request(method, self.url(&format!("/_emulator{path}")));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("control");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn fault(&self, spec: Value) {
        let (s, v) = self
            .control(reqwest::Method::POST, "/faults", Some(spec))
            .await;
        assert_eq!(s, 201, "{v}");
    }

    pub async fn stop(self) {
        self.emu.stop().await;
    }
}

/// Assert a Graph error body and its headers.
pub fn assert_graph_error(v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    let inner = &v["error"]["innerError"];
    assert!(
        inner["date"]
            .as_str()
            .is_some_and(|d| d.len() == 19 && &d[10..11] == "T"),
        "{v}"
    );
    assert!(inner["request-id"].as_str().is_some(), "{v}");
    assert!(inner["client-request-id"].as_str().is_some(), "{v}");
}

/// Assert an AADSTS error body; returns the description.
pub fn assert_aad_error(v: &Value, error: &str, code: u64) -> String {
    assert_eq!(v["error"], error, "{v}");
    assert_eq!(v["error_codes"], json!([code]), "{v}");
    let d = v["error_description"]
        .as_str()
        .expect("description")
        .to_string();
    assert!(d.starts_with(&format!("AADSTS{code}: ")), "{d}");
    assert!(
        d.contains("\r\nTrace ID: ")
            && d.contains("\r\nCorrelation ID: ")
            && d.contains("\r\nTimestamp: "),
        "{d}"
    );
    let ts = v["timestamp"].as_str().expect("timestamp");
    assert!(
        ts.len() == 20 && ts.ends_with('Z') && &ts[10..11] == " ",
        "{ts}"
    );
    assert!(v["trace_id"].as_str().is_some() && v["correlation_id"].as_str().is_some());
    assert!(
        v["error_uri"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("/error?code={code}"))),
        "{v}"
    );
    d
}
