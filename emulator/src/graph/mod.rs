//! Microsoft Graph v1.0: bearer-token check and routing.

pub mod batch;
pub mod deleted_items;
pub mod delta;
pub mod domains;
pub mod filter;
pub mod query;
pub mod user_rules;
pub mod user_writes;
pub mod users;
pub mod write_limit;

use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode};

use crate::http::{Ctx, Resp, graph_error, set_header};
use crate::jwt::{Jws, SigningKey};
use crate::state::AppState;
use crate::tenant::Tenant;
use crate::token::{GRAPH_APP_ID, GRAPH_AUDIENCE};
use query::{GErr, Query};

/// Who a valid token says is calling.
#[derive(Clone, Debug)]
pub struct Auth {
    pub tenant: Arc<Tenant>,
    /// The `roles` claim: application permissions.
    pub roles: Vec<String>,
    /// The `appid` claim (client id).
    pub app_id: String,
    /// The `oid` claim (the app's service principal).
    pub sp_id: String,
}

/// A request that passed the token check.
pub struct GraphReq<'a> {
    pub state: &'a AppState,
    pub ctx: &'a Ctx,
    pub tenant: Arc<Tenant>,
    pub roles: Vec<String>,
    pub app_id: &'a str,
    pub sp_id: &'a str,
    pub headers: &'a HeaderMap,
    pub query: Query,
    pub path: &'a str,
    pub method: &'a Method,
    pub body: &'a [u8],
    /// An item of a `$batch` request (no nested batches).
    pub in_batch: bool,
}

impl GraphReq<'_> {
    pub fn error(&self, e: GErr) -> Resp {
        graph_error(self.ctx, e.0, e.1, &e.2)
    }

    pub fn has_role(&self, any_of: &[&str]) -> bool {
        self.roles.iter().any(|r| any_of.contains(&r.as_str()))
    }

    pub fn forbidden(&self) -> Resp {
        graph_error(
            self.ctx,
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `ConsistencyLevel: eventual` present.
    pub fn eventual(&self) -> bool {
        self.header("consistencylevel")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("eventual"))
    }
}

fn unauthorized(ctx: &Ctx, msg: &str) -> Resp {
    let mut r = graph_error(
        ctx,
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        msg,
    );
    set_header(
        &mut r,
        "www-authenticate",
        &format!(
            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"{GRAPH_APP_ID}\""
        ),
    );
    r
}

/// Validate the bearer token as Graph does: signature, audience, tenant, lifetime.
fn authenticate(state: &AppState, ctx: &Ctx, headers: &HeaderMap) -> Result<Auth, Resp> {
    let raw = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim();
    let token = match raw.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ if raw.eq_ignore_ascii_case("bearer") || raw.is_empty() => "",
        _ => raw,
    };
    if token.is_empty() {
        return Err(unauthorized(ctx, "Access token is empty."));
    }
    let Some(jws) = Jws::parse(token) else {
        return Err(unauthorized(
            ctx,
            "CompactToken parsing failed with error code: 80049217",
        ));
    };
    let key =
        SigningKey::get().map_err(|_| unauthorized(ctx, "Access token validation failure."))?;
    if jws.alg() != "RS256"
        || !key
            .public()
            .verify("RS256", jws.signing_input.as_bytes(), &jws.signature)
    {
        return Err(unauthorized(ctx, "Access token validation failure."));
    }
    let aud_ok = jws.audiences().iter().any(|a| {
        a.trim_end_matches('/').eq_ignore_ascii_case(GRAPH_AUDIENCE)
            || a.eq_ignore_ascii_case(GRAPH_APP_ID)
    });
    if !aud_ok {
        return Err(unauthorized(
            ctx,
            "Access token validation failure. Invalid audience.",
        ));
    }
    let exp = jws.claim_i64("exp").unwrap_or(0);
    let nbf = jws.claim_i64("nbf").unwrap_or(0);
    if exp <= ctx.now || nbf > ctx.now {
        return Err(unauthorized(
            ctx,
            "Access token has expired or is not yet valid.",
        ));
    }
    let tenant = jws.claim_str("tid").and_then(|t| {
        state
            .tenants
            .iter()
            .find(|x| x.id.eq_ignore_ascii_case(t))
            .cloned()
    });
    let Some(tenant) = tenant else {
        return Err(unauthorized(
            ctx,
            "Access token validation failure. Invalid issuer.",
        ));
    };
    let roles = jws
        .claims
        .get("roles")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(Auth {
        tenant,
        roles,
        app_id: jws.claim_str("appid").unwrap_or_default().to_string(),
        sp_id: jws.claim_str("oid").unwrap_or_default().to_string(),
    })
}

/// Which delta spellings the path uses: `delta`, `delta()`, `microsoft.graph.delta[()]`.
pub fn is_delta_segment(s: &str) -> bool {
    matches!(
        s,
        "delta" | "delta()" | "microsoft.graph.delta" | "microsoft.graph.delta()"
    )
}

/// `$batch`, also percent-encoded as clients may send it.
fn is_batch_segment(s: &str) -> bool {
    s == "$batch" || s.eq_ignore_ascii_case("%24batch")
}

/// The path's segments after `/v1.0`, with the OData key form `users('alice@contoso.com')`
/// (needed for UPNs starting with `$`) split into `users`, `'alice@contoso.com'`.
fn segments(path: &str) -> Vec<String> {
    let rest = path.trim_start_matches("/v1.0").trim_start_matches('/');
    let mut segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(first) = segs.first()
        && let Some(inner) = first
            .strip_prefix("users(")
            .and_then(|k| k.strip_suffix(')'))
    {
        let key = inner.to_string();
        segs.splice(0..1, ["users".to_string(), key]);
    }
    segs
}

/// Is this a directory write (metered by the write limit, counted in `writes`)? Graph's
/// identity limits cost POST, PATCH, PUT and DELETE one write each (its throttling page).
pub fn is_write(method: &Method, path: &str) -> bool {
    let segs = segments(path);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    matches!(
        (method.as_str(), segs.as_slice()),
        ("POST", ["users"])
            | ("PATCH" | "DELETE", ["users", _])
            | (
                "POST",
                [
                    "directory",
                    "deletedItems",
                    _,
                    "restore" | "microsoft.graph.restore"
                ]
            )
            | ("DELETE", ["directory", "deletedItems", _])
    ) && !matches!(segs.get(1), Some(&"$count") | Some(&"delta"))
}

/// Serve one `/v1.0/...` request.
pub fn handle(
    state: &AppState,
    ctx: &Ctx,
    method: &Method,
    path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Resp {
    let auth = match authenticate(state, ctx, headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    route(
        state, ctx, &auth, method, path, raw_query, headers, body, false,
    )
}

/// Serve an authenticated request (alone, or as an item of `$batch`): writes pass the write
/// limit first and are counted.
#[allow(clippy::too_many_arguments)]
pub fn route(
    state: &AppState,
    ctx: &Ctx,
    auth: &Auth,
    method: &Method,
    path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    in_batch: bool,
) -> Resp {
    let query = match Query::parse(raw_query) {
        Ok(q) => q,
        Err(e) => return graph_error(ctx, e.0, e.1, &e.2),
    };
    let g = GraphReq {
        state,
        ctx,
        tenant: auth.tenant.clone(),
        roles: auth.roles.clone(),
        app_id: &auth.app_id,
        sp_id: &auth.sp_id,
        headers,
        query,
        path,
        method,
        body,
        in_batch,
    };
    if !is_write(method, path) {
        return serve(&g);
    }
    let resp = match write_limit::admit(&g) {
        Ok(share) => {
            let mut r = serve(&g);
            write_limit::annotate(&mut r, share);
            r
        }
        Err(r) => r,
    };
    state.stats.record_write(resp.status().as_u16());
    resp
}

fn serve(g: &GraphReq) -> Resp {
    let ctx = g.ctx;
    let method = g.method;
    let owned = segments(g.path);
    let segs: Vec<&str> = owned.iter().map(String::as_str).collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["users"]) => users::list(g),
        ("POST", ["users"]) => user_writes::create(g),
        ("GET", ["users", "$count"]) => users::count(g),
        ("GET", ["users", d]) if is_delta_segment(d) => delta::handle(g),
        ("GET", ["users", key]) => users::get(g, key),
        ("PATCH", ["users", key]) => user_writes::update(g, key),
        ("DELETE", ["users", key]) => user_writes::delete(g, key),
        ("GET", ["directory", "deletedItems"]) => deleted_items::untyped(g),
        ("GET", ["directory", "deletedItems", cast]) if deleted_items::is_cast(cast) => {
            deleted_items::list(g, cast)
        }
        ("GET", ["directory", "deletedItems", id]) => deleted_items::get(g, id),
        (
            "POST",
            [
                "directory",
                "deletedItems",
                id,
                "restore" | "microsoft.graph.restore",
            ],
        ) => deleted_items::restore(g, id),
        ("DELETE", ["directory", "deletedItems", id]) => deleted_items::purge(g, id),
        ("POST", [b]) if is_batch_segment(b) && !g.in_batch => batch::handle(g),
        ("GET", ["domains"]) => domains::list(g),
        ("GET", ["domains", id]) => domains::get(g, id),
        ("GET", ["organization"]) => domains::organization(g),
        (_, ["me"] | ["me", ..]) => graph_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        ),
        (_, [b]) if is_batch_segment(b) => graph_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid request: a $batch request cannot contain another $batch request.",
        ),
        ("GET", [first, ..]) => graph_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Resource not found for the segment '{first}'."),
        ),
        (_, ["users" | "domains" | "organization" | "directory", ..]) => graph_error(
            ctx,
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            &format!("The emulator does not implement {method} on this resource."),
        ),
        (_, [first, ..]) => graph_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Resource not found for the segment '{first}'."),
        ),
        (_, []) => graph_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid request.",
        ),
    }
}
