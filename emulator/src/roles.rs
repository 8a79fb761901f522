//! Directory (administrator) roles of a tenant, and who may write their members.
//!
//! Graph: "In app-only scenarios, User.ReadWrite.All isn't enough privilege to delete users
//! with privileged administrative roles. The app must be assigned a higher privileged
//! administrator role" (shared/reference/graph-writes.md §3; the same holds for update, password
//! reset and restore). The emulator's model of "higher privileged" is Entra's "who can perform
//! sensitive actions" table, simplified (emulator/README.md, "Directory roles"):
//! - an app holding Global Administrator or Privileged Authentication Administrator may write
//!   any user;
//! - an app holding User Administrator may write users whose roles are all "limited" ones
//!   ([`LIMITED`]: Directory Readers, Helpdesk Administrator, User Administrator, ...);
//! - any other app may write only users without a role.
//!
//! An app holds a role when the role's `members` list its client id or its service principal
//! object id (the token's `oid`), as Entra lists service principals among role members.

use serde_json::{Map, Value, json};

pub const GLOBAL_ADMINISTRATOR: &str = "62e90394-69f5-4237-9190-012177145e10";
pub const PRIVILEGED_AUTHENTICATION_ADMINISTRATOR: &str = "7be44c8a-adaf-4e2a-84d6-ab2649e08a13";
pub const USER_ADMINISTRATOR: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";

/// Well-known role templates (Entra's built-in role template ids), so that a fixture can name a
/// role by its display name alone.
pub const WELL_KNOWN: &[(&str, &str)] = &[
    ("Global Administrator", GLOBAL_ADMINISTRATOR),
    (
        "Privileged Authentication Administrator",
        PRIVILEGED_AUTHENTICATION_ADMINISTRATOR,
    ),
    (
        "Privileged Role Administrator",
        "e8611ab8-c189-46e8-94e1-60213ab1f814",
    ),
    ("User Administrator", USER_ADMINISTRATOR),
    (
        "Helpdesk Administrator",
        "729827e3-9c14-49f7-bb1b-9608f156bbb8",
    ),
    (
        "Password Administrator",
        "966707d0-3269-4727-9be2-8c3a10f19b9d",
    ),
    ("Directory Readers", "88d8e3e3-8f55-4a1e-953a-9b9898b8876b"),
    ("Guest Inviter", "95e79109-95c0-4d8e-aee3-d01accf2d47b"),
    (
        "Message Center Reader",
        "790c1fb9-7f7d-4f88-86a1-ef1f95c05c1b",
    ),
    ("Reports Reader", "4a5d8f65-41da-4de4-8968-e035b65339cf"),
    (
        "Usage Summary Reports Reader",
        "75934031-6c7e-415a-99d7-48dbd49e875e",
    ),
    (
        "Exchange Administrator",
        "29232cdf-9323-42fd-ade2-1d097af3e4de",
    ),
    (
        "SharePoint Administrator",
        "f28a1f50-f6e7-4571-818b-6a12f2af6b6c",
    ),
    (
        "Security Administrator",
        "194ae4cb-b126-40b2-bd5b-6091b380977d",
    ),
    (
        "Hybrid Identity Administrator",
        "8ac3fc64-6eca-42ea-9e69-59f4c7b60eb2",
    ),
];

/// Roles whose members a User Administrator may manage.
pub const LIMITED: &[&str] = &[
    "88d8e3e3-8f55-4a1e-953a-9b9898b8876b", // Directory Readers
    "95e79109-95c0-4d8e-aee3-d01accf2d47b", // Guest Inviter
    "729827e3-9c14-49f7-bb1b-9608f156bbb8", // Helpdesk Administrator
    "790c1fb9-7f7d-4f88-86a1-ef1f95c05c1b", // Message Center Reader
    "966707d0-3269-4727-9be2-8c3a10f19b9d", // Password Administrator
    "4a5d8f65-41da-4de4-8968-e035b65339cf", // Reports Reader
    USER_ADMINISTRATOR,
    "75934031-6c7e-415a-99d7-48dbd49e875e", // Usage Summary Reports Reader
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryRole {
    pub display_name: String,
    pub role_template_id: String,
    /// User object ids, application client ids or service principal object ids.
    pub members: Vec<String>,
}

impl DirectoryRole {
    pub fn has_member(&self, id: &str) -> bool {
        self.members.iter().any(|m| m.eq_ignore_ascii_case(id))
    }

    fn is(&self, template: &str) -> bool {
        self.role_template_id.eq_ignore_ascii_case(template)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "displayName": self.display_name,
            "roleTemplateId": self.role_template_id,
            "members": self.members,
        })
    }
}

/// Parse `directoryRoles` (fixture or control API). `roleTemplateId` may be left out for a
/// well-known display name.
pub fn parse(v: &Value) -> Result<Vec<DirectoryRole>, String> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        _ => return Err("'directoryRoles' must be an array".into()),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, r) in items.iter().enumerate() {
        let at = format!("directoryRoles[{i}]: ");
        let r: &Map<String, Value> = r.as_object().ok_or(format!("{at}must be an object"))?;
        let display_name = r
            .get("displayName")
            .and_then(Value::as_str)
            .ok_or(format!("{at}'displayName' is missing or not a string"))?
            .to_string();
        let role_template_id = match r.get("roleTemplateId") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            None | Some(Value::Null) => WELL_KNOWN
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&display_name))
                .map(|(_, id)| id.to_string())
                .ok_or(format!(
                    "{at}'roleTemplateId' is missing (and '{display_name}' is not a well-known role)"
                ))?,
            Some(_) => return Err(format!("{at}'roleTemplateId' must be a string")),
        };
        let members = match r.get("members") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|m| m.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(format!("{at}'members' must be an array of ids"))?,
            Some(_) => return Err(format!("{at}'members' must be an array of ids")),
        };
        out.push(DirectoryRole {
            display_name,
            role_template_id,
            members,
        });
    }
    Ok(out)
}

/// May an app that is a member of `app_roles` write a user that is a member of `user_roles`?
pub fn may_write(app_roles: &[&DirectoryRole], user_roles: &[&DirectoryRole]) -> bool {
    if user_roles.is_empty() {
        return true;
    }
    let holds = |t: &str| app_roles.iter().any(|r| r.is(t));
    if holds(GLOBAL_ADMINISTRATOR) || holds(PRIVILEGED_AUTHENTICATION_ADMINISTRATOR) {
        return true;
    }
    holds(USER_ADMINISTRATOR) && user_roles.iter().all(|r| LIMITED.iter().any(|l| r.is(l)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchy() {
        let roles = parse(&json!([
            {"displayName": "Global Administrator", "members": ["admin"]},
            {"displayName": "Helpdesk Administrator", "members": ["helper"]},
            {"displayName": "User Administrator", "members": ["app-ua"]},
            {"displayName": "Custom", "roleTemplateId": "x", "members": ["odd"]}
        ]))
        .unwrap();
        let of = |id: &str| -> Vec<&DirectoryRole> {
            roles.iter().filter(|r| r.has_member(id)).collect()
        };
        assert_eq!(roles[0].role_template_id, GLOBAL_ADMINISTRATOR);
        assert!(may_write(&of("plain-app"), &of("nobody")));
        assert!(!may_write(&of("plain-app"), &of("helper")));
        assert!(may_write(&of("app-ua"), &of("helper")));
        assert!(!may_write(&of("app-ua"), &of("admin")));
        assert!(!may_write(&of("app-ua"), &of("odd")));
        assert!(may_write(&of("admin"), &of("admin")));
        assert!(parse(&json!([{"displayName": "Made Up"}])).is_err());
    }
}
