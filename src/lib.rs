//! # kat
//!
//! The facade of kat-rs: one dependency that re-exports the engine's core and, behind features, its
//! backends, so an application can assemble a deployment from one crate.
//!
//! - [`core`]: the domain, the traits and the engine (always present).
//! - [`protocol`]: the entrypoint wire contract (environment variable names, exit codes, hostname and
//!   natural-key rules) that the engine, the entrypoint and plugins share (always present).
//! - `store_sled` (feature `sled`): objects, files, tasks and schedules on sled.
//! - `store_postgres` (feature `postgres`): the same on PostgreSQL, shared by several replicas.
//! - `runtime_docker` (feature `docker`): plugin containers on a Docker engine.
//! - `runtime_podman` (feature `podman`): plugin containers on Podman's libpod service.
//! - `http` (feature `http`): the API that plugin containers call with their scoped token.
//! - `deploy` (feature `http`): a whole deployment in one call, on the store and runtime its
//!   configuration names (those whose features are on).
//!
//! ```
//! use kat::core::object::ObjectType;
//! assert_eq!("hostname".parse::<ObjectType>().unwrap(), ObjectType::Hostname);
//! ```

pub use kat_core as core;
pub use kat_protocol as protocol;
#[cfg(feature = "http")]
pub mod deploy;
#[cfg(feature = "http")]
pub use kat_http as http;
#[cfg(feature = "docker")]
pub use kat_runtime_docker as runtime_docker;
#[cfg(feature = "podman")]
pub use kat_runtime_podman as runtime_podman;
#[cfg(feature = "postgres")]
pub use kat_store_postgres as store_postgres;
#[cfg(feature = "sled")]
pub use kat_store_sled as store_sled;
