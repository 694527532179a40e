//! # kat-runtime-engine
//!
//! kat-core's [`ContainerRuntime`](kat_core::runtime::ContainerRuntime) written once for Docker-API-like
//! engines, so that the behaviour the conformance suite checks lives in one place and each engine crate
//! (`kat-runtime-docker`, `kat-runtime-podman`) holds only what differs: connecting, the engine's calls,
//! its capabilities and the classification of its client's errors.
//!
//! - [`EngineRuntime`]: the `ContainerRuntime` on any engine's [`EngineCalls`] (create, attach, start,
//!   wait, kill, remove, list, capabilities, and the archive calls of a volume helper), made of
//!   [`run_container`], [`prepare_entrypoint`] and [`reap_orphans`]; a runtime crate wraps it in its own
//!   type and implements the trait with [`delegate_container_runtime!`];
//! - [`RuntimeError`]: the runtime error of every engine, parameterized by an [`EngineKind`] (its names,
//!   advice, and how to read its API errors), with the one mapping onto [`kat_core::Error`];
//!   [`EngineError`] is what the shared code needs from an engine's error type;
//! - [`OutputTail`]: the bounded stdout/stderr tails of an [`Outcome`](kat_core::runtime::Outcome);
//! - [`container_name`], [`container_labels`], [`check_spec`], [`tmpfs_options`], [`pull_reference`],
//!   [`pull_image`], ...: turning a [`ContainerSpec`](kat_core::runtime::ContainerSpec) into what every
//!   engine needs;
//! - [`EntrypointPayload`], [`sync_entrypoint`], [`helper_image_tar`]: the entrypoint volume by content
//!   hash;
//! - [`spawn_run`], [`supervise`], [`CleanupGuard`], [`remove_until_gone`], [`reap_each`]: the life of a
//!   run (deadline, cancellation, removal on every path, a dropped caller included) and reaping;
//! - [`unix_socket_from_host`], [`error_chain`], [`io_error_kind`]: connecting and explaining failures;
//! - `testing` (feature `testing`): what the engine tests and benchmarks of the runtime crates share.
//!
//! Not here: the `ContainerRuntime` contract, [`ContainerSpec`](kat_core::runtime::ContainerSpec) and its
//! conformance suite (kat-core's `runtime` and `conformance::runtime`), and anything that talks to a
//! particular engine (no engine client is a dependency: the runtime crates pass in their calls).
//!
//! ```no_run
//! use kat_core::runtime::{CancellationToken, ContainerRuntime, ContainerSpec};
//! # async fn demo<E: kat_runtime_engine::EngineCalls>(calls: E) -> kat_core::Result<()>
//! # where kat_core::Error: From<E::Error> {
//! let rt = kat_runtime_engine::EngineRuntime::new(calls);
//! let outcome = rt
//!     .run(ContainerSpec::new("hello", "kat-busybox:latest", ["echo", "hello"]), CancellationToken::new())
//!     .await?;
//! assert!(outcome.success());
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod calls;
mod entrypoint;
mod error;
mod host;
mod pull;
mod runtime;
mod spec;
mod supervise;
mod tail;
#[cfg(feature = "testing")]
pub mod testing;

pub use calls::{
    EngineCalls, OutputStream, prepare_entrypoint, reap_orphans, removal_guard, run_container,
};
pub use entrypoint::{
    BINARY_FILE, EntrypointPayload, HELPER_IMAGE, LABEL_HELPER, LoadError, MARKER_FILE,
    MARKER_LIMIT, SyncError, VolumeAccess, binary_path, helper_image_tar, marker_path, read_marker,
    sync_entrypoint,
};
pub use error::{EngineError, EngineKind, RuntimeError};
pub use host::{error_chain, io_error_kind, is_unreachable_kind, unix_socket_from_host};
pub use pull::pull_image;
pub use runtime::EngineRuntime;
pub use spec::{
    EngineLimits, HELPER_GRACE_SECS, MAX_CONTAINER_NAME, SpecError, check_spec, check_volume_name,
    container_labels, container_name, helper_age_secs, helper_name, listed_container,
    managed_container, pull_reference, tmpfs_options, unix_now_secs, valid_capability,
    valid_volume_name,
};
pub use supervise::{
    Bounded, CleanupGuard, DRAIN_GRACE, KILL_GRACE, Output, REMOVAL_WAIT, Reaped, RemoveAttempt,
    StopSignal, Supervised, TaskFailed, bounded, conclude, reap_each, remove_until_gone,
    run_in_background_thread, spawn_run, supervise,
};
pub use tail::OutputTail;

/// What [`delegate_container_runtime!`] expands to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
    pub use kat_core;
    pub use kat_core::runtime::ContainerRuntime;
}
