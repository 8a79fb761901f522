//! Failures a person must see and the operator must recover from: a wrong client secret, a
//! missing Secret, an unreachable SCIM server. The right reason on the conditions, a message
//! without the secret, retries with backoff, and recovery once fixed.

use std::time::Duration;

use crate::common::*;

const T: Duration = Duration::from_secs(60);
const WRONG_SECRET: &str = "Wr0ng-Client-Secret-Value";

fn fixture() -> serde_json::Value {
    tenant(
        &["example.com"],
        vec![user("alice@example.com", "Alice", "Liddell", "YWxpY2U=")],
    )
}

fn failures(d: &dirsync::crd::DirectorySync, reason: &str) -> usize {
    status(d)
        .history
        .iter()
        .filter(|r| r.result == reason)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_is_reported_retried_and_recovers_when_fixed() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-badsecret").await;
    let emu = emulator(&fixture()).await;
    let scim = scim();
    secrets(&ns, &emu, WRONG_SECRET).await;
    let op = Operator::start(cp, ns.name(), "op-a", &[]);
    create(
        &ns,
        "example-com",
        spec("example.com", "Once", &emu, &scim.base_url()),
    )
    .await;

    // Retried with backoff: several failed runs, spaced further apart.
    let d = wait_for(
        &ns,
        "example-com",
        "InvalidCredentials, retried",
        T,
        Some(&op),
        |d| failures(d, "InvalidCredentials") >= 3,
    )
    .await;
    assert_eq!(
        condition(&d, "Ready").map(|c| (c.0, c.1)),
        Some(("False".into(), "InvalidCredentials".into()))
    );
    assert_eq!(
        condition(&d, "Stalled").map(|c| c.0).as_deref(),
        Some("True")
    );
    let (_, _, msg) = condition(&d, "Ready").expect("Ready");
    assert!(msg.contains("credentials refused"), "{msg}");
    assert!(msg.contains("AADSTS"), "the error code is kept: {msg}");
    let h = status(&d).history;
    let gap = |a: usize, b: usize| h[a].start_time.0.as_second() - h[b].start_time.0.as_second();
    assert!(
        gap(0, 1) >= gap(1, 2),
        "backoff grows: {:?}",
        h.iter()
            .map(|r| r.start_time.0.to_string())
            .collect::<Vec<_>>()
    );
    assert!(
        status(&d).next_run_time.is_some(),
        "nextRunTime says when the retry is"
    );
    let json = serde_json::to_string(&d).unwrap_or_default();
    assert!(!json.contains(WRONG_SECRET), "no secret in status");
    let evs = events_when(&ns, "example-com", |e| {
        e.iter().any(|e| e.1 == "InvalidCredentials")
    })
    .await;
    assert!(
        evs.iter()
            .any(|e| e.0 == "Warning" && e.1 == "InvalidCredentials"),
        "{evs:?}"
    );
    assert!(
        evs.iter().all(|e| !e.2.contains(WRONG_SECRET)),
        "no secret in events"
    );
    assert!(scim_users(&scim.base_url()).await.is_empty());

    // Fixing the Secret re-runs the resource.
    put_secret(
        &ns,
        "entra-app",
        &[
            ("client-secret", CLIENT_SECRET),
            ("ca.pem", emu.ca_pem.as_deref().unwrap_or("")),
        ],
    )
    .await;
    let d = wait_for_reason(
        &ns,
        "example-com",
        "Synced",
        Duration::from_secs(20),
        Some(&op),
    )
    .await;
    assert_eq!(
        condition(&d, "Stalled").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(scim_users(&scim.base_url()).await.len(), 1);
    assert!(
        !op.log_text().contains(WRONG_SECRET),
        "no secret in the log"
    );
    assert!(
        !op.log_text().contains(CLIENT_SECRET),
        "no secret in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_reported_and_creating_it_recovers() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-nosecret").await;
    let emu = emulator(&fixture()).await;
    let scim = scim();
    put_secret(
        &ns,
        "entra-app",
        &[
            ("client-secret", CLIENT_SECRET),
            ("ca.pem", emu.ca_pem.as_deref().unwrap_or("")),
        ],
    )
    .await;
    let op = Operator::start(cp, ns.name(), "op-a", &[]);
    create(
        &ns,
        "example-com",
        spec("example.com", "DryRun", &emu, &scim.base_url()),
    )
    .await;

    let d = wait_for(&ns, "example-com", "SecretNotFound", T, Some(&op), |d| {
        failures(d, "SecretNotFound") >= 2
    })
    .await;
    let (ready, reason, msg) = condition(&d, "Ready").expect("Ready");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "SecretNotFound")
    );
    assert!(
        msg.contains("\"scim\"") && msg.contains("bearerTokenRef"),
        "names the Secret and the field: {msg}"
    );
    assert_eq!(
        condition(&d, "Stalled").map(|c| c.0).as_deref(),
        Some("True")
    );

    put_secret(&ns, "scim", &[("token", SCIM_TOKEN)]).await;
    let d = wait_for_reason(
        &ns,
        "example-com",
        "PreviewReady",
        Duration::from_secs(20),
        Some(&op),
    )
    .await;
    assert_eq!(status(&d).last_run.map(|r| r.adds), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_scim_server_is_retried_until_it_answers() {
    dirsync::clients::outbound::init_crypto();
    let cp = control_plane().await;
    let ns = cp.namespace("op-noscim").await;
    let emu = emulator(&fixture()).await;
    let scim = scim();
    secrets(&ns, &emu, CLIENT_SECRET).await;
    // The resource points at a port where nothing listens yet; later a forwarder to the SCIM
    // server opens there.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/v2");
    let op = Operator::start(cp, ns.name(), "op-a", &[]);
    create(&ns, "example-com", spec("example.com", "Once", &emu, &url)).await;

    let d = wait_for(
        &ns,
        "example-com",
        "DestinationUnavailable",
        T,
        Some(&op),
        |d| failures(d, "DestinationUnavailable") >= 2,
    )
    .await;
    assert_eq!(
        condition(&d, "Ready").map(|c| (c.0, c.1)),
        Some(("False".into(), "DestinationUnavailable".into()))
    );
    assert_eq!(
        condition(&d, "Reconciling").map(|c| c.0).as_deref(),
        Some("True"),
        "transient: reconciling, not stalled"
    );
    assert_eq!(
        condition(&d, "Stalled").map(|c| c.0).as_deref(),
        Some("False")
    );
    let evs = events_when(&ns, "example-com", |e| {
        e.iter().any(|e| e.1 == "DestinationUnavailable")
    })
    .await;
    assert!(
        evs.iter()
            .any(|e| e.0 == "Warning" && e.1 == "DestinationUnavailable"),
        "{evs:?}"
    );

    let target = scim.port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind forwarder");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) =
                    tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let d = wait_for_reason(
        &ns,
        "example-com",
        "Synced",
        Duration::from_secs(30),
        Some(&op),
    )
    .await;
    assert_eq!(
        condition(&d, "Reconciling").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(scim_users(&scim.base_url()).await.len(), 1);
}
