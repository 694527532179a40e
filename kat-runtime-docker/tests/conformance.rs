//! kat-core's `ContainerRuntime` conformance suite against the real dockerd, one test per case, the real
//! static entrypoint in pass-through mode, and `run_all`.
//!
//! Needs `scripts/engines.sh docker && scripts/test-images.sh` (CI runs them first; with `CI` set a missing
//! engine or image fails the tests, elsewhere they are skipped with a message). The entrypoint case also needs
//! `scripts/build-entrypoint.sh` (or `KAT_ENTRYPOINT_BIN`).

mod common;

kat_core::runtime_conformance_tests!(common::runtime, common::fixture);
