//! kat-core's `ContainerRuntime` conformance suite against the real dockerd, one test per case.
//!
//! Needs `scripts/engines.sh docker && scripts/test-images.sh` (CI runs them first; with `CI` set a missing
//! engine or image fails the tests, elsewhere they are skipped with a message). The entrypoint case also needs
//! `scripts/build-entrypoint.sh`.

mod common;

use common::{fixture, fixture_with_entrypoint, runtime};
use kat_core::conformance::runtime as suite;

macro_rules! case {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(rt) = runtime().await else { return };
            suite::$name(&rt, &fixture()).await;
        }
    };
}

case!(capabilities_are_reported);
case!(echo_and_exit_codes);
case!(stdout_stderr_and_bounded_tails);
case!(env_and_argv_round_trip);
case!(entrypoint_volume_read_only);
case!(prepare_entrypoint_idempotent);
case!(deadline_kills);
case!(cancellation_kills);
case!(missing_image_fails_fast);
case!(hardening_from_inside);
case!(reap_orphans_removes_only_orphans);
case!(dropped_future_still_removes);

/// The real static kat-entrypoint runs from the read-only volume in pass-through mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entrypoint_pass_through() {
    let Some(rt) = runtime().await else { return };
    let Some(fx) = fixture_with_entrypoint() else {
        return;
    };
    suite::entrypoint_pass_through(&rt, &fx).await;
}

/// Every case in sequence, then nothing of the suite's is left on the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all() {
    let Some(rt) = runtime().await else { return };
    suite::run_all(&rt, &fixture()).await;
}
