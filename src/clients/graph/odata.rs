//! OData query building and `@odata.nextLink` checks for Microsoft Graph (docs/behaviour.md §8).

use std::collections::HashSet;

use url::Url;

use crate::clients::outbound::{cut, encode_component};
use crate::directory::DirectoryError;

/// The user properties every read selects: exactly the ones the plan depends on.
pub const USER_SELECT: &str = "id,userPrincipalName,displayName,givenName,surname,mail,proxyAddresses,accountEnabled,onPremisesImmutableId,userType";

/// Graph's largest page (`$top` 1–999).
pub const PAGE_SIZE: u32 = 999;

/// An OData string literal: single-quoted, with `'` doubled.
pub fn string_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `endswith(userPrincipalName,'@domain')` for a domain scope.
pub fn domain_filter(domain: &str) -> String {
    format!(
        "endswith(userPrincipalName,{})",
        string_literal(&format!("@{}", domain.to_ascii_lowercase()))
    )
}

/// `userPrincipalName eq '...'`.
pub fn upn_filter(upn: &str) -> String {
    format!("userPrincipalName eq {}", string_literal(upn))
}

/// The query string of a users listing. System query option names keep their literal `$`;
/// values are percent-encoded whole, so `#`, `+`, `&` and spaces in a literal stay data.
/// `$count=true` is always asked for: the listing is checked against `@odata.count`
/// (see `ListingCount` in `src/clients/graph/mod.rs`).
pub fn users_query(filter: Option<&str>) -> String {
    let mut q = format!("$select={USER_SELECT}&$top={PAGE_SIZE}");
    if let Some(f) = filter {
        q.push_str("&$filter=");
        q.push_str(&encode_component(f));
    }
    q.push_str("&$count=true");
    q
}

/// Follows `@odata.nextLink`s safely: each must be absolute, on the Graph endpoint's scheme,
/// host and port, without user-info, and never seen before (by link or by skiptoken).
#[derive(Debug)]
pub struct NextLinkGuard {
    base: Url,
    seen_links: HashSet<String>,
    seen_tokens: HashSet<String>,
}

impl NextLinkGuard {
    pub fn new(base: Url, first: &Url) -> Self {
        let mut seen_links = HashSet::new();
        seen_links.insert(first.as_str().to_string());
        Self {
            base,
            seen_links,
            seen_tokens: HashSet::new(),
        }
    }

    /// The URL of the next page, or a protocol error that aborts the listing.
    pub fn check(&mut self, link: &str) -> Result<Url, DirectoryError> {
        let url = check_same_origin(&self.base, link)?;
        if !self.seen_links.insert(url.as_str().to_string()) {
            return Err(DirectoryError::Protocol(
                "Graph nextLink repeats an earlier page".to_string(),
            ));
        }
        if let Some(token) = skiptoken(&url)
            && !self.seen_tokens.insert(token)
        {
            return Err(DirectoryError::Protocol(
                "Graph nextLink repeats an earlier skiptoken".to_string(),
            ));
        }
        Ok(url)
    }
}

/// Parses `link` and checks it stays on `base`'s origin.
pub fn check_same_origin(base: &Url, link: &str) -> Result<Url, DirectoryError> {
    let url = Url::parse(link).map_err(|_| {
        DirectoryError::Protocol("Graph nextLink is not an absolute URL".to_string())
    })?;
    let same = url.scheme() == base.scheme()
        && url.host() == base.host()
        && url.port_or_known_default() == base.port_or_known_default();
    if !same {
        // The host is configuration-level data (not user data), useful for diagnosis.
        return Err(DirectoryError::Protocol(cut(&format!(
            "Graph nextLink leaves the Graph endpoint (points at {}://{})",
            url.scheme(),
            url.host_str().unwrap_or("?")
        ))));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DirectoryError::Protocol(
            "Graph nextLink carries user-info".to_string(),
        ));
    }
    Ok(url)
}

/// The `$skiptoken` (or `$skipToken`, possibly `%24`-encoded) of a link.
fn skiptoken(url: &Url) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k.eq_ignore_ascii_case("$skiptoken"))
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_double_quotes_and_queries_encode() {
        assert_eq!(string_literal("o'brien@x.com"), "'o''brien@x.com'");
        assert_eq!(
            domain_filter("Example.COM"),
            "endswith(userPrincipalName,'@example.com')"
        );
        let q = users_query(Some(&upn_filter("a+b#c'd@x.com")));
        assert!(q.starts_with("$select=id,userPrincipalName,"));
        assert!(q.contains("&$top=999&"));
        assert!(q.ends_with("&$count=true"));
        assert!(
            q.contains("$filter=userPrincipalName%20eq%20%27a%2Bb%23c%27%27d%40x.com%27"),
            "{q}"
        );
        // Every listing asks for the count it is checked against.
        assert_eq!(
            users_query(None),
            format!("$select={USER_SELECT}&$top=999&$count=true")
        );
        // The encoded filter decodes back to the literal.
        let url = Url::parse(&format!("https://graph.microsoft.com/v1.0/users?{q}")).unwrap();
        let f = url
            .query_pairs()
            .find(|(k, _)| k == "$filter")
            .unwrap()
            .1
            .into_owned();
        assert_eq!(f, "userPrincipalName eq 'a+b#c''d@x.com'");
    }

    fn guard() -> NextLinkGuard {
        let base = Url::parse("https://graph.example:8443").unwrap();
        let first = Url::parse("https://graph.example:8443/v1.0/users?$top=999").unwrap();
        NextLinkGuard::new(base, &first)
    }

    #[test]
    fn next_links_stay_on_the_graph_origin() {
        let mut g = guard();
        assert!(
            g.check("https://graph.example:8443/v1.0/users?$top=999&$skiptoken=A")
                .is_ok()
        );
        for bad in [
            "https://evil.example:8443/v1.0/users?$skiptoken=B",
            "http://graph.example:8443/v1.0/users?$skiptoken=B",
            "https://graph.example:9443/v1.0/users?$skiptoken=B",
            "https://graph.example/v1.0/users?$skiptoken=B",
            "https://u:p@graph.example:8443/v1.0/users?$skiptoken=B",
            "/v1.0/users?$skiptoken=B",
        ] {
            let e = g.check(bad).unwrap_err();
            assert!(matches!(e, DirectoryError::Protocol(_)), "{bad}: {e}");
        }
        // Default ports compare equal to explicit ones.
        let base = Url::parse("https://graph.microsoft.com").unwrap();
        assert!(check_same_origin(&base, "https://graph.microsoft.com:443/v1.0/users").is_ok());
    }

    #[test]
    fn repeated_links_and_skiptokens_abort() {
        let mut g = guard();
        assert!(
            g.check("https://graph.example:8443/v1.0/users?$top=999&$skiptoken=A")
                .is_ok()
        );
        assert!(
            g.check("https://graph.example:8443/v1.0/users?$top=999&$skiptoken=A")
                .is_err()
        );
        // Same token behind a different spelling of the rest of the link.
        assert!(
            g.check("https://graph.example:8443/v1.0/users?%24skiptoken=A&$top=5")
                .is_err()
        );
        // A link back to the first page.
        assert!(
            g.check("https://graph.example:8443/v1.0/users?$top=999")
                .is_err()
        );
        assert!(
            g.check("https://graph.example:8443/v1.0/users?$top=999&$skiptoken=B")
                .is_ok()
        );
    }
}
