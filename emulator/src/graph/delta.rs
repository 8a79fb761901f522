//! `GET /v1.0/users/delta`: rounds of nextLink pages ending in a deltaLink, changes since a
//! deltaLink (with `@removed`), and `$deltatoken=latest`, shaped as Graph shapes them
//! (`shared/reference/graph-delta.md` §1): never-set properties omitted and cleared ones `null`,
//! soft-deleted users as `@removed` in the first round too, and, under the `deltaReplay`
//! setting (`state.rs`), the same user twice in a change round and its changes replayed once
//! in the next round.

use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::GraphReq;
use super::filter;
use super::query::{self, GErr, bad};
use super::users::READ_ROLES;
use crate::http::{GRAPH_JSON, Resp, response};
use crate::jwt::{b64url, b64url_decode};
use crate::props::{self, PROPS, Slot};
use crate::tenant::{Change, ChangeKind, Snapshot};
use crate::user::{User, write_str};

/// Delta tokens older than this are refused, as Graph's directory tokens are (7 days).
const TOKEN_LIFETIME: i64 = 7 * 24 * 3600;
const DEFAULT_PAGE: usize = 200;

/// Everything a delta round needs, carried in its `$skiptoken`/`$deltatoken`. The fields
/// added for issue #15 default when absent, so links handed out before them still decode.
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
    /// Change rounds and deltaLinks: the changes after this sequence number up to `since` are
    /// served again (`deltaReplay`: the previous round's changes, replayed once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rf: Option<u64>,
    /// Change rounds: `deltaReplay` was on when the round started, so the round repeats its
    /// first user item on its last page and its deltaLink replays it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    rp: bool,
    /// Change rounds under `rp`: the id of the round's first user item, once served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first: Option<String>,
    /// Initial rounds, once the live users are all served: the last `ord` of the soft-deleted
    /// users served as `@removed` after them (0 = none yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dp: Option<u64>,
}

impl State {
    /// A round (or a deltaLink) with nothing served yet.
    fn new(g: &GraphReq, epoch: u64, opts: InitialOptions, m: u8, since: u64, until: u64) -> State {
        State {
            t: g.tenant.id.clone(),
            e: epoch,
            s: opts.0,
            f: opts.1,
            m,
            since,
            until,
            pos: 0,
            iat: g.ctx.now,
            rf: None,
            rp: false,
            first: None,
            dp: None,
        }
    }

    /// The deltaLink a finished round hands out: changes after `until`, plus, when this was a
    /// change round under `deltaReplay`, this round's own changes once more.
    fn delta_link(&self) -> State {
        State {
            m: 1,
            since: self.until,
            pos: 0,
            rf: (self.m == 1 && self.rp).then_some(self.since),
            rp: false,
            first: None,
            dp: None,
            ..self.clone()
        }
    }
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
    if q.get("$deltatoken")
        .is_some_and(|d| d.eq_ignore_ascii_case("latest"))
    {
        let st = State::new(g, epoch, initial_options(g)?, 1, seq, seq);
        return Ok(render(g, &st, Vec::new(), None, Some(st.clone())));
    }
    let state = match q.get("$skiptoken").or(q.get("$deltatoken")) {
        Some(t) => {
            let st = checked_token(g, t, seq, epoch)?;
            if q.get("$deltatoken").is_some() {
                change_round(g, st, seq)
            } else {
                st
            }
        }
        None => State::new(g, epoch, initial_options(g)?, 0, 0, seq),
    };
    let size = page_size(g);
    if state.m == 0 {
        initial_page(g, state, size)
    } else {
        changes_page(g, state, size)
    }
}

/// Decode a `$skiptoken`/`$deltatoken`: refused when damaged, from another tenant or before a
/// reset, or older than 7 days by the emulator's clock (`clockOffset` moves it).
fn checked_token(g: &GraphReq, tok: &str, seq: u64, epoch: u64) -> Result<State, GErr> {
    let st = decode(tok).ok_or_else(sync_state_not_found)?;
    if st.t != g.tenant.id || st.e != epoch || st.since > seq || g.ctx.now - st.iat > TOKEN_LIFETIME
    {
        return Err(sync_state_not_found());
    }
    Ok(st)
}

/// A deltaLink starts a round of the changes since it was handed out (and of the round
/// before it again, when it carries a replay); `deltaReplay` is read once, here.
fn change_round(g: &GraphReq, st: State, seq: u64) -> State {
    State {
        m: 1,
        until: seq,
        pos: 0,
        iat: g.ctx.now,
        rp: g.state.delta_replay(),
        first: None,
        dp: None,
        ..st
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
    /// A user with the properties that changed in the round (`null` when they are now empty).
    User(Arc<User>, Vec<usize>),
    Removed(Box<str>, &'static str),
}

/// One page of an initial round: the live users by `ord`, then the soft-deleted ones (by
/// `ord` too) as `@removed` "changed", as Graph lists them in a first round.
fn initial_page(g: &GraphReq, st: State, size: usize) -> Result<Resp, GErr> {
    let snap = g.tenant.snapshot();
    let deleted = g.tenant.deleted_users();
    let live = match st.dp {
        Some(_) => &[][..],
        None => &snap.users[snap.position_after(st.pos)..],
    };
    let dstart = deleted.partition_point(|u| u.ord <= st.dp.unwrap_or(0));
    let mut it = live
        .iter()
        .map(|u| (u, false))
        .chain(deleted[dstart..].iter().map(|u| (u, true)))
        .filter(|(u, _)| id_allowed(&st, &u.id));
    let page: Vec<(&Arc<User>, bool)> = it.by_ref().take(size).collect();
    let more = page.len() == size && it.next().is_some();
    let mut next = st.clone();
    let mut items = Vec::with_capacity(page.len());
    for (u, removed) in page {
        if removed {
            next.dp = Some(u.ord);
            items.push(Item::Removed(u.id.clone(), "changed"));
        } else {
            next.pos = u.ord;
            items.push(Item::User(u.clone(), Vec::new()));
        }
    }
    Ok(if more {
        render(g, &st, items, Some(next), None)
    } else {
        render(g, &st, items, None, Some(st.delta_link()))
    })
}

/// What a change round knows of one object: its last change, and the properties its
/// updates named (`ChangeKind::Upsert(Some(..))`, recorded by `Tenant::update_user`).
#[derive(Default)]
struct Touched {
    last: usize,
    props: Vec<usize>,
    /// created, restored or deleted in the range (every property counts as changed)
    whole: bool,
}

fn touched(changes: &[Change]) -> HashMap<String, Touched> {
    let mut by_id: HashMap<String, Touched> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        let t = by_id.entry(c.id.to_ascii_lowercase()).or_default();
        t.last = i;
        match &c.kind {
            ChangeKind::Upsert(Some(ps)) => t.props.extend(ps),
            _ => t.whole = true,
        }
    }
    by_id
}

/// Does this object surface in the round? A change only to properties the round does not
/// track does not.
fn surfaces(st: &State, tracked: &[usize], c: &Change, t: &Touched) -> bool {
    if !id_allowed(st, &c.id) {
        return false;
    }
    match c.kind {
        ChangeKind::Upsert(_) if st.s.is_some() => {
            t.whole || t.props.iter().any(|p| tracked.contains(p))
        }
        _ => true,
    }
}

fn change_item(c: &Change, t: &Touched, snap: &Snapshot) -> Option<Item> {
    match c.kind {
        ChangeKind::SoftDeleted => Some(Item::Removed(c.id.clone(), "changed")),
        ChangeKind::HardDeleted => Some(Item::Removed(c.id.clone(), "deleted")),
        ChangeKind::Upsert(_) => snap
            .find(&c.id)
            .map(|u| Item::User(u.clone(), t.props.clone())),
    }
}

fn changes_page(g: &GraphReq, mut st: State, size: usize) -> Result<Resp, GErr> {
    // The range: this round's changes, after those of the round before when replaying.
    let changes = g.tenant.changes(st.rf.unwrap_or(st.since), st.until);
    let by_id = touched(&changes);
    let tracked: Vec<usize> = st.s.clone().unwrap_or_else(props::default_set);
    // The last change per object wins; order by when that change happened.
    let mut relevant: Vec<usize> = by_id
        .values()
        .filter(|t| surfaces(&st, &tracked, &changes[t.last], t))
        .map(|t| t.last)
        .collect();
    relevant.sort_unstable();
    let touched_of = |c: &Change| &by_id[&c.id.to_ascii_lowercase()];
    let snap = g.tenant.snapshot();
    let start = st.pos as usize;
    let slice: Vec<usize> = relevant.iter().skip(start).take(size).copied().collect();
    let mut items: Vec<Item> = slice
        .iter()
        .filter_map(|&i| change_item(&changes[i], touched_of(&changes[i]), &snap))
        .collect();
    if st.rp && st.first.is_none() {
        st.first = items.iter().find_map(|it| match it {
            Item::User(u, _) => Some(u.id.to_string()),
            Item::Removed(..) => None,
        });
    }
    let end = start + slice.len();
    if end < relevant.len() {
        let next = State {
            pos: end as u64,
            ..st.clone()
        };
        return Ok(render(g, &st, items, Some(next), None));
    }
    // deltaReplay: Graph may return an entity twice in one round; repeat the first user.
    if let Some(id) = st.first.as_deref()
        && let Some(u) = snap.find(id)
    {
        let changed = by_id
            .get(&id.to_ascii_lowercase())
            .map(|t| t.props.clone())
            .unwrap_or_default();
        items.push(Item::User(u.clone(), changed));
    }
    Ok(render(g, &st, items, None, Some(st.delta_link())))
}

/// The properties a delta item shows: Graph omits those never set (`null` or empty), keeps
/// `id` and `accountEnabled` (always set on a real user), and shows as `null` (`[]` for a
/// collection) those cleared by a change in the round (`changed`).
fn shown(u: &User, props: &[usize], changed: &[usize]) -> Vec<usize> {
    props
        .iter()
        .copied()
        .filter(|&p| {
            matches!(PROPS[p].slot, Slot::Id | Slot::Enabled)
                || u.has_value(p)
                || changed.contains(&p)
        })
        .collect()
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
            Item::User(u, changed) => u.write_json(&mut buf, &shown(u, &props, changed)),
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
