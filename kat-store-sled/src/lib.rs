//! # kat-store-sled
//!
//! Will hold the sled implementations of kat-core's `ObjectStore`, `FileStore` and `TaskStore`: objects by
//! natural key with secondary indexes, atomic bulk upserts, attribution, file contents streamed to a
//! content-addressed directory with the index in sled, tasks, schedules and the token denylist.
//! Every implementation here must pass kat-core's conformance suites.
