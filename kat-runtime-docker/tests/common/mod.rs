//! Shared set-up of the engine tests: connect to the real dockerd, or fail (in CI) / skip loudly (elsewhere).

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

use kat_core::conformance::runtime::RuntimeFixture;
use kat_core::runtime::EntrypointBinary;
use kat_runtime_docker::DockerRuntime;

/// The local test image built by `scripts/test-images.sh`.
pub const IMAGE: &str = "kat-busybox:latest";
/// The entrypoint volume the tests use (the suite derives `-ro` and `-idem` from it).
pub const VOLUME: &str = "kat-test-entrypoint";

const SETUP: &str = "run `scripts/engines.sh docker && scripts/test-images.sh` first \
                     (and `scripts/build-entrypoint.sh` for the entrypoint test)";

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Fail when `CI` is set, else print why the test is skipped.
fn unavailable(what: &str) {
    if in_ci() {
        panic!("{what}; {SETUP}");
    }
    eprintln!("SKIPPED (no CI): {what}; {SETUP}");
}

/// The runtime on the real dockerd with the test image present, or `None` (skip) outside CI.
pub async fn runtime() -> Option<DockerRuntime> {
    init_tracing();
    let rt = match DockerRuntime::connect().await {
        Ok(rt) => rt,
        Err(e) => {
            unavailable(&format!("no Docker engine: {e}"));
            return None;
        }
    };
    match rt.docker().inspect_image(IMAGE).await {
        Ok(_) => Some(rt),
        Err(e) => {
            unavailable(&format!("the test image {IMAGE} is not on the engine: {e}"));
            None
        }
    }
}

/// The suite's fixture; carries the static entrypoint when it has been built.
pub fn fixture() -> RuntimeFixture {
    let fx = RuntimeFixture::new(IMAGE, VOLUME);
    match entrypoint_binary() {
        Some(path) => fx.with_entrypoint(EntrypointBinary { path }),
        None => fx,
    }
}

/// `KAT_ENTRYPOINT_BIN`, else the output of `scripts/build-entrypoint.sh`, if the file exists.
pub fn entrypoint_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KAT_ENTRYPOINT_BIN") {
        return Some(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join("x86_64-unknown-linux-gnu/entrypoint/kat-entrypoint");
    p.is_file().then_some(p)
}

/// The fixture with the entrypoint binary, or `None` (fail in CI, skip elsewhere) when it was not built.
pub fn fixture_with_entrypoint() -> Option<RuntimeFixture> {
    let fx = fixture();
    if fx.entrypoint.is_none() {
        unavailable("the static kat-entrypoint is not built (scripts/build-entrypoint.sh)");
        return None;
    }
    Some(fx)
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
