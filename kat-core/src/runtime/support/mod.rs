//! Engine-independent building blocks for [`ContainerRuntime`](crate::runtime::ContainerRuntime)
//! implementations, shared by `kat-runtime-docker` and `kat-runtime-podman` so that the behaviour the
//! conformance suite checks is written once:
//!
//! - [`EngineCalls`] with [`run_container`], [`prepare_entrypoint`] and [`reap_orphans`]: a whole runtime
//!   written on the few calls an engine provides (create, attach, start, wait, kill, remove, list, and the
//!   archive calls of a volume helper); the pieces below are what they are made of;
//! - [`OutputTail`]: the bounded stdout/stderr tails of an [`Outcome`](crate::runtime::Outcome);
//! - [`container_name`], [`container_labels`], [`check_spec`], [`tmpfs_options`], [`pull_reference`], ...:
//!   turning a [`ContainerSpec`](crate::runtime::ContainerSpec) into what every engine needs;
//! - [`EntrypointPayload`], [`sync_entrypoint`], [`helper_image_tar`]: the entrypoint volume by content hash;
//! - [`spawn_run`], [`supervise`], [`CleanupGuard`], [`remove_until_gone`], [`reap_each`]: the life of a
//!   run (deadline, cancellation, removal on every path, a dropped caller included) and reaping;
//! - [`unix_socket_from_host`], [`error_chain`], [`io_error_kind`]: connecting and explaining failures.
//!
//! Nothing here talks to an engine: the runtimes pass in their own calls.

mod engine;
mod entrypoint;
mod host;
mod spec;
mod supervise;
mod tail;

pub use engine::{
    EngineCalls, OutputStream, prepare_entrypoint, reap_orphans, removal_guard, run_container,
};
pub use entrypoint::{
    BINARY_FILE, EntrypointPayload, HELPER_IMAGE, LABEL_HELPER, LoadError, MARKER_FILE,
    MARKER_LIMIT, SyncError, VolumeAccess, binary_path, helper_image_tar, marker_path, read_marker,
    sync_entrypoint,
};
pub use host::{error_chain, io_error_kind, is_unreachable_kind, unix_socket_from_host};
pub use spec::{
    EngineLimits, MAX_CONTAINER_NAME, SpecError, check_spec, check_volume_name, container_labels,
    container_name, managed_container, pull_reference, tmpfs_options, valid_capability,
    valid_volume_name,
};
pub use supervise::{
    Bounded, CleanupGuard, DRAIN_GRACE, KILL_GRACE, Output, REMOVAL_WAIT, Reaped, RemoveAttempt,
    StopSignal, Supervised, TaskFailed, bounded, conclude, reap_each, remove_until_gone,
    run_in_background_thread, spawn_run, supervise,
};
pub use tail::OutputTail;
