//! OpenKAT's plugin entries run unchanged: the original's `nmap` and `parse-nmap` rows
//! (`tests/original/plugins.json`) in images shaped like the original's (`scripts/original-image.sh`), a
//! scan-then-normalize chain on 127.0.0.1 (and only there) with the privileges the operator's policy gives
//! (`tests/original/policy.json`), never by editing the plugin file.

use std::path::PathBuf;

use serde_json::{Value, json};

use kat::core::policy::Policy;

use crate::harness::{Kat, in_ci, start_with};

const IMAGES: [&str; 2] = [
    "instrumentisto/nmap",
    "ghcr.io/minvws/openkat/plugins:0.1.0",
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/original")
        .join(name)
}

/// Whether the original-shaped images are there; in CI their absence is a failure.
async fn images_ready() -> bool {
    if crate::harness::runtime().await.is_err() {
        return false; // the harness reports a missing engine
    }
    for image in IMAGES {
        if !crate::harness::image_present(image) {
            let msg = format!("the image {image} is missing; run scripts/original-image.sh");
            assert!(!in_ci(), "{msg}");
            eprintln!("SKIPPED (not in CI): {msg}");
            return false;
        }
    }
    true
}

/// A listener on 127.0.0.1 at one of nmap's top ports, answering like a web server, so that the scan
/// has an open port to find; its port.
async fn listener() -> u16 {
    for port in [
        8081u16, 8888, 9090, 8008, 10000, 8443, 8000, 8080, 5000, 3000,
    ] {
        if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                while let Ok((mut s, _)) = l.accept().await {
                    let _ = s
                        .write_all(
                            b"HTTP/1.0 200 OK\r\nServer: kat-e2e\r\nContent-Length: 2\r\n\r\nok",
                        )
                        .await;
                }
            });
            return port;
        }
    }
    panic!("no free top port on 127.0.0.1 for the scan to find");
}

async fn deployment(policy: Policy) -> Option<Kat> {
    if !images_ready().await {
        return None;
    }
    let plugins: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("plugins.json")).expect("fixture"))
            .expect("fixture JSON");
    let k = start_with(plugins, |cfg| {
        cfg.policy = policy;
        // nmap -sV on a few ports takes a while on a loaded machine.
        cfg.engine.plugin_timeout = std::time::Duration::from_secs(300);
    })
    .await?;
    assert!(
        k.d.sync_report().refused.is_empty(),
        "the plugin file loads unchanged"
    );
    k.declare("ipaddress", &["127.0.0.1"], Some(2)).await;
    Some(k)
}

/// Scan 127.0.0.1 with the original's nmap entry; returns the normalizer's task once it ended.
async fn scan_and_normalize(k: &Kat) -> Value {
    let id = k.submit("nmap", &["127.0.0.1"]).await[0];
    let t = k.wait_long(id).await;
    assert_eq!(
        t["state"], "completed",
        "nmap ran as root with NET_RAW: {t}"
    );
    let out = k.files_of(id).await;
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["type"], "nmap");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let parse = loop {
        if let Some(t) = k.tasks_of("parse-nmap").await.into_iter().next() {
            break t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "parse-nmap was never queued"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    k.wait_long(parse["id"].as_str().expect("id").parse().expect("task id"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_originals_nmap_chain_runs_unchanged_with_privileges_from_the_policy() {
    let port = listener().await;
    let policy = Policy::load(&fixture("policy.json")).expect("policy");
    let Some(k) = deployment(policy).await else {
        return;
    };
    let t = scan_and_normalize(&k).await;
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(t["refused_calls"], 0, "{t}");
    let ports = k.get("/objects/ipport/?limit=1000").await;
    let found: Vec<&Value> = ports["results"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|p| p["port"] == json!(port))
        .collect();
    assert_eq!(found.len(), 1, "port {port} stored: {ports}");
    assert_eq!(found[0]["address"], "internet|127.0.0.1", "{ports}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_extra_permissions_the_normalizers_writes_are_refused_and_counted() {
    let _port = listener().await;
    let policy = Policy::parse(
        r#"{"plugins": {"nmap": {"user": "0:0", "cap_add": ["NET_RAW"]}}}"#,
        "policy.json",
    )
    .expect("policy");
    let Some(k) = deployment(policy).await else {
        return;
    };
    let t = scan_and_normalize(&k).await;
    // The script ignores the 403 and exits 0, as the original's does: the task says what happened.
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(t["refused_calls"], 1, "{t}");
    let first = t["first_refusal"].as_str().unwrap_or_default();
    assert!(
        first.starts_with("POST /api/v1/objects/: 403") && first.contains("objects.add_ip"),
        "{t}"
    );
    assert!(
        t["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("1 API call refused"),
        "{t}"
    );
    let ports = k.get("/objects/ipport/").await;
    assert_eq!(ports["count"], 0, "nothing stored: {ports}");
}
