//! The Graph client against the project's Entra ID / Graph emulator (HTTPS with its own CA),
//! and against small local mock servers for token refresh and federated tokens.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dirsync::clients::graph::{
    AssertionAlgorithm, AssertionFn, ClientCertificate, FederatedTokenFile, GraphClient,
    GraphConfig, GraphCredential,
};
use dirsync::clients::outbound::{HttpConfig, RetryPolicy};
use dirsync::directory::{Directory, DirectoryError, ListScope};
use entra_emulator::faults::{FaultKind, FaultSpec};
use entra_emulator::{
    Config, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_TENANT_ID, Emulator, RunningEmulator,
};
use secrecy::SecretString;
use serde_json::json;
use url::Url;

const DOMAIN: &str = "example.com";
const CERT_PEM: &str = include_str!("fixtures/client-cert-pkcs8.pem");

fn fast_http(ca: Option<&str>) -> HttpConfig {
    HttpConfig {
        extra_ca_pem: ca.map(|c| c.as_bytes().to_vec()),
        request_timeout: Duration::from_secs(20),
        run_timeout: Some(Duration::from_secs(120)),
        retry: RetryPolicy {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(40),
            ..RetryPolicy::default()
        },
        ..HttpConfig::default()
    }
}

fn emulator_config(emu: &RunningEmulator, credential: GraphCredential) -> GraphConfig {
    let base = Url::parse(&emu.base_url).unwrap();
    GraphConfig {
        authority_host: base.clone(),
        graph_endpoint: base,
        http: fast_http(emu.ca_pem.as_deref()),
        ..GraphConfig::new(DEFAULT_TENANT_ID, DEFAULT_CLIENT_ID, credential)
    }
}

fn secret() -> GraphCredential {
    GraphCredential::ClientSecret(SecretString::from(DEFAULT_CLIENT_SECRET))
}

async fn start_emulator(users: usize) -> RunningEmulator {
    dirsync::clients::outbound::init_crypto();
    let mut cfg = Config::generated(users, DOMAIN, 7).https();
    let cert = entra_emulator::fixture::parse_certificate(CERT_PEM).unwrap();
    cfg.tenants[0].applications[0].certificates.push(cert);
    Emulator::start(cfg).await.unwrap()
}

/// The ids of the emulator's members in `DOMAIN`, as the listing must return them.
fn expected_ids(emu: &RunningEmulator) -> HashSet<String> {
    emu.tenant()
        .snapshot()
        .users
        .iter()
        .filter(|u| {
            u.upn()
                .to_ascii_lowercase()
                .ends_with(&format!("@{DOMAIN}"))
        })
        .map(|u| u.id.to_string())
        .collect()
}

#[tokio::test]
async fn client_secret_lists_every_page_of_the_domain_over_https() {
    let emu = start_emulator(2100).await;
    let graph = GraphClient::new(emulator_config(&emu, secret())).unwrap();
    let users = graph
        .list_users(&ListScope::Domain(DOMAIN.into()))
        .await
        .unwrap();
    let expected = expected_ids(&emu);
    assert!(
        expected.len() > 1000,
        "needs more than one page of 999: {}",
        expected.len()
    );
    let got: HashSet<String> = users.iter().map(|u| u.id.clone()).collect();
    assert_eq!(got.len(), users.len(), "no duplicates");
    assert_eq!(got, expected);
    for u in &users {
        assert!(u.user_name.to_ascii_lowercase().ends_with("@example.com"));
        assert_eq!(u.upn.as_deref(), Some(u.user_name.as_str()));
    }
    // Every page resent ConsistencyLevel and kept $select/$top/$filter/$count (via nextLink).
    let stats = emu.state().stats.snapshot(100);
    let pages: Vec<&serde_json::Value> = stats["recent"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["endpoint"] == "users")
        .collect();
    assert_eq!(pages.len(), expected.len().div_ceil(999));
    for p in &pages {
        assert_eq!(p["consistencyLevel"], "eventual", "{p}");
        assert_eq!(p["status"], 200, "{p}");
    }
    let first = pages[0]["path"].as_str().unwrap();
    assert!(
        first.contains("$top=999")
            && first.contains("$count=true")
            && first.contains("$select=id,"),
        "{first}"
    );
    // A second listing reuses the cached token.
    let again = graph
        .list_users(&ListScope::Domain(DOMAIN.into()))
        .await
        .unwrap();
    assert_eq!(again.len(), users.len());
    assert_eq!(emu.state().stats.snapshot(0)["byEndpoint"]["token"], 1);
    emu.stop().await;
}

#[tokio::test]
async fn tls_without_the_extra_ca_is_refused() {
    let emu = start_emulator(5).await;
    let mut cfg = emulator_config(&emu, secret());
    cfg.http.extra_ca_pem = None;
    cfg.http.retry.max_attempts = 1;
    let err = GraphClient::new(cfg)
        .unwrap()
        .list_users(&ListScope::All)
        .await
        .unwrap_err();
    match &err {
        DirectoryError::Unavailable(m) => {
            assert!(m.contains("TLS") && m.contains("token request"), "{m}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    emu.stop().await;
}

#[tokio::test]
async fn wrong_secret_is_invalid_credentials_with_the_aadsts_code_and_no_secret() {
    let emu = start_emulator(5).await;
    let canary = "CANARY-wrong-secret-5f1e9a";
    let cfg = emulator_config(
        &emu,
        GraphCredential::ClientSecret(SecretString::from(canary)),
    );
    let err = GraphClient::new(cfg)
        .unwrap()
        .list_users(&ListScope::Domain(DOMAIN.into()))
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        matches!(err, DirectoryError::InvalidCredentials(_)),
        "{text}"
    );
    assert!(text.contains("AADSTS7000215"), "{text}");
    assert!(
        !text.contains("CANARY") && !text.contains("5f1e9a"),
        "{text}"
    );
    assert!(text.len() < 600);
    emu.stop().await;
}

#[tokio::test]
async fn client_certificate_credential_works_with_rs256_and_ps256() {
    let emu = start_emulator(30).await;
    let expected = expected_ids(&emu);
    for alg in [AssertionAlgorithm::RS256, AssertionAlgorithm::PS256] {
        let cert = ClientCertificate::from_pem(CERT_PEM.as_bytes())
            .unwrap()
            .with_algorithm(alg);
        let graph = GraphClient::new(emulator_config(
            &emu,
            GraphCredential::ClientCertificate(Arc::new(cert)),
        ))
        .unwrap();
        let users = graph
            .list_users(&ListScope::Domain(DOMAIN.into()))
            .await
            .unwrap();
        assert_eq!(
            users.iter().map(|u| u.id.clone()).collect::<HashSet<_>>(),
            expected,
            "{alg:?}"
        );
    }
    // The same certificate presented for an app the tenant does not know is refused.
    let cert = ClientCertificate::from_pem(CERT_PEM.as_bytes()).unwrap();
    let mut cfg = emulator_config(&emu, GraphCredential::ClientCertificate(Arc::new(cert)));
    cfg.client_id = "00000000-0000-0000-0000-00000000abcd".into();
    let err = GraphClient::new(cfg)
        .unwrap()
        .authenticate()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DirectoryError::InvalidCredentials(m) if m.contains("AADSTS")),
        "{err}"
    );
    emu.stop().await;
}

#[tokio::test]
async fn get_user_find_by_upn_and_domains() {
    let emu = start_emulator(20).await;
    let tenant = emu.tenant();
    // UPNs with characters that must be escaped or encoded: ' # +
    let tricky = ["o'brien#x+y@example.com", "plain.user@example.com"];
    let mut ids = Vec::new();
    for upn in tricky {
        let obj = json!({
            "userPrincipalName": upn, "displayName": "Tricky", "givenName": null, "surname": null,
            "mail": null, "accountEnabled": false, "onPremisesImmutableId": "imm+/=", "userType": "Member"
        });
        ids.push(
            tenant
                .add_user(obj.as_object().unwrap())
                .unwrap()
                .id
                .to_string(),
        );
    }
    let graph = GraphClient::new(emulator_config(&emu, secret())).unwrap();
    let found = graph
        .find_by_user_name("O'BRIEN#x+y@example.com")
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, ids[0]);
    assert_eq!(found[0].user_name, tricky[0]);
    assert_eq!(found[0].immutable_id.as_deref(), Some("imm+/="));
    assert!(!found[0].active);
    assert!(
        graph
            .find_by_user_name("nobody@example.com")
            .await
            .unwrap()
            .is_empty()
    );

    let u = graph.get_user(&ids[1]).await.unwrap().unwrap();
    assert_eq!(u.user_name, tricky[1]);
    assert_eq!(
        graph
            .get_user("6b7e0e0a-0000-4000-8000-000000000000")
            .await
            .unwrap(),
        None
    );
    // An id that would change the path if not encoded as one segment.
    assert_eq!(graph.get_user("../users?x=1").await.unwrap(), None);

    let domains = graph.list_domains().await.unwrap();
    assert!(domains.iter().any(|d| d == DOMAIN), "{domains:?}");
    assert!(
        domains.iter().any(|d| d.ends_with(".onmicrosoft.com")),
        "{domains:?}"
    );
    emu.stop().await;
}

#[tokio::test]
async fn throttling_and_gateway_faults_are_retried_to_the_right_result() {
    let emu = start_emulator(1500).await;
    let expected = expected_ids(&emu);
    let faults = &emu.state().faults;
    // A storm of five 429s (no Retry-After: backoff), then 503 with Retry-After 0, then a 504:
    // eight faulted requests spread over the listing's pages and the token endpoint.
    faults.add(FaultSpec {
        count: Some(5),
        ..fault(FaultKind::Throttle, "users")
    });
    faults.add(FaultSpec {
        count: Some(1),
        after: 1,
        retry_after: Some(0),
        ..fault(FaultKind::Unavailable, "users")
    });
    faults.add(FaultSpec {
        count: Some(1),
        after: 1,
        ..fault(FaultKind::GatewayTimeout, "users")
    });
    faults.add(FaultSpec {
        count: Some(2),
        ..fault(FaultKind::Throttle, "token")
    });
    let graph = GraphClient::new(emulator_config(&emu, secret())).unwrap();
    let users = graph
        .list_users(&ListScope::Domain(DOMAIN.into()))
        .await
        .unwrap();
    assert_eq!(
        users.iter().map(|u| u.id.clone()).collect::<HashSet<_>>(),
        expected
    );
    assert_eq!(
        emu.state().stats.snapshot(0)["faultsInjected"],
        9,
        "every fault was hit and survived"
    );
    emu.stop().await;
}

#[tokio::test]
async fn endless_throttling_ends_after_six_attempts_with_no_partial_list() {
    let emu = start_emulator(1500).await;
    // The first page passes; every later page is throttled: the whole listing fails.
    emu.state().faults.add(FaultSpec {
        always: true,
        after: 1,
        ..fault(FaultKind::Throttle, "users")
    });
    let graph = GraphClient::new(emulator_config(&emu, secret())).unwrap();
    let err = graph
        .list_users(&ListScope::Domain(DOMAIN.into()))
        .await
        .unwrap_err();
    match &err {
        DirectoryError::Unavailable(m) => assert!(m.contains("HTTP 429 after 6 attempts"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(
        emu.state().stats.snapshot(0)["byEndpoint"]["users"],
        7,
        "one page + six attempts"
    );
    emu.stop().await;
}

#[tokio::test]
async fn a_connection_dropped_mid_page_is_retried() {
    let emu = start_emulator(1200).await;
    emu.state().faults.add(FaultSpec {
        count: Some(2),
        after: 1,
        ..fault(FaultKind::DropConnection, "users")
    });
    let graph = GraphClient::new(emulator_config(&emu, secret())).unwrap();
    let users = graph
        .list_users(&ListScope::Domain(DOMAIN.into()))
        .await
        .unwrap();
    assert_eq!(users.len(), expected_ids(&emu).len());
    assert_eq!(emu.state().stats.snapshot(0)["faultsInjected"], 2);
    emu.stop().await;
}

fn fault(kind: FaultKind, endpoint: &str) -> FaultSpec {
    FaultSpec {
        kind,
        endpoint: endpoint.into(),
        path_prefix: None,
        count: None,
        always: false,
        after: 0,
        retry_after: None,
        code: None,
        bytes: None,
        delay_ms: None,
        count_offset: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Mock token endpoint + Graph, for what the emulator does not make easy to provoke.

#[derive(Default)]
struct Mock {
    tokens_issued: AtomicUsize,
    pages_served: AtomicUsize,
    assertions: std::sync::Mutex<Vec<String>>,
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

fn user(i: usize) -> serde_json::Value {
    json!({
        "id": format!("00000000-0000-4000-8000-{i:012}"),
        "userPrincipalName": format!("user{i}@example.com"),
        "displayName": format!("User {i}"), "givenName": "U", "surname": null, "mail": null,
        "proxyAddresses": [], "accountEnabled": true, "onPremisesImmutableId": null, "userType": "Member"
    })
}

/// Tokens `tok-1`, `tok-2`, ...; pages 1..=3 of users, where pages 2 and 3 accept only a
/// token newer than `tok-1` (the first token "expires" mid-listing).
async fn token_and_pages(State(m): State<Arc<Mock>>, headers: HeaderMap, uri: Uri) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let page: usize = uri
        .query()
        .and_then(|q| q.split("page=").nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    if headers
        .get("consistencylevel")
        .and_then(|v| v.to_str().ok())
        != Some("eventual")
    {
        return (StatusCode::BAD_REQUEST, "ConsistencyLevel missing").into_response();
    }
    if page > 1 && auth == "Bearer tok-1" {
        let body = json!({"error": {"code": "InvalidAuthenticationToken", "message": "Access token has expired or is not yet valid."}});
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    m.pages_served.fetch_add(1, Ordering::SeqCst);
    let base = format!(
        "http://{}",
        headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    );
    let mut body = json!({ "value": (0..3).map(|i| user(page * 10 + i)).collect::<Vec<_>>() });
    if page == 1 {
        body["@odata.count"] = 9.into();
    }
    if page < 3 {
        body["@odata.nextLink"] =
            format!("{base}/v1.0/users?$skiptoken=s{page}&page={}", page + 1).into();
    }
    axum::Json(body).into_response()
}

async fn issue_token(
    State(m): State<Arc<Mock>>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if let Some(a) = get("client_assertion") {
        assert_eq!(
            get("client_assertion_type").as_deref(),
            Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        );
        m.assertions.lock().unwrap().push(a);
    } else if get("client_secret").as_deref() != Some("right") {
        let body = json!({"error": "invalid_client",
            "error_description": format!("AADSTS7000215: Invalid client secret provided. You sent '{}'.", get("client_secret").unwrap_or_default())});
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    assert_eq!(get("grant_type").as_deref(), Some("client_credentials"));
    assert!(get("scope").unwrap().ends_with("/.default"));
    let n = m.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
    axum::Json(
        json!({"token_type": "Bearer", "expires_in": 3599, "access_token": format!("tok-{n}")}),
    )
    .into_response()
}

async fn mock_graph() -> (String, Arc<Mock>) {
    let mock = Arc::new(Mock::default());
    let router = Router::new()
        .route("/v1.0/users", get(token_and_pages))
        .route("/{tenant}/oauth2/v2.0/token", post(issue_token))
        .with_state(mock.clone());
    (serve(router).await, mock)
}

fn mock_config(base: &str, credential: GraphCredential) -> GraphConfig {
    let base = Url::parse(base).unwrap();
    GraphConfig {
        authority_host: base.clone(),
        graph_endpoint: base,
        http: fast_http(None),
        ..GraphConfig::new("tenant", "client", credential)
    }
}

#[tokio::test]
async fn an_access_token_expiring_mid_listing_is_refreshed_once() {
    let (base, mock) = mock_graph().await;
    let cred = GraphCredential::ClientSecret(SecretString::from("right"));
    let graph = GraphClient::new(mock_config(&base, cred)).unwrap();
    let users = graph.list_users(&ListScope::All).await.unwrap();
    assert_eq!(users.len(), 9);
    assert_eq!(
        mock.tokens_issued.load(Ordering::SeqCst),
        2,
        "one refresh after the 401"
    );
    assert_eq!(mock.pages_served.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn token_endpoint_echoing_the_secret_does_not_leak_it() {
    let (base, _mock) = mock_graph().await;
    let canary = "CANARY-echoed-secret-77aa";
    let graph = GraphClient::new(mock_config(
        &base,
        GraphCredential::ClientSecret(SecretString::from(canary)),
    ))
    .unwrap();
    let err = graph.list_users(&ListScope::All).await.unwrap_err();
    let text = format!("{err} / {err:?}");
    assert!(
        matches!(err, DirectoryError::InvalidCredentials(_)),
        "{text}"
    );
    assert!(text.contains("AADSTS7000215"), "{text}");
    assert!(!text.contains("CANARY") && !text.contains("77aa"), "{text}");
}

#[tokio::test]
async fn federated_token_file_is_read_on_every_token_request() {
    let (base, mock) = mock_graph().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("azure-identity-token");
    std::fs::write(&path, "first.jwt.token\n").unwrap();
    let provider = Arc::new(FederatedTokenFile::new(&path));
    let graph = GraphClient::new(mock_config(
        &base,
        GraphCredential::FederatedToken(provider),
    ))
    .unwrap();
    // The listing needs two tokens (the first expires mid-listing); rotate the file in between
    // by listing twice with a forced refresh.
    graph.authenticate().await.unwrap();
    std::fs::write(&path, "second.jwt.token").unwrap();
    let users = graph.list_users(&ListScope::All).await.unwrap();
    assert_eq!(users.len(), 9);
    let seen = mock.assertions.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            "first.jwt.token".to_string(),
            "second.jwt.token".to_string()
        ]
    );

    // An empty or missing file is refused as credentials, before any request.
    std::fs::write(&path, "  \n").unwrap();
    let graph = GraphClient::new(mock_config(
        &base,
        GraphCredential::FederatedToken(Arc::new(FederatedTokenFile::new(&path))),
    ))
    .unwrap();
    assert!(matches!(
        graph.authenticate().await,
        Err(DirectoryError::InvalidCredentials(_))
    ));
}

#[tokio::test]
async fn a_closure_can_supply_the_assertion() {
    let (base, mock) = mock_graph().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let provider = AssertionFn(move || {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, DirectoryError>(SecretString::from(format!("sa-token-{n}"))) }
    });
    let graph = GraphClient::new(mock_config(
        &base,
        GraphCredential::FederatedToken(Arc::new(provider)),
    ))
    .unwrap();
    assert_eq!(graph.list_users(&ListScope::All).await.unwrap().len(), 9);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        mock.assertions.lock().unwrap().as_slice(),
        ["sa-token-0", "sa-token-1"]
    );
}

#[tokio::test]
async fn a_write_graph_would_refuse_is_refused_without_the_network() {
    // Writing to Entra ID is tests/graph_writes.rs; a user without a valid UPN never leaves.
    let graph = GraphClient::new(mock_config(
        "http://127.0.0.1:9",
        GraphCredential::ClientSecret("x".into()),
    ))
    .unwrap();
    let started = Instant::now();
    let err = graph.create_user(&Default::default()).await.unwrap_err();
    assert!(matches!(err, DirectoryError::Rejected(m) if m.contains("userPrincipalName")));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no network involved"
    );
}
