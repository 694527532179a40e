//! # kat-runtime-podman
//!
//! Will hold kat-core's `ContainerRuntime` on Podman's libpod REST service through podman-api, with the
//! same guarantees as the Docker runtime. It must pass kat-core's runtime conformance suite against a real
//! Podman service.
