//! JSON batching (`POST /v1.0/$batch`, docs/behaviour.md §6) for the write side:
//! many deletes or updates in a few round trips.
//!
//! A batch holds at most 20 requests; Graph answers 200 for the envelope whatever its items did,
//! each item with its own status, headers and body, in any order (matched here by `id`). Each
//! write item is metered by the write limit on its own and can get its own 429: batching saves
//! round trips, not quota. So every write item takes a pacer token, and items answered 429 or
//! 5xx are sent again in a later batch after the longest `Retry-After` among them (which also
//! holds off every other write of the client), at most [`RetryPolicy::MAX_ATTEMPTS`] times.
//!
//! [`GraphClient::delete_batch`] and [`GraphClient::update_batch`] (the client's
//! [`crate::directory::Directory::delete_users`] and `update_users`, which the engine calls with
//! up to [`MAX_BATCH`] consecutive Deletes or Updates) do what `delete_user` and `update_user` do
//! for each user — the guarded read (batched as well: reads cost no write quota), then the
//! write — and give one result per user, in the order given.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::writes::{
    TARGET_SELECT, Target, check_desired, patch_body, token_can_write, write_error,
};
use super::{GraphClient, graph_error};
use crate::clients::outbound::{
    HttpResponse, RetryPolicy, encode_id, is_retryable_status, json_error, parse_retry_after,
};
use crate::directory::{DirectoryError, UserUpdate};

/// Graph's limit on requests in one batch.
pub const MAX_BATCH: usize = 20;

/// One request of a batch: a method and a URL relative to `/v1.0`.
pub(super) struct BatchItem {
    pub method: Method,
    pub url: String,
    pub body: Option<Value>,
}

#[derive(Deserialize)]
struct Envelope {
    responses: Option<Vec<ItemAnswer>>,
}

#[derive(Deserialize)]
struct ItemAnswer {
    id: Option<String>,
    status: Option<u16>,
    #[serde(default)]
    headers: HashMap<String, Value>,
    #[serde(default)]
    body: Option<Value>,
}

impl ItemAnswer {
    /// The item as if it had been a response of its own (for the error mappers).
    fn into_response(self) -> HttpResponse {
        let mut headers = HeaderMap::new();
        for (k, v) in &self.headers {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
                v.as_str().map(HeaderValue::from_str),
            ) {
                headers.insert(name, value);
            }
        }
        HttpResponse {
            status: reqwest::StatusCode::from_u16(self.status.unwrap_or(0))
                .unwrap_or(reqwest::StatusCode::BAD_GATEWAY),
            headers,
            body: self
                .body
                .map(|b| serde_json::to_vec(&b).unwrap_or_default())
                .unwrap_or_default(),
        }
    }
}

impl GraphClient {
    /// Sends `items` in batches of at most [`MAX_BATCH`], retrying items answered 429 or 5xx,
    /// and gives each item's last answer (or the error that kept it from one), in order, and
    /// whether the token held a write permission. `writes`: the items are writes (paced).
    pub(super) async fn batch(
        &self,
        items: &[BatchItem],
        writes: bool,
        what: &str,
    ) -> (Vec<Result<HttpResponse, DirectoryError>>, Option<bool>) {
        let mut answers: Vec<Option<Result<HttpResponse, DirectoryError>>> =
            items.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..items.len()).collect();
        let mut can_write = None;
        let policy = RetryPolicy::default();
        for attempt in 1..=RetryPolicy::MAX_ATTEMPTS {
            let mut again = Vec::new();
            let mut wait: Option<Duration> = None;
            for chunk in pending.chunks(MAX_BATCH) {
                match self.send_batch(items, chunk, writes, what).await {
                    Err(e) => {
                        for &i in chunk {
                            answers[i] = Some(Err(e.clone()));
                        }
                    }
                    Ok((mut got, cw)) => {
                        can_write = can_write.or(cw);
                        for &i in chunk {
                            let Some(resp) = got.remove(&i) else {
                                answers[i] = Some(Err(DirectoryError::Protocol(format!(
                                    "{what}: the $batch answer has no response for a request"
                                ))));
                                continue;
                            };
                            if is_retryable_status(resp.status) {
                                let ra = parse_retry_after(&resp.headers, SystemTime::now())
                                    .map(|d| d.min(RetryPolicy::RETRY_AFTER_CAP));
                                wait = wait.max(ra.or(Some(policy.backoff(attempt))));
                                again.push(i);
                            }
                            answers[i] = Some(Ok(resp));
                        }
                    }
                }
            }
            if again.is_empty() || attempt == RetryPolicy::MAX_ATTEMPTS {
                break;
            }
            let wait = wait.unwrap_or_default();
            tracing::debug!(
                what,
                items = again.len(),
                wait_ms = wait.as_millis() as u64,
                "Graph throttled or failed $batch items; sending them again"
            );
            if let Some(deadline) = self.http.deadline()
                && std::time::Instant::now() + wait >= deadline
            {
                break;
            }
            if writes {
                // Every writer of this client waits too: the quota is the app's.
                self.inner.pacer.hold_off(wait);
            } else {
                tokio::time::sleep(wait).await;
            }
            pending = again;
        }
        let out = answers
            .into_iter()
            .map(|a| {
                let a = a.unwrap_or_else(|| {
                    Err(DirectoryError::Unavailable(format!("{what}: not sent")))
                })?;
                if is_retryable_status(a.status) {
                    Err(DirectoryError::Unavailable(format!(
                        "{what}: HTTP {} after {} attempts",
                        a.status.as_u16(),
                        RetryPolicy::MAX_ATTEMPTS
                    )))
                } else {
                    Ok(a)
                }
            })
            .collect();
        (out, can_write)
    }

    /// One `$batch` request holding `chunk` (indices into `items`, used as the request ids).
    async fn send_batch(
        &self,
        items: &[BatchItem],
        chunk: &[usize],
        writes: bool,
        what: &str,
    ) -> Result<(HashMap<usize, HttpResponse>, Option<bool>), DirectoryError> {
        if writes {
            let n = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            self.inner.pacer.acquire(n, self.http.deadline()).await?;
        }
        let requests: Vec<Value> = chunk
            .iter()
            .map(|&i| {
                let item = &items[i];
                let mut r =
                    json!({"id": i.to_string(), "method": item.method.as_str(), "url": item.url});
                if let Some(b) = &item.body {
                    r["headers"] = json!({"Content-Type": "application/json"});
                    r["body"] = b.clone();
                }
                r
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "requests": requests }))
            .map_err(|e| json_error(what, &e))?;
        let url = self.url("/v1.0/$batch")?;
        let mut refreshed = false;
        let (resp, token) = loop {
            let (token, generation) = self.inner.tokens.token(&self.http).await?;
            let resp = self
                .http
                .send(what, |c| {
                    c.post(url.clone())
                        .bearer_auth(token.expose_secret())
                        .header(ACCEPT, "application/json")
                        .header(CONTENT_TYPE, "application/json")
                        .body(body.clone())
                })
                .await?;
            if resp.status == reqwest::StatusCode::UNAUTHORIZED && !refreshed {
                self.inner.tokens.invalidate(generation).await;
                refreshed = true;
                continue;
            }
            break (resp, token);
        };
        tracing::debug!(
            what,
            status = resp.status.as_u16(),
            items = chunk.len(),
            "Graph $batch answered"
        );
        if !resp.status.is_success() {
            return Err(graph_error(what, &resp));
        }
        let envelope: Envelope = resp.json(what)?;
        let mut out = HashMap::with_capacity(chunk.len());
        for answer in envelope.responses.unwrap_or_default() {
            let Some(i) = answer
                .id
                .as_deref()
                .and_then(|id| id.parse::<usize>().ok())
                .filter(|i| chunk.contains(i))
            else {
                continue;
            };
            out.insert(i, answer.into_response());
        }
        Ok((out, token_can_write(token.expose_secret())))
    }

    /// The guarded reads of many users at once: each user as the write guards need it, `None`
    /// when it does not exist.
    async fn read_targets(
        &self,
        ids: &[&str],
        what: &str,
    ) -> Vec<Result<Option<Target>, DirectoryError>> {
        let mut out: Vec<Option<Result<Option<Target>, DirectoryError>>> =
            ids.iter().map(|_| None).collect();
        let mut items = Vec::with_capacity(ids.len());
        let mut sent = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            match encode_id(id) {
                Ok(e) => {
                    items.push(BatchItem {
                        method: Method::GET,
                        url: format!("/users/{e}?$select={TARGET_SELECT}"),
                        body: None,
                    });
                    sent.push(i);
                }
                Err(err) => out[i] = Some(Err(err)),
            }
        }
        let (answers, _) = self.batch(&items, false, what).await;
        for (i, a) in sent.into_iter().zip(answers) {
            out[i] = Some(a.and_then(|resp| {
                if resp.status == reqwest::StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                if !resp.status.is_success() {
                    return Err(graph_error(what, &resp));
                }
                let t: Target = resp.json(what)?;
                t.require_keys(what)?;
                Ok(Some(t))
            }));
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(DirectoryError::Unavailable(format!("{what}: not sent"))))
            })
            .collect()
    }

    /// [`crate::directory::Directory::delete_user`] for many users through `$batch`: one result
    /// per `(id, expected Immutable ID)`, in order. Users that fail a guard are not sent.
    pub(super) async fn delete_batch(
        &self,
        users: &[(&str, Option<&str>)],
    ) -> Vec<Result<(), DirectoryError>> {
        const WHAT: &str = "Graph delete user";
        let ids: Vec<&str> = users.iter().map(|(id, _)| *id).collect();
        let targets = self.read_targets(&ids, "Graph $batch read users").await;
        let mut results: Vec<Option<Result<(), DirectoryError>>> = Vec::new();
        let mut items = Vec::new();
        let mut sent = Vec::new();
        for (i, ((id, expected), target)) in users.iter().zip(targets).enumerate() {
            let result = target.and_then(|t| match t {
                None => Ok(false),
                Some(t) => t.check(WHAT, *expected).map(|()| true),
            });
            match result {
                Ok(true) => {
                    items.push(BatchItem {
                        method: Method::DELETE,
                        url: format!("/users/{}", encode_id(id).unwrap_or_default()),
                        body: None,
                    });
                    sent.push(i);
                    results.push(None);
                }
                Ok(false) => results.push(Some(Ok(()))),
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let (answers, can_write) = self.batch(&items, true, "Graph $batch delete users").await;
        for (i, a) in sent.into_iter().zip(answers) {
            results[i] = Some(a.and_then(|resp| match resp.status.as_u16() {
                200..=299 | 404 => Ok(()),
                _ => Err(write_error(WHAT, &resp, can_write)),
            }));
        }
        self.finish(results)
    }

    /// [`crate::directory::Directory::update_user`] for many users through `$batch`: one result
    /// per [`UserUpdate`], in order (its `current` is not needed: the batched read is compared
    /// instead). Users that fail a guard, or have nothing to change, are not sent.
    pub(super) async fn update_batch(
        &self,
        users: &[UserUpdate<'_>],
    ) -> Vec<Result<(), DirectoryError>> {
        const WHAT: &str = "Graph update user";
        let ids: Vec<&str> = users.iter().map(|u| u.id).collect();
        let targets = self.read_targets(&ids, "Graph $batch read users").await;
        let mut results: Vec<Option<Result<(), DirectoryError>>> = Vec::new();
        let mut items = Vec::new();
        let mut sent = Vec::new();
        for (i, (u, target)) in users.iter().zip(targets).enumerate() {
            let (id, desired) = (u.id, u.desired);
            let patch = check_desired(WHAT, desired).and_then(|()| match target? {
                None => Err(DirectoryError::NotFound(format!("{WHAT}: HTTP 404"))),
                Some(t) => t
                    .check(WHAT, u.expected_immutable_id)
                    .map(|()| patch_body(&t, desired)),
            });
            match patch {
                Ok(p) if p.is_empty() => results.push(Some(Ok(()))),
                Ok(p) => {
                    items.push(BatchItem {
                        method: Method::PATCH,
                        url: format!("/users/{}", encode_id(id).unwrap_or_default()),
                        body: Some(Value::Object(p)),
                    });
                    sent.push(i);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let (answers, can_write) = self.batch(&items, true, "Graph $batch update users").await;
        for (i, a) in sent.into_iter().zip(answers) {
            results[i] = Some(a.and_then(|resp| {
                if resp.status.is_success() {
                    Ok(())
                } else {
                    Err(write_error(WHAT, &resp, can_write))
                }
            }));
        }
        self.finish(results)
    }

    fn finish(
        &self,
        results: Vec<Option<Result<(), DirectoryError>>>,
    ) -> Vec<Result<(), DirectoryError>> {
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(DirectoryError::Unavailable("Graph $batch: not sent".into()))
                })
                .map_err(|e| self.inner.redactor.scrub(e))
            })
            .collect()
    }
}
