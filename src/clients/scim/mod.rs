//! A SCIM 2.0 service (RFC 7643/7644) as a [`Directory`]: list with paging, filter by userName,
//! create, PATCH (PUT when the server does not support PATCH), delete. Bearer token auth.
//!
//! Decisions of our own (docs/behaviour.md leaves them open):
//! - `update_user` and `delete_user` re-read the user first and write only while its
//!   `externalId` equals the expected Immutable ID; with ETags supported the write carries
//!   `If-Match` with the version just read, so the check and the write are atomic (412 is
//!   [`DirectoryError::PreconditionFailed`]). The diff is taken against that fresh read.
//! - PUT sends the resource as just read with the sync items replaced, so attributes this
//!   client does not manage (phone numbers, title, ...) survive.
//! - Deleting a user that is already gone succeeds (the desired end state holds).
//! - `emails`: the desired address becomes the primary work address; other addresses stay as
//!   non-primary. With no desired address, all emails are removed (else the listed "primary
//!   else first" email would differ on every run).
//! - `ListScope::Domain` is applied client-side over a full listing (userName or the UPN
//!   attribute ending in `@domain`), because the UPN attribute counts too.
//! - A ServiceProviderConfig that is missing (404/501) means: no PATCH, no ETags, no filter.
//! - Listings page by cursor (RFC 9865) when the config says `pagination.cursor: true`, else by
//!   index; either way a listing is whole or an error (`list_by_index`, `list_by_cursor`),
//!   since a short source or destination listing turns into deletions.

mod model;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE, ETAG, IF_MATCH};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::OnceCell;
use url::Url;

use crate::clients::outbound::{
    HttpClient, HttpConfig, HttpResponse, Redactor, check_base_url, encode_component, encode_id,
    status_error,
};
use crate::directory::{DesiredUser, Directory, DirectoryError, ListScope, ListingLimits, User};

pub use model::{
    CORE_USER, ENTERPRISE_USER, PATCH_OP, RawUser, UpnAttribute, create_body, filter_literal,
    patch_ops, put_body,
};

const SCIM_JSON: &str = "application/scim+json";

/// How to reach one SCIM service.
#[derive(Clone)]
pub struct ScimConfig {
    /// The SCIM base URL, e.g. `https://access-control.example.net/scim/v2`.
    pub base_url: Url,
    pub bearer_token: SecretString,
    /// `destination.scim.userPrincipalNameAttribute` (see [`UpnAttribute`]); `None` or empty
    /// = the UPN is not carried.
    pub upn_attribute: Option<String>,
    /// Users per list page requested; lowered to the server's `filter.maxResults` and
    /// `pagination.maxPageSize`.
    pub page_size: usize,
    /// Timeouts, retries, extra CA, resolver seam and the in-flight bound (`max_in_flight`).
    pub http: HttpConfig,
    /// Ceilings on one listing (users, bytes).
    pub limits: ListingLimits,
}

impl ScimConfig {
    pub fn new(base_url: Url, bearer_token: SecretString) -> Self {
        Self {
            base_url,
            bearer_token,
            upn_attribute: None,
            page_size: 1000,
            http: HttpConfig::default(),
            limits: ListingLimits::default(),
        }
    }
}

impl fmt::Debug for ScimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScimConfig")
            .field("base_url", &self.base_url.as_str())
            .field("bearer_token", &"[REDACTED]")
            .field("upn_attribute", &self.upn_attribute)
            .field("page_size", &self.page_size)
            .field("http", &self.http)
            .finish()
    }
}

/// What the server's `/ServiceProviderConfig` says, as far as this client cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScimCapabilities {
    pub patch: bool,
    pub etag: bool,
    pub filter: bool,
    pub max_results: Option<usize>,
    pub max_page_size: Option<usize>,
}

/// How the server pages a listing (its `/ServiceProviderConfig` `pagination`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paging {
    /// `startIndex`/`count` (RFC 7644 §3.4.2.4): the default, and all a server without
    /// `pagination` offers.
    Index,
    /// `cursor`/`nextCursor` (RFC 9865), used whenever `pagination.cursor` is true.
    Cursor,
}

/// What this client takes from `/ServiceProviderConfig`. The paging method is kept beside
/// [`ScimCapabilities`] rather than in it, so that code building that struct by its fields
/// (tests/scim_client.rs) keeps compiling.
#[derive(Clone, Debug)]
struct ServerConfig {
    caps: ScimCapabilities,
    paging: Paging,
}

/// The SCIM client. Cheap to clone; clones share the connection pool, the in-flight bound
/// and the capabilities read.
#[derive(Clone)]
pub struct ScimClient {
    http: HttpClient,
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    token: SecretString,
    upn: Option<UpnAttribute>,
    page_size: usize,
    limits: ListingLimits,
    config: OnceCell<ServerConfig>,
    /// Set when the server answered 501 to a PATCH although its config claimed support.
    patch_refused: AtomicBool,
    redactor: Redactor,
}

impl fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScimClient")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListResponse {
    total_results: Option<u64>,
    start_index: Option<u64>,
    /// RFC 9865: present on every page but the last.
    next_cursor: Option<String>,
    #[serde(rename = "Resources", default)]
    resources: Option<Vec<RawUser>>,
}

impl ScimClient {
    pub fn new(cfg: ScimConfig) -> Result<Self, DirectoryError> {
        let base = check_base_url("SCIM endpoint", &cfg.base_url)?;
        let upn = match cfg.upn_attribute.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(p) => Some(UpnAttribute::parse(p)?),
        };
        let mut redactor = Redactor::new();
        redactor.add(&cfg.bearer_token);
        let http = HttpClient::new(&cfg.http)?;
        Ok(Self {
            http,
            inner: Arc::new(Inner {
                base,
                token: cfg.bearer_token,
                upn,
                page_size: cfg.page_size.max(1),
                limits: cfg.limits,
                config: OnceCell::new(),
                patch_refused: AtomicBool::new(false),
                redactor,
            }),
        })
    }

    /// The same client with another run deadline (shares connections, bound and capabilities).
    pub fn with_deadline(&self, deadline: Option<Instant>) -> Self {
        Self {
            http: self.http.with_deadline(deadline),
            inner: self.inner.clone(),
        }
    }

    /// The server's capabilities, read once from `/ServiceProviderConfig`.
    pub async fn capabilities(&self) -> Result<ScimCapabilities, DirectoryError> {
        Ok(self.server_config().await?.caps)
    }

    /// How listings page: [`Paging::Cursor`] when `/ServiceProviderConfig` advertises
    /// `pagination.cursor: true`, else [`Paging::Index`]. Read once, with the capabilities.
    pub async fn paging(&self) -> Result<Paging, DirectoryError> {
        Ok(self.server_config().await?.paging)
    }

    async fn server_config(&self) -> Result<ServerConfig, DirectoryError> {
        self.inner
            .config
            .get_or_try_init(|| self.read_capabilities())
            .await
            .cloned()
            .map_err(|e| self.inner.redactor.scrub(e))
    }

    async fn read_capabilities(&self) -> Result<ServerConfig, DirectoryError> {
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Spc {
            patch: Feature,
            etag: Feature,
            filter: Feature,
            pagination: Pagination,
        }
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Feature {
            supported: Option<bool>,
            max_results: Option<u64>,
        }
        /// RFC 9865 §4 (`cursor` and `index` are REQUIRED there; absent reads as "no").
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Pagination {
            cursor: Option<bool>,
            max_page_size: Option<u64>,
        }
        const WHAT: &str = "SCIM ServiceProviderConfig";
        let url = format!("{}/ServiceProviderConfig", self.inner.base);
        let resp = self.request(WHAT, Method::GET, &url, None, None).await?;
        let spc: Spc = match resp.status.as_u16() {
            200 => resp.json(WHAT)?,
            // No config: assume the least (PUT, no ETags, list-and-filter locally).
            404 | 501 => Spc {
                filter: Feature {
                    supported: Some(false),
                    ..Default::default()
                },
                ..Default::default()
            },
            _ => return Err(scim_error(WHAT, &resp)),
        };
        let cap = |n: Option<u64>| {
            n.filter(|n| *n > 0)
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        };
        Ok(ServerConfig {
            caps: ScimCapabilities {
                patch: spc.patch.supported.unwrap_or(false),
                etag: spc.etag.supported.unwrap_or(false),
                filter: spc.filter.supported.unwrap_or(true),
                max_results: cap(spc.filter.max_results),
                max_page_size: cap(spc.pagination.max_page_size),
            },
            // Cursor whenever offered, even beside index: a cursor names the next page itself,
            // so users added or removed while paging cannot shift a page under it.
            paging: if spc.pagination.cursor == Some(true) {
                Paging::Cursor
            } else {
                Paging::Index
            },
        })
    }

    fn user_url(&self, id: &str) -> Result<String, DirectoryError> {
        Ok(format!("{}/Users/{}", self.inner.base, encode_id(id)?))
    }

    /// One request with the bearer token and SCIM media types; retried per the HTTP policy.
    async fn request(
        &self,
        what: &str,
        method: Method,
        url: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<HttpResponse, DirectoryError> {
        let url = Url::parse(url)
            .map_err(|_| DirectoryError::Rejected(format!("{what}: cannot form the URL")))?;
        let body = body.map(|b| b.to_string().into_bytes());
        self.http
            .send(what, |c| {
                let mut req = c
                    .request(method.clone(), url.clone())
                    .bearer_auth(self.inner.token.expose_secret())
                    .header(ACCEPT, "application/scim+json, application/json");
                if let Some(b) = &body {
                    req = req.header(CONTENT_TYPE, SCIM_JSON).body(b.clone());
                }
                if let Some(tag) = if_match {
                    req = req.header(IF_MATCH, tag);
                }
                req
            })
            .await
    }

    /// Every user matching `filter` (a SCIM filter expression), all pages or an error, by
    /// cursor when the server offers it, else by index.
    async fn list_filtered(&self, filter: Option<&str>) -> Result<Vec<User>, DirectoryError> {
        let server = self.server_config().await?;
        // `filter.maxResults` caps what one response holds (RFC 7643 §5), whatever the paging.
        let page_size = [
            Some(self.inner.page_size),
            server.caps.max_results,
            server.caps.max_page_size,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.inner.page_size)
        .max(1);
        let filter_q = filter
            .map(|f| format!("&filter={}", encode_component(f)))
            .unwrap_or_default();
        let mut listing = Listing::new(self.inner.limits);
        match server.paging {
            Paging::Index => {
                self.list_by_index(&mut listing, page_size, &filter_q)
                    .await?
            }
            Paging::Cursor => {
                self.list_by_cursor(&mut listing, page_size, &filter_q)
                    .await?
            }
        }
        Ok(listing.users)
    }

    /// One listing page, its bytes counted against the listing's ceilings.
    async fn list_page(
        &self,
        listing: &mut Listing,
        url: &str,
    ) -> Result<ListResponse, DirectoryError> {
        let resp = self.request(LIST, Method::GET, url, None, None).await?;
        if !resp.status.is_success() {
            return Err(scim_error(LIST, &resp));
        }
        listing.bytes += resp.body.len() as u64;
        listing
            .limits
            .check_read(LIST, listing.records, listing.bytes)?;
        resp.json(LIST)
    }

    /// Index paging (RFC 7644 §3.4.2.4). The listing must add up: `totalResults` holds still
    /// and is reachable within the listing's ceilings, each page starts where asked, and no id
    /// repeats.
    ///
    /// Index paging "is not session based" and clients "SHOULD never assume repeatable results"
    /// (RFC 7644 §3.4.2.4): a user created or deleted while paging shifts every later position,
    /// so one user is read twice and another never. De-duplicating by id cannot repair that:
    /// `totalResults` positions holding a repeated id hold at most `totalResults - 1` users, so
    /// with `totalResults` fixed the listing can no longer add up. A repeat is therefore a read
    /// error at once (checked page by page, which also stops a server serving one page forever
    /// at its second copy), never a user dropped from a list that then comes out short.
    async fn list_by_index(
        &self,
        listing: &mut Listing,
        page_size: usize,
        filter_q: &str,
    ) -> Result<(), DirectoryError> {
        let mut start: u64 = 1;
        loop {
            let url = format!(
                "{}/Users?startIndex={start}&count={page_size}{filter_q}",
                self.inner.base
            );
            let page = self.list_page(listing, &url).await?;
            let page_total = listing.hold_total(page.total_results, "page")?;
            if let Some(si) = page.start_index
                && si != start
            {
                return Err(DirectoryError::Protocol(format!(
                    "{LIST}: asked for startIndex {start}, got {si}"
                )));
            }
            let resources = page.resources.unwrap_or_default();
            let n = resources.len() as u64;
            for r in resources {
                let user = r.into_user(self.inner.upn.as_ref())?;
                if listing.add(user, false) {
                    return Err(DirectoryError::Protocol(format!(
                        "{LIST}: user record {} (page at startIndex {start}) repeats an id already listed; \
                         the paging is broken",
                        listing.records
                    )));
                }
            }
            let have = listing.users.len() as u64;
            if have > page_total {
                return Err(DirectoryError::Protocol(format!(
                    "{LIST}: got {have} users, more than totalResults {page_total}"
                )));
            }
            if have == page_total {
                return Ok(());
            }
            if n == 0 {
                return Err(DirectoryError::Protocol(format!(
                    "{LIST}: listing ended after {have} of {page_total} users"
                )));
            }
            start += n;
        }
    }

    /// Cursor paging (RFC 9865 §2): the first request carries an empty `cursor`
    /// (`?cursor&count=N`, spelled as in the RFC's example), each next one the `nextCursor`
    /// just served with every other parameter unchanged; the page without `nextCursor` is the
    /// last.
    ///
    /// The same promise as index paging: the users returned are exactly `totalResults`
    /// distinct ids, or the read is an error. Cursor pages have no positions, so a repeated id
    /// does not prove that another user was skipped (a server paging by last modification
    /// serves a user changed mid-read again, later): a repeat is de-duplicated by id, keeping
    /// the copy read last (the freshest), and the listing is still held to `totalResults`
    /// distinct users when its last page arrives. Fewer is "listing ended after …", a read
    /// error, never a shorter list. Further:
    /// - `totalResults` is required on every page and must hold still. RFC 9865 lets a server
    ///   omit it, but then nothing could tell a whole listing from a cut one.
    /// - A `nextCursor` served before (the empty first one included) is a loop: an error.
    /// - A page that brings no new user must be the last: a chain that keeps serving repeats
    ///   or empty pages under fresh cursors is stopped (at most `totalResults + 1` pages).
    /// - Records served, repeats included, count against the listing's ceilings.
    /// - Cursors are opaque, server-given, and never quoted in an error.
    async fn list_by_cursor(
        &self,
        listing: &mut Listing,
        page_size: usize,
        filter_q: &str,
    ) -> Result<(), DirectoryError> {
        // Cursors served so far, remembered by a keyed hash: a listing of a million users
        // then remembers 8 bytes per page, whatever the length of the cursors. A collision
        // could only turn a good read into an error.
        let hasher = std::collections::hash_map::RandomState::new();
        let mut served: HashSet<u64> = HashSet::from([hasher.hash_one("")]);
        let mut cursor_q = "cursor".to_string();
        let mut page_no: u64 = 0;
        let mut repeats: u64 = 0;
        loop {
            page_no += 1;
            let url = format!(
                "{}/Users?{cursor_q}&count={page_size}{filter_q}",
                self.inner.base
            );
            let page = self.list_page(listing, &url).await?;
            let total = listing.hold_total(page.total_results, "cursor page")?;
            let before = listing.users.len();
            for r in page.resources.unwrap_or_default() {
                let user = r.into_user(self.inner.upn.as_ref())?;
                // The copy read last wins: it is the fresher one.
                if listing.add(user, true) {
                    repeats += 1;
                }
            }
            let have = listing.users.len() as u64;
            if have > total {
                return Err(DirectoryError::Protocol(format!(
                    "{LIST}: got {have} users, more than totalResults {total}"
                )));
            }
            let Some(next) = page.next_cursor else {
                if have < total {
                    let also = match repeats {
                        0 => String::new(),
                        1 => "; 1 record repeated an id already listed".to_string(),
                        n => format!("; {n} records repeated an id already listed"),
                    };
                    return Err(DirectoryError::Protocol(format!(
                        "{LIST}: listing ended after {have} of {total} users{also}"
                    )));
                }
                return Ok(());
            };
            if !served.insert(hasher.hash_one(next.as_str())) {
                return Err(DirectoryError::Protocol(format!(
                    "{LIST}: nextCursor of page {page_no} repeats an earlier cursor"
                )));
            }
            if listing.users.len() == before {
                return Err(DirectoryError::Protocol(format!(
                    "{LIST}: cursor page {page_no} brought no new user but names a next page"
                )));
            }
            cursor_q = format!("cursor={}", encode_component(&next));
        }
    }

    /// Reads one user as JSON with its version, or `None` when it does not exist.
    async fn read_for_write(
        &self,
        what: &str,
        id: &str,
    ) -> Result<Option<(Value, User, Option<String>)>, DirectoryError> {
        let resp = self
            .request(what, Method::GET, &self.user_url(id)?, None, None)
            .await?;
        if resp.status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status.is_success() {
            return Err(scim_error(what, &resp));
        }
        let value: Value = resp.json(what)?;
        let user = serde_json::from_value::<RawUser>(value.clone())
            .map_err(|e| crate::clients::outbound::json_error(what, &e))?
            .into_user(self.inner.upn.as_ref())?;
        let version = resp
            .headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                value
                    .pointer("/meta/version")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        Ok(Some((value, user, version)))
    }

    async fn update_inner(
        &self,
        id: &str,
        desired: &DesiredUser,
        expected: Option<&str>,
    ) -> Result<(), DirectoryError> {
        const WHAT: &str = "SCIM update user";
        let caps = self.capabilities().await?;
        let Some((resource, fresh, version)) = self.read_for_write(WHAT, id).await? else {
            return Err(DirectoryError::NotFound(format!("{WHAT}: HTTP 404")));
        };
        check_owner(WHAT, fresh.immutable_id.as_deref(), expected)?;
        let ops = patch_ops(&fresh, &resource, desired, self.inner.upn.as_ref());
        if ops.is_empty() {
            return Ok(());
        }
        let if_match = if caps.etag { version.as_deref() } else { None };
        let url = self.user_url(id)?;
        if caps.patch && !self.inner.patch_refused.load(Ordering::Relaxed) {
            let body = serde_json::json!({ "schemas": [PATCH_OP], "Operations": ops });
            let resp = self
                .request(
                    "SCIM PATCH user",
                    Method::PATCH,
                    &url,
                    Some(&body),
                    if_match,
                )
                .await?;
            match resp.status.as_u16() {
                200 | 204 => return Ok(()),
                // The config claimed PATCH; the server disagrees. Use PUT from now on.
                501 => self.inner.patch_refused.store(true, Ordering::Relaxed),
                _ => return Err(scim_error("SCIM PATCH user", &resp)),
            }
        }
        let body = put_body(&resource, desired, self.inner.upn.as_ref());
        let resp = self
            .request("SCIM PUT user", Method::PUT, &url, Some(&body), if_match)
            .await?;
        match resp.status.as_u16() {
            200 | 204 => Ok(()),
            _ => Err(scim_error("SCIM PUT user", &resp)),
        }
    }

    async fn delete_inner(&self, id: &str, expected: Option<&str>) -> Result<(), DirectoryError> {
        const WHAT: &str = "SCIM delete user";
        let caps = self.capabilities().await?;
        let Some((_, fresh, version)) = self.read_for_write(WHAT, id).await? else {
            return Ok(());
        };
        check_owner(WHAT, fresh.immutable_id.as_deref(), expected)?;
        let if_match = if caps.etag { version.as_deref() } else { None };
        let resp = self
            .request(WHAT, Method::DELETE, &self.user_url(id)?, None, if_match)
            .await?;
        match resp.status.as_u16() {
            200 | 204 | 404 => Ok(()),
            _ => Err(scim_error(WHAT, &resp)),
        }
    }

    async fn create_inner(&self, user: &DesiredUser) -> Result<User, DirectoryError> {
        const WHAT: &str = "SCIM create user";
        let body = create_body(user, self.inner.upn.as_ref());
        let url = format!("{}/Users", self.inner.base);
        let resp = self
            .request(WHAT, Method::POST, &url, Some(&body), None)
            .await?;
        match resp.status.as_u16() {
            200 | 201 => resp
                .json::<RawUser>(WHAT)?
                .into_user(self.inner.upn.as_ref()),
            _ => Err(scim_error(WHAT, &resp)),
        }
    }

    async fn find_inner(&self, user_name: &str) -> Result<Vec<User>, DirectoryError> {
        let caps = self.capabilities().await?;
        let mut users = if caps.filter {
            self.list_filtered(Some(&format!("userName eq {}", filter_literal(user_name))))
                .await?
        } else {
            self.list_filtered(None).await?
        };
        // SCIM userName matching is case-insensitive; also guards against a lax filter.
        let want = user_name.to_lowercase();
        users.retain(|u| u.user_name.to_lowercase() == want);
        Ok(users)
    }
}

const LIST: &str = "SCIM list users";

/// A listing in progress, whichever the paging: what it read, against its ceilings.
struct Listing {
    limits: ListingLimits,
    /// `totalResults` of the first page; every later page must repeat it.
    total: Option<u64>,
    bytes: u64,
    /// Records served so far, repeats included (what the user ceiling counts).
    records: u64,
    users: Vec<User>,
    /// Where each id listed sits in `users`.
    positions: HashMap<String, usize>,
}

impl Listing {
    fn new(limits: ListingLimits) -> Self {
        Self {
            limits,
            total: None,
            bytes: 0,
            records: 0,
            users: Vec::new(),
            positions: HashMap::new(),
        }
    }

    /// The page's `totalResults`: required, within the ceiling, and the same on every page.
    fn hold_total(&mut self, page_total: Option<u64>, what: &str) -> Result<u64, DirectoryError> {
        let page_total = page_total.ok_or_else(|| {
            DirectoryError::Protocol(format!("{LIST}: {what} without totalResults"))
        })?;
        match self.total {
            None => {
                self.limits.check_claimed(LIST, page_total)?;
                self.total = Some(page_total);
                self.users.reserve(page_total.min(100_000) as usize);
            }
            Some(t) if t != page_total => {
                return Err(DirectoryError::Protocol(format!(
                    "{LIST}: totalResults changed from {t} to {page_total} while paging"
                )));
            }
            Some(_) => {}
        }
        Ok(page_total)
    }

    /// Adds a user and tells whether its id was listed already; the earlier copy then stays
    /// in its place, with this copy's values when `replace`.
    fn add(&mut self, user: User, replace: bool) -> bool {
        self.records += 1;
        match self.positions.get(&user.id) {
            Some(&at) => {
                if replace {
                    self.users[at] = user;
                }
                true
            }
            None => {
                self.positions.insert(user.id.clone(), self.users.len());
                self.users.push(user);
                false
            }
        }
    }
}

/// The write goes ahead only while the target still carries the expected Immutable ID.
fn check_owner(
    what: &str,
    actual: Option<&str>,
    expected: Option<&str>,
) -> Result<(), DirectoryError> {
    if actual == expected {
        Ok(())
    } else {
        Err(DirectoryError::PreconditionFailed(format!(
            "{what}: the target's externalId no longer matches the recorded Immutable ID; nothing written"
        )))
    }
}

/// A SCIM error response as a classified error: status and `scimType` only.
fn scim_error(what: &str, resp: &HttpResponse) -> DirectoryError {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        scim_type: Option<String>,
    }
    let scim_type = serde_json::from_slice::<Body>(&resp.body)
        .ok()
        .and_then(|b| b.scim_type);
    status_error(what, resp.status.as_u16(), scim_type.as_deref())
}

#[async_trait]
impl Directory for ScimClient {
    /// `All` is every user, unfiltered (a SCIM source is read whole: the core scopes it);
    /// `Domain` is the same listing kept to userNames or UPN attributes in the domain.
    async fn list_users(&self, scope: &ListScope) -> Result<Vec<User>, DirectoryError> {
        let mut users = self
            .list_filtered(None)
            .await
            .map_err(|e| self.inner.redactor.scrub(e))?;
        if let ListScope::Domain(domain) = scope {
            let suffix = format!("@{}", domain.to_lowercase());
            let in_scope = |s: &str| s.to_lowercase().ends_with(&suffix);
            users.retain(|u| in_scope(&u.user_name) || u.upn.as_deref().is_some_and(in_scope));
        }
        Ok(users)
    }

    async fn get_user(&self, id: &str) -> Result<Option<User>, DirectoryError> {
        self.read_for_write("SCIM get user", id)
            .await
            .map(|found| found.map(|(_, user, _)| user))
            .map_err(|e| self.inner.redactor.scrub(e))
    }

    async fn find_by_user_name(&self, user_name: &str) -> Result<Vec<User>, DirectoryError> {
        self.find_inner(user_name)
            .await
            .map_err(|e| self.inner.redactor.scrub(e))
    }

    async fn create_user(&self, user: &DesiredUser) -> Result<User, DirectoryError> {
        self.create_inner(user)
            .await
            .map_err(|e| self.inner.redactor.scrub(e))
    }

    /// `current` is not trusted: the user is read again for the ownership check and the diff.
    async fn update_user(
        &self,
        id: &str,
        _current: &User,
        desired: &DesiredUser,
        expected_immutable_id: Option<&str>,
    ) -> Result<(), DirectoryError> {
        self.update_inner(id, desired, expected_immutable_id)
            .await
            .map_err(|e| self.inner.redactor.scrub(e))
    }

    async fn delete_user(
        &self,
        id: &str,
        expected_immutable_id: Option<&str>,
    ) -> Result<(), DirectoryError> {
        self.delete_inner(id, expected_immutable_id)
            .await
            .map_err(|e| self.inner.redactor.scrub(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scim_errors_keep_status_and_scim_type_only() {
        let resp = |status: u16, body: &str| HttpResponse {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            headers: Default::default(),
            body: body.as_bytes().to_vec(),
        };
        let e = scim_error(
            "SCIM create user",
            &resp(
                409,
                r#"{"status":"409","scimType":"uniqueness","detail":"alice@example.com exists"}"#,
            ),
        );
        assert_eq!(
            e,
            DirectoryError::Conflict("SCIM create user: HTTP 409 uniqueness".into())
        );
        assert!(matches!(
            scim_error("x", &resp(401, "")),
            DirectoryError::InvalidCredentials(_)
        ));
        assert!(matches!(
            scim_error("x", &resp(403, "")),
            DirectoryError::InvalidCredentials(_)
        ));
        assert!(matches!(
            scim_error("x", &resp(412, "")),
            DirectoryError::PreconditionFailed(_)
        ));
        assert!(matches!(
            scim_error("x", &resp(400, "{}")),
            DirectoryError::Rejected(_)
        ));
        let e = scim_error(
            "x",
            &resp(400, r#"{"scimType":"invalid value with spaces"}"#),
        );
        assert_eq!(e, DirectoryError::Rejected("x: HTTP 400".into()));
    }

    #[test]
    fn owner_check() {
        assert!(check_owner("x", Some("a"), Some("a")).is_ok());
        assert!(check_owner("x", None, None).is_ok());
        for (actual, expected) in [
            (Some("a"), Some("b")),
            (Some("a"), None),
            (None, Some("a")),
            (Some("A"), Some("a")),
        ] {
            assert!(matches!(
                check_owner("x", actual, expected),
                Err(DirectoryError::PreconditionFailed(_))
            ));
        }
    }

    #[test]
    fn config_rejects_bad_upn_attributes_and_hides_the_token() {
        let base = Url::parse("http://127.0.0.1:1/v2").unwrap();
        let mut cfg = ScimConfig::new(base, SecretString::from("CANARY-TOKEN-77"));
        assert!(!format!("{cfg:?}").contains("CANARY"));
        cfg.upn_attribute = Some("name.formatted".into());
        assert!(ScimClient::new(cfg.clone()).is_err());
        cfg.upn_attribute = Some("".into());
        let c = ScimClient::new(cfg).unwrap();
        assert!(!format!("{c:?}").contains("CANARY"));
    }
}
