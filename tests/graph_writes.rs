//! The Graph client's write side (issue #14, docs/behaviour.md §6) against the in-process
//! Entra ID / Graph emulator: create, update, soft delete, deleted items and restore, the write
//! guards (Immutable ID precondition, AD-synced users, guests, privileged users), permissions,
//! error mapping and pacing under the write limit.
//!
//! A small recording proxy sits between the client and the emulator (which keeps no request
//! bodies), so that the tests can assert exactly what each write sent. The emulator writes its
//! links with the proxy's address (`public_url`), so nextLinks stay on the Graph endpoint.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::Response;
use dirsync::clients::graph::{GraphClient, GraphConfig, GraphCredential, WritePacing};
use dirsync::clients::outbound::{HttpConfig, RetryPolicy};
use dirsync::directory::{DesiredUser, Directory, DirectoryError, User, UserUpdate};
use entra_emulator::{Config, Emulator, RunningEmulator};
use secrecy::SecretString;
use serde_json::{Value, json};
use url::Url;

const TENANT: &str = "cccccccc-0000-4000-8000-000000000001";
const WRITER: &str = "dddddddd-0000-4000-8000-00000000000a";
const READER: &str = "dddddddd-0000-4000-8000-00000000000b";
const SECRET: &str = "emulator-app-secret";

const ALICE: &str = "00000000-0000-4000-8000-0000000000a1";
const ALICE_IMM: &str = "YWxpY2UtaW1tdXRhYmxlLTE=";
const ADMIN: &str = "00000000-0000-4000-8000-0000000000a2";
const ADMIN_IMM: &str = "YWRtaW4taW1tdXRhYmxlLTE=";
const SYNCED: &str = "00000000-0000-4000-8000-0000000000a3";
const SYNCED_IMM: &str = "c3luY2VkLWZyb20tYWQ=";
const GUEST: &str = "00000000-0000-4000-8000-0000000000a4";
const FED_DOMAIN: &str = "fed.example.com";

fn fixture() -> Value {
    json!({
        "tenantId": TENANT,
        "domains": [
            {"id": "example.com", "isDefault": true},
            {"id": FED_DOMAIN, "authenticationType": "Federated"}
        ],
        "applications": [
            {"clientId": WRITER, "clientSecret": SECRET,
             "roles": ["User.Read.All", "User.ReadWrite.All", "Domain.Read.All"]},
            {"clientId": READER, "clientSecret": SECRET, "roles": ["User.Read.All", "Domain.Read.All"]}
        ],
        "directoryRoles": [
            {"displayName": "Global Administrator", "members": ["admin@example.com"]}
        ],
        "users": [
            {"id": ALICE, "userPrincipalName": "alice@example.com", "displayName": "Alice Smith",
             "givenName": "Alice", "surname": "Smith", "mailNickname": "alice",
             "accountEnabled": true, "userType": "Member", "onPremisesImmutableId": ALICE_IMM},
            {"id": ADMIN, "userPrincipalName": "admin@example.com", "displayName": "Administrator",
             "mailNickname": "admin", "accountEnabled": true, "userType": "Member",
             "onPremisesImmutableId": ADMIN_IMM},
            {"id": SYNCED, "userPrincipalName": "ad.user@example.com", "displayName": "From AD",
             "accountEnabled": true, "userType": "Member", "onPremisesSyncEnabled": true,
             "onPremisesImmutableId": SYNCED_IMM},
            {"id": GUEST, "userPrincipalName": "gail_partner.example#EXT#@example.com",
             "displayName": "Gail (partner)", "accountEnabled": true, "userType": "Guest"}
        ]
    })
}

/// One request the proxy passed on.
#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    path: String,
    body: String,
}

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    log: Mutex<Vec<Recorded>>,
}

struct Harness {
    emu: RunningEmulator,
    proxy: Arc<ProxyState>,
    proxy_url: String,
}

async fn forward(
    State(st): State<Arc<ProxyState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    st.log.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let mut req = st
        .client
        .request(method, format!("{}{path}", st.upstream))
        .body(body.to_vec());
    for (k, v) in &headers {
        if k != header::HOST && k != header::CONTENT_LENGTH && k != header::ACCEPT_ENCODING {
            req = req.header(k, v);
        }
    }
    let resp = req.send().await.expect("the emulator answers the proxy");
    let mut out = Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if k != header::TRANSFER_ENCODING && k != header::CONTENT_LENGTH && k != header::CONNECTION
        {
            out = out.header(k, v);
        }
    }
    let bytes = resp.bytes().await.expect("the emulator's body");
    out.body(Body::from(bytes)).unwrap()
}

/// The emulator with `fixture()`, its write limit, and the recording proxy in front of it.
async fn start(write_limit: Option<(u64, u64)>) -> Harness {
    dirsync::clients::outbound::init_crypto();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", listener.local_addr().unwrap());
    let mut cfg = Config::from_fixture(&fixture()).unwrap();
    cfg.public_url = Some(proxy_url.clone());
    if let Some((limit, window)) = write_limit {
        cfg = cfg.write_limit(limit, window);
    }
    let emu = Emulator::start(cfg).await.unwrap();
    let proxy = Arc::new(ProxyState {
        upstream: format!("http://{}", emu.addr),
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        log: Mutex::new(Vec::new()),
    });
    let app = Router::new().fallback(forward).with_state(proxy.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Harness {
        emu,
        proxy,
        proxy_url,
    }
}

impl Harness {
    fn config(&self, client_id: &str, pacing: WritePacing) -> GraphConfig {
        GraphConfig {
            // Tokens straight from the emulator; Graph through the proxy.
            authority_host: Url::parse(&format!("http://{}", self.emu.addr)).unwrap(),
            graph_endpoint: Url::parse(&self.proxy_url).unwrap(),
            http: HttpConfig {
                request_timeout: Duration::from_secs(20),
                run_timeout: Some(Duration::from_secs(120)),
                retry: RetryPolicy {
                    base_delay: Duration::from_millis(5),
                    max_delay: Duration::from_millis(40),
                    ..RetryPolicy::default()
                },
                ..HttpConfig::default()
            },
            write_pacing: pacing,
            ..GraphConfig::new(
                TENANT,
                client_id,
                GraphCredential::ClientSecret(SecretString::from(SECRET)),
            )
        }
    }

    fn client(&self, client_id: &str) -> GraphClient {
        GraphClient::new(self.config(client_id, WritePacing::default())).unwrap()
    }

    /// The writes (anything but GET) the proxy passed on, in order.
    fn writes(&self) -> Vec<Recorded> {
        self.proxy
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method != "GET")
            .cloned()
            .collect()
    }

    fn clear_log(&self) {
        self.proxy.log.lock().unwrap().clear();
    }

    /// The emulator's write counters: (succeeded, throttled, failed).
    fn write_counts(&self) -> (u64, u64, u64) {
        let s = self.emu.state().stats.snapshot(0);
        let w = &s["writes"];
        (
            w["succeeded"].as_u64().unwrap(),
            w["throttled"].as_u64().unwrap(),
            w["failed"].as_u64().unwrap(),
        )
    }

    /// A user as the emulator stores it (every set property), or `None`.
    fn stored(&self, id: &str) -> Option<Value> {
        self.emu
            .tenant()
            .snapshot()
            .find(id)
            .map(|u| u.to_full_json())
    }
}

fn desired(local: &str, imm: &str) -> DesiredUser {
    DesiredUser {
        user_name: format!("{local}@example.com"),
        display_name: Some(format!("New {local}")),
        given_name: Some("Given".into()),
        surname: Some("Family".into()),
        email: None,
        active: true,
        immutable_id: imm.into(),
        upn: None,
    }
}

fn alice_desired() -> DesiredUser {
    DesiredUser {
        user_name: "alice@example.com".into(),
        display_name: Some("Alice Smith".into()),
        given_name: Some("Alice".into()),
        surname: Some("Smith".into()),
        email: Some("ignored@example.com".into()),
        active: true,
        immutable_id: ALICE_IMM.into(),
        upn: None,
    }
}

/// The password a recorded create sent.
fn sent_password(r: &Recorded) -> String {
    let v: Value = serde_json::from_str(&r.body).unwrap();
    v["passwordProfile"]["password"]
        .as_str()
        .expect("a create sends a password")
        .to_string()
}

/// Log lines of the `dirsync` crate written while the guard lives (current-thread runtime).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn create_writes_the_mapped_user_and_its_password_shows_nowhere() {
    // With a single scoped subscriber registered, tracing decides a callsite's interest with
    // the default of whichever thread hits it first (tracing-core's "just one dispatcher"
    // shortcut), so a test on another thread could switch the client's log lines off for
    // good. A second, idle dispatcher makes it ask each thread at each event instead.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let logs = Capture::default();
    let _log_guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_env_filter("dirsync=trace")
            .with_writer(logs.clone())
            .finish(),
    );
    tracing::callsite::rebuild_interest_cache();
    let h = start(None).await;
    let graph = h.client(WRITER);
    let want = DesiredUser {
        upn: Some("carol.jones@example.com".into()),
        user_name: "carol".into(),
        display_name: Some("Carol Jones".into()),
        given_name: Some("Carol".into()),
        surname: Some("Jones".into()),
        email: Some("not-written@example.com".into()),
        active: false,
        immutable_id: "Y2Fyb2wtMDAwMQ==".into(),
    };
    let created = graph.create_user(&want).await.unwrap();

    // The returned user is what was written, with Graph's new object id.
    assert_eq!(created.id.len(), 36, "{created:?}");
    assert_eq!(created.user_name, "carol.jones@example.com");
    assert_eq!(created.upn.as_deref(), Some("carol.jones@example.com"));
    assert_eq!(created.immutable_id.as_deref(), Some("Y2Fyb2wtMDAwMQ=="));
    assert!(!created.active && !created.guest);

    // It reads back through Graph with the mapped values...
    let read = graph.get_user(&created.id).await.unwrap().unwrap();
    assert_eq!(
        read,
        User {
            id: created.id.clone(),
            user_name: "carol.jones@example.com".into(),
            upn: Some("carol.jones@example.com".into()),
            display_name: Some("Carol Jones".into()),
            given_name: Some("Carol".into()),
            surname: Some("Jones".into()),
            email: None,
            proxy_addresses: vec![],
            active: false,
            immutable_id: Some("Y2Fyb2wtMDAwMQ==".into()),
            guest: false,
        }
    );
    // ... and is stored with its alias, as a member, without a forced password change.
    let stored = h.stored(&created.id).unwrap();
    assert_eq!(stored["mailNickname"], "carol.jones", "{stored}");
    assert_eq!(stored["userType"], "Member");
    assert_eq!(
        stored["passwordProfile"]["forceChangePasswordNextSignIn"], false,
        "{stored}"
    );

    // One POST; its password is long, random and uses all four classes.
    let writes = h.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(
        (writes[0].method.as_str(), writes[0].path.as_str()),
        ("POST", "/v1.0/users")
    );
    let body: Value = serde_json::from_str(&writes[0].body).unwrap();
    assert!(
        body.get("mail").is_none(),
        "email is not a sync item: {body}"
    );
    let password = sent_password(&writes[0]);
    assert!(password.len() >= 32, "{}", password.len());
    assert!(password.bytes().any(|b| b.is_ascii_lowercase()));
    assert!(password.bytes().any(|b| b.is_ascii_uppercase()));
    assert!(password.bytes().any(|b| b.is_ascii_digit()));
    assert!(password.bytes().any(|b| b.is_ascii_punctuation()));

    // A second create gets another password, and its failure does not show it.
    let err = graph.create_user(&want).await.unwrap_err();
    let second = sent_password(&h.writes()[1]);
    assert_ne!(second, password);
    let err_text = format!("{err} {err:?}");
    let shown = format!("{created:?} {read:?} {err_text} {graph:?} {}", logs.text());
    assert!(
        logs.text().contains("Graph write answered"),
        "the capture works (the client logs each write at debug): {}",
        logs.text()
    );
    for p in [&password, &second] {
        assert!(!shown.contains(p.as_str()), "the password leaked");
        assert!(!shown.contains(&p[..12]), "part of the password leaked");
    }
    h.emu.stop().await;
}

#[tokio::test]
async fn a_duplicate_upn_is_a_conflict_the_engine_can_re_plan() {
    let h = start(None).await;
    let graph = h.client(WRITER);
    let err = graph
        .create_user(&desired("alice", "bmV3LWFsaWNl"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DirectoryError::Conflict(
            "Graph create user: HTTP 400 Request_BadRequest ObjectConflict on userPrincipalName (another user holds this value)".into()
        )
    );
    // The re-plan finds the holder by its user name.
    let found = graph.find_by_user_name("alice@example.com").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, ALICE);
    // A duplicate Immutable ID is a conflict too.
    let err = graph
        .create_user(&desired("someone.else", ALICE_IMM))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DirectoryError::Conflict(m) if m.contains("onPremisesImmutableId")),
        "{err}"
    );
    assert_eq!(h.write_counts(), (0, 0, 2));
}

#[tokio::test]
async fn an_update_patches_only_what_changed_and_null_clears() {
    let h = start(None).await;
    let graph = h.client(WRITER);
    // The plan's view of the user is not what the PATCH is computed from: the fresh read is.
    let stale = User {
        id: ALICE.into(),
        user_name: "stale@example.com".into(),
        ..User::default()
    };

    // Nothing differs: no write at all.
    graph
        .update_user(ALICE, &stale, &alice_desired(), Some(ALICE_IMM))
        .await
        .unwrap();
    assert!(h.writes().is_empty(), "{:?}", h.writes());
    assert_eq!(h.write_counts(), (0, 0, 0));

    // One property: a PATCH of that property alone.
    let renamed = DesiredUser {
        display_name: Some("Alice Cooper".into()),
        ..alice_desired()
    };
    graph
        .update_user(ALICE, &stale, &renamed, Some(ALICE_IMM))
        .await
        .unwrap();
    let w = h.writes();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].method, "PATCH");
    assert_eq!(w[0].path, format!("/v1.0/users/{ALICE}"));
    assert_eq!(
        serde_json::from_str::<Value>(&w[0].body).unwrap(),
        json!({"displayName": "Alice Cooper"})
    );

    // Absent names are cleared with a real null; a disabled account is written as such.
    h.clear_log();
    let cleared = DesiredUser {
        given_name: None,
        active: false,
        ..renamed.clone()
    };
    graph
        .update_user(ALICE, &stale, &cleared, Some(ALICE_IMM))
        .await
        .unwrap();
    let w = h.writes();
    assert_eq!(
        serde_json::from_str::<Value>(&w[0].body).unwrap(),
        json!({"givenName": null, "accountEnabled": false})
    );
    let stored = h.stored(ALICE).unwrap();
    assert!(
        stored.get("givenName").is_none_or(Value::is_null),
        "{stored}"
    );
    assert_eq!(stored["accountEnabled"], false);
    assert_eq!(stored["surname"], "Smith", "untouched");
    assert_eq!(stored["displayName"], "Alice Cooper");

    // A new UPN takes its alias along.
    h.clear_log();
    let moved = DesiredUser {
        user_name: "alice.cooper@example.com".into(),
        ..cleared
    };
    graph
        .update_user(ALICE, &stale, &moved, Some(ALICE_IMM))
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&h.writes()[0].body).unwrap(),
        json!({"userPrincipalName": "alice.cooper@example.com", "mailNickname": "alice.cooper"})
    );
    let read = graph.get_user(ALICE).await.unwrap().unwrap();
    assert_eq!(read.user_name, "alice.cooper@example.com");
    assert_eq!(read.given_name, None);
    assert_eq!(h.write_counts(), (3, 0, 0));
}

#[tokio::test]
async fn a_wrong_immutable_id_writes_nothing() {
    let h = start(None).await;
    let graph = h.client(WRITER);
    let change = DesiredUser {
        display_name: Some("Taken Over".into()),
        ..alice_desired()
    };
    for expected in [Some("c29tZW9uZS1lbHNl"), None] {
        let err = graph
            .update_user(ALICE, &User::default(), &change, expected)
            .await
            .unwrap_err();
        assert!(
            matches!(err, DirectoryError::PreconditionFailed(_)),
            "{err}"
        );
        let err = graph.delete_user(ALICE, expected).await.unwrap_err();
        assert!(
            matches!(err, DirectoryError::PreconditionFailed(_)),
            "{err}"
        );
    }
    assert!(h.writes().is_empty(), "{:?}", h.writes());
    assert_eq!(h.write_counts(), (0, 0, 0));
    assert_eq!(h.stored(ALICE).unwrap()["displayName"], "Alice Smith");
}

#[tokio::test]
async fn ad_synced_users_and_guests_are_refused_without_a_write() {
    let h = start(None).await;
    let graph = h.client(WRITER);
    let synced = DesiredUser {
        user_name: "ad.user@example.com".into(),
        display_name: Some("Changed".into()),
        immutable_id: SYNCED_IMM.into(),
        ..alice_desired()
    };
    let err = graph
        .update_user(SYNCED, &User::default(), &synced, Some(SYNCED_IMM))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DirectoryError::Forbidden(m) if m.contains("on-premises AD")),
        "{err}"
    );
    let err = graph
        .delete_user(SYNCED, Some(SYNCED_IMM))
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::Forbidden(_)), "{err}");

    // A guest, even one "adopted" (expected: no Immutable ID).
    let guest = DesiredUser {
        user_name: "gail@example.com".into(),
        immutable_id: "Z3Vlc3Q=".into(),
        ..alice_desired()
    };
    let err = graph
        .update_user(GUEST, &User::default(), &guest, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DirectoryError::Forbidden(m) if m.contains("guest")),
        "{err}"
    );
    let err = graph.delete_user(GUEST, None).await.unwrap_err();
    assert!(matches!(err, DirectoryError::Forbidden(_)), "{err}");

    assert!(h.writes().is_empty(), "{:?}", h.writes());
    assert_eq!(h.write_counts(), (0, 0, 0));
    assert!(h.stored(SYNCED).is_some() && h.stored(GUEST).is_some());
}

#[tokio::test]
async fn a_privileged_user_is_a_per_row_refusal_not_refused_credentials() {
    let h = start(None).await;
    let graph = h.client(WRITER);
    let admin = DesiredUser {
        user_name: "admin@example.com".into(),
        display_name: Some("Renamed Admin".into()),
        given_name: None,
        surname: None,
        immutable_id: ADMIN_IMM.into(),
        ..alice_desired()
    };
    let err = graph
        .update_user(ADMIN, &User::default(), &admin, Some(ADMIN_IMM))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DirectoryError::Forbidden(
            "Graph update user: HTTP 403 Authorization_RequestDenied: privileged user (an administrator role the app does not outrank)".into()
        )
    );
    let err = graph.delete_user(ADMIN, Some(ADMIN_IMM)).await.unwrap_err();
    assert!(
        matches!(&err, DirectoryError::Forbidden(m) if m.contains("privileged user")),
        "{err}"
    );
    // Graph refused both; nothing changed; the next user is written as usual.
    assert_eq!(h.write_counts(), (0, 0, 2));
    assert_eq!(h.stored(ADMIN).unwrap()["displayName"], "Administrator");
    let renamed = DesiredUser {
        display_name: Some("Alice S.".into()),
        ..alice_desired()
    };
    graph
        .update_user(ALICE, &User::default(), &renamed, Some(ALICE_IMM))
        .await
        .unwrap();
    assert_eq!(h.write_counts(), (1, 0, 2));
}

/// An app without `User.ReadWrite.All` gets Graph's 403 on every write: that is refused
/// credentials (the run stops writing), told apart from a privileged user by the token's
/// `roles` claim.
#[tokio::test]
async fn an_app_without_user_readwrite_all_has_its_credentials_refused() {
    let h = start(None).await;
    let graph = h.client(READER);
    let err = graph
        .create_user(&desired("dave", "ZGF2ZQ=="))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DirectoryError::InvalidCredentials(
            "Graph create user: HTTP 403 Authorization_RequestDenied: the app lacks the User.ReadWrite.All application permission".into()
        )
    );
    let change = DesiredUser {
        display_name: Some("Changed".into()),
        ..alice_desired()
    };
    let err = graph
        .update_user(ALICE, &User::default(), &change, Some(ALICE_IMM))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DirectoryError::InvalidCredentials(_)),
        "{err}"
    );
    let err = graph.delete_user(ALICE, Some(ALICE_IMM)).await.unwrap_err();
    assert!(
        matches!(err, DirectoryError::InvalidCredentials(_)),
        "{err}"
    );
    assert_eq!(h.write_counts(), (0, 0, 3));
}

#[tokio::test]
async fn a_soft_deleted_user_is_listed_and_restored_as_the_same_object() {
    let h = start(None).await;
    let graph = h.client(WRITER);
    let bob = graph
        .create_user(&desired("bob", "Ym9iLTE="))
        .await
        .unwrap();
    assert!(graph.deleted_users().await.unwrap().is_empty());

    graph.delete_user(&bob.id, Some("Ym9iLTE=")).await.unwrap();
    assert_eq!(graph.get_user(&bob.id).await.unwrap(), None);
    let w = h.writes();
    assert_eq!(
        (w[1].method.as_str(), w[1].path.clone()),
        ("DELETE", format!("/v1.0/users/{}", bob.id))
    );
    // Deleting a user already gone is done, without a write.
    graph.delete_user(&bob.id, Some("Ym9iLTE=")).await.unwrap();
    assert_eq!(h.writes().len(), 2);

    // Deleted items list it with its own UPN (Graph shows it prefixed with the id) and its
    // Immutable ID, which is what an Add is matched against.
    let deleted = graph.deleted_users().await.unwrap();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0].id, bob.id);
    assert_eq!(deleted[0].user_name, "bob@example.com");
    assert_eq!(deleted[0].immutable_id.as_deref(), Some("Ym9iLTE="));
    assert_eq!(deleted[0].display_name.as_deref(), Some("New bob"));

    let restored = graph.restore_user(&bob.id).await.unwrap();
    assert_eq!(restored.id, bob.id, "the same object");
    assert_eq!(restored.user_name, "bob@example.com");
    assert_eq!(restored.immutable_id.as_deref(), Some("Ym9iLTE="));
    assert!(graph.deleted_users().await.unwrap().is_empty());
    assert_eq!(graph.get_user(&bob.id).await.unwrap(), Some(restored));
    let w = h.writes();
    assert_eq!(
        (w[2].method.as_str(), w[2].path.clone()),
        (
            "POST",
            format!("/v1.0/directory/deletedItems/{}/restore", bob.id)
        )
    );

    // A restore whose UPN a new user took meanwhile is a conflict; an unknown id is not found.
    graph.delete_user(&bob.id, Some("Ym9iLTE=")).await.unwrap();
    graph
        .create_user(&desired("bob", "Ym9iLTI="))
        .await
        .unwrap();
    let err = graph.restore_user(&bob.id).await.unwrap_err();
    assert!(
        matches!(&err, DirectoryError::Conflict(m) if m.contains("userPrincipalName")),
        "{err}"
    );
    let err = graph
        .restore_user("00000000-0000-4000-8000-0000000000ff")
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn values_graph_would_refuse_are_refused_before_sending() {
    let h = start(None).await;
    let graph = h.client(WRITER);
    let err = graph
        .create_user(&desired("erin", "ZXJpbg_-"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DirectoryError::Rejected(m) if m.contains("'_' or '$'") && m.contains("standard base64")),
        "{err}"
    );
    let err = graph
        .update_user(
            ALICE,
            &User::default(),
            &DesiredUser {
                immutable_id: "a$b".into(),
                ..alice_desired()
            },
            Some(ALICE_IMM),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::Rejected(_)), "{err}");
    let err = graph
        .create_user(&DesiredUser {
            user_name: "frank jones@example.com".into(),
            ..desired("x", "ZnJhbms=")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DirectoryError::Rejected(m) if m.contains("userPrincipalName")),
        "{err}"
    );
    assert!(h.writes().is_empty(), "{:?}", h.writes());
    assert_eq!(h.write_counts(), (0, 0, 0));

    // What only Graph can know comes back as Graph's code with a hint.
    let err = graph
        .create_user(&DesiredUser {
            user_name: "gina@unverified.example".into(),
            ..desired("x", "Z2luYQ==")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DirectoryError::Rejected(m) if m.contains("HTTP 400 Request_BadRequest") && m.contains("verified domain")),
        "{err}"
    );
}

#[tokio::test]
async fn a_federated_users_immutable_id_is_written_on_create_and_never_changed() {
    let h = start(None).await;
    let graph = h.client(WRITER);
    let want = DesiredUser {
        user_name: format!("hana@{FED_DOMAIN}"),
        ..desired("x", "aGFuYS0x")
    };
    let hana = graph.create_user(&want).await.unwrap();
    assert_eq!(
        h.stored(&hana.id).unwrap()["onPremisesImmutableId"],
        "aGFuYS0x"
    );
    let err = graph
        .update_user(
            &hana.id,
            &hana,
            &DesiredUser {
                immutable_id: "aGFuYS0y".into(),
                ..want
            },
            Some("aGFuYS0x"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DirectoryError::Rejected(
            "Graph update user: HTTP 400 Request_BadRequest (InvalidValue on onPremisesImmutableId)"
                .into()
        )
    );
}

/// The pacer keeps to the write limit it is given: with the emulator's limit at 5 writes per
/// 2 s and the client paced to the same limit, 20 creates sent at once all land, the emulator
/// never answers 429, and the pacer did the waiting.
#[tokio::test]
async fn paced_creates_stay_under_the_write_limit() {
    let h = start(Some((5, 2))).await;
    let graph = GraphClient::new(h.config(
        WRITER,
        WritePacing {
            limit: 5,
            window: Duration::from_secs(2),
        },
    ))
    .unwrap();
    graph.authenticate().await.unwrap();
    let t0 = Instant::now();
    let wanted: Vec<DesiredUser> = (0..20)
        .map(|i| desired(&format!("paced{i}"), &format!("cGFjZWQt{i}")))
        .collect();
    let results = futures::future::join_all(wanted.iter().map(|d| graph.create_user(d))).await;
    let took = t0.elapsed();
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(h.write_counts(), (20, 0, 0), "no 429 at all");
    // 4.5 at once, then 2.25 per second (90 % of 5 per 2 s): the 20th is due after ~6.9 s.
    assert!(took >= Duration::from_secs(6), "{took:?}");
}

/// Without client-side pacing, Graph's 429s are waited out as its `Retry-After` says (the
/// tests' own backoff is 5–40 ms: six attempts of that would give up within a quarter second).
#[tokio::test]
async fn unpaced_creates_wait_out_graphs_429s() {
    let h = start(Some((5, 1))).await;
    let graph = GraphClient::new(h.config(WRITER, WritePacing::OFF)).unwrap();
    let t0 = Instant::now();
    for i in 0..20 {
        graph
            .create_user(&desired(&format!("burst{i}"), &format!("YnVyc3Qt{i}")))
            .await
            .unwrap();
    }
    let took = t0.elapsed();
    let (succeeded, throttled, failed) = h.write_counts();
    assert_eq!((succeeded, failed), (20, 0));
    assert!(throttled >= 3, "the emulator throttled: {throttled}");
    let stats = h.emu.state().stats.snapshot(0);
    assert_eq!(stats["byStatus"]["429"].as_u64(), Some(throttled));
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert_eq!(
        (0..20)
            .filter(|i| h
                .emu
                .tenant()
                .snapshot()
                .find(&format!("burst{i}@example.com"))
                .is_some())
            .count(),
        20
    );
}

/// Users added straight into the emulator's tenant (no Graph write): `<prefix><i>@example.com`
/// with Immutable ID `<prefix>-<i>` in base64; their ids.
fn seed_users(h: &Harness, prefix: &str, n: usize) -> Vec<(String, String)> {
    use base64::Engine as _;
    (0..n)
        .map(|i| {
            let imm = base64::engine::general_purpose::STANDARD.encode(format!("{prefix}-{i}"));
            let obj = json!({
                "userPrincipalName": format!("{prefix}{i}@example.com"),
                "displayName": format!("{prefix} {i}"),
                "accountEnabled": true,
                "onPremisesImmutableId": imm,
            });
            let u = h.emu.tenant().add_user(obj.as_object().unwrap()).unwrap();
            (u.id.to_string(), imm)
        })
        .collect()
}

/// The `requests` of every `$batch` envelope the proxy passed on.
fn batch_requests(h: &Harness) -> Vec<Vec<Value>> {
    h.writes()
        .iter()
        .filter(|r| r.path == "/v1.0/$batch")
        .map(|r| {
            let v: Value = serde_json::from_str(&r.body).unwrap();
            v["requests"].as_array().unwrap().clone()
        })
        .collect()
}

#[tokio::test]
async fn batched_deletes_and_updates_give_one_result_per_user() {
    let h = start(None).await;
    let graph = h.client(WRITER);
    let seeded = seed_users(&h, "batch", 3);
    let (u0, u1, u2) = (&seeded[0], &seeded[1], &seeded[2]);

    let results = graph
        .delete_users(&[
            (&u0.0, Some(&u0.1)),
            (&u1.0, Some("d3Jvbmc=")),
            (ADMIN, Some(ADMIN_IMM)),
            (SYNCED, Some(SYNCED_IMM)),
            ("00000000-0000-4000-8000-0000000000ff", None),
            (&u2.0, Some(&u2.1)),
        ])
        .await;
    assert_eq!(results.len(), 6);
    assert_eq!(results[0], Ok(()));
    assert!(
        matches!(results[1], Err(DirectoryError::PreconditionFailed(_))),
        "{results:?}"
    );
    assert!(
        matches!(&results[2], Err(DirectoryError::Forbidden(m)) if m.contains("privileged user")),
        "{results:?}"
    );
    assert!(
        matches!(&results[3], Err(DirectoryError::Forbidden(m)) if m.contains("on-premises AD")),
        "{results:?}"
    );
    assert_eq!(results[4], Ok(()), "a user already gone is done");
    assert_eq!(results[5], Ok(()));

    // Two round trips: the guarded reads, then the three deletes that passed the guards.
    let batches = batch_requests(&h);
    assert_eq!(batches.len(), 2, "{batches:?}");
    assert!(batches[0].iter().all(|r| r["method"] == "GET"));
    assert_eq!(batches[0].len(), 6);
    let deletes: Vec<&str> = batches[1]
        .iter()
        .map(|r| {
            assert_eq!(r["method"], "DELETE");
            r["url"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        deletes,
        [
            format!("/users/{}", u0.0),
            format!("/users/{ADMIN}"),
            format!("/users/{}", u2.0)
        ]
    );
    assert_eq!(h.write_counts(), (2, 0, 1));
    assert!(h.stored(&u0.0).is_none() && h.stored(&u2.0).is_none());
    assert!(h.stored(&u1.0).is_some() && h.stored(ADMIN).is_some());
    let deleted: Vec<String> = graph
        .deleted_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(deleted.len(), 2);

    // Updates: only what differs is sent; a user with nothing to change is not sent at all.
    h.clear_log();
    let renamed = DesiredUser {
        user_name: "batch1@example.com".into(),
        display_name: Some("Renamed In Batch".into()),
        given_name: None,
        surname: None,
        email: None,
        active: true,
        immutable_id: u1.1.clone(),
        upn: None,
    };
    // `current` is the plan's view, which the Graph client does not need (it reads afresh).
    let plan_view = User::default();
    let alice = alice_desired();
    let results = graph
        .update_users(&[
            UserUpdate {
                id: &u1.0,
                current: &plan_view,
                desired: &renamed,
                expected_immutable_id: Some(&u1.1),
            },
            UserUpdate {
                id: ALICE,
                current: &plan_view,
                desired: &alice,
                expected_immutable_id: Some(ALICE_IMM),
            },
            UserUpdate {
                id: &u0.0,
                current: &plan_view,
                desired: &renamed,
                expected_immutable_id: Some(&u0.1),
            },
        ])
        .await;
    assert_eq!(results[0], Ok(()));
    assert_eq!(results[1], Ok(()));
    assert!(
        matches!(results[2], Err(DirectoryError::NotFound(_))),
        "{results:?}"
    );
    let batches = batch_requests(&h);
    assert_eq!(batches.len(), 2, "{batches:?}");
    assert_eq!(batches[1].len(), 1);
    assert_eq!(batches[1][0]["method"], "PATCH");
    assert_eq!(batches[1][0]["url"], format!("/users/{}", u1.0));
    assert_eq!(
        batches[1][0]["body"],
        json!({"displayName": "Renamed In Batch"})
    );
    assert_eq!(batches[1][0]["headers"]["Content-Type"], "application/json");
    assert_eq!(h.stored(&u1.0).unwrap()["displayName"], "Renamed In Batch");
}

/// Each item of a batch is metered on its own: items Graph answers 429 are sent again after
/// the `Retry-After` in their own headers, until every one has landed.
#[tokio::test]
async fn batch_items_graph_throttles_are_sent_again() {
    let h = start(Some((3, 1))).await;
    let graph = GraphClient::new(h.config(WRITER, WritePacing::OFF)).unwrap();
    let seeded = seed_users(&h, "throttled", 8);
    let t0 = Instant::now();
    let results = graph
        .delete_users(
            &seeded
                .iter()
                .map(|(id, imm)| (id.as_str(), Some(imm.as_str())))
                .collect::<Vec<_>>(),
        )
        .await;
    let took = t0.elapsed();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let (succeeded, throttled, failed) = h.write_counts();
    assert_eq!((succeeded, failed), (8, 0));
    assert!(throttled >= 5, "the emulator throttled items: {throttled}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    let batches = batch_requests(&h);
    // The reads, then the deletes: all eight, then only the throttled ones, until none is left.
    assert_eq!(batches[1].len(), 8);
    assert!(batches.len() >= 3, "{}", batches.len());
    assert_eq!(
        batches[1..].iter().map(Vec::len).sum::<usize>() as u64,
        succeeded + throttled
    );
    for (id, _) in &seeded {
        assert!(h.stored(id).is_none());
    }
}
