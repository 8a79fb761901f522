//! The control API under `/_emulator/`: users, faults, request counters, reset, settings.
//! Graph clients never call it; it is reserved by path only (see the README).

use std::sync::atomic::Ordering;

use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::faults::FaultSpec;
use crate::fixture::{DEFAULT_ROLES, derived_guid, parse_certificate};
use crate::http::{Resp, json_response};
use crate::state::AppState;
use crate::tenant::{Application, FederatedCredential, MutationError};

pub const PREFIX: &str = "/_emulator";

fn err(status: StatusCode, code: &str, msg: &str) -> Resp {
    json_response(status, &json!({"error": {"code": code, "message": msg}}))
}

fn bad(msg: &str) -> Resp {
    err(StatusCode::BAD_REQUEST, "BadRequest", msg)
}

fn mutation(e: MutationError) -> Resp {
    match e {
        MutationError::NotFound(_) => err(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &e.to_string(),
        ),
        MutationError::DuplicateUpn => err(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            &e.to_string(),
        ),
        MutationError::BadRequest(m) => bad(&m),
    }
}

fn params(query: Option<&str>) -> Map<String, Value> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect()
}

fn body_object(body: &[u8]) -> Result<Map<String, Value>, Resp> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("the body must be a JSON object")),
        Err(e) => Err(bad(&format!("the body is not valid JSON: {e}"))),
    }
}

fn parse_app(m: &Map<String, Value>) -> Result<Application, String> {
    let client_id = m
        .get("clientId")
        .and_then(Value::as_str)
        .ok_or("'clientId' is missing")?
        .to_string();
    let strings = |k: &str| -> Result<Vec<String>, String> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(format!("'{k}' must be an array of strings")),
            Some(_) => Err(format!("'{k}' must be an array of strings")),
        }
    };
    let mut secrets = strings("clientSecrets")?;
    if let Some(s) = m.get("clientSecret").and_then(Value::as_str) {
        secrets.push(s.to_string());
    }
    let certificates = strings("certificates")?
        .iter()
        .enumerate()
        .map(|(i, pem)| parse_certificate(pem).map_err(|e| format!("certificates[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let federated = match m.get("federatedCredentials") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value::<Vec<Map<String, Value>>>(v.clone())
            .map_err(|e| format!("'federatedCredentials': {e}"))?
            .iter()
            .map(|f| {
                let s = |k: &str| f.get(k).and_then(Value::as_str).map(str::to_string);
                let audiences = match f.get("audiences") {
                    Some(Value::Array(a)) => a
                        .iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect(),
                    _ => vec!["api://AzureADTokenExchange".to_string()],
                };
                Ok(FederatedCredential {
                    issuer: s("issuer").ok_or("federatedCredentials: 'issuer' is missing")?,
                    subject: s("subject").ok_or("federatedCredentials: 'subject' is missing")?,
                    audiences,
                })
            })
            .collect::<Result<Vec<_>, String>>()?,
    };
    let roles = match m.get("roles") {
        None | Some(Value::Null) => DEFAULT_ROLES.iter().map(|s| s.to_string()).collect(),
        Some(_) => strings("roles")?,
    };
    Ok(Application {
        display_name: m
            .get("displayName")
            .and_then(Value::as_str)
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

/// `GET /_emulator/settings` (and the answer to a PATCH); `now` is the shifted clock.
fn settings(state: &AppState) -> Value {
    json!({
        "tokenLifetime": state.token_lifetime(),
        "deltaReplay": state.delta_replay(),
        "clockOffset": state.clock_offset(),
        "writeLimit": state.throttle.limit(),
        "writeWindowSeconds": state.throttle.window_secs(),
        "rejectFederatedPassword": state.reject_federated_password(),
        "now": state.now(),
    })
}

const SETTINGS: &[&str] = &[
    "tokenLifetime",
    "deltaReplay",
    "clockOffset",
    "writeLimit",
    "writeWindowSeconds",
    "rejectFederatedPassword",
];

/// Apply a settings patch: every field is checked before any is applied, and an unknown
/// name is refused (a misspelt setting would otherwise leave a test running on defaults).
fn patch_settings(state: &AppState, m: &Map<String, Value>) -> Result<(), String> {
    if let Some(k) = m.keys().find(|k| !SETTINGS.contains(&k.as_str())) {
        return Err(format!(
            "unknown setting '{k}': {} can be set",
            SETTINGS.join(", ")
        ));
    }
    let lifetime = match m.get("tokenLifetime") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Some(n),
            _ => return Err("'tokenLifetime' must be a positive number of seconds".into()),
        },
    };
    let flag = |k: &str| -> Result<Option<bool>, String> {
        match m.get(k) {
            None => Ok(None),
            Some(v) => Ok(Some(
                v.as_bool().ok_or(format!("'{k}' must be true or false"))?,
            )),
        }
    };
    let replay = flag("deltaReplay")?;
    let reject_fed = flag("rejectFederatedPassword")?;
    let offset = match m.get("clockOffset") {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or("'clockOffset' must be a whole number of seconds (may be negative)")?,
        ),
    };
    let write_limit = match m.get("writeLimit") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or("'writeLimit' must be a whole number of writes (0 = no limit)")?,
        ),
    };
    let write_window = match m.get("writeWindowSeconds") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Some(n),
            _ => return Err("'writeWindowSeconds' must be a positive number of seconds".into()),
        },
    };
    if let Some(n) = lifetime {
        state.token_lifetime.store(n, Ordering::Relaxed);
    }
    if let Some(b) = replay {
        state.delta_replay.store(b, Ordering::Relaxed);
    }
    if let Some(b) = reject_fed {
        state.reject_federated_password.store(b, Ordering::Relaxed);
    }
    if let Some(n) = offset {
        state.clock_offset.store(n, Ordering::Relaxed);
    }
    if write_limit.is_some() || write_window.is_some() {
        if let Some(n) = write_limit {
            state.throttle.limit.store(n, Ordering::Relaxed);
        }
        if let Some(n) = write_window {
            state.throttle.window_secs.store(n, Ordering::Relaxed);
        }
        // New limits start with full buckets.
        state.throttle.clear();
    }
    Ok(())
}

pub async fn handle(
    state: &AppState,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Resp {
    let p = params(query);
    let tenant_name = p.get("tenant").and_then(Value::as_str);
    let rest = path.trim_start_matches(PREFIX).trim_matches('/');
    let segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let needs_tenant = matches!(
        segs.first(),
        Some(&"users") | Some(&"applications") | Some(&"directoryRoles")
    );
    let tenant = state.tenant_or_first(tenant_name);
    if needs_tenant && tenant.is_none() {
        return err(StatusCode::NOT_FOUND, "UnknownTenant", "no such tenant");
    }
    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["health"]) => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (Method::GET, ["tenants"]) => {
            let list: Vec<Value> = state
                .tenants
                .iter()
                .map(|t| {
                    json!({
                        "tenantId": t.id,
                        "displayName": t.display_name,
                        "initialDomain": t.initial_domain,
                        "domains": t.domains.iter().map(|d| d["id"].clone()).collect::<Vec<_>>(),
                        "users": t.user_count(),
                        "deletedUsers": t.deleted_ids().len(),
                        "applications": t.apps().iter().map(|a| json!({
                            "clientId": a.client_id, "roles": a.roles,
                            "certificates": a.certificates.len(), "federatedCredentials": a.federated.len(),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json_response(
                StatusCode::OK,
                &json!({"baseUrl": state.base_url, "tokenLifetime": state.token_lifetime(), "tenants": list}),
            )
        }
        (Method::POST, ["reset"]) => {
            for t in &state.tenants {
                t.reset(state.next_epoch());
            }
            state.faults.clear();
            state.stats.reset();
            state.clock_offset.store(0, Ordering::Relaxed);
            state.throttle.clear();
            json_response(StatusCode::OK, &json!({"reset": true}))
        }
        (Method::GET, ["settings"]) => json_response(StatusCode::OK, &settings(state)),
        (Method::PATCH, ["settings"]) => {
            let m = match body_object(body) {
                Ok(m) => m,
                Err(r) => return r,
            };
            match patch_settings(state, &m) {
                Ok(()) => json_response(StatusCode::OK, &settings(state)),
                Err(e) => bad(&e),
            }
        }
        (Method::GET, ["faults"]) => {
            json_response(StatusCode::OK, &json!({"faults": state.faults.list()}))
        }
        (Method::POST, ["faults"]) => {
            let spec: FaultSpec = match serde_json::from_slice(body) {
                Ok(s) => s,
                Err(e) => return bad(&format!("bad fault: {e}")),
            };
            if let Err(e) = spec.validate() {
                return bad(&e);
            }
            json_response(StatusCode::CREATED, &json!(state.faults.add(spec)))
        }
        (Method::DELETE, ["faults"]) => {
            state.faults.clear();
            json_response(StatusCode::OK, &json!({"faults": []}))
        }
        (Method::DELETE, ["faults", id]) => match id.parse::<u64>() {
            Ok(n) if state.faults.remove(n) => {
                json_response(StatusCode::OK, &json!({"deleted": n}))
            }
            _ => err(StatusCode::NOT_FOUND, "NotFound", "no such fault"),
        },
        (Method::GET, ["requests"]) => {
            let limit = p
                .get("limit")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .unwrap_or(100);
            json_response(StatusCode::OK, &state.stats.snapshot(limit))
        }
        (Method::DELETE, ["requests"]) => {
            state.stats.reset();
            json_response(StatusCode::OK, &json!({"total": 0}))
        }
        (Method::PUT, ["applications"]) | (Method::POST, ["applications"]) => {
            let m = match body_object(body) {
                Ok(m) => m,
                Err(r) => return r,
            };
            match parse_app(&m) {
                Ok(app) => {
                    let id = app.client_id.clone();
                    if let Some(t) = &tenant {
                        t.upsert_app(app);
                    }
                    json_response(StatusCode::OK, &json!({"clientId": id}))
                }
                Err(e) => bad(&e),
            }
        }
        (Method::GET, ["directoryRoles"]) => match &tenant {
            Some(t) => json_response(
                StatusCode::OK,
                &json!({"directoryRoles": t.directory_roles().iter().map(|r| r.to_json()).collect::<Vec<_>>()}),
            ),
            None => err(StatusCode::NOT_FOUND, "UnknownTenant", "no such tenant"),
        },
        (Method::PUT, ["directoryRoles"]) => {
            let Some(t) = &tenant else {
                return err(StatusCode::NOT_FOUND, "UnknownTenant", "no such tenant");
            };
            let v: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return bad(&format!("the body is not valid JSON: {e}")),
            };
            let list = v.get("directoryRoles").unwrap_or(&v);
            match crate::roles::parse(list) {
                Ok(roles) => {
                    t.set_directory_roles(roles);
                    json_response(
                        StatusCode::OK,
                        &json!({"directoryRoles": t.directory_roles().iter().map(|r| r.to_json()).collect::<Vec<_>>()}),
                    )
                }
                Err(e) => bad(&e),
            }
        }
        (m, ["users", rest @ ..]) => {
            let Some(t) = tenant else {
                return err(StatusCode::NOT_FOUND, "UnknownTenant", "no such tenant");
            };
            match (m, rest) {
                (Method::POST, []) => {
                    let obj = match body_object(body) {
                        Ok(m) => m,
                        Err(r) => return r,
                    };
                    match t.add_user(&obj) {
                        Ok(u) => json_response(StatusCode::CREATED, &u.to_full_json()),
                        Err(e) => mutation(e),
                    }
                }
                (Method::GET, [key]) => match t.snapshot().find(key) {
                    Some(u) => json_response(StatusCode::OK, &u.to_full_json()),
                    None => mutation(MutationError::NotFound(key.to_string())),
                },
                (Method::PATCH, [key]) => {
                    let obj = match body_object(body) {
                        Ok(m) => m,
                        Err(r) => return r,
                    };
                    match t.update_user(key, &obj) {
                        Ok(u) => json_response(StatusCode::OK, &u.to_full_json()),
                        Err(e) => mutation(e),
                    }
                }
                (Method::DELETE, [key]) => {
                    let permanent = p.get("permanent").and_then(Value::as_str) == Some("true");
                    match t.delete_user_at(key, permanent, state.now()) {
                        Ok(()) => json_response(
                            StatusCode::OK,
                            &json!({"deleted": key, "permanent": permanent}),
                        ),
                        Err(e) => mutation(e),
                    }
                }
                (Method::POST, [key, "restore"]) => match t.restore_user(key) {
                    Ok(u) => json_response(StatusCode::OK, &u.to_full_json()),
                    Err(e) => mutation(e),
                },
                _ => err(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "no such control endpoint",
                ),
            }
        }
        _ => err(
            StatusCode::NOT_FOUND,
            "NotFound",
            "no such control endpoint; see emulator/README.md",
        ),
    }
}
