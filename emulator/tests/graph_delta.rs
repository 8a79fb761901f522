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
    let (pages, delta) = round_pages(e, start, t, headers).await;
    let n = pages.len();
    (pages.into_iter().flatten().collect(), delta, n)
}

/// Follow a delta round to its deltaLink; returns (the items of each page, deltaLink).
async fn round_pages(
    e: &Emu,
    start: &str,
    t: &str,
    headers: &[(&str, &str)],
) -> (Vec<Vec<Value>>, String) {
    let mut pages = Vec::new();
    let mut url = start.to_string();
    loop {
        let v = e.get_json(&url, t, headers, 200).await;
        pages.push(v["value"].as_array().unwrap().clone());
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
        return (pages, d.to_string());
    }
}

/// The ids of delta items, in order.
fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|u| u["id"].as_str().expect("id").to_string())
        .collect()
}

/// `$filter=id eq '<id>'`, percent-encoded.
fn id_filter(id: &str) -> String {
    percent_encoding::utf8_percent_encode(
        &format!("id eq '{id}'"),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string()
}

async fn settings(e: &Emu, patch: Value) -> Value {
    let (s, v) = e.control(Method::PATCH, "/settings", Some(patch)).await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn patch_user(e: &Emu, id: &str, patch: Value) {
    let (s, v) = e
        .control(Method::PATCH, &format!("/users/{id}"), Some(patch))
        .await;
    assert_eq!(s, 200, "{v}");
}

async fn delete_user(e: &Emu, id: &str, permanent: bool) {
    let q = if permanent { "?permanent=true" } else { "" };
    let (s, v) = e
        .control(Method::DELETE, &format!("/users/{id}{q}"), None)
        .await;
    assert_eq!(s, 200, "{v}");
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
    // Default property set without $select. Delta omits the properties a user never had
    // (issue #15), so no item need carry all 11 and none carries a null; together they do.
    let mut seen = std::collections::BTreeSet::new();
    for u in &items {
        for (k, v) in u.as_object().unwrap() {
            assert!(!v.is_null() && v != &json!([]), "{u}");
            seen.insert(k.clone());
        }
    }
    assert_eq!(seen.len(), 11, "{seen:?}");

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

#[tokio::test]
async fn never_set_properties_are_omitted_and_clears_are_null() {
    let e = Emu::generated(3).await;
    let t = e.token().await;
    let (s, x) = e
        .control(
            Method::POST,
            "/users",
            Some(json!({"userPrincipalName": "sparse@example.com", "displayName": "Sparse"})),
        )
        .await;
    assert_eq!(s, 201, "{x}");
    let id = x["id"].as_str().unwrap().to_string();
    let f = id_filter(&id);

    // An initial round with the default set shows only what the user has.
    let (items, _, _) = round(&e, &format!("/v1.0/users/delta?$filter={f}"), &t, &[]).await;
    assert_eq!(
        items,
        vec![json!({"displayName": "Sparse", "userPrincipalName": "sparse@example.com", "id": id})]
    );
    // Listings and single reads still render every selected property, null or not.
    let v = e
        .get_json(&format!("/v1.0/users?$filter={f}"), &t, &[], 200)
        .await;
    let listed = v["value"][0].as_object().unwrap();
    assert_eq!(listed.len(), 11, "{v}");
    assert_eq!(listed["givenName"], Value::Null);
    assert_eq!(listed["businessPhones"], json!([]));
    let v = e.get_json(&format!("/v1.0/users/{id}"), &t, &[], 200).await;
    assert!(v.as_object().unwrap().contains_key("jobTitle"), "{v}");
    assert_eq!(v["jobTitle"], Value::Null);

    // accountEnabled is always there; never-set selected properties are not.
    let sel = format!(
        "/v1.0/users/delta?$filter={f}&$select=displayName,givenName,jobTitle,businessPhones,accountEnabled"
    );
    let (items, d1, _) = round(&e, &sel, &t, &[]).await;
    assert_eq!(
        items,
        vec![json!({"displayName": "Sparse", "accountEnabled": true, "id": id})]
    );

    patch_user(
        &e,
        &id,
        json!({"givenName": "Gina", "businessPhones": ["+81 3 1234 5678"]}),
    )
    .await;
    let (items, d2, _) = round(&e, &d1, &t, &[]).await;
    assert_eq!(
        items,
        vec![json!({"displayName": "Sparse", "givenName": "Gina",
                    "businessPhones": ["+81 3 1234 5678"], "accountEnabled": true, "id": id})]
    );

    // Cleared in the round: null (a collection: []). jobTitle was never set: still absent.
    patch_user(
        &e,
        &id,
        json!({"givenName": null, "businessPhones": [], "accountEnabled": false}),
    )
    .await;
    let (items, d3, _) = round(&e, &d2, &t, &[]).await;
    assert_eq!(
        items,
        vec![
            json!({"displayName": "Sparse", "givenName": null, "businessPhones": [],
                    "accountEnabled": false, "id": id})
        ]
    );
    assert!(items[0].as_object().unwrap().contains_key("givenName"));
    assert!(!items[0].as_object().unwrap().contains_key("jobTitle"));

    // A later round does not repeat a clear that happened before its range...
    patch_user(&e, &id, json!({"displayName": "Sparse 2"})).await;
    let (items, _, _) = round(&e, &d3, &t, &[]).await;
    assert_eq!(
        items,
        vec![json!({"displayName": "Sparse 2", "accountEnabled": false, "id": id})]
    );
    // ...but a round whose range holds the set and the clear shows the clear.
    let (items, _, _) = round(&e, &d1, &t, &[]).await;
    assert_eq!(
        items,
        vec![
            json!({"displayName": "Sparse 2", "givenName": null, "businessPhones": [],
                    "accountEnabled": false, "id": id})
        ]
    );
    e.stop().await;
}

#[tokio::test]
async fn delta_replay_duplicates_and_replays_each_change_once() {
    let e = Emu::generated(10).await;
    let t = e.token().await;
    let (s, v) = e.control(Method::GET, "/settings", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["deltaReplay"], false, "off by default: {v}");
    let v = settings(&e, json!({"deltaReplay": true})).await;
    assert_eq!(v["deltaReplay"], true);
    let (s, v) = e.control(Method::GET, "/settings", None).await;
    assert_eq!((s, &v["deltaReplay"]), (200, &json!(true)));

    let sel = "/v1.0/users/delta?$select=displayName,accountEnabled";
    let (items, d0, _) = round(&e, sel, &t, &[]).await;
    let all = ids(&items);
    let unique: std::collections::BTreeSet<_> = all.iter().collect();
    assert_eq!(
        (all.len(), unique.len()),
        (10, 10),
        "initial rounds are not doubled"
    );
    let [a, b, c, d, x] = [0, 1, 2, 3, 4].map(|i| all[i].clone());

    patch_user(&e, &a, json!({"displayName": "A renamed"})).await;
    patch_user(&e, &b, json!({"displayName": "B renamed"})).await;
    delete_user(&e, &c, false).await;
    // Round 1, two items a page: its first user comes back on its last page.
    let two = [("Prefer", "odata.maxpagesize=2")];
    let (pages, d1) = round_pages(&e, &d0, &t, &two).await;
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert_eq!(ids(&pages[0]), vec![a.clone(), b.clone()]);
    assert_eq!(ids(&pages[1]), vec![c.clone(), a.clone()]);
    assert_eq!(pages[1][0]["@removed"], json!({"reason": "changed"}));
    assert_eq!(pages[1][1], pages[0][0], "the same item twice");
    assert_eq!(pages[1][1]["displayName"], "A renamed");

    // Round 2 (from round 1's deltaLink) replays round 1's changes, then its own.
    patch_user(&e, &d, json!({"displayName": "D renamed"})).await;
    let (r2, d2, _) = round(&e, &d1, &t, &[]).await;
    assert_eq!(
        ids(&r2),
        vec![a.clone(), b.clone(), c.clone(), d.clone(), a.clone()]
    );
    // Round 3 replays round 2's own change only (each change once, not forever).
    let (r3, d3, _) = round(&e, &d2, &t, &[]).await;
    assert_eq!(ids(&r3), vec![d.clone(), d.clone()]);
    assert_eq!(r3[0]["displayName"], "D renamed");
    // Round 3 had no change of its own: nothing is left to replay.
    let (r4, d4, _) = round(&e, &d3, &t, &[]).await;
    assert_eq!(r4, Vec::<Value>::new());

    // Off again: no duplicate, and the next link replays nothing.
    settings(&e, json!({"deltaReplay": false})).await;
    patch_user(&e, &x, json!({"displayName": "X renamed"})).await;
    let (r5, d5, _) = round(&e, &d4, &t, &[]).await;
    assert_eq!(ids(&r5), vec![x.clone()]);
    let (r6, _, _) = round(&e, &d5, &t, &[]).await;
    assert_eq!(r6, Vec::<Value>::new());
    e.stop().await;
}

/// Does `got` equal `fmt(t)` for some `t` within 10 s of `expected`?
fn near(expected: i64, fmt: fn(i64) -> String, got: &str) -> bool {
    (expected - 10..=expected + 10).any(|t| fmt(t) == got)
}

#[tokio::test]
async fn clock_offset_ages_delta_links_and_tokens() {
    use entra_emulator::time::{graph_date, http_date, now_secs};
    const DAY: i64 = 24 * 3600;
    let e = Emu::generated(5).await;
    let t = e.token().await;
    let (_, link, _) = round(&e, "/v1.0/users/delta", &t, &[]).await;

    let v = settings(&e, json!({"clockOffset": 6 * DAY})).await;
    assert_eq!(v["clockOffset"], 6 * DAY);
    let now = v["now"].as_i64().unwrap();
    assert!((now - now_secs() - 6 * DAY).abs() <= 10, "{v}");
    // A token taken before the shift has expired by the emulator's clock.
    let r = e.get("/v1.0/users/delta?$deltatoken=latest", &t, &[]).await;
    assert_eq!(r.status().as_u16(), 401);
    // A new one is issued at the shifted time.
    let t6 = e.token().await;
    let payload = t6.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&entra_emulator::jwt::b64url_decode(payload).unwrap()).unwrap();
    let iat = claims["iat"].as_i64().unwrap();
    assert!((iat - now_secs() - 6 * DAY).abs() <= 10, "{claims}");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - iat,
        entra_emulator::DEFAULT_TOKEN_LIFETIME as i64
    );

    // Six days old: still accepted; the Date header follows the clock.
    let r = e.get(&link, &t6, &[]).await;
    assert_eq!(r.status().as_u16(), 200);
    let date = r.headers()["date"].to_str().unwrap().to_string();
    assert!(near(now_secs() + 6 * DAY, http_date, &date), "{date}");
    let v: Value = r.json().await.unwrap();
    let link6 = v["@odata.deltaLink"].as_str().unwrap().to_string();

    // Eight days old: 400 syncStateNotFound, as an expired token is.
    settings(&e, json!({"clockOffset": 8 * DAY})).await;
    let t8 = e.token().await;
    let v = e.get_json(&link, &t8, &[], 400).await;
    assert_graph_error(&v, "syncStateNotFound");
    assert_eq!(
        v["error"]["message"],
        "The sync state generation is not found. The delta token is expired and data must be synchronized again."
    );
    let inner_date = v["error"]["innerError"]["date"].as_str().unwrap();
    assert!(
        near(now_secs() + 8 * DAY, graph_date, inner_date),
        "{inner_date}"
    );
    // The link handed out on day 6 is two days old.
    e.get_json(&link6, &t8, &[], 200).await;

    // Negative offsets are fine; anything but whole seconds, or a misspelt name, is refused.
    let v = settings(&e, json!({"clockOffset": -3600})).await;
    assert_eq!(v["clockOffset"], -3600);
    for bad in [
        json!({"clockOffset": 1.5}),
        json!({"clockOffset": "1d"}),
        json!({"clockoffset": 5}),
        json!({"deltaReplay": "yes"}),
    ] {
        let (s, v) = e.control(Method::PATCH, "/settings", Some(bad)).await;
        assert_eq!(s, 400, "{v}");
    }
    let (_, v) = e.control(Method::GET, "/settings", None).await;
    assert_eq!(v["clockOffset"], -3600, "a refused patch changes nothing");

    // A reset puts the clock back.
    let (s, _) = e.control(Method::POST, "/reset", None).await;
    assert_eq!(s, 200);
    let (_, v) = e.control(Method::GET, "/settings", None).await;
    assert_eq!(v["clockOffset"], 0);
    e.stop().await;
}

#[tokio::test]
async fn first_round_lists_soft_deleted_users() {
    let e = Emu::generated(8).await;
    let t = e.token().await;
    let (items, _, _) = round(&e, "/v1.0/users/delta?$select=displayName", &t, &[]).await;
    let all = ids(&items);
    // Soft-delete five (out of order), purge one: two live users stay.
    for i in [6, 1, 4, 7, 2] {
        delete_user(&e, &all[i], false).await;
    }
    delete_user(&e, &all[3], true).await;

    // Live users first, then the soft-deleted ones (in tenant order), across pages of 3.
    let three = [("Prefer", "odata.maxpagesize=3")];
    let (pages, link) = round_pages(&e, "/v1.0/users/delta?$select=displayName", &t, &three).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![3, 3, 1]);
    let items: Vec<Value> = pages.into_iter().flatten().collect();
    let expect: Vec<String> = [0, 5, 1, 2, 4, 6, 7]
        .iter()
        .map(|&i| all[i].clone())
        .collect();
    assert_eq!(ids(&items), expect);
    assert!(items[..2].iter().all(|u| u["displayName"].is_string()));
    for (u, id) in items[2..].iter().zip(&expect[2..]) {
        assert_eq!(u, &json!({"id": id, "@removed": {"reason": "changed"}}));
    }
    // Nothing changed since: the deltaLink round is empty.
    let (changes, _, _) = round(&e, &link, &t, &[]).await;
    assert_eq!(changes, Vec::<Value>::new());
    // One page holds them all.
    let (pages, _) = round_pages(&e, "/v1.0/users/delta", &t, &[]).await;
    assert_eq!((pages.len(), pages[0].len()), (1, 7));

    // `$filter=id eq` restricts them too.
    let f = id_filter(&all[4]);
    let (items, _, _) = round(&e, &format!("/v1.0/users/delta?$filter={f}"), &t, &[]).await;
    assert_eq!(
        items,
        vec![json!({"id": all[4], "@removed": {"reason": "changed"}})]
    );
    let f = id_filter(&all[5]);
    let (items, _, _) = round(&e, &format!("/v1.0/users/delta?$filter={f}"), &t, &[]).await;
    assert_eq!(ids(&items), vec![all[5].clone()]);
    assert!(items[0].get("@removed").is_none());

    // Restored: a live user again, in its place.
    let (s, _) = e
        .control(Method::POST, &format!("/users/{}/restore", all[4]), None)
        .await;
    assert_eq!(s, 200);
    let (items, _, _) = round(&e, "/v1.0/users/delta", &t, &[]).await;
    assert_eq!(
        ids(&items)[..3],
        [all[0].clone(), all[4].clone(), all[5].clone()]
    );
    assert!(items[1].get("@removed").is_none());
    assert_eq!(items.len(), 7);
    e.stop().await;
}

#[tokio::test]
async fn request_counters_per_endpoint() {
    let e = Emu::generated(5).await;
    let t = e.token().await;
    let v = e.get_json("/v1.0/users?$select=id", &t, &[], 200).await;
    let id = v["value"][0]["id"].as_str().unwrap().to_string();
    e.get_json(&format!("/v1.0/users/{id}"), &t, &[], 200).await;
    e.get_json("/v1.0/domains", &t, &[], 200).await;
    let two = [("Prefer", "odata.maxpagesize=2")];
    let (_, link, pages) = round(&e, "/v1.0/users/delta", &t, &two).await;
    assert_eq!(pages, 3);
    e.get_json(&link, &t, &[], 200).await;
    e.get_json("/v1.0/users/delta?$deltatoken=latest", &t, &[], 200)
        .await;
    let (s, _) = e.control(Method::GET, "/settings", None).await;
    assert_eq!(s, 200);

    let (_, v) = e.control(Method::GET, "/requests?limit=20", None).await;
    assert_eq!(
        v["byEndpoint"],
        json!({"token": 1, "users": 1, "user": 1, "domains": 1, "delta": 5}),
        "control calls are not counted: {v}"
    );
    assert_eq!(
        v["byDeltaKind"],
        json!({"initial": 1, "nextLink": 2, "deltaLink": 1, "latest": 1})
    );
    assert_eq!(v["total"], 9);
    let recent = v["recent"].as_array().unwrap();
    let kinds: Vec<&str> = recent
        .iter()
        .filter_map(|r| r["deltaKind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        vec!["initial", "nextLink", "nextLink", "deltaLink", "latest"]
    );
    assert!(
        recent
            .iter()
            .all(|r| (r["endpoint"] == "delta") == r.get("deltaKind").is_some())
    );
    e.stop().await;
}
