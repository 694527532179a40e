//! # kat-protocol
//!
//! The contract between the kat-rs engine, the entrypoint binary mounted into every plugin container, and the
//! plugins that call the API, written once in code. The prose version is `docs/entrypoint-protocol.md`; this crate
//! is what `kat-core` (the engine and the object model), `kat-entrypoint` and `plugins/kat-plugins` all link, so
//! the two sides of the wire cannot drift apart.
//!
//! - [`env`](mod@env): the names of the environment variables the engine sets in a plugin container and the
//!   entrypoint reads, with the entrypoint's defaults.
//! - [`exit`]: the entrypoint's own exit codes (120 to 124, and 126, 127, 128+N) and what each means.
//! - [`host`]: the canonical form of hostnames (lowercase, one trailing dot stripped, RFC 1123) and of IP
//!   addresses, as natural keys carry them.
//! - [`key`]: how natural-key parts are joined and escaped (`|` and `%`).
//!
//! What it does not hold: the object model itself (types, fields, which parts make up which key: that is
//! `kat_core::object`), the HTTP API (`kat-http`, `docs/http-api.md`), and any I/O. It has no dependencies and no
//! async, so that the static entrypoint stays small.
//!
//! ```
//! use kat_protocol::{env, exit, host, key};
//! assert_eq!(env::TOKEN, "OPENKAT_TOKEN");
//! assert_eq!(exit::UPLOAD, 123);
//! assert_eq!(host::canonical_hostname("WWW.Example.COM.").unwrap(), "www.example.com");
//! assert_eq!(key::escape_part("a|b"), "a%7Cb");
//! ```

#![forbid(unsafe_code)]

pub mod env;
pub mod exit;
pub mod host;
pub mod key;

/// The `type` of a file holding a failed command's stderr: the entrypoint uploads stderr with it, and the
/// engine never chains on it (docs/entrypoint-protocol.md §4).
pub const ERROR_FILE_TYPE: &str = "error";
