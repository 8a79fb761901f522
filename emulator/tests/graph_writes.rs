//! `POST /v1.0/users`, `PATCH` and `DELETE /v1.0/users/{id|upn}`: shapes, Graph's error bodies,
//! federated domains, users synced from AD (issue #14; shared/reference/graph-writes.md §1–§2).

mod common;

use common::writes::*;
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const UNVERIFIED: &str = "The domain portion of the userPrincipalName property is invalid. You must use one of the verified domain names in your organization.";
const EXTERNAL: &str = "Unable to update the specified properties for objects that have originated within an external service.";

/// Assert a 400 with this code, message and details.
fn assert_400(status: u16, v: &Value, code: &str, message: &str, details: Option<Value>) {
    assert_eq!(status, 400, "{v}");
    assert_graph_error(v, code);
    assert_eq!(v["error"]["message"], message, "{v}");
    match details {
        Some(d) => assert_eq!(v["error"]["details"], d, "{v}"),
        None => assert!(v["error"].get("details").is_none(), "{v}"),
    }
}

async fn user_count(e: &Emu, t: &str) -> usize {
    let v = e.get_json("/v1.0/users?$top=999", t, &[], 200).await;
    v["value"].as_array().unwrap().len()
}

#[tokio::test]
async fn create_answers_201_with_the_user_and_its_location() {
    let e = start().await;
    let t = e.token_for("writer", "s").await;
    let mut body = new_user("carol", "contoso.example");
    body["givenName"] = json!("Carol");
    body["mail"] = json!("carol@contoso.example");
    body["@odata.type"] = json!("#microsoft.graph.user");
    let (s, h, v) = e.call(Method::POST, "/v1.0/users", &t, Some(&body)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["@odata.context"],
        format!("{}/v1.0/$metadata#users/$entity", e.emu.base_url)
    );
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "@odata.context",
            "id",
            "businessPhones",
            "displayName",
            "givenName",
            "jobTitle",
            "mail",
            "mobilePhone",
            "officeLocation",
            "preferredLanguage",
            "surname",
            "userPrincipalName"
        ]
    );
    let id = v["id"].as_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(v["userPrincipalName"], "carol@contoso.example");
    assert_eq!(v["givenName"], "Carol");
    assert_eq!(v["surname"], Value::Null);
    assert_eq!(
        h["location"].to_str().unwrap(),
        format!(
            "{}/v2/{TENANT}/directoryObjects/{id}/Microsoft.DirectoryServices.User",
            e.emu.base_url
        )
    );
    // Stored as Graph keeps it: defaults filled in, mail made the primary proxy address, the
    // password never kept.
    let got = e
        .get_json(
            &format!("/v1.0/users/{id}?$select=accountEnabled,userType,mailNickname,proxyAddresses,createdDateTime,passwordProfile,lastPasswordChangeDateTime,onPremisesImmutableId"),
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(got["accountEnabled"], true);
    assert_eq!(got["userType"], "Member");
    assert_eq!(got["mailNickname"], "carol");
    assert_eq!(got["proxyAddresses"], json!(["SMTP:carol@contoso.example"]));
    assert!(got["createdDateTime"].as_str().unwrap().ends_with('Z'));
    assert!(got["lastPasswordChangeDateTime"].is_string());
    assert_eq!(got["onPremisesImmutableId"], Value::Null);
    assert_eq!(
        got["passwordProfile"],
        json!({"password": null, "forceChangePasswordNextSignIn": true, "forceChangePasswordNextSignInWithMfa": false})
    );
    assert!(!got.to_string().contains(STRONG));

    // Writes are counted apart from reads.
    let (_, c) = e.control(Method::GET, "/requests", None).await;
    assert_eq!(c["byEndpoint"]["userWrite"], 1, "{c}");
    assert_eq!(
        c["writes"],
        json!({"succeeded": 1, "throttled": 0, "failed": 0})
    );

    // A federated user: the immutable id is enough, no password needed.
    let fed = json!({"accountEnabled": true, "displayName": "Fed New", "mailNickname": "fednew",
        "userPrincipalName": "fednew@fed.contoso.example", "onPremisesImmutableId": "bmV3LWZlZA=="});
    let (s, _, v) = e.call(Method::POST, "/v1.0/users", &t, Some(&fed)).await;
    assert_eq!(s, 201, "{v}");
    e.stop().await;
}

#[tokio::test]
async fn create_refusals_are_graphs_exact_errors() {
    let e = start().await;
    let t = e.token_for("writer", "s").await;
    let before = user_count(&e, &t).await;
    let with = |k: &str, v: Value| {
        let mut b = new_user("dora", "contoso.example");
        if v.is_null() {
            b.as_object_mut().unwrap().remove(k);
        } else {
            b[k] = v;
        }
        b
    };
    let invalid = |p: &str| {
        (
            format!("Invalid value specified for property '{p}' of resource 'User'."),
            Some(json!([{"code": "InvalidValue", "target": p}])),
        )
    };
    let mut cases: Vec<(Value, &str, String, Option<Value>)> = Vec::new();
    for p in [
        "accountEnabled",
        "displayName",
        "mailNickname",
        "userPrincipalName",
    ] {
        cases.push((
            with(p, Value::Null),
            "Request_BadRequest",
            format!("Property {p} value is required but is empty or missing."),
            None,
        ));
    }
    cases.push((
        with("passwordProfile", Value::Null),
        "Request_BadRequest",
        "A password must be specified to create a new user.".into(),
        None,
    ));
    cases.push((
        with(
            "passwordProfile",
            json!({"forceChangePasswordNextSignIn": true}),
        ),
        "Request_BadRequest",
        "A password must be specified to create a new user.".into(),
        None,
    ));
    for weak in ["short1A", "alllowercase", "P@ssw0rd1!", "Pässwort-123"] {
        cases.push((
            with("passwordProfile", json!({"password": weak})),
            "Request_BadRequest",
            "The specified password does not comply with password complexity requirements. Please provide a different password.".into(),
            None,
        ));
    }
    for upn in ["dora@pending.contoso.example", "dora@elsewhere.example"] {
        cases.push((
            with("userPrincipalName", json!(upn)),
            "Request_BadRequest",
            UNVERIFIED.into(),
            None,
        ));
    }
    for upn in [
        "dora+tag@contoso.example",
        "dóra@contoso.example",
        "no-at-sign",
    ] {
        let (m, d) = invalid("userPrincipalName");
        cases.push((
            with("userPrincipalName", json!(upn)),
            "Request_BadRequest",
            m,
            d,
        ));
    }
    for nick in ["naveen.mills,.jr.", "has space", "a@b", &"x".repeat(65)] {
        let (m, d) = invalid("mailNickname");
        cases.push((
            with("mailNickname", json!(nick)),
            "Request_BadRequest",
            m,
            d,
        ));
    }
    cases.push((
        with("userPrincipalName", json!("alice@contoso.example")),
        "Request_BadRequest",
        "Another object with the same value for property userPrincipalName already exists.".into(),
        Some(json!([{"target": "userPrincipalName", "code": "ObjectConflict"}])),
    ));
    // Case does not make a UPN different.
    cases.push((
        with("userPrincipalName", json!("ALICE@contoso.example")),
        "Request_BadRequest",
        "Another object with the same value for property userPrincipalName already exists.".into(),
        Some(json!([{"target": "userPrincipalName", "code": "ObjectConflict"}])),
    ));
    cases.push((
        with("userPrincipalName", json!("dora@fed.contoso.example")),
        "Request_BadRequest",
        "SourceAnchor is a required property for creation of a federated user.".into(),
        None,
    ));
    {
        let (m, d) = invalid("onPremisesImmutableId");
        cases.push((
            with("onPremisesImmutableId", json!("a_b")),
            "Request_BadRequest",
            m,
            d,
        ));
    }
    cases.push((
        with("onPremisesImmutableId", json!(FED_IMMUTABLE)),
        "Request_BadRequest",
        "Another object with the same value for property onPremisesImmutableId already exists."
            .into(),
        Some(json!([{"target": "onPremisesImmutableId", "code": "ObjectConflict"}])),
    ));
    let proxy = "Another object with the same value for property proxyAddresses already exists.";
    cases.push((
        with("mail", json!("Alice@contoso.example")),
        "Request_BadRequest",
        proxy.into(),
        Some(json!([
            {"code": "ObjectConflict", "message": proxy, "target": "proxyAddresses"},
            {"code": "ConflictingObjects", "message": proxy, "target": format!("User_{ALICE}")}
        ])),
    ));
    cases.push((
        with("onPremisesSyncEnabled", json!(true)),
        "Request_BadRequest",
        "Property 'onPremisesSyncEnabled' is read-only and cannot be set.".into(),
        None,
    ));
    cases.push((
        with("id", json!("11111111-0000-4000-8000-000000000000")),
        "Request_BadRequest",
        "Property 'id' is read-only and cannot be set.".into(),
        None,
    ));
    cases.push((
        with("favouriteColour", json!("blue")),
        "BadRequest",
        "The property 'favouriteColour' does not exist on type 'microsoft.graph.user'. Make sure to only use property names that are defined by the type or mark the type as open type.".into(),
        None,
    ));
    {
        let (m, d) = invalid("accountEnabled");
        cases.push((
            with("accountEnabled", json!("yes")),
            "Request_BadRequest",
            m,
            d,
        ));
    }
    for (body, code, message, details) in &cases {
        let (s, _, v) = e.call(Method::POST, "/v1.0/users", &t, Some(body)).await;
        assert_400(s, &v, code, message, details.clone());
    }
    // Not JSON at all.
    let r = e
        .client
        .post(e.url("/v1.0/users"))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_400(
        400,
        &v,
        "BadRequest",
        "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
        None,
    );
    assert_eq!(user_count(&e, &t).await, before, "nothing was created");
    let (_, c) = e.control(Method::GET, "/requests", None).await;
    assert_eq!(c["writes"]["failed"], cases.len() + 1, "{c}");
    assert_eq!(c["writes"]["succeeded"], 0, "{c}");
    e.stop().await;
}

#[tokio::test]
async fn update_is_204_null_clears_and_the_rules_hold() {
    let e = start().await;
    let t = e.token_for("writer", "s").await;
    let patch = |key: &str, body: Value| {
        let e = &e;
        let t = t.clone();
        let key = key.to_string();
        async move {
            e.call(
                Method::PATCH,
                &format!("/v1.0/users/{key}"),
                &t,
                Some(&body),
            )
            .await
        }
    };
    let (s, h, v) = patch(
        "alice@contoso.example",
        json!({"givenName": null, "jobTitle": "Lead", "onPremisesImmutableId": "YWxpY2U="}),
    )
    .await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(v, Value::Null, "no body");
    assert!(h.get("content-type").is_none());
    let got = e
        .get_json(
            &format!(
                "/v1.0/users/{ALICE}?$select=givenName,jobTitle,surname,onPremisesImmutableId"
            ),
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(got["givenName"], Value::Null);
    assert_eq!(got["jobTitle"], "Lead");
    assert_eq!(got["surname"], "Smith", "untouched");
    assert_eq!(got["onPremisesImmutableId"], "YWxpY2U=");
    // A managed user's immutable id may be cleared (a real JSON null).
    let (s, _, _) = patch(ALICE, json!({"onPremisesImmutableId": null})).await;
    assert_eq!(s, 204);
    // An empty patch changes nothing and succeeds.
    let (s, _, _) = patch(ALICE, json!({})).await;
    assert_eq!(s, 204);
    // The UPN moves, and can be found by its new name.
    let (s, _, v) = patch(
        ALICE,
        json!({"userPrincipalName": "alice.smith@contoso.example"}),
    )
    .await;
    assert_eq!(s, 204, "{v}");
    e.get_json("/v1.0/users/alice.smith@contoso.example", &t, &[], 200)
        .await;

    let (s, _, v) = patch(
        ALICE,
        json!({"userPrincipalName": "alice@pending.contoso.example"}),
    )
    .await;
    assert_400(s, &v, "Request_BadRequest", UNVERIFIED, None);
    let (s, _, v) = patch(ALICE, json!({"userPrincipalName": "admin@contoso.example"})).await;
    assert_400(
        s,
        &v,
        "Request_BadRequest",
        "Another object with the same value for property userPrincipalName already exists.",
        Some(json!([{"target": "userPrincipalName", "code": "ObjectConflict"}])),
    );
    let (s, _, v) = patch(ALICE, json!({"displayName": null})).await;
    assert_400(
        s,
        &v,
        "Request_BadRequest",
        "Invalid value specified for property 'displayName' of resource 'User'.",
        Some(json!([{"code": "InvalidValue", "target": "displayName"}])),
    );
    let (s, _, v) = patch(ALICE, json!({"passwordProfile": {"password": "weakling"}})).await;
    assert_400(
        s,
        &v,
        "Request_BadRequest",
        "The specified password does not comply with password complexity requirements. Please provide a different password.",
        None,
    );
    let (s, _, _) = patch(ALICE, json!({"passwordProfile": {"password": STRONG}})).await;
    assert_eq!(s, 204);
    // Moving into a federated domain needs an immutable id.
    let (s, _, v) = patch(
        ALICE,
        json!({"userPrincipalName": "alice@fed.contoso.example"}),
    )
    .await;
    assert_400(
        s,
        &v,
        "Request_BadRequest",
        "SourceAnchor is a required property for creation of a federated user.",
        None,
    );

    // A federated user's immutable id never changes (nor is cleared)...
    for value in [json!("b3RoZXI="), Value::Null] {
        let (s, _, v) = patch(FED, json!({"onPremisesImmutableId": value})).await;
        assert_400(
            s,
            &v,
            "Request_BadRequest",
            "Invalid value specified for property 'onPremisesImmutableId' of resource 'User'.",
            Some(json!([{"code": "InvalidValue", "target": "onPremisesImmutableId"}])),
        );
    }
    // ...but the same value, and other properties, are fine; and the documented workaround
    // works: move to a managed domain, change it, move back.
    let (s, _, _) = patch(
        FED,
        json!({"onPremisesImmutableId": FED_IMMUTABLE, "jobTitle": "X"}),
    )
    .await;
    assert_eq!(s, 204);
    let (s, _, _) = patch(
        FED,
        json!({"userPrincipalName": "bob@contoso.onmicrosoft.com"}),
    )
    .await;
    assert_eq!(s, 204);
    let (s, _, _) = patch(FED, json!({"onPremisesImmutableId": "bmV3LWlk"})).await;
    assert_eq!(s, 204);
    let (s, _, _) = patch(FED, json!({"userPrincipalName": "bob@fed.contoso.example"})).await;
    assert_eq!(s, 204);

    // Users synced from on-premises AD: their AD-mastered properties are refused.
    let (s, _, v) = patch(SYNCED, json!({"displayName": "Renamed"})).await;
    assert_400(s, &v, "Request_BadRequest", EXTERNAL, None);
    let (s, _, _) = patch(SYNCED, json!({"usageLocation": "JP"})).await;
    assert_eq!(s, 204, "cloud-mastered properties stay writable");

    let (s, _, v) = patch("nobody@contoso.example", json!({"jobTitle": "x"})).await;
    assert_eq!(s, 404);
    assert_graph_error(&v, "Request_ResourceNotFound");
    assert_eq!(
        v["error"]["message"],
        "Resource 'nobody@contoso.example' does not exist or one of its queried reference-property objects are not present."
    );
    e.stop().await;
}

#[tokio::test]
async fn delete_is_soft_by_id_or_upn() {
    let e = start().await;
    let t = e.token_for("writer", "s").await;
    let (s, h, v) = e
        .call(
            Method::DELETE,
            "/v1.0/users/alice@contoso.example",
            &t,
            None,
        )
        .await;
    assert_eq!(s, 204, "{v}");
    assert!(h.get("content-type").is_none());
    let v = e
        .get_json(&format!("/v1.0/users/{ALICE}"), &t, &[], 404)
        .await;
    assert_graph_error(&v, "Request_ResourceNotFound");
    let v = e
        .get_json(
            &format!("/v1.0/directory/deletedItems/{ALICE}?$select=id,deletedDateTime"),
            &t,
            &[],
            200,
        )
        .await;
    assert!(v["deletedDateTime"].as_str().unwrap().ends_with('Z'), "{v}");
    // The UPN is free again.
    let (s, _, v) = e
        .call(
            Method::POST,
            "/v1.0/users",
            &t,
            Some(&new_user("alice", "contoso.example")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, _, v) = e
        .call(Method::DELETE, &format!("/v1.0/users/{SYNCED}"), &t, None)
        .await;
    assert_400(s, &v, "Request_BadRequest", EXTERNAL, None);
    let (s, _, _) = e
        .call(Method::DELETE, &format!("/v1.0/users/{ALICE}"), &t, None)
        .await;
    assert_eq!(s, 404, "already deleted");
    e.stop().await;
}

#[tokio::test]
async fn on_premises_sync_enabled_and_guests_are_set_and_read() {
    let e = start().await;
    let t = e.token_for("writer", "s").await;
    let v = e
        .get_json(
            "/v1.0/users?$select=id,userType,onPremisesSyncEnabled&$top=999",
            &t,
            &[],
            200,
        )
        .await;
    let by_id = |id: &str| {
        v["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id(SYNCED)["onPremisesSyncEnabled"], true);
    assert_eq!(by_id(ALICE)["onPremisesSyncEnabled"], Value::Null);
    assert_eq!(by_id(GUEST)["userType"], "Guest");
    // Through the control API: a user becomes AD-synced, and Graph then refuses to change it.
    let (s, _) = e
        .control(
            Method::PATCH,
            &format!("/users/{ALICE}"),
            Some(json!({"onPremisesSyncEnabled": true})),
        )
        .await;
    assert_eq!(s, 200);
    let got = e
        .get_json(
            &format!("/v1.0/users/{ALICE}?$select=onPremisesSyncEnabled"),
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(got["onPremisesSyncEnabled"], true);
    let (s, _, v) = e
        .call(
            Method::PATCH,
            &format!("/v1.0/users/{ALICE}"),
            &t,
            Some(&json!({"surname": "Jones"})),
        )
        .await;
    assert_400(s, &v, "Request_BadRequest", EXTERNAL, None);
    // A guest created through the control API reads back as one.
    let (s, _) = e
        .control(
            Method::POST,
            "/users",
            Some(
                json!({"userPrincipalName": "hal_partner.example#EXT#@contoso.onmicrosoft.com",
                "displayName": "Hal", "userType": "Guest"}),
            ),
        )
        .await;
    assert_eq!(s, 201);
    let got = e
        .get_json(
            "/v1.0/users/hal_partner.example%23EXT%23@contoso.onmicrosoft.com?$select=userType",
            &t,
            &[],
            200,
        )
        .await;
    assert_eq!(got["userType"], "Guest");
    e.stop().await;
}

#[tokio::test]
async fn reject_federated_password_setting_picks_the_other_answer() {
    let e = start().await;
    let t = e.token_for("writer", "s").await;
    let mut body = new_user("fp", "fed.contoso.example");
    body["onPremisesImmutableId"] = json!("ZnAtaWQ=");
    let (s, v) = e
        .control(
            Method::PATCH,
            "/settings",
            Some(json!({"rejectFederatedPassword": true})),
        )
        .await;
    assert_eq!(
        (s, &v["rejectFederatedPassword"]),
        (200, &json!(true)),
        "{v}"
    );
    let (s, _, v) = e.call(Method::POST, "/v1.0/users", &t, Some(&body)).await;
    assert_400(
        s,
        &v,
        "Request_BadRequest",
        "The passwordProfile property cannot be set for a user in a federated domain.",
        None,
    );
    e.control(
        Method::PATCH,
        "/settings",
        Some(json!({"rejectFederatedPassword": false})),
    )
    .await;
    let (s, _, v) = e.call(Method::POST, "/v1.0/users", &t, Some(&body)).await;
    assert_eq!(
        s, 201,
        "by default a password on a federated user is accepted: {v}"
    );
    e.stop().await;
}
