//! Compact JWS parsing and signature checks (ring), and the emulator's own RS256 signing key.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value, json};

pub fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Decode base64url, tolerating padding and the standard alphabet.
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let t = s.trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .or_else(|| STANDARD.decode(s).ok())
}

/// A parsed, not yet verified, compact JWS.
#[derive(Debug, Clone)]
pub struct Jws {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    pub signing_input: String,
    pub signature: Vec<u8>,
}

impl Jws {
    pub fn parse(token: &str) -> Option<Jws> {
        let mut parts = token.trim().split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header = match serde_json::from_slice(&b64url_decode(h)?).ok()? {
            Value::Object(m) => m,
            _ => return None,
        };
        let claims = match serde_json::from_slice(&b64url_decode(c)?).ok()? {
            Value::Object(m) => m,
            _ => return None,
        };
        Some(Jws {
            header,
            claims,
            signing_input: format!("{h}.{c}"),
            signature: b64url_decode(s)?,
        })
    }

    pub fn alg(&self) -> &str {
        self.header.get("alg").and_then(Value::as_str).unwrap_or("")
    }

    pub fn header_str(&self, k: &str) -> Option<&str> {
        self.header.get(k).and_then(Value::as_str)
    }

    pub fn claim_str(&self, k: &str) -> Option<&str> {
        self.claims.get(k).and_then(Value::as_str)
    }

    pub fn claim_i64(&self, k: &str) -> Option<i64> {
        self.claims
            .get(k)
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
    }

    /// `aud` as a list (a JWT may carry a string or an array).
    pub fn audiences(&self) -> Vec<String> {
        match self.claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A public key that can check a JWS signature.
#[derive(Debug, Clone)]
pub enum PublicKey {
    /// RSA modulus and exponent (big-endian).
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// PKCS#1 RSAPublicKey DER (from a certificate).
    RsaDer(Vec<u8>),
    /// Uncompressed EC point (`04 || x || y`) and curve name.
    Ec { crv: String, point: Vec<u8> },
}

impl PublicKey {
    /// From a JWK (`kty` RSA or EC).
    pub fn from_jwk(jwk: &Map<String, Value>) -> Option<PublicKey> {
        let get = |k: &str| jwk.get(k).and_then(Value::as_str).and_then(b64url_decode);
        match jwk.get("kty").and_then(Value::as_str)? {
            "RSA" => Some(PublicKey::Rsa {
                n: get("n")?,
                e: get("e")?,
            }),
            "EC" => {
                let crv = jwk.get("crv").and_then(Value::as_str)?.to_string();
                let (x, y) = (get("x")?, get("y")?);
                let mut point = vec![4u8];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Some(PublicKey::Ec { crv, point })
            }
            _ => None,
        }
    }

    /// Check `sig` over `input` with JWS algorithm `alg`.
    pub fn verify(&self, alg: &str, input: &[u8], sig: &[u8]) -> bool {
        let rsa_alg: Option<&'static signature::RsaParameters> = match alg {
            "RS256" => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
            "RS384" => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
            "RS512" => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
            "PS256" => Some(&signature::RSA_PSS_2048_8192_SHA256),
            "PS384" => Some(&signature::RSA_PSS_2048_8192_SHA384),
            "PS512" => Some(&signature::RSA_PSS_2048_8192_SHA512),
            _ => None,
        };
        match self {
            PublicKey::Rsa { n, e } => match rsa_alg {
                Some(a) => RsaPublicKeyComponents { n, e }
                    .verify(a, input, sig)
                    .is_ok(),
                None => false,
            },
            PublicKey::RsaDer(der) => match rsa_alg {
                Some(a) => UnparsedPublicKey::new(a, der).verify(input, sig).is_ok(),
                None => false,
            },
            PublicKey::Ec { crv, point } => {
                let a: &'static signature::EcdsaVerificationAlgorithm = match (alg, crv.as_str()) {
                    ("ES256", "P-256") => &signature::ECDSA_P256_SHA256_FIXED,
                    ("ES384", "P-384") => &signature::ECDSA_P384_SHA384_FIXED,
                    _ => return false,
                };
                UnparsedPublicKey::new(a, point).verify(input, sig).is_ok()
            }
        }
    }
}

/// The emulator's token-signing key (RS256), shared by every emulator in the process:
/// generating an RSA key is slow in unoptimised builds.
pub struct SigningKey {
    pair: signature::RsaKeyPair,
    pub kid: String,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

static KEY: OnceLock<Result<Arc<SigningKey>, String>> = OnceLock::new();

impl SigningKey {
    /// The process-wide key, generated on first use.
    pub fn get() -> Result<Arc<SigningKey>, String> {
        KEY.get_or_init(|| Self::generate().map(Arc::new)).clone()
    }

    fn generate() -> Result<SigningKey, String> {
        use rsa::pkcs8::EncodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let mut rng = rsa::rand_core::OsRng;
        let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| e.to_string())?;
        let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
        let pair = signature::RsaKeyPair::from_pkcs8(der.as_bytes()).map_err(|e| e.to_string())?;
        let n = key.n().to_bytes_be();
        let e = key.e().to_bytes_be();
        let kid = b64url(&ring::digest::digest(&ring::digest::SHA256, &n).as_ref()[..20]);
        Ok(SigningKey { pair, kid, n, e })
    }

    /// Sign claims as an RS256 JWT. `extra_header` adds header fields (Graph tokens carry a nonce).
    pub fn sign(&self, claims: &Value, extra_header: &[(&str, Value)]) -> Result<String, String> {
        let mut header = Map::new();
        header.insert("typ".into(), json!("JWT"));
        for (k, v) in extra_header {
            header.insert((*k).into(), v.clone());
        }
        header.insert("alg".into(), json!("RS256"));
        header.insert("x5t".into(), json!(self.kid));
        header.insert("kid".into(), json!(self.kid));
        let h = b64url(&serde_json::to_vec(&Value::Object(header)).map_err(|e| e.to_string())?);
        let c = b64url(&serde_json::to_vec(claims).map_err(|e| e.to_string())?);
        let input = format!("{h}.{c}");
        let mut sig = vec![0u8; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| "signing failed".to_string())?;
        Ok(format!("{input}.{}", b64url(&sig)))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::Rsa {
            n: self.n.clone(),
            e: self.e.clone(),
        }
    }

    pub fn jwk(&self) -> Value {
        json!({"kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid,
               "n": b64url(&self.n), "e": b64url(&self.e), "alg": "RS256"})
    }
}
