//! Client assertions: application certificates and federated (workload identity) tokens.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use bytes::Bytes;
use common::*;
use entra_emulator::Config;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::signature::{self, KeyPair as _};
use serde_json::{Value, json};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const SUBJECT: &str = "system:serviceaccount:identity:dirsync";
const WI_AUD: &str = "api://AzureADTokenExchange";

fn b64(d: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d)
}

fn now() -> i64 {
    entra_emulator::time::now_secs()
}

/// Two RSA keys (PKCS#8 DER), generated once per test binary.
fn rsa_keys() -> &'static [Vec<u8>; 2] {
    static K: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    K.get_or_init(|| {
        use rsa::pkcs8::EncodePrivateKey;
        let make = || {
            let k = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
            k.to_pkcs8_der().unwrap().as_bytes().to_vec()
        };
        [make(), make()]
    })
}

fn sign_rs(der: &[u8], alg: &str, header: Value, claims: Value) -> String {
    let pair = signature::RsaKeyPair::from_pkcs8(der).unwrap();
    let mut h = header;
    h["alg"] = json!(alg);
    h["typ"] = json!("JWT");
    let input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(&h).unwrap()),
        b64(&serde_json::to_vec(&claims).unwrap())
    );
    let pad: &dyn signature::RsaEncoding = if alg == "PS256" {
        &signature::RSA_PSS_SHA256
    } else {
        &signature::RSA_PKCS1_SHA256
    };
    let mut sig = vec![0u8; pair.public().modulus_len()];
    pair.sign(
        pad,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", b64(&sig))
}

/// A self-signed RSA certificate for key `der` (PEM) and its DER.
fn certificate(der: &[u8]) -> (String, Vec<u8>) {
    let pem = {
        let b = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<String> = b
            .as_bytes()
            .chunks(64)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        )
    };
    let kp = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dirsync app");
    let cert = params.self_signed(&kp).unwrap();
    (cert.pem(), cert.der().to_vec())
}

fn sha(alg: &'static ring::digest::Algorithm, d: &[u8]) -> String {
    b64(ring::digest::digest(alg, d).as_ref())
}

async fn cert_emu() -> (Emu, Vec<u8>) {
    let (pem, der) = certificate(&rsa_keys()[0]);
    let fixture = json!({
        "tenantId": "aaaaaaaa-0000-4000-8000-000000000002",
        "domains": [{"id": "contoso.example"}],
        "applications": [{"clientId": "cert-app", "certificates": [pem]}],
        "users": [{"userPrincipalName": "a@contoso.example", "displayName": "A"}]
    });
    (
        Emu::start(Config::from_fixture(&fixture).unwrap().https()).await,
        der,
    )
}

async fn post_assertion(e: &Emu, client_id: &str, assertion: &str) -> (u16, Value) {
    let r = e
        .token_request(
            &e.tenant_id(),
            &[
                ("client_id", client_id),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", assertion),
                ("grant_type", "client_credentials"),
                ("scope", GRAPH_SCOPE),
            ],
        )
        .await;
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn certificate_assertions() {
    let (e, cert_der) = cert_emu().await;
    let aud = e.emu.token_endpoint();
    let claims = |aud: &str, exp: i64| json!({"aud": aud, "iss": "cert-app", "sub": "cert-app", "jti": uuid::Uuid::new_v4().to_string(), "nbf": now(), "iat": now(), "exp": exp});
    let key = &rsa_keys()[0];
    // MSAL's classic form: RS256 + x5t (SHA-1).
    let a = sign_rs(
        key,
        "RS256",
        json!({"x5t": sha(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert_der)}),
        claims(&aud, now() + 600),
    );
    let (s, v) = post_assertion(&e, "cert-app", &a).await;
    assert_eq!(s, 200, "{v}");
    let tok = v["access_token"].as_str().unwrap();
    e.get_json("/v1.0/users", tok, &[], 200).await;
    // The documented current form: PS256 + x5t#S256.
    let a = sign_rs(
        key,
        "PS256",
        json!({"x5t#S256": sha(&ring::digest::SHA256, &cert_der)}),
        claims(&aud, now() + 600),
    );
    let (s, v) = post_assertion(&e, "cert-app", &a).await;
    assert_eq!(s, 200, "{v}");

    let x5t = json!({"x5t#S256": sha(&ring::digest::SHA256, &cert_der)});
    // Expired.
    let a = sign_rs(key, "PS256", x5t.clone(), claims(&aud, now() - 10));
    let (s, v) = post_assertion(&e, "cert-app", &a).await;
    assert_eq!(s, 401);
    assert!(
        assert_aad_error(&v, "invalid_client", 700024)
            .contains("Client assertion is not within its valid time range.")
    );
    // Wrong audience.
    let a = sign_rs(
        key,
        "PS256",
        x5t.clone(),
        claims(
            "https://login.microsoftonline.com/x/oauth2/v2.0/token",
            now() + 600,
        ),
    );
    let (s, v) = post_assertion(&e, "cert-app", &a).await;
    assert_eq!(s, 401);
    assert_aad_error(&v, "invalid_client", 700023);
    // Signed by another key under the registered thumbprint.
    let a = sign_rs(
        &rsa_keys()[1],
        "PS256",
        x5t.clone(),
        claims(&aud, now() + 600),
    );
    let (s, v) = post_assertion(&e, "cert-app", &a).await;
    assert_eq!(s, 401);
    assert_aad_error(&v, "invalid_client", 7000274);
    // A certificate the app does not have.
    let (_, other_der) = certificate(&rsa_keys()[1]);
    let a = sign_rs(
        &rsa_keys()[1],
        "PS256",
        json!({"x5t#S256": sha(&ring::digest::SHA256, &other_der)}),
        claims(&aud, now() + 600),
    );
    let (s, v) = post_assertion(&e, "cert-app", &a).await;
    assert_eq!(s, 401);
    assert!(assert_aad_error(&v, "invalid_client", 700027).contains("The key was not found."));
    // Garbage.
    let (s, v) = post_assertion(&e, "cert-app", "abc").await;
    assert_eq!(s, 400);
    assert_aad_error(&v, "invalid_request", 50027);
    e.stop().await;
}

#[test]
fn ec_certificates_are_refused_like_entra() {
    let kp = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
        .unwrap()
        .self_signed(&kp)
        .unwrap();
    let err = entra_emulator::fixture::parse_certificate(&cert.pem()).unwrap_err();
    assert!(err.contains("only RSA certificates"), "{err}");
}

// ------------------------------------------------------------------ federated credentials

struct Issuer {
    base: String,
    ca_pem: String,
    ec: signature::EcdsaKeyPair,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// An HTTPS OpenID issuer (like a kube-apiserver's service-account issuer) with an RSA and an EC key.
async fn start_issuer() -> Issuer {
    let pki = entra_emulator::tls::generate(&[]).unwrap();
    let cfg = entra_emulator::tls::server_config(&pki).unwrap();
    let rng = ring::rand::SystemRandom::new();
    let ec_der =
        signature::EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
    let ec = signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        ec_der.as_ref(),
        &rng,
    )
    .unwrap();
    let point = ec.public_key().as_ref().to_vec();
    let (n, ex) = {
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let k = rsa::RsaPrivateKey::from_pkcs8_der(&rsa_keys()[0]).unwrap();
        (k.n().to_bytes_be(), k.e().to_bytes_be())
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "rsa1", "alg": "RS256", "use": "sig", "n": b64(&n), "e": b64(&ex)},
        {"kty": "EC", "kid": "ec1", "alg": "ES256", "use": "sig", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])}
    ]});
    let b = base.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut rx => break,
                acc = listener.accept() => {
                    let Ok((s, _)) = acc else { continue };
                    let (acceptor, b, jwks) = (acceptor.clone(), b.clone(), jwks.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(s).await else { return };
                        let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let (b, jwks) = (b.clone(), jwks.clone());
                            async move {
                                let path = req.uri().path().to_string();
                                let body = if path.ends_with("/.well-known/openid-configuration") {
                                    let iss = path.trim_end_matches("/.well-known/openid-configuration");
                                    json!({"issuer": format!("{b}{iss}"), "jwks_uri": format!("{b}/openid/v1/jwks"),
                                           "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
                                           "id_token_signing_alg_values_supported": ["RS256", "ES256"]})
                                } else {
                                    jwks
                                };
                                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap()))))
                            }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    });
                }
            }
        }
    });
    Issuer {
        base,
        ca_pem: pki.ca_pem,
        ec,
        _stop: tx,
    }
}

fn sa_claims(iss: &str, sub: &str, aud: &str, exp: i64) -> Value {
    json!({"iss": iss, "sub": sub, "aud": [aud], "exp": exp, "iat": now(), "nbf": now(),
           "kubernetes.io": {"namespace": "identity", "serviceaccount": {"name": "dirsync"}}})
}

fn sign_es(k: &signature::EcdsaKeyPair, claims: &Value) -> String {
    let h = json!({"alg": "ES256", "kid": "ec1"});
    let input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(&h).unwrap()),
        b64(&serde_json::to_vec(claims).unwrap())
    );
    let sig = k
        .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
        .unwrap();
    format!("{input}.{}", b64(sig.as_ref()))
}

fn wi_fixture(iss: &str) -> Value {
    json!({
        "tenantId": "aaaaaaaa-0000-4000-8000-000000000003",
        "domains": [{"id": "contoso.example"}],
        "applications": [{"clientId": "wi-app", "federatedCredentials": [
            {"issuer": iss, "subject": SUBJECT, "audiences": [WI_AUD]},
            {"issuer": format!("{iss}/slash/"), "subject": SUBJECT}
        ]}],
        "users": [{"userPrincipalName": "a@contoso.example", "displayName": "A"}]
    })
}

#[tokio::test]
async fn federated_workload_identity() {
    let issuer = start_issuer().await;
    let iss = format!("{}/issuer", issuer.base);
    let e = Emu::start(
        Config::from_fixture(&wi_fixture(&iss))
            .unwrap()
            .https()
            .trust_ca(&issuer.ca_pem),
    )
    .await;
    let rs = |c: &Value| sign_rs(&rsa_keys()[0], "RS256", json!({"kid": "rsa1"}), c.clone());

    // RS256 and ES256 service-account tokens.
    let (s, v) = post_assertion(
        &e,
        "wi-app",
        &rs(&sa_claims(&iss, SUBJECT, WI_AUD, now() + 600)),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    e.get_json("/v1.0/users", v["access_token"].as_str().unwrap(), &[], 200)
        .await;
    let (s, v) = post_assertion(
        &e,
        "wi-app",
        &sign_es(&issuer.ec, &sa_claims(&iss, SUBJECT, WI_AUD, now() + 600)),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // An issuer URL with a trailing slash.
    let slash = format!("{iss}/slash/");
    let (s, v) = post_assertion(
        &e,
        "wi-app",
        &rs(&sa_claims(&slash, SUBJECT, WI_AUD, now() + 600)),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // Mismatches: issuer, subject (case-sensitive), audience.
    let (s, v) = post_assertion(
        &e,
        "wi-app",
        &rs(&sa_claims(
            "https://elsewhere.example",
            SUBJECT,
            WI_AUD,
            now() + 600,
        )),
    )
    .await;
    assert_eq!(s, 401);
    assert!(
        assert_aad_error(&v, "invalid_client", 700211)
            .contains("presented assertion issuer 'https://elsewhere.example'")
    );
    let (s, v) = post_assertion(
        &e,
        "wi-app",
        &rs(&sa_claims(
            &iss,
            &SUBJECT.to_uppercase(),
            WI_AUD,
            now() + 600,
        )),
    )
    .await;
    assert_eq!(s, 401);
    assert!(
        assert_aad_error(&v, "invalid_client", 700213)
            .contains("SYSTEM:SERVICEACCOUNT:IDENTITY:DIRSYNC")
    );
    let (s, v) = post_assertion(
        &e,
        "wi-app",
        &rs(&sa_claims(
            &iss,
            SUBJECT,
            "https://kubernetes.default.svc",
            now() + 600,
        )),
    )
    .await;
    assert_eq!(s, 401);
    assert_aad_error(&v, "invalid_client", 700212);
    // Expired.
    let (s, v) = post_assertion(
        &e,
        "wi-app",
        &rs(&sa_claims(&iss, SUBJECT, WI_AUD, now() - 5)),
    )
    .await;
    assert_eq!(s, 401);
    assert_aad_error(&v, "invalid_client", 700024);
    // Signed by a key the issuer does not publish.
    let forged = sign_rs(
        &rsa_keys()[1],
        "RS256",
        json!({"kid": "rsa1"}),
        sa_claims(&iss, SUBJECT, WI_AUD, now() + 600),
    );
    let (s, v) = post_assertion(&e, "wi-app", &forged).await;
    assert_eq!(s, 401);
    assert_aad_error(&v, "invalid_client", 700027);
    e.stop().await;

    // Without trusting the issuer's CA, the keys cannot be fetched.
    let e = Emu::start(Config::from_fixture(&wi_fixture(&iss)).unwrap().https()).await;
    let (s, v) = post_assertion(
        &e,
        "wi-app",
        &rs(&sa_claims(&iss, SUBJECT, WI_AUD, now() + 600)),
    )
    .await;
    assert_eq!(s, 400);
    assert_aad_error(&v, "invalid_request", 50166);
    e.stop().await;
    let _ = Arc::new(());
}
