//! SCIM resources: parsing into the common model and building create, PATCH and PUT bodies.
//! Pure functions; no I/O.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use crate::directory::{DesiredUser, DirectoryError, User};

pub const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const ENTERPRISE_USER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Core User attributes that may carry the UPN (simple, single-valued strings).
const CORE_UPN_ATTRS: &[&str] = &[
    "nickName",
    "title",
    "userType",
    "profileUrl",
    "preferredLanguage",
    "locale",
    "timezone",
];
/// Enterprise-extension attributes that may carry the UPN.
const ENTERPRISE_UPN_ATTRS: &[&str] = &[
    "employeeNumber",
    "costCenter",
    "organization",
    "division",
    "department",
];

/// Where the UPN goes (`destination.scim.userPrincipalNameAttribute`): a simple core User
/// attribute (`nickName`, `title`, ...) or an enterprise-extension attribute given by its full
/// URN path (`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber`).
/// Other paths (sub-attributes, custom schemas) are refused when the client is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpnAttribute {
    /// The canonical attribute name.
    name: &'static str,
    enterprise: bool,
}

impl UpnAttribute {
    pub fn parse(path: &str) -> Result<Self, DirectoryError> {
        let path = path.trim();
        let n = ENTERPRISE_USER.len();
        let (enterprise, attr) = match (
            path.get(..n),
            path.get(n..).and_then(|r| r.strip_prefix(':')),
        ) {
            (Some(prefix), Some(rest)) if prefix.eq_ignore_ascii_case(ENTERPRISE_USER) => {
                (true, rest)
            }
            _ => (false, path),
        };
        let list = if enterprise {
            ENTERPRISE_UPN_ATTRS
        } else {
            CORE_UPN_ATTRS
        };
        match list.iter().find(|a| a.eq_ignore_ascii_case(attr)) {
            Some(name) => Ok(Self { name, enterprise }),
            None => Err(DirectoryError::Rejected(format!(
                "userPrincipalNameAttribute must be one of {} or {ENTERPRISE_USER}:{{{}}}",
                CORE_UPN_ATTRS.join(", "),
                ENTERPRISE_UPN_ATTRS.join(",")
            ))),
        }
    }

    /// The attribute path as used in PATCH operations.
    pub fn path(&self) -> String {
        if self.enterprise {
            format!("{ENTERPRISE_USER}:{}", self.name)
        } else {
            self.name.to_string()
        }
    }

    fn read(&self, u: &RawUser) -> Option<String> {
        if self.enterprise {
            let e = u.enterprise.as_ref()?;
            match self.name {
                "employeeNumber" => e.employee_number.clone(),
                "costCenter" => e.cost_center.clone(),
                "organization" => e.organization.clone(),
                "division" => e.division.clone(),
                _ => e.department.clone(),
            }
        } else {
            match self.name {
                "nickName" => u.nick_name.clone(),
                "title" => u.title.clone(),
                "userType" => u.user_type.clone(),
                "profileUrl" => u.profile_url.clone(),
                "preferredLanguage" => u.preferred_language.clone(),
                "locale" => u.locale.clone(),
                _ => u.timezone.clone(),
            }
        }
    }
}

/// A SCIM User as listed or read: only what the common model needs.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct RawUser {
    id: Option<String>,
    user_name: Option<String>,
    external_id: Option<String>,
    display_name: Option<String>,
    name: Option<RawName>,
    #[serde(default, deserialize_with = "lenient_emails")]
    emails: Vec<RawEmail>,
    #[serde(default, deserialize_with = "bool_like")]
    active: Option<bool>,
    // Candidate UPN carriers: read leniently (a non-string is "absent"), so that an attribute
    // this client does not manage can never fail a listing.
    #[serde(default, deserialize_with = "lenient_string")]
    nick_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    title: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    user_type: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    profile_url: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    preferred_language: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    locale: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    timezone: Option<String>,
    #[serde(
        rename = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        default
    )]
    enterprise: Option<RawEnterprise>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct RawName {
    #[serde(default, deserialize_with = "lenient_string")]
    given_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    family_name: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
struct RawEmail {
    #[serde(default, deserialize_with = "lenient_string")]
    value: Option<String>,
    #[serde(default, deserialize_with = "bool_like")]
    primary: Option<bool>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct RawEnterprise {
    #[serde(default, deserialize_with = "lenient_string")]
    employee_number: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    cost_center: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    organization: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    division: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    department: Option<String>,
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

/// Booleans as JSON booleans or as the strings "true"/"false" (Entra-style servers send
/// `"True"`). Anything else is absent.
fn bool_like<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => Some(b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    })
}

fn lenient_emails<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RawEmail>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect(),
        _ => Vec::new(),
    })
}

impl RawUser {
    /// The common model of this resource. `id` and `userName` are required; `active` absent
    /// counts as true (the SCIM default of most servers); an empty `externalId` is absent.
    pub fn into_user(self, upn: Option<&UpnAttribute>) -> Result<User, DirectoryError> {
        let id =
            self.id.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
                DirectoryError::Protocol("SCIM user record without id".to_string())
            })?;
        let user_name = self
            .user_name
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                DirectoryError::Protocol("SCIM user record without userName".to_string())
            })?;
        let email = self
            .emails
            .iter()
            .find(|e| e.primary == Some(true) && e.value.is_some())
            .or_else(|| self.emails.iter().find(|e| e.value.is_some()))
            .and_then(|e| e.value.clone());
        let upn = upn.and_then(|a| a.read(&self));
        let (given_name, surname) = match self.name {
            Some(n) => (n.given_name, n.family_name),
            None => (None, None),
        };
        Ok(User {
            id,
            user_name,
            upn,
            display_name: self.display_name,
            given_name,
            surname,
            email,
            proxy_addresses: Vec::new(),
            active: self.active.unwrap_or(true),
            immutable_id: self.external_id.filter(|s| !s.is_empty()),
            guest: false,
        })
    }
}

/// The work email entry this client writes.
fn work_email(value: &str) -> Value {
    json!({ "value": value, "type": "work", "primary": true })
}

/// The `emails` value that makes `email` the primary work address while keeping the user's
/// other addresses (no longer primary); prior work-type entries are replaced.
fn merged_emails(existing: Option<&Value>, email: &str) -> Value {
    let mut out = vec![work_email(email)];
    if let Some(Value::Array(items)) = existing {
        for item in items {
            let Value::Object(obj) = item else { continue };
            let is_work = obj
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.eq_ignore_ascii_case("work"));
            let same = obj
                .get("value")
                .and_then(Value::as_str)
                .is_some_and(|v| v.eq_ignore_ascii_case(email));
            if is_work || same {
                continue;
            }
            let mut obj = obj.clone();
            obj.remove("primary");
            out.push(Value::Object(obj));
        }
    }
    Value::Array(out)
}

/// The POST body for a new user. Absent values are omitted, not sent as null.
pub fn create_body(d: &DesiredUser, upn: Option<&UpnAttribute>) -> Value {
    let mut obj = Map::new();
    let mut schemas = vec![Value::from(CORE_USER)];
    obj.insert("userName".into(), d.user_name.clone().into());
    let mut name = Map::new();
    if let Some(g) = &d.given_name {
        name.insert("givenName".into(), g.clone().into());
    }
    if let Some(s) = &d.surname {
        name.insert("familyName".into(), s.clone().into());
    }
    if !name.is_empty() {
        obj.insert("name".into(), Value::Object(name));
    }
    if let Some(dn) = &d.display_name {
        obj.insert("displayName".into(), dn.clone().into());
    }
    if let Some(e) = &d.email {
        obj.insert("emails".into(), Value::Array(vec![work_email(e)]));
    }
    obj.insert("active".into(), d.active.into());
    obj.insert("externalId".into(), d.immutable_id.clone().into());
    if let (Some(attr), Some(v)) = (upn, &d.upn) {
        if attr.enterprise {
            schemas.push(ENTERPRISE_USER.into());
            obj.insert(ENTERPRISE_USER.into(), json!({ attr.name: v }));
        } else {
            obj.insert(attr.name.into(), v.clone().into());
        }
    }
    obj.insert("schemas".into(), Value::Array(schemas));
    Value::Object(obj)
}

/// PATCH operations that take `current` (the user as just read, `resource` its JSON) to
/// `desired`: `replace` for changed values, `remove` for values that must be absent. Empty
/// when nothing differs.
pub fn patch_ops(
    current: &User,
    resource: &Value,
    d: &DesiredUser,
    upn: Option<&UpnAttribute>,
) -> Vec<Value> {
    let mut ops = Vec::new();
    let mut opt = |path: &str, cur: &Option<String>, want: &Option<String>| {
        if cur != want {
            ops.push(match want {
                Some(v) => json!({ "op": "replace", "path": path, "value": v }),
                None => json!({ "op": "remove", "path": path }),
            });
        }
    };
    opt("displayName", &current.display_name, &d.display_name);
    opt("name.givenName", &current.given_name, &d.given_name);
    opt("name.familyName", &current.surname, &d.surname);
    if let Some(attr) = upn {
        opt(&attr.path(), &current.upn, &d.upn);
    }
    if current.user_name != d.user_name {
        ops.push(json!({ "op": "replace", "path": "userName", "value": d.user_name }));
    }
    if current.email != d.email {
        ops.push(match &d.email {
            Some(e) => json!({ "op": "replace", "path": "emails", "value": merged_emails(resource.get("emails"), e) }),
            None => json!({ "op": "remove", "path": "emails" }),
        });
    }
    if current.active != d.active {
        ops.push(json!({ "op": "replace", "path": "active", "value": d.active }));
    }
    if current.immutable_id.as_deref() != Some(d.immutable_id.as_str()) {
        ops.push(json!({ "op": "replace", "path": "externalId", "value": d.immutable_id }));
    }
    ops
}

/// The PUT body: the resource as just read, with the sync items set to `desired`, so that
/// attributes this client does not manage survive the full replace. `meta` is read-only and
/// dropped.
pub fn put_body(resource: &Value, d: &DesiredUser, upn: Option<&UpnAttribute>) -> Value {
    let mut obj = match resource {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    obj.remove("meta");
    fn set(obj: &mut Map<String, Value>, key: &str, v: &Option<String>) {
        match v {
            Some(v) => {
                obj.insert(key.into(), v.clone().into());
            }
            None => {
                obj.remove(key);
            }
        }
    }
    obj.insert("userName".into(), d.user_name.clone().into());
    set(&mut obj, "displayName", &d.display_name);
    let mut name = match obj.remove("name") {
        Some(Value::Object(n)) => n,
        _ => Map::new(),
    };
    set(&mut name, "givenName", &d.given_name);
    set(&mut name, "familyName", &d.surname);
    // `formatted` would go stale when the parts change; the server may recompute it.
    name.remove("formatted");
    if !name.is_empty() {
        obj.insert("name".into(), Value::Object(name));
    }
    match &d.email {
        Some(e) => {
            let merged = merged_emails(obj.get("emails"), e);
            obj.insert("emails".into(), merged);
        }
        None => {
            obj.remove("emails");
        }
    }
    obj.insert("active".into(), d.active.into());
    obj.insert("externalId".into(), d.immutable_id.clone().into());
    let mut schemas: Vec<Value> = match obj.remove("schemas") {
        Some(Value::Array(s)) => s,
        _ => Vec::new(),
    };
    if !schemas.iter().any(|s| s.as_str() == Some(CORE_USER)) {
        schemas.insert(0, CORE_USER.into());
    }
    if let Some(attr) = upn {
        if attr.enterprise {
            let mut ext = match obj.remove(ENTERPRISE_USER) {
                Some(Value::Object(e)) => e,
                _ => Map::new(),
            };
            set(&mut ext, attr.name, &d.upn);
            if !ext.is_empty() {
                obj.insert(ENTERPRISE_USER.into(), Value::Object(ext));
                if !schemas.iter().any(|s| s.as_str() == Some(ENTERPRISE_USER)) {
                    schemas.push(ENTERPRISE_USER.into());
                }
            }
        } else {
            set(&mut obj, attr.name, &d.upn);
        }
    }
    obj.insert("schemas".into(), Value::Array(schemas));
    Value::Object(obj)
}

/// A SCIM filter string literal: a JSON string (RFC 7644 §3.4.2.2), so `"` and `\` are escaped.
pub fn filter_literal(s: &str) -> String {
    Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn alice() -> DesiredUser {
        DesiredUser {
            user_name: "alice@example.com".into(),
            display_name: Some("Alice Smith".into()),
            given_name: Some("Alice".into()),
            surname: Some("Smith".into()),
            email: Some("alice@example.com".into()),
            active: true,
            immutable_id: "RDHiRneDPkiofrZ2nbYu7Q==".into(),
            upn: Some("alice@example.com".into()),
        }
    }

    fn parse(v: Value, upn: Option<&UpnAttribute>) -> Result<User, DirectoryError> {
        serde_json::from_value::<RawUser>(v).unwrap().into_user(upn)
    }

    #[test]
    fn upn_attribute_paths() {
        assert_eq!(UpnAttribute::parse("nickname").unwrap().path(), "nickName");
        let e = UpnAttribute::parse(&format!("{ENTERPRISE_USER}:employeenumber")).unwrap();
        assert_eq!(e.path(), format!("{ENTERPRISE_USER}:employeeNumber"));
        for bad in [
            "name.givenName",
            "userName",
            "externalId",
            "urn:x:custom:attr",
            "",
            &format!("{ENTERPRISE_USER}:manager"),
        ] {
            assert!(UpnAttribute::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scim_resources_map_to_the_common_model() {
        let v = json!({
            "schemas": [CORE_USER, ENTERPRISE_USER],
            "id": "21a32f37", "externalId": "imm", "userName": "alice@contoso.example",
            "name": {"formatted": "Alice Smith", "familyName": "Smith", "givenName": "Alice"},
            "displayName": "Alice Smith", "title": "Engineer", "active": "False",
            "emails": [{"value": "home@x", "type": "home"}, {"value": "alice@contoso.example", "type": "work", "primary": true}],
            "phoneNumbers": [{"value": "+1 555 0100", "type": "mobile"}],
            ENTERPRISE_USER: {"employeeNumber": "alice@upn.example", "department": "R&D"},
            "meta": {"version": "W/\"1\""}
        });
        let ent = UpnAttribute::parse(&format!("{ENTERPRISE_USER}:employeeNumber")).unwrap();
        let u = parse(v.clone(), Some(&ent)).unwrap();
        assert_eq!(
            u,
            User {
                id: "21a32f37".into(),
                user_name: "alice@contoso.example".into(),
                upn: Some("alice@upn.example".into()),
                display_name: Some("Alice Smith".into()),
                given_name: Some("Alice".into()),
                surname: Some("Smith".into()),
                email: Some("alice@contoso.example".into()),
                proxy_addresses: vec![],
                active: false,
                immutable_id: Some("imm".into()),
                guest: false,
            }
        );
        let title = UpnAttribute::parse("title").unwrap();
        assert_eq!(
            parse(v.clone(), Some(&title)).unwrap().upn.as_deref(),
            Some("Engineer")
        );
        assert_eq!(parse(v, None).unwrap().upn, None);
        // Minimal record: active defaults to true, first email when none is primary.
        let u = parse(
            json!({"id": "1", "userName": "b", "emails": [{"value": "b@x"}], "externalId": ""}),
            None,
        )
        .unwrap();
        assert!(u.active);
        assert_eq!(u.email.as_deref(), Some("b@x"));
        assert_eq!(u.immutable_id, None);
        assert!(matches!(
            parse(json!({"userName": "b"}), None),
            Err(DirectoryError::Protocol(_))
        ));
        assert!(matches!(
            parse(json!({"id": "1"}), None),
            Err(DirectoryError::Protocol(_))
        ));
        // Odd shapes of unmanaged attributes don't fail.
        assert!(
            parse(
                json!({"id": "1", "userName": "b", "title": 5, "emails": "x"}),
                Some(&title)
            )
            .is_ok()
        );
    }

    #[test]
    fn create_body_omits_absent_values() {
        let ent = UpnAttribute::parse(&format!("{ENTERPRISE_USER}:employeeNumber")).unwrap();
        assert_eq!(
            create_body(&alice(), Some(&ent)),
            json!({
                "schemas": [CORE_USER, ENTERPRISE_USER],
                "userName": "alice@example.com",
                "name": {"givenName": "Alice", "familyName": "Smith"},
                "displayName": "Alice Smith",
                "emails": [{"value": "alice@example.com", "type": "work", "primary": true}],
                "active": true,
                "externalId": "RDHiRneDPkiofrZ2nbYu7Q==",
                ENTERPRISE_USER: {"employeeNumber": "alice@example.com"}
            })
        );
        let bare = DesiredUser {
            user_name: "b".into(),
            immutable_id: "i".into(),
            ..Default::default()
        };
        assert_eq!(
            create_body(&bare, None),
            json!({"schemas": [CORE_USER], "userName": "b", "active": false, "externalId": "i"})
        );
    }

    #[test]
    fn patch_ops_replace_changes_and_remove_absences() {
        let d = alice();
        let same = User {
            id: "1".into(),
            user_name: d.user_name.clone(),
            upn: d.upn.clone(),
            display_name: d.display_name.clone(),
            given_name: d.given_name.clone(),
            surname: d.surname.clone(),
            email: d.email.clone(),
            active: true,
            immutable_id: Some(d.immutable_id.clone()),
            ..Default::default()
        };
        let title = UpnAttribute::parse("title").unwrap();
        assert!(patch_ops(&same, &json!({}), &d, Some(&title)).is_empty());

        let cur = User {
            user_name: "ALICE@example.com".into(),
            surname: Some("Old".into()),
            display_name: Some("x".into()),
            upn: None,
            email: Some("old@x".into()),
            active: false,
            immutable_id: None,
            ..same.clone()
        };
        let want = DesiredUser {
            display_name: None,
            ..d.clone()
        };
        let resource = json!({"emails": [{"value": "old@x", "type": "work", "primary": true}, {"value": "h@x", "type": "home", "primary": false}]});
        assert_eq!(
            patch_ops(&cur, &resource, &want, Some(&title)),
            vec![
                json!({"op": "remove", "path": "displayName"}),
                json!({"op": "replace", "path": "name.familyName", "value": "Smith"}),
                json!({"op": "replace", "path": "title", "value": "alice@example.com"}),
                json!({"op": "replace", "path": "userName", "value": "alice@example.com"}),
                json!({"op": "replace", "path": "emails", "value": [
                    {"value": "alice@example.com", "type": "work", "primary": true},
                    {"value": "h@x", "type": "home"}
                ]}),
                json!({"op": "replace", "path": "active", "value": true}),
                json!({"op": "replace", "path": "externalId", "value": "RDHiRneDPkiofrZ2nbYu7Q=="}),
            ]
        );
        let no_mail = DesiredUser { email: None, ..d };
        assert_eq!(
            patch_ops(&same, &json!({}), &no_mail, None),
            vec![json!({"op": "remove", "path": "emails"})]
        );
    }

    #[test]
    fn put_body_keeps_unmanaged_attributes() {
        let resource = json!({
            "schemas": [CORE_USER], "id": "21a", "userName": "old", "title": "Engineer",
            "name": {"formatted": "Old Name", "givenName": "Old", "middleName": "Q"},
            "displayName": "Old Name", "externalId": "x", "active": true,
            "phoneNumbers": [{"value": "+1", "type": "work"}],
            "meta": {"version": "W/\"3\""}
        });
        let ent = UpnAttribute::parse(&format!("{ENTERPRISE_USER}:employeeNumber")).unwrap();
        let d = DesiredUser {
            display_name: None,
            ..alice()
        };
        assert_eq!(
            put_body(&resource, &d, Some(&ent)),
            json!({
                "schemas": [CORE_USER, ENTERPRISE_USER],
                "id": "21a", "userName": "alice@example.com", "title": "Engineer",
                "name": {"givenName": "Alice", "familyName": "Smith", "middleName": "Q"},
                "externalId": "RDHiRneDPkiofrZ2nbYu7Q==", "active": true,
                "phoneNumbers": [{"value": "+1", "type": "work"}],
                "emails": [{"value": "alice@example.com", "type": "work", "primary": true}],
                ENTERPRISE_USER: {"employeeNumber": "alice@example.com"}
            })
        );
    }

    #[test]
    fn filter_literals_escape_quotes_and_backslashes() {
        assert_eq!(filter_literal("a+b@x.com"), "\"a+b@x.com\"");
        assert_eq!(filter_literal("we\"ird\\name"), "\"we\\\"ird\\\\name\"");
    }
}
