//! The `DirectorySync` resource (docs/behaviour.md §1). The CRD in `crds/` is generated from these types
//! (`dirsync crd`), and the command line reads the same YAML, so validation lives here: in the
//! schema and its CEL rules, where the API server enforces it before the operator sees an object.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use crate::sync::config::{ApprovalPolicy, DeletionPolicy, Direction, UpnMode};

/// API group of the resource.
pub const GROUP: &str = "dirsync.io";
/// Annotation whose new non-empty value asks for a run now (docs/behaviour.md §1).
pub const SYNC_NOW_ANNOTATION: &str = "dirsync.io/sync-now";
/// The message the API server gives when `domain` or `upnMode` is changed (docs/behaviour.md §1).
pub const IMMUTABLE_MESSAGE: &str = "upnMode and domain cannot be changed after creation: every destination userName would change. Create a new DirectorySync; deleting this one never deletes destination users.";
/// The message the API server gives when `source` and `destination` swap kinds on an existing
/// resource (docs/behaviour.md §1, §6).
pub const DIRECTION_IMMUTABLE_MESSAGE: &str = "the direction cannot be changed after creation: source and destination keep the kinds (entraID, scim) they were created with. Create a new DirectorySync; deleting this one never deletes destination users.";
/// The message the API server gives when `source` and `destination` hold the same kind.
pub const DIFFERENT_KINDS_MESSAGE: &str =
    "source and destination must be different kinds: one entraID and one scim";
/// The message the API server gives when `source` holds both kinds or neither.
pub const SOURCE_KIND_MESSAGE: &str = "source must hold exactly one of entraID and scim";
/// The message the API server gives when `destination` holds both kinds or neither.
pub const DESTINATION_KIND_MESSAGE: &str = "destination must hold exactly one of entraID and scim";

/// Keeps the users of one domain in step between a Microsoft Entra ID tenant and a SCIM 2.0 user
/// directory, in either direction: Entra ID to SCIM (`source.entraID`, `destination.scim`) or
/// SCIM to Entra ID (`source.scim`, `destination.entraID`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dirsync.io",
    version = "v1alpha1",
    kind = "DirectorySync",
    plural = "directorysyncs",
    shortname = "dsync",
    namespaced,
    status = "DirectorySyncStatus",
    doc = "DirectorySync keeps the users of one domain in step between Microsoft Entra ID and a SCIM 2.0 user directory, in either direction (Entra ID to SCIM, or SCIM to Entra ID, fixed at creation): it previews (DryRun), applies once (Once) or applies on a schedule (Periodic).",
    validation = Rule::new("self.spec.domain == oldSelf.spec.domain && self.spec.upnMode == oldSelf.spec.upnMode").message(IMMUTABLE_MESSAGE),
    printcolumn(name = "Domain", type_ = "string", json_path = ".spec.domain"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Last Result", type_ = "string", json_path = ".status.lastRun.result"),
    printcolumn(name = "Adds", type_ = "integer", json_path = ".status.lastRun.adds"),
    printcolumn(name = "Updates", type_ = "integer", json_path = ".status.lastRun.updates"),
    printcolumn(name = "Deletes", type_ = "integer", json_path = ".status.lastRun.deletes"),
    printcolumn(name = "Awaiting Approval", type_ = "date", json_path = ".status.approval.pending.since"),
    printcolumn(name = "Next Run", type_ = "date", json_path = ".status.nextRunTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
// On the spec rather than the root, so that the API server reports them at `spec`. The first
// speaks only when both sides hold one kind each (a side with both or neither is the rule of
// SourceSpec / DestinationSpec, one message per problem); then, with different kinds, which
// side holds entraID is the direction.
#[x_kube(
    validation = Rule::new("has(self.source.entraID) == has(self.source.scim) || has(self.destination.entraID) == has(self.destination.scim) || has(self.source.entraID) != has(self.destination.entraID)").message(DIFFERENT_KINDS_MESSAGE),
    validation = Rule::new("has(self.source.entraID) == has(oldSelf.source.entraID)").message(DIRECTION_IMMUTABLE_MESSAGE)
)]
pub struct DirectorySyncSpec {
    /// The domain to synchronise: every user whose userPrincipalName ends in "@<domain>"
    /// (case-insensitive); from a SCIM source, the userPrincipalName the user has in Entra ID
    /// (see upnMode). Guests are never synchronised. Cannot be changed after creation.
    #[schemars(
        length(min = 3, max = 253),
        regex(
            pattern = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
        )
    )]
    pub domain: String,

    /// How the SCIM userName and the Entra ID userPrincipalName correspond. Enabled: the
    /// userName is the full userPrincipalName ("alice@example.com"). Disabled: the userName is
    /// the part before "@" ("alice"; from a SCIM source, the userPrincipalName is then
    /// "<userName>@<domain>"). Cannot be changed after creation, because every destination
    /// userName would change.
    pub upn_mode: UpnMode,

    /// Deletion guard, in percent (0–100) of the users this resource manages. If a run would
    /// delete or deactivate that share or more, the whole run is cancelled before any write.
    /// 0 cancels any deletion; 100 cancels only deleting everyone. Dry runs are never cancelled.
    #[schemars(range(min = 0, max = 100))]
    pub max_allowed_deletions: i32,

    /// DryRun: preview only, never write to the destination. Once: preview and apply once per
    /// change of the spec (or per new value of the dirsync.io/sync-now annotation), then idle.
    /// Periodic: preview at once, then apply at every slot of `interval`.
    #[serde(default)]
    pub mode: SyncMode,

    /// Periodic only: how often to apply, as a duration such as "1h" or "30m" (default 1h).
    /// Slots are multiples of the interval since the Unix epoch (UTC), shifted by a stable
    /// per-resource offset. The operator's --min-interval (default 5m) is the lower bound.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub interval: String,

    /// How often an applying run reads both sides whole (default 24h). Between full runs a
    /// scheduled run is incremental: it reads only the Entra ID users that changed (Graph
    /// delta) and only their destination records. A full run also repairs edits made directly
    /// in the destination, which no incremental run sees. Dry runs, sync-now and spec changes
    /// are always full, and so is every run from a SCIM source, which offers no change feed.
    #[serde(default = "default_full_sync_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub full_sync_interval: String,

    /// What happens to a managed destination user who is no longer in the source. Delete
    /// (default): the destination user is deleted. Deactivate: it is kept with active=false.
    /// Both count towards maxAllowedDeletions.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Take over pre-existing destination users whose userName matches a source user and who
    /// carry no externalId (shown as Update rows that set externalId); in Entra ID as the
    /// destination, users with the same userPrincipalName and no Immutable ID (Update rows
    /// that set it). When false, such users are reported as Conflict and left alone.
    #[serde(default)]
    pub adopt_existing: bool,

    /// Destination userNames (case-insensitive) that are never adopted, updated or deleted,
    /// e.g. the service's initial administrator; in Entra ID as the destination, they are
    /// matched against the userPrincipalName (e.g. a break-glass account).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub protected_user_names: Vec<String>,

    /// Leave out accounts that look like rooms, equipment or shared mailboxes (disabled, with
    /// neither given name nor surname). When false they are synchronised and flagged in the
    /// preview.
    #[serde(default)]
    pub exclude_resource_like_accounts: bool,

    /// Which applying runs wait for an approved preview. Never (default): runs apply as
    /// planned. OnDeletes: a run that deletes or deactivates anyone writes nothing until its
    /// preview is approved. Always: any run that writes waits. A run the deletion guard cancels
    /// waits for approval whatever this says. A waiting run pins its preview as
    /// <name>-pending and reports AwaitingApproval with the preview's hash.
    #[serde(default)]
    pub approval: ApprovalPolicy,

    /// The pending preview to apply, as "sha256:<hex>" of its CSV (what `dirsync preview get
    /// NAME -n NS --pending | sha256sum` prints). The next applying run re-plans and applies only
    /// the rows identical in that preview and the fresh plan, once; approving a preview also
    /// confirms its deletions to the deletion guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub approved_preview: Option<String>,

    /// Where users are read from: exactly one of entraID (Entra ID to SCIM) and scim (SCIM to
    /// Entra ID). The destination holds the other kind. Which side holds which cannot be
    /// changed after creation.
    pub source: SourceSpec,

    /// Where users are written to: exactly one of scim and entraID, the other kind than the
    /// source. Only users this resource created or adopted are ever updated or deleted.
    pub destination: DestinationSpec,
}

fn default_interval() -> String {
    "1h".to_string()
}

fn default_full_sync_interval() -> String {
    "24h".to_string()
}

/// When the resource runs and whether it writes.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum SyncMode {
    /// Plan only and publish the preview; never write to the destination.
    #[default]
    DryRun,
    /// Plan and apply once per spec generation or dirsync.io/sync-now value.
    Once,
    /// Preview at once, then apply at every slot of spec.interval.
    Periodic,
}

/// Where users are read from: exactly one of `entraID` and `scim`, the other kind than the
/// destination. The pair fixes the direction, which cannot change after creation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.entraID), has(self.scim)].filter(x, x).size() == 1").message(SOURCE_KIND_MESSAGE))]
pub struct SourceSpec {
    /// Microsoft Entra ID as the source (users flow into the SCIM service), read through
    /// Microsoft Graph. The app registration needs the Graph application permission
    /// User.Read.All (with admin consent).
    #[serde(rename = "entraID", default, skip_serializing_if = "Option::is_none")]
    pub entra_id: Option<EntraId>,

    /// A SCIM 2.0 service as the source (users flow into Entra ID), read whole at every run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scim: Option<Scim>,
}

/// Where users are written to: exactly one of `entraID` and `scim`, the other kind than the
/// source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.entraID), has(self.scim)].filter(x, x).size() == 1").message(DESTINATION_KIND_MESSAGE))]
pub struct DestinationSpec {
    /// Microsoft Entra ID as the destination: users are created, updated and deleted (soft
    /// delete) through Microsoft Graph. The app registration needs the Graph application
    /// permissions User.ReadWrite.All and Domain.Read.All (with admin consent).
    #[serde(rename = "entraID", default, skip_serializing_if = "Option::is_none")]
    pub entra_id: Option<EntraId>,

    /// A SCIM 2.0 service provider as the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scim: Option<Scim>,
}

/// A Microsoft Entra ID tenant and the app registration dirsync uses to reach it through
/// Microsoft Graph.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.clientSecretRef), has(self.clientCertificateRef), has(self.workloadIdentity)].filter(x, x).size() == 1").message("exactly one of clientSecretRef, clientCertificateRef and workloadIdentity must be set"))]
pub struct EntraId {
    /// The tenant: its directory (tenant) ID, a GUID, or one of its domain names. Cannot be
    /// changed after creation.
    #[serde(rename = "tenantID")]
    #[schemars(
        length(min = 3, max = 253),
        regex(
            pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+)$"
        )
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("entraID.tenantID cannot be changed after creation: the users this resource manages are tied to this tenant. Create a new DirectorySync; deleting this one never deletes destination users."))]
    pub tenant_id: String,

    /// The application (client) ID of the app registration, a GUID.
    #[serde(rename = "clientID")]
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub client_id: String,

    /// A key of a Secret in this namespace holding the app's client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,

    /// A key of a Secret in this namespace holding the app's certificate and its private key,
    /// both PEM, in one value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_ref: Option<SecretKeyRef>,

    /// Azure workload identity: the operator requests a token for this ServiceAccount and
    /// presents it as a federated credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<WorkloadIdentity>,

    /// The Microsoft identity platform authority (https, no user-info). Change it for a
    /// sovereign cloud or a local emulator.
    #[serde(default = "default_authority_host")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https://[^/?#@\s]+(/[^?#@\s]*)?$")
    )]
    pub authority_host: String,

    /// The Microsoft Graph endpoint (https, no user-info).
    #[serde(default = "default_graph_endpoint")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https://[^/?#@\s]+(/[^?#@\s]*)?$")
    )]
    pub graph_endpoint: String,

    /// A key of a Secret in this namespace holding extra trusted CA certificates (PEM) for the
    /// authority and Graph. It only adds trust; certificate checks are never turned off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_ref: Option<SecretKeyRef>,
}

fn default_authority_host() -> String {
    "https://login.microsoftonline.com".to_string()
}

fn default_graph_endpoint() -> String {
    "https://graph.microsoft.com".to_string()
}

/// The ServiceAccount whose token is exchanged for an Entra ID token.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIdentity {
    /// A ServiceAccount in this namespace. It must carry the annotation
    /// azure.workload.identity/client-id equal to clientID.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub service_account_name: String,
}

/// A SCIM 2.0 service provider (RFC 7643/7644).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Scim {
    /// The SCIM base URL, e.g. https://access-control.example.net/scim/v2 (no user-info).
    /// Cannot be changed after creation.
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https?://[^/?#@\s]+(/[^?#@\s]*)?$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("scim.endpoint cannot be changed after creation: the users this resource manages are tied to this service. Create a new DirectorySync; deleting this one never deletes destination users."))]
    pub endpoint: String,

    /// A key of a Secret in this namespace holding the SCIM bearer token.
    pub bearer_token_ref: SecretKeyRef,

    /// A key of a Secret in this namespace holding extra trusted CA certificates (PEM) for the
    /// SCIM endpoint. It only adds trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_ref: Option<SecretKeyRef>,

    /// Optional SCIM attribute path that carries the userPrincipalName (for example "nickName"
    /// or an enterprise-extension attribute). As a destination, the Entra ID
    /// userPrincipalName is also written there; as a source, its value is the
    /// userPrincipalName of the Entra ID user. Empty: not used.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 512))]
    pub user_principal_name_attribute: String,
}

/// A key of a Secret in the resource's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret (in the resource's namespace).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// What the operator observed and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DirectorySyncStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Reconciling and Stalled (kstatus conventions), with reasons such as
    /// PreviewReady, Synced, PartiallyFailed, DeletionThresholdExceeded, AwaitingApproval,
    /// InvalidCredentials, SecretNotFound, SourceUnavailable and DestinationUnavailable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The most recent run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunRecord>,

    /// The preview of the most recent run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<PreviewStatus>,

    /// How many destination users this resource manages (created or adopted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_users: Option<i64>,

    /// When the next run is due (Periodic), or when a failed run is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Time>,

    /// The dirsync.io/sync-now value the latest on-demand run answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_now: Option<String>,

    /// The metadata.generation whose spec was last applied (Once and Periodic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_generation: Option<i64>,

    /// The run currently claimed by an operator replica; set under a resourceVersion
    /// precondition so that two replicas never apply the same run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<RunClaim>,

    /// Approvals (spec.approval): the preview waiting for one, and the last one used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalStatus>,

    /// Recent runs, newest first (the sync log).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub history: Vec<RunRecord>,
}

/// One run: what it was, when, and how it ended.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// A unique id of the run.
    pub id: String,
    /// DryRun, Once or Periodic: the mode the run ran in.
    pub mode: SyncMode,
    /// Whether the run was allowed to write to the destination.
    pub applied: bool,
    /// Start of the run.
    pub start_time: Time,
    /// End of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// Outcome, one of the condition reasons: PreviewReady, Synced, PartiallyFailed,
    /// DeletionThresholdExceeded, NoSourceUsers, DomainNotFound, InvalidCredentials,
    /// SecretNotFound, SourceUnavailable, DestinationUnavailable, EndpointNotAllowed,
    /// AwaitingApproval, ApprovalConsumed, ApprovalExpired, PreviewChanged.
    pub result: String,
    /// Users added (or, for a preview, to add).
    pub adds: i64,
    /// Users updated (or to update).
    pub updates: i64,
    /// Users deleted or deactivated (or to delete or deactivate).
    pub deletes: i64,
    /// Conflicts reported (never applied).
    pub conflicts: i64,
    /// Unmanaged destination users in this domain's scope (never applied).
    pub unmanaged: i64,
    /// Writes that failed.
    #[serde(default)]
    pub failed: i64,
    /// The metadata.generation the run was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// What started the run: SpecChange, SyncNow, Slot or Retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Full (both sides read whole) or Incremental (only the users that changed); absent when
    /// the run failed before it planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Why a run was full: NoDeltaLink, DeltaLinkRejected, DeltaLinkAged, SpecChanged, DryRun,
    /// SyncNow, Requested, DestinationChanged, FullSyncInterval, PreviousRunIncomplete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_reason: Option<String>,
    /// A short, human-readable account of the outcome (never user data or secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
}

/// The kind of object the operator keeps previews, run reports and managed sets in
/// (`dirsync operator --store-in`).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum StoreKind {
    /// ConfigMaps (readable by the `view` role).
    #[default]
    ConfigMap,
    /// Secrets (not readable by the `view` role).
    Secret,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::ConfigMap => "ConfigMap",
            StoreKind::Secret => "Secret",
        }
    }

    /// The other kind (where objects written before a change of `--store-in` are).
    pub fn other(self) -> StoreKind {
        match self {
            StoreKind::ConfigMap => StoreKind::Secret,
            StoreKind::Secret => StoreKind::ConfigMap,
        }
    }
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the preview of the most recent run is and what it holds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreviewStatus {
    /// The objects holding it, the first one carrying summary.json: ConfigMaps, or Secrets
    /// when `kind` is Secret (the field keeps its first name for compatibility).
    #[serde(rename = "configMaps")]
    pub objects: Vec<String>,
    /// The kind of the objects in configMaps (absent in older statuses: ConfigMap).
    #[serde(default)]
    pub kind: StoreKind,
    /// Data rows in the CSV.
    pub rows: i64,
    /// SHA-256 (hex) of the CSV bytes.
    pub sha256: String,
    /// When it was made.
    pub generated_at: Time,
    /// When the operator removes it.
    pub expires_at: Time,
}

/// Approvals of this resource (docs/behaviour.md §9).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalStatus {
    /// The preview waiting for approval, pinned as <name>-pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingApproval>,
    /// The last approved preview ("sha256:<hex>") a run applied; an approval is used once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed: Option<String>,
    /// When it was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed_at: Option<Time>,
    /// The last pending preview ("sha256:<hex>") that expired before it was approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired: Option<String>,
}

/// A preview pinned until it is approved, replaced by a changed plan, or expired.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PendingApproval {
    /// "sha256:<hex>" of the pending preview CSV: the value spec.approvedPreview takes.
    pub sha256: String,
    /// The objects holding it (same layout as the preview), the first one carrying summary.json.
    pub objects: Vec<String>,
    /// Their kind.
    #[serde(default)]
    pub kind: StoreKind,
    /// Users it would add.
    pub adds: i64,
    /// Users it would update (deactivations included).
    pub updates: i64,
    /// Users it would delete or deactivate.
    pub deletes: i64,
    /// Whether the deletion guard cancelled the run that pinned it.
    #[serde(default)]
    pub guard_tripped: bool,
    /// The run that pinned it.
    pub run_id: String,
    /// When it was pinned.
    pub since: Time,
    /// When it expires unapproved (the preview TTL).
    pub expires_at: Time,
}

/// A replica's claim on the run it is executing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunClaim {
    /// Identity of the replica.
    pub holder: String,
    /// The run id.
    pub run_id: String,
    /// When the claim was taken; a claim older than the run deadline is stale.
    pub since: Time,
    /// How far a long apply has come ("applied 3000 of 100000 changes"), updated at each
    /// managed-set checkpoint: a first sync into Entra ID is paced by Graph's write limit and
    /// can take hours (docs/behaviour.md §6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
}

mod schema;
mod validate;

pub use schema::{directory_sync_crd, reflow_paragraphs, unknown_fields};
pub use validate::{Sides, SpecError, side_name};
