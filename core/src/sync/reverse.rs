//! SCIM source user → Entra ID user (docs/behaviour.md §6): the mapping of the other direction,
//! where the access-control service is the source and users are written into Entra ID.
//!
//! The forward mapping is [`crate::sync::mapping`]; [`crate::sync::mapping::SourceMapper`]
//! calls [`map_scim_user`] when the config's direction is `ScimToEntraId`, so the plan, the
//! guard and the preview stay the same for both directions.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

pub use crate::directory::entra::{check_immutable_id, check_upn};
use crate::directory::{DesiredUser, User};
use crate::sync::config::{SyncConfig, UpnMode, ends_with_ignore_ascii_case};
use crate::sync::immutable_id::{ImmutableIdError, immutable_id_from_guid};
use crate::sync::mapping::{Mapped, MappedUser};

/// Maps one user of a SCIM source. `suffix` is [`SyncConfig::domain_suffix`].
///
/// - userPrincipalName: the `userPrincipalNameAttribute` value when one is configured and the
///   user has it; else `userName` (UPN mode Enabled) or `userName@domain` (Disabled; a
///   userName that already holds `@` is then not this resource's and is left out).
/// - in scope: that UPN ends in `@domain`. A UPN Graph would refuse, or an `externalId` that
///   cannot be an Immutable ID, gives a user whose row is a Conflict saying why.
/// - Immutable ID: `externalId` when set, else derived from the SCIM `id` ([`derived_immutable_id`]).
/// - displayName: the source's, else the UPN's local part (Graph requires one).
/// - email is not a sync item of this direction (Graph's `mail` is Exchange's to set).
pub fn map_scim_user(
    cfg: &SyncConfig,
    suffix: &str,
    user: User,
) -> Result<Mapped, ImmutableIdError> {
    let from_attribute = cfg
        .upn_attribute()
        .and(user.upn.as_deref())
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned);
    let upn = match (from_attribute, cfg.upn_mode) {
        (Some(upn), _) => upn,
        (None, UpnMode::Enabled) => user.user_name.clone(),
        (None, UpnMode::Disabled) if user.user_name.contains('@') => {
            return Ok(Mapped::OutOfDomain);
        }
        (None, UpnMode::Disabled) => format!("{}{suffix}", user.user_name),
    };
    if !ends_with_ignore_ascii_case(&upn, suffix) || upn.len() == suffix.len() {
        return Ok(Mapped::OutOfDomain);
    }
    let mut invalid = check_upn(&upn)
        .err()
        .map(|why| format!("userPrincipalName {upn:?} would be refused by Entra ID: {why}"));
    let immutable_id = match user.immutable_id.as_deref().filter(|e| !e.is_empty()) {
        Some(external_id) => {
            if let (None, Err(why)) = (&invalid, check_immutable_id(external_id)) {
                invalid = Some(format!("externalId cannot be the Immutable ID: {why}"));
            }
            external_id.to_owned()
        }
        None => derived_immutable_id(&user.id)?,
    };
    let display_name = user
        .display_name
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| local_part(&upn).to_owned());
    let desired = DesiredUser {
        user_name: upn.clone(),
        display_name: Some(display_name),
        given_name: user.given_name.filter(|s| !s.is_empty()),
        surname: user.surname.filter(|s| !s.is_empty()),
        email: None,
        active: user.active,
        immutable_id,
        upn: None,
    };
    Ok(Mapped::User(MappedUser {
        source_id: user.id,
        upn,
        desired,
        resource_like: false,
        shown_user_name: Some(user.user_name),
        invalid,
    }))
}

/// The Immutable ID of a SCIM user without `externalId`, from its `id` (stable, documented in
/// docs/behaviour.md §6): a GUID gives base64 of its bytes in .NET order (the encoding
/// [`immutable_id_from_guid`] uses for Entra object ids, as Entra Connect writes objectGUIDs);
/// any other id gives base64 of its UTF-8 bytes. Standard base64, so never `_` or `$`.
pub fn derived_immutable_id(scim_id: &str) -> Result<String, ImmutableIdError> {
    if scim_id.is_empty() {
        return Err(ImmutableIdError {
            object_id: String::new(),
        });
    }
    Ok(immutable_id_from_guid(scim_id).unwrap_or_else(|_| STANDARD.encode(scim_id.as_bytes())))
}

/// The UPN's local part.
pub fn local_part(upn: &str) -> &str {
    upn.split_once('@').map_or(upn, |(l, _)| l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::config::Direction;

    fn cfg(mode: UpnMode) -> SyncConfig {
        let mut c = SyncConfig::new("example.com", mode, 20);
        c.direction = Direction::ScimToEntraId;
        c
    }

    fn scim_user(user_name: &str) -> User {
        User {
            id: "2819c223-7f76-453a-919d-413861904646".into(),
            user_name: user_name.into(),
            given_name: Some("Alice".into()),
            surname: Some("Liddell".into()),
            display_name: Some("Alice Liddell".into()),
            email: Some("alice@example.net".into()),
            active: true,
            ..User::default()
        }
    }

    fn mapped(c: &SyncConfig, u: User) -> MappedUser {
        match map_scim_user(c, &c.domain_suffix(), u) {
            Ok(Mapped::User(m)) => m,
            other => panic!("expected a user, got {other:?}"),
        }
    }

    #[test]
    fn disabled_mode_appends_the_domain_and_shows_the_source_user_name() {
        let c = cfg(UpnMode::Disabled);
        let m = mapped(&c, scim_user("alice"));
        assert_eq!(m.desired.user_name, "alice@example.com");
        assert_eq!(m.upn, "alice@example.com");
        assert_eq!(m.shown_user_name.as_deref(), Some("alice"));
        assert_eq!(m.desired.email, None, "mail is not written");
        assert_eq!(m.desired.upn, None);
        assert_eq!(m.invalid, None);
        // A userName with @ is not this resource's under Disabled.
        assert_eq!(
            map_scim_user(&c, "@example.com", scim_user("alice@example.com")),
            Ok(Mapped::OutOfDomain)
        );
    }

    #[test]
    fn enabled_mode_scopes_by_the_user_name_domain() {
        let c = cfg(UpnMode::Enabled);
        assert_eq!(
            mapped(&c, scim_user("Alice@Example.COM")).desired.user_name,
            "Alice@Example.COM"
        );
        for out in [
            "alice@other.com",
            "alice",
            "@example.com",
            "alice@sub.example.com",
        ] {
            assert_eq!(
                map_scim_user(&c, "@example.com", scim_user(out)),
                Ok(Mapped::OutOfDomain),
                "{out}"
            );
        }
    }

    #[test]
    fn the_upn_attribute_wins_when_configured_and_present() {
        let mut c = cfg(UpnMode::Disabled);
        c.upn_attribute = Some("urn:x:upn".into());
        let mut u = scim_user("alice");
        u.upn = Some("a.liddell@example.com".into());
        let m = mapped(&c, u.clone());
        assert_eq!(m.desired.user_name, "a.liddell@example.com");
        assert_eq!(m.shown_user_name.as_deref(), Some("alice"));
        u.upn = Some("a.liddell@elsewhere.org".into());
        assert_eq!(
            map_scim_user(&c, "@example.com", u.clone()),
            Ok(Mapped::OutOfDomain)
        );
        u.upn = None;
        assert_eq!(mapped(&c, u).desired.user_name, "alice@example.com");
    }

    #[test]
    fn immutable_id_is_external_id_else_derived_from_the_id() {
        let c = cfg(UpnMode::Disabled);
        let mut u = scim_user("alice");
        // A GUID id: base64 of its bytes in .NET order, as for Entra object ids.
        assert_eq!(
            mapped(&c, u.clone()).desired.immutable_id,
            immutable_id_from_guid("2819c223-7f76-453a-919d-413861904646").unwrap()
        );
        u.id = "user-17".into();
        assert_eq!(mapped(&c, u.clone()).desired.immutable_id, "dXNlci0xNw==");
        u.immutable_id = Some("AAECAwQ=".into());
        assert_eq!(mapped(&c, u.clone()).desired.immutable_id, "AAECAwQ=");
        // base64url's '_' would be refused by Graph: a Conflict row, never a write.
        u.immutable_id = Some("ab_c".into());
        let m = mapped(&c, u);
        assert!(
            m.invalid.as_deref().is_some_and(|r| r.contains("'_'")),
            "{m:?}"
        );
        assert_eq!(
            derived_immutable_id(""),
            Err(ImmutableIdError {
                object_id: String::new()
            })
        );
    }

    #[test]
    fn display_name_falls_back_to_the_local_part() {
        let c = cfg(UpnMode::Disabled);
        let mut u = scim_user("bob");
        u.display_name = Some("  ".into());
        assert_eq!(mapped(&c, u).desired.display_name.as_deref(), Some("bob"));
    }

    #[test]
    fn a_user_name_graph_would_refuse_is_kept_with_the_reason() {
        let c = cfg(UpnMode::Disabled);
        let m = mapped(&c, scim_user("jürgen smith"));
        let why = m.invalid.expect("invalid");
        assert!(why.contains("\"jürgen smith@example.com\""), "{why}");
        assert!(why.contains("may hold only letters"), "{why}");
        let long = "a".repeat(65);
        assert!(
            mapped(&c, scim_user(&long))
                .invalid
                .is_some_and(|w| w.contains("longer than 64"))
        );
        assert!(
            mapped(&c, scim_user(".alice"))
                .invalid
                .is_some_and(|w| w.contains("dot"))
        );
    }

    #[test]
    fn check_upn_accepts_what_graph_accepts() {
        assert_eq!(check_upn("o'brien.j-x_1!#^~@example.com"), Ok(()));
        assert!(check_upn("alice").is_err());
        assert!(check_upn("a@b@example.com").is_err());
        assert!(check_upn(&format!("{}@example.com", "a".repeat(64))).is_ok());
        assert!(check_upn(&format!("{}@{}.com", "a".repeat(60), "b".repeat(60))).is_err());
    }
}
