//! The rendered Deployment passes Pod Security `restricted` on the real API server.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_deployment_passes_pod_security_restricted() {
    let cp = control_plane().await;
    let ns = cp.namespace("chart-pss").await;
    let patch = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/warn-version": "latest",
    }}});
    Api::<Namespace>::all(cp.client())
        .patch(ns.name(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let rendered = template(home.path(), ns.name(), &[]);
    let dep = find(&rendered, "Deployment")[0].clone();
    let dir = tempfile::tempdir().unwrap();

    let apply = |obj: &Value| -> Output {
        let f = dir.path().join("obj.json");
        std::fs::write(&f, obj.to_string()).unwrap();
        cp.kubectl()
            .args(["apply", "--dry-run=server", "-n", ns.name(), "-f"])
            .arg(&f)
            .output()
            .unwrap()
    };
    // The Deployment: accepted, with no Pod Security warning.
    let o = apply(&dep);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("PodSecurity"), "{}", text(&o));
    // Its pod: admitted under enforce=restricted (Deployments only get warnings; Pods are
    // what the admission controller refuses).
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "dirsync-pss", "labels": dep["spec"]["template"]["metadata"]["labels"]},
        "spec": dep["spec"]["template"]["spec"]});
    let o = apply(&pod);
    assert!(
        o.status.success(),
        "restricted refused the chart's pod:\n{}",
        text(&o)
    );
    // Control: the same pod without the container security context is refused, so the
    // namespace really enforces `restricted`.
    let mut weak = pod.clone();
    weak["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    weak["spec"]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    let o = apply(&weak);
    assert!(
        !o.status.success() && text(&o).contains("violates PodSecurity"),
        "{}",
        text(&o)
    );

    // The whole default chart (CRD included) passes a server-side dry run there too.
    let all = run_ok(
        helm(home.path())
            .args(["template", RELEASE])
            .arg(chart())
            .args(["--namespace", ns.name()]),
    );
    let f = dir.path().join("all.yaml");
    std::fs::write(&f, all).unwrap();
    let o = cp
        .kubectl()
        .args(["apply", "--dry-run=server", "-n", ns.name(), "-f"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}
