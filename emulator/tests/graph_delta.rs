//! `GET /v1.0/users/delta` (checklist item 5) and the control API's user changes.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// Follow a delta round to its deltaLink; returns (items, deltaLink, pages).
async fn round(
    e: &Emu,
    start: &str,
    t: &str,
    headers: &[(&str, &str)],
) -> (Vec<Value>, String, usize) {
    let mut items = Vec::new();
    let mut url = start.to_string();
    let mut pages = 0;
    loop {
        let v = e.get_json(&url, t, headers, 200).await;
        pages += 1;
        items.extend(v["value"].as_array().unwrap().iter().cloned());
        if let Some(n) = v["@odata.nextLink"].as_str() {
            assert!(
                n.starts_with(&format!("{}/v1.0/users/delta?$skiptoken=", e.emu.base_url)),
                "{n}"
            );
            assert!(v.get("@odata.deltaLink").is_none());
            url = n.to_string();
            continue;
        }
        let d = v["@odata.deltaLink"]
            .as_str()
            .expect("round ends with a deltaLink");
        assert!(
            d.starts_with(&format!("{}/v1.0/users/delta?$deltatoken=", e.emu.base_url)),
            "{d}"
        );
        return (items, d.to_string(), pages);
    }
}

#[tokio::test]
async fn rounds_changes_and_removed() {
    let e = Emu::generated(450).await;
    let t = e.token().await;
    let (items, delta, pages) = round(
        &e,
        "/v1.0/users/delta?$select=displayName,accountEnabled",
        &t,
        &[],
    )
    .await;
    assert_eq!(items.len(), 450);
    assert_eq!(pages, 3, "default page of 200");
    assert!(
        items
            .iter()
            .all(|u| u.as_object().unwrap().len() == 3 && u["id"].is_string())
    );

    // No changes: an empty page and a new deltaLink.
    let v = e.get_json(&delta, &t, &[], 200).await;
    assert_eq!(v["value"], json!([]));
    let delta2 = v["@odata.deltaLink"].as_str().unwrap().to_string();

    // Add, change, soft-delete, hard-delete, and a change nobody selected.
    let (s, added) = e
        .control(
            Method::POST,
            "/users",
            Some(json!({"userPrincipalName": "new.hire@example.com", "displayName": "New Hire"})),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    let ids: Vec<String> = items
        .iter()
        .take(4)
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    let (s, _) = e
        .control(
            Method::PATCH,
            &format!("/users/{}", ids[0]),
            Some(json!({"accountEnabled": false})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = e
        .control(Method::DELETE, &format!("/users/{}", ids[1]), None)
        .await;
    assert_eq!(s, 200);
    let (s, _) = e
        .control(
            Method::DELETE,
            &format!("/users/{}?permanent=true", ids[2]),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = e
        .control(
            Method::PATCH,
            &format!("/users/{}", ids[3]),
            Some(json!({"jobTitle": "Untracked"})),
        )
        .await;
    assert_eq!(s, 200);

    let (changes, delta3, _) = round(&e, &delta2, &t, &[]).await;
    let by_id = |id: &str| changes.iter().find(|c| c["id"] == id).cloned();
    assert_eq!(changes.len(), 4, "{changes:?}");
    assert_eq!(
        by_id(added["id"].as_str().unwrap()).unwrap()["displayName"],
        "New Hire"
    );
    assert_eq!(by_id(&ids[0]).unwrap()["accountEnabled"], false);
    assert_eq!(
        by_id(&ids[1]).unwrap()["@removed"],
        json!({"reason": "changed"})
    );
    assert_eq!(
        by_id(&ids[2]).unwrap()["@removed"],
        json!({"reason": "deleted"})
    );
    assert!(
        by_id(&ids[3]).is_none(),
        "jobTitle is not selected, so it is not tracked"
    );

    // Restore the soft-deleted user: it comes back without annotation.
    let (s, _) = e
        .control(Method::POST, &format!("/users/{}/restore", ids[1]), None)
        .await;
    assert_eq!(s, 200);
    let (changes, _, _) = round(&e, &delta3, &t, &[]).await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["id"], ids[1].as_str());
    assert!(changes[0].get("@removed").is_none());
    // The old deltaLink still works (replays are allowed).
    let (again, _, _) = round(&e, &delta2, &t, &[]).await;
    assert!(again.len() >= 4);
    e.stop().await;
}

#[tokio::test]
async fn latest_page_size_filter_and_paths() {
    let e = Emu::generated(30).await;
    let t = e.token().await;
    // $deltatoken=latest: no data, just a deltaLink.
    let v = e
        .get_json(
            "/v1.0/users/delta?$deltatoken=latest&$select=displayName",
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(v["value"], json!([]));
    let delta = v["@odata.deltaLink"].as_str().unwrap().to_string();
    let snapshot: Value = e.control(Method::GET, "/tenants", None).await.1;
    assert_eq!(snapshot["tenants"][0]["users"], 30);
    let v = e
        .get_json("/v1.0/users?$top=1&$select=id", &t, &[], 200)
        .await;
    let id = v["value"][0]["id"].as_str().unwrap().to_string();
    e.control(
        Method::PATCH,
        &format!("/users/{id}"),
        Some(json!({"displayName": "Renamed"})),
    )
    .await;
    let (changes, _, _) = round(&e, &delta, &t, &[]).await;
    assert_eq!(changes, vec![json!({"displayName": "Renamed", "id": id})]);

    // Prefer: odata.maxpagesize, and the SDK spellings of the function.
    let (items, _, pages) = round(
        &e,
        "/v1.0/users/delta()",
        &t,
        &[("Prefer", "odata.maxpagesize=7")],
    )
    .await;
    assert_eq!((items.len(), pages), (30, 5));
    let (items, _, _) = round(&e, "/v1.0/users/microsoft.graph.delta()", &t, &[]).await;
    assert_eq!(items.len(), 30);
    // Default property set without $select.
    assert_eq!(items[0].as_object().unwrap().len(), 11);

    // $filter=id eq ... only.
    let f = percent_encoding::utf8_percent_encode(
        &format!("id eq '{id}'"),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    let (items, _, _) = round(&e, &format!("/v1.0/users/delta?$filter={f}"), &t, &[]).await;
    assert_eq!(items.len(), 1);
    let v = e
        .get_json(
            "/v1.0/users/delta?$filter=startswith(displayName,'a')",
            &t,
            &[],
            400,
        )
        .await;
    assert_graph_error(&v, "Request_UnsupportedQuery");
    // $top, $orderby and $expand are refused.
    for q in ["$top=5", "$orderby=displayName", "$expand=manager"] {
        let v = e
            .get_json(&format!("/v1.0/users/delta?{q}"), &t, &[], 400)
            .await;
        assert_graph_error(&v, "Request_UnsupportedQuery");
    }
    e.stop().await;
}

#[tokio::test]
async fn bad_or_stale_tokens_are_sync_state_not_found() {
    let e = Emu::generated(5).await;
    let t = e.token().await;
    let (_, delta, _) = round(&e, "/v1.0/users/delta", &t, &[]).await;
    let v = e
        .get_json("/v1.0/users/delta?$deltatoken=bm9wZQ", &t, &[], 400)
        .await;
    assert_graph_error(&v, "syncStateNotFound");
    assert_eq!(
        v["error"]["message"],
        "The sync state generation is not found. The delta token is expired and data must be synchronized again."
    );
    // A reset invalidates every token.
    let (s, _) = e.control(Method::POST, "/reset", None).await;
    assert_eq!(s, 200);
    let v = e.get_json(&delta, &t, &[], 400).await;
    assert_graph_error(&v, "syncStateNotFound");
    e.stop().await;
}

#[tokio::test]
async fn control_api_user_errors() {
    let e = Emu::generated(3).await;
    let (s, v) = e
        .control(
            Method::POST,
            "/users",
            Some(json!({"displayName": "No UPN"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, u) = e
        .control(
            Method::POST,
            "/users",
            Some(json!({"userPrincipalName": "x@example.com", "displayName": "X"})),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(u["accountEnabled"], true);
    assert_eq!(u["userType"], "Member");
    let (s, v) = e
        .control(
            Method::POST,
            "/users",
            Some(json!({"userPrincipalName": "X@example.com", "displayName": "X2"})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        v["error"]["message"],
        "Another object with the same value for property userPrincipalName already exists."
    );
    let (s, _) = e
        .control(
            Method::PATCH,
            "/users/nobody@example.com",
            Some(json!({"displayName": "Y"})),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = e
        .control(
            Method::PATCH,
            "/users/x@example.com",
            Some(json!({"nosuch": 1})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = e
        .control(
            Method::PATCH,
            "/users/x@example.com",
            Some(json!({"accountEnabled": "yes"})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, v) = e.control(Method::GET, "/users/x@example.com", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["displayName"], "X");
    let (s, _) = e
        .control(Method::GET, "/users/x@example.com?tenant=nope", None)
        .await;
    assert_eq!(s, 404);
    e.stop().await;
}
