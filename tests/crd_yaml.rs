//! The committed CRD must be exactly what the Rust types generate (`dirsync crd`).

#[test]
fn committed_crd_matches_the_rust_types() {
    let generated = dirsync::cli::crd_yaml().expect("CRD serialises");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/directorysyncs.dirsync.io.yaml"
    );
    let committed =
        std::fs::read_to_string(path).expect("crds/directorysyncs.dirsync.io.yaml exists");
    assert!(
        committed == generated,
        "crds/directorysyncs.dirsync.io.yaml is out of date; regenerate it with\n  \
         cargo run --bin dirsync -- crd > crds/directorysyncs.dirsync.io.yaml"
    );
}

#[test]
fn crd_carries_the_validation_spec_1_asks_for() {
    let yaml = dirsync::cli::crd_yaml().unwrap();
    let crd: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    let version = &crd["spec"]["versions"][0];
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "dsync");
    assert_eq!(version["name"], "v1alpha1");
    assert!(
        version["subresources"]["status"].is_object(),
        "status subresource"
    );
    let root = &version["schema"]["openAPIV3Schema"];
    let spec = &root["properties"]["spec"];
    let required: Vec<&str> = spec["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for field in [
        "domain",
        "upnMode",
        "maxAllowedDeletions",
        "source",
        "destination",
    ] {
        assert!(required.contains(&field), "{field} is required");
    }
    let mad = &spec["properties"]["maxAllowedDeletions"];
    assert_eq!(mad["minimum"].as_f64(), Some(0.0));
    assert_eq!(mad["maximum"].as_f64(), Some(100.0));
    assert_eq!(
        spec["properties"]["upnMode"]["enum"],
        serde_json::json!(["Enabled", "Disabled"])
    );
    assert_eq!(
        spec["properties"]["mode"]["enum"],
        serde_json::json!(["DryRun", "Once", "Periodic"])
    );
    assert_eq!(
        spec["properties"]["deletionPolicy"]["enum"],
        serde_json::json!(["Delete", "Deactivate"])
    );
    let messages: Vec<String> = root["x-kubernetes-validations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect();
    assert!(messages.contains(&dirsync::crd::IMMUTABLE_MESSAGE.to_string()));
    let entra = &spec["properties"]["source"]["properties"]["entraID"];
    assert!(
        entra["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .unwrap()
            .contains("size() == 1")
    );
    assert!(
        entra["properties"]["tenantID"]["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"
    );
    // Both sides take either kind (docs/behaviour.md §6): neither is required, each side holds
    // exactly one, the kinds differ, and the direction is fixed after creation.
    let rules_of = |schema: &serde_json::Value| -> Vec<(String, String)> {
        schema["x-kubernetes-validations"]
            .as_array()
            .map(|rules| {
                rules
                    .iter()
                    .map(|r| {
                        (
                            r["rule"].as_str().unwrap().to_string(),
                            r["message"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    for (side, message) in [
        ("source", dirsync::crd::SOURCE_KIND_MESSAGE),
        ("destination", dirsync::crd::DESTINATION_KIND_MESSAGE),
    ] {
        let schema = &spec["properties"][side];
        assert!(schema["required"].is_null(), "{side} requires no kind");
        for kind in ["entraID", "scim"] {
            assert!(schema["properties"][kind].is_object(), "{side}.{kind}");
        }
        assert!(
            rules_of(schema).iter().any(|(rule, m)| m == message
                && rule.contains("has(self.entraID)")
                && rule.contains("has(self.scim)")),
            "{side}: {:?}",
            rules_of(schema)
        );
        let entra = &schema["properties"]["entraID"];
        assert_eq!(
            entra["properties"]["tenantID"]["x-kubernetes-validations"][0]["rule"],
            "self == oldSelf",
            "{side}.entraID.tenantID is fixed"
        );
        assert_eq!(
            schema["properties"]["scim"]["properties"]["endpoint"]["x-kubernetes-validations"][0]["rule"],
            "self == oldSelf",
            "{side}.scim.endpoint is fixed"
        );
    }
    let spec_rules = rules_of(spec);
    assert!(
        spec_rules
            .iter()
            .any(|(_, m)| m == dirsync::crd::DIFFERENT_KINDS_MESSAGE),
        "{spec_rules:?}"
    );
    assert!(
        spec_rules
            .iter()
            .any(|(rule, m)| m == dirsync::crd::DIRECTION_IMMUTABLE_MESSAGE
                && rule.contains("oldSelf.source.entraID")),
        "{spec_rules:?}"
    );
    // kubectl explain says what the app needs on each side.
    let described = |side: &str| {
        spec["properties"][side]["properties"]["entraID"]["description"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(described("source").contains("User.Read.All"));
    assert!(
        described("destination").contains("User.ReadWrite.All")
            && described("destination").contains("Domain.Read.All")
    );
    // every spec field explains itself (kubectl explain)
    fn all_described(schema: &serde_json::Value, path: &str) {
        if let Some(props) = schema["properties"].as_object() {
            for (name, sub) in props {
                let p = format!("{path}.{name}");
                assert!(
                    sub["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{p} has no description"
                );
                all_described(sub, &p);
                all_described(&sub["items"], &p);
            }
        }
    }
    all_described(spec, "spec");
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Domain",
            "Mode",
            "Ready",
            "Last Result",
            "Adds",
            "Updates",
            "Deletes",
            "Awaiting Approval",
            "Next Run",
            "Age"
        ]
    );
}

/// `kubectl explain` prints descriptions as they are: each must be paragraphs, not the doc
/// comments' 100-column lines ("If a / run would / delete...").
#[test]
fn crd_descriptions_are_paragraphs_not_source_lines() {
    let yaml = dirsync::cli::crd_yaml().unwrap();
    let crd: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    fn check(v: &serde_json::Value, path: &str, seen: &mut usize) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, sub) in map {
                    if let (true, Some(text)) = (k == "description", sub.as_str()) {
                        *seen += 1;
                        for (i, _) in text.match_indices('\n') {
                            let before = &text[..i];
                            let after = &text[i + 1..];
                            let paragraph_break = after.starts_with('\n') || before.ends_with('\n');
                            let list_item = after.starts_with("- ") || after.starts_with("* ");
                            assert!(
                                paragraph_break || list_item,
                                "{path}: description breaks a line mid-paragraph: {text:?}"
                            );
                        }
                    } else {
                        check(sub, &format!("{path}.{k}"), seen);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| check(i, path, seen)),
            _ => {}
        }
    }
    let mut seen = 0;
    check(&crd, "crd", &mut seen);
    assert!(seen > 30, "only {seen} descriptions found");
    let mad = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["maxAllowedDeletions"]["description"];
    assert!(mad.as_str().unwrap().contains("If a run would"), "{mad}");
}

#[test]
fn reflow_keeps_paragraphs_and_list_items() {
    use dirsync::crd::reflow_paragraphs;
    assert_eq!(reflow_paragraphs("a b\nc d\n\ne\nf"), "a b c d\n\ne f");
    assert_eq!(
        reflow_paragraphs("Modes:\n- one\n- two\n  more"),
        "Modes:\n- one\n- two more"
    );
    assert_eq!(reflow_paragraphs("single"), "single");
}
