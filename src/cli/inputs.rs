//! What `plan` and `apply` read: the resource file (the same YAML a user applies to a cluster)
//! and Kubernetes Secret manifests holding the credentials it refers to.

use std::collections::HashMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use secrecy::SecretString;

use crate::crd::{DirectorySync, SecretKeyRef};

/// A problem with the files the user gave, worded for one line on stderr.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

fn read(path: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(path)
        .map_err(|e| InputError(format!("{}: cannot read: {e}", path.display())))
}

/// Reads and checks a `DirectorySync` manifest.
pub fn load_resource(path: &Path) -> Result<DirectorySync, InputError> {
    let text = read(path)?;
    let value: serde_json::Value = serde_saphyr::from_str(&text).map_err(|e| {
        InputError(format!(
            "{}: not valid YAML: {}",
            path.display(),
            first_line(&e.to_string())
        ))
    })?;
    let (api_version, kind) = (
        value["apiVersion"].as_str().unwrap_or(""),
        value["kind"].as_str().unwrap_or(""),
    );
    if kind != "DirectorySync" || api_version != "dirsync.io/v1alpha1" {
        return Err(InputError(format!(
            "{}: expected a DirectorySync (apiVersion dirsync.io/v1alpha1), found kind {kind:?} apiVersion {api_version:?}",
            path.display()
        )));
    }
    // Strict, as kubectl is by default: a misspelt field is an error, never silently dropped.
    if let Some(first) = crate::crd::unknown_fields(&value).first() {
        return Err(InputError(format!("{}: {first}", path.display())));
    }
    let resource: DirectorySync = serde_json::from_value(value)
        .map_err(|e| InputError(format!("{}: {e}", path.display())))?;
    resource
        .spec
        .validate()
        .map_err(|e| InputError(format!("{}: {e}", path.display())))?;
    Ok(resource)
}

/// Secret values by Secret name and key, from one or more Secret manifests.
#[derive(Default)]
pub struct Secrets {
    values: HashMap<(String, String), SecretString>,
    file: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("file", &self.file)
            .field("keys", &self.values.len())
            .finish()
    }
}

impl Secrets {
    /// Reads the Secret manifests in `path` (several documents allowed, `data` base64 and
    /// `stringData`, `stringData` winning as in Kubernetes). Secrets in another namespace than
    /// `namespace` are ignored, as the operator would never read them.
    pub fn load(path: &Path, namespace: &str) -> Result<Self, InputError> {
        let text = read(path)?;
        // Never echo the parser's message: it may quote the offending line, i.e. a secret.
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" at line {}", l.line()))
                .unwrap_or_default();
            InputError(format!("{}: not valid YAML{at}", path.display()))
        })?;
        let mut secrets = Secrets {
            values: HashMap::new(),
            file: path.display().to_string(),
        };
        for (i, doc) in docs.into_iter().enumerate() {
            if doc.is_null() {
                continue;
            }
            if doc["kind"].as_str() != Some("Secret") {
                return Err(InputError(format!(
                    "{}: document {} is not a Secret",
                    path.display(),
                    i + 1
                )));
            }
            if doc["metadata"]["namespace"]
                .as_str()
                .is_some_and(|ns| ns != namespace)
            {
                continue;
            }
            let secret: Secret = serde_json::from_value(doc).map_err(|_| {
                InputError(format!(
                    "{}: document {} is not a valid Secret (check data is base64)",
                    path.display(),
                    i + 1
                ))
            })?;
            let Some(name) = secret.metadata.name.clone() else {
                return Err(InputError(format!(
                    "{}: document {} has no metadata.name",
                    path.display(),
                    i + 1
                )));
            };
            for (key, bytes) in secret.data.unwrap_or_default() {
                let value = String::from_utf8(bytes.0).map_err(|_| {
                    InputError(format!(
                        "{}: Secret {name} key {key} is not UTF-8",
                        path.display()
                    ))
                })?;
                secrets
                    .values
                    .insert((name.clone(), key), SecretString::from(value));
            }
            for (key, value) in secret.string_data.unwrap_or_default() {
                secrets
                    .values
                    .insert((name.clone(), key), SecretString::from(value));
            }
        }
        Ok(secrets)
    }

    /// The value `r` refers to, or the error the operator reports as `SecretNotFound`.
    pub fn get(&self, r: &SecretKeyRef) -> Result<SecretString, InputError> {
        self.values
            .get(&(r.name.clone(), r.key.clone()))
            .cloned()
            .ok_or_else(|| {
                InputError(format!(
                    "{}: no Secret {:?} with key {:?}",
                    self.file, r.name, r.key
                ))
            })
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn secrets_read_data_and_string_data_and_skip_other_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "s.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: a, namespace: identity}\ndata: {k: c2VjcmV0}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {name: b}\nstringData: {t: tok}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {name: c, namespace: other}\nstringData: {t: other-value}\n",
        );
        let s = Secrets::load(&p, "identity").unwrap();
        let r = |n: &str, k: &str| SecretKeyRef {
            name: n.into(),
            key: k.into(),
        };
        assert_eq!(s.get(&r("a", "k")).unwrap().expose_secret(), "secret");
        assert_eq!(s.get(&r("b", "t")).unwrap().expose_secret(), "tok");
        assert!(s.get(&r("c", "t")).is_err());
        assert!(!format!("{s:?}").contains("tok"));
    }

    #[test]
    fn a_broken_secrets_file_never_echoes_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "s.yaml",
            "kind: Secret\nstringData: {t: canary-7f3a\n  - [\n",
        );
        let err = Secrets::load(&p, "ns").unwrap_err().to_string();
        assert!(!err.contains("canary-7f3a"), "{err}");
        assert!(err.contains("not valid YAML"), "{err}");
    }

    #[test]
    fn resource_files_are_checked_like_the_crd_schema() {
        let dir = tempfile::tempdir().unwrap();
        let base = "apiVersion: dirsync.io/v1alpha1\nkind: DirectorySync\nmetadata: {name: x, namespace: ns}\nspec:\n  domain: example.com\n  upnMode: Enabled\n  maxAllowedDeletions: MAX\n  source:\n    entraID:\n      tenantID: 7d6f3c2a-1b4e-4f8a-9c5d-2e1f0a9b8c7d\n      clientID: 3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c\n      clientSecretRef: {name: a, key: b}\n  destination:\n    scim:\n      endpoint: ENDPOINT\n      bearerTokenRef: {name: c, key: d}\n";
        let ok = write(
            &dir,
            "ok.yaml",
            &base
                .replace("MAX", "65")
                .replace("ENDPOINT", "https://scim.example.net/v2"),
        );
        let r = load_resource(&ok).unwrap();
        assert_eq!(r.spec.max_allowed_deletions, 65);
        assert_eq!(
            r.spec.entra_id().unwrap().authority_host,
            "https://login.microsoftonline.com"
        );
        let over = write(
            &dir,
            "over.yaml",
            &base
                .replace("MAX", "101")
                .replace("ENDPOINT", "https://scim.example.net/v2"),
        );
        assert!(
            load_resource(&over)
                .unwrap_err()
                .to_string()
                .contains("spec.maxAllowedDeletions")
        );
        let userinfo = write(
            &dir,
            "ui.yaml",
            &base
                .replace("MAX", "5")
                .replace("ENDPOINT", "https://u:p@scim.example.net/v2"),
        );
        assert!(
            load_resource(&userinfo)
                .unwrap_err()
                .to_string()
                .contains("user-info")
        );
        let missing = write(
            &dir,
            "m.yaml",
            &base
                .replace("  maxAllowedDeletions: MAX\n", "")
                .replace("ENDPOINT", "https://s/v2"),
        );
        assert!(
            load_resource(&missing)
                .unwrap_err()
                .to_string()
                .contains("maxAllowedDeletions")
        );
        // Misspelt fields are refused with the nearest known name, at any depth.
        let ok_text = base
            .replace("MAX", "65")
            .replace("ENDPOINT", "https://scim.example.net/v2");
        for (from, to, want) in [
            (
                "  upnMode: Enabled\n",
                "  upnMode: Enabled\n  deletionPolcy: Deactivate\n",
                "spec.deletionPolcy: unknown field (did you mean deletionPolicy?)",
            ),
            (
                "      clientSecretRef",
                "      authorityHots: https://x\n      clientSecretRef",
                "spec.source.entraID.authorityHots: unknown field (did you mean authorityHost?)",
            ),
            (
                "spec:\n",
                "spec:\n  zzzqqq: 1\n",
                "spec.zzzqqq: unknown field",
            ),
            (
                "kind: DirectorySync\n",
                "kind: DirectorySync\nstatuz: {}\n",
                "statuz: unknown field (did you mean status?)",
            ),
        ] {
            let f = write(&dir, "typo.yaml", &ok_text.replace(from, to));
            let err = load_resource(&f).unwrap_err().to_string();
            assert!(err.ends_with(want), "{err}");
        }
        // metadata is free-form (labels, annotations): nothing there is refused.
        let labels = write(
            &dir,
            "l.yaml",
            &ok_text.replace(
                "metadata: {name: x, namespace: ns}",
                "metadata: {name: x, namespace: ns, labels: {a: b}}",
            ),
        );
        assert!(load_resource(&labels).is_ok());
    }
}
