//! Shared set-up of the engine tests: connect to the real Podman service, or fail (in CI) / skip loudly
//! (elsewhere).

#![allow(dead_code, unreachable_pub)]

use kat_core::conformance::runtime::RuntimeFixture;
use kat_runtime_engine::testing;
use kat_runtime_podman::PodmanRuntime;

/// The local test image built by `scripts/test-images.sh` (imported into Podman's own store too).
pub const IMAGE: &str = "kat-busybox:latest";
/// The entrypoint volume the tests use (the suite derives `-ro` and `-idem` from it).
pub const VOLUME: &str = "kat-test-entrypoint";

pub const SETUP: &str = "run `eval \"$(scripts/engines.sh podman)\" && scripts/test-images.sh` first \
                         (and `scripts/build-entrypoint.sh` for the entrypoint test)";

/// The runtime on the real Podman service with the test image present, or `None` (skip) outside CI.
pub async fn runtime() -> Option<PodmanRuntime> {
    init_tracing();
    let rt = match PodmanRuntime::connect().await {
        Ok(rt) => rt,
        Err(e) => {
            testing::unavailable(&format!("no Podman service: {e}"), SETUP);
            return None;
        }
    };
    match rt.podman().images().get(IMAGE).exists().await {
        Ok(true) => Some(rt),
        Ok(false) => {
            testing::unavailable(
                &format!("the test image {IMAGE} is not in Podman's store"),
                SETUP,
            );
            None
        }
        Err(e) => {
            testing::unavailable(
                &format!("cannot look for the test image {IMAGE}: {e}"),
                SETUP,
            );
            None
        }
    }
}

/// The suite's fixture; carries the static entrypoint when it has been built.
pub fn fixture() -> RuntimeFixture {
    testing::fixture(IMAGE, VOLUME, env!("CARGO_MANIFEST_DIR"))
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
