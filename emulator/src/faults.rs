//! Fault injection rules, switched on and off through the control API.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// What kind of request a rule can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Token,
    OpenId,
    Users,
    User,
    /// `POST /v1.0/users`, `PATCH`/`DELETE /v1.0/users/{id}`.
    UserWrite,
    /// `/v1.0/directory/deletedItems/...` (list, get, restore, permanent delete).
    DeletedItems,
    /// `POST /v1.0/$batch` (the envelope; its items count under their own names).
    Batch,
    Delta,
    Domains,
    GraphOther,
    Control,
    Other,
}

impl Endpoint {
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            Endpoint::OpenId => "openid",
            Endpoint::Users => "users",
            Endpoint::User => "user",
            Endpoint::UserWrite => "userWrite",
            Endpoint::DeletedItems => "deletedItems",
            Endpoint::Batch => "batch",
            Endpoint::Delta => "delta",
            Endpoint::Domains => "domains",
            Endpoint::GraphOther => "graphOther",
            Endpoint::Control => "control",
            Endpoint::Other => "other",
        }
    }

    pub fn is_graph(self) -> bool {
        matches!(
            self,
            Endpoint::Users
                | Endpoint::User
                | Endpoint::UserWrite
                | Endpoint::DeletedItems
                | Endpoint::Batch
                | Endpoint::Delta
                | Endpoint::Domains
                | Endpoint::GraphOther
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FaultKind {
    /// 429 (body `TooManyRequests` or `Request_ThrottledTemporarily`), `Retry-After` if given.
    Throttle,
    /// 503 `serviceNotAvailable`, `Retry-After` if given.
    Unavailable,
    /// 504.
    GatewayTimeout,
    /// Send the status line, headers and part of the body, then drop the connection.
    DropConnection,
    /// Delta follow-up requests: 400 `syncStateNotFound`.
    ExpiredDeltaToken,
    /// Delta follow-up requests: 410 Gone + `Location` with an empty `$deltatoken`.
    ResyncRequired,
    /// Wait `delayMs`, then answer normally.
    Delay,
    /// Answer normally but without `@odata.nextLink`: a listing that ends early (with `after: N`,
    /// page N + 1 is the last one served). Graph has been seen to do this; a client must notice
    /// from `@odata.count` that the listing does not add up.
    DropNextLink,
    /// Answer normally with `@odata.count` moved by `countOffset` (a count that lies).
    WrongCount,
}

fn default_endpoint() -> String {
    "graph".into()
}

/// A rule as posted to `POST /_emulator/faults`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    pub kind: FaultKind,
    /// `graph` (default: every /v1.0 request), `any`, `token`, `openid`, `users`, `user`,
    /// `userWrite`, `deletedItems`, `batch`, `delta`, `domains`.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Only requests whose path starts with this.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// How many requests to fault (default 1).
    #[serde(default)]
    pub count: Option<u32>,
    /// Fault every matching request until the rule is deleted.
    #[serde(default)]
    pub always: bool,
    /// Let this many matching requests through first.
    #[serde(default)]
    pub after: u32,
    /// Seconds for `Retry-After`; no header when absent.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Error code for `throttle`: `TooManyRequests` (default) or `Request_ThrottledTemporarily`.
    #[serde(default)]
    pub code: Option<String>,
    /// For `dropConnection`: body bytes sent before the drop (default: half the body).
    #[serde(default)]
    pub bytes: Option<usize>,
    /// For `delay`.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// For `wrongCount`: added to `@odata.count` (negative lowers it, never below 0).
    #[serde(default)]
    pub count_offset: Option<i64>,
}

impl FaultSpec {
    pub fn validate(&self) -> Result<(), String> {
        const ENDPOINTS: &[&str] = &[
            "graph",
            "any",
            "token",
            "openid",
            "users",
            "user",
            "userWrite",
            "deletedItems",
            "batch",
            "delta",
            "domains",
        ];
        if !ENDPOINTS.contains(&self.endpoint.as_str()) {
            return Err(format!(
                "unknown endpoint '{}'; use one of {}",
                self.endpoint,
                ENDPOINTS.join(", ")
            ));
        }
        if let Some(c) = &self.code
            && c != "TooManyRequests"
            && c != "Request_ThrottledTemporarily"
        {
            return Err(format!(
                "unknown code '{c}'; use TooManyRequests or Request_ThrottledTemporarily"
            ));
        }
        if self.kind == FaultKind::Delay && self.delay_ms.is_none() {
            return Err("a delay fault needs delayMs".into());
        }
        if self.kind == FaultKind::WrongCount && self.count_offset.is_none() {
            return Err("a wrongCount fault needs countOffset".into());
        }
        Ok(())
    }

    fn matches(&self, ep: Endpoint, path: &str, delta_followup: bool) -> bool {
        if ep == Endpoint::Control {
            return false;
        }
        let ep_ok = match self.endpoint.as_str() {
            "any" => true,
            "graph" => ep.is_graph(),
            name => ep.name() == name,
        };
        let kind_ok = match self.kind {
            FaultKind::ExpiredDeltaToken | FaultKind::ResyncRequired => {
                ep == Endpoint::Delta && delta_followup
            }
            _ => true,
        };
        ep_ok
            && kind_ok
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// Faults still to inject (`None` = always).
    pub remaining: Option<u32>,
    /// Matching requests still to let through first.
    pub skip: u32,
    pub fired: u32,
}

#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<(u64, Vec<FaultRule>)>,
}

impl Faults {
    pub fn add(&self, spec: FaultSpec) -> FaultRule {
        let mut g = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        let rule = FaultRule {
            id: g.0,
            remaining: if spec.always {
                None
            } else {
                Some(spec.count.unwrap_or(1))
            },
            skip: spec.after,
            fired: 0,
            spec,
        };
        g.1.push(rule.clone());
        rule
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    pub fn clear(&self) {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clear();
    }

    pub fn remove(&self, id: u64) -> bool {
        let mut g = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let before = g.1.len();
        g.1.retain(|r| r.id != id);
        g.1.len() != before
    }

    /// The fault to inject into this request, if any (the first matching rule wins).
    pub fn take(&self, ep: Endpoint, path: &str, delta_followup: bool) -> Option<FaultSpec> {
        let mut g = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let mut hit = None;
        for r in g.1.iter_mut() {
            if r.remaining == Some(0) || !r.spec.matches(ep, path, delta_followup) {
                continue;
            }
            if r.skip > 0 {
                r.skip -= 1;
                continue;
            }
            if let Some(n) = r.remaining.as_mut() {
                *n -= 1;
            }
            r.fired += 1;
            hit = Some(r.spec.clone());
            break;
        }
        g.1.retain(|r| r.remaining != Some(0));
        hit
    }
}
