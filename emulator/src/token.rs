//! The Microsoft identity platform side: `POST /{tenant}/oauth2/v2.0/token` (client
//! credentials), the OpenID discovery document and the signing keys.

use std::collections::HashMap;

use base64::Engine;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::http::{AAD_JSON, Ctx, Resp, aad_error, json_response, response, set_header};
use crate::jwt::{SigningKey, b64url};
use crate::state::AppState;

pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn bad_request(ctx: &Ctx, error: &str, code: u32, msg: &str) -> Resp {
    aad_error(ctx, StatusCode::BAD_REQUEST, error, code, msg)
}

fn missing(ctx: &Ctx, param: &str) -> Resp {
    bad_request(
        ctx,
        "invalid_request",
        900144,
        &format!("The request body must contain the following parameter: '{param}'."),
    )
}

fn unknown_tenant(ctx: &Ctx, seg: &str) -> Resp {
    bad_request(
        ctx,
        "invalid_request",
        90002,
        &format!(
            "Tenant '{seg}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
        ),
    )
}

/// `(client_id, client_secret)` from `Authorization: Basic` (RFC 6749 §2.3.1: form-encoded parts).
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    let dec = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((dec(id), dec(secret)))
}

/// Check the `scope`: exactly one resource, Microsoft Graph, as `<resource>/.default`.
fn check_scope(ctx: &Ctx, scope: &str, tenant_name: &str) -> Result<(), Resp> {
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if scopes.is_empty() {
        return Err(missing(ctx, "scope"));
    }
    for s in &scopes {
        if !s.ends_with("/.default") {
            return Err(bad_request(
                ctx,
                "invalid_scope",
                1002012,
                &format!(
                    "The provided value for scope {s} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            ));
        }
    }
    if scopes.len() > 1 {
        return Err(bad_request(
            ctx,
            "invalid_scope",
            70011,
            &format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
        ));
    }
    let resource = scopes[0]
        .trim_end_matches("/.default")
        .trim_end_matches('/');
    if !(resource.eq_ignore_ascii_case(GRAPH_AUDIENCE)
        || resource.eq_ignore_ascii_case(GRAPH_APP_ID))
    {
        return Err(bad_request(
            ctx,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {resource} was not found in the tenant named {tenant_name}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        ));
    }
    Ok(())
}

pub async fn token(
    state: &AppState,
    ctx: &Ctx,
    seg: &str,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Resp {
    if method != Method::POST {
        return bad_request(
            ctx,
            "invalid_request",
            900561,
            &format!("The endpoint only accepts POST requests. Received a {method} request."),
        );
    }
    let Some(tenant) = state.tenant(seg) else {
        return unknown_tenant(ctx, seg);
    };
    let mut form: HashMap<String, String> = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        form.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    let basic = basic_auth(headers);
    match form.get("grant_type").map(String::as_str) {
        None | Some("") => return missing(ctx, "grant_type"),
        Some("client_credentials") => {}
        Some(other) => {
            return bad_request(
                ctx,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            );
        }
    }
    let client_id = match form.get("client_id").filter(|s| !s.is_empty()) {
        Some(c) => c.clone(),
        None => match &basic {
            Some((id, _)) if !id.is_empty() => id.clone(),
            _ => return missing(ctx, "client_id"),
        },
    };
    let Some(scope) = form.get("scope").cloned() else {
        return missing(ctx, "scope");
    };
    let Some(app) = tenant.app(&client_id) else {
        return bad_request(
            ctx,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                tenant.display_name
            ),
        );
    };
    let secret = form
        .get("client_secret")
        .cloned()
        .or_else(|| basic.as_ref().map(|(_, s)| s.clone()));
    let assertion = form.get("client_assertion").cloned();
    let acr = if let Some(assertion) = assertion {
        match form.get("client_assertion_type").map(String::as_str) {
            None => return missing(ctx, "client_assertion_type"),
            Some(JWT_BEARER) => {}
            Some(other) => {
                return bad_request(
                    ctx,
                    "invalid_request",
                    50027,
                    &format!(
                        "JWT token is invalid or malformed. Unsupported client_assertion_type '{other}'."
                    ),
                );
            }
        }
        if let Err(r) = crate::assertion::verify(state, ctx, &tenant, seg, &app, &assertion).await {
            return r;
        }
        "2"
    } else if let Some(secret) = secret {
        if !app.secrets.iter().any(|s| s == &secret) {
            return aad_error(
                ctx,
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                    app.client_id
                ),
            );
        }
        "1"
    } else {
        return aad_error(
            ctx,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    };
    if let Err(r) = check_scope(ctx, &scope, &tenant.initial_domain) {
        return r;
    }
    let key = match tokio::task::spawn_blocking(SigningKey::get).await {
        Ok(Ok(k)) => k,
        _ => {
            return aad_error(
                ctx,
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                90033,
                "A transient error has occurred. Please try again.",
            );
        }
    };
    let lifetime = state.token_lifetime();
    let sts = format!("https://sts.windows.net/{}/", tenant.id);
    let rand_id = || b64url(uuid::Uuid::new_v4().as_bytes());
    let claims = json!({
        "aud": GRAPH_AUDIENCE,
        "iss": sts,
        "iat": ctx.now,
        "nbf": ctx.now,
        "exp": ctx.now + lifetime as i64,
        "aio": rand_id(),
        "app_displayname": app.display_name,
        "appid": app.client_id,
        "appidacr": acr,
        "idp": sts,
        "idtyp": "app",
        "oid": app.sp_object_id,
        "rh": format!("0.{}.", rand_id()),
        "roles": app.roles,
        "sub": app.sp_object_id,
        "tenant_region_scope": "AS",
        "tid": tenant.id,
        "uti": rand_id(),
        "ver": "1.0",
        "wids": ["0997a1d0-0d1d-4acb-b408-d5ca73121e90"],
        "xms_tcdt": 1_600_000_000,
    });
    let token = match key.sign(&claims, &[("nonce", json!(rand_id()))]) {
        Ok(t) => t,
        Err(_) => {
            return aad_error(
                ctx,
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                90033,
                "A transient error has occurred. Please try again.",
            );
        }
    };
    let body = json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": token,
    });
    let mut r = response(
        StatusCode::OK,
        AAD_JSON,
        serde_json::to_vec(&body).unwrap_or_default(),
    );
    set_header(&mut r, "cache-control", "no-store, no-cache");
    set_header(&mut r, "pragma", "no-cache");
    r
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`
pub fn openid_configuration(state: &AppState, ctx: &Ctx, seg: &str) -> Resp {
    let Some(tenant) = state.tenant(seg) else {
        return unknown_tenant(ctx, seg);
    };
    let b = &state.base_url;
    let t = &tenant.id;
    let doc = json!({
        "token_endpoint": format!("{b}/{t}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{b}/{t}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{b}/{t}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": format!("{b}/{t}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{b}/{t}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{b}/{t}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": format!("{b}/{t}/kerberos"),
        "tenant_region_scope": "AS",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    });
    json_response(StatusCode::OK, &doc)
}

/// `GET /{tenant}/discovery/v2.0/keys`
pub async fn keys(state: &AppState, ctx: &Ctx, seg: &str) -> Resp {
    if state.tenant(seg).is_none() {
        return unknown_tenant(ctx, seg);
    }
    match tokio::task::spawn_blocking(SigningKey::get).await {
        Ok(Ok(k)) => json_response(StatusCode::OK, &json!({"keys": [k.jwk()]})),
        _ => json_response(StatusCode::INTERNAL_SERVER_ERROR, &Value::Null),
    }
}
