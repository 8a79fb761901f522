//! OAuth2 client-credentials tokens from the Microsoft identity platform (v2.0 endpoint):
//! the three credential kinds, the client-assertion JWT for certificates, and the token cache.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaKeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::clients::outbound::{HttpClient, HttpResponse, Redactor, cut, error_code};
use crate::directory::DirectoryError;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Lifetime of a certificate client assertion.
const ASSERTION_LIFETIME: u64 = 600;

/// Supplies a client assertion (a JWT from another identity provider) for each token request:
/// workload identity federation. Called on every token request, never cached here.
#[async_trait]
pub trait AssertionProvider: Send + Sync {
    async fn assertion(&self) -> Result<SecretString, DirectoryError>;
}

/// The `AZURE_FEDERATED_TOKEN_FILE` contract: the kubelet rotates the projected token in
/// place, so the file is read again for every token request.
#[derive(Clone, Debug)]
pub struct FederatedTokenFile {
    path: PathBuf,
}

impl FederatedTokenFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

#[async_trait]
impl AssertionProvider for FederatedTokenFile {
    async fn assertion(&self) -> Result<SecretString, DirectoryError> {
        let raw = tokio::fs::read_to_string(&self.path).await.map_err(|e| {
            DirectoryError::InvalidCredentials(format!(
                "federated token file cannot be read: {}",
                e.kind()
            ))
        })?;
        let token = raw.trim();
        if token.is_empty() {
            return Err(DirectoryError::InvalidCredentials(
                "federated token file is empty".to_string(),
            ));
        }
        Ok(SecretString::from(token))
    }
}

/// An [`AssertionProvider`] made from an async closure (e.g. the operator's TokenRequest).
pub struct AssertionFn<F>(pub F);

#[async_trait]
impl<F, Fut> AssertionProvider for AssertionFn<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: std::future::Future<Output = Result<SecretString, DirectoryError>> + Send,
{
    async fn assertion(&self) -> Result<SecretString, DirectoryError> {
        (self.0)().await
    }
}

/// How the app proves who it is to the token endpoint.
#[derive(Clone)]
pub enum GraphCredential {
    /// `client_secret`.
    ClientSecret(SecretString),
    /// A certificate: each token request carries a fresh signed JWT assertion.
    ClientCertificate(Arc<ClientCertificate>),
    /// A federated token (workload identity) presented as the client assertion.
    FederatedToken(Arc<dyn AssertionProvider>),
}

impl fmt::Debug for GraphCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientSecret(_) => f.write_str("ClientSecret([REDACTED])"),
            Self::ClientCertificate(c) => write!(f, "ClientCertificate({c:?})"),
            Self::FederatedToken(_) => f.write_str("FederatedToken(..)"),
        }
    }
}

/// Signature algorithm of the certificate client assertion. Entra accepts both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AssertionAlgorithm {
    #[default]
    RS256,
    PS256,
}

/// An RSA certificate and its private key, used to sign client assertions.
pub struct ClientCertificate {
    key: RsaKeyPair,
    x5t: String,
    x5t_s256: String,
    alg: AssertionAlgorithm,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The thumbprint identifies the certificate and is public; the key never prints.
        f.debug_struct("ClientCertificate")
            .field("x5t", &self.x5t)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl ClientCertificate {
    /// From one PEM holding the certificate (the first CERTIFICATE block is the leaf; a chain
    /// may follow) and its RSA private key (PKCS#8 or PKCS#1), as in a `tls.pem` Secret key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, DirectoryError> {
        Self::from_pem_parts(pem, pem)
    }

    /// From a certificate PEM and a separate private-key PEM.
    pub fn from_pem_parts(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, DirectoryError> {
        let bad =
            |why: &str| DirectoryError::InvalidCredentials(format!("client certificate: {why}"));
        let cert = CertificateDer::pem_slice_iter(cert_pem)
            .next()
            .ok_or_else(|| bad("no CERTIFICATE block in the PEM"))?
            .map_err(|_| bad("the CERTIFICATE block is not valid PEM"))?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| bad("no private key in the PEM"))?;
        let key = match &key {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => {
                return Err(bad(
                    "the private key must be RSA (Entra signs assertions with RS256/PS256)",
                ));
            }
        }
        .map_err(|_| bad("the private key is not a usable RSA key"))?;
        // The certificate's SubjectPublicKeyInfo embeds the RSAPublicKey DER verbatim, so a
        // byte search tells whether key and certificate belong together, without an X.509 parser.
        let public = key.public().as_ref();
        if !cert.as_ref().windows(public.len()).any(|w| w == public) {
            return Err(bad("the private key does not belong to the certificate"));
        }
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.as_ref());
        let sha256 = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
        Ok(Self {
            key,
            x5t: URL_SAFE_NO_PAD.encode(sha1.as_ref()),
            x5t_s256: URL_SAFE_NO_PAD.encode(sha256.as_ref()),
            alg: AssertionAlgorithm::default(),
        })
    }

    pub fn with_algorithm(mut self, alg: AssertionAlgorithm) -> Self {
        self.alg = alg;
        self
    }

    /// Base64url SHA-1 thumbprint of the DER certificate (the JWT `x5t` header).
    pub fn x5t(&self) -> &str {
        &self.x5t
    }

    /// Base64url SHA-256 thumbprint (`x5t#S256`).
    pub fn x5t_s256(&self) -> &str {
        &self.x5t_s256
    }

    /// The RSAPublicKey DER of the key (lets tests verify signatures).
    pub fn public_key_der(&self) -> &[u8] {
        self.key.public().as_ref()
    }

    /// A signed client assertion: `aud` = token endpoint, `iss` = `sub` = client id, a random
    /// `jti`, valid from now for ten minutes.
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<SecretString, DirectoryError> {
        let alg = match self.alg {
            AssertionAlgorithm::RS256 => "RS256",
            AssertionAlgorithm::PS256 => "PS256",
        };
        let header = serde_json::json!({ "alg": alg, "typ": "JWT", "x5t": self.x5t, "x5t#S256": self.x5t_s256 });
        let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "iat": iat,
            "nbf": iat,
            "exp": iat + ASSERTION_LIFETIME,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let padding: &'static dyn ring::signature::RsaEncoding = match self.alg {
            AssertionAlgorithm::RS256 => &RSA_PKCS1_SHA256,
            AssertionAlgorithm::PS256 => &RSA_PSS_SHA256,
        };
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                padding,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| {
                DirectoryError::InvalidCredentials("client certificate: signing failed".to_string())
            })?;
        Ok(SecretString::from(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(sig)
        )))
    }
}

/// An access token and when to stop using it.
struct Cached {
    token: SecretString,
    refresh_at: Instant,
    generation: u64,
}

/// When to refresh a token that lives `lifetime`: five minutes early, or at half-life for
/// tokens shorter than ten minutes.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 2).min(Duration::from_secs(300))
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct TokenError {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// Fetches and caches tokens; one refresh at a time (the mutex is held across the request).
pub(crate) struct TokenSource {
    token_url: Url,
    client_id: String,
    scope: String,
    credential: GraphCredential,
    redactor: Redactor,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl TokenSource {
    pub(crate) fn new(
        token_url: Url,
        client_id: String,
        scope: String,
        credential: GraphCredential,
        redactor: Redactor,
    ) -> Self {
        Self {
            token_url,
            client_id,
            scope,
            credential,
            redactor,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// A valid token and its generation (pass the generation to [`TokenSource::invalidate`]).
    pub(crate) async fn token(
        &self,
        http: &HttpClient,
    ) -> Result<(SecretString, u64), DirectoryError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok((c.token.clone(), c.generation));
        }
        let generation = cache.as_ref().map_or(1, |c| c.generation + 1);
        let (token, lifetime) = self.fetch(http).await.map_err(|e| self.redactor.scrub(e))?;
        let refresh_at = Instant::now() + lifetime - refresh_margin(lifetime);
        *cache = Some(Cached {
            token: token.clone(),
            refresh_at,
            generation,
        });
        Ok((token, generation))
    }

    /// Drops the cached token if it is still the one of `generation` (a 401 from Graph), so
    /// that concurrent callers refresh once, not once each.
    pub(crate) async fn invalidate(&self, generation: u64) {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_mut()
            && c.generation == generation
        {
            c.refresh_at = Instant::now();
        }
    }

    async fn fetch(&self, http: &HttpClient) -> Result<(SecretString, Duration), DirectoryError> {
        let mut form: Vec<(&str, String)> = vec![
            ("client_id", self.client_id.clone()),
            ("scope", self.scope.clone()),
            ("grant_type", "client_credentials".to_string()),
        ];
        // The credential material goes into the form only; it never reaches a message.
        let secret = match &self.credential {
            GraphCredential::ClientSecret(s) => {
                form.push(("client_secret", s.expose_secret().to_string()));
                None
            }
            GraphCredential::ClientCertificate(cert) => {
                Some(cert.assertion(&self.client_id, self.token_url.as_str(), SystemTime::now())?)
            }
            GraphCredential::FederatedToken(provider) => Some(provider.assertion().await?),
        };
        if let Some(assertion) = &secret {
            form.push(("client_assertion_type", ASSERTION_TYPE.to_string()));
            form.push(("client_assertion", assertion.expose_secret().to_string()));
        }
        let resp = http
            .send("token request", |c| {
                c.post(self.token_url.clone())
                    .header(reqwest::header::ACCEPT, "application/json")
                    .form(&form)
            })
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                // An assertion may be echoed back; scrub with it too.
                let mut r = self.redactor.clone();
                if let Some(a) = &secret {
                    r.add(a);
                }
                return Err(r.scrub(e));
            }
        };
        if !resp.status.is_success() {
            let mut r = self.redactor.clone();
            if let Some(a) = &secret {
                r.add(a);
            }
            return Err(r.scrub(token_error(&resp)));
        }
        let body: TokenResponse = resp.json("token response")?;
        let token = body.access_token.filter(|t| !t.is_empty()).ok_or_else(|| {
            DirectoryError::Protocol("token response has no access_token".to_string())
        })?;
        // Old endpoints send expires_in as a string; absent means the usual hour.
        let secs = match body.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            None => Some(3599),
            _ => None,
        }
        .ok_or_else(|| {
            DirectoryError::Protocol("token response has an invalid expires_in".to_string())
        })?;
        // A zero lifetime would refresh on every call; treat anything under a minute as a minute.
        Ok((SecretString::from(token), Duration::from_secs(secs.max(60))))
    }
}

/// A token endpoint error: the OAuth `error` code and the AADSTS code with a short head of its
/// description (up to the first sentence end, at most 100 characters).
fn token_error(resp: &HttpResponse) -> DirectoryError {
    let status = resp.status.as_u16();
    let body: TokenError = serde_json::from_slice(&resp.body).unwrap_or_default();
    let mut msg = format!("token endpoint HTTP {status}");
    if let Some(code) = body.error.as_deref().and_then(error_code) {
        msg.push(' ');
        msg.push_str(code);
    }
    if let Some(head) = body.error_description.as_deref().and_then(aadsts_head) {
        msg.push_str(": ");
        msg.push_str(&head);
    }
    let msg = cut(&msg);
    match status {
        400 | 401 | 403 => DirectoryError::InvalidCredentials(msg),
        _ => DirectoryError::Rejected(msg),
    }
}

/// `AADSTS7000215: Invalid client secret provided` from a full description, or `None` when
/// the description does not start with an AADSTS code.
pub fn aadsts_head(desc: &str) -> Option<String> {
    let desc = desc.trim_start();
    let digits = desc.strip_prefix("AADSTS")?;
    let n = digits.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 || n > 10 {
        return None;
    }
    let code = &desc[..6 + n];
    // Only text on the same line after "AADSTSnnn:" is the head; trace ids follow on new lines.
    let rest = digits[n..]
        .strip_prefix(':')
        .map_or("", |r| r.trim_start_matches(' '));
    // The first sentence: up to ". " or the end of the line (URLs keep their dots).
    let line = rest.split(['\r', '\n']).next().unwrap_or("");
    let end = line
        .find(". ")
        .or_else(|| line.strip_suffix('.').map(str::len))
        .unwrap_or(line.len());
    let head: String = line[..end]
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect();
    if head.is_empty() {
        Some(code.to_string())
    } else {
        Some(format!("{code}: {head}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKCS8: &[u8] = include_bytes!("../../../tests/fixtures/client-cert-pkcs8.pem");
    const PKCS1: &[u8] = include_bytes!("../../../tests/fixtures/client-cert-pkcs1.pem");
    const MISMATCHED: &[u8] = include_bytes!("../../../tests/fixtures/client-cert-mismatched.pem");

    fn b64json(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn certificate_thumbprints_match_openssl() {
        // Expected values from `openssl x509 -outform der | openssl dgst -sha1|-sha256 -binary`, base64url.
        for pem in [PKCS8, PKCS1] {
            let c = ClientCertificate::from_pem(pem).unwrap();
            assert_eq!(c.x5t(), "1KkxVzSNuZkS6uhyIQTPYwy6zTY");
            assert_eq!(c.x5t_s256(), "q31DykmXxOBwTSuNgDClN5nsUWoKghe-4XcbpLULTUE");
        }
    }

    #[test]
    fn bad_certificates_are_refused() {
        let e = ClientCertificate::from_pem(MISMATCHED).unwrap_err();
        assert!(
            matches!(&e, DirectoryError::InvalidCredentials(m) if m.contains("does not belong")),
            "{e}"
        );
        assert!(ClientCertificate::from_pem(b"nothing").is_err());
        let cert_only: String = String::from_utf8_lossy(PKCS8)
            .split("-----BEGIN PRIVATE KEY")
            .next()
            .unwrap()
            .to_string();
        assert!(ClientCertificate::from_pem(cert_only.as_bytes()).is_err());
        // An EC key is not accepted.
        let ec = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&ec)
            .unwrap();
        let pem = format!("{}{}", cert.pem(), ec.serialize_pem());
        assert!(ClientCertificate::from_pem(pem.as_bytes()).is_err());
    }

    #[test]
    fn assertions_are_signed_jwts_with_the_right_claims() {
        let aud = "https://login.example/tenant/oauth2/v2.0/token";
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for (alg, verify) in [
            (
                AssertionAlgorithm::RS256,
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            ),
            (
                AssertionAlgorithm::PS256,
                &ring::signature::RSA_PSS_2048_8192_SHA256,
            ),
        ] {
            let c = ClientCertificate::from_pem(PKCS8)
                .unwrap()
                .with_algorithm(alg);
            let jwt = c.assertion("client-1", aud, now).unwrap();
            let jwt = jwt.expose_secret();
            let parts: Vec<&str> = jwt.split('.').collect();
            assert_eq!(parts.len(), 3);
            let header = b64json(parts[0]);
            assert_eq!(
                header["alg"],
                if alg == AssertionAlgorithm::RS256 {
                    "RS256"
                } else {
                    "PS256"
                }
            );
            assert_eq!(header["typ"], "JWT");
            assert_eq!(header["x5t"], "1KkxVzSNuZkS6uhyIQTPYwy6zTY");
            assert_eq!(
                header["x5t#S256"],
                "q31DykmXxOBwTSuNgDClN5nsUWoKghe-4XcbpLULTUE"
            );
            let claims = b64json(parts[1]);
            assert_eq!(claims["aud"], aud);
            assert_eq!(claims["iss"], "client-1");
            assert_eq!(claims["sub"], "client-1");
            assert_eq!(claims["nbf"], 1_800_000_000u64);
            assert_eq!(claims["exp"], 1_800_000_600u64);
            assert_eq!(claims["jti"].as_str().unwrap().len(), 36);
            let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
            let key = ring::signature::UnparsedPublicKey::new(verify, c.public_key_der());
            let signed = format!("{}.{}", parts[0], parts[1]);
            key.verify(signed.as_bytes(), &sig)
                .expect("signature verifies");
            // Tampering breaks it.
            assert!(key.verify(format!("{signed}x").as_bytes(), &sig).is_err());
        }
        // Two assertions never share a jti.
        let c = ClientCertificate::from_pem(PKCS1).unwrap();
        let a = c.assertion("c", aud, now).unwrap();
        let b = c.assertion("c", aud, now).unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(!format!("{c:?}").contains("PRIVATE"));
    }

    #[test]
    fn aadsts_heads() {
        assert_eq!(
            aadsts_head(
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent ..."
            )
            .as_deref(),
            Some("AADSTS7000215: Invalid client secret provided")
        );
        assert_eq!(
            aadsts_head(
                "AADSTS500011: The resource principal named https://x.example was not found."
            )
            .as_deref(),
            Some("AADSTS500011: The resource principal named https://x.example was not found")
        );
        assert_eq!(
            aadsts_head("AADSTS90002\r\nTrace ID: x").as_deref(),
            Some("AADSTS90002")
        );
        assert_eq!(aadsts_head("something else"), None);
        let long = format!("AADSTS1: {}", "x".repeat(500));
        assert!(aadsts_head(&long).unwrap().len() <= 110);
    }

    #[test]
    fn refresh_margins() {
        assert_eq!(
            refresh_margin(Duration::from_secs(3599)),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(120)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn token_errors_keep_code_and_drop_the_rest() {
        let body = serde_json::json!({
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided. The secret was CANARY123456789.",
            "error_codes": [7000215]
        });
        let resp = HttpResponse {
            status: reqwest::StatusCode::UNAUTHORIZED,
            headers: Default::default(),
            body: body.to_string().into_bytes(),
        };
        let e = token_error(&resp);
        assert_eq!(
            e,
            DirectoryError::InvalidCredentials(
                "token endpoint HTTP 401 invalid_client: AADSTS7000215: Invalid client secret provided".into()
            )
        );
        let garbage = HttpResponse {
            body: b"<html>oops</html>".to_vec(),
            ..resp
        };
        assert_eq!(
            token_error(&garbage),
            DirectoryError::InvalidCredentials("token endpoint HTTP 401".into())
        );
    }
}
