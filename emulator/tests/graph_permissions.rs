//! Application permissions and directory roles on the write side (issue #14;
//! shared/reference/graph-writes.md §3): writes need `User.ReadWrite.All` (or
//! `Directory.ReadWrite.All`) in the token's `roles`, and members of directory roles need an
//! app that holds a role outranking theirs.

mod common;

use common::writes::*;
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

fn assert_denied(s: u16, v: &Value) {
    assert_eq!(s, 403, "{v}");
    assert_graph_error(v, "Authorization_RequestDenied");
    assert_eq!(
        v["error"]["message"],
        "Insufficient privileges to complete the operation."
    );
}

/// The `roles` claim of a token (its payload, base64url).
fn roles_claim(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["roles"].clone()
}

#[tokio::test]
async fn writes_need_user_readwrite_all_in_the_roles_claim() {
    let e = start().await;
    let reader = e.token_for("reader", "s").await;
    assert_eq!(
        roles_claim(&reader),
        json!(["User.Read.All", "Domain.Read.All"])
    );
    let writer = e.token_for("writer", "s").await;
    assert_eq!(
        roles_claim(&writer),
        json!(["User.ReadWrite.All", "Domain.Read.All"])
    );
    // Reads work with the reader app...
    e.get_json(&format!("/v1.0/users/{ALICE}"), &reader, &[], 200)
        .await;
    // ...writes of every kind are refused, before anything is looked at.
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/v1.0/users".into(),
            Some(new_user("x", "contoso.example")),
        ),
        (Method::POST, "/v1.0/users".into(), Some(json!({}))),
        (
            Method::PATCH,
            format!("/v1.0/users/{ALICE}"),
            Some(json!({"jobTitle": "x"})),
        ),
        (
            Method::PATCH,
            "/v1.0/users/nobody@contoso.example".into(),
            Some(json!({"jobTitle": "x"})),
        ),
        (Method::DELETE, format!("/v1.0/users/{ALICE}"), None),
    ];
    for (m, path, body) in &calls {
        let (s, _, v) = e.call(m.clone(), path, &reader, body.as_ref()).await;
        assert_denied(s, &v);
    }
    // Restore and purge need it too.
    e.call(
        Method::DELETE,
        &format!("/v1.0/users/{ALICE}"),
        &writer,
        None,
    )
    .await;
    for (m, path) in [
        (
            Method::POST,
            format!("/v1.0/directory/deletedItems/{ALICE}/restore"),
        ),
        (
            Method::DELETE,
            format!("/v1.0/directory/deletedItems/{ALICE}"),
        ),
    ] {
        let (s, _, v) = e.call(m, &path, &reader, None).await;
        assert_denied(s, &v);
    }
    // Directory.ReadWrite.All is enough.
    let dir = e.token_for("dirwriter", "s").await;
    let (s, _, v) = e
        .call(
            Method::POST,
            &format!("/v1.0/directory/deletedItems/{ALICE}/restore"),
            &dir,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _, v) = e
        .call(
            Method::POST,
            "/v1.0/users",
            &dir,
            Some(&new_user("dw", "contoso.example")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    // Roles granted at run time show in the next token.
    let (s, _) = e
        .control(
            Method::PUT,
            "/applications",
            Some(
                json!({"clientId": "reader", "clientSecret": "s", "roles": ["User.ReadWrite.All"]}),
            ),
        )
        .await;
    assert_eq!(s, 200);
    let promoted = e.token_for("reader", "s").await;
    let (s, _, _) = e
        .call(
            Method::PATCH,
            &format!("/v1.0/users/{ALICE}"),
            &promoted,
            Some(&json!({"jobTitle": "x"})),
        )
        .await;
    assert_eq!(s, 204);
    e.stop().await;
}

#[tokio::test]
async fn members_of_directory_roles_need_a_privileged_app() {
    let e = start().await;
    let writer = e.token_for("writer", "s").await;
    let useradmin = e.token_for("useradmin", "s").await;
    let global = e.token_for("globaladmin", "s").await;
    let patch = json!({"jobTitle": "Changed"});
    let reset =
        json!({"passwordProfile": {"password": STRONG, "forceChangePasswordNextSignIn": false}});

    // An app without a directory role: neither the Global Administrator nor the helpdesk
    // administrator can be updated, have its password reset, or be deleted.
    for id in [ADMIN, HELPER] {
        for body in [&patch, &reset] {
            let (s, _, v) = e
                .call(
                    Method::PATCH,
                    &format!("/v1.0/users/{id}"),
                    &writer,
                    Some(body),
                )
                .await;
            assert_denied(s, &v);
        }
        let (s, _, v) = e
            .call(Method::DELETE, &format!("/v1.0/users/{id}"), &writer, None)
            .await;
        assert_denied(s, &v);
    }
    // Also by UPN.
    let (s, _, v) = e
        .call(
            Method::PATCH,
            "/v1.0/users/admin@contoso.example",
            &writer,
            Some(&patch),
        )
        .await;
    assert_denied(s, &v);
    // Ordinary users are fine for it.
    let (s, _, _) = e
        .call(
            Method::PATCH,
            &format!("/v1.0/users/{ALICE}"),
            &writer,
            Some(&patch),
        )
        .await;
    assert_eq!(s, 204);

    // A User Administrator app manages the helpdesk administrator, not the global one.
    let (s, _, _) = e
        .call(
            Method::PATCH,
            &format!("/v1.0/users/{HELPER}"),
            &useradmin,
            Some(&reset),
        )
        .await;
    assert_eq!(s, 204);
    let (s, _, v) = e
        .call(
            Method::PATCH,
            &format!("/v1.0/users/{ADMIN}"),
            &useradmin,
            Some(&patch),
        )
        .await;
    assert_denied(s, &v);

    // A Global Administrator app manages everyone, and deletes and restores an admin.
    let (s, _, _) = e
        .call(
            Method::PATCH,
            &format!("/v1.0/users/{ADMIN}"),
            &global,
            Some(&patch),
        )
        .await;
    assert_eq!(s, 204);
    let (s, _, _) = e
        .call(
            Method::DELETE,
            &format!("/v1.0/users/{ADMIN}"),
            &global,
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _, v) = e
        .call(
            Method::POST,
            &format!("/v1.0/directory/deletedItems/{ADMIN}/restore"),
            &writer,
            None,
        )
        .await;
    assert_denied(s, &v);
    let (s, _, _) = e
        .call(
            Method::POST,
            &format!("/v1.0/directory/deletedItems/{ADMIN}/restore"),
            &global,
            None,
        )
        .await;
    assert_eq!(s, 200);

    // Roles can be replaced at run time: without its role, the helper is an ordinary user.
    let (s, v) = e.control(Method::GET, "/directoryRoles", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["directoryRoles"][0]["members"],
        json!([ADMIN, "globaladmin"]),
        "{v}"
    );
    let (s, v) = e
        .control(
            Method::PUT,
            "/directoryRoles",
            Some(json!({"directoryRoles": [{"displayName": "Global Administrator", "members": [ADMIN]}]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["directoryRoles"][0]["roleTemplateId"],
        "62e90394-69f5-4237-9190-012177145e10"
    );
    let (s, _, _) = e
        .call(
            Method::PATCH,
            &format!("/v1.0/users/{HELPER}"),
            &writer,
            Some(&patch),
        )
        .await;
    assert_eq!(s, 204);
    let (s, v) = e
        .control(
            Method::PUT,
            "/directoryRoles",
            Some(json!([{"displayName": "Made-up Role"}])),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    // A reset brings the fixture's roles back.
    e.control(Method::POST, "/reset", None).await;
    let writer = e.token_for("writer", "s").await;
    let (s, _, v) = e
        .call(
            Method::PATCH,
            &format!("/v1.0/users/{HELPER}"),
            &writer,
            Some(&patch),
        )
        .await;
    assert_denied(s, &v);
    e.stop().await;
}

#[tokio::test]
async fn a_generated_tenant_protects_its_administrators() {
    let e = Emu::generated(400).await;
    // The generated app reads only, by default.
    let t = e.token().await;
    assert_eq!(roles_claim(&t), json!(["User.Read.All", "Domain.Read.All"]));
    let (s, _, v) = e
        .call(
            Method::POST,
            "/v1.0/users",
            &t,
            Some(&new_user("x", "example.com")),
        )
        .await;
    assert_denied(s, &v);
    let (s, roles) = e.control(Method::GET, "/directoryRoles", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        roles["directoryRoles"][0]["displayName"],
        "Global Administrator"
    );
    let members = roles["directoryRoles"][0]["members"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(members.len(), 2, "admin@ and breakglass@: {roles}");
    // Give the app User.ReadWrite.All: ordinary users are writable, the administrators not.
    e.control(
        Method::PUT,
        "/applications",
        Some(json!({"clientId": entra_emulator::DEFAULT_CLIENT_ID,
            "clientSecret": entra_emulator::DEFAULT_CLIENT_SECRET,
            "roles": ["User.ReadWrite.All", "Domain.Read.All"]})),
    )
    .await;
    let t = e.token().await;
    for m in &members {
        let upn = e
            .get_json(
                &format!("/v1.0/users/{}", m.as_str().unwrap()),
                &t,
                &[],
                200,
            )
            .await["userPrincipalName"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            upn.starts_with("admin@") || upn.starts_with("breakglass@"),
            "{upn}"
        );
        let (s, _, v) = e
            .call(
                Method::DELETE,
                &format!("/v1.0/users/{}", m.as_str().unwrap()),
                &t,
                None,
            )
            .await;
        assert_denied(s, &v);
    }
    let (s, _, v) = e
        .call(
            Method::POST,
            "/v1.0/users",
            &t,
            Some(&new_user("x", "example.com")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    e.stop().await;
}
