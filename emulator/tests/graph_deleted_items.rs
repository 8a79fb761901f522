//! `/v1.0/directory/deletedItems` (list, get, restore, permanent delete) and what Graph writes
//! look like in `/users/delta` (issue #14).

mod common;

use common::writes::*;
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// The deleted-items UPN: the object id without dashes, then the UPN.
fn deleted_upn(id: &str, upn: &str) -> String {
    format!("{}{upn}", id.replace('-', ""))
}

#[tokio::test]
async fn list_get_restore_and_purge() {
    let e = start().await;
    let t = e.token_for("writer", "s").await;
    let list = "/v1.0/directory/deletedItems/microsoft.graph.user";
    let v = e.get_json(list, &t, &[], 200).await;
    assert_eq!(v["value"], json!([]));
    assert_eq!(
        v["@odata.context"],
        format!("{}/v1.0/$metadata#users", e.emu.base_url)
    );

    let (s, _, _) = e
        .call(Method::DELETE, &format!("/v1.0/users/{ALICE}"), &t, None)
        .await;
    assert_eq!(s, 204);
    let v = e
        .get_json(
            &format!("{list}?$select=id,userPrincipalName,deletedDateTime,mail"),
            &t,
            &[],
            200,
        )
        .await;
    let items = v["value"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{v}");
    assert_eq!(items[0]["id"], ALICE);
    assert_eq!(
        items[0]["userPrincipalName"],
        deleted_upn(ALICE, "alice@contoso.example")
    );
    assert_eq!(items[0]["mail"], "alice@contoso.example");
    assert!(items[0]["deletedDateTime"].is_string());
    // The namespace alias msgraph-sdk uses lists the same.
    let v = e
        .get_json("/v1.0/directory/deletedItems/graph.user", &t, &[], 200)
        .await;
    assert_eq!(v["value"][0]["id"], ALICE, "{v}");
    // $filter works on what deleted items show.
    let v = e
        .get_json(
            &format!("{list}?$filter=id eq '{ALICE}'&$select=id"),
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(v["value"].as_array().unwrap().len(), 1);

    let v = e
        .get_json(
            &format!("/v1.0/directory/deletedItems/{ALICE}"),
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(
        v["@odata.context"],
        format!("{}/v1.0/$metadata#directoryObjects/$entity", e.emu.base_url)
    );
    assert_eq!(v["@odata.type"], "#microsoft.graph.user");
    assert_eq!(v["displayName"], "Alice Smith");
    // A live user is not a deleted item.
    let v = e
        .get_json(
            &format!("/v1.0/directory/deletedItems/{ADMIN}"),
            &t,
            &[],
            404,
        )
        .await;
    assert_graph_error(&v, "Request_ResourceNotFound");

    // Restore: 200 with the object, back under its own UPN, in /users again.
    let (s, _, v) = e
        .call(
            Method::POST,
            &format!("/v1.0/directory/deletedItems/{ALICE}/restore"),
            &t,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["@odata.type"], "#microsoft.graph.user");
    assert_eq!(v["id"], ALICE);
    assert_eq!(v["userPrincipalName"], "alice@contoso.example");
    let got = e
        .get_json(
            &format!("/v1.0/users/{ALICE}?$select=deletedDateTime,givenName"),
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(got["deletedDateTime"], Value::Null);
    assert_eq!(
        got["givenName"], "Alice",
        "the same object, properties kept"
    );

    // Delete again, reuse the UPN, then restore: Graph refuses with the UPN conflict.
    e.call(Method::DELETE, &format!("/v1.0/users/{ALICE}"), &t, None)
        .await;
    let (s, _, v) = e
        .call(
            Method::POST,
            "/v1.0/users",
            &t,
            Some(&new_user("alice", "contoso.example")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let newcomer = v["id"].as_str().unwrap().to_string();
    let (s, _, v) = e
        .call(
            Method::POST,
            &format!("/v1.0/directory/deletedItems/{ALICE}/restore"),
            &t,
            None,
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_graph_error(&v, "Request_BadRequest");
    assert_eq!(
        v["error"]["message"],
        "Another object with the same value for property userPrincipalName already exists."
    );
    assert_eq!(
        v["error"]["details"],
        json!([{"target": "userPrincipalName", "code": "ObjectConflict"}])
    );
    // Permanent delete: 204, then gone from deleted items too.
    let (s, h, _) = e
        .call(
            Method::DELETE,
            &format!("/v1.0/directory/deletedItems/{ALICE}"),
            &t,
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert!(h.get("content-type").is_none());
    e.get_json(
        &format!("/v1.0/directory/deletedItems/{ALICE}"),
        &t,
        &[],
        404,
    )
    .await;
    let (s, _, _) = e
        .call(
            Method::POST,
            &format!("/v1.0/directory/deletedItems/{ALICE}/restore"),
            &t,
            None,
        )
        .await;
    assert_eq!(s, 404);
    // A live user cannot be purged through deleted items.
    let (s, _, _) = e
        .call(
            Method::DELETE,
            &format!("/v1.0/directory/deletedItems/{newcomer}"),
            &t,
            None,
        )
        .await;
    assert_eq!(s, 404);

    // The cast is required; other object types list empty.
    let (s, _, v) = e
        .call(Method::GET, "/v1.0/directory/deletedItems", &t, None)
        .await;
    assert_eq!(s, 400, "{v}");
    let v = e
        .get_json(
            "/v1.0/directory/deletedItems/microsoft.graph.group",
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(v["value"], json!([]));

    // The reader app can list deleted users, but not restore or purge them.
    let r = e.token_for("reader", "s").await;
    e.get_json(list, &r, &[], 200).await;
    let (_, c) = e.control(Method::GET, "/requests", None).await;
    assert!(
        c["byEndpoint"]["deletedItems"].as_u64().unwrap() >= 8,
        "{c}"
    );
    e.stop().await;
}

/// Follow a delta round to its deltaLink; returns (items, deltaLink).
async fn round(e: &Emu, start: &str, t: &str) -> (Vec<Value>, String) {
    let mut items = Vec::new();
    let mut url = start.to_string();
    loop {
        let v = e.get_json(&url, t, &[], 200).await;
        items.extend(v["value"].as_array().unwrap().iter().cloned());
        if let Some(n) = v["@odata.nextLink"].as_str() {
            url = n.to_string();
            continue;
        }
        return (items, v["@odata.deltaLink"].as_str().unwrap().to_string());
    }
}

fn find<'a>(items: &'a [Value], id: &str) -> Vec<&'a Value> {
    items.iter().filter(|i| i["id"] == id).collect()
}

#[tokio::test]
async fn delta_reports_every_kind_of_graph_write() {
    let e = start().await;
    let t = e.token_for("writer", "s").await;
    let (_, link) = round(&e, "/v1.0/users/delta?$select=displayName,jobTitle", &t).await;

    // Round 2: a create, an update, a soft delete.
    let (_, _, v) = e
        .call(
            Method::POST,
            "/v1.0/users",
            &t,
            Some(&new_user("erin", "contoso.example")),
        )
        .await;
    let erin = v["id"].as_str().unwrap().to_string();
    e.call(
        Method::PATCH,
        &format!("/v1.0/users/{HELPER}"),
        &e.token_for("useradmin", "s").await,
        Some(&json!({"jobTitle": "Helpdesk lead"})),
    )
    .await;
    e.call(Method::DELETE, &format!("/v1.0/users/{ALICE}"), &t, None)
        .await;
    let (items, link) = round(&e, &link, &t).await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(find(&items, &erin)[0]["displayName"], "New erin");
    assert_eq!(find(&items, HELPER)[0]["jobTitle"], "Helpdesk lead");
    assert_eq!(
        find(&items, ALICE)[0]["@removed"],
        json!({"reason": "changed"})
    );

    // Round 3: a restore, and a soft delete followed by a permanent one.
    e.call(
        Method::POST,
        &format!("/v1.0/directory/deletedItems/{ALICE}/restore"),
        &t,
        None,
    )
    .await;
    e.call(Method::DELETE, &format!("/v1.0/users/{erin}"), &t, None)
        .await;
    let (s, _, _) = e
        .call(
            Method::DELETE,
            &format!("/v1.0/directory/deletedItems/{erin}"),
            &t,
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (items, link) = round(&e, &link, &t).await;
    assert_eq!(items.len(), 2, "{items:?}");
    let alice = find(&items, ALICE)[0];
    assert!(alice.get("@removed").is_none(), "{alice}");
    assert_eq!(alice["displayName"], "Alice Smith");
    assert_eq!(
        find(&items, &erin)[0]["@removed"],
        json!({"reason": "deleted"})
    );

    // A failed write leaves no trace.
    e.call(
        Method::PATCH,
        &format!("/v1.0/users/{SYNCED}"),
        &t,
        Some(&json!({"displayName": "x"})),
    )
    .await;
    let (items, _) = round(&e, &link, &t).await;
    assert_eq!(items, Vec::<Value>::new());
    e.stop().await;
}
