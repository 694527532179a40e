//! # kat-store-postgres
//!
//! kat-core's [`ObjectStore`](kat_core::store::ObjectStore),
//! [`FileStore`](kat_core::store::FileStore) and [`TaskStore`](kat_core::store::TaskStore) on
//! PostgreSQL (tested against 15), through [tokio-postgres](https://docs.rs/tokio-postgres) and a
//! [deadpool](https://docs.rs/deadpool-postgres) connection pool. Several katd processes (API,
//! worker and scheduler replicas) share one database: every write is one transaction, and the
//! writes that read before they write take row locks or an advisory lock, so replicas never lose
//! each other's updates.
//!
//! ```no_run
//! use kat_store_postgres::{PgOptions, PgStore};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // Connects, and creates or upgrades the schema (under an advisory lock: replicas may start together).
//! let store = PgStore::connect("postgres://kat@127.0.0.1:55432/kat", PgOptions::default()).await?;
//! # let _ = store;
//! # Ok(())
//! # }
//! ```
//!
//! ## Schema
//!
//! The schema is embedded (`migrations/*.sql`) and applied at connect, each migration once, in
//! order, recorded in `kat_schema`. A database whose schema is newer than the build is refused
//! ([`PgStoreError::SchemaTooNew`]).
//!
//! ## Objects
//!
//! [`ObjectStore`](kat_core::store::ObjectStore) keeps objects in `kat_objects` (the object as JSONB,
//! its fields' filter texts as JSONB under a GIN index, its scan level in columns of their own), the
//! level relations of DNS records in `kat_edges` and attribution in `kat_attribution`. Every object
//! write is one transaction that first takes an advisory lock of its organization, so the writes of
//! one organization run one at a time across replicas (nothing is lost, the levels algorithm sees a
//! stable graph) while organizations and readers proceed in parallel. A batch costs a constant number
//! of statements (`unnest` arrays in, `ON CONFLICT` upserts), and the inherited scan levels are
//! brought up to date in the same transaction, so they are never stale
//! (`levels_need_recompute` is always `false`). Queries push down the organization, type, keys,
//! field equality filters, the level filters and, ordered by key, the paging.
//!
//! ## Files
//!
//! [`FileStore`](kat_core::store::FileStore) keeps file contents in the database, content-addressed:
//! one `file_contents` row per distinct sha256, its bytes in 1 MiB `file_chunks` (`bytea`, stored
//! uncompressed), reference-counted by the `files` rows (the metadata, ids from an identity
//! column). An upload streams into chunks inside one transaction while it is hashed, then is
//! deduplicated under an advisory lock of its hash; a failed upload rolls back and stores nothing.
//! Reads fetch 256 KiB per query, each query on a connection of its own, so neither direction
//! holds a file in memory (a 1 GiB round trip grows the process by about 7 MiB).
//!
//! ## Tasks
//!
//! [`TaskStore`](kat_core::store::TaskStore) keeps kat-core's records as JSON beside the columns it
//! filters and orders on (tasks as `json`, whose stderr tails may hold NUL characters, the rest
//! as `jsonb`). Transitions, lease renewals and leased writes lock the task's row; claims and
//! recoveries lock rows `FOR UPDATE SKIP LOCKED`, so replicas never take the same task or recover
//! it twice; schedule claims are one `INSERT ... ON CONFLICT DO UPDATE ... WHERE` statement;
//! schedule and object-set numbers come from counter rows updated in the writing transaction.
//!
//! ## Durability
//!
//! A write returns `Ok` after its transaction committed, and PostgreSQL commits with
//! `synchronous_commit` on by default: what was acknowledged survives a crash of the server.

#![forbid(unsafe_code)]

mod error;
mod files;
mod levels;
mod migrate;
mod objects;
mod tasks;

#[cfg(feature = "testing")]
pub mod testing;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

#[allow(unused_imports)]
pub(crate) use error::PResult;

/// A pooled connection: tokio-postgres's client with deadpool's per-connection statement cache
/// (`prepare_cached`), which the hot statements use so that each is parsed once per connection.
pub(crate) type Client = deadpool_postgres::ClientWrapper;
pub use error::PgStoreError;

/// How to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgOptions {
    /// The most connections the pool opens (default 16). Each katd replica has its own pool: keep
    /// the sum over replicas under the server's `max_connections`.
    pub max_connections: usize,
    /// How long a caller waits for a free connection before the store answers `Unavailable`
    /// (default 30 s).
    pub wait_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            wait_timeout: Duration::from_secs(30),
        }
    }
}

/// The PostgreSQL store. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// In-process gates of object writes, by organization ([`objects::OrgGates`]).
    gates: std::sync::Arc<objects::OrgGates>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.pool.status();
        f.debug_struct("PgStore")
            .field("pool_size", &s.size)
            .field("pool_available", &s.available)
            .field("pool_max", &s.max_size)
            .finish()
    }
}

impl PgStore {
    /// Connect to the database at `url` (a `postgres://user[:password]@host[:port]/database` URL or
    /// a `key=value` connection string), and create or upgrade its schema.
    ///
    /// # Errors
    /// [`PgStoreError::Config`] for a bad URL, [`PgStoreError::Pool`] when the server cannot be
    /// reached, [`PgStoreError::SchemaTooNew`] for a database written by a newer build.
    pub async fn connect(url: &str, options: PgOptions) -> Result<PgStore, PgStoreError> {
        let config = tokio_postgres::Config::from_str(url).map_err(PgStoreError::Config)?;
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.wait_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(PgStoreError::Build)?;
        let store = PgStore {
            pool,
            gates: std::sync::Arc::default(),
        };
        migrate::apply(&store).await?;
        Ok(store)
    }

    /// A connection from the pool.
    pub(crate) async fn conn(&self) -> PResult<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// The schema version of the database (the newest migration applied).
    ///
    /// # Errors
    /// As [`PgStore::connect`].
    pub async fn schema_version(&self) -> Result<i32, PgStoreError> {
        let c = self.conn().await?;
        migrate::current(&c).await
    }
}
