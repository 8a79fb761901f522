//! `/v1.0/directory/deletedItems`: the soft-deleted users (Graph keeps them 30 days; the
//! emulator until they are restored, purged or the emulator is reset). List, get, restore
//! (200 + the object; a live user holding the UPN → `ObjectConflict`) and permanent delete
//! (204), shaped as Graph's directory-deleteditems-* docs show them.
//!
//! Deleted users show the userPrincipalName Entra gives them while deleted: their object id
//! without dashes, then the UPN (`78bf875b...3563sampleuser@contoso.com`, as in Graph's
//! examples), so that the UPN is free for a new user; a restore gives it back.

use std::sync::Arc;

use http::StatusCode;
use serde_json::json;

use super::GraphReq;
use super::query;
use super::user_writes::{WErr, write_target};
use super::users::{READ_ROLES, decode_key, list_users};
use crate::http::{GRAPH_JSON, Resp, graph_error, no_content, response};
use crate::props;
use crate::user::{User, write_str};

/// The casts Graph supports on deleted items; only users are emulated (the others list empty).
const CASTS: &[(&str, &str)] = &[
    ("microsoft.graph.user", "users"),
    ("microsoft.graph.group", "groups"),
    ("microsoft.graph.application", "applications"),
    ("microsoft.graph.servicePrincipal", "servicePrincipals"),
    ("microsoft.graph.administrativeUnit", "administrativeUnits"),
    ("microsoft.graph.device", "devices"),
];

/// A type cast segment: `microsoft.graph.user`, or `graph.user` (the namespace alias Graph
/// also accepts, and the one msgraph-sdk's request builders use).
pub fn is_cast(seg: &str) -> bool {
    seg.starts_with("microsoft.graph.") || seg.starts_with("graph.")
}

/// The cast's full name: `graph.user` → `microsoft.graph.user`.
fn full_cast(seg: &str) -> String {
    match seg.strip_prefix("graph.") {
        Some(rest) => format!("microsoft.graph.{rest}"),
        None => seg.to_string(),
    }
}

/// A deleted user as deleted items show it (the UPN prefixed with the id, no dashes).
fn as_deleted(u: &User) -> User {
    let mut d = u.clone();
    let upn = format!("{}{}", u.id.replace('-', ""), u.upn());
    d.set_s(props::UPN, Some(&upn));
    d
}

/// `GET /directory/deletedItems` without a cast: Graph requires one.
pub fn untyped(g: &GraphReq) -> Resp {
    graph_error(
        g.ctx,
        StatusCode::BAD_REQUEST,
        "Request_BadRequest",
        "The OData cast type is required: use /directory/deletedItems/microsoft.graph.user (or another type).",
    )
}

/// `GET /directory/deletedItems/microsoft.graph.user` (and the other casts, empty).
pub fn list(g: &GraphReq, cast: &str) -> Resp {
    if !g.has_role(READ_ROLES) {
        return g.forbidden();
    }
    let full = full_cast(cast);
    match CASTS.iter().find(|(c, _)| c.eq_ignore_ascii_case(&full)) {
        Some((_, "users")) => {
            let users: Vec<Arc<User>> = g
                .tenant
                .deleted_users()
                .iter()
                .map(|u| Arc::new(as_deleted(u)))
                .collect();
            list_users(g, &users)
        }
        Some((_, plural)) => response(
            StatusCode::OK,
            GRAPH_JSON,
            serde_json::to_vec(&json!({
                "@odata.context": format!("{}/v1.0/$metadata#{plural}", g.ctx.base_url),
                "value": []
            }))
            .unwrap_or_default(),
        ),
        None => g.error(query::bad(
            "BadRequest",
            format!("Resource not found for the segment '{cast}'."),
        )),
    }
}

/// One deleted user: `@odata.context …#directoryObjects/$entity`, `@odata.type`, then the
/// selected (or default) properties.
fn render(g: &GraphReq, u: &User, select: Option<&[usize]>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(512);
    buf.extend_from_slice(b"{\"@odata.context\":");
    write_str(
        &mut buf,
        &format!("{}/v1.0/$metadata#directoryObjects/$entity", g.ctx.base_url),
    );
    buf.extend_from_slice(b",\"@odata.type\":\"#microsoft.graph.user\"");
    let id = props::idx("id");
    let mut ps = vec![id];
    match select {
        Some(s) => ps.extend(s.iter().copied().filter(|p| *p != id)),
        None => ps.extend(props::default_set().into_iter().filter(|p| *p != id)),
    }
    let mut obj = Vec::new();
    u.write_json(&mut obj, &ps);
    buf.push(b',');
    buf.extend_from_slice(&obj[1..]);
    buf
}

/// `GET /directory/deletedItems/{id}`
pub fn get(g: &GraphReq, raw_id: &str) -> Resp {
    if !g.has_role(READ_ROLES) {
        return g.forbidden();
    }
    let id = decode_key(raw_id);
    let select = match query::parse_select(g.query.get("$select"), false) {
        Ok(s) => s,
        Err(e) => return g.error(e),
    };
    match g.tenant.deleted_user(&id) {
        Some(u) => response(
            StatusCode::OK,
            GRAPH_JSON,
            render(g, &as_deleted(&u), select.as_deref()),
        ),
        None => WErr::not_found(&id).render(g),
    }
}

/// `POST /directory/deletedItems/{id}/restore` → 200 with the restored user.
pub fn restore(g: &GraphReq, raw_id: &str) -> Resp {
    let id = decode_key(raw_id);
    let run = || -> Result<Arc<User>, WErr> {
        // Restoring an administrator needs a privileged app, as deleting one did.
        let u = write_target(g, &id, || g.tenant.deleted_user(&id))?;
        Ok(g.tenant.restore_user(&u.id)?)
    };
    match run() {
        Ok(u) => response(StatusCode::OK, GRAPH_JSON, render(g, &u, None)),
        Err(e) => e.render(g),
    }
}

/// `DELETE /directory/deletedItems/{id}` → 204: gone for good (delta `@removed: deleted`).
pub fn purge(g: &GraphReq, raw_id: &str) -> Resp {
    let id = decode_key(raw_id);
    let run = || -> Result<(), WErr> {
        let u = write_target(g, &id, || g.tenant.deleted_user(&id))?;
        Ok(g.tenant.purge_deleted(&u.id)?)
    };
    match run() {
        Ok(()) => no_content(),
        Err(e) => e.render(g),
    }
}
