//! The checks the CRD's schema and CEL rules make, for readers that do not go through the API
//! server (the command line reads the resource file directly), and the core's view of a spec.

use super::DirectorySyncSpec;

impl DirectorySyncSpec {
    /// What, besides the sync configuration, a kept delta link belongs to
    /// (`sync::incremental::fingerprint`): the Graph properties read and the whole spec, so that
    /// any change of the spec makes the next applying run full (docs/behaviour.md §7).
    pub fn delta_context(&self) -> String {
        format!(
            "{}\n{}",
            crate::clients::graph::USER_SELECT,
            serde_json::to_string(self).unwrap_or_default()
        )
    }

    /// `fullSyncInterval` in seconds (24 h when it does not parse; `validate` refuses that).
    pub fn full_sync_interval_secs(&self) -> i64 {
        crate::duration::parse_duration(&self.full_sync_interval)
            .ok()
            .filter(|d| !d.is_zero())
            .map_or(
                crate::sync::incremental::DEFAULT_FULL_SYNC_INTERVAL_SECS,
                |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            )
    }

    /// The checks the CRD schema and its CEL rules make on create, for readers that do not go
    /// through the API server (the command line reads the resource file directly). Messages
    /// name the field as `kubectl` would.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |field: &str, why: &str| {
            Err(SpecError {
                field: field.to_string(),
                message: why.to_string(),
            })
        };
        if !(0..=100).contains(&self.max_allowed_deletions) {
            return bad(
                "spec.maxAllowedDeletions",
                "must be between 0 and 100 (percent)",
            );
        }
        if !is_domain_name(&self.domain) {
            return bad("spec.domain", "must be a domain name such as example.com");
        }
        if crate::duration::parse_duration(&self.interval).map_or(true, |d| d.is_zero()) {
            return bad(
                "spec.interval",
                "must be a duration such as 1h or 30m, more than zero",
            );
        }
        if crate::duration::parse_duration(&self.full_sync_interval).map_or(true, |d| d.is_zero()) {
            return bad(
                "spec.fullSyncInterval",
                "must be a duration such as 24h or 6h, more than zero",
            );
        }
        let entra = &self.source.entra_id;
        if !(is_guid(&entra.tenant_id) || is_domain_name(&entra.tenant_id)) {
            return bad(
                "spec.source.entraID.tenantID",
                "must be a GUID or a domain name",
            );
        }
        if !is_guid(&entra.client_id) {
            return bad("spec.source.entraID.clientID", "must be a GUID");
        }
        let kinds = [
            entra.client_secret_ref.is_some(),
            entra.client_certificate_ref.is_some(),
            entra.workload_identity.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return bad(
                "spec.source.entraID",
                "exactly one of clientSecretRef, clientCertificateRef and workloadIdentity must be set",
            );
        }
        if let Some(h) = &self.approved_preview
            && !crate::sync::approval::is_preview_hash(h)
        {
            return bad(
                "spec.approvedPreview",
                "must be sha256: followed by 64 lower-case hex digits (what sha256sum prints)",
            );
        }
        check_url(
            "spec.source.entraID.authorityHost",
            &entra.authority_host,
            &["https"],
        )?;
        check_url(
            "spec.source.entraID.graphEndpoint",
            &entra.graph_endpoint,
            &["https"],
        )?;
        check_url(
            "spec.destination.scim.endpoint",
            &self.destination.scim.endpoint,
            &["https", "http"],
        )?;
        Ok(())
    }

    /// The pure core's view of this resource.
    pub fn sync_config(&self) -> crate::sync::config::SyncConfig {
        crate::sync::config::SyncConfig {
            domain: self.domain.to_ascii_lowercase(),
            upn_mode: self.upn_mode,
            // Out-of-range values are refused by the schema and by `validate`; clamping here only
            // keeps this conversion total.
            max_allowed_deletions: u8::try_from(self.max_allowed_deletions.clamp(0, 100))
                .unwrap_or(100),
            deletion_policy: self.deletion_policy,
            adopt_existing: self.adopt_existing,
            protected_user_names: self.protected_user_names.clone(),
            exclude_resource_like_accounts: self.exclude_resource_like_accounts,
            upn_attribute: Some(self.destination.scim.user_principal_name_attribute.clone())
                .filter(|a| !a.is_empty()),
            direction: crate::sync::config::Direction::EntraIdToScim,
        }
    }
}

/// A resource the schema would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn is_guid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
}

fn is_domain_name(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    s.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn check_url(field: &str, value: &str, schemes: &[&str]) -> Result<(), SpecError> {
    let err = |why: &str| SpecError {
        field: field.to_string(),
        message: why.to_string(),
    };
    let url = url::Url::parse(value).map_err(|_| err("must be an absolute URL"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(err(&format!("must use {}", schemes.join(" or "))));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(
            "must not carry user-info (credentials belong in Secrets)",
        ));
    }
    if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(err(
            "must be a base URL with a host and no query or fragment",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::crd::DirectorySyncSpec;

    /// `spec.interval` takes the one duration grammar (`src/duration.rs`), more than zero.
    #[test]
    fn intervals_are_positive_go_durations() {
        let spec = |interval: &str| -> DirectorySyncSpec {
            serde_json::from_value(serde_json::json!({
                "domain": "example.com", "upnMode": "Enabled", "maxAllowedDeletions": 5, "interval": interval,
                "source": {"entraID": {"tenantID": "7d6f3c2a-1b4e-4f8a-9c5d-2e1f0a9b8c7d",
                    "clientID": "3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c", "clientSecretRef": {"name": "a", "key": "b"}}},
                "destination": {"scim": {"endpoint": "https://scim.example.net/v2",
                    "bearerTokenRef": {"name": "c", "key": "d"}}}
            }))
            .unwrap()
        };
        for good in ["1h", "1h30m", "1.5h", "500ms", "720h"] {
            assert_eq!(spec(good).validate(), Ok(()), "{good:?}");
        }
        for bad in ["", "0s", "1d", "h", "1 h", "-1h", "1hx"] {
            assert_eq!(
                spec(bad).validate().unwrap_err().field,
                "spec.interval",
                "{bad:?}"
            );
        }
    }
}
