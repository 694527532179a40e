//! # kat-core
//!
//! The domain and the contracts of kat-rs, an engine that runs security-scanning plugins as OCI
//! containers over an inventory of network objects, the way OpenKAT v2's plugin system does.
//!
//! - [`object`]: object types, natural keys, validation, scan levels.
//! - [`finding`]: the finding-type catalogue and risk scores.
//! - [`plugin`]: plugin definitions loaded from JSON, validated, and synced into a catalogue.
//! - [`template`] and [`plan`]: argument templating and the five execution modes, as pure functions.
//! - [`policy`]: the operator's policy of what a plugin may get beyond the hardened default (user,
//!   capabilities), checked at sync and before every container.
//! - [`permission`]: scoped, Django-style permissions and the check shared by the API and the runner.
//! - [`runtime`], [`store`], [`token`]: the traits a deployment implements (`ContainerRuntime`,
//!   `ObjectStore`, `FileStore`, `TaskStore` with its concerns `TaskQueue`, `ScheduleStore`,
//!   `OrgStore`, `PluginCatalog`, `RevocationList`, `RuleCatalog` and `ReplicaRegistry`, and `TokenAuthority`).
//! - [`rules`]: business rules: declarative conditions over the inventory that assert findings and
//!   retract them when they stop holding.
//! - [`chain`]: the scan level a file carries along a chain of plugins, and the gate on it.
//! - [`levels`]: scan levels, declared and inherited along DNS relations, kept up to date by every
//!   write (the graph algorithm every store backend shares).
//! - [`metrics`]: what a replica counts for `GET /metrics` (tasks, leases, containers, requests).
//! - [`replica`]: the processes sharing one database, their roles and heartbeats.
//! - [`memory`]: in-memory reference backends of the stores.
//! - `conformance` (feature `conformance`): the behaviour every backend must show, as plain async
//!   functions each backend's tests call.
//!
//! The wire contract with the entrypoint and the plugins (environment variable names, exit codes,
//! hostname and natural-key rules) is the crate [`kat_protocol`], which this crate applies.

#![forbid(unsafe_code)]

pub mod chain;
pub mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod control;
pub mod engine;
pub mod error;
pub mod finding;
pub mod levels;
pub mod memory;
pub mod metrics;
pub mod object;
pub mod org;
pub mod permission;
pub mod plan;
pub mod plugin;
pub mod policy;
pub mod replica;
pub mod rules;
pub mod runtime;
pub mod schedule;
pub mod store;
pub mod task;
pub mod template;
pub mod token;

pub use error::{Error, Result};
