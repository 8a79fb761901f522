//! Rendering, no cluster: the chart's CRD is the generated one, `helm lint` / `helm template`
//! for the default and non-default values, and bad values refused with a clear message.

use super::*;

#[test]
fn chart_crd_is_the_generated_crd() {
    let generated =
        std::fs::read_to_string(root().join("crds/directorysyncs.dirsync.io.yaml")).unwrap();
    let copy =
        std::fs::read_to_string(chart().join("files/crds/directorysyncs.dirsync.io.yaml")).unwrap();
    assert!(
        generated == copy,
        "charts/dirsync/files/crds/directorysyncs.dirsync.io.yaml differs from crds/; run\n  \
         cp crds/directorysyncs.dirsync.io.yaml charts/dirsync/files/crds/"
    );
    // The rendered CRD is that CRD plus the keep policy.
    let home = tempfile::tempdir().unwrap();
    let d = template(home.path(), "dirsync-system", &[]);
    let crd = find(&d, "CustomResourceDefinition");
    assert_eq!(crd.len(), 1);
    assert_eq!(
        crd[0]["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let want: Value = serde_saphyr::from_str(&generated).unwrap();
    // Helm's fromYaml/toYaml turns 100.0 into 100: compare numbers as numbers.
    assert_eq!(
        numbers_as_f64(&crd[0]["spec"]),
        numbers_as_f64(&want["spec"])
    );
    let off = template(
        home.path(),
        "dirsync-system",
        &["--set", "crds.install=false"],
    );
    assert!(find(&off, "CustomResourceDefinition").is_empty());
}

fn numbers_as_f64(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_f64).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn helm_lint_and_template_pass_for_default_and_other_values() {
    let home = tempfile::tempdir().unwrap();
    let variants: &[(&str, &[&str])] = &[
        ("default", &[]),
        ("namespaces", &["--set", "watchNamespaces={team-a,team-b}"]),
        ("all namespaces", &["--set", "watchAllNamespaces=true"]),
        (
            "monitoring",
            &[
                "--set",
                "metrics.serviceMonitor.enabled=true",
                "--set",
                "metrics.prometheusRule.enabled=true",
            ],
        ),
        (
            "no leader election, no network policy, no workload identity",
            &[
                "--set",
                "leaderElection.enabled=false",
                "--set",
                "networkPolicy.enabled=false",
                "--set",
                "rbac.workloadIdentity=false",
            ],
        ),
        (
            "previews in Secrets",
            &["--set", "operator.storeIn=secrets"],
        ),
        (
            "image by digest, same port for metrics and health, operator flags",
            &[
                "--set",
                "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "--set",
                "health.port=8080",
                "--set",
                "operator.allowedAuthorityHosts={login.example.net}",
                "--set",
                "operator.deniedCIDRs={10.9.0.0/16}",
                "--set",
                "replicaCount=2",
            ],
        ),
    ];
    for (what, args) in variants {
        let o = helm(home.path())
            .args(["lint", "--strict", "--namespace", "dirsync-system"])
            .arg(chart())
            .args(*args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "helm lint ({what}) failed:\n{}",
            text(&o)
        );
        let d = template(home.path(), "dirsync-system", args);
        assert!(!find(&d, "Deployment").is_empty(), "{what}: no Deployment");
    }

    // Default: only the release namespace, a Role there plus the Lease Role.
    let d = template(home.path(), "dirsync-system", &[]);
    assert_eq!(
        kinds(&d),
        vec![
            (
                "CustomResourceDefinition".into(),
                "".into(),
                "directorysyncs.dirsync.io".into()
            ),
            (
                "Deployment".into(),
                "dirsync-system".into(),
                "dirsync".into()
            ),
            (
                "NetworkPolicy".into(),
                "dirsync-system".into(),
                "dirsync".into()
            ),
            ("Role".into(), "dirsync-system".into(), "dirsync".into()),
            (
                "Role".into(),
                "dirsync-system".into(),
                "dirsync-leader-election".into()
            ),
            (
                "RoleBinding".into(),
                "dirsync-system".into(),
                "dirsync".into()
            ),
            (
                "RoleBinding".into(),
                "dirsync-system".into(),
                "dirsync-leader-election".into()
            ),
            (
                "Service".into(),
                "dirsync-system".into(),
                "dirsync-metrics".into()
            ),
            (
                "ServiceAccount".into(),
                "dirsync-system".into(),
                "dirsync".into()
            ),
        ]
    );
    let a = args_of(&d);
    assert!(
        a.contains(&"--namespaces=dirsync-system".to_string()),
        "{a:?}"
    );
    assert!(a.contains(&"--store-in=configmaps".to_string()), "{a:?}");
    assert!(a.contains(&format!("--lease-name={LEASE}")), "{a:?}");
    let lease_role = find(&d, "Role")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "dirsync-leader-election")
        .unwrap();
    assert_eq!(lease_role["rules"][0]["resourceNames"], json!([LEASE]));
    assert!(find(&d, "ClusterRole").is_empty());
    // NetworkPolicy: egress keeps away from metadata addresses.
    let np = serde_json::to_string(find(&d, "NetworkPolicy")[0]).unwrap();
    for cidr in ["169.254.0.0/16", "fd00:ec2::254/128"] {
        assert!(np.contains(cidr), "{np}");
    }

    // A list: a Role + RoleBinding per listed namespace, none in the release namespace
    // except the Lease's.
    let d = template(
        home.path(),
        "dirsync-system",
        &["--set", "watchNamespaces={team-a,team-b}"],
    );
    let roles: Vec<_> = kinds(&d)
        .into_iter()
        .filter(|k| k.0 == "Role" || k.0 == "RoleBinding")
        .collect();
    assert_eq!(
        roles,
        vec![
            (
                "Role".into(),
                "dirsync-system".into(),
                "dirsync-leader-election".into()
            ),
            ("Role".into(), "team-a".into(), "dirsync".into()),
            ("Role".into(), "team-b".into(), "dirsync".into()),
            (
                "RoleBinding".into(),
                "dirsync-system".into(),
                "dirsync-leader-election".into()
            ),
            ("RoleBinding".into(), "team-a".into(), "dirsync".into()),
            ("RoleBinding".into(), "team-b".into(), "dirsync".into()),
        ]
    );
    assert!(args_of(&d).contains(&"--namespaces=team-a,team-b".to_string()));

    // All namespaces: a ClusterRole, no --namespaces flag.
    let d = template(
        home.path(),
        "dirsync-system",
        &["--set", "watchAllNamespaces=true"],
    );
    assert_eq!(find(&d, "ClusterRole").len(), 1);
    assert_eq!(find(&d, "ClusterRoleBinding").len(), 1);
    assert!(!args_of(&d).iter().any(|a| a.starts_with("--namespaces")));

    // Workload identity rules only when asked (default on), only in the watched namespaces.
    let rules = |d: &[Value]| serde_json::to_string(&find(d, "Role")).unwrap();
    assert!(rules(&template(home.path(), "x", &[])).contains("serviceaccounts/token"));
    assert!(
        !rules(&template(
            home.path(),
            "x",
            &["--set", "rbac.workloadIdentity=false"]
        ))
        .contains("serviceaccounts")
    );

    // Previews in Secrets: the flag, Secret writes, and only get/list/delete left on ConfigMaps
    // (to move or remove what a ConfigMap setting left). The default keeps Secrets read-only.
    let verbs = |d: &[Value], resource: &str| -> Vec<String> {
        let role = find(d, "Role")
            .into_iter()
            .find(|r| r["metadata"]["name"] == "dirsync")
            .expect("Role");
        let rule = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resources"] == json!([resource]))
            .unwrap_or_else(|| panic!("no rule for {resource}"));
        rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let d = template(
        home.path(),
        "dirsync-system",
        &["--set", "operator.storeIn=secrets"],
    );
    assert!(args_of(&d).contains(&"--store-in=secrets".to_string()));
    assert_eq!(
        verbs(&d, "secrets"),
        ["get", "list", "watch", "create", "patch", "delete"]
    );
    assert_eq!(verbs(&d, "configmaps"), ["get", "list", "delete"]);
    let d = template(home.path(), "dirsync-system", &[]);
    assert_eq!(verbs(&d, "secrets"), ["get", "list", "watch"]);
    assert_eq!(
        verbs(&d, "configmaps"),
        ["get", "list", "watch", "create", "patch", "delete"]
    );
    let d = template(
        home.path(),
        "x",
        &[
            "--set",
            "operator.storeIn=secrets",
            "--set",
            "watchAllNamespaces=true",
        ],
    );
    let cluster_rules = serde_json::to_string(&find(&d, "ClusterRole")[0]["rules"]).unwrap();
    assert!(
        cluster_rules.contains(
            r#""resources":["secrets"],"verbs":["get","list","watch","create","patch","delete"]"#
        ),
        "{cluster_rules}"
    );

    // Monitoring: the alerts use metric names the operator really exports.
    let d = template(
        home.path(),
        "dirsync-system",
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.prometheusRule.enabled=true",
        ],
    );
    assert_eq!(find(&d, "ServiceMonitor").len(), 1);
    let rule = serde_json::to_string(find(&d, "PrometheusRule")[0]).unwrap();
    let exported = exported_metrics();
    let mut used = BTreeSet::new();
    for (i, _) in rule.match_indices("dirsync_") {
        let name: String = rule[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        used.insert(name);
    }
    assert!(used.len() >= 3, "{used:?}");
    for m in &used {
        assert!(
            exported.contains(m),
            "PrometheusRule uses {m}, which src/controller/metrics.rs does not export ({exported:?})"
        );
    }
    for alert in [
        "DirsyncRunFailed",
        "DirsyncDeletionGuardTripped",
        "DirsyncApprovalWaiting",
    ] {
        assert!(rule.contains(alert), "{rule}");
    }
    assert!(
        rule.contains("dirsync_approvals_pending") && rule.contains("\"for\":\"4h\""),
        "the approval alert waits the chart's default: {rule}"
    );
    assert!(rule.contains("DeletionThresholdExceeded"));

    // Without leader election: no Lease Role, --leader-election=false.
    let d = template(home.path(), "x", &["--set", "leaderElection.enabled=false"]);
    assert!(args_of(&d).contains(&"--leader-election=false".to_string()));
    assert!(!kinds(&d).iter().any(|k| k.2.ends_with("leader-election")));
}

/// `dirsync_<name>` as Prometheus exposes them: counters get `_total`, histograms `_bucket`,
/// `_sum`, `_count`, read from the registrations in src/controller/metrics.rs.
fn exported_metrics() -> BTreeSet<String> {
    let src = std::fs::read_to_string(root().join("src/controller/metrics.rs")).unwrap();
    let mut out = BTreeSet::new();
    let mut rest = src.as_str();
    while let Some(i) = rest.find(".register(") {
        rest = &rest[i + ".register(".len()..];
        let Some(q) = rest.find('"') else { break };
        let after = &rest[q + 1..];
        let name = &after[..after.find('"').unwrap()];
        let base = format!("dirsync_{name}");
        for suffix in ["", "_total", "_bucket", "_sum", "_count"] {
            out.insert(format!("{base}{suffix}"));
        }
    }
    out
}

#[test]
fn bad_values_are_refused_with_a_clear_message() {
    let home = tempfile::tempdir().unwrap();
    // (values, message, whether `helm lint` refuses it too: lint reports a template's `fail`
    // only as [INFO], so the rules across values fail at template/install time only).
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "imageTag=v1"],
            "additional properties 'imageTag' not allowed",
        ),
        (
            &["--set", "operator.previewTTL=tomorrow"],
            "/operator/previewTTL",
        ),
        (&["--set", "watchNamespaces={Team_A}"], "/watchNamespaces/0"),
        (&["--set", "replicaCount=-1"], "/replicaCount"),
        (&["--set", "operator.logFormat=xml"], "/operator/logFormat"),
        (&["--set", "operator.storeIn=Secret"], "/operator/storeIn"),
        (
            &["--set", "networkPolicy.deniedEgressCIDRs={metadata}"],
            "/networkPolicy/deniedEgressCIDRs/0",
        ),
        (&["--set", "image.digest=latest"], "/image/digest"),
        (&["--set", "watchAllNamespaces=yes"], "/watchAllNamespaces"),
        (
            &["--set", "operator.extraArgs={rm -rf}"],
            "/operator/extraArgs/0",
        ),
        (
            &[
                "--set",
                "replicaCount=2",
                "--set",
                "leaderElection.enabled=false",
            ],
            "replicaCount > 1 needs leaderElection.enabled=true",
        ),
        (
            &[
                "--set",
                "watchAllNamespaces=true",
                "--set",
                "watchNamespaces={a}",
            ],
            "set either watchNamespaces (a list) or watchAllNamespaces=true, not both",
        ),
        (
            &["--set", "serviceAccount.create=false"],
            "serviceAccount.name is required when serviceAccount.create is false",
        ),
    ];
    for (args, want) in cases {
        let schema = want.starts_with('/') || want.contains("additional properties");
        let verbs: &[&str] = if schema {
            &["template", "lint"]
        } else {
            &["template"]
        };
        for verb in verbs {
            let o = if *verb == "lint" {
                helm(home.path())
                    .arg("lint")
                    .arg(chart())
                    .args(*args)
                    .output()
                    .unwrap()
            } else {
                helm(home.path())
                    .args(["template", RELEASE])
                    .arg(chart())
                    .args(*args)
                    .output()
                    .unwrap()
            };
            let t = text(&o);
            assert!(!o.status.success(), "helm {verb} {args:?} was accepted");
            assert!(
                t.contains(want),
                "helm {verb} {args:?}: message does not say {want:?}:\n{t}"
            );
        }
    }
}
