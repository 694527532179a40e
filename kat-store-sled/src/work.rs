//! Where the store's upserts spend their time: a few clock reads per write, summed since the store
//! was opened, so that a benchmark or an operator can tell sled's own work from the store's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the store's upserts (`ObjectStore::upsert` and `replace`) have spent their time since it
/// was opened, from [`crate::SledStore::upsert_work`]. Each write reads the clock a few times, once
/// per phase, never per object.
///
/// The phases of one upsert, in order: `expanding` (outside the store's one object writer lock:
/// adding the objects the batch refers to, computing and sorting keys), then the serial part,
/// under that lock: `merging` (for each object: reading its stored record, merging the new one
/// into it, its index keys, attribution and edges), `preparing` (scan levels, encoding the records
/// and building sled's batch) and `applying` (sled's `apply_batch` of that one atomic batch), then,
/// outside the lock again,
/// `flushing` (waiting until the write is on disk, with `Durability::FlushEachWrite`).
///
/// ```
/// use kat_core::object::{Object, ObjectType};
/// use kat_core::org::OrgCode;
/// use kat_core::store::ObjectStore;
/// use kat_store_sled::{SledOptions, SledStore};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let rt = tokio::runtime::Runtime::new()?;
/// # rt.block_on(async {
/// let dir = tempfile::tempdir()?;
/// let store = SledStore::open(dir.path(), SledOptions::default())?;
/// let org = OrgCode::new("acme")?;
/// let host = Object::from_json(ObjectType::Hostname, &serde_json::json!({"name": "a.example"}))?;
/// store.upsert(&org, vec![host], None).await?;
/// let work = store.upsert_work();
/// assert_eq!(work.upserts, 1);
/// // The hostname and the network it names.
/// assert_eq!(work.objects, 2);
/// assert!(work.serial() >= work.applying);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # })
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpsertWork {
    /// Upserts that wrote their batch (one that failed counts the phases it completed).
    pub upserts: u64,
    /// Objects they wrote, the ones a batch refers to included.
    pub objects: u64,
    /// Before the lock: expanding the batch, computing its keys, sorting them.
    pub expanding: Duration,
    /// Under the lock, object by object: reading its stored record (sled's `get`), merging into it,
    /// its index keys, attribution and edges.
    pub merging: Duration,
    /// Under the lock: scan levels, encoding the records, building sled's batch.
    pub preparing: Duration,
    /// Under the lock: sled's `apply_batch` of the write's one atomic batch.
    pub applying: Duration,
    /// After the lock: waiting until the write is flushed and fsynced (zero with
    /// `Durability::Periodic`).
    pub flushing: Duration,
}

impl UpsertWork {
    /// The serial part: the time spent under the store's object writer lock, which writes take in
    /// turn.
    pub fn serial(&self) -> Duration {
        self.merging + self.preparing + self.applying
    }

    /// All of it.
    pub fn total(&self) -> Duration {
        self.expanding + self.serial() + self.flushing
    }

    /// What was spent between `earlier` and this reading (both of the same store).
    pub fn since(&self, earlier: &UpsertWork) -> UpsertWork {
        self.zip(earlier, u64::saturating_sub, Duration::saturating_sub)
    }

    /// Each count and each phase of the two, combined by `count` and `time`.
    fn zip(
        &self,
        other: &UpsertWork,
        count: fn(u64, u64) -> u64,
        time: fn(Duration, Duration) -> Duration,
    ) -> UpsertWork {
        UpsertWork {
            upserts: count(self.upserts, other.upserts),
            objects: count(self.objects, other.objects),
            expanding: time(self.expanding, other.expanding),
            merging: time(self.merging, other.merging),
            preparing: time(self.preparing, other.preparing),
            applying: time(self.applying, other.applying),
            flushing: time(self.flushing, other.flushing),
        }
    }
}

/// The two summed, phase by phase (for work measured in parts).
impl std::ops::Add for UpsertWork {
    type Output = UpsertWork;

    fn add(self, other: UpsertWork) -> UpsertWork {
        self.zip(&other, u64::saturating_add, Duration::saturating_add)
    }
}

/// A phase of [`UpsertWork`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    Expanding,
    Merging,
    Preparing,
    Applying,
    Flushing,
}

/// The running sums behind [`UpsertWork`], in nanoseconds.
#[derive(Debug, Default)]
pub(crate) struct UpsertClock {
    upserts: AtomicU64,
    objects: AtomicU64,
    phases: [AtomicU64; 5],
}

impl UpsertClock {
    /// Add the time since `since` to `phase`; the current instant, for the next phase.
    pub(crate) fn lap(&self, phase: Phase, since: Instant) -> Instant {
        let now = Instant::now();
        let nanos =
            u64::try_from(now.saturating_duration_since(since).as_nanos()).unwrap_or(u64::MAX);
        self.phases[phase as usize].fetch_add(nanos, Ordering::Relaxed);
        now
    }

    /// Count one upsert of `objects` objects.
    pub(crate) fn count(&self, objects: usize) {
        self.upserts.fetch_add(1, Ordering::Relaxed);
        self.objects.fetch_add(
            u64::try_from(objects).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn read(&self) -> UpsertWork {
        let phase =
            |p: Phase| Duration::from_nanos(self.phases[p as usize].load(Ordering::Relaxed));
        UpsertWork {
            upserts: self.upserts.load(Ordering::Relaxed),
            objects: self.objects.load(Ordering::Relaxed),
            expanding: phase(Phase::Expanding),
            merging: phase(Phase::Merging),
            preparing: phase(Phase::Preparing),
            applying: phase(Phase::Applying),
            flushing: phase(Phase::Flushing),
        }
    }
}
