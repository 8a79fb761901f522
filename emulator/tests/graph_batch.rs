//! `POST /v1.0/$batch` (issue #14; shared/reference/graph-writes.md §1 "Batch", §8.6).

mod common;

use common::writes::*;
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn batch(e: &Emu, t: &str, requests: Value) -> (u16, Value) {
    let (s, _, v) = e
        .call(
            Method::POST,
            "/v1.0/$batch",
            t,
            Some(&json!({ "requests": requests })),
        )
        .await;
    (s, v)
}

/// The responses by id (the order is not the requests').
fn by_id(v: &Value) -> std::collections::HashMap<String, Value> {
    v["responses"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

fn ct() -> Value {
    json!({"Content-Type": "application/json"})
}

#[tokio::test]
async fn a_batch_answers_200_with_each_items_own_status() {
    let e = start().await;
    let t = e.token_for("writer", "s").await;
    let (s, v) = batch(
        &e,
        &t,
        json!([
            {"id": "1", "method": "POST", "url": "/users", "headers": ct(),
             "body": new_user("bea", "contoso.example")},
            {"id": "2", "method": "PATCH", "url": format!("/users/{ALICE}"), "headers": ct(),
             "body": {"jobTitle": "Batched"}},
            {"id": "3", "method": "GET", "url": format!("users/{ALICE}?$select=id,jobTitle")},
            {"id": "4", "method": "POST", "url": "/users", "headers": ct(),
             "body": new_user("alice", "contoso.example")},
            {"id": "5", "method": "DELETE", "url": format!("/users/{HELPER}")},
            {"id": "6", "method": "GET", "url": "/users/$count",
             "headers": {"ConsistencyLevel": "eventual"}},
            {"id": "7", "method": "DELETE", "url": "/users/nobody@contoso.example"}
        ]),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let order: Vec<&str> = v["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["7", "6", "5", "4", "3", "2", "1"],
        "responses are not in request order"
    );
    let r = by_id(&v);
    assert_eq!(r["1"]["status"], 201);
    assert_eq!(r["1"]["body"]["userPrincipalName"], "bea@contoso.example");
    assert!(
        r["1"]["headers"]["Location"]
            .as_str()
            .unwrap()
            .contains("/directoryObjects/"),
        "{}",
        r["1"]
    );
    assert_eq!(
        r["1"]["headers"]["Content-Type"]
            .as_str()
            .unwrap()
            .split(';')
            .next(),
        Some("application/json")
    );
    assert_eq!(r["2"]["status"], 204);
    assert!(r["2"].get("body").is_none(), "{}", r["2"]);
    assert_eq!(r["3"]["status"], 200);
    assert_eq!(r["3"]["body"]["jobTitle"], "Batched", "items run in order");
    assert_eq!(r["4"]["status"], 400);
    assert_eq!(r["4"]["body"]["error"]["code"], "Request_BadRequest");
    assert_eq!(
        r["4"]["body"]["error"]["details"],
        json!([{"target": "userPrincipalName", "code": "ObjectConflict"}])
    );
    assert_eq!(r["5"]["status"], 403, "a role member: {}", r["5"]);
    assert_eq!(r["6"]["status"], 200);
    assert_eq!(r["6"]["headers"]["Content-Type"], "text/plain");
    assert_eq!(
        r["6"]["body"], "Nw==",
        "non-JSON bodies come base64-encoded (\"7\")"
    );
    assert_eq!(r["7"]["status"], 404);

    let (_, c) = e.control(Method::GET, "/requests", None).await;
    assert_eq!(c["byEndpoint"]["batch"], 1, "{c}");
    assert!(c["byEndpoint"].get("userWrite").is_none(), "{c}");
    assert_eq!(
        c["batchItems"],
        json!({"user": 1, "userWrite": 5, "users": 1}),
        "{c}"
    );
    assert_eq!(
        c["writes"],
        json!({"succeeded": 2, "throttled": 0, "failed": 3}),
        "{c}"
    );
    e.stop().await;
}

#[tokio::test]
async fn malformed_batches_are_refused_whole() {
    let e = start().await;
    let t = e.token_for("writer", "s").await;
    let get = |id: usize| json!({"id": id.to_string(), "method": "GET", "url": "/users?$top=1"});
    let twenty: Vec<Value> = (1..=20).map(get).collect();
    let (s, v) = batch(&e, &t, json!(twenty)).await;
    assert_eq!(s, 200, "20 requests are allowed: {v}");
    let twenty_one: Vec<Value> = (1..=21).map(get).collect();
    let (s, v) = batch(&e, &t, json!(twenty_one)).await;
    assert_eq!(s, 400, "{v}");
    assert_graph_error(&v, "BadRequest");
    assert_eq!(
        v["error"]["message"],
        "Number of requests inside batch exceed the limit."
    );
    let bad = [
        json!([get(1), get(1)]),
        json!([{"id": "1", "method": "GET"}]),
        json!([{"id": "1", "method": "GET", "url": "https://graph.microsoft.com/v1.0/users"}]),
        json!([{"id": "1", "method": "GET", "url": "/users", "dependsOn": ["2"]}, get(2)]),
        json!([]),
    ];
    for b in bad {
        let (s, v) = batch(&e, &t, b.clone()).await;
        assert_eq!(s, 400, "{b}: {v}");
        assert_graph_error(&v, "BadRequest");
    }
    let (s, _, v) = e
        .call(Method::POST, "/v1.0/$batch", &t, Some(&json!({"nope": 1})))
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["message"], "Invalid batch payload format.");
    // An item with a body but no Content-Type fails alone.
    let (s, v) = batch(
        &e,
        &t,
        json!([{"id": "1", "method": "PATCH", "url": format!("/users/{ALICE}"), "body": {"jobTitle": "x"}}]),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(by_id(&v)["1"]["status"], 400, "{v}");
    // No batch inside a batch.
    let (_, v) = batch(&e, &t, json!([{"id": "1", "method": "POST", "url": "/$batch", "headers": ct(), "body": {"requests": []}}])).await;
    assert_eq!(by_id(&v)["1"]["status"], 400, "{v}");
    e.stop().await;
}

#[tokio::test]
async fn depends_on_runs_in_order_and_a_failure_cascades_as_424() {
    let e = start().await;
    let t = e.token_for("writer", "s").await;
    let (s, v) = batch(
        &e,
        &t,
        json!([
            {"id": "a", "method": "PATCH", "url": format!("/users/{SYNCED}"), "headers": ct(),
             "body": {"displayName": "refused"}},
            {"id": "b", "method": "PATCH", "url": format!("/users/{ALICE}"), "headers": ct(),
             "body": {"jobTitle": "not run"}, "dependsOn": ["a"]},
            {"id": "c", "method": "GET", "url": format!("/users/{ALICE}"), "dependsOn": ["b"]},
            {"id": "d", "method": "PATCH", "url": format!("/users/{ALICE}"), "headers": ct(),
             "body": {"jobTitle": "ran"}},
            {"id": "e", "method": "GET", "url": format!("/users/{ALICE}?$select=jobTitle"), "dependsOn": ["d"]}
        ]),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let r = by_id(&v);
    assert_eq!(r["a"]["status"], 400);
    assert_eq!(r["b"]["status"], 424);
    assert_eq!(r["b"]["body"]["error"]["code"], "FailedDependency");
    assert_eq!(r["c"]["status"], 424, "a dependency of a dependency");
    assert_eq!(r["d"]["status"], 204);
    assert_eq!(r["e"]["status"], 200);
    assert_eq!(r["e"]["body"]["jobTitle"], "ran");
    e.stop().await;
}

#[tokio::test]
async fn each_item_is_throttled_on_its_own() {
    let e = start().await;
    let t = e.token_for("writer", "s").await;
    let (s, v) = e
        .control(
            Method::PATCH,
            "/settings",
            Some(json!({"writeLimit": 2, "writeWindowSeconds": 60})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let requests: Vec<Value> = (1..=4)
        .map(|i| {
            json!({"id": i.to_string(), "method": "POST", "url": "/users", "headers": ct(),
                   "body": new_user(&format!("t{i}"), "contoso.example")})
        })
        .chain(std::iter::once(
            json!({"id": "read", "method": "GET", "url": format!("/users/{ALICE}")}),
        ))
        .collect();
    let (s, v) = batch(&e, &t, json!(requests)).await;
    assert_eq!(s, 200, "the batch itself is not throttled: {v}");
    let r = by_id(&v);
    assert_eq!(
        (&r["1"]["status"], &r["2"]["status"]),
        (&json!(201), &json!(201))
    );
    for id in ["3", "4"] {
        let item = &r[id];
        assert_eq!(item["status"], 429, "{item}");
        assert_eq!(item["body"]["error"]["code"], "TooManyRequests");
        assert_eq!(item["headers"]["Retry-After"], "30", "{item}");
        assert_eq!(
            item["headers"]["x-ms-throttle-scope"],
            format!("Tenant_Application/Write/writer/{TENANT}")
        );
        assert_eq!(
            item["headers"]["x-ms-throttle-information"],
            "WriteLimitExceeded"
        );
    }
    assert_eq!(
        r["read"]["status"], 200,
        "reads are not metered by the write limit"
    );
    let (_, c) = e.control(Method::GET, "/requests", None).await;
    assert_eq!(
        c["writes"],
        json!({"succeeded": 2, "throttled": 2, "failed": 0}),
        "{c}"
    );

    // An injected fault on userWrite reaches items too.
    e.control(Method::PATCH, "/settings", Some(json!({"writeLimit": 0})))
        .await;
    e.fault(json!({"kind": "throttle", "endpoint": "userWrite", "count": 1, "retryAfter": 7}))
        .await;
    let (_, v) = batch(
        &e,
        &t,
        json!([
            {"id": "x", "method": "PATCH", "url": format!("/users/{ALICE}"), "headers": ct(), "body": {"jobTitle": "1"}},
            {"id": "y", "method": "PATCH", "url": format!("/users/{ALICE}"), "headers": ct(), "body": {"jobTitle": "2"}}
        ]),
    )
    .await;
    let r = by_id(&v);
    assert_eq!(r["x"]["status"], 429, "{v}");
    assert_eq!(r["x"]["headers"]["Retry-After"], "7");
    assert_eq!(r["y"]["status"], 204);
    e.stop().await;
}
