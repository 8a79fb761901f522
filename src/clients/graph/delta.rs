//! `GET /v1.0/users/delta` (docs/behaviour.md §7): a link taken with `$deltatoken=latest`
//! before a full read, and the rounds of changes an incremental run follows.
//!
//! Unlike `/users`, a delta item leaves out a property that was never set (it means null), so
//! only `id`, `userPrincipalName` and `accountEnabled` must be present. A link the service no
//! longer takes (any 4xx but 401/403/429: `syncStateNotFound`, `410 Gone`, …) is
//! [`DeltaError::Rejected`], which makes the run full; anything else fails the run as a read.
//! Items are handed on as read, repeats included: the core keeps the last version of each user
//! (`core/src/sync/incremental.rs`).

use async_trait::async_trait;
use serde::Deserialize;

use super::{GraphClient, NextLinkGuard, RawUser, USER_SELECT, check_same_origin, graph_error};
use crate::directory::{DeltaError, DeltaItem, DeltaRead, DeltaSource, DirectoryError, User};

const WHAT: &str = "Graph users delta page";

/// The query of a link taken now: only changes from here on, of the properties every read
/// selects (the selection is carried by the tokens that follow).
pub fn latest_query() -> String {
    format!("$select={USER_SELECT}&$deltatoken=latest")
}

#[derive(Deserialize)]
struct Page {
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
    value: Option<Vec<Record>>,
}

#[derive(Deserialize)]
struct Record {
    #[serde(rename = "@removed")]
    removed: Option<serde::de::IgnoredAny>,
    #[serde(flatten)]
    user: RawUser,
}

/// A user as a delta item gives it: absent optional properties are null.
fn delta_user(mut raw: RawUser, page: usize, index: usize) -> Result<User, DirectoryError> {
    raw.display_name = Some(raw.display_name.flatten());
    raw.given_name = Some(raw.given_name.flatten());
    raw.surname = Some(raw.surname.flatten());
    raw.mail = Some(raw.mail.flatten());
    raw.proxy_addresses = Some(raw.proxy_addresses.flatten());
    raw.on_premises_immutable_id = Some(raw.on_premises_immutable_id.flatten());
    raw.user_type = Some(raw.user_type.flatten());
    raw.into_user(page, index)
}

impl GraphClient {
    async fn delta_link_now_inner(&self) -> Result<String, DirectoryError> {
        const WHAT_LATEST: &str = "Graph users delta (latest)";
        let url = self.url(&format!("/v1.0/users/delta?{}", latest_query()))?;
        let resp = self.get(&url, WHAT_LATEST).await?;
        if !resp.status.is_success() {
            return Err(graph_error(WHAT_LATEST, &resp));
        }
        let page: Page = resp.json(WHAT_LATEST)?;
        let link = page.delta_link.ok_or_else(|| {
            DirectoryError::Protocol(format!("{WHAT_LATEST} answered without a deltaLink"))
        })?;
        check_same_origin(&self.inner.origin, &link)?;
        Ok(link)
    }

    async fn read_delta_inner(&self, link: &str) -> Result<DeltaRead, DeltaError> {
        let first = check_same_origin(&self.inner.origin, link)?;
        let mut guard = NextLinkGuard::new(self.inner.origin.clone(), &first);
        let mut url = first;
        let mut items = Vec::new();
        let (mut records, mut bytes) = (0u64, 0u64);
        for page_no in 1.. {
            let resp = self.get(&url, WHAT).await?;
            let status = resp.status.as_u16();
            if (400..500).contains(&status) && !matches!(status, 401 | 403 | 429) {
                // Status and error code only: the body may quote the token.
                let e = graph_error(WHAT, &resp);
                return Err(DeltaError::Rejected(e.to_string()));
            }
            if !resp.status.is_success() {
                return Err(graph_error(WHAT, &resp).into());
            }
            bytes += resp.body.len() as u64;
            let page: Page = resp.json(WHAT)?;
            let value = page.value.ok_or_else(|| {
                DirectoryError::Protocol(format!("{WHAT} {page_no} has no value array"))
            })?;
            for (index, record) in value.into_iter().enumerate() {
                records += 1;
                if record.removed.is_some() {
                    let id = record.user.id.flatten().filter(|s| !s.is_empty());
                    let id = id.ok_or_else(|| {
                        DirectoryError::Protocol(format!(
                            "Graph removed-user record {index} on page {page_no} has no id"
                        ))
                    })?;
                    items.push(DeltaItem::Removed { id });
                } else {
                    let user = delta_user(record.user, page_no, index)?;
                    items.push(DeltaItem::Changed(user));
                }
            }
            self.inner.limits.check_read(WHAT, records, bytes)?;
            match (page.next_link, page.delta_link) {
                (Some(next), _) => url = guard.check(&next)?,
                (None, Some(delta)) => {
                    check_same_origin(&self.inner.origin, &delta)?;
                    return Ok(DeltaRead { items, link: delta });
                }
                (None, None) => {
                    return Err(DirectoryError::Protocol(format!(
                        "{WHAT} {page_no} has neither a nextLink nor a deltaLink"
                    ))
                    .into());
                }
            }
        }
        unreachable!("the page loop only ends by returning")
    }
}

#[async_trait]
impl DeltaSource for GraphClient {
    async fn delta_link_now(&self) -> Result<String, DirectoryError> {
        self.delta_link_now_inner()
            .await
            .map_err(|e| self.inner.redactor.scrub(e))
    }

    async fn read_delta(&self, link: &str) -> Result<DeltaRead, DeltaError> {
        self.read_delta_inner(link).await.map_err(|e| match e {
            DeltaError::Read(d) => DeltaError::Read(self.inner.redactor.scrub(d)),
            r => r,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(v: serde_json::Value) -> Page {
        serde_json::from_value(v).expect("a page")
    }

    #[test]
    fn absent_properties_are_null_but_the_keys_are_required() {
        let p = page(serde_json::json!({
            "@odata.deltaLink": "https://g/v1.0/users/delta?$deltatoken=x",
            "value": [
                {"id": "a", "userPrincipalName": "a@example.com", "accountEnabled": true},
                {"id": "b", "@removed": {"reason": "changed"}},
                {"id": "c", "userPrincipalName": "c@example.com"},
            ]
        }));
        let mut records = p.value.expect("value").into_iter();
        let a = records.next().expect("a");
        assert!(a.removed.is_none());
        let a = delta_user(a.user, 1, 0).expect("a user without optional properties");
        assert_eq!((a.display_name, a.given_name, a.email), (None, None, None));
        assert!(a.active && !a.guest);
        let b = records.next().expect("b");
        assert!(b.removed.is_some());
        let c = delta_user(records.next().expect("c").user, 1, 2).unwrap_err();
        assert!(
            matches!(&c, DirectoryError::Protocol(m) if m.contains("accountEnabled")),
            "{c}"
        );
    }

    #[test]
    fn the_latest_query_selects_what_every_read_selects() {
        let q = latest_query();
        assert!(q.ends_with("&$deltatoken=latest"), "{q}");
        assert!(q.starts_with("$select=id,userPrincipalName,"), "{q}");
    }
}
