//! Microsoft Graph v1.0: bearer-token check and routing.

pub mod delta;
pub mod domains;
pub mod filter;
pub mod query;
pub mod users;

use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode};

use crate::http::{Ctx, Resp, graph_error, set_header};
use crate::jwt::{Jws, SigningKey};
use crate::state::AppState;
use crate::tenant::Tenant;
use crate::token::{GRAPH_APP_ID, GRAPH_AUDIENCE};
use query::{GErr, Query};

/// A request that passed the token check.
pub struct GraphReq<'a> {
    pub state: &'a AppState,
    pub ctx: &'a Ctx,
    pub tenant: Arc<Tenant>,
    pub roles: Vec<String>,
    pub headers: &'a HeaderMap,
    pub query: Query,
    pub path: &'a str,
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
fn authenticate(
    state: &AppState,
    ctx: &Ctx,
    headers: &HeaderMap,
) -> Result<(Arc<Tenant>, Vec<String>), Resp> {
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
    Ok((tenant, roles))
}

/// Which delta spellings the path uses: `delta`, `delta()`, `microsoft.graph.delta[()]`.
pub fn is_delta_segment(s: &str) -> bool {
    matches!(
        s,
        "delta" | "delta()" | "microsoft.graph.delta" | "microsoft.graph.delta()"
    )
}

/// Serve one `/v1.0/...` request.
pub fn handle(
    state: &AppState,
    ctx: &Ctx,
    method: &Method,
    path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
) -> Resp {
    let (tenant, roles) = match authenticate(state, ctx, headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let query = match Query::parse(raw_query) {
        Ok(q) => q,
        Err(e) => return graph_error(ctx, e.0, e.1, &e.2),
    };
    let g = GraphReq {
        state,
        ctx,
        tenant,
        roles,
        headers,
        query,
        path,
    };
    let rest = path.trim_start_matches("/v1.0").trim_start_matches('/');
    let mut segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    // `users('alice@contoso.com')`, the OData key form (needed for UPNs starting with `$`).
    let keyed;
    if let Some(first) = segs.first()
        && let Some(inner) = first
            .strip_prefix("users(")
            .and_then(|k| k.strip_suffix(')'))
    {
        keyed = inner.to_string();
        segs.splice(0..1, ["users", keyed.as_str()]);
    }
    if method != Method::GET {
        return graph_error(
            ctx,
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            &format!(
                "The emulator does not implement {method} on this resource; it serves the read side of Graph."
            ),
        );
    }
    match segs.as_slice() {
        ["users"] => users::list(&g),
        ["users", "$count"] => users::count(&g),
        ["users", d] if is_delta_segment(d) => delta::handle(&g),
        ["users", key] => users::get(&g, key),
        ["domains"] => domains::list(&g),
        ["domains", id] => domains::get(&g, id),
        ["organization"] => domains::organization(&g),
        ["me"] | ["me", ..] => graph_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        ),
        [first, ..] => graph_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Resource not found for the segment '{first}'."),
        ),
        [] => graph_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid request.",
        ),
    }
}
