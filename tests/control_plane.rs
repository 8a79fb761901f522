//! The DirectorySync resource against a real kube-apiserver (built by tools/setup.sh; see
//! testenv/README.md): the CRD is applied and Established, objects round-trip, status goes
//! through the status subresource, watches see both, and the API server itself rejects bad
//! input with its own messages (schema ranges, CEL immutability rules).

use std::time::Duration;

use dirsync::crd::{DirectorySync, DirectorySyncSpec, DirectorySyncStatus, IMMUTABLE_MESSAGE};
use dirsync_testenv::{ControlPlane, TestNamespace};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{CustomResourceExt, Resource, ResourceExt};
use serde_json::json;

const CRD_NAME: &str = "directorysyncs.dirsync.io";

/// The shared control plane with the project's CRD (as the Rust types generate it, which the
/// committed crds/ file must equal) applied and Established.
async fn control_plane() -> &'static ControlPlane {
    let cp = ControlPlane::shared();
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&dirsync::cli::crd_yaml().expect("CRD serialises"))
            .expect("CRD parses back");
    dirsync_testenv::apply_crds(&cp.client(), &[crd], Duration::from_secs(30))
        .await
        .expect("the DirectorySync CRD is applied and Established");
    cp
}

fn spec_json(domain: &str) -> serde_json::Value {
    json!({
        "domain": domain,
        "upnMode": "Enabled",
        "maxAllowedDeletions": 65,
        "mode": "DryRun",
        "source": {"entraID": {
            "tenantID": "2b9d1a6e-7c55-4a6e-9d62-0c1f8e2b5a10",
            "clientID": "7f3c9a1e-2d44-4b8b-a7f0-3e6d5c4b2a19",
            "clientSecretRef": {"name": "entra-app", "key": "client-secret"},
        }},
        "destination": {"scim": {
            "endpoint": "https://access-control.example.net/scim/v2",
            "bearerTokenRef": {"name": "access-control-scim", "key": "token"},
        }},
    })
}

fn directory_sync(name: &str, spec: serde_json::Value) -> DirectorySync {
    let spec: DirectorySyncSpec = serde_json::from_value(spec).expect("a valid spec");
    DirectorySync::new(name, spec)
}

/// The API server's own rejection: status code, reason and message.
/// `kubectl apply --server-side` of a DirectorySync `name` with `spec` in `ns`: whether it was
/// accepted, and kubectl's stderr (what a user, or Argo CD, sees).
fn kubectl_apply(
    cp: &ControlPlane,
    ns: &TestNamespace,
    name: &str,
    spec: serde_json::Value,
) -> (bool, String) {
    let manifest = json!({"apiVersion": "dirsync.io/v1alpha1", "kind": "DirectorySync",
        "metadata": {"name": name, "namespace": ns.name()}, "spec": spec});
    let file = cp.dir().join(format!("{}-{name}.json", ns.name()));
    std::fs::write(&file, manifest.to_string()).unwrap();
    let out = cp
        .kubectl()
        .args(["apply", "--server-side", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn api_error(err: kube::Error) -> (u16, String, String) {
    match err {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an error from the API server, got {other:?}"),
    }
}

#[tokio::test]
async fn crd_is_established_with_its_names_and_printer_columns() {
    let cp = control_plane().await;
    let crds: Api<CustomResourceDefinition> = Api::all(cp.client());
    let crd = crds.get(CRD_NAME).await.unwrap();
    let conditions = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for ty in ["Established", "NamesAccepted"] {
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == ty && c.status == "True"),
            "{ty} condition: {conditions:?}"
        );
    }
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["dsync".to_string()][..])
    );
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(
        crd.spec.names.plural,
        DirectorySync::crd().spec.names.plural
    );
}

#[tokio::test]
async fn create_read_patch_status_and_watch_a_directory_sync() {
    let cp = control_plane().await;
    let ns: TestNamespace = cp.namespace("dsync-crud").await;
    let api: Api<DirectorySync> = ns.api();

    // Watch from "now" so the stream sees our create and our status patch.
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = api
        .watch(&WatchParams::default().timeout(60), &rv)
        .await
        .unwrap()
        .boxed();

    let created = api
        .create(
            &PostParams::default(),
            &directory_sync("example-com", spec_json("example.com")),
        )
        .await
        .expect("the API server accepts a valid DirectorySync");
    assert_eq!(created.metadata.generation, Some(1));

    let back = api.get("example-com").await.unwrap();
    assert_eq!(back.spec, created.spec);
    assert_eq!(back.spec.domain, "example.com");
    assert_eq!(back.spec.max_allowed_deletions, 65);
    assert_eq!(back.spec.interval, "1h");
    assert_eq!(back.status, None);
    assert_eq!(back.namespace().as_deref(), Some(ns.name()));

    // Status goes through the status subresource and does not bump the generation.
    let status = json!({
        "apiVersion": "dirsync.io/v1alpha1",
        "kind": "DirectorySync",
        "status": {
            "observedGeneration": 1,
            "managedUsers": 3,
            "lastSyncNow": "first",
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "PreviewReady",
                "message": "preview of 3 users is ready", "lastTransitionTime": "2026-11-23T09:00:00Z",
                "observedGeneration": 1,
            }],
        },
    });
    let patched = api
        .patch_status(
            "example-com",
            &PatchParams::apply("dirsync-test").force(),
            &Patch::Apply(&status),
        )
        .await
        .expect("status patch through /status");
    let st: DirectorySyncStatus = patched.status.clone().expect("status is set");
    assert_eq!(st.managed_users, Some(3));
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(st.conditions[0].reason, "PreviewReady");
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "a status write does not bump the generation"
    );

    // ...while status sent to the main resource is ignored by the server.
    let ignored = api
        .patch(
            "example-com",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"managedUsers": 99}})),
        )
        .await
        .unwrap();
    assert_eq!(ignored.status.unwrap().managed_users, Some(3));

    // A spec change bumps the generation (DryRun -> Once is allowed).
    let changed = api
        .patch(
            "example-com",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": "Once"}})),
        )
        .await
        .unwrap();
    assert_eq!(changed.metadata.generation, Some(2));

    // The watch saw the create and the status update.
    let mut saw_added = false;
    let mut saw_status = false;
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = events.try_next().await.unwrap() {
            match ev {
                WatchEvent::Added(o) if o.name_any() == "example-com" => saw_added = true,
                WatchEvent::Modified(o)
                    if o.status.as_ref().and_then(|s| s.managed_users) == Some(3) =>
                {
                    saw_status = true
                }
                WatchEvent::Error(e) => panic!("watch error: {e:?}"),
                _ => {}
            }
            if saw_added && saw_status {
                return;
            }
        }
    })
    .await;
    assert!(
        seen.is_ok() && saw_added && saw_status,
        "watch events: added={saw_added} status={saw_status}"
    );
}

#[tokio::test]
async fn api_server_rejects_out_of_range_max_allowed_deletions() {
    let cp = control_plane().await;
    let ns = cp.namespace("dsync-invalid").await;
    let api: Api<DirectorySync> = ns.api();

    for (value, words) in [
        (150, "less than or equal to 100"),
        (-1, "greater than or equal to 0"),
    ] {
        let mut spec = spec_json("example.com");
        spec["maxAllowedDeletions"] = json!(value);
        let err = api
            .create(
                &PostParams::default(),
                &directory_sync("out-of-range", spec),
            )
            .await
            .expect_err("the API server must reject maxAllowedDeletions={value}");
        let (code, reason, message) = api_error(err);
        assert_eq!((code, reason.as_str()), (422, "Invalid"), "{message}");
        assert!(
            message.contains("spec.maxAllowedDeletions") && message.contains(words),
            "{message}"
        );
    }
    // Nothing was stored.
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // kubectl (and so Argo CD) gets the same answer from the server.
    let mut spec = spec_json("example.com");
    spec["maxAllowedDeletions"] = json!(101);
    let (applied, stderr) = kubectl_apply(cp, &ns, "via-kubectl", spec);
    assert!(!applied, "kubectl apply accepted maxAllowedDeletions=101");
    assert!(
        stderr.contains("spec.maxAllowedDeletions") && stderr.contains("less than or equal to 100"),
        "{stderr}"
    );
}

#[tokio::test]
async fn cel_rules_reject_changing_upn_mode_domain_tenant_or_endpoint() {
    let cp = control_plane().await;
    let ns = cp.namespace("dsync-cel").await;
    let api: Api<DirectorySync> = ns.api();
    api.create(
        &PostParams::default(),
        &directory_sync("contoso", spec_json("contoso.example")),
    )
    .await
    .unwrap();

    for change in [
        json!({"upnMode": "Disabled"}),
        json!({"domain": "fabrikam.example"}),
    ] {
        let err = api
            .patch(
                "contoso",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": change})),
            )
            .await
            .expect_err("the CEL rule must reject {change}");
        let (code, reason, message) = api_error(err);
        assert_eq!((code, reason.as_str()), (422, "Invalid"), "{message}");
        assert!(message.contains(IMMUTABLE_MESSAGE), "{change}: {message}");
    }
    for (change, field) in [
        (
            json!({"source": {"entraID": {"tenantID": "contoso.onmicrosoft.com"}}}),
            "spec.source.entraID.tenantID",
        ),
        (
            json!({"destination": {"scim": {"endpoint": "https://other.example.net/scim/v2"}}}),
            "spec.destination.scim.endpoint",
        ),
    ] {
        let err = api
            .patch(
                "contoso",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": change})),
            )
            .await
            .expect_err("the CEL rule must reject {change}");
        let (code, _, message) = api_error(err);
        assert_eq!(code, 422, "{message}");
        // The API server names the path; the message names the block (either side holds it).
        let block_field = field.trim_start_matches("spec.source.");
        let block_field = block_field.trim_start_matches("spec.destination.");
        assert!(
            message.contains(field)
                && message.contains(&format!("{block_field} cannot be changed after creation")),
            "{message}"
        );
    }
    // Other fields may change.
    let ok = api
        .patch(
            "contoso",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"maxAllowedDeletions": 10, "mode": "Periodic", "interval": "30m"}}),
            ),
        )
        .await
        .expect("changing the guard, the mode and the interval is allowed");
    assert_eq!(ok.spec.max_allowed_deletions, 10);
}

/// A reverse resource: SCIM as the source, Entra ID as the destination (docs/behaviour.md §6).
fn reverse_spec_json(domain: &str) -> serde_json::Value {
    let forward = spec_json(domain);
    let mut spec = forward.clone();
    spec["upnMode"] = json!("Disabled");
    spec["source"] = json!({"scim": forward["destination"]["scim"]});
    spec["destination"] = json!({"entraID": forward["source"]["entraID"]});
    spec
}

/// The API server refuses every shape of `source` / `destination` but one kind per side and
/// different kinds, each with the message that names the problem (and only that one), and
/// accepts the reverse direction.
#[tokio::test]
async fn cel_rules_require_one_kind_per_side_and_different_kinds() {
    use dirsync::crd::{DESTINATION_KIND_MESSAGE, DIFFERENT_KINDS_MESSAGE, SOURCE_KIND_MESSAGE};
    let cp = control_plane().await;
    let ns = cp.namespace("dsync-sides").await;
    let api: Api<DirectorySync> = ns.api();
    let forward = spec_json("example.com");
    let entra = json!({"entraID": forward["source"]["entraID"]});
    let scim = json!({"scim": forward["destination"]["scim"]});
    let both =
        json!({"entraID": forward["source"]["entraID"], "scim": forward["destination"]["scim"]});
    let neither = json!({});
    let messages = [
        SOURCE_KIND_MESSAGE,
        DESTINATION_KIND_MESSAGE,
        DIFFERENT_KINDS_MESSAGE,
    ];
    for (what, source, destination, field, want) in [
        (
            "entraID on both sides",
            &entra,
            &entra,
            "spec",
            DIFFERENT_KINDS_MESSAGE,
        ),
        (
            "scim on both sides",
            &scim,
            &scim,
            "spec",
            DIFFERENT_KINDS_MESSAGE,
        ),
        (
            "a source with both",
            &both,
            &scim,
            "spec.source",
            SOURCE_KIND_MESSAGE,
        ),
        (
            "a source with neither",
            &neither,
            &scim,
            "spec.source",
            SOURCE_KIND_MESSAGE,
        ),
        (
            "a destination with both",
            &entra,
            &both,
            "spec.destination",
            DESTINATION_KIND_MESSAGE,
        ),
        (
            "a destination with neither",
            &scim,
            &neither,
            "spec.destination",
            DESTINATION_KIND_MESSAGE,
        ),
    ] {
        let mut spec = spec_json("example.com");
        spec["source"] = source.clone();
        spec["destination"] = destination.clone();
        let err = api
            .create(&PostParams::default(), &directory_sync("sides", spec))
            .await
            .expect_err(what);
        let (code, reason, message) = api_error(err);
        assert_eq!(
            (code, reason.as_str()),
            (422, "Invalid"),
            "{what}: {message}"
        );
        assert!(
            message.contains(&format!("{field}: Invalid value")) && message.contains(want),
            "{what}: {message}"
        );
        for other in messages.iter().filter(|m| **m != want) {
            assert!(!message.contains(other), "{what}: {message}");
        }
    }
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing was stored"
    );

    // kubectl (and so Argo CD) gets the same answer.
    let mut spec = spec_json("example.com");
    spec["destination"] = entra.clone();
    let (applied, stderr) = kubectl_apply(cp, &ns, "same-kind", spec);
    assert!(!applied, "kubectl apply accepted entraID on both sides");
    assert!(stderr.contains(DIFFERENT_KINDS_MESSAGE), "{stderr}");

    // The reverse direction is a valid resource, read back as such.
    let created = api
        .create(
            &PostParams::default(),
            &directory_sync("reverse", reverse_spec_json("example.com")),
        )
        .await
        .expect("the API server accepts a reverse DirectorySync");
    assert_eq!(
        created.spec.direction(),
        Ok(dirsync::crd::Direction::ScimToEntraId)
    );
    assert!(created.spec.source.entra_id.is_none() && created.spec.destination.scim.is_none());
    assert_eq!(
        created.spec.entra_id().unwrap().authority_host,
        "https://login.microsoftonline.com",
        "the destination's Entra ID block takes its defaults"
    );
}

/// Swapping the sides of an existing resource is refused with the direction message, either
/// way round; the reverse resource's tenant and SCIM endpoint are fixed as the forward one's,
/// with messages at their own paths.
#[tokio::test]
async fn cel_rules_keep_the_direction_tenant_and_endpoint_of_either_direction() {
    use dirsync::crd::DIRECTION_IMMUTABLE_MESSAGE;
    let cp = control_plane().await;
    let ns = cp.namespace("dsync-direction").await;
    let api: Api<DirectorySync> = ns.api();
    let forward = spec_json("example.com");
    let reverse = reverse_spec_json("example.com");
    for (name, spec) in [("forward", &forward), ("reverse", &reverse)] {
        api.create(&PostParams::default(), &directory_sync(name, spec.clone()))
            .await
            .unwrap();
    }
    // A merge patch: `null` removes the block the other side held.
    let to_reverse = json!({"spec": {
        "source": {"entraID": null, "scim": forward["destination"]["scim"]},
        "destination": {"scim": null, "entraID": forward["source"]["entraID"]},
    }});
    let to_forward = json!({"spec": {
        "source": {"scim": null, "entraID": forward["source"]["entraID"]},
        "destination": {"entraID": null, "scim": forward["destination"]["scim"]},
    }});
    for (name, patch) in [("forward", to_reverse), ("reverse", to_forward)] {
        let err = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect_err("the direction cannot change");
        let (code, reason, message) = api_error(err);
        assert_eq!(
            (code, reason.as_str()),
            (422, "Invalid"),
            "{name}: {message}"
        );
        assert!(
            message.contains(DIRECTION_IMMUTABLE_MESSAGE),
            "{name}: {message}"
        );
    }
    for name in ["forward", "reverse"] {
        let kept = api.get(name).await.unwrap();
        assert_eq!(
            kept.spec.source.entra_id.is_some(),
            name == "forward",
            "{name} kept its direction"
        );
    }

    for (change, field, block_field) in [
        (
            json!({"destination": {"entraID": {"tenantID": "contoso.onmicrosoft.com"}}}),
            "spec.destination.entraID.tenantID",
            "entraID.tenantID",
        ),
        (
            json!({"source": {"scim": {"endpoint": "https://other.example.net/scim/v2"}}}),
            "spec.source.scim.endpoint",
            "scim.endpoint",
        ),
    ] {
        let err = api
            .patch(
                "reverse",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": change})),
            )
            .await
            .expect_err("the CEL rule must reject {change}");
        let (code, _, message) = api_error(err);
        assert_eq!(code, 422, "{message}");
        assert!(
            message.contains(field)
                && message.contains(&format!("{block_field} cannot be changed after creation")),
            "{message}"
        );
        assert!(!message.contains(DIRECTION_IMMUTABLE_MESSAGE), "{message}");
    }
    // Other fields of a reverse resource may change.
    let ok = api
        .patch(
            "reverse",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": "Once", "destination": {"entraID": {"graphEndpoint": "https://graph.microsoft.us"}}}})),
        )
        .await
        .expect("changing the mode and the Graph endpoint is allowed");
    assert_eq!(
        ok.spec.entra_id().unwrap().graph_endpoint,
        "https://graph.microsoft.us"
    );
}

#[tokio::test]
async fn kubectl_talks_to_the_real_server_version_and_explains_the_resource() {
    let cp = control_plane().await;
    let out = cp
        .kubectl()
        .args(["version", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.37.2");
    assert_eq!(cp.version(), "v1.37.2");

    let ns = cp.namespace("dsync-kubectl").await;
    let api: Api<DirectorySync> = ns.api();
    api.create(
        &PostParams::default(),
        &directory_sync("example-com", spec_json("example.com")),
    )
    .await
    .unwrap();
    let out = cp
        .kubectl()
        .args(["get", "dsync", "-n", ns.name()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("DOMAIN") && table.contains("example.com") && table.contains("DryRun"),
        "{table}"
    );

    let out = cp
        .kubectl()
        .args(["explain", "directorysync.spec.upnMode"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("userPrincipalName"), "{text}");
}

#[tokio::test]
async fn owned_configmaps_are_garbage_collected_with_their_directory_sync() {
    let cp = control_plane().await;
    if !cp.has_controller_manager() {
        eprintln!("skipped: no kube-controller-manager (DIRSYNC_TESTENV_CONTROLLER_MANAGER=0)");
        return;
    }
    let ns = cp.namespace("dsync-gc").await;
    let api: Api<DirectorySync> = ns.api();
    let ds = api
        .create(
            &PostParams::default(),
            &directory_sync("example-com", spec_json("example.com")),
        )
        .await
        .unwrap();
    let owner = ds.controller_owner_ref(&()).unwrap();
    let cms: Api<ConfigMap> = ns.api();
    let mut cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "example-com-preview"},
        "data": {"summary.json": "{}"},
    }))
    .unwrap();
    cm.metadata.owner_references = Some(vec![owner]);
    cms.create(&PostParams::default(), &cm).await.unwrap();

    api.delete("example-com", &DeleteParams::background())
        .await
        .unwrap();
    let gone = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if cms.get_opt("example-com-preview").await.unwrap().is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "the owned preview ConfigMap was not garbage-collected within 30 s"
    );
}
