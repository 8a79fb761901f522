//! Broken and hostile servers through the whole command (`dirsync plan` / `apply`): a read that
//! does not add up is a read error and never becomes deletions; every read is bounded in time
//! and memory; what a run cannot record it does not write; user data reaches the terminal as
//! text. The Graph side is the project's emulator with its `dropNextLink` / `wrongCount` faults;
//! the SCIM side is the real scim2-server or, for the hostile cases, a server of this file on
//! 127.0.0.1 that pages forever, repeats itself, stays silent or dribbles.

mod cli_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cli_common::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Graph: a listing that ends early or whose count lies.

#[test]
fn a_graph_listing_that_ends_a_page_early_makes_apply_fail_with_zero_writes() {
    // 1,100 users: two Graph pages ($top=999).
    let env = Env::new(members(1, 1100, "example.com"));
    env.apply().expect(0);
    assert_eq!(env.scim_users().len(), 1100);
    let state_before = std::fs::read(env.state_path()).unwrap();
    let writes_before = env.scim_writes().total();

    // Page 1 comes back without its nextLink: 101 users (9 %, under the 65 % guard) look gone.
    // (`--full`: an apply after a full one is otherwise incremental and lists nothing.)
    env.emu
        .add_fault(&json!({"kind": "dropNextLink", "endpoint": "users", "count": 1}));
    let state = env.state_path().display().to_string();
    let run = env
        .dirsync(&env.args("apply", &["--state", &state, "--full"]))
        .expect(1);
    let last = run.stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: SourceUnavailable"),
        "{}",
        run.stderr
    );
    assert!(
        last.contains("listing was incomplete")
            && last.contains("ended after 999 users")
            && last.contains("said 1100"),
        "{last}"
    );
    assert!(last.contains("nothing was written"), "{last}");
    assert_eq!(
        env.scim_writes().total(),
        writes_before,
        "a destination write after a partial read"
    );
    assert_eq!(
        std::fs::read(env.state_path()).unwrap(),
        state_before,
        "the state file changed"
    );
    assert_eq!(env.scim_users().len(), 1100);
    assert!(
        env.emu.faults().as_array().unwrap().is_empty(),
        "the fault did not fire"
    );

    // A count that claims 500 more users than are listed: the same read error.
    env.emu.add_fault(
        &json!({"kind": "wrongCount", "endpoint": "users", "count": 1, "countOffset": 500}),
    );
    let run = env.plan().expect(1);
    assert!(
        run.stderr.contains("listing was incomplete"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "a partial plan was printed");

    // A count lower than the users listed (users created during the read) is no loss: the
    // run goes ahead and, nothing having changed, writes nothing.
    env.emu.add_fault(
        &json!({"kind": "wrongCount", "endpoint": "users", "count": 1, "countOffset": -200}),
    );
    let run = env.apply().expect(0);
    assert!(
        run.stderr.contains("0 created, 0 updated, 0 deleted"),
        "{}",
        run.stderr
    );
    assert_eq!(env.scim_writes().total(), writes_before);
}

// ---------------------------------------------------------------------------------------------
// A SCIM server of our own: hostile listings, silence, dribbling, refusals.

enum Reply {
    Json(u16, String),
    /// Accept the request, never answer.
    Silent,
    /// Status line and headers, then one body byte every 2 s, for ever.
    Dribble,
}

type Handler = dyn Fn(&str, &str) -> Reply + Send + Sync;

/// A SCIM service on `http://127.0.0.1:PORT/v2` answering every request through `handler(method,
/// path?query)`; it records what it was asked and stops when dropped.
struct ScimHost {
    rt: Option<tokio::runtime::Runtime>,
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Drop for ScimHost {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl ScimHost {
    fn start(handler: impl Fn(&str, &str) -> Reply + Send + Sync + 'static) -> ScimHost {
        let (rt, listener, port) = loopback_runtime();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let seen2 = seen.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (handler, seen) = (handler.clone(), seen2.clone());
                tokio::spawn(async move {
                    let _ = serve(tcp, &*handler, &seen).await;
                });
            }
        });
        ScimHost {
            rt: Some(rt),
            port,
            seen,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v2", self.port)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(
    mut tcp: tokio::net::TcpStream,
    handler: &Handler,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    loop {
        let Some((method, target)) = read_request(&mut tcp).await? else {
            return Ok(());
        };
        seen.lock().unwrap().push(format!("{method} {target}"));
        match handler(&method, &target) {
            Reply::Json(status, body) => {
                let out = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                tcp.write_all(out.as_bytes()).await?;
            }
            Reply::Silent => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Reply::Dribble => {
                tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/scim+json\r\nContent-Length: 1000000\r\n\r\n")
                    .await?;
                loop {
                    tcp.write_all(b" ").await?;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }
}

fn service_provider_config() -> Reply {
    Reply::Json(
        200,
        json!({"patch": {"supported": true}, "filter": {"supported": true, "maxResults": 500},
               "etag": {"supported": false}})
        .to_string(),
    )
}

fn start_index(target: &str) -> u64 {
    target
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("startIndex="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// A page of 500 users from `first` (ids `u{n}`), each carrying some padding as real records do.
fn scim_page(total: u64, start: u64, first: u64) -> Reply {
    let users: Vec<Value> = (first..first + 500)
        .map(|n| {
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": format!("u{n}"),
                   "userName": format!("user{n}@example.com"), "displayName": "x".repeat(400), "active": true})
        })
        .collect();
    Reply::Json(
        200,
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": total,
               "startIndex": start, "itemsPerPage": 500, "Resources": users})
        .to_string(),
    )
}

/// An Env whose destination is `host` (the scim2-server it also starts stays unused).
fn env_against(host: &ScimHost, users: Vec<Value>) -> Env {
    let spec = Spec {
        scim_endpoint: Some(host.endpoint()),
        ..Spec::default()
    };
    Env::with(tenant(users, &[]), &[], spec)
}

const PEAK_LIMIT_KIB: u64 = 200 * 1024;

#[test]
fn an_endless_scim_listing_aborts_within_a_minute_and_under_200_mib() {
    // Echoes startIndex, 500 new users a page, and claims 10^12 users: no page sequence of a
    // real directory reaches that, so the listing is refused at its first page.
    let host = ScimHost::start(|_, target| {
        if target.contains("/ServiceProviderConfig") {
            return service_provider_config();
        }
        let s = start_index(target);
        scim_page(1_000_000_000_000, s, s)
    });
    let env = env_against(&host, members(1, 20, "example.com"));
    let (run, peak) = run_measuring_peak_rss(
        &env.args("plan", &[]),
        env.dir.path(),
        Duration::from_secs(90),
    );
    println!(
        "endless listing (10^12 claimed): exit {} in {:?}, peak RSS {} MiB",
        run.code,
        run.elapsed,
        peak / 1024
    );
    assert_eq!(run.code, 1, "{run:?}");
    let last = run.stderr.lines().last().unwrap();
    assert!(
        last.contains("reports 1000000000000 users, more than the ceiling of 1000000"),
        "{last}"
    );
    assert!(last.contains("--max-listing-users"), "{last}");
    assert!(
        run.elapsed < Duration::from_secs(60) && peak < PEAK_LIMIT_KIB,
        "{:?}, {} KiB",
        run.elapsed,
        peak
    );

    // A believable total, fresh ids on every page, and a byte ceiling set low by the operator.
    let host = ScimHost::start(|_, target| {
        if target.contains("/ServiceProviderConfig") {
            return service_provider_config();
        }
        let s = start_index(target);
        scim_page(900_000, s, s)
    });
    let env = env_against(&host, members(1, 20, "example.com"));
    let args = env.args("plan", &["--max-listing-bytes", "20000000"]);
    let (run, peak) = run_measuring_peak_rss(&args, env.dir.path(), Duration::from_secs(90));
    println!(
        "fresh ids to a 20 MB ceiling: exit {} in {:?}, peak RSS {} MiB",
        run.code,
        run.elapsed,
        peak / 1024
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("the listing passed 19 MiB before it ended"),
        "{}",
        run.stderr
    );
    assert!(
        run.elapsed < Duration::from_secs(60) && peak < PEAK_LIMIT_KIB,
        "{:?}, {} KiB",
        run.elapsed,
        peak
    );
}

#[test]
fn a_scim_listing_that_repeats_a_page_aborts_at_the_repeat() {
    // The same 500 users on every page: stopped at the second page, not after the listing.
    let host = ScimHost::start(|_, target| {
        if target.contains("/ServiceProviderConfig") {
            return service_provider_config();
        }
        scim_page(50_000, start_index(target), 1)
    });
    let env = env_against(&host, members(1, 20, "example.com"));
    let (run, peak) = run_measuring_peak_rss(
        &env.args("plan", &[]),
        env.dir.path(),
        Duration::from_secs(90),
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("repeats an id already listed"),
        "{}",
        run.stderr
    );
    let pages = host
        .seen()
        .iter()
        .filter(|r| r.starts_with("GET /v2/Users"))
        .count();
    assert_eq!(pages, 2, "{:?}", host.seen());
    assert!(peak < PEAK_LIMIT_KIB, "{peak} KiB");
}

/// `dirsync plan` against a SCIM server that answers its first request with `reply`: it must end
/// with one DestinationUnavailable line within about a minute (README "Safety rules").
fn given_up_within_about_a_minute(what: &str, reply: fn() -> Reply) {
    let host = ScimHost::start(move |_, target| {
        if target.contains("/ServiceProviderConfig") {
            reply()
        } else {
            service_provider_config()
        }
    });
    let env = env_against(&host, members(1, 5, "example.com"));
    let run = run_dirsync_timeout(
        &env.args("plan", &[]),
        env.dir.path(),
        Duration::from_secs(150),
    );
    println!("{what} SCIM server: given up after {:?}", run.elapsed);
    assert_eq!(run.code, 1, "{what}: {run:?}");
    let last = run.stderr.lines().last().unwrap();
    assert!(
        last.contains("DestinationUnavailable") && last.contains("giving up"),
        "{what}: {last}"
    );
    assert!(
        run.elapsed < Duration::from_secs(70),
        "{what}: took {:?}",
        run.elapsed
    );
}

#[test]
fn a_silent_scim_server_is_given_up_within_about_a_minute() {
    given_up_within_about_a_minute("silent", || Reply::Silent);
}

#[test]
fn a_dribbling_scim_server_is_given_up_within_about_a_minute() {
    given_up_within_about_a_minute("dribbling", || Reply::Dribble);
}

// ---------------------------------------------------------------------------------------------
// What apply cannot record it does not write; what it prints is text.

#[test]
fn apply_with_a_state_file_it_cannot_write_fails_before_any_write() {
    let env = Env::new(members(1, 12, "example.com"));
    let state = env
        .dir
        .path()
        .join("no-such-dir")
        .join("s.json")
        .display()
        .to_string();
    let run = env
        .dirsync(&env.args("apply", &["--state", &state]))
        .expect(1);
    let last = run.stderr.lines().last().unwrap();
    assert!(
        last.contains("cannot write the state file") && last.contains("no-such-dir"),
        "{last}"
    );
    assert_eq!(
        env.scim_writes().total(),
        0,
        "users were written that no state file records"
    );
    assert!(env.scim_users().is_empty());
}

#[test]
fn user_data_reaches_the_terminal_as_text_not_as_control_sequences() {
    // A destination that refuses every create, and a source user whose name clears the screen.
    let host = ScimHost::start(|method, target| {
        if target.contains("/ServiceProviderConfig") {
            service_provider_config()
        } else if method == "GET" {
            Reply::Json(
                200,
                json!({"totalResults": 0, "startIndex": 1, "Resources": []}).to_string(),
            )
        } else {
            Reply::Json(
                400,
                json!({"status": "400", "scimType": "invalidValue"}).to_string(),
            )
        }
    });
    let evil = "evil\u{1b}[2J\u{7}@example.com";
    let env = env_against(&host, vec![member(1, evil, "Evil", "User")]);
    let run = env.apply().expect(4);
    assert!(
        !run.stderr.contains('\u{1b}') && !run.stderr.contains('\u{7}'),
        "{:?}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("FAILED Add evil\\u{1b}[2J\\u{7}@example.com"),
        "{}",
        run.stderr
    );
}
