//! Fault injection (checklist item 7) and request counters.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn throttle_with_and_without_retry_after() {
    let e = Emu::generated(10).await;
    let t = e.token().await;
    e.fault(json!({"kind": "throttle", "endpoint": "users", "retryAfter": 7}))
        .await;
    let r = e
        .get("/v1.0/users", &t, &[("client-request-id", "c-429")])
        .await;
    assert_eq!(r.status(), 429);
    let h = r.headers().clone();
    assert_eq!(h["retry-after"], "7");
    assert_eq!(h["client-request-id"], "c-429");
    assert!(h.contains_key("request-id"));
    assert!(
        h["x-ms-throttle-scope"]
            .to_str()
            .unwrap()
            .starts_with("Tenant_Application/")
    );
    assert_eq!(h["x-ms-throttle-information"], "ResourceUnitLimitExceeded");
    let v: Value = r.json().await.unwrap();
    assert_graph_error(&v, "TooManyRequests");
    // Count 1: the next request goes through.
    e.get_json("/v1.0/users", &t, &[], 200).await;

    e.fault(json!({"kind": "throttle", "code": "Request_ThrottledTemporarily", "count": 2}))
        .await;
    for _ in 0..2 {
        let r = e.get("/v1.0/users", &t, &[]).await;
        assert_eq!(r.status(), 429);
        assert!(!r.headers().contains_key("retry-after"));
        let v: Value = r.json().await.unwrap();
        assert_graph_error(&v, "Request_ThrottledTemporarily");
    }
    e.get_json("/v1.0/users", &t, &[], 200).await;
    e.stop().await;
}

#[tokio::test]
async fn unavailable_gateway_timeout_and_after() {
    let e = Emu::generated(10).await;
    let t = e.token().await;
    e.fault(json!({"kind": "unavailable", "retryAfter": 3}))
        .await;
    let r = e.get("/v1.0/users", &t, &[]).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "3");
    assert_graph_error(&r.json().await.unwrap(), "serviceNotAvailable");

    // Let one request through, then fault the second (e.g. "page 2 fails").
    e.fault(json!({"kind": "gatewayTimeout", "after": 1})).await;
    e.get_json("/v1.0/users", &t, &[], 200).await;
    let r = e.get("/v1.0/users", &t, &[]).await;
    assert_eq!(r.status(), 504);
    assert_graph_error(&r.json().await.unwrap(), "timeout");
    e.get_json("/v1.0/users", &t, &[], 200).await;

    // pathPrefix + always, then delete it.
    e.fault(json!({"kind": "unavailable", "pathPrefix": "/v1.0/domains", "always": true}))
        .await;
    e.get_json("/v1.0/users", &t, &[], 200).await;
    for _ in 0..3 {
        assert_eq!(e.get("/v1.0/domains", &t, &[]).await.status(), 503);
    }
    let (_, list) = e.control(Method::GET, "/faults", None).await;
    let id = list["faults"][0]["id"].as_u64().unwrap();
    assert_eq!(list["faults"][0]["fired"], 3);
    let (s, _) = e
        .control(Method::DELETE, &format!("/faults/{id}"), None)
        .await;
    assert_eq!(s, 200);
    e.get_json("/v1.0/domains", &t, &[], 200).await;
    let (s, v) = e
        .control(Method::POST, "/faults", Some(json!({"kind": "nope"})))
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = e
        .control(
            Method::POST,
            "/faults",
            Some(json!({"kind": "throttle", "endpoint": "everything"})),
        )
        .await;
    assert_eq!(s, 400);
    e.stop().await;
}

#[tokio::test]
async fn token_endpoint_faults_use_aad_shape() {
    let e = Emu::generated(1).await;
    e.fault(json!({"kind": "throttle", "endpoint": "token", "retryAfter": 2}))
        .await;
    let form = [
        ("client_id", entra_emulator::DEFAULT_CLIENT_ID),
        ("client_secret", entra_emulator::DEFAULT_CLIENT_SECRET),
        ("grant_type", "client_credentials"),
        ("scope", GRAPH_SCOPE),
    ];
    let r = e.token_request(&e.tenant_id(), &form).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    assert_aad_error(&r.json().await.unwrap(), "temporarily_unavailable", 90055);
    e.fault(json!({"kind": "unavailable", "endpoint": "token"}))
        .await;
    let r = e.token_request(&e.tenant_id(), &form).await;
    assert_eq!(r.status(), 503);
    assert_aad_error(&r.json().await.unwrap(), "temporarily_unavailable", 90033);
    assert_eq!(e.token_request(&e.tenant_id(), &form).await.status(), 200);
    e.stop().await;
}

#[tokio::test]
async fn connection_dropped_mid_page() {
    let e = Emu::generated(300).await;
    let t = e.token().await;
    e.fault(json!({"kind": "dropConnection", "endpoint": "users", "after": 1}))
        .await;
    let v = e.get_json("/v1.0/users?$top=100", &t, &[], 200).await;
    let next = v["@odata.nextLink"].as_str().unwrap().to_string();
    let r = e.get(&next, &t, &[]).await;
    // Status and headers arrive; the body breaks off.
    assert_eq!(r.status(), 200);
    let len: usize = r.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(len > 1000);
    assert!(r.bytes().await.is_err(), "the body must not complete");
    // The retry succeeds.
    let v = e.get_json(&next, &t, &[], 200).await;
    assert_eq!(v["value"].as_array().unwrap().len(), 100);
    // A fixed number of bytes.
    e.fault(json!({"kind": "dropConnection", "bytes": 10}))
        .await;
    let r = e.get("/v1.0/domains", &t, &[]).await;
    assert!(r.bytes().await.is_err());
    e.stop().await;
}

#[tokio::test]
async fn expired_delta_token_and_resync() {
    let e = Emu::generated(20).await;
    let t = e.token().await;
    e.fault(json!({"kind": "expiredDeltaToken"})).await;
    // The initial request is not a follow-up, so it is not faulted.
    let v = e.get_json("/v1.0/users/delta", &t, &[], 200).await;
    let delta = v["@odata.deltaLink"].as_str().unwrap().to_string();
    let v = e.get_json(&delta, &t, &[], 400).await;
    assert_graph_error(&v, "syncStateNotFound");
    e.get_json(&delta, &t, &[], 200).await;

    e.fault(json!({"kind": "resyncRequired"})).await;
    let r = e.get(&delta, &t, &[]).await;
    assert_eq!(r.status(), 410);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("{}/v1.0/users/delta?$deltatoken=", e.emu.base_url)
    );
    assert_graph_error(&r.json().await.unwrap(), "resyncRequired");
    e.stop().await;
}

#[tokio::test]
async fn delay_and_request_counters() {
    let e = Emu::generated(5).await;
    let t = e.token().await;
    e.control(Method::DELETE, "/requests", None).await;
    e.fault(json!({"kind": "delay", "delayMs": 300})).await;
    let start = std::time::Instant::now();
    e.get_json("/v1.0/users", &t, &[("ConsistencyLevel", "eventual")], 200)
        .await;
    assert!(start.elapsed() >= std::time::Duration::from_millis(300));
    e.get_json("/v1.0/users/nobody@example.com", &t, &[], 404)
        .await;
    let (s, v) = e.control(Method::GET, "/requests?limit=10", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["total"], 2);
    assert_eq!(v["byEndpoint"]["users"], 1);
    assert_eq!(v["byEndpoint"]["user"], 1);
    assert_eq!(v["byStatus"]["404"], 1);
    assert_eq!(v["faultsInjected"], 1);
    assert_eq!(v["recent"][0]["consistencyLevel"], "eventual");
    assert_eq!(v["recent"][0]["fault"], "Delay");
    assert_eq!(v["recent"][1]["path"], "/v1.0/users/nobody@example.com");
    e.stop().await;
}

#[tokio::test]
async fn drop_next_link_ends_a_listing_early_and_wrong_count_lies() {
    let e = Emu::generated(30).await;
    let t = e.token().await;
    let eventual = [("ConsistencyLevel", "eventual")];
    let first = "/v1.0/users?$top=10&$count=true";
    let full = e.get_json(first, &t, &eventual, 200).await;
    assert!(full["@odata.nextLink"].is_string(), "{full}");
    let count = full["@odata.count"].as_u64().unwrap();

    // Page 2 is served without its nextLink: the listing "ends" after 20 of `count` users.
    e.fault(json!({"kind": "dropNextLink", "endpoint": "users", "after": 1}))
        .await;
    let p1 = e.get_json(first, &t, &eventual, 200).await;
    let next = p1["@odata.nextLink"].as_str().unwrap().to_string();
    let path = &next[next.find("/v1.0/").unwrap()..];
    let p2 = e.get_json(path, &t, &eventual, 200).await;
    assert!(p2.get("@odata.nextLink").is_none(), "{p2}");
    assert_eq!(p2["value"].as_array().unwrap().len(), 10);

    // The count moved by countOffset (never below 0); nothing else changes.
    e.fault(json!({"kind": "wrongCount", "endpoint": "users", "countOffset": 500}))
        .await;
    let lied = e.get_json(first, &t, &eventual, 200).await;
    assert_eq!(lied["@odata.count"].as_u64(), Some(count + 500));
    assert_eq!(lied["value"], full["value"]);
    assert_eq!(lied["@odata.nextLink"], full["@odata.nextLink"]);
    e.fault(json!({"kind": "wrongCount", "endpoint": "users", "countOffset": -1000}))
        .await;
    assert_eq!(
        e.get_json(first, &t, &eventual, 200).await["@odata.count"],
        0
    );

    // wrongCount without countOffset is refused.
    let (s, v) = e
        .control(Method::POST, "/faults", Some(json!({"kind": "wrongCount"})))
        .await;
    assert_eq!(s, 400, "{v}");
    e.stop().await;
}
