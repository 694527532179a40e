//! `katd serve` takes SIGTERM from its first moment: a signal during start-up lets start-up finish (so
//! that the entrypoint volume's helper container is removed), then katd stops cleanly with status 0 and
//! leaves no container of its deployment behind.

#![cfg(feature = "docker")]

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use support::{VOLUME, docker_ready, free_port, katd, plugin};

/// Whether process `pid` catches SIGTERM (bit 15 of `SigCgt` in `/proc/<pid>/status`).
fn catches_sigterm(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
}

/// The containers of `deployment`'s volume helpers, as the docker CLI lists them.
fn helpers_of(deployment: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=kat.helper"])
        .arg("--filter")
        .arg(format!("label=kat.deployment={deployment}"))
        .output()
        .expect("docker ps");
    assert!(out.status.success(), "docker ps: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_start_up_stops_cleanly_and_leaves_no_helper() {
    let Some(entrypoint) = docker_ready().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins.json");
    std::fs::write(
        &plugins,
        json!([plugin("hello", 0, json!([]), json!(["echo", "hello"]))]).to_string(),
    )
    .expect("write plugins");
    let data = dir.path().join("data");
    let deployment = kat::deploy::deployment_name(&data);
    let mut child = katd()
        .args(["serve", "--org", "acme", "--tick", "3600"])
        .arg("--data")
        .arg(&data)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--plugins")
        .arg(&plugins)
        .arg("--entrypoint")
        .arg(&entrypoint)
        .env("ENTRYPOINT_VOLUME", VOLUME)
        .env("KAT_JWT_SECRET", "signals-secret-signals-secret-signals!!")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("katd starts");
    let pid = child.id();
    // The handler is the first thing katd installs; start-up (the store, the engine, the plugins,
    // the entrypoint volume through a helper container) comes after it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !catches_sigterm(pid) {
        assert!(Instant::now() < deadline, "katd never caught SIGTERM");
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "katd did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        use std::io::Read;
        let _ = stdout.read_to_string(&mut out);
    }
    assert!(status.success(), "katd stopped cleanly: {status:?}\n{out}");
    assert!(
        out.contains("katd: stopping (a signal came during start-up)"),
        "{out}"
    );
    assert_eq!(helpers_of(&deployment), "", "no helper container is left");
}
