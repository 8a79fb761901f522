//! Accept loop (HTTP or HTTPS, HTTP/1.1 and h2), per-request plumbing: request ids,
//! fault injection, common headers, counters.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::control;
use crate::faults::{Endpoint, FaultKind, FaultSpec};
use crate::http::{Body, Ctx, Resp, aad_error, full, graph_error, json_response, set_header};
use crate::jwt::Jws;
use crate::state::AppState;
use crate::stats::RequestRecord;
use crate::time;

const MAX_BODY: usize = 1 << 20;

/// Which endpoint a request is, for fault rules and the `byEndpoint` counters.
pub fn classify(method: &http::Method, path: &str) -> Endpoint {
    if path == control::PREFIX || path.starts_with("/_emulator/") {
        return Endpoint::Control;
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let get = method == http::Method::GET;
    match segs.as_slice() {
        ["v1.0", "users"] if !get => Endpoint::UserWrite,
        ["v1.0", "users"] | ["v1.0", "users", "$count"] => Endpoint::Users,
        ["v1.0", "users", d] if crate::graph::is_delta_segment(d) => Endpoint::Delta,
        ["v1.0", "users", _] if !get => Endpoint::UserWrite,
        ["v1.0", "users", _] => Endpoint::User,
        ["v1.0", u] if u.starts_with("users(") && !get => Endpoint::UserWrite,
        ["v1.0", u] if u.starts_with("users(") => Endpoint::User,
        ["v1.0", "directory", "deletedItems", ..] => Endpoint::DeletedItems,
        ["v1.0", b] if *b == "$batch" || b.eq_ignore_ascii_case("%24batch") => Endpoint::Batch,
        ["v1.0", "domains", ..] => Endpoint::Domains,
        ["v1.0", ..] => Endpoint::GraphOther,
        [_, "oauth2", "v2.0", "token"] => Endpoint::Token,
        [_, "v2.0", ".well-known", "openid-configuration"] | [_, "discovery", "v2.0", "keys"] => {
            Endpoint::OpenId
        }
        _ => Endpoint::Other,
    }
}

/// Which request of a delta query this is, for the `byDeltaKind` counters (stats.rs): the
/// first request of a round (`initial`), `$deltatoken=latest` (`latest`), a page of a round
/// (`nextLink`, `$skiptoken`) or the start of a change round (`deltaLink`, `$deltatoken`).
pub fn delta_kind(query: Option<&str>) -> &'static str {
    let mut kind = "initial";
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k.eq_ignore_ascii_case("$deltatoken") {
            return if v.eq_ignore_ascii_case("latest") {
                "latest"
            } else {
                "deltaLink"
            };
        }
        if k.eq_ignore_ascii_case("$skiptoken") {
            kind = "nextLink";
        }
    }
    kind
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `(tenant id, app id)` from the bearer token, unverified (for throttle headers only).
fn peek_token(h: &HeaderMap) -> (String, String) {
    let tok = header(h, "authorization")
        .and_then(|a| a.split_once(' '))
        .map(|x| x.1)
        .unwrap_or("");
    match Jws::parse(tok) {
        Some(j) => (
            j.claim_str("tid").unwrap_or_default().to_string(),
            j.claim_str("appid").unwrap_or_default().to_string(),
        ),
        None => (String::new(), String::new()),
    }
}

/// The response an injected fault answers with (`None`: the fault alters the real answer
/// instead). Also used for the items of `$batch` (`graph/batch.rs`).
pub fn fault_response(
    ctx: &Ctx,
    ep: Endpoint,
    spec: &FaultSpec,
    headers: &HeaderMap,
) -> Option<Resp> {
    let token_ep = matches!(ep, Endpoint::Token | Endpoint::OpenId);
    let mut r = match spec.kind {
        FaultKind::Throttle if token_ep => aad_error(
            ctx,
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            90055,
            "There are too many incoming requests. Please try again later.",
        ),
        FaultKind::Throttle => {
            let code = spec.code.as_deref().unwrap_or("TooManyRequests");
            let msg = if code == "Request_ThrottledTemporarily" {
                format!(
                    "Your request is throttled temporarily. Please try after {} seconds.",
                    spec.retry_after.unwrap_or(5)
                )
            } else {
                "Too many requests from Identifier:Emulator under category:throttle.aad.ags.tenant.list. Please try again later.".to_string()
            };
            let mut r = graph_error(ctx, StatusCode::TOO_MANY_REQUESTS, code, &msg);
            let (tid, app) = peek_token(headers);
            // Writes are metered by the write quota, reads by resource units (throttle.rs).
            let (limit, info) = if ep == Endpoint::UserWrite {
                ("Write", "WriteLimitExceeded")
            } else {
                ("ReadOnly", "ResourceUnitLimitExceeded")
            };
            set_header(
                &mut r,
                "x-ms-throttle-scope",
                &format!("Tenant_Application/{limit}/{app}/{tid}"),
            );
            set_header(&mut r, "x-ms-throttle-information", info);
            set_header(&mut r, "x-ms-throttle-limit-percentage", "1.2");
            r
        }
        FaultKind::Unavailable if token_ep => aad_error(
            ctx,
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        ),
        FaultKind::Unavailable => graph_error(
            ctx,
            StatusCode::SERVICE_UNAVAILABLE,
            "serviceNotAvailable",
            "The service is temporarily unavailable. Please retry after a delay.",
        ),
        FaultKind::GatewayTimeout if token_ep => aad_error(
            ctx,
            StatusCode::GATEWAY_TIMEOUT,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        ),
        FaultKind::GatewayTimeout => graph_error(
            ctx,
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "The operation timed out before it could be completed.",
        ),
        FaultKind::ExpiredDeltaToken => graph_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "syncStateNotFound",
            "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
        ),
        FaultKind::ResyncRequired => {
            let mut r = graph_error(
                ctx,
                StatusCode::GONE,
                "resyncRequired",
                "The delta token is no longer valid. A full resynchronization is required.",
            );
            set_header(
                &mut r,
                "location",
                &format!("{}/v1.0/users/delta?$deltatoken=", ctx.base_url),
            );
            r
        }
        FaultKind::DropConnection
        | FaultKind::Delay
        | FaultKind::DropNextLink
        | FaultKind::WrongCount => return None,
    };
    if let Some(s) = spec.retry_after {
        set_header(&mut r, "retry-after", &s.to_string());
    }
    Some(r)
}

/// The whole body of a response the emulator made itself (never fails; empty on error).
async fn collect_body(body: Body) -> Bytes {
    body.collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}

/// Keep status and headers, send part of the body, then fail the stream (the peer sees
/// a connection closed mid-body).
async fn truncate(resp: Resp, keep: Option<usize>) -> Resp {
    let (mut parts, body) = resp.into_parts();
    let bytes = collect_body(body).await;
    let n = keep
        .unwrap_or(bytes.len() / 2)
        .min(bytes.len().saturating_sub(1));
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, bytes.len().into());
    let first = bytes.slice(..n);
    // Yield the part, pause so that the server flushes status, headers and part to the
    // socket, then fail the body: hyper aborts the connection.
    let stream = futures_util::stream::unfold(0u8, move |step| {
        let first = first.clone();
        async move {
            match step {
                0 => Some((Ok(Frame::data(first)), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "fault injection: connection dropped",
                        )),
                        2,
                    ))
                }
                _ => None,
            }
        }
    });
    let body: Body = BodyExt::boxed(StreamBody::new(stream));
    Response::from_parts(parts, body)
}

/// A successful JSON page with its paging annotations altered (`dropNextLink`, `wrongCount`);
/// anything else passes unchanged.
async fn rewrite_page(resp: Resp, spec: &FaultSpec) -> Resp {
    let (mut parts, body) = resp.into_parts();
    let bytes = collect_body(body).await;
    let rebuilt = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut page)) if parts.status.is_success() => {
            match spec.kind {
                FaultKind::DropNextLink => {
                    page.shift_remove("@odata.nextLink");
                }
                FaultKind::WrongCount => {
                    if let Some(n) = page.get("@odata.count").and_then(|c| c.as_i64()) {
                        let lied = n.saturating_add(spec.count_offset.unwrap_or(0)).max(0);
                        page.insert("@odata.count".into(), lied.into());
                    }
                }
                _ => {}
            }
            serde_json::to_vec(&page).map(Bytes::from).unwrap_or(bytes)
        }
        _ => bytes,
    };
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, rebuilt.len().into());
    Response::from_parts(parts, full(rebuilt))
}

async fn dispatch(
    state: &AppState,
    ctx: &Ctx,
    ep: Endpoint,
    parts: &http::request::Parts,
    body: Incoming,
) -> Resp {
    let (method, path, query, headers) = (
        &parts.method,
        parts.uri.path(),
        parts.uri.query(),
        &parts.headers,
    );
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match ep {
        Endpoint::Token => {
            let bytes = match Limited::new(body, MAX_BODY).collect().await {
                Ok(c) => c.to_bytes(),
                Err(_) => {
                    return aad_error(
                        ctx,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "invalid_request",
                        90015,
                        "The request body is too large.",
                    );
                }
            };
            crate::token::token(state, ctx, segs[0], method, headers, &bytes).await
        }
        Endpoint::OpenId if segs.get(1) == Some(&"v2.0") => {
            crate::token::openid_configuration(state, ctx, segs[0])
        }
        Endpoint::OpenId => crate::token::keys(state, ctx, segs[0]).await,
        Endpoint::Other if path == "/error" => json_response(
            StatusCode::OK,
            &serde_json::json!({"code": query.unwrap_or(""), "note": "entra-emulator: see the AADSTS code in the error body"}),
        ),
        Endpoint::Other => graph_error(
            ctx,
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("The emulator serves no resource at '{path}'."),
        ),
        _ => {
            let bytes = match Limited::new(body, MAX_BODY).collect().await {
                Ok(c) => c.to_bytes(),
                Err(_) => {
                    return graph_error(
                        ctx,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "RequestEntityTooLarge",
                        "The request body is too large.",
                    );
                }
            };
            crate::graph::handle(state, ctx, method, path, query, headers, &bytes)
        }
    }
}

async fn serve(state: Arc<AppState>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = header(&parts.headers, "client-request-id")
        .filter(|s| !s.is_empty() && s.len() <= 200)
        .map(str::to_string)
        .unwrap_or_else(|| request_id.clone());
    let ctx = Ctx {
        request_id,
        client_request_id,
        now: state.now(),
        base_url: state.base_url.clone(),
    };
    let ep = classify(&parts.method, &path);

    if ep == Endpoint::Control {
        let bytes = Limited::new(body, 16 * MAX_BODY)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let mut r = control::handle(&state, &parts.method, &path, query.as_deref(), &bytes).await;
        // After the handler: a settings change to `clockOffset` shows in its own answer.
        set_header(&mut r, "date", &time::http_date(state.now()));
        return Ok(r);
    }

    let q = query.as_deref().unwrap_or("").to_ascii_lowercase();
    let delta_followup =
        ep == Endpoint::Delta && (q.contains("deltatoken=") || q.contains("skiptoken="));
    let fault = state.faults.take(ep, &path, delta_followup);
    let mut resp = None;
    if let Some(f) = &fault {
        if f.kind == FaultKind::Delay {
            tokio::time::sleep(Duration::from_millis(f.delay_ms.unwrap_or(0))).await;
        }
        resp = fault_response(&ctx, ep, f, &parts.headers);
    }
    let mut resp = match resp {
        Some(r) => r,
        None => dispatch(&state, &ctx, ep, &parts, body).await,
    };

    let status = resp.status().as_u16();
    if ep == Endpoint::Token || ep == Endpoint::OpenId {
        set_header(&mut resp, "x-ms-request-id", &ctx.request_id);
        set_header(
            &mut resp,
            "x-ms-ests-server",
            "2.1.99999.0 - entra-emulator",
        );
    } else {
        set_header(&mut resp, "request-id", &ctx.request_id);
        set_header(
            &mut resp,
            "x-ms-ags-diagnostic",
            r#"{"ServerInfo":{"DataCenter":"Emulator","Slice":"E","Ring":"0","ScaleUnit":"000","RoleInstance":"entra-emulator"}}"#,
        );
        if ep.is_graph() {
            let units = if ep == Endpoint::Users && !q.contains("select=") {
                "2"
            } else {
                "1"
            };
            set_header(&mut resp, "x-ms-resource-unit", units);
            if resp.status().is_success() {
                set_header(&mut resp, "odata-version", "4.0");
            }
        }
    }
    set_header(&mut resp, "client-request-id", &ctx.client_request_id);
    // hyper would write the real clock; this one follows `clockOffset` (state.rs).
    set_header(&mut resp, "date", &time::http_date(ctx.now));
    if let Some(f) = &fault {
        match f.kind {
            FaultKind::DropConnection => resp = truncate(resp, f.bytes).await,
            FaultKind::DropNextLink | FaultKind::WrongCount => {
                resp = rewrite_page(resp, f).await;
            }
            _ => {}
        }
    }
    state.stats.record(RequestRecord {
        method: parts.method.to_string(),
        path: match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        },
        endpoint: ep.name(),
        delta_kind: (ep == Endpoint::Delta).then(|| delta_kind(query.as_deref())),
        status,
        consistency_level: header(&parts.headers, "consistencylevel").map(str::to_string),
        client_request_id: ctx.client_request_id.clone(),
        request_id: ctx.request_id.clone(),
        fault: fault.map(|f| format!("{:?}", f.kind)),
    });
    Ok(resp)
}

/// Run the accept loop until `shutdown` turns true; then drain connections (3 s at most).
pub async fn run(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let builder = builder.clone();
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| serve(state.clone(), req));
                    match acceptor {
                        Some(acc) => {
                            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acc.accept(stream)).await else {
                                return;
                            };
                            let conn = builder.serve_connection(TokioIo::new(tls), svc);
                            let _ = watcher.watch(conn.into_owned()).await;
                        }
                        None => {
                            let conn = builder.serve_connection(TokioIo::new(stream), svc);
                            let _ = watcher.watch(conn.into_owned()).await;
                        }
                    }
                });
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(3), graceful.shutdown()).await;
}
