//! Large previews: 50,000+ adds do not fit in one ConfigMap; they are stored whole as one gzip
//! stream in parts and `dirsync preview get` reads them back (sha256 checked) — the preview
//! pinned for approval too, whose hash `dirsync preview get --pending | sha256sum` gives. And
//! the operator's memory while previewing 100,000 users.

use std::time::{Duration, Instant};

use crate::common::*;
use sha2::Digest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_of_50_000_adds_is_stored_in_parts_and_read_back_whole_and_pinned_for_approval() {
    let Scenario {
        cp,
        ns,
        emu,
        scim,
        op,
    } = Scenario::start(
        "op-bigpreview",
        emulator_generated(56_000, "example.com").await,
        "op-a",
        &[],
    )
    .await;
    let mut s = spec("example.com", "Once", &emu, &scim.base_url());
    s["approval"] = serde_json::json!("Always");
    create(&ns, "example-com", s).await;
    let d = wait_for_reason(
        &ns,
        "example-com",
        "AwaitingApproval",
        Duration::from_secs(240),
        Some(&op),
    )
    .await;
    let st = status(&d);
    let run = st.last_run.clone().expect("lastRun");
    assert!(run.adds >= 50_000, "at least 50,000 adds, got {}", run.adds);
    let p = st.preview.clone().expect("preview");
    assert!(
        p.objects.len() >= 3,
        "the main ConfigMap and at least two parts: {:?}",
        p.objects
    );
    assert_eq!(p.objects[0], "example-com-preview");
    let main = configmap(&ns, "example-com-preview").await.expect("main");
    let summary: serde_json::Value = serde_json::from_str(
        main.data
            .as_ref()
            .and_then(|m| m.get("summary.json"))
            .expect("summary"),
    )
    .expect("json");
    assert_eq!(summary["storage"]["layout"], "gzip-parts");
    for name in &p.objects[1..] {
        let part = configmap(&ns, name).await.expect("part");
        let bytes = part
            .binary_data
            .as_ref()
            .and_then(|b| b.get("preview.csv.gz.part"))
            .map(|b| b.0.len())
            .unwrap_or(0);
        assert!(bytes > 0 && bytes <= 900 * 1024, "{name}: {bytes} bytes");
    }

    // `dirsync preview get` reassembles it, checks the sha256, and prints the whole CSV.
    let (csv, _) = preview_get(cp, ns.name(), "example-com", &[]);
    assert_eq!(
        dirsync::sync::csv::hex(&sha2::Sha256::digest(&csv)),
        p.sha256
    );
    let text = String::from_utf8(csv).expect("UTF-8");
    assert!(text.starts_with("\u{feff}action,userName,"));
    let rows = text.split("\r\n").filter(|l| !l.is_empty()).count() - 1;
    assert_eq!(rows as i64, p.rows);
    assert_eq!(
        text.split("\r\n").filter(|l| l.starts_with("Add,")).count() as i64,
        run.adds
    );
    assert!(
        scim_users(&scim.base_url()).await.is_empty(),
        "a run awaiting approval writes nothing"
    );

    // The pinned preview: the same layout under <name>-pending, and the hash status shows is
    // the sha256 of what `dirsync preview get --pending` prints.
    let pending = st
        .approval
        .clone()
        .and_then(|a| a.pending)
        .expect("status.approval.pending");
    assert!(pending.objects.len() >= 3, "{:?}", pending.objects);
    assert_eq!(pending.objects[0], "example-com-pending");
    assert_eq!(pending.adds, run.adds);
    let (pinned, _) = preview_get(cp, ns.name(), "example-com", &["--pending"]);
    assert_eq!(
        format!(
            "sha256:{}",
            dirsync::sync::csv::hex(&sha2::Sha256::digest(&pinned))
        ),
        pending.sha256
    );
    assert_eq!(
        pinned,
        text.as_bytes(),
        "the pinned plan is the previewed plan"
    );

    // A smaller preview afterwards removes the parts it no longer needs.
    let patch =
        serde_json::json!({"spec": {"domain": "example.com", "excludeResourceLikeAccounts": true}});
    let _ = patch;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_while_previewing_100_000_users() {
    let Scenario {
        cp: _,
        ns,
        emu,
        scim,
        op,
    } = Scenario::start(
        "op-memory",
        emulator_generated(100_000, "example.com").await,
        "op-a",
        &[],
    )
    .await;
    op.wait_ready(Duration::from_secs(30)).await;
    let idle_rss = op.peak_rss();
    let started = Instant::now();
    create(
        &ns,
        "example-com",
        spec("example.com", "DryRun", &emu, &scim.base_url()),
    )
    .await;
    let d = wait_for_reason(
        &ns,
        "example-com",
        "PreviewReady",
        Duration::from_secs(400),
        Some(&op),
    )
    .await;
    let took = started.elapsed();
    let peak = op.peak_rss();
    let rows = status(&d).preview.map(|p| p.rows).unwrap_or(0);
    println!(
        "MEASURE operator preview of 100,000 users: {rows} rows in {:.1} s; peak RSS {:.1} MiB (idle {:.1} MiB)",
        took.as_secs_f64(),
        peak as f64 / 1048576.0,
        idle_rss as f64 / 1048576.0
    );
    assert!(rows > 90_000);
    assert!(
        peak < 1024 * 1024 * 1024,
        "peak RSS {peak} bytes should stay under 1 GiB"
    );
}
