//! `POST /v1.0/$batch`: JSON batching as Graph's json-batching page and
//! shared/reference/graph-writes.md §1 ("Batch") and §8.6 describe it.
//!
//! - At most 20 requests with unique `id`s; `method`, relative `url`, optional `headers`,
//!   `body` and `dependsOn` (ids of earlier requests). A malformed envelope is a 400 for the
//!   whole batch; otherwise the batch answers 200 even when items fail.
//! - Items run one after another in the order given (a valid schedule for both independent and
//!   dependent requests). An item whose dependency did not succeed is not run: 424.
//! - Each item goes through the same routing as a request of its own (`graph::route`), so
//!   each write is metered separately by the write limit and can get its own 429 with
//!   `Retry-After` and `x-ms-throttle-scope` in the item's headers: batching saves round trips,
//!   not quota. Injected faults (`throttle`, `unavailable`, `gatewayTimeout`) that match an
//!   item's endpoint apply to the item too.
//! - Responses come back in reverse order of the requests: Graph promises no order, so a client
//!   must match them by `id`, and the emulator makes sure one that does not notices.

use std::collections::HashMap;

use base64::Engine;
use futures_util::FutureExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};

use super::{Auth, GraphReq, route};
use crate::faults::FaultKind;
use crate::http::{PLAIN_JSON, Resp, graph_error, response};
use crate::server::{classify, fault_response};

/// Graph's limit on requests in one batch.
pub const MAX_REQUESTS: usize = 20;

const BAD_PAYLOAD: &str = "Invalid batch payload format.";

fn envelope_error(g: &GraphReq, msg: &str) -> Resp {
    graph_error(g.ctx, StatusCode::BAD_REQUEST, "BadRequest", msg)
}

/// One validated item.
struct Item {
    id: String,
    method: Method,
    path: String,
    query: Option<String>,
    headers: Map<String, Value>,
    body: Option<Value>,
    depends_on: Vec<String>,
}

fn parse_items(g: &GraphReq) -> Result<Vec<Item>, Resp> {
    let v: Value = serde_json::from_slice(g.body).map_err(|_| envelope_error(g, BAD_PAYLOAD))?;
    let requests = v
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(|| envelope_error(g, BAD_PAYLOAD))?;
    if requests.len() > MAX_REQUESTS {
        // The text Graph answers (vgrem/office365-rest-python-client#835).
        return Err(envelope_error(
            g,
            "Number of requests inside batch exceed the limit.",
        ));
    }
    if requests.is_empty() {
        return Err(envelope_error(g, BAD_PAYLOAD));
    }
    let mut items: Vec<Item> = Vec::with_capacity(requests.len());
    for r in requests {
        let r = r
            .as_object()
            .ok_or_else(|| envelope_error(g, BAD_PAYLOAD))?;
        let id = match r.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(envelope_error(g, BAD_PAYLOAD)),
        };
        if items.iter().any(|i| i.id == id) {
            return Err(envelope_error(
                g,
                &format!("Batch request contains a duplicate request id '{id}'."),
            ));
        }
        let method = r
            .get("method")
            .and_then(Value::as_str)
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .ok_or_else(|| envelope_error(g, BAD_PAYLOAD))?;
        let url = r
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| envelope_error(g, BAD_PAYLOAD))?;
        if url.contains("://") {
            return Err(envelope_error(
                g,
                &format!(
                    "Invalid request URI '{url}': a batch request takes URLs relative to the version, like /users."
                ),
            ));
        }
        let (p, q) = match url.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (url, None),
        };
        let path = format!("/v1.0/{}", p.trim_start_matches('/'));
        let headers = match r.get("headers") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(h)) => h.clone(),
            Some(_) => return Err(envelope_error(g, BAD_PAYLOAD)),
        };
        let depends_on = match r.get("dependsOn") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|d| d.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| envelope_error(g, BAD_PAYLOAD))?,
            Some(_) => return Err(envelope_error(g, BAD_PAYLOAD)),
        };
        // A dependency must be an earlier request of the batch.
        if let Some(d) = depends_on
            .iter()
            .find(|d| !items.iter().any(|i| &i.id == *d))
        {
            return Err(envelope_error(
                g,
                &format!(
                    "Invalid dependency for request Id '{id}': '{d}' is not an earlier request of the batch."
                ),
            ));
        }
        items.push(Item {
            id,
            method,
            path,
            query: q,
            headers,
            body: r.get("body").filter(|b| !b.is_null()).cloned(),
            depends_on,
        });
    }
    Ok(items)
}

/// The item's own headers, plus the batch's `Authorization` (items run as the caller).
fn item_headers(g: &GraphReq, item: &Item) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(a) = g.headers.get(http::header::AUTHORIZATION) {
        h.insert(http::header::AUTHORIZATION, a.clone());
    }
    for (k, v) in &item.headers {
        let Some(v) = v.as_str() else { continue };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.insert(name, value);
        }
    }
    h
}

/// Run one item as a request of its own.
fn run_item(g: &GraphReq, item: &Item) -> Resp {
    let headers = item_headers(g, item);
    let ep = classify(&item.method, &item.path);
    g.state.stats.record_batch_item(ep.name());
    if item.body.is_some() && !headers.contains_key(http::header::CONTENT_TYPE) {
        return graph_error(
            g.ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Content-Type header must be specified for a request with a body.",
        );
    }
    if let Some(f) = g.state.faults.take(ep, &item.path, false)
        && matches!(
            f.kind,
            FaultKind::Throttle | FaultKind::Unavailable | FaultKind::GatewayTimeout
        )
        && let Some(r) = fault_response(g.ctx, ep, &f, &headers)
    {
        if super::is_write(&item.method, &item.path) {
            g.state.stats.record_write(r.status().as_u16());
        }
        return r;
    }
    let body = item
        .body
        .as_ref()
        .map(|b| serde_json::to_vec(b).unwrap_or_default())
        .unwrap_or_default();
    let auth = Auth {
        tenant: g.tenant.clone(),
        roles: g.roles.clone(),
        app_id: g.app_id.to_string(),
        sp_id: g.sp_id.to_string(),
    };
    route(
        g.state,
        g.ctx,
        &auth,
        &item.method,
        &item.path,
        item.query.as_deref(),
        &headers,
        &body,
        true,
    )
}

/// The JSON of one answered item: `{"id","status","headers","body"}`.
fn item_json(id: &str, resp: Resp) -> Value {
    let (parts, body) = resp.into_parts();
    // Every response the emulator builds has its whole body in memory: ready at once.
    let bytes = body
        .collect()
        .now_or_never()
        .and_then(Result::ok)
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut headers = Map::new();
    for (name, shown) in [
        ("content-type", "Content-Type"),
        ("location", "Location"),
        ("retry-after", "Retry-After"),
        ("x-ms-throttle-scope", "x-ms-throttle-scope"),
        ("x-ms-throttle-information", "x-ms-throttle-information"),
        (
            "x-ms-throttle-limit-percentage",
            "x-ms-throttle-limit-percentage",
        ),
    ] {
        if let Some(v) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
            headers.insert(shown.into(), Value::String(v.to_string()));
        }
    }
    if parts.status.is_success() && !bytes.is_empty() {
        headers.insert("OData-Version".into(), Value::String("4.0".into()));
    }
    let mut out = json!({"id": id, "status": parts.status.as_u16(), "headers": headers});
    if !bytes.is_empty() {
        let json_body = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"));
        out["body"] = match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if json_body => v,
            // Graph base64-encodes bodies that are not JSON.
            _ => Value::String(base64::engine::general_purpose::STANDARD.encode(&bytes)),
        };
    }
    out
}

/// `POST /v1.0/$batch`
pub fn handle(g: &GraphReq) -> Resp {
    let items = match parse_items(g) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut status: HashMap<String, u16> = HashMap::with_capacity(items.len());
    let mut answers = Vec::with_capacity(items.len());
    for item in &items {
        let failed_dependency = item
            .depends_on
            .iter()
            .any(|d| !status.get(d).is_some_and(|s| (200..300).contains(s)));
        let resp = if failed_dependency {
            graph_error(
                g.ctx,
                StatusCode::FAILED_DEPENDENCY,
                "FailedDependency",
                "The request was not run because a request it depends on failed.",
            )
        } else {
            run_item(g, item)
        };
        status.insert(item.id.clone(), resp.status().as_u16());
        answers.push(item_json(&item.id, resp));
    }
    answers.reverse();
    response(
        StatusCode::OK,
        PLAIN_JSON,
        serde_json::to_vec(&json!({ "responses": answers })).unwrap_or_default(),
    )
}
