//! Writing users into Entra ID through Graph (docs/behaviour.md §6): create, update, delete,
//! and the deleted items a returning user is restored from.
//!
//! The mapping from the common [`DesiredUser`]:
//!
//! | Graph                     | from                                                          |
//! |---------------------------|---------------------------------------------------------------|
//! | `userPrincipalName`       | `desired.upn` when set, else `desired.user_name`              |
//! | `mailNickname`            | the UPN's local part made valid ([`mail_nickname`])           |
//! | `displayName`             | `display_name`; the UPN's local part when absent or empty     |
//! | `givenName` / `surname`   | `given_name` / `surname`                                      |
//! | `accountEnabled`          | `active`                                                      |
//! | `onPremisesImmutableId`   | `immutable_id` (standard base64: never `_` or `$`)            |
//! | `passwordProfile`         | create only: a random password ([`super::password`]), `forceChangePasswordNextSignIn: false` |
//!
//! `email` is not written (not a sync item of this direction).
//!
//! Graph has no `If-Match` for users, so an update or delete first reads the user
//! (`$select`, one GET) and writes only while it still carries the expected Immutable ID
//! ([`DirectoryError::PreconditionFailed`] otherwise), is not synced from on-premises AD and
//! is not a guest ([`DirectoryError::Forbidden`]). The PATCH then names only the properties
//! that differ from what that read found, `null` clearing; with nothing to change nothing is
//! sent. `mailNickname` follows the UPN: an update sets it only together with a new UPN, so an
//! adopted user keeps the alias it had while its UPN stays.
//!
//! Errors keep the status, Graph's `error.code` and, for `details`, the detail code and the
//! property it names; never Graph's message (which may quote values). The mapping:
//!
//! | Graph answers                                              | error                                  |
//! |------------------------------------------------------------|----------------------------------------|
//! | 400/409 with an `ObjectConflict` detail (duplicate UPN, Immutable ID, proxy address) | `Conflict` (the engine re-plans a create) |
//! | 400 "…originated within an external service" (AD-synced)   | `Forbidden`                            |
//! | any other 400 (invalid value, unverified domain, password, federated user without Immutable ID) | `Rejected`, with a fixed hint |
//! | 403 on a write, the token holding `User.ReadWrite.All` or `Directory.ReadWrite.All` (a privileged user) | `Forbidden` (per row) |
//! | 403 on a write, the token's `roles` lacking both            | `InvalidCredentials` (every write would fail) |
//! | 401 (after one token refresh), 403 on the reading GET      | `InvalidCredentials`                   |
//! | 404                                                        | `NotFound` (update, restore); a delete of a gone user is done |
//! | 429 / 5xx after the retries                                | `Unavailable`                          |

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{GraphClient, graph_error};
use crate::clients::outbound::{HttpResponse, Redactor, cut, encode_id, error_code, status_error};
use crate::directory::{DesiredUser, DirectoryError, User};

/// What the read before an update or delete selects.
pub const TARGET_SELECT: &str = "id,userPrincipalName,mailNickname,displayName,givenName,surname,accountEnabled,onPremisesImmutableId,onPremisesSyncEnabled,userType";

/// Application permissions that let an app write users.
const WRITE_ROLES: &[&str] = &["User.ReadWrite.All", "Directory.ReadWrite.All"];

/// The userPrincipalName a desired user is written with.
pub fn graph_upn(desired: &DesiredUser) -> &str {
    desired.upn.as_deref().unwrap_or(&desired.user_name)
}

pub use crate::directory::entra::{check_immutable_id, check_upn};

/// The `mailNickname` for `upn`: its local part with every character Graph refuses in an alias
/// left out (non-ASCII, white space, `@ , ; : < > ( ) [ ] \ "`), no leading or trailing dots, at
/// most 64 characters; `user` if nothing is left.
pub fn mail_nickname(upn: &str) -> String {
    let local = upn.split_once('@').map_or(upn, |(l, _)| l);
    let kept: String = local
        .chars()
        .filter(|c| c.is_ascii_graphic() && !"@,;:<>()[]\\\"".contains(*c))
        .take(64)
        .collect();
    let trimmed = kept.trim_matches('.');
    if trimmed.is_empty() {
        "user".to_string()
    } else {
        trimmed.to_string()
    }
}

/// The UPN's local part.
fn local_part(upn: &str) -> &str {
    upn.split_once('@').map_or(upn, |(l, _)| l)
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// `displayName`: Graph requires one.
fn display_name<'a>(desired: &'a DesiredUser, upn: &'a str) -> &'a str {
    non_empty(&desired.display_name).unwrap_or_else(|| local_part(upn))
}

/// Checks what a write would send before anything is sent.
pub(super) fn check_desired(what: &str, desired: &DesiredUser) -> Result<(), DirectoryError> {
    let upn = graph_upn(desired);
    check_upn(upn).map_err(|why| {
        DirectoryError::Rejected(format!(
            "{what}: the userPrincipalName is not one Graph accepts: {why}"
        ))
    })?;
    check_immutable_id(&desired.immutable_id)
        .map_err(|why| DirectoryError::Rejected(format!("{what}: {why}")))
}

/// The body of `POST /v1.0/users`.
pub(super) fn create_body(desired: &DesiredUser, password: &SecretString) -> Value {
    let upn = graph_upn(desired);
    let mut body = json!({
        "accountEnabled": desired.active,
        "displayName": display_name(desired, upn),
        "mailNickname": mail_nickname(upn),
        "userPrincipalName": upn,
        "onPremisesImmutableId": desired.immutable_id,
        "passwordProfile": {
            "forceChangePasswordNextSignIn": false,
            "password": password.expose_secret(),
        },
    });
    if let Some(g) = non_empty(&desired.given_name) {
        body["givenName"] = json!(g);
    }
    if let Some(s) = non_empty(&desired.surname) {
        body["surname"] = json!(s);
    }
    body
}

/// A user as the read before a write sees it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(super) struct Target {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub user_principal_name: Option<String>,
    #[serde(default)]
    pub mail_nickname: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub surname: Option<String>,
    #[serde(default)]
    pub account_enabled: Option<bool>,
    #[serde(default)]
    pub on_premises_immutable_id: Option<String>,
    #[serde(default)]
    pub on_premises_sync_enabled: Option<bool>,
    #[serde(default)]
    pub user_type: Option<String>,
}

impl Target {
    fn immutable_id(&self) -> Option<&str> {
        non_empty(&self.on_premises_immutable_id)
    }

    /// The write guards: never an AD-synced user or a guest; only while it carries `expected`.
    /// A read that lacks what every user has is a protocol error.
    pub(super) fn require_keys(&self, what: &str) -> Result<(), DirectoryError> {
        if self.id.as_deref().is_none_or(str::is_empty)
            || self
                .user_principal_name
                .as_deref()
                .is_none_or(str::is_empty)
            || self.account_enabled.is_none()
        {
            return Err(DirectoryError::Protocol(format!(
                "{what}: the user read back without id, userPrincipalName or accountEnabled"
            )));
        }
        Ok(())
    }

    pub(super) fn check(&self, what: &str, expected: Option<&str>) -> Result<(), DirectoryError> {
        if self.on_premises_sync_enabled == Some(true) {
            return Err(DirectoryError::Forbidden(format!(
                "{what}: the user is synced from on-premises AD (onPremisesSyncEnabled); dirsync never writes it"
            )));
        }
        if self
            .user_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("Guest"))
        {
            return Err(DirectoryError::Forbidden(format!(
                "{what}: the user is a guest (userType Guest); dirsync never writes guests"
            )));
        }
        if self.immutable_id() != expected.filter(|e| !e.is_empty()) {
            return Err(DirectoryError::PreconditionFailed(format!(
                "{what}: the user's onPremisesImmutableId is not the recorded Immutable ID; nothing written"
            )));
        }
        Ok(())
    }
}

/// The PATCH body bringing `target` to `desired`: only the properties that differ, `null`
/// clearing `givenName`/`surname`. Empty when nothing differs.
pub(super) fn patch_body(target: &Target, desired: &DesiredUser) -> Map<String, Value> {
    let mut patch = Map::new();
    let upn = graph_upn(desired);
    if target.user_principal_name.as_deref() != Some(upn) {
        patch.insert("userPrincipalName".into(), json!(upn));
        let nick = mail_nickname(upn);
        if target.mail_nickname.as_deref() != Some(nick.as_str()) {
            patch.insert("mailNickname".into(), json!(nick));
        }
    }
    let display = display_name(desired, upn);
    if target.display_name.as_deref() != Some(display) {
        patch.insert("displayName".into(), json!(display));
    }
    for (name, have, want) in [
        ("givenName", &target.given_name, &desired.given_name),
        ("surname", &target.surname, &desired.surname),
    ] {
        let want = non_empty(want);
        if non_empty(have) != want {
            patch.insert(name.into(), want.map_or(Value::Null, |w| json!(w)));
        }
    }
    if target.account_enabled != Some(desired.active) {
        patch.insert("accountEnabled".into(), json!(desired.active));
    }
    if target.immutable_id() != Some(desired.immutable_id.as_str()) {
        patch.insert(
            "onPremisesImmutableId".into(),
            json!(desired.immutable_id.as_str()),
        );
    }
    patch
}

/// Whether an access token's `roles` claim holds a write permission: `None` when the token
/// cannot be read (not a JWT, no `roles`), which is then not held against the app.
pub(super) fn token_can_write(token: &str) -> Option<bool> {
    #[derive(Deserialize)]
    struct Claims {
        roles: Option<Vec<String>>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    let roles = claims.roles?;
    Some(
        roles
            .iter()
            .any(|r| WRITE_ROLES.iter().any(|w| w.eq_ignore_ascii_case(r))),
    )
}

/// A Graph answer to a write as a classified error (see the module's table). `can_write`: what
/// the token's `roles` said ([`token_can_write`]).
pub(super) fn write_error(
    what: &str,
    resp: &HttpResponse,
    can_write: Option<bool>,
) -> DirectoryError {
    #[derive(Deserialize)]
    struct Body {
        error: Option<ErrorBody>,
    }
    #[derive(Deserialize)]
    struct ErrorBody {
        code: Option<String>,
        message: Option<String>,
        #[serde(default)]
        details: Vec<Detail>,
    }
    #[derive(Deserialize)]
    struct Detail {
        code: Option<String>,
        target: Option<String>,
    }
    let status = resp.status.as_u16();
    let body = serde_json::from_slice::<Body>(&resp.body)
        .ok()
        .and_then(|b| b.error);
    let code = body
        .as_ref()
        .and_then(|b| b.code.as_deref())
        .and_then(error_code);
    let message = body
        .as_ref()
        .and_then(|b| b.message.as_deref())
        .unwrap_or("");
    let details = body.as_ref().map_or(&[][..], |b| &b.details[..]);
    let head = match code {
        Some(c) => format!("{what}: HTTP {status} {c}"),
        None => format!("{what}: HTTP {status}"),
    };
    // A detail as "<code> on <property>", both only when they look like tokens.
    let detail = |d: &Detail| {
        let c = d.code.as_deref().and_then(error_code)?;
        Some(match d.target.as_deref().and_then(error_code) {
            Some(t) => format!("{c} on {t}"),
            None => c.to_string(),
        })
    };
    let conflict = details
        .iter()
        .find(|d| d.code.as_deref() == Some("ObjectConflict"));
    match status {
        400 | 409 if conflict.is_some() || status == 409 => {
            let d = conflict.and_then(detail);
            DirectoryError::Conflict(cut(&match d {
                Some(d) => format!("{head} {d} (another user holds this value)"),
                None => format!("{head} (another user holds this value)"),
            }))
        }
        400 if message.contains("originated within an external service") => {
            DirectoryError::Forbidden(cut(&format!(
                "{head}: the user is synced from on-premises AD; Graph refuses changes to it"
            )))
        }
        400 => {
            let hint = if message.contains("domain portion of the userPrincipalName") {
                Some("the UPN's domain is not a verified domain of the tenant".to_string())
            } else if message.contains("password complexity")
                || message.contains("password must be")
            {
                Some("Graph refused the generated password".to_string())
            } else if message.contains("SourceAnchor") {
                Some("a user of a federated domain needs an Immutable ID".to_string())
            } else {
                details.iter().find_map(detail)
            };
            DirectoryError::Rejected(cut(&match hint {
                Some(h) => format!("{head} ({h})"),
                None => head,
            }))
        }
        403 if can_write == Some(false) => DirectoryError::InvalidCredentials(cut(&format!(
            "{head}: the app lacks the User.ReadWrite.All application permission"
        ))),
        403 => DirectoryError::Forbidden(cut(&format!(
            "{head}: privileged user (an administrator role the app does not outrank)"
        ))),
        _ => status_error(what, status, code),
    }
}

impl GraphClient {
    /// Sends one write: waits for the pacer, then sends with the bearer token (refreshed once
    /// on a 401). 429 and 5xx are retried by the HTTP client, honouring `Retry-After`.
    /// Returns the response and whether the token held a write permission.
    pub(super) async fn send_write(
        &self,
        method: Method,
        url: &url::Url,
        body: Option<Vec<u8>>,
        what: &str,
    ) -> Result<(HttpResponse, Option<bool>), DirectoryError> {
        self.inner.pacer.acquire(1, self.http.deadline()).await?;
        let mut refreshed = false;
        loop {
            let (token, generation) = self.inner.tokens.token(&self.http).await?;
            let resp = self
                .http
                .send(what, |c| {
                    let req = c
                        .request(method.clone(), url.clone())
                        .bearer_auth(token.expose_secret())
                        .header(ACCEPT, "application/json");
                    match &body {
                        Some(b) => req.header(CONTENT_TYPE, "application/json").body(b.clone()),
                        None => req,
                    }
                })
                .await?;
            if resp.status == reqwest::StatusCode::UNAUTHORIZED && !refreshed {
                tracing::debug!(what, "Graph refused the access token; refreshing it once");
                self.inner.tokens.invalidate(generation).await;
                refreshed = true;
                continue;
            }
            // What was written stays out of the log: the call, its status, never the body.
            tracing::debug!(what, status = resp.status.as_u16(), "Graph write answered");
            return Ok((resp, token_can_write(token.expose_secret())));
        }
    }

    /// The user as the write guards need it; `None` when it does not exist.
    pub(super) async fn read_target(
        &self,
        id: &str,
        what: &str,
    ) -> Result<Option<Target>, DirectoryError> {
        let url = self.url(&format!(
            "/v1.0/users/{}?$select={TARGET_SELECT}",
            encode_id(id)?
        ))?;
        let resp = self.get(&url, what).await?;
        if resp.status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status.is_success() {
            return Err(graph_error(what, &resp));
        }
        let target: Target = resp.json(what)?;
        target.require_keys(what)?;
        Ok(Some(target))
    }

    pub(super) async fn create_inner(&self, desired: &DesiredUser) -> Result<User, DirectoryError> {
        const WHAT: &str = "Graph create user";
        check_desired(WHAT, desired)?;
        let password = super::password::random_password()?;
        // The password must never reach an error text: any echo of it is withheld.
        let mut redactor: Redactor = self.inner.redactor.clone();
        redactor.add(&password);
        let result = async {
            let body = serde_json::to_vec(&create_body(desired, &password))
                .map_err(|e| crate::clients::outbound::json_error(WHAT, &e))?;
            let url = self.url("/v1.0/users")?;
            let (resp, can_write) = self
                .send_write(Method::POST, &url, Some(body), WHAT)
                .await?;
            if !resp.status.is_success() {
                return Err(write_error(WHAT, &resp, can_write));
            }
            #[derive(Deserialize)]
            struct Created {
                id: Option<String>,
            }
            let id = resp
                .json::<Created>(WHAT)?
                .id
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    DirectoryError::Protocol(format!("{WHAT}: the created user has no id"))
                })?;
            let upn = graph_upn(desired).to_string();
            Ok(User {
                id,
                user_name: upn.clone(),
                display_name: Some(display_name(desired, &upn).to_string()),
                upn: Some(upn),
                given_name: non_empty(&desired.given_name).map(str::to_string),
                surname: non_empty(&desired.surname).map(str::to_string),
                email: None,
                proxy_addresses: Vec::new(),
                active: desired.active,
                immutable_id: Some(desired.immutable_id.clone()),
                guest: false,
            })
        }
        .await;
        result.map_err(|e| redactor.scrub(e))
    }

    pub(super) async fn update_inner(
        &self,
        id: &str,
        desired: &DesiredUser,
        expected: Option<&str>,
    ) -> Result<(), DirectoryError> {
        const WHAT: &str = "Graph update user";
        check_desired(WHAT, desired)?;
        let Some(target) = self.read_target(id, WHAT).await? else {
            return Err(DirectoryError::NotFound(format!("{WHAT}: HTTP 404")));
        };
        target.check(WHAT, expected)?;
        let patch = patch_body(&target, desired);
        if patch.is_empty() {
            return Ok(());
        }
        let body = serde_json::to_vec(&patch)
            .map_err(|e| crate::clients::outbound::json_error(WHAT, &e))?;
        let url = self.url(&format!("/v1.0/users/{}", encode_id(id)?))?;
        let (resp, can_write) = self
            .send_write(Method::PATCH, &url, Some(body), WHAT)
            .await?;
        if resp.status.is_success() {
            Ok(())
        } else {
            Err(write_error(WHAT, &resp, can_write))
        }
    }

    pub(super) async fn delete_inner(
        &self,
        id: &str,
        expected: Option<&str>,
    ) -> Result<(), DirectoryError> {
        const WHAT: &str = "Graph delete user";
        let Some(target) = self.read_target(id, WHAT).await? else {
            return Ok(());
        };
        target.check(WHAT, expected)?;
        let url = self.url(&format!("/v1.0/users/{}", encode_id(id)?))?;
        let (resp, can_write) = self.send_write(Method::DELETE, &url, None, WHAT).await?;
        match resp.status.as_u16() {
            200..=299 | 404 => Ok(()),
            _ => Err(write_error(WHAT, &resp, can_write)),
        }
    }

    /// The soft-deleted users (`GET /v1.0/directory/deletedItems/microsoft.graph.user`, every
    /// page, checked like a users listing), in the common model, with the UPN they had: Graph
    /// shows a deleted user's UPN prefixed with its id (without dashes), which is taken off.
    /// An Add whose Immutable ID matches one of them is a restore, not a second account
    /// (docs/behaviour.md §6).
    pub async fn deleted_users(&self) -> Result<Vec<User>, DirectoryError> {
        let mut users = Vec::new();
        self.list_path_into(
            "/v1.0/directory/deletedItems/microsoft.graph.user",
            "Graph deleted users page",
            None,
            &|_| true,
            &mut users,
        )
        .await
        .map_err(|e| self.inner.redactor.scrub(e))?;
        for u in &mut users {
            let prefix = u.id.replace('-', "");
            if u.user_name.len() > prefix.len()
                && u.user_name.is_char_boundary(prefix.len())
                && u.user_name[..prefix.len()].eq_ignore_ascii_case(&prefix)
            {
                u.user_name = u.user_name[prefix.len()..].to_string();
                u.upn = Some(u.user_name.clone());
            }
        }
        Ok(users)
    }

    /// Restores soft-deleted user `id` (`POST /v1.0/directory/deletedItems/{id}/restore`) as
    /// the same object, and reads it back. A live user holding its UPN is a
    /// [`DirectoryError::Conflict`]; a user not (or no longer) in deleted items is
    /// [`DirectoryError::NotFound`]. The restore is a write: paced, and refused for a
    /// privileged user like an update.
    pub async fn restore_user(&self, id: &str) -> Result<User, DirectoryError> {
        const WHAT: &str = "Graph restore user";
        let result = async {
            let url = self.url(&format!(
                "/v1.0/directory/deletedItems/{}/restore",
                encode_id(id)?
            ))?;
            let (resp, can_write) = self.send_write(Method::POST, &url, None, WHAT).await?;
            if !resp.status.is_success() {
                return Err(write_error(WHAT, &resp, can_write));
            }
            self.get_user_inner(id).await?.ok_or_else(|| {
                DirectoryError::Unavailable(format!(
                    "{WHAT}: the user was restored but does not read back yet"
                ))
            })
        }
        .await;
        result.map_err(|e| self.inner.redactor.scrub(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> DesiredUser {
        DesiredUser {
            user_name: "alice@example.com".into(),
            display_name: Some("Alice Smith".into()),
            given_name: Some("Alice".into()),
            surname: Some("Smith".into()),
            email: Some("alice@example.com".into()),
            active: true,
            immutable_id: "AAECAwQFBgcICQoLDA0ODw==".into(),
            upn: None,
        }
    }

    fn target_of(d: &DesiredUser) -> Target {
        Target {
            id: Some("id-1".into()),
            user_principal_name: Some(graph_upn(d).into()),
            mail_nickname: Some(mail_nickname(graph_upn(d))),
            display_name: d.display_name.clone(),
            given_name: d.given_name.clone(),
            surname: d.surname.clone(),
            account_enabled: Some(d.active),
            on_premises_immutable_id: Some(d.immutable_id.clone()),
            on_premises_sync_enabled: None,
            user_type: Some("Member".into()),
        }
    }

    #[test]
    fn the_create_body_maps_every_sync_item() {
        let pw = SecretString::from("pw-not-real");
        let mut d = desired();
        d.upn = Some("a.smith@example.com".into());
        let b = create_body(&d, &pw);
        assert_eq!(
            b,
            json!({
                "accountEnabled": true,
                "displayName": "Alice Smith",
                "mailNickname": "a.smith",
                "userPrincipalName": "a.smith@example.com",
                "givenName": "Alice",
                "surname": "Smith",
                "onPremisesImmutableId": "AAECAwQFBgcICQoLDA0ODw==",
                "passwordProfile": {"forceChangePasswordNextSignIn": false, "password": "pw-not-real"}
            })
        );
        // Without a UPN attribute the userName is the UPN; without a display name, the local
        // part; absent names are left out.
        let d = DesiredUser {
            display_name: Some(String::new()),
            given_name: None,
            surname: Some(String::new()),
            active: false,
            ..desired()
        };
        let b = create_body(&d, &pw);
        assert_eq!(b["userPrincipalName"], "alice@example.com");
        assert_eq!(b["displayName"], "alice");
        assert_eq!(b["accountEnabled"], false);
        assert!(
            b.get("givenName").is_none() && b.get("surname").is_none(),
            "{b}"
        );
    }

    #[test]
    fn a_patch_names_only_what_differs_and_null_clears() {
        let d = desired();
        assert!(patch_body(&target_of(&d), &d).is_empty());

        let mut t = target_of(&d);
        t.display_name = Some("Old Name".into());
        t.account_enabled = Some(false);
        t.mail_nickname = Some("custom-alias".into());
        let p = patch_body(&t, &d);
        assert_eq!(
            Value::Object(p),
            json!({"displayName": "Alice Smith", "accountEnabled": true})
        );

        let cleared = DesiredUser {
            given_name: None,
            surname: Some(String::new()),
            ..desired()
        };
        assert_eq!(
            Value::Object(patch_body(&target_of(&d), &cleared)),
            json!({"givenName": null, "surname": null})
        );

        // A new UPN carries its alias; adoption sets the Immutable ID.
        let renamed = DesiredUser {
            user_name: "alice.smith@example.com".into(),
            ..desired()
        };
        let mut t = target_of(&d);
        t.on_premises_immutable_id = None;
        assert_eq!(
            Value::Object(patch_body(&t, &renamed)),
            json!({
                "userPrincipalName": "alice.smith@example.com",
                "mailNickname": "alice.smith",
                "onPremisesImmutableId": "AAECAwQFBgcICQoLDA0ODw=="
            })
        );
    }

    #[test]
    fn the_guards_refuse_synced_users_guests_and_a_wrong_immutable_id() {
        let d = desired();
        let t = target_of(&d);
        assert!(t.check("w", Some("AAECAwQFBgcICQoLDA0ODw==")).is_ok());
        assert!(matches!(
            t.check("w", Some("other")),
            Err(DirectoryError::PreconditionFailed(_))
        ));
        assert!(matches!(
            t.check("w", None),
            Err(DirectoryError::PreconditionFailed(_))
        ));
        let mut bare = t.clone();
        bare.on_premises_immutable_id = Some(String::new());
        assert!(bare.check("w", None).is_ok(), "an empty id is no id");
        let mut synced = t.clone();
        synced.on_premises_sync_enabled = Some(true);
        let e = synced
            .check("w", Some("AAECAwQFBgcICQoLDA0ODw=="))
            .unwrap_err();
        assert!(
            matches!(&e, DirectoryError::Forbidden(m) if m.contains("on-premises")),
            "{e}"
        );
        let mut guest = t;
        guest.user_type = Some("Guest".into());
        let e = guest
            .check("w", Some("AAECAwQFBgcICQoLDA0ODw=="))
            .unwrap_err();
        assert!(
            matches!(&e, DirectoryError::Forbidden(m) if m.contains("guest")),
            "{e}"
        );
    }

    #[test]
    fn upns_and_aliases_follow_graphs_rules() {
        for ok in [
            "alice@example.com",
            "o'brien@example.com",
            "a.b-c_d!e#f^g~h@x.example",
        ] {
            assert_eq!(check_upn(ok), Ok(()), "{ok}");
        }
        for bad in [
            "alice",
            "@example.com",
            "alice@",
            "a@b@c",
            "al ice@example.com",
            "ålice@example.com",
            "a+b@example.com",
            ".alice@example.com",
            "alice.@example.com",
        ] {
            assert!(check_upn(bad).is_err(), "{bad}");
        }
        assert!(check_upn(&format!("{}@example.com", "a".repeat(65))).is_err());
        assert!(check_upn(&format!("{}@{}.com", "a".repeat(64), "b".repeat(50))).is_err());
        assert_eq!(
            check_upn(&format!("{}@example.com", "a".repeat(64))),
            Ok(())
        );

        assert_eq!(mail_nickname("alice.smith@example.com"), "alice.smith");
        assert_eq!(mail_nickname("o'brien@example.com"), "o'brien");
        assert_eq!(mail_nickname(".a(b)c d,é.@x"), "abcd");
        assert_eq!(mail_nickname("日本@x"), "user");
        assert_eq!(mail_nickname(&format!("{}@x", "a".repeat(80))).len(), 64);
        assert_eq!(
            mail_nickname(&format!("{}.b@x", "a".repeat(63))),
            "a".repeat(63)
        );
    }

    #[test]
    fn immutable_ids_must_be_standard_base64_ish() {
        assert_eq!(check_immutable_id("AAECAwQFBgcICQoLDA0ODw=="), Ok(()));
        assert_eq!(check_immutable_id("+/8="), Ok(()));
        for bad in ["", "  ", "ab_c", "ab$c", "a b", "ïd"] {
            assert!(check_immutable_id(bad).is_err(), "{bad:?}");
        }
        let d = DesiredUser {
            immutable_id: "AAECAwQFBgcICQoLDA0ODw_-".into(),
            ..desired()
        };
        let e = check_desired("Graph create user", &d).unwrap_err();
        assert!(
            matches!(&e, DirectoryError::Rejected(m) if m.contains("standard base64")),
            "{e}"
        );
    }

    fn resp(status: u16, body: Value) -> HttpResponse {
        HttpResponse {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            headers: Default::default(),
            body: body.to_string().into_bytes(),
        }
    }

    fn graph_body(code: &str, message: &str, details: Value) -> Value {
        json!({"error": {"code": code, "message": message, "details": details}})
    }

    #[test]
    fn write_errors_are_classified_and_cut_to_codes() {
        let w = "Graph create user";
        let dup = resp(
            400,
            graph_body(
                "Request_BadRequest",
                "Another object with the same value for property userPrincipalName already exists.",
                json!([{"code": "ObjectConflict", "target": "userPrincipalName"}]),
            ),
        );
        assert_eq!(
            write_error(w, &dup, Some(true)),
            DirectoryError::Conflict(
                "Graph create user: HTTP 400 Request_BadRequest ObjectConflict on userPrincipalName (another user holds this value)".into()
            )
        );
        assert!(matches!(
            write_error(w, &resp(409, json!({})), None),
            DirectoryError::Conflict(_)
        ));
        let synced = resp(
            400,
            graph_body(
                "Request_BadRequest",
                "Unable to update the specified properties for objects that have originated within an external service.",
                json!([]),
            ),
        );
        assert!(matches!(
            write_error(w, &synced, Some(true)),
            DirectoryError::Forbidden(_)
        ));
        let nick = resp(
            400,
            graph_body(
                "Request_BadRequest",
                "Invalid value specified for property 'mailNickname' of resource 'User'.",
                json!([{"code": "InvalidValue", "target": "mailNickname"}]),
            ),
        );
        assert_eq!(
            write_error(w, &nick, Some(true)),
            DirectoryError::Rejected(
                "Graph create user: HTTP 400 Request_BadRequest (InvalidValue on mailNickname)"
                    .into()
            )
        );
        let domain = resp(
            400,
            graph_body(
                "Request_BadRequest",
                "The domain portion of the userPrincipalName property is invalid. You must use one of the verified domain names in your organization.",
                json!([]),
            ),
        );
        let e = write_error(w, &domain, Some(true));
        assert!(
            matches!(&e, DirectoryError::Rejected(m) if m.contains("verified domain")),
            "{e}"
        );

        // 403: per row when the app may write users, refused credentials when it may not.
        let denied = resp(
            403,
            graph_body(
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
                json!([]),
            ),
        );
        let e = write_error("Graph update user", &denied, Some(true));
        assert!(
            matches!(&e, DirectoryError::Forbidden(m) if m.contains("privileged user")),
            "{e}"
        );
        assert!(matches!(
            write_error(w, &denied, None),
            DirectoryError::Forbidden(_)
        ));
        let e = write_error(w, &denied, Some(false));
        assert!(
            matches!(&e, DirectoryError::InvalidCredentials(m) if m.contains("User.ReadWrite.All")),
            "{e}"
        );
        assert!(matches!(
            write_error(w, &resp(404, json!({})), None),
            DirectoryError::NotFound(_)
        ));
        assert!(matches!(
            write_error(w, &resp(429, json!({})), None),
            DirectoryError::Unavailable(_)
        ));

        // Graph's message never comes through, even when it echoes a value.
        let echo = resp(
            400,
            graph_body(
                "Request_BadRequest",
                "Value 'Secret-Pa55word!' is bad",
                json!([{"code": "not a code!", "target": "x y"}]),
            ),
        );
        let e = write_error(w, &echo, Some(true));
        assert!(!e.to_string().contains("Secret"), "{e}");
    }

    fn jwt(claims: Value) -> String {
        format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn the_tokens_roles_say_whether_the_app_may_write() {
        assert_eq!(
            token_can_write(&jwt(
                json!({"roles": ["User.Read.All", "User.ReadWrite.All"]})
            )),
            Some(true)
        );
        assert_eq!(
            token_can_write(&jwt(json!({"roles": ["Directory.ReadWrite.All"]}))),
            Some(true)
        );
        assert_eq!(
            token_can_write(&jwt(json!({"roles": ["User.Read.All", "Domain.Read.All"]}))),
            Some(false)
        );
        assert_eq!(token_can_write(&jwt(json!({"aud": "x"}))), None);
        assert_eq!(token_can_write("opaque-token"), None);
    }
}
