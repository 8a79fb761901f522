//! OData system query options as Graph reads them from the URL.

use http::StatusCode;

use crate::props::{self, PROPS};

/// A Graph error before it is rendered: status, code, message.
pub type GErr = (StatusCode, &'static str, String);

pub fn bad(code: &'static str, msg: impl Into<String>) -> GErr {
    (StatusCode::BAD_REQUEST, code, msg.into())
}

fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

const KNOWN: &[&str] = &[
    "$select",
    "$filter",
    "$top",
    "$skip",
    "$count",
    "$orderby",
    "$expand",
    "$search",
    "$skiptoken",
    "$deltatoken",
    "$format",
];

#[derive(Debug, Default)]
pub struct Query {
    /// (decoded key, decoded value, raw `k=v` text)
    items: Vec<(String, String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, GErr> {
        let mut items: Vec<(String, String, String)> = Vec::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(k);
            let value = decode(v);
            if key.starts_with('$') {
                let lower = key.to_ascii_lowercase();
                if !KNOWN.contains(&lower.as_str()) {
                    return Err(bad(
                        "BadRequest",
                        format!("Query option '{key}' is not supported."),
                    ));
                }
                if items.iter().any(|(k2, _, _)| k2.eq_ignore_ascii_case(&key)) {
                    return Err(bad(
                        "BadRequest",
                        format!(
                            "Query option '{key}' was specified more than once, but it must be specified at most once."
                        ),
                    ));
                }
            }
            items.push((key, value, pair.to_string()));
        }
        Ok(Query { items })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|(k, _, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v, _)| v.as_str())
    }

    /// The raw query text without the named options (for building a nextLink).
    pub fn raw_without(&self, names: &[&str]) -> String {
        self.items
            .iter()
            .filter(|(k, _, _)| !names.iter().any(|n| k.eq_ignore_ascii_case(n)))
            .map(|(_, _, raw)| raw.as_str())
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// `$top`: 1..=999 (Graph's exact error otherwise).
pub fn parse_top(v: Option<&str>, default: usize) -> Result<usize, GErr> {
    match v {
        None => Ok(default),
        Some(s) => match s.trim().parse::<i64>() {
            Ok(n) if (1..=999).contains(&n) => Ok(n as usize),
            _ => Err(bad(
                "Request_UnsupportedQuery",
                format!("Invalid page size specified: '{s}'. Must be between 1 and 999 inclusive."),
            )),
        },
    }
}

pub fn parse_bool_option(name: &str, v: Option<&str>) -> Result<Option<bool>, GErr> {
    match v.map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(None),
        Some(s) if s == "true" => Ok(Some(true)),
        Some(s) if s == "false" => Ok(Some(false)),
        Some(s) => Err(bad(
            "BadRequest",
            format!(
                "Invalid value '{s}' for {name} query option found. Valid values are 'true' or 'false'."
            ),
        )),
    }
}

/// `$select`: property indexes; `None` when absent or empty (the default set applies).
pub fn parse_select(v: Option<&str>, collection: bool) -> Result<Option<Vec<usize>>, GErr> {
    let Some(s) = v else { return Ok(None) };
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(p) = props::lookup(name) else {
            return Err(bad(
                "BadRequest",
                format!("Could not find a property named '{name}' on type 'microsoft.graph.user'."),
            ));
        };
        if collection && PROPS[p].single_only {
            return Err((
                StatusCode::NOT_IMPLEMENTED,
                "NotImplemented",
                "This operation target is not yet supported.".into(),
            ));
        }
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

/// `@odata.context` suffix for a selection: `users(displayName,mail)`.
pub fn context_of(select: Option<&[usize]>) -> String {
    match select {
        None => "users".into(),
        Some(ps) => format!(
            "users({})",
            ps.iter()
                .map(|p| PROPS[*p].name)
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}
