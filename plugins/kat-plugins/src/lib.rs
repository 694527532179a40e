//! # kat-plugins
//!
//! kat-rs's first-party plugins as one small static multi-call binary. Each subcommand is a plugin that
//! runs inside a `FROM scratch` container under `kat-entrypoint`, reads `OPENKAT_API` and
//! `OPENKAT_TOKEN` from its environment and talks to the API over HTTP exactly like a third-party plugin
//! would; its stdout becomes the task's output file.
//!
//! | subcommand | input | writes |
//! |---|---|---|
//! | `dns <hostname>` | a hostname | hostnames, addresses, DNS records; removes stale records |
//! | `portscan <ip>` | an IP address | nothing: nmap-compatible XML on stdout |
//! | `parse-nmap <file-id>` | an nmap XML file | addresses, ports, software, port findings |
//! | `tls <hostname>` | a hostname | certificate and protocol-version findings |
//! | `http-headers <hostname>` | a hostname | KAT-NO-HSTS / KAT-NO-HTTPS findings |
//!
//! The parsers and normalizers are plain functions ([`nmap::parse`], [`nmap::normalize`],
//! [`dns::build_payload`], [`tls::analyze_chain`], [`tls::classify_server_hello`], ...) so that golden
//! files can pin them; the `run` function of each module adds the network side.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod api;
pub mod cli;
pub mod dns;
pub mod error;
pub mod findings;
pub mod http_headers;
pub mod names;
pub mod nmap;
pub mod portscan;
pub mod tls;

pub use error::{Error, Result};

/// The version of this binary (the workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
