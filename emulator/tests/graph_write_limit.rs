//! Graph's identity write limit per app and tenant (issue #14; shared/reference/graph-writes.md
//! §4): 3,000 writes per 150 s by default, settable, 429 with `Retry-After` and
//! `x-ms-throttle-scope` when exceeded.

mod common;

use common::writes::*;
use common::*;
use entra_emulator::Config;
use reqwest::Method;
use serde_json::{Value, json};

async fn settings(e: &Emu, patch: Value) -> Value {
    let (s, v) = e.control(Method::PATCH, "/settings", Some(patch)).await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn patch_alice(e: &Emu, t: &str, n: usize) -> (u16, reqwest::header::HeaderMap, Value) {
    e.call(
        Method::PATCH,
        &format!("/v1.0/users/{ALICE}"),
        t,
        Some(&json!({"jobTitle": format!("v{n}")})),
    )
    .await
}

#[tokio::test]
async fn defaults_are_graphs_and_settings_change_them() {
    let e = start().await;
    let (_, v) = e.control(Method::GET, "/settings", None).await;
    assert_eq!(
        (
            &v["writeLimit"],
            &v["writeWindowSeconds"],
            &v["rejectFederatedPassword"]
        ),
        (&json!(3000), &json!(150), &json!(false)),
        "{v}"
    );
    for bad in [
        json!({"writeLimit": -1}),
        json!({"writeLimit": "many"}),
        json!({"writeWindowSeconds": 0}),
        json!({"writeLimits": 5}),
    ] {
        let (s, v) = e
            .control(Method::PATCH, "/settings", Some(bad.clone()))
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    let v = settings(&e, json!({"writeLimit": 10, "writeWindowSeconds": 5})).await;
    assert_eq!(
        (&v["writeLimit"], &v["writeWindowSeconds"]),
        (&json!(10), &json!(5))
    );
    e.stop().await;
}

#[tokio::test]
async fn over_the_limit_a_write_gets_429_until_a_slot_frees() {
    let e = start().await;
    let t = e.token_for("writer", "s").await;
    // 3 writes per 30 s: a token back every 10 s.
    settings(&e, json!({"writeLimit": 3, "writeWindowSeconds": 30})).await;
    for n in 0..3 {
        let (s, h, v) = patch_alice(&e, &t, n).await;
        assert_eq!(s, 204, "{v}");
        // Over 80 % of the quota in use: Graph says how much.
        if n == 2 {
            assert_eq!(h["x-ms-throttle-limit-percentage"], "1.0");
        } else {
            assert!(h.get("x-ms-throttle-limit-percentage").is_none());
        }
    }
    let (s, h, v) = patch_alice(&e, &t, 3).await;
    assert_eq!(s, 429, "{v}");
    assert_graph_error(&v, "TooManyRequests");
    assert_eq!(h["retry-after"], "10");
    assert_eq!(
        h["x-ms-throttle-scope"],
        format!("Tenant_Application/Write/writer/{TENANT}").as_str()
    );
    assert_eq!(h["x-ms-throttle-information"], "WriteLimitExceeded");
    // The refused write changed nothing.
    let got = e
        .get_json(
            &format!("/v1.0/users/{ALICE}?$select=jobTitle"),
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(got["jobTitle"], "v2");
    // Reads are not metered by it, nor are other apps of the tenant.
    e.get_json("/v1.0/users", &t, &[], 200).await;
    let other = e.token_for("useradmin", "s").await;
    let (s, _, _) = patch_alice(&e, &other, 9).await;
    assert_eq!(s, 204);
    // Creates and deletes count as writes too.
    let (s, _, _) = e
        .call(Method::DELETE, &format!("/v1.0/users/{ALICE}"), &t, None)
        .await;
    assert_eq!(s, 429);
    let (s, _, _) = e
        .call(
            Method::POST,
            "/v1.0/users",
            &t,
            Some(&new_user("z", "contoso.example")),
        )
        .await;
    assert_eq!(s, 429);
    // Ten seconds later (by the emulator's clock) one write fits again, and only one.
    settings(&e, json!({"clockOffset": 10})).await;
    let t = e.token_for("writer", "s").await;
    let (s, _, v) = patch_alice(&e, &t, 4).await;
    assert_eq!(s, 204, "{v}");
    let (s, h, _) = patch_alice(&e, &t, 5).await;
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"], "10");
    // 0 turns the limit off.
    settings(&e, json!({"writeLimit": 0})).await;
    for n in 0..20 {
        let (s, _, _) = patch_alice(&e, &t, 10 + n).await;
        assert_eq!(s, 204);
    }
    let (_, c) = e.control(Method::GET, "/requests", None).await;
    assert_eq!(
        c["writes"],
        json!({"succeeded": 25, "throttled": 4, "failed": 0}),
        "{c}"
    );
    assert_eq!(c["byEndpoint"]["userWrite"], 29, "{c}");
    assert_eq!(c["byStatus"]["429"], 4, "{c}");
    // A reset refills every bucket.
    settings(&e, json!({"writeLimit": 1})).await;
    let (s, _, _) = patch_alice(&e, &t, 0).await;
    assert_eq!(s, 204);
    let (s, _, _) = patch_alice(&e, &t, 1).await;
    assert_eq!(s, 429);
    e.control(Method::POST, "/reset", None).await;
    let t = e.token_for("writer", "s").await;
    let (s, _, _) = patch_alice(&e, &t, 2).await;
    assert_eq!(s, 204);
    e.stop().await;
}

#[tokio::test]
async fn the_limit_is_set_at_start() {
    let cfg = Config::from_fixture(&fixture())
        .unwrap()
        .https()
        .write_limit(1, 3600);
    let e = Emu::start(cfg).await;
    let t = e.token_for("writer", "s").await;
    let (s, _, _) = patch_alice(&e, &t, 0).await;
    assert_eq!(s, 204);
    let (s, h, _) = patch_alice(&e, &t, 1).await;
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"], "3600");
    e.stop().await;
}

#[tokio::test]
async fn the_default_limit_admits_a_burst_of_3000_then_20_a_second() {
    let e = start().await;
    let t = e.token_for("writer", "s").await;
    // Batches of 20 writes until one is refused: the burst Graph allows (3,000), plus what
    // refilled at 20 a second while the batches ran.
    let started = std::time::Instant::now();
    let mut admitted = 0usize;
    let mut refused: Option<Value> = None;
    for b in 0..200 {
        let requests: Vec<Value> = (0..20)
            .map(|i| {
                json!({"id": i.to_string(), "method": "PATCH", "url": format!("/users/{ALICE}"),
                       "headers": {"Content-Type": "application/json"},
                       "body": {"jobTitle": format!("{b}-{i}")}})
            })
            .collect();
        let (s, _, v) = e
            .call(
                Method::POST,
                "/v1.0/$batch",
                &t,
                Some(&json!({ "requests": requests })),
            )
            .await;
        assert_eq!(s, 200);
        for r in v["responses"].as_array().unwrap() {
            match r["status"].as_u64() {
                Some(204) => admitted += 1,
                Some(429) => refused = Some(r.clone()),
                other => panic!("{other:?}: {r}"),
            }
        }
        if refused.is_some() {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let refused = refused.expect("the limit was reached");
    assert_eq!(
        refused["headers"]["Retry-After"], "1",
        "20 writes a second refill"
    );
    assert!(
        admitted >= 3000 && admitted as f64 <= 3000.0 + 20.0 * (elapsed + 1.0),
        "{admitted} writes admitted in {elapsed:.1} s"
    );
    e.stop().await;
}
