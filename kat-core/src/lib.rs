//! # kat-core
//!
//! The domain and the contracts of kat-rs.
