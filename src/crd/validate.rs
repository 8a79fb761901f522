//! The checks the CRD's schema and CEL rules make, for readers that do not go through the API
//! server (the command line reads the resource file directly), and the core's view of a spec.

use super::{
    DESTINATION_KIND_MESSAGE, DIFFERENT_KINDS_MESSAGE, DirectorySyncSpec, EntraId,
    SOURCE_KIND_MESSAGE, Scim, SecretKeyRef,
};
use crate::clients::graph::WritePacing;
use crate::sync::Side;
use crate::sync::config::Direction;

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
        let sides = self.sides()?;
        let entra = sides.entra_id;
        let at = |field: &str| format!("{}.{field}", sides.entra_id_field());
        if !(is_guid(&entra.tenant_id) || is_domain_name(&entra.tenant_id)) {
            return bad(&at("tenantID"), "must be a GUID or a domain name");
        }
        if !is_guid(&entra.client_id) {
            return bad(&at("clientID"), "must be a GUID");
        }
        let kinds = [
            entra.client_secret_ref.is_some(),
            entra.client_certificate_ref.is_some(),
            entra.workload_identity.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return bad(
                sides.entra_id_field(),
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
        check_url(&at("authorityHost"), &entra.authority_host, &["https"])?;
        check_url(&at("graphEndpoint"), &entra.graph_endpoint, &["https"])?;
        check_url(
            &format!("{}.endpoint", sides.scim_field()),
            &sides.scim.endpoint,
            &["https", "http"],
        )?;
        Ok(())
    }

    /// The pure core's view of this resource; an error when the sides do not name a direction
    /// (which the API server and [`DirectorySyncSpec::validate`] refuse).
    pub fn sync_config(&self) -> Result<crate::sync::config::SyncConfig, SpecError> {
        let sides = self.sides()?;
        Ok(crate::sync::config::SyncConfig {
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
            // The attribute is the SCIM side's, whichever side that is.
            upn_attribute: Some(sides.scim.user_principal_name_attribute.clone())
                .filter(|a| !a.is_empty()),
            direction: sides.direction,
        })
    }

    /// Which kind each side holds: exactly one per side, different kinds (the CEL rules of
    /// `src/crd/mod.rs`). The error names the side as the API server would.
    pub fn sides(&self) -> Result<Sides<'_>, SpecError> {
        let one = |entra: &Option<EntraId>, scim: &Option<Scim>, field: &str, message: &str| {
            if entra.is_some() == scim.is_some() {
                Err(SpecError {
                    field: field.to_string(),
                    message: message.to_string(),
                })
            } else {
                Ok(())
            }
        };
        one(
            &self.source.entra_id,
            &self.source.scim,
            "spec.source",
            SOURCE_KIND_MESSAGE,
        )?;
        one(
            &self.destination.entra_id,
            &self.destination.scim,
            "spec.destination",
            DESTINATION_KIND_MESSAGE,
        )?;
        match (
            &self.source.entra_id,
            &self.source.scim,
            &self.destination.entra_id,
            &self.destination.scim,
        ) {
            (Some(entra_id), None, None, Some(scim)) => Ok(Sides {
                direction: Direction::EntraIdToScim,
                entra_id,
                scim,
            }),
            (None, Some(scim), Some(entra_id), None) => Ok(Sides {
                direction: Direction::ScimToEntraId,
                entra_id,
                scim,
            }),
            _ => Err(SpecError {
                field: "spec".to_string(),
                message: DIFFERENT_KINDS_MESSAGE.to_string(),
            }),
        }
    }

    /// Which way users flow: Entra ID to SCIM when the source holds `entraID`.
    pub fn direction(&self) -> Result<Direction, SpecError> {
        self.sides().map(|s| s.direction)
    }

    /// The Entra ID side, source or destination.
    pub fn entra_id(&self) -> Result<&EntraId, SpecError> {
        self.sides().map(|s| s.entra_id)
    }

    /// The SCIM side, source or destination.
    pub fn scim(&self) -> Result<&Scim, SpecError> {
        self.sides().map(|s| s.scim)
    }

    /// The Secrets the spec refers to, from both sides whatever they hold (also for a spec the
    /// API server would refuse, so that a Secret watch never misses one).
    pub fn secret_refs(&self) -> Vec<&SecretKeyRef> {
        let entra = [&self.source.entra_id, &self.destination.entra_id]
            .into_iter()
            .flatten()
            .flat_map(|e| {
                [
                    e.client_secret_ref.as_ref(),
                    e.client_certificate_ref.as_ref(),
                    e.ca_bundle_ref.as_ref(),
                ]
            });
        let scim = [&self.source.scim, &self.destination.scim]
            .into_iter()
            .flatten()
            .flat_map(|s| [Some(&s.bearer_token_ref), s.ca_bundle_ref.as_ref()]);
        entra.chain(scim).flatten().collect()
    }
}

/// The two sides of a valid spec by kind ([`DirectorySyncSpec::sides`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sides<'a> {
    pub direction: Direction,
    pub entra_id: &'a EntraId,
    pub scim: &'a Scim,
}

impl Sides<'_> {
    /// The side Entra ID is on.
    pub fn entra_id_side(&self) -> Side {
        match self.direction {
            Direction::EntraIdToScim => Side::Source,
            Direction::ScimToEntraId => Side::Destination,
        }
    }

    /// The side the SCIM service is on.
    pub fn scim_side(&self) -> Side {
        match self.direction {
            Direction::EntraIdToScim => Side::Destination,
            Direction::ScimToEntraId => Side::Source,
        }
    }

    /// Where the Entra ID block is, for messages: `spec.source.entraID` or
    /// `spec.destination.entraID`.
    pub fn entra_id_field(&self) -> &'static str {
        match self.direction {
            Direction::EntraIdToScim => "spec.source.entraID",
            Direction::ScimToEntraId => "spec.destination.entraID",
        }
    }

    /// Where the SCIM block is, for messages: `spec.destination.scim` or `spec.source.scim`.
    pub fn scim_field(&self) -> &'static str {
        match self.direction {
            Direction::EntraIdToScim => "spec.destination.scim",
            Direction::ScimToEntraId => "spec.source.scim",
        }
    }

    /// Graph's client-side write pacing (src/clients/graph/pacing.rs): Graph's write limit when
    /// Entra ID is the destination; off when it is only read.
    pub fn graph_write_pacing(&self) -> WritePacing {
        match self.direction {
            Direction::EntraIdToScim => WritePacing::OFF,
            Direction::ScimToEntraId => WritePacing::default(),
        }
    }
}

/// "source" or "destination", for messages.
pub fn side_name(side: Side) -> &'static str {
    match side {
        Side::Source => "source",
        Side::Destination => "destination",
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
    use serde_json::{Value, json};

    use crate::clients::graph::WritePacing;
    use crate::crd::{
        DESTINATION_KIND_MESSAGE, DIFFERENT_KINDS_MESSAGE, Direction, DirectorySyncSpec,
        SOURCE_KIND_MESSAGE, SpecError,
    };
    use crate::sync::Side;

    fn entra(client_id: &str) -> Value {
        json!({"tenantID": "7d6f3c2a-1b4e-4f8a-9c5d-2e1f0a9b8c7d", "clientID": client_id,
            "clientSecretRef": {"name": "entra-app", "key": "client-secret"}})
    }

    fn scim(endpoint: &str) -> Value {
        json!({"endpoint": endpoint, "bearerTokenRef": {"name": "scim", "key": "token"},
            "caBundleRef": {"name": "scim-ca", "key": "ca.pem"},
            "userPrincipalNameAttribute": "nickName"})
    }

    const CLIENT: &str = "3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c";
    const SCIM_URL: &str = "https://scim.example.net/v2";

    fn spec_with(source: Value, destination: Value) -> DirectorySyncSpec {
        serde_json::from_value(json!({
            "domain": "example.com", "upnMode": "Disabled", "maxAllowedDeletions": 5,
            "source": source, "destination": destination,
        }))
        .expect("the typed spec reads any combination of sides")
    }

    fn forward() -> DirectorySyncSpec {
        spec_with(
            json!({"entraID": entra(CLIENT)}),
            json!({"scim": scim(SCIM_URL)}),
        )
    }

    fn reverse() -> DirectorySyncSpec {
        spec_with(
            json!({"scim": scim(SCIM_URL)}),
            json!({"entraID": entra(CLIENT)}),
        )
    }

    fn err(field: &str, message: &str) -> SpecError {
        SpecError {
            field: field.into(),
            message: message.into(),
        }
    }

    #[test]
    fn the_side_holding_entra_id_gives_the_direction_and_the_paths() {
        let f = forward();
        let sides = f.sides().unwrap();
        assert_eq!(f.direction(), Ok(Direction::EntraIdToScim));
        assert_eq!(
            (sides.entra_id_side(), sides.scim_side()),
            (Side::Source, Side::Destination)
        );
        assert_eq!(
            (sides.entra_id_field(), sides.scim_field()),
            ("spec.source.entraID", "spec.destination.scim")
        );
        assert_eq!(sides.graph_write_pacing(), WritePacing::OFF);

        let r = reverse();
        let sides = r.sides().unwrap();
        assert_eq!(r.direction(), Ok(Direction::ScimToEntraId));
        assert_eq!(
            (sides.entra_id_side(), sides.scim_side()),
            (Side::Destination, Side::Source)
        );
        assert_eq!(
            (sides.entra_id_field(), sides.scim_field()),
            ("spec.destination.entraID", "spec.source.scim")
        );
        // Graph as the destination paces its writes to Graph's limit.
        assert_eq!(sides.graph_write_pacing(), WritePacing::default());
        assert_ne!(WritePacing::default(), WritePacing::OFF);
        assert_eq!(r.entra_id().unwrap().client_id, CLIENT);
        assert_eq!(r.scim().unwrap().endpoint, SCIM_URL);
        assert_eq!(r.validate(), Ok(()));
        assert_eq!(f.validate(), Ok(()));
    }

    #[test]
    fn sync_config_takes_the_direction_and_the_scim_sides_upn_attribute() {
        let cfg = reverse().sync_config().unwrap();
        assert_eq!(cfg.direction, Direction::ScimToEntraId);
        assert_eq!(cfg.upn_attribute.as_deref(), Some("nickName"));
        let cfg = forward().sync_config().unwrap();
        assert_eq!(cfg.direction, Direction::EntraIdToScim);
        assert_eq!(cfg.upn_attribute.as_deref(), Some("nickName"));
    }

    /// Every shape the CEL rules refuse is refused here too, with the API server's message, and
    /// nothing panics: the accessors and the core's config are errors.
    #[test]
    fn same_kinds_and_sides_with_both_or_neither_are_refused_without_panicking() {
        let e = || json!({"entraID": entra(CLIENT)});
        let s = || json!({"scim": scim(SCIM_URL)});
        let both = || json!({"entraID": entra(CLIENT), "scim": scim(SCIM_URL)});
        let neither = || json!({});
        for (what, spec, want) in [
            (
                "entraID twice",
                spec_with(e(), e()),
                err("spec", DIFFERENT_KINDS_MESSAGE),
            ),
            (
                "scim twice",
                spec_with(s(), s()),
                err("spec", DIFFERENT_KINDS_MESSAGE),
            ),
            (
                "source with both",
                spec_with(both(), s()),
                err("spec.source", SOURCE_KIND_MESSAGE),
            ),
            (
                "source with neither",
                spec_with(neither(), s()),
                err("spec.source", SOURCE_KIND_MESSAGE),
            ),
            (
                "destination with both",
                spec_with(e(), both()),
                err("spec.destination", DESTINATION_KIND_MESSAGE),
            ),
            (
                "destination with neither",
                spec_with(s(), neither()),
                err("spec.destination", DESTINATION_KIND_MESSAGE),
            ),
        ] {
            assert_eq!(spec.validate(), Err(want.clone()), "{what}");
            assert_eq!(spec.sides(), Err(want.clone()), "{what}");
            assert_eq!(spec.direction(), Err(want.clone()), "{what}");
            assert!(spec.entra_id().is_err() && spec.scim().is_err(), "{what}");
            assert_eq!(spec.sync_config(), Err(want.clone()), "{what}");
        }
        assert!(
            err("spec", DIFFERENT_KINDS_MESSAGE)
                .to_string()
                .contains("one entraID and one scim")
        );
    }

    /// The checks of each block name the side it is on.
    #[test]
    fn field_paths_name_the_side_each_block_is_on() {
        let bad_client = |source: bool| {
            let (e, s) = (
                json!({"entraID": entra("not-a-guid")}),
                json!({"scim": scim(SCIM_URL)}),
            );
            if source {
                spec_with(e, s)
            } else {
                spec_with(s, e)
            }
        };
        assert_eq!(
            bad_client(true).validate().unwrap_err().field,
            "spec.source.entraID.clientID"
        );
        assert_eq!(
            bad_client(false).validate().unwrap_err().field,
            "spec.destination.entraID.clientID"
        );

        let mut r = reverse();
        r.destination.entra_id.as_mut().unwrap().graph_endpoint = "http://graph.example".into();
        assert_eq!(
            r.validate().unwrap_err().field,
            "spec.destination.entraID.graphEndpoint"
        );
        let mut r = reverse();
        r.source.scim.as_mut().unwrap().endpoint = "https://u:p@scim.example.net/v2".into();
        let e = r.validate().unwrap_err();
        assert_eq!(e.field, "spec.source.scim.endpoint");
        assert!(e.message.contains("user-info"), "{e}");
        let mut r = reverse();
        let entra = r.destination.entra_id.as_mut().unwrap();
        entra.workload_identity = Some(crate::crd::WorkloadIdentity {
            service_account_name: "dirsync".into(),
        });
        assert_eq!(r.validate().unwrap_err().field, "spec.destination.entraID");
    }

    /// The Secret watch re-runs a resource when any Secret it names changes, on either side,
    /// even for a spec the API server would refuse.
    #[test]
    fn secret_refs_cover_both_sides() {
        let names = |spec: &DirectorySyncSpec| -> Vec<String> {
            let mut n: Vec<String> = spec.secret_refs().iter().map(|r| r.name.clone()).collect();
            n.sort();
            n
        };
        assert_eq!(names(&reverse()), ["entra-app", "scim", "scim-ca"]);
        assert_eq!(names(&forward()), ["entra-app", "scim", "scim-ca"]);
        let odd = spec_with(
            json!({"scim": scim(SCIM_URL)}),
            json!({"scim": {"endpoint": SCIM_URL, "bearerTokenRef": {"name": "other", "key": "t"}}}),
        );
        assert_eq!(names(&odd), ["other", "scim", "scim-ca"]);
    }

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
