//! What the tests that run the `katd` binary share: the binary, the static entrypoint, the test image on
//! the engines, a free port and a serving katd to wait for.
//!
//! Engine-backed tests skip loudly when an engine, the image or the entrypoint is missing, and fail
//! instead when `CI` is set.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

/// The image of the plugins these tests define (scripts/test-images.sh builds it in both engines).
pub const IMAGE: &str = "kat-busybox:latest";

/// The entrypoint volume these tests use (not the default one an operator's katd uses).
pub const VOLUME: &str = "kat-e2e-entrypoint";

/// The katd binary cargo built for these tests.
pub fn katd_path() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_katd"))
}

/// A command that runs [`katd_path`].
pub fn katd() -> Command {
    Command::new(katd_path())
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The static entrypoint: `KAT_ENTRYPOINT_BIN`, else where scripts/build-entrypoint.sh puts it.
fn entrypoint() -> PathBuf {
    std::env::var("KAT_ENTRYPOINT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/x86_64-unknown-linux-gnu/entrypoint/kat-entrypoint")
        })
}

/// The entrypoint if it and the engine are there (`why_not` says what is missing); in CI their absence
/// is a failure, elsewhere the test skips.
pub fn ready(why_not: Option<String>) -> Option<PathBuf> {
    let bin = entrypoint();
    let why = why_not.or_else(|| {
        (!bin.is_file()).then(|| format!("the static entrypoint {} is missing", bin.display()))
    });
    match why {
        None => Some(bin),
        Some(why) => {
            let msg = format!(
                "{why}; run scripts/engines.sh all, scripts/test-images.sh and scripts/build-entrypoint.sh (scripts/test.sh does all)"
            );
            if in_ci() {
                panic!("{msg}");
            }
            eprintln!("SKIPPED (not in CI): {msg}");
            None
        }
    }
}

/// Whether Docker answers and has the test image.
#[cfg(feature = "docker")]
pub async fn docker_ready() -> Option<PathBuf> {
    let why = match kat::runtime_docker::DockerRuntime::connect().await {
        Err(e) => Some(format!("Docker is not reachable: {e}")),
        Ok(rt) => match rt.docker().inspect_image(IMAGE).await {
            Err(_) => Some(format!("the image {IMAGE} is missing")),
            Ok(_) => None,
        },
    };
    ready(why)
}

/// Whether the Podman service answers and has the test image in its own store.
#[cfg(feature = "podman")]
pub async fn podman_ready() -> Option<PathBuf> {
    let why = match kat::runtime_podman::PodmanRuntime::connect().await {
        Err(e) => Some(format!("no Podman service: {e}")),
        Ok(rt) => match rt.podman().images().get(IMAGE).exists().await {
            Ok(true) => None,
            Ok(false) => Some(format!("the image {IMAGE} is not in Podman's store")),
            Err(e) => Some(format!("cannot look for the image {IMAGE} in Podman: {e}")),
        },
    };
    ready(why)
}

/// A plugin definition on the busybox image.
pub fn plugin(id: &str, level: u8, consumes: Value, args: Value) -> Value {
    json!({"plugin_id": id, "scan_level": level, "consumes": consumes, "oci_image": IMAGE, "oci_arguments": args})
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Wait until katd listens on `port` and has written its operator token to `token_file`.
pub async fn wait_up(port: u16, token_file: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
        || !token_file.is_file()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "katd did not start listening"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
