//! Every file in `examples/` is accepted by the API server (schema + CEL) and by the typed spec
//! checks.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_are_valid() {
    let cp = control_plane().await;
    let ns = cp.namespace("chart-examples").await;
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "dry-run.yaml",
        "once.yaml",
        "periodic.yaml",
        "two-domains-one-destination.yaml",
        "secrets.yaml",
        "workload-identity.yaml",
        "reverse.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "examples/{want} missing ({names:?})"
        );
    }
    let mut dsyncs = 0;
    for f in &files {
        // The API server: schema, CEL rules, Secrets, ServiceAccounts.
        let o = cp
            .kubectl()
            .args(["apply", "--dry-run=server", "-n", ns.name(), "-f"])
            .arg(f)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}: {}", f.display(), text(&o));
        let text = std::fs::read_to_string(f).unwrap();
        for doc in docs(&text) {
            assert!(
                doc["metadata"]["namespace"].is_null(),
                "{}: examples carry no namespace",
                f.display()
            );
            match doc["kind"].as_str() {
                Some("DirectorySync") => {
                    // The operator's own reading of it: the typed resource and the spec checks
                    // that `dirsync plan -f` also applies.
                    let r: dirsync::crd::DirectorySync = serde_json::from_value(doc.clone())
                        .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                    r.spec
                        .validate()
                        .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                    assert!(r.spec.max_allowed_deletions <= 100);
                    let reverse = f.ends_with("reverse.yaml");
                    assert_eq!(
                        r.spec.direction(),
                        Ok(if reverse {
                            dirsync::crd::Direction::ScimToEntraId
                        } else {
                            dirsync::crd::Direction::EntraIdToScim
                        }),
                        "{}",
                        f.display()
                    );
                    dsyncs += 1;
                }
                Some("Secret") => {
                    // Placeholders only, never anything that looks like a real credential.
                    for (k, v) in doc["stringData"].as_object().expect("stringData").iter() {
                        assert!(
                            v.as_str().unwrap().contains("REPLACE-WITH"),
                            "{}: {k} is not a placeholder",
                            f.display()
                        );
                    }
                }
                Some("ServiceAccount") => {
                    assert!(
                        doc["metadata"]["annotations"]["azure.workload.identity/client-id"]
                            .is_string()
                    );
                }
                other => panic!("{}: unexpected kind {other:?}", f.display()),
            }
        }
    }
    assert_eq!(dsyncs, 7);
}
