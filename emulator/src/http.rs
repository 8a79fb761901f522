//! Response bodies, the per-request context, and the two error shapes (Graph and Entra).

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use serde_json::{Value, json};

use crate::time;

pub type Body = BoxBody<Bytes, std::io::Error>;
pub type Resp = Response<Body>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub const GRAPH_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";
pub const PLAIN_JSON: &str = "application/json";
pub const AAD_JSON: &str = "application/json; charset=utf-8";

/// Facts about the request every handler needs.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub request_id: String,
    pub client_request_id: String,
    pub now: i64,
    pub base_url: String,
}

pub fn response(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

/// `204 No Content`: no body and no `Content-Type`, as Graph answers PATCH and DELETE.
pub fn no_content() -> Resp {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

pub fn json_response(status: StatusCode, v: &Value) -> Resp {
    response(
        status,
        PLAIN_JSON,
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

pub fn set_header(r: &mut Resp, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

/// Graph's error body: `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`.
pub fn graph_error(ctx: &Ctx, status: StatusCode, code: &str, message: &str) -> Resp {
    graph_error_details(ctx, status, code, message, &[])
}

/// Graph's error body with `details` when there are any (conflicts and invalid values carry
/// them, e.g. `[{"target":"userPrincipalName","code":"ObjectConflict"}]`;
/// shared/reference/graph-writes.md §1), between `message` and `innerError` as Graph orders them.
pub fn graph_error_details(
    ctx: &Ctx,
    status: StatusCode,
    code: &str,
    message: &str,
    details: &[Value],
) -> Resp {
    let mut error = serde_json::Map::new();
    error.insert("code".into(), json!(code));
    error.insert("message".into(), json!(message));
    if !details.is_empty() {
        error.insert("details".into(), json!(details));
    }
    error.insert(
        "innerError".into(),
        json!({
            "date": time::graph_date(ctx.now),
            "request-id": ctx.request_id,
            "client-request-id": ctx.client_request_id,
        }),
    );
    let body = json!({ "error": error });
    response(
        status,
        PLAIN_JSON,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

/// Entra's token-endpoint error: `AADSTSnnn: message` plus trace and correlation ids.
pub fn aad_error(ctx: &Ctx, status: StatusCode, error: &str, code: u32, message: &str) -> Resp {
    let ts = time::aad_timestamp(ctx.now);
    let description = format!(
        "AADSTS{code}: {message}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {ts}",
        ctx.request_id, ctx.client_request_id
    );
    let body = json!({
        "error": error,
        "error_description": description,
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": ctx.request_id,
        "correlation_id": ctx.client_request_id,
        "error_uri": format!("{}/error?code={code}", ctx.base_url),
    });
    let mut r = response(
        status,
        AAD_JSON,
        serde_json::to_vec(&body).unwrap_or_default(),
    );
    set_header(&mut r, "cache-control", "no-store, no-cache");
    set_header(&mut r, "pragma", "no-cache");
    r
}
