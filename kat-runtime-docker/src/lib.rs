//! # kat-runtime-docker
//!
//! Will hold kat-core's `ContainerRuntime` on a Docker engine through bollard: the entrypoint volume,
//! hardened plugin containers with deadlines and cancellation, removal on every path and orphan reaping.
//! It must pass kat-core's runtime conformance suite against a real dockerd.
