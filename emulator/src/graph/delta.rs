//! `GET /v1.0/users/delta`: rounds of nextLink pages ending in a deltaLink, changes since a
//! deltaLink (with `@removed`), and `$deltatoken=latest`.

use std::collections::HashMap;

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::GraphReq;
use super::filter;
use super::query::{self, GErr, bad};
use super::users::READ_ROLES;
use crate::http::{GRAPH_JSON, Resp, response};
use crate::jwt::{b64url, b64url_decode};
use crate::props;
use crate::tenant::ChangeKind;
use crate::user::write_str;

/// Delta tokens older than this are refused, as Graph's directory tokens are (7 days).
const TOKEN_LIFETIME: i64 = 7 * 24 * 3600;
const DEFAULT_PAGE: usize = 200;

/// Everything a delta round needs, carried in its `$skiptoken`/`$deltatoken`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    /// tenant id
    t: String,
    /// tenant epoch (a reset invalidates tokens)
    e: u64,
    /// selected property indexes (None = default set)
    s: Option<Vec<usize>>,
    /// `$filter=id eq ...` ids
    f: Option<Vec<String>>,
    /// round kind: 0 = initial (full) round, 1 = changes since `since`
    m: u8,
    since: u64,
    until: u64,
    /// initial rounds: last `ord` served; change rounds: index into the change list
    pos: u64,
    /// when the round started (token age)
    iat: i64,
}

fn encode(s: &State) -> String {
    b64url(&serde_json::to_vec(s).unwrap_or_default())
}

fn decode(tok: &str) -> Option<State> {
    serde_json::from_slice(&b64url_decode(tok)?).ok()
}

fn sync_state_not_found() -> GErr {
    bad(
        "syncStateNotFound",
        "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
    )
}

pub fn handle(g: &GraphReq) -> Resp {
    if !g.has_role(READ_ROLES) {
        return g.forbidden();
    }
    match run(g) {
        Ok(r) => r,
        Err(e) => g.error(e),
    }
}

fn page_size(g: &GraphReq) -> usize {
    g.header("prefer")
        .and_then(|p| {
            p.split(',').find_map(|part| {
                let (k, v) = part.trim().split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("odata.maxpagesize")
                    .then(|| v.trim().parse::<usize>().ok())
                    .flatten()
            })
        })
        .filter(|n| (1..=999).contains(n))
        .unwrap_or(DEFAULT_PAGE)
}

fn run(g: &GraphReq) -> Result<Resp, GErr> {
    let q = &g.query;
    let (_, seq, epoch) = g.tenant.view();
    let token = q.get("$skiptoken").or(q.get("$deltatoken"));
    let state = match token {
        Some(t)
            if q.get("$deltatoken")
                .is_some_and(|d| d.eq_ignore_ascii_case("latest")) =>
        {
            let _ = t;
            let (s, f) = initial_options(g)?;
            let st = State {
                t: g.tenant.id.clone(),
                e: epoch,
                s,
                f,
                m: 1,
                since: seq,
                until: seq,
                pos: 0,
                iat: g.ctx.now,
            };
            return Ok(render(g, &st, Vec::new(), None, Some(st.clone())));
        }
        Some(t) => {
            let st = decode(t).ok_or_else(sync_state_not_found)?;
            if st.t != g.tenant.id
                || st.e != epoch
                || st.since > seq
                || g.ctx.now - st.iat > TOKEN_LIFETIME
            {
                return Err(sync_state_not_found());
            }
            if q.get("$deltatoken").is_some() {
                // A deltaLink: start a round of changes since it was issued.
                State {
                    m: 1,
                    since: st.since,
                    until: seq,
                    pos: 0,
                    iat: g.ctx.now,
                    ..st
                }
            } else {
                st
            }
        }
        None => {
            let (s, f) = initial_options(g)?;
            State {
                t: g.tenant.id.clone(),
                e: epoch,
                s,
                f,
                m: 0,
                since: 0,
                until: seq,
                pos: 0,
                iat: g.ctx.now,
            }
        }
    };
    let size = page_size(g);
    if state.m == 0 {
        initial_page(g, state, size)
    } else {
        changes_page(g, state, size)
    }
}

/// Options allowed on the first request of a delta query: `$select` and `$filter=id eq ...`.
/// `($select` property indexes, `$filter` ids).
type InitialOptions = (Option<Vec<usize>>, Option<Vec<String>>);

fn initial_options(g: &GraphReq) -> Result<InitialOptions, GErr> {
    let q = &g.query;
    for opt in ["$top", "$orderby", "$expand", "$skip", "$search", "$count"] {
        if q.get(opt).is_some() {
            return Err(bad(
                "Request_UnsupportedQuery",
                format!("The query parameter '{opt}' is not supported with delta query on users."),
            ));
        }
    }
    let select = query::parse_select(q.get("$select"), true)?;
    let ids = match q.get("$filter") {
        None => None,
        Some(f) => {
            let e = filter::parse(f).map_err(|e| bad(e.code(), e.message()))?;
            let ids = filter::delta_ids(&e).ok_or_else(|| {
                bad("Request_UnsupportedQuery", "Delta query on users supports only $filter=id eq '...' (or several joined by 'or').")
            })?;
            if ids.len() > 50 {
                return Err(bad(
                    "Request_UnsupportedQuery",
                    "Too many ids in the filter: at most 50 are allowed.",
                ));
            }
            Some(ids)
        }
    };
    Ok((select, ids))
}

fn id_allowed(st: &State, id: &str) -> bool {
    st.f.as_ref()
        .is_none_or(|ids| ids.iter().any(|i| i.eq_ignore_ascii_case(id)))
}

enum Item {
    User(std::sync::Arc<crate::user::User>),
    Removed(Box<str>, &'static str),
}

fn initial_page(g: &GraphReq, st: State, size: usize) -> Result<Resp, GErr> {
    let snap = g.tenant.snapshot();
    let start = snap.position_after(st.pos);
    let mut it = snap.users[start.min(snap.users.len())..]
        .iter()
        .filter(|u| id_allowed(&st, &u.id));
    let page: Vec<_> = it.by_ref().take(size).cloned().collect();
    let more = page.len() == size && it.next().is_some();
    let items = page.iter().cloned().map(Item::User).collect();
    let last = page.last().map(|u| u.ord).unwrap_or(st.pos);
    Ok(if more {
        let next = State {
            pos: last,
            ..st.clone()
        };
        render(g, &st, items, Some(next), None)
    } else {
        let delta = State {
            m: 1,
            since: st.until,
            until: st.until,
            pos: 0,
            ..st.clone()
        };
        render(g, &st, items, None, Some(delta))
    })
}

fn changes_page(g: &GraphReq, st: State, size: usize) -> Result<Resp, GErr> {
    let changes = g.tenant.changes(st.since, st.until);
    // The last change per object wins; order by when that change happened.
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        last.insert(c.id.to_ascii_lowercase(), i);
    }
    let tracked: Vec<usize> = st.s.clone().unwrap_or_else(props::default_set);
    let mut relevant: Vec<usize> = last
        .values()
        .copied()
        .filter(|&i| {
            let c = &changes[i];
            if !id_allowed(&st, &c.id) {
                return false;
            }
            match &c.kind {
                // A change only to properties the round does not track does not surface.
                ChangeKind::Upsert(_) if st.s.is_some() => changes
                    .iter()
                    .filter(|x| x.id.eq_ignore_ascii_case(&c.id))
                    .any(|x| match &x.kind {
                        ChangeKind::Upsert(Some(ps)) => ps.iter().any(|p| tracked.contains(p)),
                        _ => true,
                    }),
                _ => true,
            }
        })
        .collect();
    relevant.sort_unstable();
    let snap = g.tenant.snapshot();
    let start = st.pos as usize;
    let slice: Vec<usize> = relevant.iter().skip(start).take(size).copied().collect();
    let mut items = Vec::with_capacity(slice.len());
    for i in &slice {
        let c = &changes[*i];
        match c.kind {
            ChangeKind::SoftDeleted => items.push(Item::Removed(c.id.clone(), "changed")),
            ChangeKind::HardDeleted => items.push(Item::Removed(c.id.clone(), "deleted")),
            ChangeKind::Upsert(_) => {
                if let Some(u) = snap.find(&c.id) {
                    items.push(Item::User(u.clone()));
                }
            }
        }
    }
    let end = start + slice.len();
    Ok(if end < relevant.len() {
        let next = State {
            pos: end as u64,
            ..st.clone()
        };
        render(g, &st, items, Some(next), None)
    } else {
        let delta = State {
            m: 1,
            since: st.until,
            until: st.until,
            pos: 0,
            ..st.clone()
        };
        render(g, &st, items, None, Some(delta))
    })
}

fn render(
    g: &GraphReq,
    st: &State,
    items: Vec<Item>,
    next: Option<State>,
    delta: Option<State>,
) -> Resp {
    let mut props = st.s.clone().unwrap_or_else(props::default_set);
    let id = props::idx("id");
    if !props.contains(&id) {
        props.push(id);
    }
    let base = format!("{}/v1.0/users/delta", g.ctx.base_url);
    let mut buf = Vec::with_capacity(256 + items.len() * 400);
    buf.extend_from_slice(b"{\"@odata.context\":");
    write_str(
        &mut buf,
        &format!(
            "{}/v1.0/$metadata#{}",
            g.ctx.base_url,
            query::context_of(st.s.as_deref())
        ),
    );
    if let Some(n) = next {
        buf.extend_from_slice(b",\"@odata.nextLink\":");
        write_str(&mut buf, &format!("{base}?$skiptoken={}", encode(&n)));
    }
    if let Some(d) = delta {
        buf.extend_from_slice(b",\"@odata.deltaLink\":");
        write_str(&mut buf, &format!("{base}?$deltatoken={}", encode(&d)));
    }
    buf.extend_from_slice(b",\"value\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        match item {
            Item::User(u) => u.write_json(&mut buf, &props),
            Item::Removed(id, reason) => {
                buf.extend_from_slice(b"{\"id\":");
                write_str(&mut buf, id);
                buf.extend_from_slice(
                    format!(",\"@removed\":{{\"reason\":\"{reason}\"}}}}").as_bytes(),
                );
            }
        }
    }
    buf.extend_from_slice(b"]}");
    response(StatusCode::OK, GRAPH_JSON, buf)
}
