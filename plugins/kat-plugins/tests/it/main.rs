//! Integration tests of the kat-plugins binary and its parsers: golden files, the catalogue, and runs
//! against real servers on loopback (the real API, listeners, a DNS server, TLS and HTTP servers, and
//! real nmap and openssl when available).

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod catalogue;
mod common;
mod container;
mod dns;
mod errors;
mod golden;
mod http;
mod portscan;
mod tls;
