//! Token endpoint, OpenID discovery, and Graph's token validation (checklist items 1, 2, 3a).

mod common;

use base64::Engine;
use common::*;
use entra_emulator::{Config, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn form<'a>(secret: &'a str, scope: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("client_id", DEFAULT_CLIENT_ID),
        ("client_secret", secret),
        ("grant_type", "client_credentials"),
        ("scope", scope),
    ]
}

#[tokio::test]
async fn client_secret_success_shape_and_ignored_fields() {
    let e = Emu::generated(10).await;
    let mut f = form(DEFAULT_CLIENT_SECRET, GRAPH_SCOPE);
    f.push(("client_info", "1"));
    f.push((
        "claims",
        r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#,
    ));
    let r = e.token_request(&e.tenant_id(), &f).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store, no-cache");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3599);
    assert_eq!(v["ext_expires_in"], 3599);
    assert!(v.get("refresh_token").is_none());
    let tok = v["access_token"].as_str().unwrap();
    let parts: Vec<&str> = tok.split('.').collect();
    assert_eq!(parts.len(), 3);
    let dec = |s: &str| -> Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .unwrap(),
        )
        .unwrap()
    };
    let (h, c) = (dec(parts[0]), dec(parts[1]));
    assert_eq!(h["alg"], "RS256");
    assert!(h["kid"].is_string() && h["nonce"].is_string());
    assert_eq!(c["aud"], "https://graph.microsoft.com");
    assert_eq!(c["tid"], e.tenant_id());
    assert_eq!(c["appid"], DEFAULT_CLIENT_ID);
    assert_eq!(c["appidacr"], "1");
    assert_eq!(c["roles"], json!(["User.Read.All", "Domain.Read.All"]));
    assert!(c["exp"].as_i64().unwrap() > c["iat"].as_i64().unwrap());
    // The token works on Graph, and the tenant can be named by a domain too.
    e.get_json("/v1.0/users?$top=1", tok, &[], 200).await;
    let r = e
        .token_request("example.com", &form(DEFAULT_CLIENT_SECRET, GRAPH_SCOPE))
        .await;
    assert_eq!(r.status(), 200);
    let r = e
        .token_request(
            "EXAMPLE.onmicrosoft.com",
            &form(DEFAULT_CLIENT_SECRET, GRAPH_SCOPE),
        )
        .await;
    assert_eq!(r.status(), 200);
    e.stop().await;
}

#[tokio::test]
async fn basic_auth_secret() {
    let e = Emu::generated(1).await;
    let r = e
        .client
        .post(e.emu.token_endpoint())
        .basic_auth(DEFAULT_CLIENT_ID, Some(DEFAULT_CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials"), ("scope", GRAPH_SCOPE)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = e
        .client
        .post(e.emu.token_endpoint())
        .basic_auth(DEFAULT_CLIENT_ID, Some("nope"))
        .form(&[("grant_type", "client_credentials"), ("scope", GRAPH_SCOPE)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    e.stop().await;
}

#[tokio::test]
async fn aadsts_errors() {
    let e = Emu::generated(1).await;
    let tid = e.tenant_id();

    // Wrong secret: 401 invalid_client AADSTS7000215, correlation id echoes client-request-id.
    let r = e
        .client
        .post(e.emu.token_endpoint())
        .header("client-request-id", "11111111-2222-3333-4444-555555555555")
        .form(&form("wrong", GRAPH_SCOPE))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["client-request-id"],
        "11111111-2222-3333-4444-555555555555"
    );
    assert!(r.headers().contains_key("x-ms-request-id"));
    let v: Value = r.json().await.unwrap();
    let d = assert_aad_error(&v, "invalid_client", 7000215);
    assert!(d.contains(&format!("for a secret added to app '{DEFAULT_CLIENT_ID}'")));
    assert_eq!(v["correlation_id"], "11111111-2222-3333-4444-555555555555");

    // No secret or assertion.
    let r = e
        .token_request(
            &tid,
            &[
                ("client_id", DEFAULT_CLIENT_ID),
                ("grant_type", "client_credentials"),
                ("scope", GRAPH_SCOPE),
            ],
        )
        .await;
    assert_eq!(r.status(), 401);
    let d = assert_aad_error(&r.json().await.unwrap(), "invalid_client", 7000218);
    assert!(d.contains("'client_assertion' or 'client_secret'"));

    // Unknown client.
    let r = e
        .token_request(
            &tid,
            &[
                ("client_id", "00000000-0000-0000-0000-000000000bad"),
                ("client_secret", "x"),
                ("grant_type", "client_credentials"),
                ("scope", GRAPH_SCOPE),
            ],
        )
        .await;
    assert_eq!(r.status(), 400);
    let d = assert_aad_error(&r.json().await.unwrap(), "unauthorized_client", 700016);
    assert!(d.contains("Application with identifier '00000000-0000-0000-0000-000000000bad' was not found in the directory"));

    // Unknown tenant.
    let r = e
        .token_request("contoso.example", &form(DEFAULT_CLIENT_SECRET, GRAPH_SCOPE))
        .await;
    assert_eq!(r.status(), 400);
    let d = assert_aad_error(&r.json().await.unwrap(), "invalid_request", 90002);
    assert!(d.contains("Tenant 'contoso.example' not found."));

    // Scope without /.default.
    let r = e
        .token_request(
            &tid,
            &form(
                DEFAULT_CLIENT_SECRET,
                "https://graph.microsoft.com/User.Read.All",
            ),
        )
        .await;
    assert_eq!(r.status(), 400);
    let d = assert_aad_error(&r.json().await.unwrap(), "invalid_scope", 1002012);
    assert!(d.contains("Client credential flows must have a scope value with /.default suffixed"));

    // Two resources.
    let r = e
        .token_request(
            &tid,
            &form(
                DEFAULT_CLIENT_SECRET,
                "https://graph.microsoft.com/.default https://management.azure.com/.default",
            ),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_aad_error(&r.json().await.unwrap(), "invalid_scope", 70011);

    // Another resource.
    let r = e
        .token_request(
            &tid,
            &form(
                DEFAULT_CLIENT_SECRET,
                "https://management.azure.com/.default",
            ),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_aad_error(&r.json().await.unwrap(), "invalid_resource", 500011);

    // Graph by app id works too.
    let r = e
        .token_request(
            &tid,
            &form(
                DEFAULT_CLIENT_SECRET,
                "00000003-0000-0000-c000-000000000000/.default",
            ),
        )
        .await;
    assert_eq!(r.status(), 200);

    // Missing parameters and other grants.
    let r = e
        .token_request(
            &tid,
            &[
                ("client_id", DEFAULT_CLIENT_ID),
                ("client_secret", "x"),
                ("scope", GRAPH_SCOPE),
            ],
        )
        .await;
    assert_eq!(r.status(), 400);
    let d = assert_aad_error(&r.json().await.unwrap(), "invalid_request", 900144);
    assert!(d.contains("'grant_type'"));
    let r = e
        .token_request(
            &tid,
            &[
                ("client_id", DEFAULT_CLIENT_ID),
                ("client_secret", "x"),
                ("grant_type", "password"),
                ("scope", GRAPH_SCOPE),
            ],
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_aad_error(&r.json().await.unwrap(), "unsupported_grant_type", 70003);
    let r = e.client.get(e.emu.token_endpoint()).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_aad_error(&r.json().await.unwrap(), "invalid_request", 900561);
    e.stop().await;
}

#[tokio::test]
async fn openid_discovery_and_keys() {
    let e = Emu::generated(1).await;
    let tid = e.tenant_id();
    let v = e
        .get_json(
            &format!("/{tid}/v2.0/.well-known/openid-configuration"),
            "",
            &[],
            200,
        )
        .await;
    let b = &e.emu.base_url;
    assert_eq!(v["token_endpoint"], format!("{b}/{tid}/oauth2/v2.0/token"));
    assert_eq!(v["issuer"], format!("{b}/{tid}/v2.0"));
    assert_eq!(v["jwks_uri"], format!("{b}/{tid}/discovery/v2.0/keys"));
    assert!(
        v["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("private_key_jwt"))
    );
    let keys = e
        .get_json(&format!("/{tid}/discovery/v2.0/keys"), "", &[], 200)
        .await;
    assert_eq!(keys["keys"][0]["kty"], "RSA");
    let r = e
        .get(
            "/nope.example/v2.0/.well-known/openid-configuration",
            "",
            &[],
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_aad_error(&r.json().await.unwrap(), "invalid_request", 90002);
    e.stop().await;
}

#[tokio::test]
async fn graph_rejects_bad_tokens_with_real_bodies() {
    let e = Emu::generated(3).await;
    // No Authorization header.
    let r = e
        .client
        .get(e.url("/v1.0/users"))
        .header("client-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["client-request-id"], "abc-123");
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer realm=\"\"")
    );
    let v: Value = r.json().await.unwrap();
    assert_graph_error(&v, "InvalidAuthenticationToken");
    assert_eq!(v["error"]["message"], "Access token is empty.");
    assert_eq!(v["error"]["innerError"]["client-request-id"], "abc-123");
    // Garbage.
    let v = e.get_json("/v1.0/users", "not-a-jwt", &[], 401).await;
    assert_eq!(
        v["error"]["message"],
        "CompactToken parsing failed with error code: 80049217"
    );
    // A token signed by someone else.
    let h =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let c = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(
            &json!({"aud":"https://graph.microsoft.com","tid":e.tenant_id(),"exp":4102444800i64}),
        )
        .unwrap(),
    );
    let forged = format!("{h}.{c}.c2lnbmF0dXJl");
    let v = e.get_json("/v1.0/users", &forged, &[], 401).await;
    assert_graph_error(&v, "InvalidAuthenticationToken");
    assert_eq!(v["error"]["message"], "Access token validation failure.");
    e.stop().await;
}

#[tokio::test]
async fn tokens_expire_mid_run() {
    let e = Emu::start(
        Config::generated(5, "example.com", 1)
            .https()
            .token_lifetime(1),
    )
    .await;
    let r = e
        .token_request(&e.tenant_id(), &form(DEFAULT_CLIENT_SECRET, GRAPH_SCOPE))
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["expires_in"], 1);
    let tok = v["access_token"].as_str().unwrap().to_string();
    e.get_json("/v1.0/users", &tok, &[], 200).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let v = e.get_json("/v1.0/users", &tok, &[], 401).await;
    assert_eq!(
        v["error"]["message"],
        "Access token has expired or is not yet valid."
    );
    // The lifetime can be changed at run time.
    let (s, _) = e
        .control(
            reqwest::Method::PATCH,
            "/settings",
            Some(json!({"tokenLifetime": 600})),
        )
        .await;
    assert_eq!(s, 200);
    let r = e
        .token_request(&e.tenant_id(), &form(DEFAULT_CLIENT_SECRET, GRAPH_SCOPE))
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["expires_in"], 600);
    e.stop().await;
}

#[tokio::test]
async fn app_without_permission_gets_403() {
    let fixture = json!({
        "tenantId": "aaaaaaaa-0000-4000-8000-000000000001",
        "domains": [{"id": "contoso.example"}],
        "applications": [
            {"clientId": "noperm", "clientSecret": "s", "roles": []},
            {"clientId": "users-only", "clientSecret": "s", "roles": ["User.Read.All"]}
        ],
        "users": [{"userPrincipalName": "a@contoso.example", "displayName": "A"}]
    });
    let e = Emu::start(Config::from_fixture(&fixture).unwrap().https()).await;
    let tok = e.token_for("noperm", "s").await;
    let v = e.get_json("/v1.0/users", &tok, &[], 403).await;
    assert_graph_error(&v, "Authorization_RequestDenied");
    assert_eq!(
        v["error"]["message"],
        "Insufficient privileges to complete the operation."
    );
    let tok = e.token_for("users-only", "s").await;
    e.get_json("/v1.0/users", &tok, &[], 200).await;
    e.get_json("/v1.0/domains", &tok, &[], 403).await;
    e.stop().await;
}
