//! What one run is asked to do: the part of a `DirectorySync` spec the sync core reads.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the destination `userName` is formed from the Entra ID `userPrincipalName`.
/// It cannot be changed after creation: every destination userName would change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum UpnMode {
    /// The destination userName is the whole userPrincipalName, e.g. `alice@example.com`.
    Enabled,
    /// The destination userName is the part of the userPrincipalName before `@`, e.g. `alice`.
    /// Two domains that share a destination can then collide (`alice@a.com` and `alice@b.com`);
    /// such users are reported as Conflict and never overwrite each other.
    Disabled,
}

/// What happens to a destination user this resource manages once the user is no longer in
/// its source (left the tenant, left the domain, became a guest, or was excluded).
/// Either way the deletion guard (`maxAllowedDeletions`) counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the destination user (the behaviour of the product dirsync is modelled on).
    #[default]
    Delete,
    /// Keep the destination user but set `active: false`; the user stays managed, and is
    /// re-activated if it comes back to the source.
    Deactivate,
}

/// Which applying runs wait for an approved preview before they write (docs/behaviour.md §9).
/// A run the deletion guard cancels waits for one whatever this says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ApprovalPolicy {
    /// Runs apply as planned (the guard still cancels too many deletions).
    #[default]
    Never,
    /// A run with any Delete row or deactivation writes nothing until its preview is approved.
    OnDeletes,
    /// A run with any write writes nothing until its preview is approved.
    Always,
}

impl ApprovalPolicy {
    /// The name the resource spells it with.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalPolicy::Never => "Never",
            ApprovalPolicy::OnDeletes => "OnDeletes",
            ApprovalPolicy::Always => "Always",
        }
    }
}

/// Which way users flow (docs/behaviour.md §6). Fixed for the life of a resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Direction {
    /// Entra ID (Graph) is the source, a SCIM service the destination.
    #[default]
    EntraIdToScim,
    /// A SCIM service is the source, Entra ID (Graph) the destination: users are written into
    /// Entra ID.
    ScimToEntraId,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::EntraIdToScim => "EntraIdToScim",
            Direction::ScimToEntraId => "ScimToEntraId",
        }
    }
}

/// The settings a run plans and applies with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncConfig {
    /// Users whose userPrincipalName ends in `@<domain>` (case-insensitive) are synced.
    pub domain: String,
    pub upn_mode: UpnMode,
    /// Deletion guard in percent (0..=100) of the managed users; see [`crate::sync::guard`].
    pub max_allowed_deletions: u8,
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Take over pre-existing destination users (same userName, no externalId).
    #[serde(default)]
    pub adopt_existing: bool,
    /// Destination userNames that are never adopted, updated or deleted (case-insensitive).
    #[serde(default)]
    pub protected_user_names: Vec<String>,
    /// Leave out accounts that look like rooms, equipment or shared mailboxes.
    #[serde(default)]
    pub exclude_resource_like_accounts: bool,
    /// SCIM attribute path that carries the userPrincipalName; `None` or empty = not carried.
    #[serde(default)]
    pub upn_attribute: Option<String>,
    /// Which side is the source. Files written before the other direction existed have none.
    #[serde(default)]
    pub direction: Direction,
}

/// A [`SyncConfig`] the core cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("maxAllowedDeletions must be between 0 and 100, got {0}")]
    MaxAllowedDeletionsOutOfRange(u8),
    #[error("domain must be a domain name such as example.com, got {0:?}")]
    InvalidDomain(String),
}

impl SyncConfig {
    /// A config with the defaults docs/behaviour.md §1 gives for every optional field.
    pub fn new(domain: impl Into<String>, upn_mode: UpnMode, max_allowed_deletions: u8) -> Self {
        Self {
            domain: domain.into(),
            upn_mode,
            max_allowed_deletions,
            deletion_policy: DeletionPolicy::Delete,
            adopt_existing: false,
            protected_user_names: Vec::new(),
            exclude_resource_like_accounts: false,
            upn_attribute: None,
            direction: Direction::EntraIdToScim,
        }
    }

    /// Checks what the CRD schema also checks, for callers that did not come through the
    /// API server (the standalone CLI reads the resource from a file).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_allowed_deletions > 100 {
            return Err(ConfigError::MaxAllowedDeletionsOutOfRange(
                self.max_allowed_deletions,
            ));
        }
        let d = self.domain.as_str();
        let plausible = !d.is_empty()
            && d.len() <= 253
            && !d.starts_with('.')
            && !d.ends_with('.')
            && !d.contains("..")
            && d.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !plausible {
            return Err(ConfigError::InvalidDomain(self.domain.clone()));
        }
        Ok(())
    }

    /// The UPN attribute path when one is configured (an empty string counts as none, as the
    /// resource's default is `""`).
    pub fn upn_attribute(&self) -> Option<&str> {
        self.upn_attribute
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
    }

    /// `@domain`, lower-cased, the suffix every in-scope userPrincipalName ends with.
    pub fn domain_suffix(&self) -> String {
        format!("@{}", self.domain.to_ascii_lowercase())
    }
}

/// True when `name` ends in `suffix` (which must already be lower-case), ignoring ASCII case.
/// Domain names are ASCII (IDNs appear in punycode), so ASCII folding is enough and allocates
/// nothing.
pub fn ends_with_ignore_ascii_case(name: &str, suffix_lower: &str) -> bool {
    name.len() >= suffix_lower.len()
        && name.is_char_boundary(name.len() - suffix_lower.len())
        && name[name.len() - suffix_lower.len()..].eq_ignore_ascii_case(suffix_lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_serialize_with_the_spec_names() {
        assert_eq!(
            serde_json::to_string(&UpnMode::Enabled).ok().as_deref(),
            Some("\"Enabled\"")
        );
        assert_eq!(
            serde_json::to_string(&UpnMode::Disabled).ok().as_deref(),
            Some("\"Disabled\"")
        );
        assert_eq!(
            serde_json::to_string(&DeletionPolicy::Delete)
                .ok()
                .as_deref(),
            Some("\"Delete\"")
        );
        assert_eq!(
            serde_json::to_string(&DeletionPolicy::Deactivate)
                .ok()
                .as_deref(),
            Some("\"Deactivate\"")
        );
        assert!(serde_json::from_str::<UpnMode>("\"enabled\"").is_err());
    }

    #[test]
    fn config_reads_camel_case_with_defaults() {
        let cfg: SyncConfig = serde_json::from_str(
            r#"{"domain":"example.com","upnMode":"Disabled","maxAllowedDeletions":65}"#,
        )
        .expect("valid config");
        assert_eq!(cfg, SyncConfig::new("example.com", UpnMode::Disabled, 65));
        assert_eq!(cfg.deletion_policy, DeletionPolicy::Delete);
        let json = serde_json::to_value(&cfg).expect("serializes");
        assert!(json.get("excludeResourceLikeAccounts").is_some());
        assert!(json.get("protectedUserNames").is_some());
    }

    #[test]
    fn validate_rejects_out_of_range_and_bad_domains() {
        assert!(
            SyncConfig::new("example.com", UpnMode::Enabled, 100)
                .validate()
                .is_ok()
        );
        assert_eq!(
            SyncConfig::new("example.com", UpnMode::Enabled, 101).validate(),
            Err(ConfigError::MaxAllowedDeletionsOutOfRange(101))
        );
        for bad in ["", ".example.com", "exa mple.com", "a..b", "@example.com"] {
            assert!(
                SyncConfig::new(bad, UpnMode::Enabled, 1)
                    .validate()
                    .is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn empty_upn_attribute_means_none() {
        let mut cfg = SyncConfig::new("example.com", UpnMode::Enabled, 1);
        assert_eq!(cfg.upn_attribute(), None);
        cfg.upn_attribute = Some(String::new());
        assert_eq!(cfg.upn_attribute(), None);
        cfg.upn_attribute = Some("urn:ietf:params:scim:schemas:extension:x:2.0:User:upn".into());
        assert!(cfg.upn_attribute().is_some());
    }

    #[test]
    fn suffix_match_ignores_case_and_survives_multibyte_names() {
        assert!(ends_with_ignore_ascii_case(
            "Alice@Example.COM",
            "@example.com"
        ));
        assert!(!ends_with_ignore_ascii_case(
            "alice@example.co",
            "@example.com"
        ));
        assert!(!ends_with_ignore_ascii_case(
            "alice@sub.example.comx",
            "@example.com"
        ));
        assert!(!ends_with_ignore_ascii_case("山田太郎さん", "@example.com"));
        assert!(!ends_with_ignore_ascii_case("x", "@example.com"));
    }

    #[test]
    fn enum_schemas_list_the_values_for_openapi() {
        let settings = schemars::generate::SchemaSettings::openapi3();
        let schema = settings.into_generator().into_root_schema_for::<UpnMode>();
        let text = serde_json::to_string(&schema).expect("schema serializes");
        assert!(text.contains("Enabled") && text.contains("Disabled"));
        assert!(
            text.contains("before `@`"),
            "variant docs reach the schema: {text}"
        );
    }
}
