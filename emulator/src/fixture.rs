//! Loading a tenant from a JSON fixture file (users are Graph user objects).

use std::collections::HashSet;
use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Map, Value, json};

use crate::tenant::{AppCertificate, Application, FederatedCredential, TenantSpec};
use crate::user::User;

/// Permissions an application gets when the fixture does not list `roles`.
pub const DEFAULT_ROLES: &[&str] = &["User.Read.All", "Domain.Read.All"];

/// Read and validate a tenant file. The error is one line naming the problem.
pub fn load_file(path: &Path) -> Result<TenantSpec, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let v: Value = serde_json::from_slice(&text).map_err(|e| format!("not valid JSON: {e}"))?;
    parse(&v)
}

fn field<'a>(o: &'a Map<String, Value>, k: &str, at: &str) -> Result<Option<&'a str>, String> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{at}'{k}' must be a string")),
    }
}

/// Stable id derived from a string (used when a fixture user has no `id`).
pub fn derived_guid(seed: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

pub fn parse(v: &Value) -> Result<TenantSpec, String> {
    let o = v.as_object().ok_or("the top level must be a JSON object")?;
    let tenant_id = field(o, "tenantId", "")?
        .ok_or("'tenantId' is missing")?
        .to_string();
    if tenant_id.trim().is_empty() {
        return Err("'tenantId' is empty".into());
    }
    let mut domains = Vec::new();
    match o.get("domains") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (i, d) in a.iter().enumerate() {
                let at = format!("domains[{i}]: ");
                let d = d.as_object().ok_or(format!("{at}must be an object"))?;
                let id = field(d, "id", &at)?.ok_or(format!("{at}'id' is missing"))?;
                if !id.contains('.') {
                    return Err(format!("{at}'id' must be a domain name, got '{id}'"));
                }
                if let Some(t) = field(d, "authenticationType", &at)?
                    && t != "Managed"
                    && t != "Federated"
                {
                    return Err(format!(
                        "{at}'authenticationType' must be Managed or Federated, got '{t}'"
                    ));
                }
                if let Some(v) = d.get("isVerified")
                    && !v.is_boolean()
                {
                    return Err(format!("{at}'isVerified' must be true or false"));
                }
                domains.push(d.clone());
            }
        }
        Some(_) => return Err("'domains' must be an array".into()),
    }
    let initial = field(o, "initialDomain", "")?.map(str::to_string);
    let display_name = field(o, "displayName", "")?.map(str::to_string);
    let domains = complete_domains(domains, initial.as_deref());
    let initial_domain = domains
        .iter()
        .find(|d| d["isInitial"] == Value::Bool(true))
        .and_then(|d| d["id"].as_str())
        .unwrap_or_default()
        .to_string();

    let mut applications = Vec::new();
    match o.get("applications") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (i, app) in a.iter().enumerate() {
                let at = format!("applications[{i}]: ");
                let app = app.as_object().ok_or(format!("{at}must be an object"))?;
                applications.push(parse_app(app, &at)?);
            }
        }
        Some(_) => return Err("'applications' must be an array".into()),
    }

    let users_v = match o.get("users") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        // A pasted list response: {"@odata.context": ..., "value": [...]}.
        Some(Value::Object(m)) => match m.get("value") {
            Some(Value::Array(a)) => a.clone(),
            _ => {
                return Err(
                    "'users' must be an array (or a Graph list response with 'value')".into(),
                );
            }
        },
        Some(_) => return Err("'users' must be an array".into()),
    };
    let mut users = Vec::with_capacity(users_v.len());
    let mut upns = HashSet::new();
    let mut ids = HashSet::new();
    for (i, u) in users_v.iter().enumerate() {
        let at = format!("users[{i}]");
        let mut m = u
            .as_object()
            .ok_or(format!("{at}: must be an object"))?
            .clone();
        if !matches!(m.get("userPrincipalName"), Some(Value::String(s)) if !s.is_empty()) {
            return Err(format!(
                "{at}: 'userPrincipalName' is missing or not a string"
            ));
        }
        if !m.contains_key("id")
            && let Some(Value::String(upn)) = m.get("userPrincipalName")
        {
            m.insert(
                "id".into(),
                Value::String(derived_guid(&format!("{tenant_id}/{upn}"))),
            );
        }
        let user = User::from_graph(&m).map_err(|e| format!("{at}: {e}"))?;
        if !upns.insert(user.upn().to_lowercase()) {
            return Err(format!(
                "{at}: duplicate userPrincipalName '{}'",
                user.upn()
            ));
        }
        if !ids.insert(user.id.to_ascii_lowercase()) {
            return Err(format!("{at}: duplicate id '{}'", user.id));
        }
        users.push(user);
    }
    let mut directory_roles = crate::roles::parse(o.get("directoryRoles").unwrap_or(&Value::Null))?;
    // Members may be given by userPrincipalName too; store object ids.
    for (i, r) in directory_roles.iter_mut().enumerate() {
        for m in r.members.iter_mut() {
            if m.contains('@') {
                let u = users
                    .iter()
                    .find(|u| u.upn().eq_ignore_ascii_case(m))
                    .ok_or(format!("directoryRoles[{i}]: no user '{m}' in 'users'"))?;
                *m = u.id.to_string();
            }
        }
    }
    Ok(TenantSpec {
        directory_roles,
        display_name: display_name.unwrap_or_else(|| {
            initial_domain
                .split('.')
                .next()
                .unwrap_or("Emulator")
                .to_string()
        }),
        tenant_id,
        initial_domain,
        domains,
        applications,
        users,
    })
}

fn parse_app(app: &Map<String, Value>, at: &str) -> Result<Application, String> {
    let client_id = field(app, "clientId", at)?
        .or(field(app, "appId", at)?)
        .ok_or(format!("{at}'clientId' is missing"))?
        .to_string();
    let mut secrets = Vec::new();
    if let Some(s) = field(app, "clientSecret", at)? {
        secrets.push(s.to_string());
    }
    let mut certificates = Vec::new();
    match app.get("certificates") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (j, c) in a.iter().enumerate() {
                let pem = c
                    .as_str()
                    .ok_or(format!("{at}certificates[{j}] must be a PEM string"))?;
                certificates.push(
                    parse_certificate(pem).map_err(|e| format!("{at}certificates[{j}]: {e}"))?,
                );
            }
        }
        Some(_) => {
            return Err(format!(
                "{at}'certificates' must be an array of PEM strings"
            ));
        }
    }
    let mut federated = Vec::new();
    match app.get("federatedCredentials") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (j, f) in a.iter().enumerate() {
                let fat = format!("{at}federatedCredentials[{j}]: ");
                let f = f.as_object().ok_or(format!("{fat}must be an object"))?;
                let issuer =
                    field(f, "issuer", &fat)?.ok_or(format!("{fat}'issuer' is missing"))?;
                let subject =
                    field(f, "subject", &fat)?.ok_or(format!("{fat}'subject' is missing"))?;
                let audiences = match f.get("audiences") {
                    None | Some(Value::Null) => vec!["api://AzureADTokenExchange".to_string()],
                    Some(Value::Array(a)) => a
                        .iter()
                        .map(|x| x.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or(format!("{fat}'audiences' must be an array of strings"))?,
                    Some(_) => return Err(format!("{fat}'audiences' must be an array of strings")),
                };
                federated.push(FederatedCredential {
                    issuer: issuer.to_string(),
                    subject: subject.to_string(),
                    audiences,
                });
            }
        }
        Some(_) => return Err(format!("{at}'federatedCredentials' must be an array")),
    }
    let roles = match app.get("roles") {
        None | Some(Value::Null) => DEFAULT_ROLES.iter().map(|s| s.to_string()).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or(format!("{at}'roles' must be an array of strings"))?,
        Some(_) => return Err(format!("{at}'roles' must be an array of strings")),
    };
    Ok(Application {
        display_name: field(app, "displayName", at)?
            .unwrap_or("dirsync emulator app")
            .to_string(),
        sp_object_id: derived_guid(&format!("sp/{client_id}")),
        client_id,
        secrets,
        certificates,
        federated,
        roles,
    })
}

/// Parse the first certificate of a PEM text (a private key next to it is ignored).
/// Entra app credentials are RSA certificates; other key types are refused.
pub fn parse_certificate(pem: &str) -> Result<AppCertificate, String> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or("no CERTIFICATE block found")?
        .map_err(|e| format!("bad PEM: {e:?}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let spki = &cert.tbs_certificate.subject_pki;
    if spki.algorithm.algorithm.to_id_string() != "1.2.840.113549.1.1.1" {
        return Err("only RSA certificates can be application credentials (as in Entra ID)".into());
    }
    Ok(AppCertificate {
        sha1: ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der.as_ref())
            .as_ref()
            .to_vec(),
        sha256: ring::digest::digest(&ring::digest::SHA256, der.as_ref())
            .as_ref()
            .to_vec(),
        rsa_public_key: spki.subject_public_key.data.to_vec(),
    })
}

/// Fill each domain's properties with Graph's usual values, and make sure the tenant has a
/// default domain and an initial `*.onmicrosoft.com` domain.
pub fn complete_domains(domains: Vec<Map<String, Value>>, initial: Option<&str>) -> Vec<Value> {
    let mut out: Vec<Value> = domains
        .into_iter()
        .map(|d| {
            let id = d
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let mut base = domain_object(&id, false, false);
            if let Value::Object(b) = &mut base {
                for (k, v) in d {
                    b.insert(k, v);
                }
            }
            base
        })
        .collect();
    let has_initial = out.iter().any(|d| d["isInitial"] == Value::Bool(true));
    if !has_initial {
        let name = match initial {
            Some(i) => i.to_string(),
            None => {
                let first = out
                    .iter()
                    .find_map(|d| d["id"].as_str())
                    .unwrap_or("emulator.example");
                let label: String = first
                    .split('.')
                    .next()
                    .unwrap_or("emulator")
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect::<String>()
                    .to_ascii_lowercase();
                format!(
                    "{}.onmicrosoft.com",
                    if label.is_empty() { "emulator" } else { &label }
                )
            }
        };
        if let Some(existing) = out
            .iter_mut()
            .find(|d| d["id"].as_str() == Some(name.as_str()))
        {
            existing["isInitial"] = Value::Bool(true);
        } else {
            out.push(domain_object(&name, true, false));
        }
    }
    if !out.iter().any(|d| d["isDefault"] == Value::Bool(true))
        && let Some(first) = out.first_mut()
    {
        first["isDefault"] = Value::Bool(true);
    }
    out
}

pub fn domain_object(id: &str, initial: bool, default: bool) -> Value {
    json!({
        "authenticationType": "Managed",
        "availabilityStatus": null,
        "id": id,
        "isAdminManaged": true,
        "isDefault": default,
        "isInitial": initial,
        "isRoot": true,
        "isVerified": true,
        "supportedServices": if initial { json!(["Email", "OfficeCommunicationsOnline"]) } else { json!(["Email"]) },
        "passwordValidityPeriodInDays": 2147483647,
        "passwordNotificationWindowInDays": 14,
        "state": null
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_fixture() {
        let v = json!({"tenantId":"t1","domains":[{"id":"contoso.com"},{"id":"fed.contoso.com","authenticationType":"Federated"}],
            "applications":[{"clientId":"c1","clientSecret":"s"}],
            "users":{"value":[{"userPrincipalName":"a@contoso.com","displayName":"A"}]}});
        let t = parse(&v).unwrap();
        assert_eq!(t.initial_domain, "contoso.onmicrosoft.com");
        assert_eq!(t.domains.len(), 3);
        assert_eq!(t.domains[0]["isDefault"], true);
        assert_eq!(t.domains[1]["authenticationType"], "Federated");
        assert_eq!(t.users.len(), 1);
        assert_eq!(
            t.applications[0].roles,
            vec!["User.Read.All", "Domain.Read.All"]
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let e = parse(&json!({"tenantId":"t","users":[{"displayName":"x"},{}]})).unwrap_err();
        assert!(e.starts_with("users[0]:"), "{e}");
        let e = parse(&json!({"users":[]})).unwrap_err();
        assert_eq!(e, "'tenantId' is missing");
        let e = parse(&json!({"tenantId":"t","users":[
            {"userPrincipalName":"a@x.com","displayName":"A"},{"userPrincipalName":"A@x.com","displayName":"B"}]})).unwrap_err();
        assert!(e.contains("duplicate userPrincipalName"), "{e}");
        let e = parse(
            &json!({"tenantId":"t","applications":[{"clientId":"c","certificates":["nope"]}]}),
        )
        .unwrap_err();
        assert!(e.contains("applications[0]: certificates[0]"), "{e}");
    }
}
