//! `GET /v1.0/users`, `/users/{id|userPrincipalName}` and `/users/$count`.

use std::sync::Arc;

use http::StatusCode;

use super::GraphReq;
use super::filter::{self, Expr};
use super::query::{self, GErr, bad};
use crate::http::{GRAPH_JSON, Resp, response};
use crate::props::{self, PROPS};
use crate::user::{User, write_str};

pub const READ_ROLES: &[&str] = &[
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const DEFAULT_PAGE: usize = 100;

/// Page position carried in `$skiptoken`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cursor {
    /// Next user has `ord` greater than this.
    AfterOrd(u64),
    /// Offset into a sorted result.
    Offset(u64),
}

fn encode_cursor(c: Cursor) -> String {
    let (kind, v) = match c {
        Cursor::AfterOrd(o) => (1u8, o),
        Cursor::Offset(o) => (2u8, o),
    };
    let mut b = b"RFNw".to_vec();
    b.push(kind);
    b.extend_from_slice(&v.to_le_bytes());
    crate::jwt::b64url(&b)
}

fn decode_cursor(s: &str) -> Option<Cursor> {
    let b = crate::jwt::b64url_decode(s.trim_matches('\''))?;
    if b.len() != 13 || &b[..4] != b"RFNw" {
        return None;
    }
    let v = u64::from_le_bytes(b[5..13].try_into().ok()?);
    match b[4] {
        1 => Some(Cursor::AfterOrd(v)),
        2 => Some(Cursor::Offset(v)),
        _ => None,
    }
}

fn expired_page_token() -> GErr {
    bad(
        "Directory_ExpiredPageToken",
        "The specified page token value has expired and can no longer be included in your request.",
    )
}

/// `$search="displayName:wa" AND "mail:x"`: each term matches a word prefix of the property.
#[derive(Debug)]
enum Search {
    Term(usize, String),
    And(Box<Search>, Box<Search>),
    Or(Box<Search>, Box<Search>),
}

fn parse_search(s: &str) -> Result<Search, GErr> {
    let err = || {
        bad(
            "BadRequest",
            format!(
                "Syntax error: '{s}' is not a valid $search value. Use \"property:value\" clauses joined by AND or OR."
            ),
        )
    };
    let mut parts: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    for ch in s.chars() {
        match ch {
            '"' => {
                in_q = !in_q;
                cur.push(ch);
            }
            ' ' if !in_q => {
                if !cur.is_empty() {
                    parts.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(ch),
        }
    }
    if in_q {
        return Err(err());
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    let clause = |p: &str| -> Result<Search, GErr> {
        let inner = p
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .ok_or_else(err)?;
        let (prop, term) = inner.split_once(':').ok_or_else(err)?;
        let idx = props::lookup(prop).ok_or_else(err)?;
        Ok(Search::Term(idx, term.to_lowercase()))
    };
    let mut it = parts.iter();
    let mut acc = clause(it.next().ok_or_else(err)?)?;
    while let Some(op) = it.next() {
        let rhs = clause(it.next().ok_or_else(err)?)?;
        acc = match op.as_str() {
            "AND" => Search::And(Box::new(acc), Box::new(rhs)),
            "OR" => Search::Or(Box::new(acc), Box::new(rhs)),
            _ => return Err(err()),
        };
    }
    Ok(acc)
}

fn search_matches(s: &Search, u: &User) -> bool {
    match s {
        Search::And(a, b) => search_matches(a, u) && search_matches(b, u),
        Search::Or(a, b) => search_matches(a, u) || search_matches(b, u),
        Search::Term(p, term) => {
            let mut b = Vec::new();
            u.write_prop(&mut b, *p);
            let text = String::from_utf8_lossy(&b).to_lowercase();
            let value = text.split_once(':').map(|x| x.1).unwrap_or("");
            value
                .split(|c: char| !c.is_alphanumeric())
                .any(|w| !w.is_empty() && w.starts_with(term.as_str()))
        }
    }
}

struct ListQuery {
    select: Option<Vec<usize>>,
    top: usize,
    advanced: bool,
    filter: Option<Expr>,
    search: Option<Search>,
    order: Option<(usize, bool)>,
}

fn parse_list(g: &GraphReq) -> Result<ListQuery, GErr> {
    let q = &g.query;
    if q.get("$skip").is_some() {
        return Err(bad(
            "Request_BadRequest",
            "'$skip' is not supported by the service.",
        ));
    }
    if q.get("$expand").is_some() {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "This operation target is not yet supported.".into(),
        ));
    }
    let top = query::parse_top(q.get("$top"), DEFAULT_PAGE)?;
    let count = query::parse_bool_option("$count", q.get("$count"))?;
    let eventual = g.eventual();
    let advanced = eventual && count == Some(true);
    let search = match q.get("$search") {
        None => None,
        Some(_) if !eventual => {
            return Err(bad(
                "Request_UnsupportedQuery",
                "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
            ));
        }
        Some(s) => Some(parse_search(s)?),
    };
    let select = query::parse_select(q.get("$select"), true)?;
    let filter = match q.get("$filter") {
        None => None,
        Some(f) if f.trim().is_empty() => None,
        Some(f) => {
            let e = filter::parse(f).map_err(|e| bad(e.code(), e.message()))?;
            filter::check(&e, advanced).map_err(|e| bad(e.code(), e.message()))?;
            Some(e)
        }
    };
    let order = match q.get("$orderby") {
        None => None,
        Some(o) => {
            let mut words = o.split_whitespace();
            let prop = words.next().unwrap_or("");
            let dir = words.next().unwrap_or("asc").to_ascii_lowercase();
            let p = props::lookup(prop).ok_or_else(|| {
                bad(
                    "BadRequest",
                    format!(
                        "Could not find a property named '{prop}' on type 'microsoft.graph.user'."
                    ),
                )
            })?;
            if !matches!(PROPS[p].name, "displayName" | "userPrincipalName")
                || !(dir == "asc" || dir == "desc")
            {
                return Err(bad(
                    "Request_UnsupportedQuery",
                    "Sorting not supported for current query.",
                ));
            }
            if filter.is_some() && !advanced {
                return Err(bad(
                    "Request_UnsupportedQuery",
                    "Sorting not supported for current query.",
                ));
            }
            Some((p, dir == "desc"))
        }
    };
    Ok(ListQuery {
        select,
        top,
        advanced,
        filter,
        search,
        order,
    })
}

fn keep(lq: &ListQuery, u: &User) -> bool {
    lq.filter.as_ref().is_none_or(|f| filter::matches(f, u))
        && lq.search.as_ref().is_none_or(|s| search_matches(s, u))
}

/// `GET /v1.0/users`
pub fn list(g: &GraphReq) -> Resp {
    if !g.has_role(READ_ROLES) {
        return g.forbidden();
    }
    let snap = g.tenant.snapshot();
    list_users(g, &snap.users)
}

/// A page of `users` (in `ord` order) under the listing's query options: `/users` and
/// `/directory/deletedItems/microsoft.graph.user` (`deleted_items.rs`).
pub fn list_users(g: &GraphReq, users: &[Arc<User>]) -> Resp {
    let lq = match parse_list(g) {
        Ok(l) => l,
        Err(e) => return g.error(e),
    };
    let cursor = match g.query.get("$skiptoken") {
        None => None,
        Some(t) => match decode_cursor(t) {
            Some(c) => Some(c),
            None => return g.error(expired_page_token()),
        },
    };
    let first_page = cursor.is_none();
    let count = (first_page && lq.advanced).then(|| users.iter().filter(|u| keep(&lq, u)).count());

    let mut page: Vec<&Arc<User>> = Vec::with_capacity(lq.top.min(users.len()));
    let next: Option<Cursor>;
    if let Some((prop, desc)) = lq.order {
        let mut all: Vec<&Arc<User>> = users.iter().filter(|u| keep(&lq, u)).collect();
        let key = |u: &User| {
            let mut b = Vec::new();
            u.write_prop(&mut b, prop);
            String::from_utf8_lossy(&b).to_lowercase()
        };
        all.sort_by_cached_key(|u| key(u));
        if desc {
            all.reverse();
        }
        let offset = match cursor {
            None => 0,
            Some(Cursor::Offset(o)) => o as usize,
            Some(Cursor::AfterOrd(_)) => return g.error(expired_page_token()),
        };
        page.extend(all.iter().skip(offset).take(lq.top));
        let end = offset + page.len();
        next = (end < all.len()).then_some(Cursor::Offset(end as u64));
    } else {
        let start = match cursor {
            None => 0,
            Some(Cursor::AfterOrd(o)) => users.partition_point(|u| u.ord <= o),
            Some(Cursor::Offset(_)) => return g.error(expired_page_token()),
        };
        let mut it = users[start.min(users.len())..]
            .iter()
            .filter(|u| keep(&lq, u));
        page.extend(it.by_ref().take(lq.top));
        next = match page.last() {
            Some(last) if page.len() == lq.top && it.next().is_some() => {
                Some(Cursor::AfterOrd(last.ord))
            }
            _ => None,
        };
    }

    let props = lq.select.clone().unwrap_or_else(props::default_set);
    let mut buf = Vec::with_capacity(256 + page.len() * 64 * props.len());
    buf.extend_from_slice(b"{\"@odata.context\":");
    write_str(
        &mut buf,
        &format!(
            "{}/v1.0/$metadata#{}",
            g.ctx.base_url,
            query::context_of(lq.select.as_deref())
        ),
    );
    if let Some(c) = count {
        buf.extend_from_slice(format!(",\"@odata.count\":{c}").as_bytes());
    }
    if let Some(n) = next {
        let rest = g.query.raw_without(&["$skiptoken"]);
        let sep = if rest.is_empty() { "" } else { "&" };
        let link = format!(
            "{}{}?{rest}{sep}$skiptoken={}",
            g.ctx.base_url,
            g.path,
            encode_cursor(n)
        );
        buf.extend_from_slice(b",\"@odata.nextLink\":");
        write_str(&mut buf, &link);
    }
    buf.extend_from_slice(b",\"value\":[");
    for (i, u) in page.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        u.write_json(&mut buf, &props);
    }
    buf.extend_from_slice(b"]}");
    response(StatusCode::OK, GRAPH_JSON, buf)
}

/// `GET /v1.0/users/$count` (advanced query only).
pub fn count(g: &GraphReq) -> Resp {
    if !g.has_role(READ_ROLES) {
        return g.forbidden();
    }
    if !g.eventual() {
        return g.error(bad(
            "Request_BadRequest",
            "$count is not currently supported.",
        ));
    }
    let filter = match g.query.get("$filter") {
        None => None,
        Some(f) => match filter::parse(f).and_then(|e| filter::check(&e, true).map(|_| e)) {
            Ok(e) => Some(e),
            Err(e) => return g.error(bad(e.code(), e.message())),
        },
    };
    let snap = g.tenant.snapshot();
    let n = snap
        .users
        .iter()
        .filter(|u| filter.as_ref().is_none_or(|f| filter::matches(f, u)))
        .count();
    response(StatusCode::OK, "text/plain", n.to_string())
}

/// The user a path segment names: percent-decoded (`%23EXT%23`), and the OData key form
/// `users('alice@contoso.com')` unquoted (the router passes `'alice@contoso.com'`).
pub fn decode_key(raw_key: &str) -> String {
    let key = percent_encoding::percent_decode_str(raw_key)
        .decode_utf8_lossy()
        .into_owned();
    match key.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')) {
        Some(inner) => inner.replace("''", "'"),
        None => key,
    }
}

/// Graph's 404 for a user (or deleted item) that is not there.
pub fn not_found(key: &str) -> GErr {
    (
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        format!(
            "Resource '{key}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

/// `GET /v1.0/users/{id | userPrincipalName}`
pub fn get(g: &GraphReq, raw_key: &str) -> Resp {
    if !g.has_role(READ_ROLES) {
        return g.forbidden();
    }
    let key = decode_key(raw_key);
    let select = match query::parse_select(g.query.get("$select"), false) {
        Ok(s) => s,
        Err(e) => return g.error(e),
    };
    let snap = g.tenant.snapshot();
    let Some(user) = snap.find(&key) else {
        return g.error(not_found(&key));
    };
    let props = select.clone().unwrap_or_else(props::default_set);
    let mut buf = Vec::with_capacity(1024);
    buf.extend_from_slice(b"{\"@odata.context\":");
    write_str(
        &mut buf,
        &format!(
            "{}/v1.0/$metadata#{}/$entity",
            g.ctx.base_url,
            query::context_of(select.as_deref())
        ),
    );
    let mut obj = Vec::new();
    user.write_json(&mut obj, &props);
    if obj.len() > 2 {
        buf.push(b',');
        buf.extend_from_slice(&obj[1..]);
    } else {
        buf.push(b'}');
    }
    response(StatusCode::OK, GRAPH_JSON, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        for c in [
            Cursor::AfterOrd(0),
            Cursor::AfterOrd(99_999),
            Cursor::Offset(5),
        ] {
            assert_eq!(decode_cursor(&encode_cursor(c)), Some(c));
        }
        assert_eq!(decode_cursor("garbage"), None);
    }
}
