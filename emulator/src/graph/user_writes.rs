//! `POST /v1.0/users`, `PATCH` and `DELETE /v1.0/users/{id | userPrincipalName}`: Graph's write
//! contract as shared/reference/graph-writes.md §1–§3 and §8 gather it: required properties,
//! the value rules of `user_rules.rs`, federated domains, users synced from on-premises AD,
//! privileged users, and Graph's exact error bodies where the reference has them (the README
//! lists each message with its source).

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::GraphReq;
use super::user_rules::{self as rules, CLOUD_WRITABLE_WHEN_SYNCED, READ_ONLY, REQUIRED};
use super::users::{decode_key, not_found};
use crate::http::{GRAPH_JSON, Resp, graph_error_details, no_content, response, set_header};
use crate::props::{self, PROPS, Slot};
use crate::roles;
use crate::tenant::{MutationError, Snapshot};
use crate::time;
use crate::user::{User, write_str};

/// Application permissions that allow user writes (Graph's create/update/delete user docs).
pub const WRITE_ROLES: &[&str] = &["User.ReadWrite.All", "Directory.ReadWrite.All"];

pub const UNVERIFIED_DOMAIN: &str = "The domain portion of the userPrincipalName property is invalid. You must use one of the verified domain names in your organization.";
pub const NO_PASSWORD: &str = "A password must be specified to create a new user.";
pub const WEAK_PASSWORD: &str = "The specified password does not comply with password complexity requirements. Please provide a different password.";
pub const SOURCE_ANCHOR: &str =
    "SourceAnchor is a required property for creation of a federated user.";
pub const EXTERNAL_SERVICE: &str = "Unable to update the specified properties for objects that have originated within an external service.";
pub const BAD_JSON: &str = "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.";
/// `rejectFederatedPassword` only: Graph's text for this [V] case is unknown.
pub const FEDERATED_PASSWORD: &str =
    "The passwordProfile property cannot be set for a user in a federated domain.";

/// A Graph error before it is rendered; `details` as Graph sends them.
#[derive(Debug)]
pub struct WErr {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<Value>,
}

impl WErr {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> WErr {
        WErr {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn bad(message: impl Into<String>) -> WErr {
        WErr::new(StatusCode::BAD_REQUEST, "Request_BadRequest", message)
    }

    pub fn forbidden() -> WErr {
        WErr::new(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )
    }

    pub fn not_found(key: &str) -> WErr {
        let (status, code, message) = not_found(key);
        WErr::new(status, code, message)
    }

    /// "Invalid value specified for property 'x' of resource 'User'." with an `InvalidValue`
    /// detail (the shape of graph-docs-contrib#6580, reference §1).
    pub fn invalid(prop: &str) -> WErr {
        WErr {
            details: vec![json!({"code": "InvalidValue", "target": prop})],
            ..WErr::bad(format!(
                "Invalid value specified for property '{prop}' of resource 'User'."
            ))
        }
    }

    /// A missing required property (the text Graph's team gave in msgraph-sdk-powershell#230).
    pub fn required(prop: &str) -> WErr {
        WErr::bad(format!(
            "Property {prop} value is required but is empty or missing."
        ))
    }

    /// A uniqueness conflict: `details:[{target, code:"ObjectConflict"}]` (graph-docs#1508).
    pub fn conflict(prop: &str) -> WErr {
        WErr {
            details: vec![json!({"target": prop, "code": "ObjectConflict"})],
            ..WErr::bad(format!(
                "Another object with the same value for property {prop} already exists."
            ))
        }
    }

    /// A `mail` that clashes with another object's proxy addresses: `ObjectConflict` and
    /// `ConflictingObjects` details (graph-docs-contrib#8421).
    pub fn proxy_conflict(other_id: &str) -> WErr {
        let msg = "Another object with the same value for property proxyAddresses already exists.";
        WErr {
            details: vec![
                json!({"code": "ObjectConflict", "message": msg, "target": "proxyAddresses"}),
                json!({"code": "ConflictingObjects", "message": msg, "target": format!("User_{other_id}")}),
            ],
            ..WErr::bad(msg)
        }
    }

    pub fn render(self, g: &GraphReq) -> Resp {
        graph_error_details(g.ctx, self.status, self.code, &self.message, &self.details)
    }
}

impl From<MutationError> for WErr {
    fn from(e: MutationError) -> WErr {
        match e {
            MutationError::NotFound(k) => WErr::not_found(&k),
            MutationError::DuplicateUpn => WErr::conflict("userPrincipalName"),
            MutationError::BadRequest(m) => WErr::bad(m),
        }
    }
}

/// Uniqueness other than the UPN (which `Tenant` checks): `onPremisesImmutableId` and the
/// primary SMTP address `mail` makes, among live users other than `except`.
fn check_unique(snap: &Snapshot, user: &User, except: Option<&str>) -> Result<(), WErr> {
    let others = || {
        snap.users
            .iter()
            .filter(move |o| except.is_none_or(|e| !o.id.eq_ignore_ascii_case(e)))
    };
    if let Some(imm) = user.s(props::IMMUTABLE_ID).filter(|s| !s.is_empty())
        && others().any(|o| o.s(props::IMMUTABLE_ID) == Some(imm))
    {
        return Err(WErr::conflict("onPremisesImmutableId"));
    }
    if let Some(mail) = user.s(props::MAIL).filter(|s| !s.is_empty()) {
        let clash = others().find(|o| {
            o.s(props::MAIL)
                .is_some_and(|m| m.eq_ignore_ascii_case(mail))
                || o.lists[props::PROXY_ADDRESSES].iter().any(|p| {
                    p.split_once(':')
                        .is_some_and(|(_, a)| a.eq_ignore_ascii_case(mail))
                })
        });
        if let Some(o) = clash {
            return Err(WErr::proxy_conflict(&o.id));
        }
    }
    Ok(())
}

/// The request body as a JSON object, without annotations (`@odata.type`, which SDKs send)
/// and directory extension attributes (`extension_<appid>_<name>`: accepted, not kept).
fn body(g: &GraphReq) -> Result<Map<String, Value>, WErr> {
    let v: Value = serde_json::from_slice(g.body)
        .map_err(|_| WErr::new(StatusCode::BAD_REQUEST, "BadRequest", BAD_JSON))?;
    let Value::Object(mut m) = v else {
        return Err(WErr::new(StatusCode::BAD_REQUEST, "BadRequest", BAD_JSON));
    };
    m.retain(|k, _| !k.starts_with('@') && !k.contains("@odata.") && !k.starts_with("extension_"));
    Ok(m)
}

/// Each named property must exist, be writable and have the right JSON type.
fn check_properties(m: &Map<String, Value>) -> Result<(), WErr> {
    for (k, v) in m {
        let Some(p) = props::lookup(k) else {
            return Err(WErr::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!(
                    "The property '{k}' does not exist on type 'microsoft.graph.user'. Make sure to only use property names that are defined by the type or mark the type as open type."
                ),
            ));
        };
        let name = PROPS[p].name;
        if READ_ONLY.contains(&name) {
            return Err(WErr::bad(format!(
                "Property '{name}' is read-only and cannot be set."
            )));
        }
        let ok = match PROPS[p].slot {
            Slot::Str(_) => v.is_string() || v.is_null(),
            Slot::Enabled => v.is_boolean() || v.is_null(),
            Slot::List(_) => {
                v.is_null() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
            }
            Slot::Extra { collection } => v.is_null() || v.is_array() == collection,
            Slot::Id => false,
        };
        if !ok || (name == "passwordProfile" && !v.is_object()) {
            return Err(WErr::invalid(name));
        }
        if name == "userType"
            && let Some(t) = v.as_str()
            && t != "Member"
            && t != "Guest"
        {
            return Err(WErr::invalid(name));
        }
    }
    Ok(())
}

/// A property of the body by its canonical name (bodies may spell names in any case).
fn get<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    m.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn str_of<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    get(m, name).and_then(Value::as_str)
}

/// The stored form of `passwordProfile`: never the password itself.
fn stored_profile(p: &Map<String, Value>, creating: bool) -> Value {
    let flag = |k: &str, default: bool| p.get(k).and_then(Value::as_bool).unwrap_or(default);
    json!({
        "password": null,
        "forceChangePasswordNextSignIn": flag("forceChangePasswordNextSignIn", creating),
        "forceChangePasswordNextSignInWithMfa": flag("forceChangePasswordNextSignInWithMfa", false),
    })
}

/// The password rules for a `passwordProfile` on a user of domain kind `federated`; `Ok(true)`
/// when it carries a password.
fn check_password(
    g: &GraphReq,
    profile: Option<&Value>,
    federated: bool,
    creating: bool,
) -> Result<bool, WErr> {
    if federated && profile.is_some() && g.state.reject_federated_password() {
        return Err(WErr::bad(FEDERATED_PASSWORD));
    }
    let password = profile
        .and_then(|p| p.get("password"))
        .and_then(Value::as_str);
    match password {
        None | Some("") if creating && !federated => Err(WErr::bad(NO_PASSWORD)),
        None | Some("") => Ok(false),
        Some(pw) if !rules::password_is_strong(pw) => Err(WErr::bad(WEAK_PASSWORD)),
        Some(_) => Ok(true),
    }
}

/// UPN and mailNickname rules shared by create and update.
fn check_upn(g: &GraphReq, upn: &str) -> Result<bool, WErr> {
    if !rules::upn_is_valid(upn) {
        return Err(WErr::invalid("userPrincipalName"));
    }
    match g.tenant.domain_of(upn) {
        Some(d) if d.verified => Ok(d.federated),
        _ => Err(WErr::bad(UNVERIFIED_DOMAIN)),
    }
}

/// Set `mail` and the primary SMTP proxy address it makes (Graph keeps `proxyAddresses` in
/// step with `mail`; the old primary stays as a secondary `smtp:` address).
fn set_mail(user: &mut User, mail: Option<&str>) {
    user.set_s(props::MAIL, mail);
    let Some(mail) = mail.filter(|m| !m.is_empty()) else {
        return;
    };
    let mut list: Vec<String> = user.lists[props::PROXY_ADDRESSES]
        .iter()
        .filter(|p| {
            !p.split_once(':')
                .is_some_and(|(_, a)| a.eq_ignore_ascii_case(mail))
        })
        .map(|p| match p.strip_prefix("SMTP:") {
            Some(a) => format!("smtp:{a}"),
            None => p.to_string(),
        })
        .collect();
    list.insert(0, format!("SMTP:{mail}"));
    let refs: Vec<&str> = list.iter().map(String::as_str).collect();
    user.set_list(props::PROXY_ADDRESSES, &refs);
}

/// Apply body properties to a user (types already checked); the indexes it set.
fn apply(user: &mut User, m: &Map<String, Value>, now: i64, creating: bool) -> Vec<usize> {
    let mut changed = Vec::new();
    for (k, v) in m {
        let Some(p) = props::lookup(k) else { continue };
        let name = PROPS[p].name;
        match name {
            "mail" => set_mail(user, v.as_str()),
            "passwordProfile" => {
                let profile = v.as_object().cloned().unwrap_or_default();
                if profile
                    .get("password")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
                {
                    let last = props::idx("lastPasswordChangeDateTime");
                    let _ = user.set_prop(last, &Value::String(time::iso_z(now)));
                    changed.push(last);
                }
                let _ = user.set_prop(p, &stored_profile(&profile, creating));
            }
            _ => {
                let _ = user.set_prop(p, v);
            }
        }
        changed.push(p);
        if name == "mail" {
            changed.push(props::idx("proxyAddresses"));
        }
    }
    changed
}

/// The user a write (update, delete, restore, purge) acts on, in the order Graph checks: the
/// app must hold a write permission (else 403), `found` must give the user (else 404), and the
/// app must outrank any directory role the user holds ([`may_change`], else 403).
pub fn write_target(
    g: &GraphReq,
    key: &str,
    found: impl FnOnce() -> Option<Arc<User>>,
) -> Result<Arc<User>, WErr> {
    if !g.has_role(WRITE_ROLES) {
        return Err(WErr::forbidden());
    }
    let user = found().ok_or_else(|| WErr::not_found(key))?;
    if !may_change(g, &user.id) {
        return Err(WErr::forbidden());
    }
    Ok(user)
}

/// May this app change this user? Not a member of a directory role unless the app holds a
/// role that outranks it (`roles.rs`).
pub fn may_change(g: &GraphReq, user_id: &str) -> bool {
    let user_roles = g.tenant.roles_of(&[user_id]);
    if user_roles.is_empty() {
        return true;
    }
    let me: Vec<&str> = [g.app_id, g.sp_id]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    let app_roles = g.tenant.roles_of(&me);
    roles::may_write(
        &app_roles.iter().collect::<Vec<_>>(),
        &user_roles.iter().collect::<Vec<_>>(),
    )
}

fn is_synced(u: &User) -> bool {
    let p = props::idx("onPremisesSyncEnabled");
    let mut b = Vec::new();
    u.write_prop(&mut b, p);
    b.ends_with(b":true")
}

/// `{"@odata.context": ..., ["@odata.type": ...,] "id": ..., <the default properties>}`:
/// the shape of the created user in Graph's create-user docs (id first).
pub fn entity(g: &GraphReq, u: &User, context: &str, odata_type: Option<&str>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(512);
    buf.extend_from_slice(b"{\"@odata.context\":");
    write_str(
        &mut buf,
        &format!("{}/v1.0/$metadata#{context}", g.ctx.base_url),
    );
    if let Some(t) = odata_type {
        buf.extend_from_slice(b",\"@odata.type\":");
        write_str(&mut buf, t);
    }
    let id = props::idx("id");
    let mut ps = vec![id];
    ps.extend(props::default_set().into_iter().filter(|p| *p != id));
    let mut obj = Vec::new();
    u.write_json(&mut obj, &ps);
    buf.push(b',');
    buf.extend_from_slice(&obj[1..]);
    buf
}

/// `POST /v1.0/users`
pub fn create(g: &GraphReq) -> Resp {
    match create_user(g) {
        Ok(u) => {
            let mut r = response(
                StatusCode::CREATED,
                GRAPH_JSON,
                entity(g, &u, "users/$entity", None),
            );
            // As Graph answers a create: the new object under the directory's own path.
            set_header(
                &mut r,
                "location",
                &format!(
                    "{}/v2/{}/directoryObjects/{}/Microsoft.DirectoryServices.User",
                    g.ctx.base_url, g.tenant.id, u.id
                ),
            );
            r
        }
        Err(e) => e.render(g),
    }
}

fn create_user(g: &GraphReq) -> Result<Arc<User>, WErr> {
    if !g.has_role(WRITE_ROLES) {
        return Err(WErr::forbidden());
    }
    let m = body(g)?;
    check_properties(&m)?;
    for name in REQUIRED {
        match get(&m, name) {
            None | Some(Value::Null) => return Err(WErr::required(name)),
            Some(Value::String(s)) if s.is_empty() => return Err(WErr::required(name)),
            _ => {}
        }
    }
    let upn = str_of(&m, "userPrincipalName").unwrap_or_default();
    let federated = check_upn(g, upn)?;
    if !rules::mail_nickname_is_valid(str_of(&m, "mailNickname").unwrap_or_default()) {
        return Err(WErr::invalid("mailNickname"));
    }
    let immutable = str_of(&m, "onPremisesImmutableId").filter(|s| !s.is_empty());
    match immutable {
        None if federated => return Err(WErr::bad(SOURCE_ANCHOR)),
        Some(id) if !rules::immutable_id_is_valid(id) => {
            return Err(WErr::invalid("onPremisesImmutableId"));
        }
        _ => {}
    }
    check_password(g, get(&m, "passwordProfile"), federated, true)?;

    let mut user = User::new(&uuid::Uuid::new_v4().to_string());
    user.set_s(props::USER_TYPE, Some("Member"));
    user.set_s(props::CREATED, Some(&time::iso_z(g.ctx.now)));
    apply(&mut user, &m, g.ctx.now, true);
    let probe = user.clone();
    g.tenant
        .insert_user(user, |snap| check_unique(snap, &probe, None))
}

/// `PATCH /v1.0/users/{id | userPrincipalName}` → 204 No Content.
pub fn update(g: &GraphReq, raw_key: &str) -> Resp {
    match update_user(g, &decode_key(raw_key)) {
        Ok(()) => no_content(),
        Err(e) => e.render(g),
    }
}

fn update_user(g: &GraphReq, key: &str) -> Result<(), WErr> {
    let old = write_target(g, key, || g.tenant.snapshot().find(key).cloned())?;
    let m = body(g)?;
    check_properties(&m)?;
    if m.is_empty() {
        return Ok(());
    }
    if is_synced(&old)
        && m.keys().any(|k| {
            !CLOUD_WRITABLE_WHEN_SYNCED
                .iter()
                .any(|w| w.eq_ignore_ascii_case(k))
        })
    {
        return Err(WErr::bad(EXTERNAL_SERVICE));
    }
    for name in REQUIRED {
        match get(&m, name) {
            Some(Value::Null) => return Err(WErr::invalid(name)),
            Some(Value::String(s)) if s.is_empty() => return Err(WErr::invalid(name)),
            _ => {}
        }
    }
    let was_federated = g.tenant.domain_of(old.upn()).is_some_and(|d| d.federated);
    let federated = match str_of(&m, "userPrincipalName") {
        Some(upn) if !upn.eq_ignore_ascii_case(old.upn()) => check_upn(g, upn)?,
        _ => was_federated,
    };
    if let Some(nick) = str_of(&m, "mailNickname")
        && !rules::mail_nickname_is_valid(nick)
    {
        return Err(WErr::invalid("mailNickname"));
    }
    let current = old.s(props::IMMUTABLE_ID).filter(|s| !s.is_empty());
    let immutable = match get(&m, "onPremisesImmutableId") {
        None => current,
        Some(v) => v.as_str().filter(|s| !s.is_empty()),
    };
    if immutable != current {
        // A federated user's immutable id is its sign-in anchor: it never changes
        // (reference §2; the workaround moves the user to a managed domain first).
        if was_federated {
            return Err(WErr::invalid("onPremisesImmutableId"));
        }
        if let Some(id) = immutable
            && !rules::immutable_id_is_valid(id)
        {
            return Err(WErr::invalid("onPremisesImmutableId"));
        }
    }
    if federated && !was_federated && immutable.is_none() {
        return Err(WErr::bad(SOURCE_ANCHOR));
    }
    if let Some(p) = get(&m, "passwordProfile") {
        check_password(g, Some(p), federated, false)?;
    }
    let now = g.ctx.now;
    g.tenant.update_with(&old.id, |snap, cur| {
        let mut user = (**cur).clone();
        let changed = apply(&mut user, &m, now, false);
        check_unique(snap, &user, Some(&cur.id))?;
        Ok::<_, WErr>((user, changed))
    })?;
    Ok(())
}

/// `DELETE /v1.0/users/{id | userPrincipalName}` → 204: a soft delete (the user moves to
/// `directory/deletedItems`, restorable; delta reports `@removed: changed`).
pub fn delete(g: &GraphReq, raw_key: &str) -> Resp {
    match delete_user(g, &decode_key(raw_key)) {
        Ok(()) => no_content(),
        Err(e) => e.render(g),
    }
}

fn delete_user(g: &GraphReq, key: &str) -> Result<(), WErr> {
    let old = write_target(g, key, || g.tenant.snapshot().find(key).cloned())?;
    // Its source of authority is on-premises AD: Entra Connect deletes it, not Graph.
    if is_synced(&old) {
        return Err(WErr::bad(EXTERNAL_SERVICE));
    }
    g.tenant.delete_user_at(&old.id, false, g.ctx.now)?;
    Ok(())
}
