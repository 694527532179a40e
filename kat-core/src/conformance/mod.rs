//! Conformance suites: the behaviour every backend must show, as plain async functions taking the
//! trait object, in the style of object_store's `integration` module. Each backend's own tests call
//! them against the real thing (a real engine, a real database).
//!
//! ```toml
//! [dev-dependencies]
//! kat-core = { version = "0.1", features = ["conformance"] }
//! ```

pub mod files;
pub mod objects;
pub mod runtime;
pub mod tasks;
pub mod tokens;
