//! Microsoft Graph (Entra ID) as a [`Directory`]: the read side here (users by domain, one user,
//! the tenant's domains), the write side of the reverse direction (docs/behaviour.md §6) in
//! `writes.rs` (create, update, soft delete, deleted items and restore), `batch.rs` (many
//! updates or deletes through `$batch`), paced by `pacing.rs`, with the create password from
//! `password.rs`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dirsync::directory::DirectoryError> {
//! use dirsync::clients::graph::{GraphClient, GraphConfig, GraphCredential};
//! let cfg = GraphConfig::new("tenant-guid", "client-guid", GraphCredential::ClientSecret("s3cret".into()));
//! let graph = GraphClient::new(cfg)?;
//! # Ok(()) }
//! ```

mod batch;
mod delta;
mod odata;
mod pacing;
mod password;
mod token;
mod writes;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use reqwest::header::ACCEPT;
use secrecy::ExposeSecret;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use url::Url;

use crate::clients::outbound::{
    HttpClient, HttpConfig, HttpResponse, Redactor, check_base_url, encode_component, encode_id,
    json_error, status_error,
};
use crate::directory::{
    DesiredUser, Directory, DirectoryError, ListScope, ListingLimits, User, UserSink, UserUpdate,
};

pub use batch::MAX_BATCH;
pub use odata::{
    NextLinkGuard, USER_SELECT, check_same_origin, domain_filter, string_literal, upn_filter,
    users_query,
};
pub use pacing::{DEFAULT_WRITE_LIMIT, DEFAULT_WRITE_WINDOW, WritePacer, WritePacing};
pub use password::{PASSWORD_LEN, random_password};
pub use token::{
    AssertionAlgorithm, AssertionFn, AssertionProvider, ClientCertificate, FederatedTokenFile,
    GraphCredential, aadsts_head, refresh_margin,
};
pub use writes::{TARGET_SELECT, check_immutable_id, check_upn, graph_upn, mail_nickname};

pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
pub const DEFAULT_GRAPH_ENDPOINT: &str = "https://graph.microsoft.com";

/// How to reach and authenticate to one tenant's Graph.
#[derive(Clone, Debug)]
pub struct GraphConfig {
    /// Tenant GUID or domain name.
    pub tenant_id: String,
    pub client_id: String,
    pub credential: GraphCredential,
    /// e.g. `https://login.microsoftonline.com`, a sovereign cloud's, or the emulator's.
    pub authority_host: Url,
    /// e.g. `https://graph.microsoft.com`; `/v1.0/...` is appended.
    pub graph_endpoint: Url,
    /// Token scope; `None` = [`default_scope`] of the Graph endpoint.
    pub scope: Option<String>,
    /// Timeouts, retries, extra CA (used for both the authority and Graph), resolver seam.
    pub http: HttpConfig,
    /// Ceilings on one users listing (users, bytes).
    pub limits: ListingLimits,
    /// Client-side pacing of writes: Graph's identity write limit by default (3,000 per 150 s
    /// per app and tenant, of which the client uses 90 %: `pacing.rs`); `limit: 0` = off.
    pub write_pacing: WritePacing,
}

impl GraphConfig {
    /// A config for Microsoft's global cloud with default HTTP settings.
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        credential: GraphCredential,
    ) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            credential,
            authority_host: constant_url(DEFAULT_AUTHORITY_HOST),
            graph_endpoint: constant_url(DEFAULT_GRAPH_ENDPOINT),
            scope: None,
            http: HttpConfig::default(),
            limits: ListingLimits::default(),
            write_pacing: WritePacing::default(),
        }
    }
}

#[allow(clippy::expect_used)] // only ever called with the constants above
fn constant_url(s: &'static str) -> Url {
    Url::parse(s).expect("constant URL parses")
}

/// Microsoft's Graph hosts, whose own URL is the token resource (global and national clouds).
const GRAPH_RESOURCE_HOSTS: &[&str] = &[
    "graph.microsoft.com",
    "graph.microsoft.us",
    "dod-graph.microsoft.us",
    "microsoftgraph.chinacloudapi.cn",
];

/// The token scope for `endpoint`: `https://<graph host>/.default` for Microsoft's clouds;
/// for anything else (the emulator, a TLS-inspecting proxy's name) the global Graph resource,
/// which is what such a stand-in fronts. [`GraphConfig::scope`] overrides it.
pub fn default_scope(endpoint: &Url) -> String {
    match endpoint.host_str() {
        Some(h)
            if GRAPH_RESOURCE_HOSTS
                .iter()
                .any(|g| g.eq_ignore_ascii_case(h)) =>
        {
            format!("https://{}/.default", h.to_ascii_lowercase())
        }
        _ => "https://graph.microsoft.com/.default".to_string(),
    }
}

/// The Graph client. Cheap to clone; clones share the token cache, the connection pool and the
/// write pacer.
#[derive(Clone)]
pub struct GraphClient {
    http: HttpClient,
    inner: Arc<Inner>,
}

struct Inner {
    /// The Graph endpoint without a trailing slash.
    base: String,
    origin: Url,
    tokens: token::TokenSource,
    redactor: Redactor,
    limits: ListingLimits,
    pacer: WritePacer,
}

impl fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphClient")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    pub fn new(cfg: GraphConfig) -> Result<Self, DirectoryError> {
        let base = check_base_url("Graph endpoint", &cfg.graph_endpoint)?;
        let authority = check_base_url("authority host", &cfg.authority_host)?;
        if cfg.tenant_id.trim().is_empty() || cfg.client_id.trim().is_empty() {
            return Err(DirectoryError::InvalidCredentials(
                "tenant id and client id are required".to_string(),
            ));
        }
        let token_url = Url::parse(&format!(
            "{authority}/{}/oauth2/v2.0/token",
            encode_component(&cfg.tenant_id)
        ))
        .map_err(|_| {
            DirectoryError::Rejected("authority host does not form a token URL".to_string())
        })?;
        let scope = cfg
            .scope
            .clone()
            .unwrap_or_else(|| default_scope(&cfg.graph_endpoint));
        let mut redactor = Redactor::new();
        if let GraphCredential::ClientSecret(s) = &cfg.credential {
            redactor.add(s);
        }
        let tokens = token::TokenSource::new(
            token_url,
            cfg.client_id.clone(),
            scope,
            cfg.credential,
            redactor.clone(),
        );
        let http = HttpClient::new(&cfg.http)?;
        Ok(Self {
            http,
            inner: Arc::new(Inner {
                base,
                origin: cfg.graph_endpoint,
                tokens,
                redactor,
                limits: cfg.limits,
                pacer: WritePacer::new(cfg.write_pacing),
            }),
        })
    }

    /// The same client with another run deadline (shares tokens and connections).
    pub fn with_deadline(&self, deadline: Option<Instant>) -> Self {
        Self {
            http: self.http.with_deadline(deadline),
            inner: self.inner.clone(),
        }
    }

    /// Gets a token now, so that refused credentials show before any read.
    pub async fn authenticate(&self) -> Result<(), DirectoryError> {
        self.inner.tokens.token(&self.http).await.map(|_| ())
    }

    /// The `DomainNotFound` check of a run whose source had no user in `domain` (docs/behaviour.md
    /// §2.1): true only when the tenant's domain list was read and lacks it (an app without
    /// `Domain.Read.All` cannot tell, and the run then reports `NoSourceUsers`).
    pub async fn lacks_domain(&self, domain: &str) -> bool {
        self.list_domains()
            .await
            .is_ok_and(|domains| !domains.iter().any(|d| d.eq_ignore_ascii_case(domain)))
    }

    /// The tenant's domain names (`GET /v1.0/domains`), for the `DomainNotFound` check.
    pub async fn list_domains(&self) -> Result<Vec<String>, DirectoryError> {
        self.list_domains_inner()
            .await
            .map_err(|e| self.inner.redactor.scrub(e))
    }

    async fn list_domains_inner(&self) -> Result<Vec<String>, DirectoryError> {
        #[derive(Deserialize)]
        struct Domain {
            id: String,
        }
        #[derive(Deserialize)]
        struct Page {
            #[serde(rename = "@odata.nextLink")]
            next_link: Option<String>,
            value: Option<Vec<Domain>>,
        }
        const WHAT: &str = "Graph domains page";
        let first = self.url("/v1.0/domains?$select=id")?;
        let mut guard = NextLinkGuard::new(self.inner.origin.clone(), &first);
        let mut url = first;
        let mut out = Vec::new();
        loop {
            let resp = self.get(&url, WHAT).await?;
            if !resp.status.is_success() {
                return Err(graph_error(WHAT, &resp));
            }
            let page: Page = resp.json(WHAT)?;
            let value = page
                .value
                .ok_or_else(|| DirectoryError::Protocol(format!("{WHAT} has no value array")))?;
            out.extend(value.into_iter().map(|d| d.id));
            match page.next_link {
                Some(link) => url = guard.check(&link)?,
                None => return Ok(out),
            }
        }
    }

    fn url(&self, path_and_query: &str) -> Result<Url, DirectoryError> {
        Url::parse(&format!("{}{path_and_query}", self.inner.base))
            .map_err(|_| DirectoryError::Rejected("cannot form a Graph URL".to_string()))
    }

    /// GET with the bearer token; on a 401 the token is refreshed once and the GET re-sent.
    /// `ConsistencyLevel: eventual` goes on every request (it is never carried by nextLink).
    async fn get(&self, url: &Url, what: &str) -> Result<HttpResponse, DirectoryError> {
        self.get_reusing(url, what, Vec::new()).await
    }

    /// [`GraphClient::get`] reading the body into `buffer` (see [`HttpClient::send_reusing`]).
    async fn get_reusing(
        &self,
        url: &Url,
        what: &str,
        mut buffer: Vec<u8>,
    ) -> Result<HttpResponse, DirectoryError> {
        let mut refreshed = false;
        loop {
            let (token, generation) = self.inner.tokens.token(&self.http).await?;
            let resp = self
                .http
                .send_reusing(what, buffer, |c| {
                    c.get(url.clone())
                        .bearer_auth(token.expose_secret())
                        .header("ConsistencyLevel", "eventual")
                        .header(ACCEPT, "application/json")
                })
                .await?;
            if resp.status == reqwest::StatusCode::UNAUTHORIZED && !refreshed {
                tracing::debug!(what, "Graph refused the access token; refreshing it once");
                self.inner.tokens.invalidate(generation).await;
                refreshed = true;
                buffer = resp.body;
                continue;
            }
            return Ok(resp);
        }
    }

    /// Every user matching `filter`, all pages or an error.
    async fn list(&self, filter: Option<&str>) -> Result<Vec<User>, DirectoryError> {
        let mut users = Vec::new();
        self.list_into(filter, &|_| true, &mut users).await?;
        Ok(users)
    }

    /// Every user matching `filter` that `keep` accepts, into `sink` as each page is parsed;
    /// all pages or an error.
    async fn list_into(
        &self,
        filter: Option<&str>,
        keep: &(dyn Fn(&User) -> bool + Sync),
        sink: &mut dyn UserSink,
    ) -> Result<(), DirectoryError> {
        self.list_path_into("/v1.0/users", "Graph users page", filter, keep, sink)
            .await
    }

    /// [`GraphClient::list_into`] of the users listing at `path` (`/v1.0/users`, or deleted
    /// items); `what` names its pages in errors.
    async fn list_path_into(
        &self,
        path: &str,
        what: &str,
        filter: Option<&str>,
        keep: &(dyn Fn(&User) -> bool + Sync),
        sink: &mut dyn UserSink,
    ) -> Result<(), DirectoryError> {
        let first = self.url(&format!("{path}?{}", users_query(filter)))?;
        let mut guard = NextLinkGuard::new(self.inner.origin.clone(), &first);
        let mut url = first;
        let mut listing = Listing {
            sink,
            keep,
            seen: HashSet::new(),
            listed: 0,
            first_duplicate: None,
            count: None,
            page_size: None,
        };
        // One body buffer for every page (see `HttpClient::send_reusing`).
        let mut buffer = Vec::new();
        let mut bytes = 0u64;
        let limits = self.inner.limits;
        for page_no in 1.. {
            let resp = self.get_reusing(&url, what, buffer).await?;
            if !resp.status.is_success() {
                return Err(graph_error(what, &resp));
            }
            bytes += resp.body.len() as u64;
            let mut seed = UsersPage {
                listing: &mut listing,
                page_no,
                record_error: None,
            };
            let parsed =
                (&mut seed).deserialize(&mut serde_json::Deserializer::from_slice(&resp.body));
            let next_link = match (parsed, seed.record_error) {
                (_, Some(e)) => return Err(e),
                (Err(e), None) => return Err(json_error(what, &e)),
                (Ok(None), None) => {
                    return Err(DirectoryError::Protocol(format!(
                        "{what} {page_no} has no value array"
                    )));
                }
                (Ok(Some(next_link)), None) => next_link,
            };
            buffer = resp.body;
            if page_no == 1 {
                listing.first_page_read(next_link.is_some())?;
                limits.check_claimed(what, listing.count.unwrap_or(0))?;
            }
            limits.check_read(what, listing.listed as u64, bytes)?;
            match next_link {
                Some(link) => url = guard.check(&link)?,
                None => break,
            }
        }
        listing.finish()
    }
}

/// A listing in progress: where its users go, and the ids seen so far (a user listed twice
/// means the paging went wrong).
struct Listing<'a> {
    sink: &'a mut dyn UserSink,
    keep: &'a (dyn Fn(&User) -> bool + Sync),
    seen: HashSet<IdKey>,
    listed: usize,
    /// Reported once every page is read, so that a looping nextLink (which repeats users too)
    /// is named as such.
    first_duplicate: Option<usize>,
    /// `@odata.count` of the first page: how many records the whole listing must hold.
    count: Option<u64>,
    /// Records on a full first page (one that had a nextLink): a listing that ends this many
    /// short has lost a page.
    page_size: Option<u64>,
}

/// How far a listing may fall short of `@odata.count` and still count as complete: the count is
/// eventually consistent (users deleted moments ago may still be counted), so 1 % or 10 users,
/// whichever is more, but always less than one page, since a missing page is exactly the early
/// end that made other sync tools delete real users (docs/behaviour.md, "A read that does not
/// add up").
pub fn allowed_shortfall(count: u64, page_size: Option<u64>) -> u64 {
    let slack = (count / 100).max(10);
    match page_size {
        Some(p) if p > 0 => slack.min(p - 1),
        _ => slack,
    }
}

/// A user id as remembered for the duplicate check: Graph's ids are GUIDs, kept as 16 bytes
/// when in their canonical form (a 100,000-user listing remembers them all).
#[derive(PartialEq, Eq, Hash)]
enum IdKey {
    Guid(u128),
    Other(Box<str>),
}

impl IdKey {
    fn of(id: &str) -> Self {
        let mut buf = uuid::Uuid::encode_buffer();
        match uuid::Uuid::try_parse(id) {
            Ok(g) if g.hyphenated().encode_lower(&mut buf) == id => IdKey::Guid(g.as_u128()),
            _ => IdKey::Other(id.into()),
        }
    }
}

impl Listing<'_> {
    /// Room for `n` users, in the duplicate check and in the sink.
    fn size_hint(&mut self, n: usize) {
        self.seen.reserve(n.saturating_sub(self.seen.len()));
        self.sink.size_hint(n);
    }

    fn add(&mut self, user: User) {
        let record = self.listed;
        self.listed += 1;
        if !self.seen.insert(IdKey::of(&user.id)) {
            self.first_duplicate.get_or_insert(record);
        } else if (self.keep)(&user) {
            self.sink.push(user);
        }
    }

    /// After page 1: Graph sends `@odata.count` there (asked for with `$count=true` and
    /// `ConsistencyLevel: eventual`); without it the listing could not be checked, so it is a
    /// read error rather than a listing taken on trust.
    fn first_page_read(&mut self, has_next: bool) -> Result<(), DirectoryError> {
        if self.count.is_none() {
            return Err(DirectoryError::Protocol(
                "Graph users page 1 has no @odata.count, so the listing cannot be checked for completeness".into(),
            ));
        }
        if has_next {
            self.page_size = Some(self.listed as u64);
        }
        Ok(())
    }

    fn finish(self) -> Result<(), DirectoryError> {
        if let Some(record) = self.first_duplicate {
            return Err(DirectoryError::Protocol(format!(
                "Graph listed user record {record} twice"
            )));
        }
        let listed = self.listed as u64;
        if let Some(count) = self.count {
            let short = count.saturating_sub(listed);
            if short > allowed_shortfall(count, self.page_size) {
                return Err(DirectoryError::Protocol(format!(
                    "the Graph users listing was incomplete: it ended after {listed} users but @odata.count \
                     said {count} ({short} missing); nothing is planned from a partial read"
                )));
            }
        }
        Ok(())
    }
}

/// Parses one page of a users listing straight into the listing's sink: no page-sized
/// intermediate is built, and `@odata.count` (sent with `$count=true`, before `value`) lets the
/// sink make room once instead of growing by doubling (at 100,000 users a third of a vector
/// grown so would be spare). Yields the page's `@odata.nextLink`, or `None` when it has no
/// `value` array.
struct UsersPage<'l, 'a> {
    listing: &'l mut Listing<'a>,
    page_no: usize,
    /// A record the common model cannot take (missing or null field); the parse stops at it.
    record_error: Option<DirectoryError>,
}

/// The most records `@odata.count` may reserve room for up front: a wrong or hostile count must
/// not allocate without bound (a larger listing still grows as it arrives).
const MAX_PRESIZED_USERS: usize = 1 << 20;

impl<'de> DeserializeSeed<'de> for &mut UsersPage<'_, '_> {
    type Value = Option<Option<String>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &mut UsersPage<'_, '_> {
    type Value = Option<Option<String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Graph users page")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut next_link, mut has_value) = (None, false);
        while let Some(key) = map.next_key::<PageField>()? {
            match key {
                PageField::NextLink => next_link = map.next_value::<Option<String>>()?,
                PageField::Count => {
                    if let Some(count) = map.next_value::<Option<u64>>()? {
                        if self.page_no == 1 {
                            self.listing.count = Some(count);
                        }
                        let count = usize::try_from(count)
                            .unwrap_or(usize::MAX)
                            .min(MAX_PRESIZED_USERS);
                        self.listing.size_hint(count);
                    }
                }
                PageField::Value => has_value = map.next_value_seed(UserRecords(&mut *self))?,
                PageField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(has_value.then_some(next_link))
    }
}

#[derive(Deserialize)]
#[serde(field_identifier)]
enum PageField {
    #[serde(rename = "@odata.nextLink")]
    NextLink,
    #[serde(rename = "@odata.count")]
    Count,
    #[serde(rename = "value")]
    Value,
    #[serde(other)]
    Other,
}

/// The `value` array: each record is checked and moved into the listing as it is parsed.
/// `null` counts as no array.
struct UserRecords<'p, 'l, 'a>(&'p mut UsersPage<'l, 'a>);

impl<'de> DeserializeSeed<'de> for UserRecords<'_, '_, '_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for UserRecords<'_, '_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of users")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let page = self.0;
        let mut index = 0;
        while let Some(raw) = seq.next_element::<RawUser>()? {
            match raw.into_user(page.page_no, index) {
                Ok(user) => page.listing.add(user),
                Err(e) => {
                    page.record_error = Some(e);
                    return Err(serde::de::Error::custom("unusable user record"));
                }
            }
            index += 1;
        }
        Ok(true)
    }
}

/// One user as Graph sends it. Each field is `None` when absent and `Some(None)` when `null`,
/// so that a missing selected property is told apart from an empty one (docs/behaviour.md §2.1).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawUser {
    #[serde(default, deserialize_with = "present")]
    id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    user_principal_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    given_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    surname: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    mail: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    proxy_addresses: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    account_enabled: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    on_premises_immutable_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    user_type: Option<Option<String>>,
}

fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl RawUser {
    /// Checks presence (every selected property) and non-nullness (id, UPN, accountEnabled).
    /// Messages give positions, never user data.
    fn into_user(self, page: usize, index: usize) -> Result<User, DirectoryError> {
        let at = |what: &str, field: &str| {
            DirectoryError::Protocol(format!(
                "Graph user record {index} on page {page} {what} {field}"
            ))
        };
        fn need<T>(
            v: Option<T>,
            f: &'static str,
            at: &dyn Fn(&str, &str) -> DirectoryError,
        ) -> Result<T, DirectoryError> {
            v.ok_or_else(|| at("is missing", f))
        }
        let id = need(self.id, "id", &at)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| at("has an empty", "id"))?;
        let upn = need(self.user_principal_name, "userPrincipalName", &at)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| at("has an empty", "userPrincipalName"))?;
        let active = need(self.account_enabled, "accountEnabled", &at)?
            .ok_or_else(|| at("has a null", "accountEnabled"))?;
        let display_name = need(self.display_name, "displayName", &at)?;
        let given_name = need(self.given_name, "givenName", &at)?;
        let surname = need(self.surname, "surname", &at)?;
        let email = need(self.mail, "mail", &at)?;
        let proxy_addresses =
            need(self.proxy_addresses, "proxyAddresses", &at)?.unwrap_or_default();
        let immutable_id = need(self.on_premises_immutable_id, "onPremisesImmutableId", &at)?;
        let user_type = need(self.user_type, "userType", &at)?;
        Ok(User {
            id,
            user_name: upn.clone(),
            upn: Some(upn),
            display_name,
            given_name,
            surname,
            email,
            proxy_addresses,
            active,
            immutable_id,
            guest: user_type.is_some_and(|t| t.eq_ignore_ascii_case("Guest")),
        })
    }
}

/// A Graph error response as a classified error: status and `error.code` only.
fn graph_error(what: &str, resp: &HttpResponse) -> DirectoryError {
    #[derive(Deserialize)]
    struct Body {
        error: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        code: Option<String>,
    }
    let code = serde_json::from_slice::<Body>(&resp.body)
        .ok()
        .and_then(|b| b.error)
        .and_then(|e| e.code);
    status_error(what, resp.status.as_u16(), code.as_deref())
}

impl GraphClient {
    /// [`Directory::get_user`] without the scrub.
    async fn get_user_inner(&self, id: &str) -> Result<Option<User>, DirectoryError> {
        const WHAT: &str = "Graph get user";
        let url = self.url(&format!(
            "/v1.0/users/{}?$select={USER_SELECT}",
            encode_id(id)?
        ))?;
        let resp = self.get(&url, WHAT).await?;
        if resp.status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status.is_success() {
            return Err(graph_error(WHAT, &resp));
        }
        resp.json::<RawUser>(WHAT)?.into_user(1, 0).map(Some)
    }
}

#[async_trait]
impl Directory for GraphClient {
    async fn list_users(&self, scope: &ListScope) -> Result<Vec<User>, DirectoryError> {
        let mut users = Vec::new();
        self.list_users_into(scope, &mut users).await?;
        Ok(users)
    }

    async fn list_users_into(
        &self,
        scope: &ListScope,
        sink: &mut dyn UserSink,
    ) -> Result<(), DirectoryError> {
        let result = match scope {
            ListScope::All => self.list_into(None, &|_| true, sink).await,
            ListScope::Domain(domain) => {
                let suffix = format!("@{}", domain.to_ascii_lowercase());
                // The server filters; this keeps a lax server from widening the scope.
                let in_domain = |u: &User| {
                    let name = u.user_name.as_bytes();
                    name.len() >= suffix.len()
                        && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
                };
                self.list_into(Some(&domain_filter(domain)), &in_domain, sink)
                    .await
            }
        };
        result.map_err(|e| self.inner.redactor.scrub(e))
    }

    async fn get_user(&self, id: &str) -> Result<Option<User>, DirectoryError> {
        self.get_user_inner(id)
            .await
            .map_err(|e| self.inner.redactor.scrub(e))
    }

    fn delta(&self) -> Option<&dyn crate::directory::DeltaSource> {
        Some(self)
    }

    async fn find_by_user_name(&self, user_name: &str) -> Result<Vec<User>, DirectoryError> {
        let mut users = self
            .list(Some(&upn_filter(user_name)))
            .await
            .map_err(|e| self.inner.redactor.scrub(e))?;
        users.retain(|u| u.user_name.eq_ignore_ascii_case(user_name));
        Ok(users)
    }

    /// `POST /v1.0/users` with the mapping of `writes.rs` and a random password; the user as
    /// written, with its new object id.
    async fn create_user(&self, user: &DesiredUser) -> Result<User, DirectoryError> {
        self.create_inner(user)
            .await
            .map_err(|e| self.inner.redactor.scrub(e))
    }

    /// Reads user `id` (the guards and the Immutable ID precondition), then PATCHes the
    /// properties that differ from what it read; nothing when none do. `current` (the plan's
    /// view) is not needed: the fresh read is compared instead.
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

    /// Consecutive updates or deletes go out as one `$batch` of reads and one of writes
    /// (`batch.rs`): two round trips for up to 20 users instead of forty.
    fn batch_limit(&self) -> usize {
        MAX_BATCH
    }

    async fn update_users(&self, updates: &[UserUpdate<'_>]) -> Vec<Result<(), DirectoryError>> {
        self.update_batch(updates).await
    }

    async fn delete_users(
        &self,
        deletes: &[(&str, Option<&str>)],
    ) -> Vec<Result<(), DirectoryError>> {
        self.delete_batch(deletes).await
    }

    /// Reads user `id` (the guards and the precondition), then `DELETE`s it: Graph's soft
    /// delete, restorable for 30 days ([`GraphClient::restore_user`]). A user already gone is
    /// done.
    async fn delete_user(
        &self,
        id: &str,
        expected_immutable_id: Option<&str>,
    ) -> Result<(), DirectoryError> {
        self.delete_inner(id, expected_immutable_id)
            .await
            .map_err(|e| self.inner.redactor.scrub(e))
    }

    /// Entra ID's deleted items ([`GraphClient::deleted_users`]): what Restore rows are
    /// planned from.
    async fn deleted_users(&self) -> Result<Vec<User>, DirectoryError> {
        GraphClient::deleted_users(self).await
    }

    async fn restore_user(&self, id: &str) -> Result<User, DirectoryError> {
        GraphClient::restore_user(self, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> serde_json::Value {
        serde_json::json!({
            "id": "0c3f1d8e-2b6a-4a51-9a1e-1f2d3c4b5a69",
            "userPrincipalName": "alice@example.com",
            "displayName": "Alice Smith",
            "givenName": "Alice",
            "surname": null,
            "mail": "alice@example.com",
            "proxyAddresses": ["SMTP:alice@example.com", "smtp:a@example.com"],
            "accountEnabled": true,
            "onPremisesImmutableId": null,
            "userType": "Member",
            "@odata.type": "#microsoft.graph.user"
        })
    }

    fn parse(v: serde_json::Value) -> Result<User, DirectoryError> {
        serde_json::from_value::<RawUser>(v)
            .unwrap()
            .into_user(3, 7)
    }

    /// What each page yielded (its nextLink, or `None` without a value array).
    type PageLinks = Vec<Option<Option<String>>>;

    /// Parses `pages` as one listing into a Vec, keeping users whose id does not start with `x`.
    fn list_pages(pages: &[serde_json::Value]) -> (Result<PageLinks, DirectoryError>, Vec<User>) {
        let mut users = Vec::new();
        let keep = |u: &User| !u.id.starts_with('x');
        let mut listing = Listing {
            sink: &mut users,
            keep: &keep,
            seen: HashSet::new(),
            listed: 0,
            first_duplicate: None,
            count: None,
            page_size: None,
        };
        let mut links = Vec::new();
        let mut result = Ok(());
        for (i, body) in pages.iter().enumerate() {
            let body = body.to_string();
            let mut page = UsersPage {
                listing: &mut listing,
                page_no: i + 1,
                record_error: None,
            };
            let parsed = (&mut page).deserialize(&mut serde_json::Deserializer::from_str(&body));
            match (parsed, page.record_error) {
                (_, Some(e)) => result = Err(e),
                (Err(e), None) => result = Err(json_error("page", &e)),
                (Ok(link), None) => {
                    if let (0, Some(next)) = (i, &link) {
                        result = listing.first_page_read(next.is_some());
                    }
                    links.push(link)
                }
            }
            if result.is_err() {
                break;
            }
        }
        let result = result.and_then(|()| listing.finish());
        (result.map(|()| links), users)
    }

    fn with_id(id: &str) -> serde_json::Value {
        let mut u = full();
        u["id"] = id.into();
        u
    }

    #[test]
    fn pages_go_straight_into_the_listing() {
        let a = "0c3f1d8e-2b6a-4a51-9a1e-1f2d3c4b5a69";
        let b = "1c3f1d8e-2b6a-4a51-9a1e-1f2d3c4b5a69";
        let (links, users) = list_pages(&[
            serde_json::json!({"@odata.context": "x", "@odata.count": 3, "value": [with_id(a), with_id("x-skipped")],
                               "@odata.nextLink": "https://graph.example/next"}),
            serde_json::json!({"value": [with_id(b)], "extra": {"ignored": [1, 2]}}),
        ]);
        assert_eq!(
            links.unwrap(),
            vec![
                Some(Some("https://graph.example/next".to_string())),
                Some(None)
            ]
        );
        assert_eq!(
            users.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
            [a, b]
        );

        // Room is made once from @odata.count (and the listing, 50 short, is refused).
        let (r, users) = list_pages(&[serde_json::json!({"@odata.count": 50, "value": []})]);
        assert!(users.capacity() >= 50, "room made once from @odata.count");
        assert!(r.is_err());
        // A huge count reserves a bounded amount.
        let (_, users) = list_pages(&[serde_json::json!({"@odata.count": u64::MAX, "value": []})]);
        assert_eq!(users.capacity(), MAX_PRESIZED_USERS);
    }

    #[test]
    fn a_page_without_a_value_array_is_told_apart() {
        for page in [
            serde_json::json!({"@odata.nextLink": "https://g/n"}),
            serde_json::json!({"value": null}),
        ] {
            assert_eq!(list_pages(&[page]).0.unwrap(), vec![None]);
        }
        let e = list_pages(&[serde_json::json!({"value": {"not": "an array"}})])
            .0
            .unwrap_err();
        assert!(
            matches!(&e, DirectoryError::Protocol(m) if m.contains("unexpected JSON content")),
            "{e}"
        );
    }

    #[test]
    fn a_bad_record_or_a_user_listed_twice_stops_the_listing() {
        let mut bad = full();
        bad.as_object_mut().unwrap().remove("mail");
        let other = with_id("1c3f1d8e-2b6a-4a51-9a1e-1f2d3c4b5a69");
        let (r, _) = list_pages(&[
            serde_json::json!({"@odata.count": 3, "value": [full()]}),
            serde_json::json!({"value": [other, full()]}),
        ]);
        assert_eq!(
            r.unwrap_err(),
            DirectoryError::Protocol("Graph listed user record 2 twice".into())
        );
        // A bad record stops the listing at once; a repeated user is reported after the last
        // page, so that an error of the paging itself (a looping nextLink) is named first.
        let (r, _) = list_pages(&[
            serde_json::json!({"@odata.count": 3, "value": [full()]}),
            serde_json::json!({"value": [full(), bad]}),
        ]);
        assert_eq!(
            r.unwrap_err(),
            DirectoryError::Protocol("Graph user record 1 on page 2 is missing mail".into())
        );
        // Ids that are not canonical GUIDs are compared as they are: these are three users.
        let upper = "0C3F1D8E-2B6A-4A51-9A1E-1F2D3C4B5A69";
        let (r, users) = list_pages(&[
            serde_json::json!({"@odata.count": 3, "value": [full(), with_id(upper), with_id("42")]}),
        ]);
        assert!(r.is_ok());
        assert_eq!(users.len(), 3);
        let (r, _) = list_pages(&[
            serde_json::json!({"@odata.count": 2, "value": [with_id("42"), with_id("42")]}),
        ]);
        assert_eq!(
            r.unwrap_err(),
            DirectoryError::Protocol("Graph listed user record 1 twice".into())
        );
    }

    /// `n` distinct users with GUID ids, starting at `from`.
    fn users_from(from: u128, n: u128) -> Vec<serde_json::Value> {
        (from..from + n)
            .map(|i| with_id(&uuid::Uuid::from_u128(i).hyphenated().to_string()))
            .collect()
    }

    #[test]
    fn a_listing_that_ends_a_page_short_of_its_count_is_a_read_error() {
        let next = "https://graph.example/next";
        // Three pages of 40 promised; the second comes back without a nextLink.
        let (r, _) = list_pages(&[
            serde_json::json!({"@odata.count": 120, "value": users_from(0, 40), "@odata.nextLink": next}),
            serde_json::json!({"value": users_from(40, 40)}),
        ]);
        let e = r.unwrap_err();
        assert!(
            matches!(&e, DirectoryError::Protocol(m) if m.contains("incomplete") && m.contains("ended after 80 users")
                && m.contains("said 120")),
            "{e}"
        );
        // A count that overstates by less than the slack (eventual consistency) is accepted...
        let (r, users) = list_pages(&[
            serde_json::json!({"@odata.count": 88, "value": users_from(0, 40), "@odata.nextLink": next}),
            serde_json::json!({"value": users_from(40, 40)}),
        ]);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(users.len(), 80);
        // ... and more users than counted (created during the read) too.
        assert!(
            list_pages(&[serde_json::json!({"@odata.count": 70, "value": users_from(0, 80)})])
                .0
                .is_ok()
        );
        // Without a count on page 1 nothing can be checked: a read error.
        let e = list_pages(&[serde_json::json!({"value": users_from(0, 3)})])
            .0
            .unwrap_err();
        assert!(
            matches!(&e, DirectoryError::Protocol(m) if m.contains("no @odata.count")),
            "{e}"
        );
    }

    #[test]
    fn the_shortfall_allowed_is_small_and_always_under_a_page() {
        assert_eq!(allowed_shortfall(2_884, Some(999)), 28);
        assert_eq!(allowed_shortfall(100, None), 10);
        assert_eq!(allowed_shortfall(200_000, Some(999)), 998);
        assert_eq!(allowed_shortfall(120, Some(5)), 4);
    }

    #[test]
    fn graph_users_map_to_the_common_model() {
        let u = parse(full()).unwrap();
        assert_eq!(u.id, "0c3f1d8e-2b6a-4a51-9a1e-1f2d3c4b5a69");
        assert_eq!(u.user_name, "alice@example.com");
        assert_eq!(u.upn.as_deref(), Some("alice@example.com"));
        assert_eq!(u.surname, None);
        assert_eq!(u.given_name.as_deref(), Some("Alice"));
        assert_eq!(u.proxy_addresses.len(), 2);
        assert!(u.active && !u.guest);
        let mut g = full();
        g["userType"] = "Guest".into();
        g["proxyAddresses"] = serde_json::Value::Null;
        let u = parse(g).unwrap();
        assert!(u.guest);
        assert!(u.proxy_addresses.is_empty());
    }

    #[test]
    fn missing_or_null_required_fields_are_protocol_errors() {
        for field in USER_SELECT.split(',') {
            let mut v = full();
            v.as_object_mut().unwrap().remove(field);
            let e = parse(v).unwrap_err();
            assert!(
                matches!(&e, DirectoryError::Protocol(m) if m.contains(field) && m.contains("record 7 on page 3")),
                "{field}: {e}"
            );
        }
        for field in ["id", "userPrincipalName", "accountEnabled"] {
            let mut v = full();
            v[field] = serde_json::Value::Null;
            assert!(
                matches!(parse(v), Err(DirectoryError::Protocol(_))),
                "{field}"
            );
        }
        // A wrong type fails the page parse (it is a protocol error there).
        let mut v = full();
        v["accountEnabled"] = "yes".into();
        assert!(serde_json::from_value::<RawUser>(v).is_err());
    }

    #[test]
    fn graph_errors_keep_status_and_code_only() {
        let resp = |status: u16, body: &str| HttpResponse {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            headers: Default::default(),
            body: body.as_bytes().to_vec(),
        };
        let e = graph_error(
            "Graph users page",
            &resp(
                403,
                r#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges secret=abc"}}"#,
            ),
        );
        assert_eq!(
            e,
            DirectoryError::InvalidCredentials(
                "Graph users page: HTTP 403 Authorization_RequestDenied".into()
            )
        );
        let e = graph_error(
            "x",
            &resp(400, r#"{"error":{"code":"not a code, a sentence"}}"#),
        );
        assert_eq!(e, DirectoryError::Rejected("x: HTTP 400".into()));
        assert!(matches!(
            graph_error("x", &resp(404, "")),
            DirectoryError::NotFound(_)
        ));
    }

    #[test]
    fn config_debug_never_prints_the_secret() {
        let cfg = GraphConfig::new(
            "t",
            "c",
            GraphCredential::ClientSecret("CANARY-SECRET-42".into()),
        );
        assert!(!format!("{cfg:?}").contains("CANARY"));
        let client = GraphClient::new(cfg).unwrap();
        assert!(!format!("{client:?}").contains("CANARY"));
    }

    #[test]
    fn scopes_follow_the_cloud() {
        let s = |u: &str| default_scope(&Url::parse(u).unwrap());
        assert_eq!(
            s("https://graph.microsoft.com"),
            "https://graph.microsoft.com/.default"
        );
        assert_eq!(
            s("https://graph.microsoft.us/"),
            "https://graph.microsoft.us/.default"
        );
        assert_eq!(
            s("https://127.0.0.1:8443"),
            "https://graph.microsoft.com/.default"
        );
    }

    #[test]
    fn bad_endpoints_are_refused_at_build_time() {
        let mut cfg = GraphConfig::new("t", "c", GraphCredential::ClientSecret("s".into()));
        cfg.graph_endpoint = Url::parse("https://user:pw@graph.example").unwrap();
        assert!(GraphClient::new(cfg).is_err());
    }
}
