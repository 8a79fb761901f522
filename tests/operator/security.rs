//! The operator's security (docs/behaviour.md §8) on the real control plane, with the Graph emulator and
//! `scim2-server`: workload identity through the API server's own TokenRequest, isolation of
//! tokens and trust stores between resources, the outbound endpoint policy, and what remote
//! text and user data may reach status, events and logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;
use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use dirsync::crd::DirectorySync;
use dirsync_testenv::TestNamespace;
use entra_emulator::{Config, Emulator, RunningEmulator};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const WRONG_SECRET: &str = "Wr0ng-Secret-For-The-Same-App";
const WI_ANNOTATION: &str = "azure.workload.identity/client-id";

fn fixture() -> Value {
    tenant(
        &["example.com"],
        vec![user("alice@example.com", "Alice", "Liddell", "YWxpY2U=")],
    )
}

/// A spec that uses workload identity with `sa` instead of a client secret.
fn wi_spec(emu: &RunningEmulator, scim_url: &str, sa: &str) -> Value {
    let mut s = spec("example.com", "DryRun", emu, scim_url);
    let src = &mut s["source"]["entraID"];
    src.as_object_mut()
        .expect("entraID")
        .remove("clientSecretRef");
    src["workloadIdentity"] = json!({"serviceAccountName": sa});
    s
}

async fn service_account(ns: &TestNamespace, name: &str, client_id: Option<&str>) {
    let api: Api<ServiceAccount> = ns.api();
    let mut meta = json!({"name": name});
    if let Some(id) = client_id {
        meta["annotations"] = json!({WI_ANNOTATION: id});
    }
    let sa: ServiceAccount = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}),
    )
    .expect("ServiceAccount");
    api.create(&PostParams::default(), &sa)
        .await
        .expect("ServiceAccount created");
}

fn reason_is(want: &'static str) -> impl FnMut(&DirectorySync) -> bool {
    move |d| ready_reason(d).as_deref() == Some(want)
}

fn message(d: &DirectorySync) -> String {
    condition(d, "Ready").map(|c| c.2).unwrap_or_default()
}

/// Status, events and the whole operator log, for "never appears" checks.
async fn everything(ns: &TestNamespace, name: &str, op: &Operator) -> String {
    let d = get(ns, name).await;
    format!(
        "{}\n{:?}\n{}",
        serde_json::to_string(&d).unwrap_or_default(),
        events(ns, name).await,
        op.log_text()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_presents_the_api_servers_token_and_is_never_borrowed() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-wi").await;
    let other = cp.namespace("op-wi-other").await;
    let issuer = cp.service_account_issuer().to_string();
    let mut fx = fixture();
    fx["applications"][0]["federatedCredentials"] = json!([{
        "issuer": issuer,
        "subject": format!("system:serviceaccount:{}:dirsync-wi", ns.name()),
        "audiences": ["api://AzureADTokenExchange"],
    }]);
    // The app has no usable secret: only the federated credential can get a token.
    fx["applications"][0]["clientSecret"] = json!("unused-9f8e7d");
    let emu = Emulator::start(
        Config::from_fixture(&fx)
            .expect("fixture")
            .https()
            .trust_ca(cp.ca_pem()),
    )
    .await
    .expect("emulator starts");
    let scim = scim();
    for n in [&ns, &other] {
        secrets(n, &emu, "unused").await;
    }
    service_account(&ns, "dirsync-wi", Some(CLIENT_ID)).await;
    service_account(&ns, "unannotated", None).await;
    service_account(
        &ns,
        "other-app",
        Some("00000000-1111-2222-3333-444444444444"),
    )
    .await;
    let op = Operator::start(cp, ns.name(), "op-wi", &["--namespaces", other.name()]);
    op.wait_ready(T).await;

    // Refusals first: none of them may cause a TokenRequest.
    create(
        &ns,
        "unannotated",
        wi_spec(&emu, &scim.base_url(), "unannotated"),
    )
    .await;
    create(
        &ns,
        "other-app",
        wi_spec(&emu, &scim.base_url(), "other-app"),
    )
    .await;
    // Another namespace names the good account: looked up in its own namespace only.
    create(
        &other,
        "borrower",
        wi_spec(&emu, &scim.base_url(), "dirsync-wi"),
    )
    .await;
    let d = wait_for(
        &ns,
        "unannotated",
        "no annotation",
        T,
        Some(&op),
        reason_is("InvalidCredentials"),
    )
    .await;
    assert!(
        message(&d).contains("has no annotation azure.workload.identity/client-id"),
        "{}",
        message(&d)
    );
    let d = wait_for(
        &ns,
        "other-app",
        "other client id",
        T,
        Some(&op),
        reason_is("InvalidCredentials"),
    )
    .await;
    assert!(
        message(&d).contains("does not equal spec.source.entraID.clientID"),
        "{}",
        message(&d)
    );
    let d = wait_for(
        &other,
        "borrower",
        "foreign account",
        T,
        Some(&op),
        reason_is("InvalidCredentials"),
    )
    .await;
    assert!(
        message(&d).contains(&format!("not found in namespace {:?}", other.name())),
        "{}",
        message(&d)
    );
    assert_eq!(
        condition(&d, "Stalled").map(|c| c.0).as_deref(),
        Some("True")
    );
    assert_eq!(
        op.counter("dirsync_token_requests_total").await,
        0.0,
        "no TokenRequest for a refused account"
    );

    // The annotated account in the resource's own namespace: the API server's token is
    // accepted by the emulator as a federated credential (verified against the API server's
    // published keys), and the dry run succeeds.
    create(&ns, "good", wi_spec(&emu, &scim.base_url(), "dirsync-wi")).await;
    let d = wait_for(
        &ns,
        "good",
        "PreviewReady with workload identity",
        T,
        Some(&op),
        reason_is("PreviewReady"),
    )
    .await;
    assert_eq!(status(&d).last_run.map(|r| r.adds), Some(1));
    let requests = op.counter("dirsync_token_requests_total").await;
    assert!(
        requests >= 1.0,
        "one TokenRequest per Graph token: {requests}"
    );

    // Removing the annotation stops it at the next run, without a TokenRequest.
    let api: Api<ServiceAccount> = ns.api();
    api.patch(
        "dirsync-wi",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"annotations": {WI_ANNOTATION: null}}})),
    )
    .await
    .expect("annotation removed");
    annotate(&ns, "good", "dirsync.io/sync-now", "1").await;
    wait_for(
        &ns,
        "good",
        "refused after the annotation went",
        T,
        Some(&op),
        reason_is("InvalidCredentials"),
    )
    .await;
    assert_eq!(op.counter("dirsync_token_requests_total").await, requests);

    // Neither the service-account token nor any access token reaches the log or status.
    let all = everything(&ns, "good", &op).await;
    assert!(!all.contains("eyJ"), "a JWT leaked:\n{}", op.log_tail(40));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_trust_stores_are_per_resource() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let a = cp.namespace("op-iso-a").await;
    let b = cp.namespace("op-iso-b").await;
    let emu = emulator(&fixture()).await;
    let emu2 = emulator(&fixture()).await;
    let scim = scim();
    secrets(&a, &emu, CLIENT_SECRET).await;
    secrets(&b, &emu, WRONG_SECRET).await;
    let op = Operator::start(cp, a.name(), "op-iso", &["--namespaces", b.name()]);

    // A succeeds; B, the same app with a wrong secret, is refused right after: A's token is
    // not B's.
    create(
        &a,
        "example-com",
        spec("example.com", "DryRun", &emu, &scim.base_url()),
    )
    .await;
    wait_for(
        &a,
        "example-com",
        "A PreviewReady",
        T,
        Some(&op),
        reason_is("PreviewReady"),
    )
    .await;
    create(
        &b,
        "example-com",
        spec("example.com", "DryRun", &emu, &scim.base_url()),
    )
    .await;
    let d = wait_for(
        &b,
        "example-com",
        "B InvalidCredentials",
        T,
        Some(&op),
        reason_is("InvalidCredentials"),
    )
    .await;
    assert!(message(&d).contains("AADSTS7000215"), "{}", message(&d));

    // A second Graph server whose CA only B trusts: B succeeds, A fails TLS (B's extra CA
    // never joins A's trust store).
    put_secret(
        &b,
        "entra-app-2",
        &[
            ("client-secret", CLIENT_SECRET),
            ("ca.pem", emu2.ca_pem.as_deref().unwrap_or("")),
        ],
    )
    .await;
    let mut sb = spec("example.com", "DryRun", &emu2, &scim.base_url());
    sb["source"]["entraID"]["clientSecretRef"]["name"] = json!("entra-app-2");
    sb["source"]["entraID"]["caBundleRef"]["name"] = json!("entra-app-2");
    create(&b, "second", sb).await;
    wait_for(
        &b,
        "second",
        "B trusts its CA",
        T,
        Some(&op),
        reason_is("PreviewReady"),
    )
    .await;
    create(
        &a,
        "second",
        spec("example.com", "DryRun", &emu2, &scim.base_url()),
    )
    .await;
    let d = wait_for(
        &a,
        "second",
        "A fails TLS",
        T,
        Some(&op),
        reason_is("SourceUnavailable"),
    )
    .await;
    let m = message(&d);
    assert!(
        m.to_ascii_lowercase().contains("certificate") || m.contains("UnknownIssuer"),
        "a certificate error: {m}"
    );
    let all = format!(
        "{}{}",
        everything(&a, "second", &op).await,
        everything(&b, "example-com", &op).await
    );
    assert!(!all.contains(CLIENT_SECRET) && !all.contains(WRONG_SECRET));
    emu.stop().await;
    emu2.stop().await;
}

/// A TCP listener that counts connections and answers nothing.
async fn counting_listener() -> (u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (port, hits, task)
}

async fn serve(router: Router) -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, router).await;
    });
    (format!("http://{addr}"), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_endpoints_on_denied_addresses_are_refused_without_a_connection() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-policy").await;
    let emu = emulator(&fixture()).await;
    let (port, hits, listener) = counting_listener().await;
    secrets(&ns, &emu, CLIENT_SECRET).await;
    // Loopback is not among the allowed private ranges here.
    let op = Operator::start(
        cp,
        ns.name(),
        "op-policy",
        &[
            "--allowed-private-cidrs",
            "10.0.0.0/8",
            "--denied-cidrs",
            "192.0.2.0/24",
        ],
    );
    for (name, url, why) in [
        (
            "literal",
            format!("http://127.0.0.1:{port}/scim/v2"),
            "127.0.0.1 is a loopback or private address",
        ),
        (
            "by-name",
            format!("http://localhost:{port}/scim/v2"),
            "resolves to",
        ),
        (
            "metadata",
            "http://169.254.169.254/scim/v2".to_string(),
            "link-local, metadata",
        ),
        (
            "denied",
            "https://192.0.2.10/scim/v2".to_string(),
            "--denied-cidrs",
        ),
    ] {
        create(&ns, name, spec("example.com", "DryRun", &emu, &url)).await;
        let d = wait_for(
            &ns,
            name,
            "EndpointNotAllowed",
            T,
            Some(&op),
            reason_is("EndpointNotAllowed"),
        )
        .await;
        let m = message(&d);
        assert!(m.contains(why), "{name}: {m}");
        assert_eq!(
            condition(&d, "Stalled").map(|c| c.0).as_deref(),
            Some("True"),
            "{name}"
        );
        let evs = events_when(&ns, name, |e| e.iter().any(|e| e.1 == "EndpointNotAllowed")).await;
        assert!(
            evs.iter()
                .any(|e| e.0 == "Warning" && e.1 == "EndpointNotAllowed"),
            "{name}: {evs:?}"
        );
    }
    // Give any stray connect a moment, then: nothing ever reached the listener.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the denied listener saw a connection"
    );
    // Graph/authority hosts outside the allowlist are refused too.
    let mut s = spec(
        "example.com",
        "DryRun",
        &emu,
        "https://scim.example.net/scim/v2",
    );
    s["source"]["entraID"]["graphEndpoint"] = json!("https://graph.example.net");
    create(&ns, "graph-host", s).await;
    let d = wait_for(
        &ns,
        "graph-host",
        "Graph host refused",
        T,
        Some(&op),
        reason_is("EndpointNotAllowed"),
    )
    .await;
    assert!(
        message(&d).contains("--allowed-graph-hosts"),
        "{}",
        message(&d)
    );
    listener.abort();
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scim_redirect_is_not_followed() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-redirect").await;
    // A SCIM endpoint that redirects everything to a listener that counts connections.
    let (target_port, hits, listener) = counting_listener().await;
    let location = format!("http://127.0.0.1:{target_port}/scim/v2");
    let router = Router::new().fallback(move || {
        let location = location.clone();
        async move {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
            )
        }
    });
    let (redirector, server) = serve(router).await;
    // A well-behaved Graph side, so that the run gets as far as the destination.
    let users: Vec<Value> = (0..3)
        .map(|i| {
            user(
                &format!("u{i:04}@example.com"),
                "U",
                &format!("{i}"),
                &format!("aW{i:04}"),
            )
        })
        .collect();
    let emu = Emulator::start(
        Config::from_fixture(&tenant(&["example.com"], users))
            .expect("fixture")
            .https(),
    )
    .await
    .expect("emulator starts");
    secrets(&ns, &emu, CLIENT_SECRET).await;
    let op = Operator::start(cp, ns.name(), "op-redirect", &[]);

    create(
        &ns,
        "redirected",
        spec(
            "example.com",
            "DryRun",
            &emu,
            &format!("{redirector}/scim/v2"),
        ),
    )
    .await;
    let d = wait_for(&ns, "redirected", "redirect refused", T, Some(&op), |d| {
        ready_reason(d).is_some_and(|r| r == "DestinationUnavailable")
    })
    .await;
    assert!(
        message(&d).contains("redirect not followed"),
        "{}",
        message(&d)
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the redirect target saw a connection"
    );
    server.abort();
    listener.abort();
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_link_to_another_host_aborts_the_run() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-nextlink").await;
    // A Graph emulator that writes its links for "localhost" while the resource calls it as
    // 127.0.0.1: the second page's nextLink leaves the Graph host.
    let port = free_port();
    let users: Vec<Value> = (0..1005)
        .map(|i| {
            user(
                &format!("u{i:04}@example.com"),
                "U",
                &format!("{i}"),
                &format!("aW{i:04}"),
            )
        })
        .collect();
    let mut cfg = Config::from_fixture(&tenant(&["example.com"], users))
        .expect("fixture")
        .https();
    cfg.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    cfg.public_url = Some(format!("https://localhost:{port}"));
    let emu = Emulator::start(cfg).await.expect("emulator starts");
    secrets(&ns, &emu, CLIENT_SECRET).await;
    let scim = scim();
    let op = Operator::start(cp, ns.name(), "op-nextlink", &[]);

    // The emulator's own links say "localhost"; the resource calls it by address.
    let direct = format!("https://127.0.0.1:{port}");
    let mut s = spec("example.com", "DryRun", &emu, &scim.base_url());
    s["source"]["entraID"]["authorityHost"] = json!(direct);
    s["source"]["entraID"]["graphEndpoint"] = json!(direct);
    create(&ns, "next-link", s).await;
    let d = wait_for(&ns, "next-link", "nextLink refused", T, Some(&op), |d| {
        ready_reason(d).is_some_and(|r| r == "SourceUnavailable")
    })
    .await;
    assert!(
        message(&d).contains("nextLink leaves the Graph endpoint"),
        "{}",
        message(&d)
    );
    assert!(
        configmap(&ns, "next-link-preview").await.is_none(),
        "no preview of a partial read"
    );
    emu.stop().await;
}

const CANARY: &str = "canary-7c1d-Sup3rSecret-SCIM-token";

/// A SCIM server that echoes the caller's credentials back in every error body.
async fn echo_handler(headers: HeaderMap) -> impl IntoResponse {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/scim+json")],
        json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "400",
            "scimType": "invalidFilter",
            "detail": format!("you sent {auth}; \u{1b}[31m\n{{\"level\":\"ERROR\"}}"),
        })
        .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_secrets_and_hostile_display_names_never_escape_and_logs_stay_json() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-hostile").await;
    let hostile =
        "Mallory\n{\"level\":\"ERROR\",\"msg\":\"forged\"}\u{1b}[2J\u{1b}[31mred\u{7}\r\"\\";
    let mut evil = user("mallory@example.com", "Mallory", "Evil", "bWFsbG9yeQ==");
    evil["displayName"] = json!(hostile);
    evil["givenName"] = json!(hostile);
    let fx = tenant(
        &["example.com"],
        vec![
            user("alice@example.com", "Alice", "Liddell", "YWxpY2U="),
            evil,
        ],
    );
    let emu = emulator(&fx).await;
    let scim = scim();
    let (echo, server) = serve(Router::new().fallback(echo_handler)).await;
    secrets(&ns, &emu, CLIENT_SECRET).await;
    put_secret(&ns, "scim-canary", &[("token", CANARY)]).await;
    let op = Operator::start(cp, ns.name(), "op-hostile", &["--log-format", "json"]);

    let mut s = spec("example.com", "DryRun", &emu, &format!("{echo}/scim/v2"));
    s["destination"]["scim"]["bearerTokenRef"]["name"] = json!("scim-canary");
    create(&ns, "echo", s).await;
    let d = wait_for(&ns, "echo", "echo server refused", T, Some(&op), |d| {
        ready_reason(d).is_some_and(|r| r == "DestinationUnavailable")
    })
    .await;
    let m = message(&d);
    assert!(m.contains("400"), "the status is kept: {m}");
    assert!(m.chars().count() <= 1024, "{m}");

    // The hostile names go through a whole applied run (preview, writes, report).
    create(
        &ns,
        "hostile",
        spec("example.com", "Once", &emu, &scim.base_url()),
    )
    .await;
    wait_for(&ns, "hostile", "an applied run", T, Some(&op), |d| {
        ready_reason(d).is_some_and(|r| r == "Synced" || r == "PartiallyFailed")
    })
    .await;

    let all = format!(
        "{}{}",
        everything(&ns, "echo", &op).await,
        everything(&ns, "hostile", &op).await
    );
    assert!(
        !all.contains(CANARY),
        "the echoed secret escaped:\n{}",
        op.log_tail(30)
    );
    assert!(!all.contains("Bearer "), "no Authorization echo");
    let evs = events(&ns, "hostile").await;
    assert!(
        evs.iter()
            .all(|e| !e.2.contains("Mallory") && !e.2.contains("alice")),
        "{evs:?}"
    );

    let log = op.log_text();
    let mut lines = 0;
    for line in log.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line:?}"));
        assert!(v.get("level").is_some(), "{line}");
        lines += 1;
    }
    assert!(lines > 10, "the operator logged {lines} lines");
    assert!(
        !log.contains('\u{1b}') && !log.contains('\u{7}'),
        "raw control characters in the log"
    );
    server.abort();
    emu.stop().await;
}
