//! The outbound HTTP rules both directory clients share (docs/behaviour.md §8 "Bounded work"):
//! connect/read/total timeouts, no redirects, system roots plus an optional extra CA (additive
//! only), response bodies capped after decompression, bounded retries that honour
//! `Retry-After`, a per-run deadline, bounded concurrency, and error texts cut to a status and
//! a code. Graph and SCIM specifics (token refresh, error codes) live in their own modules.
//!
//! Retried: HTTP 429, 500, 502, 503 and 504 (docs/behaviour.md §2.7 "429/5xx"; 501 and 505+ are permanent),
//! connection failures and timeouts. The clients' writes tolerate a replay: a re-sent create
//! ends in 409 and is re-planned, PATCH only replaces/removes, DELETE of a gone user is done.

use std::fmt;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::directory::DirectoryError;

/// The longest error text that leaves this module (docs/behaviour.md §4).
pub const MAX_MESSAGE_CHARS: usize = 256;

/// Installs rustls' `ring` crypto provider as the process default. Idempotent, and harmless
/// when another part of the process (kube) installed one first.
pub fn init_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error only means a provider is already installed, which is what we want.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// How often and how patiently a request is retried.
///
/// The production values are docs/behaviour.md §8's; [`HttpClient::new`] clamps `max_attempts` and
/// `retry_after_cap` to them, so tests may only shorten them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (at most [`RetryPolicy::MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// Upper bound applied to a server's `Retry-After` (at most [`RetryPolicy::RETRY_AFTER_CAP`]).
    pub retry_after_cap: Duration,
    /// First backoff delay when the server gives no `Retry-After`; doubled per attempt.
    pub base_delay: Duration,
    /// Upper bound of the exponential backoff.
    pub max_delay: Duration,
}

impl RetryPolicy {
    pub const MAX_ATTEMPTS: u32 = 6;
    pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(300);

    /// Backoff before attempt `attempt + 1` (`attempt` >= 1 is the one that just failed):
    /// `base * 2^(attempt-1)`, capped, with "equal jitter" (50–100 %) so that many clients
    /// throttled together do not come back together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let raw = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let factor: f64 = rand::random_range(0.5..=1.0);
        raw.mul_f64(factor)
    }

    fn clamped(&self) -> Self {
        Self {
            max_attempts: self.max_attempts.clamp(1, Self::MAX_ATTEMPTS),
            retry_after_cap: self.retry_after_cap.min(Self::RETRY_AFTER_CAP),
            base_delay: self.base_delay,
            max_delay: self.max_delay,
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: Self::MAX_ATTEMPTS,
            retry_after_cap: Self::RETRY_AFTER_CAP,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// Settings of one outbound HTTP client (one per resource and endpoint, docs/behaviour.md §8).
#[derive(Clone)]
pub struct HttpConfig {
    pub connect_timeout: Duration,
    /// Longest silence between two reads of a response.
    pub read_timeout: Duration,
    /// Longest a single attempt may take, body included.
    pub request_timeout: Duration,
    /// A request whose attempts get no answer (timeouts, cut connections) is not tried again
    /// once this long has passed since its first attempt: a silent or dribbling server is given
    /// up within about a minute. Waits a server asks for (`Retry-After`) are not counted.
    pub give_up_after: Duration,
    /// Cap on a response body after decompression (at most [`HttpConfig::MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
    /// The run deadline, counted from when the client is built (the CLI builds one per run);
    /// the operator sets a fresh one per run with `with_deadline`. `None` = no deadline.
    pub run_timeout: Option<Duration>,
    /// Extra trusted CA certificates (PEM), added to the system roots. Nothing turns
    /// certificate verification off.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Seam for the operator's endpoint policy (docs/behaviour.md §8): a resolver consulted at every
    /// connect; it refuses a forbidden address by failing with [`EndpointRefused`]. Hosts
    /// given as IP literals are not resolved, so the policy must check those itself.
    pub resolver: Option<Arc<dyn reqwest::dns::Resolve>>,
    /// Requests in flight at once through this client (a semaphore; callers may fire more).
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    pub user_agent: String,
}

impl HttpConfig {
    pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            // README "Timeouts": a silent server is given up within about a minute per request.
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(45),
            give_up_after: Duration::from_secs(50),
            max_body_bytes: Self::MAX_BODY_BYTES,
            run_timeout: Some(Duration::from_secs(3600)),
            extra_ca_pem: None,
            resolver: None,
            max_in_flight: 8,
            retry: RetryPolicy::default(),
            user_agent: concat!("dirsync/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("run_timeout", &self.run_timeout)
            .field("extra_ca_pem", &self.extra_ca_pem.as_ref().map(|p| p.len()))
            .field("resolver", &self.resolver.is_some())
            .field("max_in_flight", &self.max_in_flight)
            .field("retry", &self.retry)
            .finish()
    }
}

/// A response whose body has been read whole (within the cap).
#[derive(Debug)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// Parses the body as JSON. The error names only the position, never the data (a serde
    /// message can quote values, which may be user data or an echoed secret).
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, DirectoryError> {
        serde_json::from_slice(&self.body).map_err(|e| json_error(what, &e))
    }
}

/// A JSON parse failure as a protocol error that quotes nothing from the document.
pub fn json_error(what: &str, e: &serde_json::Error) -> DirectoryError {
    let class = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "unexpected JSON content",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    DirectoryError::Protocol(cut(&format!(
        "{what}: {class} at line {} column {}",
        e.line(),
        e.column()
    )))
}

/// The retrying, bounded HTTP client. Cheap to clone; clones share the connection pool and
/// the in-flight bound.
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    retry: RetryPolicy,
    max_body: usize,
    request_timeout: Duration,
    give_up_after: Duration,
    read_timeout: Duration,
    deadline: Option<Instant>,
    permits: Arc<Semaphore>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("retry", &self.retry)
            .field("max_body", &self.max_body)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// Why one attempt failed before a usable response.
enum AttemptError {
    /// Worth another attempt (connection failure, timeout, connection cut mid-body).
    Transient(String),
    /// Not worth one (body over the cap, an address the endpoint policy refused).
    Fatal(DirectoryError),
}

impl HttpClient {
    pub fn new(cfg: &HttpConfig) -> Result<Self, DirectoryError> {
        init_crypto();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .timeout(cfg.request_timeout)
            .user_agent(cfg.user_agent.clone())
            .gzip(true)
            .no_proxy()
            .referer(false);
        if let Some(pem) = &cfg.extra_ca_pem {
            builder = builder.tls_certs_merge(parse_ca_bundle(pem)?);
        }
        if let Some(resolver) = &cfg.resolver {
            builder = builder.dns_resolver(resolver.clone());
        }
        let inner = builder.build().map_err(|e| {
            DirectoryError::Protocol(cut(&format!(
                "cannot build HTTP client: {}",
                error_chain(&e)
            )))
        })?;
        Ok(Self {
            inner,
            retry: cfg.retry.clamped(),
            max_body: cfg.max_body_bytes.min(HttpConfig::MAX_BODY_BYTES),
            request_timeout: cfg.request_timeout,
            give_up_after: cfg.give_up_after,
            read_timeout: cfg.read_timeout,
            deadline: cfg.run_timeout.map(|t| Instant::now() + t),
            permits: Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
        })
    }

    /// The same client with another run deadline (the operator starts one per run).
    pub fn with_deadline(&self, deadline: Option<Instant>) -> Self {
        Self {
            deadline,
            ..self.clone()
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Sends a request built by `build` (called once per attempt, so it may pick up a fresh
    /// token), retrying per the policy, and returns the first non-retryable response with its
    /// body read. A 3xx is a protocol error (redirects are never followed); retryable
    /// statuses that outlast the attempts or the deadline are [`DirectoryError::Unavailable`].
    /// `what` names the call in messages ("SCIM create"); it must hold no user data.
    pub async fn send<F>(&self, what: &str, build: F) -> Result<HttpResponse, DirectoryError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        self.send_reusing(what, Vec::new(), build).await
    }

    /// [`HttpClient::send`], reading the body into `buffer` (emptied first; the response's
    /// `body` is that buffer, to pass to the next call). A caller reading many large pages
    /// reuses one allocation: page-sized blocks allocated and freed per page would raise
    /// glibc's mmap threshold and then stay in the heap, fragmented by the records parsed
    /// from them.
    pub async fn send_reusing<F>(
        &self,
        what: &str,
        mut buffer: Vec<u8>,
        build: F,
    ) -> Result<HttpResponse, DirectoryError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| DirectoryError::Unavailable(format!("{what}: client is shut down")))?;
        let mut attempt = 0u32;
        let first_attempt = Instant::now();
        loop {
            attempt += 1;
            let remaining = self.remaining(what)?;
            let timeout = remaining.map_or(self.request_timeout, |r| r.min(self.request_timeout));
            let body = std::mem::take(&mut buffer);
            let outcome = tokio::time::timeout(
                timeout,
                self.attempt(build(&self.inner).timeout(timeout), body),
            )
            .await;
            // `answered`: the server sent a status; silence, a cut connection or a dribble is not.
            let (failure, delay, answered) = match outcome {
                Err(_) => (format!("timed out after {:.0?}", timeout), None, false),
                Ok(Err(AttemptError::Fatal(e))) => return Err(e),
                Ok(Err(AttemptError::Transient(msg))) => (msg, None, false),
                Ok(Ok(mut resp)) => {
                    let status = resp.status;
                    if status.is_redirection() {
                        return Err(DirectoryError::Protocol(cut(&format!(
                            "{what}: HTTP {} redirect not followed",
                            status.as_u16()
                        ))));
                    }
                    if !is_retryable_status(status) {
                        return Ok(resp);
                    }
                    buffer = std::mem::take(&mut resp.body);
                    let delay = parse_retry_after(&resp.headers, SystemTime::now())
                        .map(|d| d.min(self.retry.retry_after_cap));
                    (format!("HTTP {}", status.as_u16()), delay, true)
                }
            };
            if attempt >= self.retry.max_attempts {
                return Err(DirectoryError::Unavailable(cut(&format!(
                    "{what}: {failure} after {attempt} attempts"
                ))));
            }
            let delay = delay.unwrap_or_else(|| self.retry.backoff(attempt));
            // Another silent attempt would likely end past `give_up_after`: stop now.
            if !answered && first_attempt.elapsed() + delay + self.read_timeout > self.give_up_after
            {
                return Err(DirectoryError::Unavailable(cut(&format!(
                    "{what}: {failure}; no answer for {:.0?} over {attempt} attempts, giving up",
                    first_attempt.elapsed()
                ))));
            }
            if let Some(deadline) = self.deadline
                && Instant::now() + delay >= deadline
            {
                return Err(DirectoryError::Unavailable(cut(&format!(
                    "{what}: {failure}; waiting {}s more would pass the run deadline",
                    delay.as_secs()
                ))));
            }
            tracing::debug!(what, attempt, failure = %failure, delay_ms = delay.as_millis() as u64, "retrying request");
            tokio::time::sleep(delay).await;
        }
    }

    fn remaining(&self, what: &str) -> Result<Option<Duration>, DirectoryError> {
        match self.deadline {
            None => Ok(None),
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(r) if !r.is_zero() => Ok(Some(r)),
                _ => Err(DirectoryError::Unavailable(format!(
                    "{what}: run deadline reached"
                ))),
            },
        }
    }

    async fn attempt(
        &self,
        req: reqwest::RequestBuilder,
        mut body: Vec<u8>,
    ) -> Result<HttpResponse, AttemptError> {
        body.clear();
        let mut resp = req.send().await.map_err(|e| {
            match causes(&e)
                .iter()
                .find_map(|c| c.downcast_ref::<EndpointRefused>())
            {
                Some(refused) => {
                    AttemptError::Fatal(DirectoryError::EndpointNotAllowed(cut(&refused.0)))
                }
                None => AttemptError::Transient(describe_reqwest_error(&e)),
            }
        })?;
        let status = resp.status();
        let headers = std::mem::take(resp.headers_mut());
        // A retryable or redirect response's body is never looked at: don't spend time on it.
        if is_retryable_status(status) || status.is_redirection() {
            return Ok(HttpResponse {
                status,
                headers,
                body,
            });
        }
        let too_big = || {
            AttemptError::Fatal(DirectoryError::Protocol(format!(
                "response body exceeds the {} MiB cap",
                self.max_body / (1024 * 1024)
            )))
        };
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            return Err(too_big());
        }
        // Read chunk by chunk so that an endless or huge body stops at the cap, never buffered.
        body.reserve(resp.content_length().map_or(8192, |n| n as usize));
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > self.max_body {
                        return Err(too_big());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                // A body cut off mid-way surfaces as a decode error when it was compressed,
                // so body errors of either kind count as transient (bounded by the attempts).
                Err(e) => return Err(AttemptError::Transient(describe_reqwest_error(&e))),
            }
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// Statuses that are retried with backoff.
pub fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (relative to `now`). A date in the past
/// is zero; anything unparsable is `None` (the caller backs off instead). Not capped here.
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses a PEM bundle of extra trusted CA certificates.
fn parse_ca_bundle(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, DirectoryError> {
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|_| {
            DirectoryError::Protocol("extra CA bundle is not valid PEM".to_string())
        })?;
        let cert = reqwest::Certificate::from_der(cert.as_ref()).map_err(|_| {
            DirectoryError::Protocol("extra CA bundle holds an invalid certificate".to_string())
        })?;
        out.push(cert);
    }
    if out.is_empty() {
        return Err(DirectoryError::Protocol(
            "extra CA bundle holds no certificate".to_string(),
        ));
    }
    Ok(out)
}

/// A transport failure in a few words: the kind, and for TLS the verifier's reason. Never the
/// URL (a SCIM filter URL carries user names) and never a body.
fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body broke off or could not be decoded"
    } else {
        "request failed"
    };
    match root_cause(e) {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_string(),
    }
}

/// Every error in a chain, outermost first. `io::Error::source` skips the error it wraps
/// (rustls' error sits there, sometimes inside a second io::Error), so this descends through
/// `get_ref` too.
fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        out.push(err);
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner),
            None => err.source(),
        };
    }
    out
}

/// The most telling cause in an error chain: a rustls error (e.g. an untrusted certificate) or
/// an I/O error kind.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let chain = causes(e);
    if let Some(tls) = chain.iter().find_map(|c| c.downcast_ref::<rustls::Error>()) {
        return Some(format!("TLS: {tls}"));
    }
    chain
        .iter()
        .rev()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .map(|io| io.kind().to_string())
}

/// What an endpoint policy's resolver (see [`HttpConfig::resolver`]) returns to refuse an
/// address. The request then fails at once with [`DirectoryError::EndpointNotAllowed`]
/// carrying this text (no retries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRefused(pub String);

impl fmt::Display for EndpointRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EndpointRefused {}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    root_cause(e).unwrap_or_else(|| "configuration rejected".to_string())
}

/// Cuts a message to [`MAX_MESSAGE_CHARS`] characters.
pub fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        None => s.to_string(),
        Some((i, _)) => {
            let mut out = s[..i].to_string();
            out.pop();
            out.push('…');
            out
        }
    }
}

/// An error code taken from a server's body (`error.code`, `scimType`, OAuth `error`), kept only
/// when it looks like one: a short token of letters, digits and `_ . : -`. Anything else
/// (free text, an echoed body) is dropped.
pub fn error_code(raw: &str) -> Option<&str> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    ok.then_some(raw)
}

/// A server's error answer as a classified error, for both clients: the message keeps only
/// `what`, the status and the server's error code (see [`error_code`]). Statuses that are
/// retried land here only when a caller did not retry; they are `Unavailable`, like the
/// retries that ran out.
pub fn status_error(what: &str, status: u16, code: Option<&str>) -> DirectoryError {
    let msg = match code.and_then(error_code) {
        Some(c) => cut(&format!("{what}: HTTP {status} {c}")),
        None => cut(&format!("{what}: HTTP {status}")),
    };
    match status {
        401 | 403 => DirectoryError::InvalidCredentials(msg),
        404 => DirectoryError::NotFound(msg),
        409 => DirectoryError::Conflict(msg),
        412 => DirectoryError::PreconditionFailed(msg),
        429 | 500 | 502..=504 => DirectoryError::Unavailable(msg),
        _ => DirectoryError::Rejected(msg),
    }
}

/// Keeps secrets out of error texts: a message that contains a secret, or any 8-character run
/// of one (a server that echoes part of a credential), is replaced.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<SecretString>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, secret: &SecretString) {
        if !secret.expose_secret().is_empty() {
            self.secrets.push(secret.clone());
        }
    }

    /// Whether `text` shows any secret or a long enough part of one.
    pub fn leaks(&self, text: &str) -> bool {
        const RUN: usize = 8;
        self.secrets.iter().any(|s| {
            let s = s.expose_secret().as_bytes();
            if s.len() <= RUN {
                return contains(text.as_bytes(), s);
            }
            s.windows(RUN).any(|w| contains(text.as_bytes(), w))
        })
    }

    /// The error unchanged, or with its message replaced when it would leak a secret.
    pub fn scrub(&self, err: DirectoryError) -> DirectoryError {
        use DirectoryError as E;
        let fix = |m: String| {
            if self.leaks(&m) {
                "details withheld: the message quoted a credential".to_string()
            } else {
                m
            }
        };
        match err {
            E::InvalidCredentials(m) => E::InvalidCredentials(fix(m)),
            E::Unavailable(m) => E::Unavailable(fix(m)),
            E::EndpointNotAllowed(m) => E::EndpointNotAllowed(fix(m)),
            E::Conflict(m) => E::Conflict(fix(m)),
            E::NotFound(m) => E::NotFound(fix(m)),
            E::PreconditionFailed(m) => E::PreconditionFailed(fix(m)),
            E::Protocol(m) => E::Protocol(fix(m)),
            E::Rejected(m) => E::Rejected(fix(m)),
            E::Forbidden(m) => E::Forbidden(fix(m)),
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Percent-encodes `s` as one URL path segment or query value: everything but RFC 3986
/// unreserved characters is encoded, so `/ ? # + & % '` and spaces never change the URL's shape.
pub fn encode_component(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// Encodes a server-given id as one path segment. Ids that would still be read as path
/// navigation (`.`, `..`) or are empty are refused.
pub fn encode_id(id: &str) -> Result<String, DirectoryError> {
    if id.is_empty() || id == "." || id == ".." {
        return Err(DirectoryError::Rejected("invalid user id".to_string()));
    }
    Ok(encode_component(id))
}

/// Checks a configured base URL: http(s), a host, no user-info, no query or fragment.
/// Returns it without a trailing slash, ready for `format!("{base}/Users")`.
pub fn check_base_url(what: &str, url: &url::Url) -> Result<String, DirectoryError> {
    let bad = |why: &str| Err(DirectoryError::Rejected(cut(&format!("{what} URL {why}"))));
    if url.scheme() != "https" && url.scheme() != "http" {
        return bad("must be http or https");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return bad("has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("must not carry user-info");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return bad("must not carry a query or fragment");
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after(&headers("5"), now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after(&headers(" 120 "), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(&headers("999999"), now),
            Some(Duration::from_secs(999_999))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(42));
        assert_eq!(
            parse_retry_after(&headers(&later), now),
            Some(Duration::from_secs(42))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(42));
        assert_eq!(
            parse_retry_after(&headers(&past), now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(&headers("-3"), now), None);
        assert_eq!(parse_retry_after(&headers("soon"), now), None);
        assert_eq!(parse_retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn retry_policy_is_clamped_to_spec() {
        let wild = RetryPolicy {
            max_attempts: 50,
            retry_after_cap: Duration::from_secs(10_000),
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        };
        let c = wild.clamped();
        assert_eq!(c.max_attempts, 6);
        assert_eq!(c.retry_after_cap, Duration::from_secs(300));
        let d = RetryPolicy::default();
        assert_eq!(
            (d.max_attempts, d.retry_after_cap),
            (6, Duration::from_secs(300))
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_cap() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        for _ in 0..50 {
            let b1 = p.backoff(1);
            assert!(
                b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100),
                "{b1:?}"
            );
            let b3 = p.backoff(3);
            assert!(
                b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400),
                "{b3:?}"
            );
            let b9 = p.backoff(9);
            assert!(
                b9 >= Duration::from_millis(500) && b9 <= Duration::from_millis(1000),
                "{b9:?}"
            );
        }
    }

    #[test]
    fn retryable_statuses() {
        for s in [429, 500, 502, 503, 504] {
            assert!(is_retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 301, 400, 401, 404, 409, 412, 501, 505] {
            assert!(
                !is_retryable_status(StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
    }

    #[test]
    fn status_errors_are_classified_alike_for_both_clients() {
        use DirectoryError as E;
        let kind = |status| match status_error("list users", status, None) {
            E::InvalidCredentials(_) => "credentials",
            E::NotFound(_) => "not found",
            E::Conflict(_) => "conflict",
            E::PreconditionFailed(_) => "precondition",
            E::Unavailable(_) => "unavailable",
            E::Rejected(_) => "rejected",
            _ => "other",
        };
        for (status, want) in [
            (401, "credentials"),
            (403, "credentials"),
            (404, "not found"),
            (409, "conflict"),
            (412, "precondition"),
            (400, "rejected"),
            (501, "rejected"),
        ] {
            assert_eq!(kind(status), want, "{status}");
        }
        // Every status the transport retries is Unavailable when it reaches a client.
        for status in [429u16, 500, 502, 503, 504] {
            assert!(is_retryable_status(StatusCode::from_u16(status).unwrap()));
            assert_eq!(kind(status), "unavailable", "{status}");
        }
        // A code that is a token is kept; free text (an echoed body) is not.
        let msg = |code| status_error("create user", 409, Some(code)).to_string();
        assert!(msg("uniqueness").contains("HTTP 409 uniqueness"));
        let echoed = msg("the body said: password=hunter2");
        assert!(
            echoed.contains("HTTP 409") && !echoed.contains("hunter2"),
            "{echoed}"
        );
    }

    #[test]
    fn cut_keeps_char_boundaries() {
        let long = "é".repeat(400);
        let c = cut(&long);
        assert_eq!(c.chars().count(), MAX_MESSAGE_CHARS);
        assert!(c.ends_with('…'));
        assert_eq!(cut("short"), "short");
    }

    #[test]
    fn error_codes_must_look_like_codes() {
        assert_eq!(error_code("uniqueness"), Some("uniqueness"));
        assert_eq!(
            error_code("Request_ResourceNotFound"),
            Some("Request_ResourceNotFound")
        );
        assert_eq!(error_code("has spaces in it"), None);
        assert_eq!(error_code(""), None);
        assert_eq!(error_code(&"x".repeat(65)), None);
    }

    #[test]
    fn redactor_catches_whole_and_partial_secrets() {
        let mut r = Redactor::new();
        r.add(&SecretString::from("CANARY-s3cr3t-value-0123456789"));
        r.add(&SecretString::from("short"));
        assert!(r.leaks("HTTP 401 CANARY-s3cr3t-value-0123456789"));
        assert!(r.leaks("HTTP 401 ...cr3t-val..."));
        assert!(r.leaks("a short one"));
        assert!(!r.leaks("HTTP 401 invalid_client"));
        let e = r.scrub(DirectoryError::InvalidCredentials(
            "echo CANARY-s3cr3t".into(),
        ));
        assert!(!format!("{e}").contains("CANARY"));
        assert!(matches!(e, DirectoryError::InvalidCredentials(_)));
    }

    #[test]
    fn components_are_encoded_as_one_segment() {
        assert_eq!(encode_component("a+b@x.com"), "a%2Bb%40x.com");
        assert_eq!(encode_component("a/b?c#d e%'"), "a%2Fb%3Fc%23d%20e%25%27");
        assert_eq!(encode_component("日本"), "%E6%97%A5%E6%9C%AC");
        assert_eq!(encode_id("../etc").unwrap(), "..%2Fetc");
        assert!(encode_id("..").is_err());
        assert!(encode_id("").is_err());
    }

    #[test]
    fn base_urls_are_checked() {
        let ok = url::Url::parse("http://127.0.0.1:8080/v2/").unwrap();
        assert_eq!(
            check_base_url("SCIM", &ok).unwrap(),
            "http://127.0.0.1:8080/v2"
        );
        for bad in [
            "ftp://x/v2",
            "https://user:pw@x/v2",
            "https://x/v2?a=b",
            "https://x/v2#f",
        ] {
            let u = url::Url::parse(bad).unwrap();
            assert!(check_base_url("SCIM", &u).is_err(), "{bad}");
        }
    }

    #[test]
    fn ca_bundle_must_hold_a_certificate() {
        assert!(parse_ca_bundle(b"not pem").is_err());
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        assert_eq!(
            parse_ca_bundle(cert.cert.pem().as_bytes()).unwrap().len(),
            1
        );
    }
}
