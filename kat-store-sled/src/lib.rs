//! # kat-store-sled
//!
//! Durable implementations of kat-core's [`ObjectStore`](kat_core::store::ObjectStore),
//! [`FileStore`](kat_core::store::FileStore) and [`TaskStore`](kat_core::store::TaskStore) (its five
//! traits, in `tasks.rs`) on the
//! [sled](https://docs.rs/sled/0.34.7) embedded database (pinned at `=0.34.7`), with file contents in
//! a content-addressed directory next to it.
//!
//! ```
//! use kat_core::object::{Object, ObjectType};
//! use kat_core::org::OrgCode;
//! use kat_core::store::{ObjectQuery, ObjectStore};
//! use kat_store_sled::{SledOptions, SledStore};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Runtime::new()?;
//! # rt.block_on(async {
//! let dir = tempfile::tempdir()?;
//! let store = SledStore::open(dir.path(), SledOptions::default())?;
//! let org = OrgCode::new("acme")?;
//! let host = Object::from_json(ObjectType::Hostname, &serde_json::json!({"name": "example.com"}))?;
//! store.upsert(&org, vec![host], None).await?;
//! let found = store
//!     .query(&ObjectQuery::new(org, ObjectType::Hostname).filter("name", &["example.com"]))
//!     .await?;
//! assert_eq!(found.count, 1);
//! assert_eq!(found.items[0].key.as_str(), "internet|example.com");
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! ## Layout
//!
//! `dir/db` holds the sled database, `dir/files/<aa>/<sha256>` the file contents (stored once per
//! distinct content, reference-counted), `dir/files/tmp` uploads in progress. The database has four
//! trees, each written with single atomic `apply_batch` calls (sled seals a batch in its log, so after
//! a crash either all of a batch is there or none of it):
//!
//! - `kat_meta`: the format version ([`FORMAT_VERSION`]).
//! - `objects`: objects (compact records with their first writing tasks), one index entry per field
//!   value (fields that lead the natural key, and a hostname's name or an address's address after
//!   its network, are answered from the key order instead), later writing tasks, and per-upsert lists
//!   of what each task wrote.
//! - `files`: file metadata, its indexes, blob reference counts and the file id counter.
//! - `state`: tasks (and a newest-first index), schedule claims, schedules (and a due-time index),
//!   object sets, organizations, plugin records and the token denylist (and an expiry index).
//!
//! Keys are order-preserving and prefix-free: a one-byte tag, then components, text escaped and
//! terminated so that `("a|b")` and `("a", "|b")` never collide. The full key layout, the query
//! planning and measurements are in the repository's `docs/store-sled.md`.
//!
//! ## Queries
//!
//! A key restriction is answered by point lookups; field filters by the most selective filter's index
//! entries (found by walking all filters' entries in turn until one runs out), each candidate checked
//! with `ObjectQuery::matches`; otherwise the type's objects stream in key order, and only the page is
//! decoded. Ordering by another field sorts the matches. Finding a hostname by name costs one seek
//! and one B-tree lookup per network, whatever the number of objects.
//!
//! ## Allocator
//!
//! sled allocates on every write; under glibc's malloc its threads contend for the allocator and
//! bulk upserts run at about half the speed they reach with mimalloc (measured in the repository's
//! `docs/store-sled.md`). Binaries embedding the store should set a global allocator such as
//! mimalloc, as `katd` and the benchmarks do, and call [`disable_transparent_huge_pages`] at the
//! start of `main`: with huge pages, the kernel zeroing fresh 2 MiB pages inside sled's writes was
//! the API's write p99.
//!
//! [`SledStore::verify`] scans everything and reports any disagreement between objects, indexes,
//! attribution and file contents.
//!
//! ## Consistency
//!
//! Writes that read before they write (an upsert merging into stored objects, a task transition,
//! a claim) hold a per-tree writer lock from the read to the atomic batch, so concurrent writers
//! serialize and never lose each other's updates; sled allows one process per database, so the lock
//! covers every writer. Reads never wait for writers.
//!
//! ## Durability
//!
//! With [`Durability::FlushEachWrite`] (the default) every write method returns `Ok` only after sled
//! has flushed and fsynced it. With [`Durability::Periodic`] sled flushes in the background every
//! interval: writes are faster but a crash may lose the writes acknowledged during the last interval
//! (never part of a batch: what survives is always whole batches).
//!
//! ## Limits
//!
//! One bulk upsert is one batch in memory (about 11 KB per object at peak, measured); a request larger
//! than
//! [`SledStore::max_batch_objects`] (default [`DEFAULT_MAX_BATCH_OBJECTS`], referenced objects
//! included) is refused with `Error::LimitExceeded` instead of being split, because a split write
//! would no longer be atomic.

#![forbid(unsafe_code)]

mod error;
mod files;
mod keys;
mod levels;
mod objects;
mod record;
mod rules;
mod tasks;
mod work;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use error::SResult;
pub use error::SledStoreError;
pub use objects::VerifyReport;
use serde::Serialize;
use serde::de::DeserializeOwned;
pub use work::UpsertWork;

/// The on-disk format this build writes and reads.
///
/// Stored in the `kat_meta` tree when a database is created. Opening a database of an older version
/// migrates it in place (each step idempotent, so a crash during a migration is finished by the next
/// open); a newer or unknown version fails with `Error::Corrupt` naming both versions.
///
/// Version history:
/// - 1: the first; object records as JSON, hostname names and address addresses indexed.
/// - 2: compact object records (the key is not repeated in the value); a hostname's `name` and an
///   address's `address` are found from the key order, without index entries. Migrated from 1.
/// - 3: scan levels inherited along DNS records: records carry `inherited_from`, and the edges of
///   DNS records have their own keyspace (`e`, `r`). Migrated from 2 (and 1) by writing the edges of
///   the stored records and marking the levels for a full recomputation, which a deployment runs at
///   start ([`kat_core::store::ObjectStore::levels_need_recompute`]).
pub const FORMAT_VERSION: u32 = 3;

/// How long [`SledStore::open`] waits for a locked database before it fails.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Default largest bulk upsert (objects, referenced ones included) accepted in one request.
pub const DEFAULT_MAX_BATCH_OBJECTS: usize = 10_000;

const META_TREE: &str = "kat_meta";
const OBJECTS_TREE: &str = "objects";
const FILES_TREE: &str = "files";
const STATE_TREE: &str = "state";
const VERSION_KEY: &[u8] = b"format_version";

/// Turn off transparent huge pages (THP) for this whole process; elsewhere than on Linux it does
/// nothing.
///
/// Call it once at the start of `main` in a binary that embeds the store, next to choosing the
/// allocator. mimalloc asks the kernel for transparent huge pages on its arenas (and under a system
/// whose THP mode is `always` every allocator gets them), so the first touch of each fresh 2 MiB of
/// heap has the kernel zero all of it at once. sled's heap grows with every write, and those faults
/// land inside the store's writer lock: on the 2-core machine, API writes (2 connections × 50
/// hostnames, flush per request) had a p99 of 11.6–12.7 ms with THP and 5.1 ms without, at the same
/// throughput (docs/store-sled.md). The setting is process-wide, so a library never changes it by
/// itself; `katd` and the benchmarks call this.
///
/// # Errors
/// The kernel's error when it refuses the `prctl`.
///
/// ```
/// kat_store_sled::disable_transparent_huge_pages()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_thp_disable(true).map_err(std::io::Error::from)?;
    Ok(())
}

/// When a write is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A write's `Ok` means it is on disk (sled flushes and fsyncs before the method returns).
    #[default]
    FlushEachWrite,
    /// sled flushes in the background at this interval; a crash may lose the writes acknowledged
    /// during the last interval (whole batches only, never part of one).
    Periodic(Duration),
}

/// How to open a [`SledStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SledOptions {
    /// When writes reach the disk.
    pub durability: Durability,
    /// sled's page cache size in bytes: a limit, not an allocation (default 1 GiB, sled's own
    /// default; docs/store-sled.md, "The page cache").
    pub cache_capacity_bytes: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            durability: Durability::FlushEachWrite,
            cache_capacity_bytes: 1 << 30,
        }
    }
}

/// Objects, files, tasks and schedules on sled. Cheap to clone (the handles are shared).
///
/// Open it once per process (sled locks the database directory) and share clones.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) db: sled::Db,
    pub(crate) objects: sled::Tree,
    pub(crate) files: sled::Tree,
    pub(crate) state: sled::Tree,
    pub(crate) durability: Durability,
    pub(crate) max_batch_objects: AtomicUsize,
    /// Time spent bringing scan levels up to date inside writes, in nanoseconds, and how many writes.
    pub(crate) levels_nanos: AtomicU64,
    pub(crate) levels_writes: AtomicU64,
    /// Where upserts spend their time ([`SledStore::upsert_work`]).
    pub(crate) upsert_clock: work::UpsertClock,
    pub(crate) object_lock: Mutex<()>,
    /// Object writes so far, counted when each releases [`Inner::object_writer`]
    /// ([`kat_core::store::ObjectStore::change_mark`]).
    pub(crate) object_writes: AtomicU64,
    pub(crate) file_lock: Mutex<()>,
    pub(crate) state_lock: Mutex<()>,
    pub(crate) blob_dir: PathBuf,
    pub(crate) tmp_dir: PathBuf,
    /// Organizations and revoked token ids in memory (see [`tasks::Memo`]).
    pub(crate) memo: tasks::Memo,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("dir", &self.inner.dir)
            .field("durability", &self.inner.durability)
            .field(
                "max_batch_objects",
                &self.inner.max_batch_objects.load(AtomicOrdering::Relaxed),
            )
            .finish()
    }
}

/// The object writer lock, held for the whole of one object write. Releasing it counts the write in
/// [`Inner::object_writes`], after the write's batch was applied: whoever reads the count before
/// enumerating objects and finds it unchanged later knows that no write landed in between.
pub(crate) struct ObjectWriter<'a> {
    writes: &'a AtomicU64,
    _guard: MutexGuard<'a, ()>,
}

impl Drop for ObjectWriter<'_> {
    fn drop(&mut self) {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}

impl Inner {
    /// Take the object writer lock ([`ObjectWriter`]).
    pub(crate) fn object_writer(&self) -> ObjectWriter<'_> {
        ObjectWriter {
            writes: &self.object_writes,
            _guard: lock(&self.object_lock),
        }
    }
}

/// Lock a writer mutex; a panic while holding it leaves the database consistent (every write is one
/// atomic batch), so a poisoned lock is still usable.
pub(crate) fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn to_json<T: Serialize>(what: &'static str, v: &T) -> SResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|source| SledStoreError::Encode { what, source })
}

pub(crate) fn from_json<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> SResult<T> {
    serde_json::from_slice(bytes).map_err(|e| SledStoreError::decode(what, e))
}

impl SledStore {
    /// Open (or create) a store in `dir`: the sled database in `dir/db`, file contents in
    /// `dir/files`.
    ///
    /// Blocks. When the database is locked it waits up to [`LOCK_WAIT`] for the lock: a store this
    /// process dropped a moment ago releases it only once sled's background threads have finished.
    ///
    /// # Errors
    /// `Error::Corrupt` when the database was written by another format version (the message names
    /// both) or is unreadable; `Error::Unavailable` when another process has it open (after
    /// [`LOCK_WAIT`]); `Error::Io` for file-system failures.
    pub fn open(dir: &Path, options: SledOptions) -> Result<SledStore, kat_core::Error> {
        Ok(Self::open_inner(dir, options)?)
    }

    fn open_inner(dir: &Path, options: SledOptions) -> SResult<SledStore> {
        let db_dir = dir.join("db");
        let blob_dir = dir.join("files");
        let tmp_dir = blob_dir.join("tmp");
        std::fs::create_dir_all(&tmp_dir)
            .map_err(|e| SledStoreError::io(format!("creating {}", tmp_dir.display()), e))?;
        // Uploads interrupted by a crash leave temporary files; nothing refers to them.
        clear_tmp(&tmp_dir);
        let flush_ms = match options.durability {
            Durability::FlushEachWrite => Some(1_000),
            Durability::Periodic(d) => {
                Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1))
            }
        };
        let config = sled::Config::new()
            .path(&db_dir)
            .cache_capacity(options.cache_capacity_bytes)
            .flush_every_ms(flush_ms);
        let waited = std::time::Instant::now();
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                    if waited.elapsed() >= LOCK_WAIT {
                        return Err(SledStoreError::Locked {
                            path: db_dir.display().to_string(),
                            source: io,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(other) => return Err(SledStoreError::Sled(other)),
            }
        };
        check_format(&db)?;
        let state = db.open_tree(STATE_TREE)?;
        let memo = tasks::Memo::load(&state)?;
        let store = SledStore {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                objects: db.open_tree(OBJECTS_TREE)?,
                files: db.open_tree(FILES_TREE)?,
                state,
                memo,
                db,
                durability: options.durability,
                max_batch_objects: AtomicUsize::new(DEFAULT_MAX_BATCH_OBJECTS),
                levels_nanos: AtomicU64::new(0),
                levels_writes: AtomicU64::new(0),
                upsert_clock: work::UpsertClock::default(),
                object_lock: Mutex::new(()),
                object_writes: AtomicU64::new(0),
                file_lock: Mutex::new(()),
                state_lock: Mutex::new(()),
                blob_dir,
                tmp_dir,
            }),
        };
        let indexed = tasks::index_task_states(&store.inner.state)?;
        if indexed > 0 {
            store.inner.db.flush()?;
            tracing::info!(
                indexed,
                "indexed the queued and running tasks of a database written before leases"
            );
        }
        let numbered = tasks::number_unnumbered(&store.inner.state)?;
        if numbered > 0 {
            store.inner.db.flush()?;
            tracing::info!(
                numbered,
                "gave integer ids to schedules and object sets stored without one"
            );
        }
        tracing::debug!(dir = %dir.display(), durability = ?options.durability, "opened sled store");
        Ok(store)
    }

    /// Flush every write to disk (fsync). Needed only with [`Durability::Periodic`].
    ///
    /// # Errors
    /// `Error::Io` when the flush fails.
    pub async fn flush(&self) -> kat_core::Result<()> {
        Ok(self.flush_blocking().await?)
    }

    /// The largest bulk upsert accepted, in objects (referenced ones included).
    pub fn max_batch_objects(&self) -> usize {
        self.inner.max_batch_objects.load(AtomicOrdering::Relaxed)
    }

    /// Change the largest bulk upsert accepted (at least 1). Larger requests fail with
    /// `Error::LimitExceeded`; one request is one in-memory batch, so this bounds its memory.
    pub fn set_max_batch_objects(&self, max: usize) {
        self.inner
            .max_batch_objects
            .store(max.max(1), AtomicOrdering::Relaxed);
    }

    /// How many writes changed the level graph or a level, and the time they spent bringing the
    /// scan levels up to date (the algorithm, reading edges and levels, and preparing the records
    /// whose level changed; not the write of the batch), since the store was opened: for
    /// benchmarks and operators.
    pub fn levels_work(&self) -> (u64, Duration) {
        (
            self.inner.levels_writes.load(AtomicOrdering::Relaxed),
            Duration::from_nanos(self.inner.levels_nanos.load(AtomicOrdering::Relaxed)),
        )
    }

    /// Where the store's upserts have spent their time since it was opened, phase by phase (sled's
    /// own batch write apart from the store's work around it): for benchmarks and operators.
    pub fn upsert_work(&self) -> UpsertWork {
        self.inner.upsert_clock.read()
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Run blocking database work off the async threads (inline when there is no tokio runtime).
    pub(crate) async fn blocking<T, F>(&self, f: F) -> SResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> SResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => h
                .spawn_blocking(move || f(&inner))
                .await
                .map_err(|e| SledStoreError::Worker(Box::new(e)))?,
            Err(_) => f(&inner),
        }
    }

    /// Store `value` as JSON at `key` of the `state` tree, or remove the entry for `None`, durably:
    /// an organization's override of a plugin's or a rule's enabled flag.
    pub(crate) async fn set_state_entry<T: Serialize + Send + 'static>(
        &self,
        key: Vec<u8>,
        what: &'static str,
        value: Option<T>,
    ) -> SResult<()> {
        self.blocking(move |inner| {
            match value {
                Some(v) => {
                    inner.state.insert(key, to_json(what, &v)?)?;
                }
                None => {
                    inner.state.remove(key)?;
                }
            }
            Ok(())
        })
        .await?;
        self.written().await
    }

    /// Every JSON value under `prefix` of the `state` tree, in key order.
    pub(crate) async fn state_entries<T: DeserializeOwned + Send + 'static>(
        &self,
        prefix: Vec<u8>,
        what: &'static str,
    ) -> SResult<Vec<T>> {
        self.blocking(move |inner| {
            inner
                .state
                .scan_prefix(&prefix)
                .map(|e| {
                    let (_, v) = e?;
                    from_json(what, &v)
                })
                .collect()
        })
        .await
    }

    /// After a write: with [`Durability::FlushEachWrite`], wait until it is on disk.
    pub(crate) async fn written(&self) -> SResult<()> {
        if self.inner.durability == Durability::FlushEachWrite {
            self.flush_blocking().await?;
        }
        Ok(())
    }

    /// Flush and fsync, waiting on a thread of tokio's blocking pool.
    ///
    /// Never sled's `flush_async`: that waits on a thread of sled's own pool, whose count of idle threads
    /// goes wrong once all of them are busy (sled 0.34), so it stops starting threads; with as many
    /// concurrent flushes as it has threads (7), every one of them waits for a log write that is queued
    /// behind them on the same pool, and the store hangs. `flush` waits on the calling thread instead, and
    /// the log writes keep sled's pool to themselves.
    async fn flush_blocking(&self) -> SResult<()> {
        self.blocking(|inner| {
            inner.db.flush()?;
            Ok(())
        })
        .await
    }
}

fn clear_tmp(tmp_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp_dir) else {
        return;
    };
    for e in entries.flatten() {
        if let Err(err) = std::fs::remove_file(e.path()) {
            tracing::warn!(path = %e.path().display(), error = %err, "cannot remove a stale upload");
        }
    }
}

/// Check (or, for a new database, write) the format version.
fn check_format(db: &sled::Db) -> SResult<()> {
    let names = db.tree_names();
    let has = |n: &str| names.iter().any(|t| t.as_ref() == n.as_bytes());
    let found = if has(META_TREE) {
        db.open_tree(META_TREE)?.get(VERSION_KEY)?
    } else {
        None
    };
    let Some(raw) = found else {
        let has_data = [OBJECTS_TREE, FILES_TREE, STATE_TREE]
            .iter()
            .any(|t| has(t))
            || !db.is_empty();
        if has_data {
            return Err(SledStoreError::Format(format!(
                "the database has data but no format version; this build reads format version {FORMAT_VERSION} \
                 and will not guess what it is"
            )));
        }
        let meta = db.open_tree(META_TREE)?;
        meta.insert(VERSION_KEY, FORMAT_VERSION.to_string().as_bytes())?;
        db.flush()?;
        tracing::info!(version = FORMAT_VERSION, "created a new kat sled database");
        return Ok(());
    };
    let text = String::from_utf8_lossy(&raw).to_string();
    let Ok(version) = text.trim().parse::<u32>() else {
        return Err(SledStoreError::Format(format!(
            "unreadable format version {text:?} in the database; this build reads format version {FORMAT_VERSION}"
        )));
    };
    if version == 1 || version == 2 {
        let started = std::time::Instant::now();
        let tree = db.open_tree(OBJECTS_TREE)?;
        let mut changed = 0;
        if version == 1 {
            changed += objects::migrate_v1(&tree)?;
            db.flush()?;
        }
        changed += levels::migrate_v2(&tree)?;
        db.flush()?;
        db.open_tree(META_TREE)?
            .insert(VERSION_KEY, FORMAT_VERSION.to_string().as_bytes())?;
        db.flush()?;
        tracing::info!(
            from = version,
            to = FORMAT_VERSION,
            changed,
            ms = started.elapsed().as_millis() as u64,
            "migrated the kat sled database"
        );
        return Ok(());
    }
    match version.cmp(&FORMAT_VERSION) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(SledStoreError::Format(format!(
            "the database has format version {version}, newer than version {FORMAT_VERSION} that this build \
             reads; open it with a newer kat-store-sled"
        ))),
        // Versions before 1 never existed.
        std::cmp::Ordering::Less => Err(SledStoreError::Format(format!(
            "the database has format version {version}, older than version {FORMAT_VERSION} that this build \
             reads, and there is no migration from it; open it with the kat-store-sled that wrote it and \
             export its data"
        ))),
    }
}
