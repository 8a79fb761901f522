//! The SCIM client as a source (docs/behaviour.md §6, issue 14): the listing is read whole, by cursor
//! (RFC 9865) when `/ServiceProviderConfig` offers it, else by index, and is either every user
//! or a read error. Against the real `scim2-server` (PyPI, pinned in tools/requirements.txt;
//! its 0.8.3 pages by cursor when its config says so) and against small hostile servers on
//! 127.0.0.1 whose every page is given by the test. Each test stops the servers it starts.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dirsync::clients::outbound::{HttpConfig, RetryPolicy};
use dirsync::clients::scim::{Paging, ScimClient, ScimConfig};
use dirsync::directory::{DesiredUser, Directory, DirectoryError, ListScope, ListingLimits, User};
use dirsync_testenv::Scim2Server;
use secrecy::SecretString;
use serde_json::{Value, json};
use url::Url;

const TOKEN: &str = "scim-source-token-5d21";

fn http() -> HttpConfig {
    dirsync::clients::outbound::init_crypto();
    HttpConfig {
        retry: RetryPolicy {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            ..RetryPolicy::default()
        },
        run_timeout: Some(Duration::from_secs(60)),
        ..HttpConfig::default()
    }
}

fn client(base_url: &str, page_size: usize) -> ScimClient {
    ScimClient::new(ScimConfig {
        page_size,
        http: http(),
        ..ScimConfig::new(Url::parse(base_url).unwrap(), SecretString::from(TOKEN))
    })
    .unwrap()
}

fn ids(users: &[User]) -> BTreeSet<String> {
    users.iter().map(|u| u.id.clone()).collect()
}

// --- the real scim2-server ----------------------------------------------------------------------

/// A ServiceProviderConfig for `scim2-server --service-provider-config`.
fn spc_file(dir: &tempfile::TempDir, pagination: Value, max_results: u64) -> String {
    let path = dir.path().join("spc.json");
    std::fs::write(
        &path,
        json!({
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": max_results},
            "changePassword": {"supported": false}, "sort": {"supported": true},
            "etag": {"supported": true}, "pagination": pagination,
            "authenticationSchemes": []
        })
        .to_string(),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// 23 source users: local parts (the usual source under UPN mode Disabled), full names of the
/// domain and of another domain. Created through the client, in a few at a time.
async fn fill(scim: &ScimClient) -> Vec<User> {
    let mut made = Vec::new();
    for i in 0..23 {
        let user_name = match i % 3 {
            0 => format!("user{i}"),
            1 => format!("user{i}@example.com"),
            _ => format!("user{i}@other.example"),
        };
        let d = DesiredUser {
            user_name,
            display_name: Some(format!("User {i}")),
            active: true,
            immutable_id: format!("imm-{i}"),
            ..Default::default()
        };
        made.push(scim.create_user(&d).await.unwrap());
    }
    made
}

/// The list requests in the server's log (`GET /v2/Users?…`), once it holds at least `expected`
/// of them. The server logs a request after answering it, from the thread that served it, so a
/// line can land after the client has its answer and after the next request's line: the order
/// of the lines is not the order of the requests. Read once more a little later, so that a
/// request beyond those expected is seen too.
fn list_requests(server: &Scim2Server, expected: usize) -> Vec<String> {
    let read = || -> Vec<String> {
        std::fs::read_to_string(server.log())
            .unwrap()
            .lines()
            .filter_map(|l| {
                let at = l.find("\"GET /v2/Users?")? + "\"GET /v2/Users?".len();
                Some(l[at..].split(' ').next()?.to_string())
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while read().len() < expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    read()
}

#[tokio::test]
async fn scim2_server_offering_cursors_is_read_whole_by_cursor() {
    let dir = tempfile::tempdir().unwrap();
    // Index too, and index the default: the client must still choose the cursor.
    let spc = spc_file(
        &dir,
        json!({"cursor": true, "index": true, "defaultPaginationMethod": "index", "maxPageSize": 100}),
        // filter.maxResults lowers the client's page size of 1000 to 5.
        5,
    );
    let server = Scim2Server::start_with_args(TOKEN, &["--service-provider-config", &spc]).unwrap();
    let scim = client(&server.base_url(), 1000);
    assert_eq!(scim.paging().await.unwrap(), Paging::Cursor);
    let made = fill(&scim).await;

    let all = scim.list_users(&ListScope::All).await.unwrap();
    assert_eq!(all.len(), 23);
    assert_eq!(ids(&all), ids(&made));
    let requests = list_requests(&server, 5);
    // 23 users by 5: five pages, the first with an empty cursor as RFC 9865 spells it, the
    // others with the server's cursors.
    assert_eq!(requests.len(), 5, "{requests:?}");
    assert_eq!(
        requests.iter().filter(|r| *r == "cursor&count=5").count(),
        1,
        "{requests:?}"
    );
    for r in requests.iter().filter(|r| *r != "cursor&count=5") {
        assert!(
            r.starts_with("cursor=") && r.ends_with("&count=5") && r.len() > 20,
            "{r}"
        );
    }

    // The same pager serves the domain scope and a userName lookup (with its filter).
    let scoped = scim
        .list_users(&ListScope::Domain("example.com".into()))
        .await
        .unwrap();
    assert_eq!(
        scoped
            .iter()
            .map(|u| u.user_name.clone())
            .collect::<BTreeSet<_>>(),
        (0..23)
            .filter(|i| i % 3 == 1)
            .map(|i| format!("user{i}@example.com"))
            .collect::<BTreeSet<_>>()
    );
    let found = scim.find_by_user_name("USER3").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].user_name, "user3");
    // Five pages for the domain scope, then the lookup, with its filter after the paging.
    let requests = list_requests(&server, 11);
    assert_eq!(requests.len(), 11, "{requests:?}");
    assert!(
        requests.contains(&"cursor&count=5&filter=userName%20eq%20%22USER3%22".to_string()),
        "{requests:?}"
    );
    drop(server);
}

#[tokio::test]
async fn scim2_server_without_cursors_is_read_whole_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let spc = spc_file(
        &dir,
        json!({"cursor": false, "index": true, "maxPageSize": 100}),
        1000,
    );
    let advertised_index =
        Scim2Server::start_with_args(TOKEN, &["--service-provider-config", &spc]).unwrap();
    // The server's own default config has no `pagination` at all.
    let default_config = Scim2Server::start(TOKEN);
    for server in [advertised_index, default_config] {
        let scim = client(&server.base_url(), 7);
        assert_eq!(scim.paging().await.unwrap(), Paging::Index);
        let made = fill(&scim).await;
        let all = scim.list_users(&ListScope::All).await.unwrap();
        assert_eq!(all.len(), 23);
        assert_eq!(ids(&all), ids(&made));
        let mut requests = list_requests(&server, 4);
        // Pages after the first are read concurrently: their order in the log varies.
        requests.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
        assert_eq!(
            requests,
            [
                "startIndex=1&count=7",
                "startIndex=8&count=7",
                "startIndex=15&count=7",
                "startIndex=22&count=7"
            ]
        );
        drop(server);
    }
}

// --- hostile servers ---------------------------------------------------------------------------

/// A SCIM server on 127.0.0.1 that answers `/ServiceProviderConfig` with `spc` (404 when
/// `None`) and each list request with the page the test keyed by its cursor (`cursor&…` and
/// `cursor=&…` are the key "") or, for index requests, by `@startIndex`. A page that is a SCIM
/// error document is sent with its status; an unknown key is a 400 `invalidCursor`.
struct Hostile {
    base: String,
    queries: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Hostile {
    async fn start(spc: Option<Value>, pages: Vec<(&str, Value)>) -> Hostile {
        let pages: Arc<HashMap<String, Value>> =
            Arc::new(pages.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        let queries = Arc::new(Mutex::new(Vec::new()));
        let q = queries.clone();
        let router = Router::new()
            .route(
                "/v2/ServiceProviderConfig",
                get(move || {
                    let spc = spc.clone();
                    async move {
                        match spc {
                            Some(v) => axum::Json(v).into_response(),
                            None => StatusCode::NOT_FOUND.into_response(),
                        }
                    }
                }),
            )
            .route(
                "/v2/Users",
                get(
                    move |uri: Uri, Query(params): Query<HashMap<String, String>>| {
                        q.lock()
                            .unwrap()
                            .push(uri.query().unwrap_or_default().to_string());
                        let key = match (params.get("cursor"), params.get("startIndex")) {
                            (Some(c), None) => c.clone(),
                            (None, Some(s)) => format!("@{s}"),
                            _ => "?".into(),
                        };
                        let response = page_response(pages.get(&key));
                        async move { response }
                    },
                ),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Hostile {
            base: format!("http://{addr}/v2"),
            queries,
            task,
        }
    }

    fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }

    /// Stops the server and waits until it has.
    async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Hostile {
    /// A test that fails midway still stops its server.
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn page_response(page: Option<&Value>) -> Response {
    match page {
        Some(v) if v.get("scimType").is_some() => {
            let status = v["status"].as_str().unwrap().parse::<u16>().unwrap();
            (StatusCode::from_u16(status).unwrap(), axum::Json(v.clone())).into_response()
        }
        Some(v) => axum::Json(v.clone()).into_response(),
        None => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"status": "400", "scimType": "invalidCursor"})),
        )
            .into_response(),
    }
}

fn cursor_spc() -> Option<Value> {
    Some(json!({
        "patch": {"supported": true}, "filter": {"supported": true, "maxResults": 3},
        "pagination": {"cursor": true, "index": true}
    }))
}

fn index_spc() -> Option<Value> {
    Some(json!({
        "patch": {"supported": true}, "filter": {"supported": true, "maxResults": 3},
        "pagination": {"cursor": false, "index": true}
    }))
}

fn user(i: usize) -> Value {
    json!({"id": format!("u{i}"), "userName": format!("user{i}"), "displayName": format!("User {i}")})
}

fn users(from: usize, to: usize) -> Vec<Value> {
    (from..=to).map(user).collect()
}

/// A list page: `total` (omitted when `None`), its users, and `next` as `nextCursor`.
fn page(total: Option<u64>, resources: Vec<Value>, next: Option<&str>) -> Value {
    let mut p = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "Resources": resources,
    });
    if let Some(t) = total {
        p["totalResults"] = t.into();
    }
    if let Some(n) = next {
        p["nextCursor"] = n.into();
    }
    p
}

/// An index page that says where it starts.
fn index_page(total: u64, start: usize, resources: Vec<Value>) -> Value {
    let mut p = page(Some(total), resources, None);
    p["startIndex"] = start.into();
    p
}

/// The pages of a hostile server, keyed as [`Hostile::start`] reads them.
type Pages = Vec<(&'static str, Value)>;

async fn list(server: &Hostile) -> Result<Vec<User>, DirectoryError> {
    client(&server.base, 1000).list_users(&ListScope::All).await
}

fn protocol(msg: &str) -> Result<BTreeSet<String>, DirectoryError> {
    Err(DirectoryError::Protocol(msg.into()))
}

/// The ids of a listing, or its error.
async fn list_ids(server: &Hostile) -> Result<BTreeSet<String>, DirectoryError> {
    list(server).await.map(|u| ids(&u))
}

fn id_set(from: usize, to: usize) -> BTreeSet<String> {
    (from..=to).map(|i| format!("u{i}")).collect()
}

/// Seven users served both ways: by cursor (`c1`, then `a+b/c=`, a cursor that needs
/// encoding) and by index.
fn both_ways() -> Pages {
    vec![
        ("", page(Some(7), users(1, 3), Some("c1"))),
        ("c1", page(Some(7), users(4, 6), Some("a+b/c="))),
        ("a+b/c=", page(Some(7), users(7, 7), None)),
        ("@1", index_page(7, 1, users(1, 3))),
        ("@4", index_page(7, 4, users(4, 6))),
        ("@7", index_page(7, 7, users(7, 7))),
    ]
}

#[tokio::test]
async fn a_server_that_advertises_cursors_is_read_by_cursor() {
    let server = Hostile::start(cursor_spc(), both_ways()).await;
    assert_eq!(list_ids(&server).await, Ok(id_set(1, 7)));
    // filter.maxResults (3) is the page size; every parameter but the cursor stays the same.
    assert_eq!(
        server.queries(),
        [
            "cursor&count=3",
            "cursor=c1&count=3",
            "cursor=a%2Bb%2Fc%3D&count=3"
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_server_that_does_not_advertise_cursors_is_read_by_index() {
    // `cursor: false`, no `pagination` at all, and no ServiceProviderConfig (404).
    let no_pagination =
        Some(json!({"patch": {"supported": true}, "filter": {"supported": true, "maxResults": 3}}));
    for spc in [index_spc(), no_pagination, None] {
        let server = Hostile::start(spc.clone(), both_ways()).await;
        assert_eq!(list_ids(&server).await, Ok(id_set(1, 7)), "{spc:?}");
        // filter.maxResults (3) is the page size; without a config the client's own (1000),
        // and this server's pages of three still add up, each next page starting where the
        // last ended.
        let count = if spc.is_some() { 3 } else { 1000 };
        assert_eq!(
            server.queries(),
            [1, 4, 7].map(|s| format!("startIndex={s}&count={count}"))
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn a_cursor_that_repeats_is_a_protocol_error() {
    let cases: Vec<(Pages, usize, &str)> = vec![
        // A -> B -> A: a loop, caught where the third page names A again.
        (
            vec![
                ("", page(Some(10), users(1, 2), Some("A"))),
                ("A", page(Some(10), users(3, 4), Some("B"))),
                ("B", page(Some(10), users(5, 6), Some("A"))),
            ],
            3,
            "SCIM list users: nextCursor of page 3 repeats an earlier cursor",
        ),
        // A page that names itself.
        (
            vec![
                ("", page(Some(10), users(1, 2), Some("A"))),
                ("A", page(Some(10), users(3, 4), Some("A"))),
            ],
            2,
            "SCIM list users: nextCursor of page 2 repeats an earlier cursor",
        ),
        // An empty nextCursor would ask for the first page again.
        (
            vec![("", page(Some(10), users(1, 2), Some("")))],
            1,
            "SCIM list users: nextCursor of page 1 repeats an earlier cursor",
        ),
    ];
    for (pages, requests, want) in cases {
        let server = Hostile::start(cursor_spc(), pages).await;
        assert_eq!(list_ids(&server).await, protocol(want));
        assert_eq!(server.queries().len(), requests, "{want}");
        server.stop().await;
    }
}

#[tokio::test]
async fn total_results_changing_mid_read_is_a_protocol_error() {
    let want = "SCIM list users: totalResults changed from 4 to 5 while paging";
    let by_cursor = Hostile::start(
        cursor_spc(),
        vec![
            ("", page(Some(4), users(1, 2), Some("A"))),
            ("A", page(Some(5), users(3, 4), None)),
        ],
    )
    .await;
    assert_eq!(list_ids(&by_cursor).await, protocol(want));
    by_cursor.stop().await;
    let by_index = Hostile::start(
        index_spc(),
        vec![
            ("@1", index_page(4, 1, users(1, 2))),
            ("@3", index_page(5, 3, users(3, 4))),
        ],
    )
    .await;
    assert_eq!(list_ids(&by_index).await, protocol(want));
    by_index.stop().await;
}

#[tokio::test]
async fn a_listing_that_does_not_add_up_is_a_protocol_error_not_fewer_users() {
    let cursor_cases: Vec<(Pages, &str)> = vec![
        // The chain ends two users short.
        (
            vec![
                ("", page(Some(5), users(1, 2), Some("A"))),
                ("A", page(Some(5), users(3, 3), None)),
            ],
            "SCIM list users: listing ended after 3 of 5 users",
        ),
        // More users than announced.
        (
            vec![
                ("", page(Some(2), users(1, 2), Some("A"))),
                ("A", page(Some(2), users(3, 3), None)),
            ],
            "SCIM list users: got 3 users, more than totalResults 2",
        ),
        // RFC 9865 lets a cursor page omit totalResults; then nothing can check the listing.
        (
            vec![("", page(None, users(1, 2), None))],
            "SCIM list users: cursor page without totalResults",
        ),
        // An empty page that still names a next page: the chain makes no progress.
        (
            vec![
                ("", page(Some(5), users(1, 2), Some("A"))),
                ("A", page(Some(5), vec![], Some("B"))),
                ("B", page(Some(5), users(3, 5), None)),
            ],
            "SCIM list users: cursor page 2 brought no new user but names a next page",
        ),
    ];
    for (pages, want) in cursor_cases {
        let server = Hostile::start(cursor_spc(), pages).await;
        assert_eq!(list_ids(&server).await, protocol(want));
        server.stop().await;
    }
    let by_index = Hostile::start(
        index_spc(),
        vec![
            ("@1", index_page(5, 1, users(1, 3))),
            ("@4", index_page(5, 4, vec![])),
        ],
    )
    .await;
    assert_eq!(
        list_ids(&by_index).await,
        protocol("SCIM list users: listing ended after 3 of 5 users")
    );
    by_index.stop().await;
}

#[tokio::test]
async fn duplicate_ids_across_pages() {
    // By cursor: a user served again on a later page (as a server paging by last
    // modification does with a user changed mid-read) is listed once, with the later copy,
    // and the listing still adds up to totalResults distinct users.
    let mut changed = user(2);
    changed["displayName"] = "User 2, changed".into();
    let server = Hostile::start(
        cursor_spc(),
        vec![
            ("", page(Some(3), users(1, 2), Some("A"))),
            ("A", page(Some(3), vec![changed, user(3)], None)),
        ],
    )
    .await;
    let mut got = list(&server).await.unwrap();
    got.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        got.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        ["u1", "u2", "u3"]
    );
    assert_eq!(got[1].display_name.as_deref(), Some("User 2, changed"));
    server.stop().await;

    // By cursor, a repeat that leaves the listing short of totalResults: a read error that
    // says so, never two users instead of three.
    let server = Hostile::start(
        cursor_spc(),
        vec![
            ("", page(Some(3), users(1, 2), Some("A"))),
            ("A", page(Some(3), users(2, 2), None)),
        ],
    )
    .await;
    assert_eq!(
        list_ids(&server).await,
        protocol(
            "SCIM list users: listing ended after 2 of 3 users; 1 record repeated an id already listed"
        )
    );
    server.stop().await;

    // By cursor, a page of nothing but repeats under a fresh cursor: stopped there.
    let server = Hostile::start(
        cursor_spc(),
        vec![
            ("", page(Some(4), users(1, 2), Some("A"))),
            ("A", page(Some(4), users(1, 2), Some("B"))),
            ("B", page(Some(4), users(3, 4), None)),
        ],
    )
    .await;
    assert_eq!(
        list_ids(&server).await,
        protocol("SCIM list users: cursor page 2 brought no new user but names a next page")
    );
    assert_eq!(server.queries().len(), 2);
    server.stop().await;

    // By index, positions 1..3 holding u2 twice hold at most two of the three users
    // (RFC 7644 §3.4.2.4: results shift while paging): an error at the repeat.
    let server = Hostile::start(
        index_spc(),
        vec![
            ("@1", index_page(3, 1, users(1, 2))),
            ("@3", index_page(3, 3, users(2, 3))),
        ],
    )
    .await;
    assert_eq!(
        list_ids(&server).await,
        protocol(
            "SCIM list users: user record 3 (page at startIndex 3) repeats an id already listed; \
             the paging is broken"
        )
    );
    server.stop().await;
}

#[tokio::test]
async fn cursor_errors_and_ceilings_are_short_and_classified() {
    // An expired cursor: the server's scimType, nothing of the cursor or the detail.
    let secret_cursor = "CURSOR-SECRET-91aa";
    let server = Hostile::start(
        cursor_spc(),
        vec![
            ("", page(Some(4), users(1, 2), Some(secret_cursor))),
            (
                secret_cursor,
                json!({"status": "400", "scimType": "expiredCursor", "detail": secret_cursor}),
            ),
        ],
    )
    .await;
    let err = list(&server).await.unwrap_err();
    assert_eq!(
        err,
        DirectoryError::Rejected("SCIM list users: HTTP 400 expiredCursor".into())
    );
    server.stop().await;

    // A listing that claims more users than the ceiling is refused at its first page.
    let server = Hostile::start(
        cursor_spc(),
        vec![("", page(Some(10), users(1, 3), Some("A")))],
    )
    .await;
    let mut cfg = ScimConfig::new(Url::parse(&server.base).unwrap(), SecretString::from(TOKEN));
    cfg.http = http();
    cfg.limits = ListingLimits {
        max_users: 5,
        ..ListingLimits::default()
    };
    let err = ScimClient::new(cfg)
        .unwrap()
        .list_users(&ListScope::All)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DirectoryError::Protocol(
            "SCIM list users: the server reports 10 users, more than the ceiling of 5 (raise it \
             with --max-listing-users if the directory is really this large)"
                .into()
        )
    );
    assert_eq!(server.queries().len(), 1);
    server.stop().await;
}
