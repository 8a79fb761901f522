//! `dirsync plan` / `dirsync apply` when things go wrong (docs/behaviour.md §2.1, §5, §8): usage errors,
//! bad files, Graph faults from the emulator (5xx, dropped connections, 429 storms, expired
//! tokens), and a hostile Graph server (foreign or looping nextLink, redirects, a 1 GiB body,
//! a user record missing a field). Each ends in bounded time with one clear line, and nothing
//! is written to the destination.
//!
//! The client-level versions of the hostile cases (never answers, huge Retry-After, ...) are
//! in tests/hostile_servers.rs; here only the ones that are cheap through the whole command.

mod cli_common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cli_common::*;
use serde_json::{Value, json};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Usage and input files (no server involved).

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_dirsync(
        &s(&["apply", "-f", "r.yaml", "--secrets", "s.yaml"]),
        dir.path(),
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--state"), "{}", run.stderr);
    for args in [
        vec!["plan", "-f", "r.yaml", "--secrets", "s.yaml", "--bogus"],
        vec!["plan", "--secrets", "s.yaml"],
        vec!["plan", "-f", "r.yaml"],
        vec![
            "apply",
            "-f",
            "r.yaml",
            "--secrets",
            "s.yaml",
            "--state",
            "x",
            "--concurrency",
            "0",
        ],
        vec![
            "plan",
            "-f",
            "r.yaml",
            "--secrets",
            "s.yaml",
            "--concurrency",
            "many",
        ],
        vec!["frobnicate"],
        vec![],
    ] {
        let run = run_dirsync(&s(&args), dir.path());
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(!run.stderr.trim().is_empty(), "{args:?}: no message");
    }
    let help = run_dirsync(&s(&["plan", "--help"]), dir.path());
    assert_eq!(help.code, 0);
    assert!(
        help.stdout.contains("--state") && help.stdout.contains("--ca-file"),
        "{}",
        help.stdout
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "a usage error wrote a file"
    );
}

const GOOD_RESOURCE: &str = "apiVersion: dirsync.io/v1alpha1
kind: DirectorySync
metadata: {name: example-com, namespace: identity}
spec:
  domain: example.com
  upnMode: Enabled
  maxAllowedDeletions: 65
  source:
    entraID:
      tenantID: 5b0f7e3c-2a41-4c6e-9d3b-8e2f1a0c7d64
      clientID: 0c9e8d7f-6a5b-4c3d-8e2f-1a0b9c8d7e6f
      clientSecretRef: {name: entra-app, key: client-secret}
      authorityHost: https://127.0.0.1:9
      graphEndpoint: https://127.0.0.1:9
  destination:
    scim:
      endpoint: http://127.0.0.1:9/v2
      bearerTokenRef: {name: access-control-scim, key: token}
";

/// [`GOOD_RESOURCE`] turned round: the SCIM service as the source, Entra ID as the destination.
fn reverse_resource() -> String {
    with_sides(&scim_block(), &entra_block())
}

/// The Entra ID block of [`GOOD_RESOURCE`] (its `entraID:` line and fields).
fn entra_block() -> String {
    let (_, rest) = GOOD_RESOURCE.split_once("  source:\n").unwrap();
    rest.split_once("  destination:\n").unwrap().0.to_string()
}

/// The SCIM block of [`GOOD_RESOURCE`].
fn scim_block() -> String {
    GOOD_RESOURCE
        .split_once("  destination:\n")
        .unwrap()
        .1
        .to_string()
}

/// `GOOD_RESOURCE` with these sides.
fn with_sides(source: &str, destination: &str) -> String {
    let head = GOOD_RESOURCE.split_once("  source:\n").unwrap().0;
    format!("{head}  source:\n{source}  destination:\n{destination}")
}

const GOOD_SECRETS: &str = "apiVersion: v1
kind: Secret
metadata: {name: entra-app}
stringData: {client-secret: canary-client-secret-Q7vX2pLm9Rt}
---
apiVersion: v1
kind: Secret
metadata: {name: access-control-scim}
stringData: {token: canary-scim-token-Zk4Hw8Nd3Fs}
";

#[test]
fn bad_resource_and_secrets_files_give_one_readable_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "missing resource file",
            "<none>".into(),
            GOOD_SECRETS.into(),
            "cannot read",
        ),
        (
            "not YAML",
            "spec: [unclosed\n  domain: {".into(),
            GOOD_SECRETS.into(),
            "not valid YAML",
        ),
        (
            "another kind",
            GOOD_RESOURCE.replace("kind: DirectorySync", "kind: ConfigMap"),
            GOOD_SECRETS.into(),
            "expected a DirectorySync",
        ),
        (
            "missing required field",
            GOOD_RESOURCE.replace("  maxAllowedDeletions: 65\n", ""),
            GOOD_SECRETS.into(),
            "maxAllowedDeletions",
        ),
        (
            "out of range",
            GOOD_RESOURCE.replace("maxAllowedDeletions: 65", "maxAllowedDeletions: 101"),
            GOOD_SECRETS.into(),
            "maxAllowedDeletions",
        ),
        (
            "bad enum",
            GOOD_RESOURCE.replace("upnMode: Enabled", "upnMode: Sometimes"),
            GOOD_SECRETS.into(),
            "Sometimes",
        ),
        (
            "plain-http Graph",
            GOOD_RESOURCE.replace("graphEndpoint: https://", "graphEndpoint: http://"),
            GOOD_SECRETS.into(),
            "graphEndpoint",
        ),
        (
            "URL with user-info",
            GOOD_RESOURCE.replace(
                "endpoint: http://127",
                "endpoint: http://user:canary-scim-token-Zk4Hw8Nd3Fs@127",
            ),
            GOOD_SECRETS.into(),
            "user-info",
        ),
        (
            "misspelt field",
            GOOD_RESOURCE.replace(
                "  maxAllowedDeletions: 65\n",
                "  maxAllowedDeletions: 65\n  deletionPolcy: Deactivate\n",
            ),
            GOOD_SECRETS.into(),
            "spec.deletionPolcy: unknown field (did you mean deletionPolicy?)",
        ),
        (
            "misspelt nested field",
            GOOD_RESOURCE.replace(
                "graphEndpoint:",
                "authorityHots: https://login.example\n      graphEndpoint:",
            ),
            GOOD_SECRETS.into(),
            "spec.source.entraID.authorityHots: unknown field (did you mean authorityHost?)",
        ),
        (
            "plain-http SCIM off this machine",
            GOOD_RESOURCE.replace(
                "endpoint: http://127.0.0.1:9/v2",
                "endpoint: http://192.0.2.10/v2",
            ),
            GOOD_SECRETS.into(),
            "would send the bearer token unencrypted; use https://, or pass --allow-insecure-http",
        ),
        (
            "entraID on both sides",
            with_sides(&entra_block(), &entra_block()),
            GOOD_SECRETS.into(),
            "spec: source and destination must be different kinds: one entraID and one scim",
        ),
        (
            "scim on both sides",
            with_sides(&scim_block(), &scim_block()),
            GOOD_SECRETS.into(),
            "spec: source and destination must be different kinds: one entraID and one scim",
        ),
        (
            "a source with both kinds",
            with_sides(&format!("{}{}", entra_block(), scim_block()), &scim_block()),
            GOOD_SECRETS.into(),
            "spec.source: source must hold exactly one of entraID and scim",
        ),
        (
            "a destination with neither kind",
            with_sides(&entra_block(), "    {}\n"),
            GOOD_SECRETS.into(),
            "spec.destination: destination must hold exactly one of entraID and scim",
        ),
        (
            "reverse: plain-http Graph destination",
            reverse_resource().replace("graphEndpoint: https://", "graphEndpoint: http://"),
            GOOD_SECRETS.into(),
            "spec.destination.entraID.graphEndpoint: must use https",
        ),
        (
            "reverse: plain-http SCIM source off this machine",
            reverse_resource().replace(
                "endpoint: http://127.0.0.1:9/v2",
                "endpoint: http://192.0.2.10/v2",
            ),
            GOOD_SECRETS.into(),
            "spec.source.scim.endpoint: plain http:// to 192.0.2.10 would send the bearer token unencrypted",
        ),
        (
            "reverse: SCIM token missing",
            reverse_resource(),
            GOOD_SECRETS.replace("token: canary", "other: canary"),
            "access-control-scim",
        ),
        (
            "missing secrets file",
            GOOD_RESOURCE.into(),
            "<none>".into(),
            "cannot read",
        ),
        (
            "secret key missing",
            GOOD_RESOURCE.into(),
            GOOD_SECRETS.replace("token: canary", "other: canary"),
            "access-control-scim",
        ),
        (
            "secrets not YAML",
            GOOD_RESOURCE.into(),
            format!("{GOOD_SECRETS}\n  - [: canary-client-secret-Q7vX2pLm9Rt\n"),
            "not valid YAML",
        ),
        (
            "not a Secret",
            GOOD_RESOURCE.into(),
            GOOD_SECRETS.replace(
                "kind: Secret\nmetadata: {name: entra-app}",
                "kind: ConfigMap\nmetadata: {name: entra-app}",
            ),
            "not a Secret",
        ),
        (
            "bad base64",
            GOOD_RESOURCE.into(),
            GOOD_SECRETS.replace(
                "stringData: {token: canary-scim-token-Zk4Hw8Nd3Fs}",
                "data: {token: '***not base64***'}",
            ),
            "base64",
        ),
    ];
    for (what, resource, secrets, needle) in cases {
        let r = dir.path().join("r.yaml");
        let sf = dir.path().join("s.yaml");
        let _ = std::fs::remove_file(&r);
        let _ = std::fs::remove_file(&sf);
        if resource != "<none>" {
            std::fs::write(&r, &resource).unwrap();
        }
        if secrets != "<none>" {
            std::fs::write(&sf, &secrets).unwrap();
        }
        for cmd in ["plan", "apply"] {
            let run = run_dirsync(
                &s(&[
                    cmd,
                    "-f",
                    "r.yaml",
                    "--secrets",
                    "s.yaml",
                    "--state",
                    "state.json",
                ]),
                dir.path(),
            );
            assert_eq!(run.code, 1, "{what} ({cmd}): {run:?}");
            let lines: Vec<&str> = run.stderr.lines().collect();
            assert_eq!(
                lines.len(),
                1,
                "{what} ({cmd}): not one line:\n{}",
                run.stderr
            );
            assert!(
                lines[0].starts_with("error: "),
                "{what} ({cmd}): {}",
                lines[0]
            );
            assert!(
                lines[0].contains(needle),
                "{what} ({cmd}): {:?} lacks {needle:?}",
                lines[0]
            );
            assert!(
                lines[0].len() < 400,
                "{what} ({cmd}): too long: {}",
                lines[0]
            );
            assert_no_secrets(&run.stderr, what);
            assert!(run.stdout.is_empty(), "{what} ({cmd}): {}", run.stdout);
            assert!(
                run.elapsed < Duration::from_secs(10),
                "{what} ({cmd}) took {:?}",
                run.elapsed
            );
            assert!(
                !dir.path().join("state.json").exists(),
                "{what} ({cmd}) wrote a state file"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Graph faults from the emulator.

/// 1,100 users: more than one Graph page ($top=999).
fn two_pages() -> Vec<Value> {
    members(1, 1100, "example.com")
}

#[test]
fn a_graph_read_failing_on_its_second_page_aborts_the_run_and_writes_nothing() {
    let env = Env::new(two_pages());
    // Every request after the first page answers 503 (Retry-After: 0, so the attempts run out fast).
    env.emu.add_fault(&json!({"kind": "unavailable", "endpoint": "users", "always": true, "after": 1, "retryAfter": 0}));
    for run in [env.plan(), env.apply()] {
        let run = run.expect(1);
        let last = run.stderr.lines().last().unwrap();
        assert!(
            last.starts_with("error: SourceUnavailable"),
            "{}",
            run.stderr
        );
        assert!(
            last.contains("503") && last.contains("nothing was written"),
            "{last}"
        );
        assert!(
            run.stdout.is_empty(),
            "a partial plan was printed: {}",
            run.stdout
        );
    }
    assert_eq!(env.scim_writes().total(), 0);
    assert!(!env.state_path().exists());
    // It really was the second page that failed, after the full retry budget.
    let faults = env.emu.faults();
    assert_eq!(faults[0]["fired"], json!(2 * 6), "{faults}");
}

#[test]
fn a_connection_dropped_mid_page_aborts_the_run_and_writes_nothing() {
    let env = Env::new(two_pages());
    env.emu.add_fault(&json!({"kind": "dropConnection", "endpoint": "users", "always": true, "after": 1, "bytes": 4096}));
    let run = env.apply().expect(1);
    let last = run.stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: SourceUnavailable"),
        "{}",
        run.stderr
    );
    // Six attempts with backoff (1+2+4+8+16 s, 50–100 % jitter), never more.
    assert!(
        run.elapsed < Duration::from_secs(60),
        "took {:?}",
        run.elapsed
    );
    assert_eq!(env.scim_writes().total(), 0);
    assert!(!env.state_path().exists());
}

#[test]
fn throttling_storms_5xx_and_expired_tokens_are_survived_with_the_right_final_state() {
    // Tokens live 2 s; the storm below outlasts one.
    let env = Env::with(
        tenant(members(1, 30, "example.com"), &[]),
        &["--token-lifetime", "2"],
        Spec::default(),
    );
    env.emu
        .add_fault(&json!({"kind": "throttle", "endpoint": "token", "count": 1, "retryAfter": 1}));
    env.emu
        .add_fault(&json!({"kind": "throttle", "endpoint": "users", "count": 2, "retryAfter": 2}));
    let run = env.apply().expect(0);
    assert!(run.stderr.contains("30 created"), "{}", run.stderr);
    assert_eq!(env.scim_users().len(), 30);
    let stats = env.emu.requests(2000);
    assert!(
        stats["byStatus"]["429"].as_u64().unwrap_or(0) >= 3,
        "{stats}"
    );
    // The token in hand expired during the storm: Graph refused it once, dirsync got a new one.
    assert!(
        stats["byStatus"]["401"].as_u64().unwrap_or(0) >= 1,
        "{stats}"
    );
    assert!(
        stats["byEndpoint"]["token"].as_u64().unwrap_or(0) >= 3,
        "{stats}"
    );
    assert!(
        env.emu.faults().as_array().unwrap().is_empty(),
        "not every fault fired"
    );

    // Changes under 503s, a 504 and a storm with the other throttling code.
    env.emu
        .update_user("user001@example.com", &json!({"displayName": "Renamed"}));
    env.emu.delete_user("user002@example.com");
    env.emu
        .add_user(&member(99, "new@example.com", "New", "User"));
    env.emu.add_fault(
        &json!({"kind": "unavailable", "endpoint": "users", "count": 2, "retryAfter": 1}),
    );
    env.emu
        .add_fault(&json!({"kind": "gatewayTimeout", "endpoint": "users", "count": 1}));
    env.emu.add_fault(
        &json!({"kind": "throttle", "endpoint": "users", "count": 2, "retryAfter": 1,
                              "code": "Request_ThrottledTemporarily"}),
    );
    // `--full`: these faults are on the listing, which an incremental apply does not read.
    let state = env.state_path().display().to_string();
    let run = env
        .dirsync(&env.args("apply", &["--state", &state, "--full"]))
        .expect(0);
    assert!(
        run.stderr.contains("1 created, 1 updated, 1 deleted"),
        "{}",
        run.stderr
    );
    assert_eq!(env.scim_users().len(), 30);
    assert_eq!(
        env.scim_user_required("user001@example.com")["displayName"],
        "Renamed"
    );
    assert!(env.scim_user("user002@example.com").is_none());
    assert!(env.scim_user("new@example.com").is_some());
    assert!(
        env.emu.faults().as_array().unwrap().is_empty(),
        "not every fault fired"
    );

    // An incremental apply through a throttled and failing delta endpoint.
    env.emu.update_user(
        "user003@example.com",
        &json!({"displayName": "Renamed too"}),
    );
    env.emu
        .add_fault(&json!({"kind": "throttle", "endpoint": "delta", "count": 2, "retryAfter": 1}));
    env.emu
        .add_fault(&json!({"kind": "unavailable", "endpoint": "delta", "count": 1}));
    let run = env.apply().expect(0);
    assert!(run.stderr.contains("incremental run"), "{}", run.stderr);
    assert!(
        run.stderr.contains("0 created, 1 updated"),
        "{}",
        run.stderr
    );
    assert_eq!(
        env.scim_user_required("user003@example.com")["displayName"],
        "Renamed too"
    );
    assert!(
        env.emu.faults().as_array().unwrap().is_empty(),
        "not every fault fired"
    );
}

// ---------------------------------------------------------------------------------------------
// A hostile Graph server (HTTPS, in this process), which also plays an empty SCIM destination.

enum Reply {
    Json(u16, Vec<(&'static str, String)>, String),
    /// 1 GiB of spaces for as long as the client reads, announced by `Content-Length` or
    /// (`false`) delimited by the end of the connection.
    Huge(bool),
}

struct Hostile {
    rt: Option<tokio::runtime::Runtime>,
    port: u16,
    dir: tempfile::TempDir,
    /// "METHOD path?query" of every request.
    seen: Arc<Mutex<Vec<String>>>,
    /// Body bytes written by `Reply::Huge`.
    huge_sent: Arc<AtomicU64>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn graph_user(n: u32, upn: &str) -> Value {
    member(n, upn, "Hostile", "User")
}

impl Hostile {
    /// `graph` answers every request under `/v1.0/` (`{PORT}` in its bodies and headers becomes
    /// the server's port); the token endpoint and a minimal empty SCIM service under `/scim/v2`
    /// are built in.
    fn start(graph: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Hostile {
        let dir = tempfile::tempdir().unwrap();
        let pki = dirsync_testenv::certs::generate(&dir.path().join("pki")).unwrap();
        let certs: Vec<rustls::pki_types::CertificateDer<'static>> = {
            use rustls::pki_types::pem::PemObject as _;
            rustls::pki_types::CertificateDer::pem_file_iter(&pki.serving_crt)
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let key = {
            use rustls::pki_types::pem::PemObject as _;
            rustls::pki_types::PrivateKeyDer::from_pem_file(&pki.serving_key).unwrap()
        };
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let (rt, listener, port) = loopback_runtime();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let huge_sent = Arc::new(AtomicU64::new(0));
        let graph = Arc::new(graph);
        let (seen2, sent2) = (seen.clone(), huge_sent.clone());
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, graph, seen, sent) = (
                    acceptor.clone(),
                    graph.clone(),
                    seen2.clone(),
                    sent2.clone(),
                );
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = serve_one(&mut tls, port, &*graph, &seen, &sent).await;
                });
            }
        });
        Hostile {
            rt: Some(rt),
            port,
            dir,
            seen,
            huge_sent,
        }
    }

    fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("pki").join("ca.crt")
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Runs `dirsync plan` and `dirsync apply` against this server; both must exit 1 with one
    /// `error:` line containing `needle`, well within `budget`, having written nothing.
    fn expect_failure(&self, needle: &str, budget: Duration) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let resource = GOOD_RESOURCE
            .replace("https://127.0.0.1:9", &self.base())
            .replace("http://127.0.0.1:9/v2", &format!("{}/scim/v2", self.base()));
        std::fs::write(dir.path().join("r.yaml"), resource).unwrap();
        std::fs::write(dir.path().join("s.yaml"), GOOD_SECRETS).unwrap();
        let ca = self.ca_file().display().to_string();
        let mut last = None;
        for cmd in ["plan", "apply"] {
            let run = run_dirsync_timeout(
                &s(&[
                    cmd,
                    "-f",
                    "r.yaml",
                    "--secrets",
                    "s.yaml",
                    "--state",
                    "state.json",
                    "--ca-file",
                    &ca,
                ]),
                dir.path(),
                budget + Duration::from_secs(30),
            );
            assert_eq!(run.code, 1, "{cmd}: {run:?}");
            let errors: Vec<&str> = run
                .stderr
                .lines()
                .filter(|l| l.starts_with("error:"))
                .collect();
            assert_eq!(errors.len(), 1, "{cmd}: {}", run.stderr);
            assert!(
                errors[0].contains(needle),
                "{cmd}: {:?} lacks {needle:?}",
                errors[0]
            );
            assert!(
                errors[0].len() <= 512,
                "{cmd}: error line too long: {}",
                errors[0]
            );
            assert!(run.elapsed < budget, "{cmd} took {:?}", run.elapsed);
            assert!(run.stdout.is_empty(), "{cmd}: {}", run.stdout);
            assert_no_secrets(&run.stderr, cmd);
            assert!(
                !dir.path().join("state.json").exists(),
                "{cmd} wrote a state file"
            );
            last = Some(run);
        }
        let writes: Vec<String> = self
            .seen()
            .into_iter()
            .filter(|r| r.contains("/scim/") && !r.starts_with("GET"))
            .collect();
        assert!(writes.is_empty(), "written to the destination: {writes:?}");
        last.unwrap()
    }
}

async fn serve_one(
    tls: &mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    port: u16,
    graph: &(dyn Fn(&str) -> Reply + Send + Sync),
    seen: &Mutex<Vec<String>>,
    sent: &AtomicU64,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let Some((method, target)) = read_request(tls).await? else {
        return Ok(());
    };
    seen.lock().unwrap().push(format!("{method} {target}"));
    let reply = if target.contains("/oauth2/v2.0/token") {
        Reply::Json(200, vec![], json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "hostile-access-token"}).to_string())
    } else if target.starts_with("/scim/v2/Users") && method == "GET" {
        Reply::Json(
            200,
            vec![],
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 0,
                   "startIndex": 1, "itemsPerPage": 0, "Resources": []})
            .to_string(),
        )
    } else if target.starts_with("/scim/") {
        Reply::Json(404, vec![], json!({"status": "404"}).to_string())
    } else if target.starts_with("/v1.0/") {
        graph(&target)
    } else {
        Reply::Json(404, vec![], "{}".into())
    };
    match reply {
        Reply::Json(status, headers, body) => {
            let body = body.replace("{PORT}", &port.to_string());
            let mut out = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                out.push_str(&format!(
                    "{k}: {}\r\n",
                    v.replace("{PORT}", &port.to_string())
                ));
            }
            out.push_str("\r\n");
            out.push_str(&body);
            tls.write_all(out.as_bytes()).await?;
        }
        Reply::Huge(announced) => {
            let total: u64 = 1 << 30;
            let length = if announced {
                format!("Content-Length: {total}\r\n")
            } else {
                String::new()
            };
            tls.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}Connection: close\r\n\r\n").as_bytes(),
            )
            .await?;
            let block = vec![b' '; 64 * 1024];
            let mut done = 0u64;
            while done < total {
                tls.write_all(&block).await?;
                done += block.len() as u64;
                sent.store(done, Ordering::Relaxed);
            }
        }
    }
    tls.flush().await?;
    tls.shutdown().await
}

fn page(users: Vec<Value>, next: Option<&str>) -> String {
    // `@odata.count` as Graph sends it on page 1 (dirsync checks the listing against it).
    let count = users.len();
    let mut v = json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users",
                       "@odata.count": count, "value": users});
    if let Some(n) = next {
        v["@odata.nextLink"] = json!(n);
    }
    v.to_string()
}

#[test]
fn a_next_link_to_another_host_aborts_the_run() {
    // `localhost` is the same server under another name (its certificate names it too): only
    // the rule, not a failing connection, can stop dirsync from following it.
    let server = Hostile::start(|target| {
        if target.contains("skiptoken=foreign") {
            Reply::Json(
                200,
                vec![],
                page(vec![graph_user(2, "b@example.com")], None),
            )
        } else {
            Reply::Json(
                200,
                vec![],
                page(
                    vec![graph_user(1, "a@example.com")],
                    Some("https://localhost:{PORT}/v1.0/users?$skiptoken=foreign"),
                ),
            )
        }
    });
    let run = server.expect_failure("nextLink", Duration::from_secs(10));
    assert!(
        run.stderr.contains("SourceUnavailable") || run.stderr.contains("Entra ID"),
        "{}",
        run.stderr
    );
    assert!(
        !server.seen().iter().any(|r| r.contains("foreign")),
        "the foreign nextLink was followed: {:?}",
        server.seen()
    );
}

#[test]
fn a_looping_next_link_aborts_the_run() {
    // The same page again, and the same skiptoken under another URL: both are loops.
    for second in [
        "https://127.0.0.1:{PORT}/v1.0/users?$skiptoken=A",
        "https://127.0.0.1:{PORT}/v1.0/users?$top=5&$skiptoken=A",
    ] {
        let server = Hostile::start(move |target| {
            let next = if target.contains("skiptoken=A") {
                second
            } else {
                "https://127.0.0.1:{PORT}/v1.0/users?$skiptoken=A"
            };
            Reply::Json(
                200,
                vec![],
                page(vec![graph_user(1, "a@example.com")], Some(next)),
            )
        });
        server.expect_failure("nextLink repeats an earlier", Duration::from_secs(10));
        // (Not counting the delta link a full run takes first, which this server cannot give.)
        let users_requests = server
            .seen()
            .iter()
            .filter(|r| r.contains("/v1.0/users") && !r.contains("/v1.0/users/delta"))
            .count();
        assert!(
            users_requests <= 2 * 2,
            "the loop went on: {users_requests} requests"
        );
    }
}

#[test]
fn a_redirect_is_not_followed() {
    let server = Hostile::start(|target| {
        if target.starts_with("/v1.0/elsewhere") {
            Reply::Json(200, vec![], page(vec![], None))
        } else {
            Reply::Json(
                302,
                vec![("Location", "https://127.0.0.1:{PORT}/v1.0/elsewhere".into())],
                "{}".into(),
            )
        }
    });
    server.expect_failure("redirect", Duration::from_secs(10));
    assert!(
        !server.seen().iter().any(|r| r.contains("elsewhere")),
        "{:?}",
        server.seen()
    );
}

#[test]
fn a_user_record_missing_account_enabled_is_a_read_error() {
    let server = Hostile::start(|_| {
        let mut u = graph_user(1, "a@example.com");
        u.as_object_mut().unwrap().remove("accountEnabled");
        Reply::Json(
            200,
            vec![],
            page(vec![graph_user(2, "b@example.com"), u], None),
        )
    });
    server.expect_failure("accountEnabled", Duration::from_secs(10));
}

#[test]
fn a_1_gib_body_ends_the_run_in_bounded_time_and_memory() {
    for announced in [false, true] {
        let server = Hostile::start(move |_| Reply::Huge(announced));
        let dir = tempfile::tempdir().unwrap();
        let resource = GOOD_RESOURCE
            .replace("https://127.0.0.1:9", &server.base())
            .replace(
                "http://127.0.0.1:9/v2",
                &format!("{}/scim/v2", server.base()),
            );
        std::fs::write(dir.path().join("r.yaml"), resource).unwrap();
        std::fs::write(dir.path().join("s.yaml"), GOOD_SECRETS).unwrap();
        let ca = server.ca_file().display().to_string();
        let (run, peak_kib) = run_measuring_peak_rss(
            &s(&[
                "plan",
                "-f",
                "r.yaml",
                "--secrets",
                "s.yaml",
                "--ca-file",
                &ca,
            ]),
            dir.path(),
            Duration::from_secs(90),
        );
        assert_eq!(run.code, 1, "{run:?}");
        let last = run.stderr.lines().last().unwrap_or("");
        assert!(
            last.starts_with("error:") && last.contains("64 MiB"),
            "{}",
            run.stderr
        );
        let sent = server.huge_sent.load(Ordering::Relaxed);
        if announced {
            // Refused on the header alone.
            assert!(
                sent < 16 << 20,
                "dirsync read {} MiB of an announced 1 GiB body",
                sent >> 20
            );
        } else {
            // Read up to the cap, then dropped (the server sees the connection close).
            assert!(
                (60 << 20..200 << 20).contains(&sent),
                "server sent {} MiB",
                sent >> 20
            );
        }
        // The cap is 64 MiB of body; the process stays far below the 1 GiB it was offered.
        assert!(peak_kib < 256 * 1024, "peak RSS {} MiB", peak_kib / 1024);
        assert!(
            run.elapsed < Duration::from_secs(60),
            "took {:?}",
            run.elapsed
        );
    }
}
