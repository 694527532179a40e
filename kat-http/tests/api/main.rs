//! The API over real sockets with real JWTs.

#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod files;
mod limits;
mod metrics;
mod objects;
mod orgs;
mod permissions;
mod rights;
mod rules;
mod slow;
mod tasks;
mod tokens;
mod uploads;
