//! The SCIM client against the real `scim2-server` (PyPI, pinned in tools/requirements.txt),
//! started on a free loopback port per test.

use std::collections::HashSet;
use std::time::Duration;

use dirsync::clients::outbound::{HttpConfig, RetryPolicy};
use dirsync::clients::scim::{ENTERPRISE_USER, ScimCapabilities, ScimClient, ScimConfig};
use dirsync::directory::{DesiredUser, Directory, DirectoryError, ListScope, User};
use dirsync_testenv::Scim2Server;
use secrecy::SecretString;
use serde_json::{Value, json};
use url::Url;

const TOKEN: &str = "scim-test-token-3b9c";

fn config(server: &Scim2Server) -> ScimConfig {
    ScimConfig {
        http: HttpConfig {
            retry: RetryPolicy {
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(40),
                ..RetryPolicy::default()
            },
            run_timeout: Some(Duration::from_secs(120)),
            ..HttpConfig::default()
        },
        ..ScimConfig::new(
            Url::parse(&server.base_url()).unwrap(),
            SecretString::from(TOKEN),
        )
    }
}

fn desired(i: usize) -> DesiredUser {
    DesiredUser {
        user_name: format!("user{i}@example.com"),
        display_name: Some(format!("User {i}")),
        given_name: Some("User".into()),
        surname: Some(format!("Number{i}")),
        email: Some(format!("user{i}@example.com")),
        active: true,
        immutable_id: format!("imm-{i}+/=="),
        upn: Some(format!("user{i}@example.com")),
    }
}

/// The user as the server holds it now (raw JSON), read with curl-like plain reqwest.
async fn raw(server: &Scim2Server, id: &str) -> Value {
    let c = reqwest::Client::new();
    let r = c
        .get(format!("{}/Users/{id}", server.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Creates a user directly (outside the client), e.g. a hand-made administrator.
async fn post_raw(server: &Scim2Server, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}/Users", server.base_url()))
        .bearer_auth(TOKEN)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

fn start() -> Scim2Server {
    dirsync::clients::outbound::init_crypto();
    Scim2Server::start(TOKEN)
}

#[tokio::test]
async fn create_list_find_update_delete_round_trip() {
    let server = start();
    let scim = ScimClient::new(config(&server)).unwrap();
    let caps = scim.capabilities().await.unwrap();
    assert!(caps.patch && caps.etag && caps.filter, "{caps:?}");

    let created = scim.create_user(&desired(1)).await.unwrap();
    assert!(!created.id.is_empty());
    assert_eq!(
        created,
        User {
            id: created.id.clone(),
            user_name: "user1@example.com".into(),
            upn: None,
            display_name: Some("User 1".into()),
            given_name: Some("User".into()),
            surname: Some("Number1".into()),
            email: Some("user1@example.com".into()),
            proxy_addresses: vec![],
            active: true,
            immutable_id: Some("imm-1+/==".into()),
            guest: false,
        }
    );
    let listed = scim.list_users(&ListScope::All).await.unwrap();
    assert_eq!(listed, vec![created.clone()]);
    assert_eq!(
        scim.get_user(&created.id).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(
        scim.find_by_user_name("USER1@example.com").await.unwrap(),
        vec![created.clone()]
    );

    // Update every sync item: PATCH with If-Match.
    let want = DesiredUser {
        user_name: "renamed@example.com".into(),
        display_name: None,
        given_name: Some("Ursula".into()),
        surname: None,
        email: Some("ursula@example.com".into()),
        active: false,
        immutable_id: "imm-1+/==".into(),
        upn: None,
    };
    scim.update_user(&created.id, &created, &want, Some("imm-1+/=="))
        .await
        .unwrap();
    let after = scim.get_user(&created.id).await.unwrap().unwrap();
    assert_eq!(after.user_name, "renamed@example.com");
    assert_eq!(after.display_name, None);
    assert_eq!(after.given_name.as_deref(), Some("Ursula"));
    assert_eq!(after.surname, None);
    assert_eq!(after.email.as_deref(), Some("ursula@example.com"));
    assert!(!after.active);
    // Nothing to change: no write (the version stays).
    let version = raw(&server, &created.id).await["meta"]["version"].clone();
    scim.update_user(&created.id, &after, &want, Some("imm-1+/=="))
        .await
        .unwrap();
    assert_eq!(raw(&server, &created.id).await["meta"]["version"], version);
    // Removing the email removes them all.
    let no_mail = DesiredUser {
        email: None,
        ..want.clone()
    };
    scim.update_user(&created.id, &after, &no_mail, Some("imm-1+/=="))
        .await
        .unwrap();
    assert_eq!(
        scim.get_user(&created.id).await.unwrap().unwrap().email,
        None
    );

    scim.delete_user(&created.id, Some("imm-1+/=="))
        .await
        .unwrap();
    assert_eq!(scim.get_user(&created.id).await.unwrap(), None);
    assert!(scim.list_users(&ListScope::All).await.unwrap().is_empty());
    // Deleting again is done, not an error.
    scim.delete_user(&created.id, Some("imm-1+/=="))
        .await
        .unwrap();
    // Updating a user that is gone is NotFound.
    let err = scim
        .update_user(&created.id, &after, &want, Some("imm-1+/=="))
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn listing_pages_through_every_user_and_scopes_by_domain() {
    let server = start();
    let mut cfg = config(&server);
    cfg.page_size = 7;
    let scim = ScimClient::new(cfg).unwrap();
    // Fire all creates at once: the client bounds what is in flight.
    let creates = (0..40).map(|i| {
        let scim = scim.clone();
        async move {
            let mut d = desired(i);
            if i % 4 == 0 {
                d.user_name = format!("user{i}@other.example");
            }
            scim.create_user(&d).await
        }
    });
    let created: Vec<User> = futures::future::try_join_all(creates).await.unwrap();
    let all = scim.list_users(&ListScope::All).await.unwrap();
    assert_eq!(all.len(), 40);
    let ids: HashSet<&str> = all.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(
        ids,
        created
            .iter()
            .map(|u| u.id.as_str())
            .collect::<HashSet<_>>()
    );
    let scoped = scim
        .list_users(&ListScope::Domain("EXAMPLE.com".into()))
        .await
        .unwrap();
    assert_eq!(scoped.len(), 30);
    assert!(scoped.iter().all(|u| u.user_name.ends_with("@example.com")));
}

#[tokio::test]
async fn a_duplicate_create_is_a_conflict() {
    let server = start();
    let scim = ScimClient::new(config(&server)).unwrap();
    scim.create_user(&desired(1)).await.unwrap();
    let dup = DesiredUser {
        user_name: "USER1@EXAMPLE.COM".into(),
        immutable_id: "other".into(),
        ..desired(1)
    };
    let err = scim.create_user(&dup).await.unwrap_err();
    assert_eq!(
        err,
        DirectoryError::Conflict("SCIM create user: HTTP 409 uniqueness".into())
    );
}

#[tokio::test]
async fn writes_check_the_owner_first_and_change_nothing_on_a_mismatch() {
    let server = start();
    let scim = ScimClient::new(config(&server)).unwrap();
    let mine = scim.create_user(&desired(1)).await.unwrap();
    // A hand-made user with no externalId (the service's administrator).
    let admin = post_raw(
        &server,
        json!({"userName": "admin@example.com", "displayName": "Admin"}),
    )
    .await;
    let admin_id = admin["id"].as_str().unwrap().to_string();
    let before_mine = raw(&server, &mine.id).await;
    let before_admin = raw(&server, &admin_id).await;

    let want = DesiredUser {
        display_name: Some("Hijacked".into()),
        ..desired(1)
    };
    for (id, expected) in [
        (&mine.id, Some("someone-else")),
        (&mine.id, None),
        (&admin_id, Some("imm-1+/==")),
    ] {
        let err = scim
            .update_user(id, &mine, &want, expected)
            .await
            .unwrap_err();
        assert!(
            matches!(err, DirectoryError::PreconditionFailed(_)),
            "{err}"
        );
        let err = scim.delete_user(id, expected).await.unwrap_err();
        assert!(
            matches!(err, DirectoryError::PreconditionFailed(_)),
            "{err}"
        );
    }
    assert_eq!(raw(&server, &mine.id).await, before_mine);
    assert_eq!(raw(&server, &admin_id).await, before_admin);

    // Adoption: expected None matches the administrator's absent externalId; the update sets it.
    let adopt = DesiredUser {
        user_name: "admin@example.com".into(),
        display_name: Some("Admin".into()),
        immutable_id: "adopted-imm".into(),
        active: true,
        ..Default::default()
    };
    scim.update_user(&admin_id, &mine, &adopt, None)
        .await
        .unwrap();
    let adopted = scim.get_user(&admin_id).await.unwrap().unwrap();
    assert_eq!(adopted.immutable_id.as_deref(), Some("adopted-imm"));
}

#[tokio::test]
async fn find_by_user_name_encodes_plus_and_quotes() {
    let server = start();
    let scim = ScimClient::new(config(&server)).unwrap();
    let names = [
        "a+b@example.com",
        "a b@example.com",
        "q\"uote@example.com",
        "back\\slash@example.com",
        "o'neil@example.com",
    ];
    for (i, n) in names.iter().enumerate() {
        let d = DesiredUser {
            user_name: n.to_string(),
            ..desired(i)
        };
        scim.create_user(&d).await.unwrap();
    }
    for n in names {
        let found = scim.find_by_user_name(n).await.unwrap();
        assert_eq!(found.len(), 1, "{n}");
        assert_eq!(found[0].user_name, n);
    }
    assert!(
        scim.find_by_user_name("ab@example.com")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn put_fallback_when_patch_is_unsupported_keeps_unmanaged_attributes() {
    dirsync::clients::outbound::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let spc = dir.path().join("spc.json");
    std::fs::write(
        &spc,
        json!({
            "patch": {"supported": false}, "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": 50}, "changePassword": {"supported": false},
            "sort": {"supported": false}, "etag": {"supported": false},
            "pagination": {"index": true, "cursor": false, "defaultPageSize": 10, "maxPageSize": 50},
            "authenticationSchemes": []
        })
        .to_string(),
    )
    .unwrap();
    let server =
        Scim2Server::start_with_args(TOKEN, &["--service-provider-config", spc.to_str().unwrap()])
            .unwrap();
    let mut cfg = config(&server);
    cfg.upn_attribute = Some(format!("{ENTERPRISE_USER}:employeeNumber"));
    let scim = ScimClient::new(cfg).unwrap();
    assert_eq!(
        scim.capabilities().await.unwrap(),
        ScimCapabilities {
            patch: false,
            etag: false,
            filter: true,
            max_results: Some(50),
            max_page_size: Some(50)
        }
    );
    // More users than one page of 50 (the server bounds count).
    for i in 0..60 {
        scim.create_user(&desired(i)).await.unwrap();
    }
    assert_eq!(scim.list_users(&ListScope::All).await.unwrap().len(), 60);

    let u = scim
        .find_by_user_name("user7@example.com")
        .await
        .unwrap()
        .remove(0);
    assert_eq!(u.upn.as_deref(), Some("user7@example.com"));
    // Unmanaged attributes set by someone else must survive the PUT.
    let mut resource = raw(&server, &u.id).await;
    resource["title"] = "Engineer".into();
    resource["phoneNumbers"] = json!([{"value": "+1 555 0100", "type": "work"}]);
    resource.as_object_mut().unwrap().remove("meta");
    let r = reqwest::Client::new()
        .put(format!("{}/Users/{}", server.base_url(), u.id))
        .bearer_auth(TOKEN)
        .header("content-type", "application/scim+json")
        .body(resource.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let want = DesiredUser {
        display_name: Some("Seven".into()),
        email: Some("seven@example.com".into()),
        upn: Some("seven@upn.example".into()),
        ..desired(7)
    };
    scim.update_user(&u.id, &u, &want, Some("imm-7+/=="))
        .await
        .unwrap();
    let after = raw(&server, &u.id).await;
    assert_eq!(after["displayName"], "Seven");
    assert_eq!(after["title"], "Engineer");
    assert_eq!(after["phoneNumbers"][0]["value"], "+1 555 0100");
    assert_eq!(
        after[ENTERPRISE_USER]["employeeNumber"],
        "seven@upn.example"
    );
    assert_eq!(after["emails"][0]["value"], "seven@example.com");
    let mapped = scim.get_user(&u.id).await.unwrap().unwrap();
    assert_eq!(mapped.upn.as_deref(), Some("seven@upn.example"));
    assert_eq!(mapped.email.as_deref(), Some("seven@example.com"));
    // Domain scope also matches on the UPN attribute.
    let scoped = scim
        .list_users(&ListScope::Domain("upn.example".into()))
        .await
        .unwrap();
    assert_eq!(
        scoped.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        vec![u.id.as_str()]
    );
}

#[tokio::test]
async fn patch_carries_the_upn_attribute_in_the_enterprise_extension() {
    let server = start();
    let mut cfg = config(&server);
    cfg.upn_attribute = Some(format!("{ENTERPRISE_USER}:employeeNumber"));
    let scim = ScimClient::new(cfg).unwrap();
    let d = DesiredUser {
        upn: None,
        ..desired(3)
    };
    let u = scim.create_user(&d).await.unwrap();
    assert_eq!(u.upn, None);
    let want = DesiredUser {
        upn: Some("three@upn.example".into()),
        ..d.clone()
    };
    scim.update_user(&u.id, &u, &want, Some("imm-3+/=="))
        .await
        .unwrap();
    let got = scim.get_user(&u.id).await.unwrap().unwrap();
    assert_eq!(got.upn.as_deref(), Some("three@upn.example"));
    scim.update_user(&u.id, &got, &d, Some("imm-3+/=="))
        .await
        .unwrap();
    assert_eq!(scim.get_user(&u.id).await.unwrap().unwrap().upn, None);
}

#[tokio::test]
async fn a_wrong_token_is_invalid_credentials_without_the_token() {
    let server = start();
    let mut cfg = config(&server);
    cfg.bearer_token = SecretString::from("CANARY-bad-token-19f0");
    let scim = ScimClient::new(cfg).unwrap();
    let err = scim.list_users(&ListScope::All).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        matches!(err, DirectoryError::InvalidCredentials(_)),
        "{text}"
    );
    assert!(text.contains("HTTP 401"), "{text}");
    assert!(!text.contains("CANARY"), "{text}");
    let err = scim.create_user(&desired(1)).await.unwrap_err();
    assert!(
        matches!(err, DirectoryError::InvalidCredentials(_)),
        "{err}"
    );
}
