//! Compact storage of one directory user and its Graph JSON rendering.

use serde_json::{Map, Value};

use crate::props::{self, N_LISTS, N_STRS, PROPS, Slot};

/// One user. Strings are boxed (no spare capacity) so that 100,000 users stay small.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    /// Insertion order; the stable paging key (never reused).
    pub ord: u64,
    pub id: Box<str>,
    pub strs: [Option<Box<str>>; N_STRS],
    pub enabled: Option<bool>,
    pub lists: [Box<[Box<str>]>; N_LISTS],
    /// Properties without a typed slot, by [`PROPS`] index.
    pub extra: Option<Box<Vec<(usize, Value)>>>,
}

impl User {
    pub fn new(id: &str) -> Self {
        User {
            ord: 0,
            id: id.into(),
            strs: Default::default(),
            enabled: None,
            lists: Default::default(),
            extra: None,
        }
    }

    pub fn s(&self, i: usize) -> Option<&str> {
        self.strs[i].as_deref()
    }

    pub fn upn(&self) -> &str {
        self.s(props::UPN).unwrap_or("")
    }

    pub fn set_s(&mut self, i: usize, v: Option<&str>) {
        self.strs[i] = v.map(Into::into);
    }

    pub fn set_list(&mut self, i: usize, v: &[&str]) {
        self.lists[i] = v.iter().map(|s| Box::<str>::from(*s)).collect();
    }

    fn extra_value(&self, prop: usize) -> Option<&Value> {
        self.extra
            .as_ref()
            .and_then(|e| e.iter().find(|(i, _)| *i == prop).map(|(_, v)| v))
    }

    /// Set one property from its JSON value (the Graph type is checked).
    pub fn set_prop(&mut self, prop: usize, v: &Value) -> Result<(), String> {
        let def = &PROPS[prop];
        match def.slot {
            Slot::Id => {
                let s = v
                    .as_str()
                    .ok_or_else(|| format!("'{}' must be a string", def.name))?;
                self.id = s.into();
            }
            Slot::Str(i) => match v {
                Value::Null => self.strs[i] = None,
                Value::String(s) => self.strs[i] = Some(s.as_str().into()),
                _ => return Err(format!("'{}' must be a string or null", def.name)),
            },
            Slot::Enabled => match v {
                Value::Null => self.enabled = None,
                Value::Bool(b) => self.enabled = Some(*b),
                _ => return Err(format!("'{}' must be true, false or null", def.name)),
            },
            Slot::List(i) => match v {
                Value::Null => self.lists[i] = Box::default(),
                Value::Array(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for it in items {
                        match it.as_str() {
                            Some(s) => out.push(Box::<str>::from(s)),
                            None => {
                                return Err(format!("'{}' must be an array of strings", def.name));
                            }
                        }
                    }
                    self.lists[i] = out.into_boxed_slice();
                }
                _ => return Err(format!("'{}' must be an array of strings", def.name)),
            },
            Slot::Extra { .. } => {
                let extra = self.extra.get_or_insert_with(Default::default);
                extra.retain(|(i, _)| *i != prop);
                if !v.is_null() {
                    extra.push((prop, v.clone()));
                }
                if extra.is_empty() {
                    self.extra = None;
                }
            }
        }
        Ok(())
    }

    /// Build a user from a Graph user object. Unknown keys (and `@odata.*` annotations) are
    /// ignored, so a fixture can be pasted from real Graph output.
    pub fn from_graph(obj: &Map<String, Value>) -> Result<User, String> {
        let id = match obj.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err("'id' must be a non-empty string".into()),
            None => return Err("'id' is missing".into()),
        };
        let mut u = User::new(&id);
        for (k, v) in obj {
            if k.starts_with('@') || k.contains("@odata") {
                continue;
            }
            if let Some(p) = props::lookup(k) {
                u.set_prop(p, v)?;
            }
        }
        match u.s(props::UPN) {
            Some(s) if !s.is_empty() => {}
            _ => return Err(format!("user '{id}': 'userPrincipalName' is missing")),
        }
        if u.s(props::DISPLAY_NAME).is_none() {
            return Err(format!("user '{id}': 'displayName' is missing"));
        }
        Ok(u)
    }

    /// Does the property hold a value? Not when null, an empty string or an empty collection
    /// (delta responses omit those: `graph/delta.rs`). `id` always does.
    pub fn has_value(&self, prop: usize) -> bool {
        match PROPS[prop].slot {
            Slot::Id => true,
            Slot::Str(i) => self.strs[i].as_deref().is_some_and(|s| !s.is_empty()),
            Slot::Enabled => self.enabled.is_some(),
            Slot::List(i) => !self.lists[i].is_empty(),
            Slot::Extra { .. } => self.extra_value(prop).is_some_and(|v| match v {
                Value::Null => false,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            }),
        }
    }

    /// Append `"name":value` for one property.
    pub fn write_prop(&self, buf: &mut Vec<u8>, prop: usize) {
        let def = &PROPS[prop];
        buf.push(b'"');
        buf.extend_from_slice(def.name.as_bytes());
        buf.extend_from_slice(b"\":");
        match def.slot {
            Slot::Id => write_str(buf, &self.id),
            Slot::Str(i) => match &self.strs[i] {
                Some(s) => write_str(buf, s),
                None => buf.extend_from_slice(b"null"),
            },
            Slot::Enabled => buf.extend_from_slice(match self.enabled {
                Some(true) => b"true",
                Some(false) => b"false",
                None => b"null",
            }),
            Slot::List(i) => {
                buf.push(b'[');
                for (n, s) in self.lists[i].iter().enumerate() {
                    if n > 0 {
                        buf.push(b',');
                    }
                    write_str(buf, s);
                }
                buf.push(b']');
            }
            Slot::Extra { collection } => match self.extra_value(prop) {
                Some(v) => {
                    let _ = serde_json::to_writer(&mut *buf, v);
                }
                None if collection => buf.extend_from_slice(b"[]"),
                None => buf.extend_from_slice(b"null"),
            },
        }
    }

    /// Append the JSON object holding the given properties, in that order.
    pub fn write_json(&self, buf: &mut Vec<u8>, props: &[usize]) {
        buf.push(b'{');
        for (n, p) in props.iter().enumerate() {
            if n > 0 {
                buf.push(b',');
            }
            self.write_prop(buf, *p);
        }
        buf.push(b'}');
    }

    /// Every stored property (set ones only, plus the typed slots), for the control API.
    pub fn to_full_json(&self) -> Value {
        let mut m = Map::new();
        for (i, def) in PROPS.iter().enumerate() {
            let set = match def.slot {
                Slot::Id | Slot::Str(_) | Slot::Enabled | Slot::List(_) => true,
                Slot::Extra { .. } => self.extra_value(i).is_some(),
            };
            if set {
                let mut b = Vec::new();
                self.write_json(&mut b, &[i]);
                if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(&b) {
                    m.extend(o);
                }
            }
        }
        Value::Object(m)
    }
}

/// Append a JSON string literal.
pub fn write_str(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let plain = bytes
        .iter()
        .all(|&b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f);
    if plain {
        buf.push(b'"');
        buf.extend_from_slice(bytes);
        buf.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *buf, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_and_defaults() {
        let v = json!({"id":"1","userPrincipalName":"a@x.com","displayName":"A \"Q\"",
            "accountEnabled":false,"businessPhones":["+1 5"],"city":"Tokyo","@odata.type":"#microsoft.graph.user"});
        let u = User::from_graph(v.as_object().unwrap()).unwrap();
        let mut b = Vec::new();
        u.write_json(&mut b, &props::default_set());
        let out: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(out["displayName"], "A \"Q\"");
        assert_eq!(out["businessPhones"], json!(["+1 5"]));
        assert_eq!(out["jobTitle"], Value::Null);
        assert!(out.get("accountEnabled").is_none());
        let mut b = Vec::new();
        u.write_json(
            &mut b,
            &[
                props::idx("city"),
                props::idx("identities"),
                props::idx("accountEnabled"),
            ],
        );
        assert_eq!(
            String::from_utf8(b).unwrap(),
            r#"{"city":"Tokyo","identities":[],"accountEnabled":false}"#
        );
    }

    #[test]
    fn rejects_bad_types() {
        let v = json!({"id":"1","userPrincipalName":"a@x.com","displayName":"A","accountEnabled":"yes"});
        assert!(User::from_graph(v.as_object().unwrap()).is_err());
        let v = json!({"userPrincipalName":"a@x.com","displayName":"A"});
        assert!(
            User::from_graph(v.as_object().unwrap())
                .unwrap_err()
                .contains("'id'")
        );
    }
}
