//! The CRD as installed, and reading a manifest against its schema as strictly as kubectl.

use super::DirectorySync;

/// The CRD as installed (`dirsync crd`, `crds/`, the chart): the generated one with every
/// description reflowed into paragraphs, because schemars keeps the doc comments' line breaks and
/// `kubectl explain` would print them mid-sentence.
pub fn directory_sync_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut value = serde_json::to_value(DirectorySync::crd()).expect("a CRD serialises to JSON");
    reflow_descriptions(&mut value);
    serde_json::from_value(value).expect("reflowing descriptions keeps the CRD's shape")
}

fn reflow_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = reflow_paragraphs(text);
                    }
                    _ => reflow_descriptions(v),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(reflow_descriptions),
        _ => {}
    }
}

/// Joins the lines of each paragraph with spaces; blank lines stay paragraph breaks, and a line
/// that starts a list item (`- `, `* `) keeps its own line.
pub fn reflow_paragraphs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, paragraph) in text.split("\n\n").enumerate() {
        if i > 0 {
            out.push_str("\n\n");
        }
        let mut first = true;
        for line in paragraph.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if !first {
                let item = line.starts_with("- ") || line.starts_with("* ");
                out.push(if item { '\n' } else { ' ' });
            }
            out.push_str(line);
            first = false;
        }
    }
    out
}

/// Fields of a manifest that the CRD's schema does not know, as kubectl's strict field
/// validation reports them: `spec.deletionPolcy: unknown field (did you mean deletionPolicy?)`.
/// The API server would prune them silently from a stored object; a file read by the CLI must
/// not be taken to mean something it does not say.
pub fn unknown_fields(manifest: &serde_json::Value) -> Vec<String> {
    let crd = serde_json::to_value(directory_sync_crd()).expect("a CRD serialises to JSON");
    let mut schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    // Every object has these; the API server checks them itself, so the CRD leaves them out
    // (metadata stays free-form here: labels, annotations, ...).
    for (field, kind) in [
        ("apiVersion", "string"),
        ("kind", "string"),
        ("metadata", "object"),
    ] {
        schema["properties"][field] = serde_json::json!({ "type": kind });
    }
    let mut found = Vec::new();
    collect_unknown(manifest, &schema, "", &mut found);
    found
}

fn collect_unknown(
    value: &serde_json::Value,
    schema: &serde_json::Value,
    path: &str,
    found: &mut Vec<String>,
) {
    match value {
        serde_json::Value::Object(map) => {
            let Some(known) = schema["properties"].as_object() else {
                return;
            };
            for (key, sub) in map {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match known.get(key) {
                    Some(sub_schema) => collect_unknown(sub, sub_schema, &at, found),
                    None => {
                        let nearest = known
                            .keys()
                            .map(|k| {
                                (
                                    strsim::levenshtein(
                                        &k.to_ascii_lowercase(),
                                        &key.to_ascii_lowercase(),
                                    ),
                                    k,
                                )
                            })
                            .min()
                            .filter(|(d, k)| *d <= 3.max(k.len() / 3));
                        found.push(match nearest {
                            Some((_, k)) => format!("{at}: unknown field (did you mean {k}?)"),
                            None => format!("{at}: unknown field"),
                        });
                    }
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_unknown(item, &schema["items"], &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}
