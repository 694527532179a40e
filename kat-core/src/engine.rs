//! The engine: turns plugin definitions, objects and schedules into tasks, runs each task as one
//! container with a token scoped to it, and records how every task ended.
//!
//! - **Tasks** come from schedules ([`Engine::tick`]), from the API or the library ([`TaskControl::submit`])
//!   and from new files ([`TaskControl::file_stored`], normalizer chaining). States: queued → running →
//!   completed | failed | cancelled | timed_out; every task reaches a final state on every path.
//! - **Scan levels** gate every path: a target object must have a scan level at least the plugin's; for a
//!   file-triggered task, the level the file carries from the objects its chain started from
//!   ([`crate::chain`]) must, and every object the producing task ran on must still.
//! - **The queue is the store.** Tasks are queued by writing them ([`TaskQueue::create_tasks`](crate::store::TaskQueue::create_tasks));
//!   several engines (replicas, [`EngineConfig::roles`]) may share one store: API replicas queue and
//!   cancel, workers run, schedulers tick.
//! - **Workers**: a bounded pool (`concurrency`) claims as many queued tasks as it has free slots
//!   ([`TaskQueue::claim_tasks`](crate::store::TaskQueue::claim_tasks): oldest first, atomically, so a task runs once
//!   across replicas), when woken (a task queued by this engine, a slot freed) or every
//!   [`EngineConfig::poll_interval`] (tasks queued by other replicas). A claimed task is running under
//!   a lease of [`EngineConfig::lease`] held by [`EngineConfig::worker_id`], renewed every third of
//!   it while the container runs. The worker plans the task ([`crate::plan`]), stores mode 4's stdin as a
//!   temporary file, makes sure the image is present ([`ContainerRuntime::ensure_image`]), then mints a
//!   token scoped to the task that expires at the deadline plus a grace, records the token's id on the
//!   task, runs the container, records the outcome
//!   ([`TaskQueue::finish_leased`](crate::store::TaskQueue::finish_leased): only while it holds the lease),
//!   then revokes the token and deletes the temporary files.
//! - **A lost lease** (a renewal refused: the task was cancelled through another replica, or recovered
//!   by another worker after this one stalled) stops the container at once; the worker writes nothing
//!   about the task.
//! - **Privileges**: a plugin asking for a user or capabilities beyond what the operator's
//!   [`Policy`] grants is refused at submit, skipped by schedules and chaining, and fails before its
//!   container is created; a plugin asking for nothing gets its grant
//!   ([`Policy::privileges`]: user, capabilities, writable paths, extra API permissions).
//! - **Cancellation** ends the task `cancelled` in the store and revokes its token; the container stops at
//!   once when it runs on this engine, else at its worker's next renewal (within a third of the lease).
//! - **Lease recovery** (every worker, at start and every third of the lease): a running task whose
//!   lease ended, that has no lease (left by a version before leases), or, at start, whose lease is this
//!   worker's own (it died with the previous process) is failed with a reason, or requeued when its
//!   plugin is idempotent, and its token revoked, in one store write, exactly once whoever runs it
//!   ([`TaskQueue::recover_expired`](crate::store::TaskQueue::recover_expired)). Restart recovery is this, with
//!   the restarted worker as the owner. Then the deployment's containers whose task no live lease
//!   holds are removed, whichever worker sees them.
//! - **Heartbeats**: every engine writes its [`ReplicaInfo`] every [`EngineConfig::heartbeat_interval`]
//!   ([`ReplicaRegistry`](crate::store::ReplicaRegistry)).
//!
//! The embedding application owns the tokio runtime; [`Engine::start`] spawns the loops of the
//! engine's roles on it and [`Engine::shutdown`] stops them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kat_protocol::env as protocol_env;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::clock::Timestamp;
use crate::control::{TaskControl, TaskRequest};
use crate::object::{HostnameRef, IpRef, NaturalKey, Object, ObjectType, UrlRef};
use crate::org::OrgCode;
use crate::plan::{self, PlanInput, Stdin, Target};
use crate::plugin::{DEFAULT_BATCH_SIZE, PluginDef, PluginRecord};
use crate::policy::Policy;
use crate::replica::{ReplicaInfo, Role};
use crate::runtime::{
    ContainerRuntime, ContainerSpec, EndReason, EntrypointBinary, EntrypointMount, Hardening,
    LABEL_DEPLOYMENT, LABEL_ORG, LABEL_PLUGIN, LABEL_TASK, Limits, NetworkMode,
};
use crate::schedule::{ObjectSet, Schedule, ScheduleId};
use crate::store::{
    FileId, FileMeta, FileStore, NewFile, ObjectQuery, ObjectStore, TaskQuery, TaskStore, scan_of,
    scan_of_key,
};
use crate::task::{ObjectRef, Task, TaskId, TaskInput, TaskPatch, TaskState, TaskToken};
use crate::token::{Claims, TokenAuthority};
use crate::{Error, Result};

/// The file type of the temporary files the engine stores for a task: mode 4's stdin, and the commands
/// file of a task with too many commands for one environment variable.
pub const STDIN_FILE_TYPE: &str = "kat-stdin";
/// The type of error output files (the entrypoint uploads a failed command's stderr with it); they never
/// trigger normalizers.
pub const ERROR_FILE_TYPE: &str = kat_protocol::ERROR_FILE_TYPE;

/// How the engine runs tasks.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The API's base URL as containers reach it (`OPENKAT_API`), e.g. `http://127.0.0.1:8000/api/v1`.
    pub api_url: String,
    /// The named volume holding the entrypoint (`ENTRYPOINT_VOLUME`).
    pub entrypoint_volume: String,
    /// The static entrypoint binary to put in the volume at start; `None` to use a volume prepared
    /// elsewhere (or to run images' own entrypoints when `use_entrypoint` is false).
    pub entrypoint_binary: Option<EntrypointBinary>,
    /// Whether containers run through the entrypoint (always, in a deployment).
    pub use_entrypoint: bool,
    /// The network plugin containers join (`DOCKER_NETWORK`).
    pub network: NetworkMode,
    /// A task's deadline (`PLUGIN_TIMEOUT`), unless its plugin sets `timeout_seconds`.
    pub plugin_timeout: Duration,
    /// How many tasks run at once.
    pub concurrency: usize,
    /// The batch size for plugins that set none.
    pub default_batch_size: u32,
    /// How often the scheduler looks for due schedules.
    pub tick_interval: Duration,
    /// Resource limits of plugin containers.
    pub limits: Limits,
    /// How much of a task's stderr to keep.
    pub stderr_tail_bytes: usize,
    /// The deployment this engine belongs to (`KAT_DEPLOYMENT`; see
    /// [`check_deployment`](crate::runtime::check_deployment)). Every container it starts carries it
    /// as the `kat.deployment` label, and reaping only touches that deployment's containers, so
    /// deployments sharing one container engine must have different names. Containers without the
    /// label (made by versions before it existed) belong to
    /// [`DEFAULT_DEPLOYMENT`](crate::runtime::DEFAULT_DEPLOYMENT), the default.
    pub deployment: String,
    /// Whether a worker removes this deployment's containers whose task no live lease holds (left
    /// behind by a crashed or stalled worker): at [`Engine::start`] and at every recovery pass.
    pub reap_at_start: bool,
    /// This engine's id among the replicas sharing the store (`KAT_WORKER_ID`; default
    /// [`DEFAULT_WORKER_ID`]): the holder of its leases and the id of its heartbeat. Stable across
    /// restarts of one process (so that a restarted worker recovers what it held at once), and
    /// distinct for every replica of one database.
    pub worker_id: String,
    /// How long a claimed task's lease lasts (`KAT_LEASE_SECONDS`; default 30 s). The worker renews
    /// it every third of this; a worker silent for longer loses its tasks to recovery.
    pub lease: Duration,
    /// How often a worker looks for tasks other replicas queued (`KAT_POLL_MS`; default 250 ms).
    /// Tasks this engine queues wake its worker at once.
    pub poll_interval: Duration,
    /// Which loops [`Engine::start`] runs (`KAT_ROLES`, e.g. `api,worker`; default all): a worker
    /// claims and runs tasks, recovers expired leases and reaps; a scheduler ticks; an engine
    /// without either (an API replica) only queues and cancels tasks.
    pub roles: BTreeSet<Role>,
    /// How often the engine writes its heartbeat ([`ReplicaInfo`]); default 5 s.
    pub heartbeat_interval: Duration,
}

/// The default [`EngineConfig::worker_id`]: one process per data directory needs no other.
pub const DEFAULT_WORKER_ID: &str = "local";

/// How long a replica may be silent before the others forget its heartbeat.
pub const FORGET_REPLICAS_AFTER: Duration = Duration::from_secs(24 * 3600);

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            api_url: "http://localhost:8000/api/v1".into(),
            entrypoint_volume: crate::runtime::DEFAULT_ENTRYPOINT_VOLUME.into(),
            entrypoint_binary: None,
            use_entrypoint: true,
            network: NetworkMode::Bridge,
            plugin_timeout: Duration::from_secs(15 * 60),
            concurrency: 4,
            default_batch_size: DEFAULT_BATCH_SIZE,
            tick_interval: Duration::from_secs(10),
            limits: Limits::default(),
            stderr_tail_bytes: 8 * 1024,
            deployment: crate::runtime::DEFAULT_DEPLOYMENT.into(),
            reap_at_start: true,
            worker_id: DEFAULT_WORKER_ID.into(),
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(250),
            roles: Role::ALL.into_iter().collect(),
            heartbeat_interval: Duration::from_secs(5),
        }
    }
}

impl EngineConfig {
    /// Read the seed's environment variables over the defaults: `ENTRYPOINT_VOLUME`, `OPENKAT_HOST`
    /// (the API is `{OPENKAT_HOST}/api/v1`), `DOCKER_NETWORK`, `PLUGIN_TIMEOUT` (minutes, more than 0
    /// and at most [`MAX_PLUGIN_TIMEOUT_MINUTES`]), and ours: `KAT_DEPLOYMENT`, and for replicas
    /// sharing one database `KAT_WORKER_ID` (1 to 128 letters, digits and `-_.:@`), `KAT_ROLES`
    /// (comma-separated `api`, `worker`, `scheduler`), `KAT_LEASE_SECONDS` (3 to 3600) and
    /// `KAT_POLL_MS` (10 to 60000).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming a variable with a bad value.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`EngineConfig::from_env`], reading variables through `lookup`.
    ///
    /// ```
    /// use kat_core::engine::EngineConfig;
    /// let c = EngineConfig::from_lookup(|k| (k == "PLUGIN_TIMEOUT").then(|| "2".to_string())).unwrap();
    /// assert_eq!(c.plugin_timeout.as_secs(), 120);
    /// ```
    ///
    /// # Errors
    /// [`Error::Invalid`] naming a variable with a bad value.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut c = EngineConfig::default();
        let var = |k: &str| lookup(k).filter(|v| !v.is_empty());
        if let Some(v) = var("ENTRYPOINT_VOLUME") {
            c.entrypoint_volume = v;
        }
        if let Some(v) = var("OPENKAT_HOST") {
            c.api_url = format!("{}/api/v1", v.trim_end_matches('/'));
        }
        if let Some(v) = var("DOCKER_NETWORK") {
            c.network = NetworkMode::parse(&v);
        }
        if let Some(v) = var("PLUGIN_TIMEOUT") {
            c.plugin_timeout = parse_plugin_timeout(&v)?;
        }
        if let Some(v) = var("KAT_DEPLOYMENT") {
            crate::runtime::check_deployment(&v)
                .map_err(|e| Error::invalid("KAT_DEPLOYMENT", e.to_string()))?;
            c.deployment = v;
        }
        if let Some(v) = var("KAT_WORKER_ID") {
            check_worker_id(&v)?;
            c.worker_id = v;
        }
        if let Some(v) = var("KAT_ROLES") {
            c.roles = Role::parse_list(&v)?;
        }
        if let Some(v) = var("KAT_LEASE_SECONDS") {
            c.lease = Duration::from_secs(parse_bounded("KAT_LEASE_SECONDS", &v, 3, 3600)?);
        }
        if let Some(v) = var("KAT_POLL_MS") {
            c.poll_interval = Duration::from_millis(parse_bounded("KAT_POLL_MS", &v, 10, 60_000)?);
        }
        Ok(c)
    }

    /// Whether the engine has `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Check a worker id (`KAT_WORKER_ID`): 1 to 128 ASCII letters, digits and `-_.:@`.
///
/// ```
/// use kat_core::engine::check_worker_id;
/// assert!(check_worker_id("worker-2@host.example").is_ok());
/// assert!(check_worker_id("").is_err());
/// assert!(check_worker_id("a b").is_err());
/// ```
///
/// # Errors
/// [`Error::Invalid`] saying what is wrong.
pub fn check_worker_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "KAT_WORKER_ID",
            format!("{id:?} is not a worker id: 1 to 128 ASCII letters, digits and -_.:@"),
        ))
    }
}

/// An integer variable between `min` and `max`.
fn parse_bounded(name: &str, v: &str, min: u64, max: u64) -> Result<u64> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            Error::invalid(
                name,
                format!("{name}={v:?} is not a whole number from {min} to {max}"),
            )
        })
}

/// The longest `PLUGIN_TIMEOUT`, in minutes: seven days, the same bound as a plugin's
/// `timeout_seconds`.
pub const MAX_PLUGIN_TIMEOUT_MINUTES: f64 = 7.0 * 24.0 * 60.0;

/// `PLUGIN_TIMEOUT`: minutes, more than 0 and at most [`MAX_PLUGIN_TIMEOUT_MINUTES`], fractions allowed.
fn parse_plugin_timeout(v: &str) -> Result<Duration> {
    let minutes = v
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|m| m.is_finite() && *m > 0.0 && *m <= MAX_PLUGIN_TIMEOUT_MINUTES)
        .ok_or_else(|| {
            Error::invalid(
                "PLUGIN_TIMEOUT",
                format!(
                    "PLUGIN_TIMEOUT={v:?} is not a timeout: expected minutes, more than 0 and at most {MAX_PLUGIN_TIMEOUT_MINUTES} (7 days)"
                ),
            )
        })?;
    Duration::try_from_secs_f64(minutes * 60.0)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Error::invalid(
                "PLUGIN_TIMEOUT",
                format!("PLUGIN_TIMEOUT={v:?} is not a timeout: it rounds to no time at all"),
            )
        })
}

/// Builds an [`Engine`] from its parts.
#[derive(Debug, Default)]
pub struct EngineBuilder {
    objects: Option<Arc<dyn ObjectStore>>,
    files: Option<Arc<dyn FileStore>>,
    tasks: Option<Arc<dyn TaskStore>>,
    runtime: Option<Arc<dyn ContainerRuntime>>,
    tokens: Option<Arc<dyn TokenAuthority>>,
    config: EngineConfig,
    policy: Policy,
    rules: Option<Arc<crate::rules::RuleSet>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl EngineBuilder {
    /// The metrics the engine counts into (default: its own); share them with the API so that
    /// `GET /metrics` shows both.
    pub fn metrics(mut self, m: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(m);
        self
    }

    /// The business rules (default: none). The engine evaluates them when the API writes objects
    /// ([`TaskControl::objects_written`]) and when a task completes (its targets count as
    /// processed by its plugin, for rules' `requires`).
    pub fn rules(mut self, r: Arc<crate::rules::RuleSet>) -> Self {
        self.rules = Some(r);
        self
    }
    /// The object store.
    pub fn objects(mut self, s: Arc<dyn ObjectStore>) -> Self {
        self.objects = Some(s);
        self
    }
    /// The file store.
    pub fn files(mut self, s: Arc<dyn FileStore>) -> Self {
        self.files = Some(s);
        self
    }
    /// The task store.
    pub fn tasks(mut self, s: Arc<dyn TaskStore>) -> Self {
        self.tasks = Some(s);
        self
    }
    /// The container runtime.
    pub fn runtime(mut self, r: Arc<dyn ContainerRuntime>) -> Self {
        self.runtime = Some(r);
        self
    }
    /// The token authority.
    pub fn tokens(mut self, t: Arc<dyn TokenAuthority>) -> Self {
        self.tokens = Some(t);
        self
    }
    /// The configuration.
    pub fn config(mut self, c: EngineConfig) -> Self {
        self.config = c;
        self
    }
    /// The operator's privilege policy (default: nothing beyond the hardened default). The engine
    /// checks every task's plugin against it when the task is submitted and again before it creates
    /// the container.
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }

    /// Build the engine (nothing runs until [`Engine::start`]).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming a missing part.
    pub fn build(self) -> Result<Engine> {
        let missing = |what: &str| Error::invalid("engine", format!("the engine needs {what}"));
        let config = self.config;
        if config.concurrency == 0 {
            return Err(Error::invalid("concurrency", "must be at least 1"));
        }
        check_worker_id(&config.worker_id)?;
        if config.lease < Duration::from_millis(30) {
            return Err(Error::invalid("lease", "must be at least 30 ms"));
        }
        crate::runtime::check_deployment(&config.deployment)?;
        let objects = self.objects.ok_or_else(|| missing("an object store"))?;
        let tasks = self.tasks.ok_or_else(|| missing("a task store"))?;
        let rules = Arc::new(crate::rules::RuleRunner::new(
            self.rules.unwrap_or_default(),
            objects.clone(),
            tasks.clone(),
        ));
        Ok(Engine {
            inner: Arc::new(Inner {
                objects,
                files: self.files.ok_or_else(|| missing("a file store"))?,
                tasks,
                rules,
                runtime: self.runtime.ok_or_else(|| missing("a container runtime"))?,
                tokens: self.tokens.ok_or_else(|| missing("a token authority"))?,
                policy: self.policy,
                slots: Arc::new(Semaphore::new(config.concurrency)),
                config,
                running: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                shutdown: CancellationToken::new(),
                mount: tokio::sync::OnceCell::new(),
                started_at: Timestamp::now(),
                metrics: self.metrics.unwrap_or_default(),
                open_batches: Mutex::new(HashMap::new()),
                written_orgs: Mutex::new(HashSet::new()),
                seen_marks: Mutex::new(HashMap::new()),
                set_memos: Mutex::new(HashMap::new()),
            }),
        })
    }
}

struct Running {
    cancel: CancellationToken,
    jti: Option<(String, i64)>,
}

struct Inner {
    objects: Arc<dyn ObjectStore>,
    files: Arc<dyn FileStore>,
    tasks: Arc<dyn TaskStore>,
    rules: Arc<crate::rules::RuleRunner>,
    runtime: Arc<dyn ContainerRuntime>,
    tokens: Arc<dyn TokenAuthority>,
    policy: Policy,
    config: EngineConfig,
    slots: Arc<Semaphore>,
    running: Mutex<HashMap<TaskId, Running>>,
    wake: Notify,
    shutdown: CancellationToken,
    mount: tokio::sync::OnceCell<Option<EntrypointMount>>,
    /// When the engine was built (its heartbeat's `started_at`).
    started_at: Timestamp,
    /// What this replica counts ([`crate::metrics`]).
    metrics: Arc<crate::metrics::Metrics>,
    /// Per organization and file-consuming plugin, the file-triggered task that later files may
    /// still join while it is queued and has room (see [`Engine::join_batch`]).
    open_batches: Mutex<HashMap<(OrgCode, String), TaskId>>,
    /// Organizations whose objects were written through the API since the last tick: their
    /// schedules get a catch-up pass (see [`Engine::tick`]).
    written_orgs: Mutex<HashSet<OrgCode>>,
    /// The store's write marks as the last tick saw them ([`ScheduleStore::written_marks`](crate::store::ScheduleStore::written_marks)): on a
    /// store shared by replicas, an organization whose mark changed was written through another
    /// replica's API and gets a catch-up pass too.
    seen_marks: Mutex<HashMap<OrgCode, i64>>,
    /// Per schedule and organization, what the last enumeration of its object set found
    /// ([`SetMemo`]).
    set_memos: Mutex<HashMap<(ScheduleId, OrgCode), SetMemo>>,
}

/// What the scheduler remembers of an object set it enumerated and claimed in full: while the
/// object store's change mark ([`ObjectStore::change_mark`]) is what it was before that
/// enumeration, the set's definition and the plugin's level are the same, and the current window
/// has not passed the oldest of the targets' claims, enumerating the set again would find every
/// target claimed. A schedule that runs again in the same interval, or catches up after writes
/// elsewhere, then costs a hash lookup instead of a scan of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SetMemo {
    fingerprint: u64,
    mark: u64,
    /// The oldest claim among the targets; `None` when the set had no target (nothing can expire).
    oldest: Option<Timestamp>,
    targets: usize,
}

/// Memos kept at most; beyond, they are forgotten (and the sets enumerated again).
const MAX_SET_MEMOS: usize = 10_000;

/// What a [`SetMemo`] is about: the set's definition and the plugin's scan level. `None` (no memo)
/// if the set cannot be serialized.
fn set_fingerprint(set: &ObjectSet, plugin: &PluginDef) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(set).ok()?.hash(&mut h);
    plugin.scan_level.hash(&mut h);
    Some(h.finish())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// What a scheduler tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Schedules that were due.
    pub schedules: usize,
    /// Tasks created.
    pub tasks: usize,
    /// Targets refused or skipped (already scheduled in this interval, or below the scan level).
    pub skipped: usize,
    /// Schedules disabled because their owner is gone (token revoked or expired, or no longer
    /// holding the plugin's permissions); each carries its reason.
    pub disabled: usize,
    /// Schedules that were not due but ran a catch-up pass because objects of their organization
    /// were written since the last tick: only targets not yet scheduled in the current interval get
    /// tasks (an object found, or newly cleared, in the middle of an interval is scanned at the next
    /// tick instead of an interval later).
    pub caught_up: usize,
}

/// What the recovery at start ([`Engine::recover`]) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Tasks whose worker is gone (lease ended, no lease, or this worker's own) that were failed.
    pub failed: Vec<TaskId>,
    /// Such tasks queued again (idempotent plugins).
    pub requeued: Vec<TaskId>,
    /// Containers removed because no live lease holds their task.
    pub reaped: Vec<String>,
    /// Tasks queued in the store afterwards (every worker of the store may claim them).
    pub queued: usize,
    /// Tokens of interrupted attempts revoked (one per task left running that had one).
    pub revoked: usize,
    /// When the object store said its scan levels needed a full recomputation (after a migration),
    /// how many objects' levels the recomputation changed.
    pub levels_recomputed: Option<u64>,
}

impl Engine {
    /// A builder.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The operator's privilege policy.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The business rules' runner.
    pub fn rules(&self) -> &Arc<crate::rules::RuleRunner> {
        &self.inner.rules
    }

    /// The task store.
    pub fn task_store(&self) -> &Arc<dyn TaskStore> {
        &self.inner.tasks
    }

    /// The metrics this engine counts into.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.inner.metrics
    }

    /// Recover from a previous run ([`Engine::recover`]), prepare the entrypoint, and start the loops
    /// of the engine's roles ([`EngineConfig::roles`]): a worker's claims, lease renewals, recovery
    /// passes and reaping; a scheduler's ticks; every engine's heartbeat.
    ///
    /// # Errors
    /// Store or runtime errors during recovery or entrypoint preparation.
    pub async fn start(&self) -> Result<Recovery> {
        let config = &self.inner.config;
        let recovery = self.recover().await?;
        let worker = config.has_role(Role::Worker);
        if worker {
            self.prepare_entrypoint().await?;
            let me = self.clone();
            tokio::spawn(
                async move { me.dispatch_loop().await }.instrument(info_span!("kat.dispatch")),
            );
            let me = self.clone();
            tokio::spawn(
                async move { me.recovery_loop().await }.instrument(info_span!("kat.recovery")),
            );
        }
        if config.has_role(Role::Scheduler) {
            let me = self.clone();
            tokio::spawn(
                async move { me.schedule_loop().await }.instrument(info_span!("kat.scheduler")),
            );
        }
        let me = self.clone();
        tokio::spawn(
            async move { me.heartbeat_loop().await }.instrument(info_span!("kat.heartbeat")),
        );
        info!(
            worker = %config.worker_id,
            roles = ?config.roles,
            failed = recovery.failed.len(),
            requeued = recovery.requeued.len(),
            reaped = recovery.reaped.len(),
            queued = recovery.queued,
            "engine started"
        );
        Ok(recovery)
    }

    /// Stop taking new work, cancel running tasks and wait (up to `grace`) for them to end.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.shutdown.cancel();
        let ids: Vec<TaskId> = lock(&self.inner.running).keys().copied().collect();
        for id in ids {
            if let Some(r) = lock(&self.inner.running).get(&id) {
                r.cancel.cancel();
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !lock(&self.inner.running).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn prepare_entrypoint(&self) -> Result<Option<EntrypointMount>> {
        let inner = &self.inner;
        let mount = inner
            .mount
            .get_or_try_init(|| async {
                if !inner.config.use_entrypoint {
                    return Ok::<_, Error>(None);
                }
                match &inner.config.entrypoint_binary {
                    Some(bin) => Ok(Some(
                        inner
                            .runtime
                            .prepare_entrypoint(
                                bin,
                                &inner.config.entrypoint_volume,
                                &inner.config.deployment,
                            )
                            .await?,
                    )),
                    None => Ok(Some(EntrypointMount {
                        volume: inner.config.entrypoint_volume.clone(),
                        sha256: String::new(),
                    })),
                }
            })
            .await?;
        Ok(mount.clone())
    }

    /// Recover at start: recompute the scan levels when the object store says they need it
    /// ([`ObjectStore::levels_need_recompute`]), before any schedule reads them; then, for a worker,
    /// the lease recovery every worker runs periodically, with this worker as the owner: every task
    /// left running under this worker's id (it died with the process), under a lease that ended,
    /// or without a lease (left by a version before leases) is failed, or requeued when its plugin
    /// is idempotent, and its token revoked ([`TaskQueue::recover_expired`](crate::store::TaskQueue::recover_expired));
    /// and this deployment's containers whose task no live lease holds are removed
    /// ([`EngineConfig::reap_at_start`]). Restart recovery is lease recovery: no separate rule.
    ///
    /// # Errors
    /// Store or runtime errors.
    pub async fn recover(&self) -> Result<Recovery> {
        let inner = &self.inner;
        let mut rec = Recovery::default();
        if inner.objects.levels_need_recompute().await? {
            let started = std::time::Instant::now();
            let changed = inner.objects.recompute_levels(None).await?;
            info!(
                changed,
                ms = started.elapsed().as_millis() as u64,
                "recomputed every scan level at start"
            );
            rec.levels_recomputed = Some(changed);
        }
        if inner.config.has_role(Role::Worker) {
            let owner = inner.config.worker_id.clone();
            self.recover_leases(Some(&owner), &mut rec).await?;
            if inner.config.reap_at_start {
                rec.reaped = self.reap(true).await?;
            }
        }
        let q = TaskQuery {
            states: Some(vec![TaskState::Queued]),
            limit: 1,
            ..TaskQuery::default()
        };
        rec.queued = usize::try_from(inner.tasks.list_tasks(&q).await?.count).unwrap_or(usize::MAX);
        Ok(rec)
    }

    /// One recovery pass ([`TaskQueue::recover_expired`](crate::store::TaskQueue::recover_expired)
    /// at now, for `owner`), adding what it did to `rec`. The tokens of the interrupted attempts
    /// are revoked by the store in the recovery's write, and again through the token authority
    /// (for an authority that keeps its own list).
    async fn recover_leases(&self, owner: Option<&str>, rec: &mut Recovery) -> Result<()> {
        const PASS: usize = 500;
        let inner = &self.inner;
        let requeue: Vec<String> = inner
            .tasks
            .list_plugins()
            .await?
            .into_iter()
            .filter(|p| p.def.idempotent)
            .map(|p| p.def.plugin_id)
            .collect();
        loop {
            let now = Timestamp::now();
            let got = inner
                .tasks
                .recover_expired(now, &requeue, owner, PASS)
                .await?;
            let n = got.len();
            inner.metrics.leases_expired(n as u64);
            for t in got {
                if let Some(tok) = &t.token {
                    rec.revoked += 1;
                    if let Err(e) = inner.tokens.revoke(&tok.jti, tok.exp).await {
                        warn!(task = %t.id, error = %e, "could not revoke the interrupted attempt's token");
                    }
                }
                info!(task = %t.id, plugin = %t.plugin_id, state = %t.state, reason = ?t.reason, "recovered a task whose worker is gone");
                if t.state == TaskState::Queued {
                    rec.requeued.push(t.id);
                } else {
                    rec.failed.push(t.id);
                }
            }
            if !rec.requeued.is_empty() {
                inner.wake.notify_one();
            }
            if n < PASS {
                return Ok(());
            }
        }
    }

    /// Remove this deployment's containers whose task no live lease holds (a crashed or stalled
    /// worker's, wherever it ran, as long as this engine sees the container engine). The runtime
    /// is asked to reap only when the listing shows such a container, or when `always` (at start,
    /// to remove helper containers too); what it keeps is every task running here and every task
    /// the store has running under a live lease.
    async fn reap(&self, always: bool) -> Result<Vec<String>> {
        let inner = &self.inner;
        let deployment = &inner.config.deployment;
        let now = Timestamp::now();
        let local =
            |inner: &Inner| -> HashSet<TaskId> { lock(&inner.running).keys().copied().collect() };
        let mut dead = always;
        if !dead {
            let here = local(inner);
            for c in inner.runtime.list_managed().await? {
                if !c.belongs_to(deployment) {
                    continue;
                }
                let Some(id) = c.task else {
                    dead = true;
                    break;
                };
                if here.contains(&id) {
                    continue;
                }
                let live = inner
                    .tasks
                    .get_task(id)
                    .await?
                    .is_some_and(|t| holds_live_lease(&t, now));
                if !live {
                    dead = true;
                    break;
                }
            }
        }
        if !dead {
            return Ok(Vec::new());
        }
        let q = TaskQuery {
            states: Some(vec![TaskState::Running]),
            ..TaskQuery::default()
        };
        let now = Timestamp::now();
        let mut live: HashSet<TaskId> = inner
            .tasks
            .list_tasks(&q)
            .await?
            .items
            .into_iter()
            .filter(|t| holds_live_lease(t, now))
            .map(|t| t.id)
            .collect();
        live.extend(local(inner));
        let reaped = inner.runtime.reap_orphans(deployment, &live).await?;
        if !reaped.is_empty() {
            info!(
                reaped = reaped.len(),
                "removed containers whose task no live lease holds"
            );
        }
        Ok(reaped)
    }

    /// A worker's periodic pass, every third of the lease: recover expired leases, then reap.
    async fn recovery_loop(&self) {
        let every = self.inner.config.lease / 3;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.inner.shutdown.cancelled() => return,
            }
            let mut rec = Recovery::default();
            if let Err(e) = self.recover_leases(None, &mut rec).await {
                warn!(error = %e, "lease recovery failed");
            }
            if self.inner.config.reap_at_start
                && let Err(e) = self.reap(false).await
            {
                warn!(error = %e, "reaping failed");
            }
        }
    }

    /// This engine's heartbeat, now.
    fn replica_info(&self) -> ReplicaInfo {
        let c = &self.inner.config;
        ReplicaInfo {
            id: c.worker_id.clone(),
            roles: c.roles.clone(),
            started_at: self.inner.started_at,
            last_seen: Timestamp::now(),
            running: u32::try_from(lock(&self.inner.running).len()).unwrap_or(u32::MAX),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Write the heartbeat every [`EngineConfig::heartbeat_interval`], and forget replicas silent
    /// for [`FORGET_REPLICAS_AFTER`]. Before each heartbeat but the first, check that nobody else
    /// wrote one under this worker id since the last: two processes with one id would renew,
    /// finish and recover each other's tasks (the first is not checked: the record may be this
    /// replica's previous process's).
    async fn heartbeat_loop(&self) {
        let mut last: Option<Timestamp> = None;
        loop {
            if let Some(last) = last {
                self.check_twin(last).await;
            }
            let info = self.replica_info();
            let seen = info.last_seen;
            match self.inner.tasks.heartbeat(info).await {
                Ok(()) => last = Some(seen),
                Err(e) => warn!(error = %e, "could not write the heartbeat"),
            }
            let forget = Timestamp::now().plus_millis(-duration_ms(FORGET_REPLICAS_AFTER));
            if let Err(e) = self.inner.tasks.purge_replicas(forget).await {
                warn!(error = %e, "could not forget silent replicas");
            }
            tokio::select! {
                () = tokio::time::sleep(self.inner.config.heartbeat_interval) => {}
                () = self.inner.shutdown.cancelled() => return,
            }
        }
    }

    /// Warn (and say so) when the heartbeat under this worker id was written by another process
    /// since `last`.
    async fn check_twin(&self, last: Timestamp) -> bool {
        let me = &self.inner.config.worker_id;
        match self.inner.tasks.list_replicas().await {
            Ok(all) => {
                if let Some(other) = all.iter().find(|r| {
                    &r.id == me && r.started_at != self.inner.started_at && r.last_seen > last
                }) {
                    warn!(
                        worker = %me,
                        other_started_at = %other.started_at,
                        "another process writes heartbeats under this worker id: give every replica its own KAT_WORKER_ID, or they take each other's tasks"
                    );
                    return true;
                }
                false
            }
            Err(e) => {
                warn!(error = %e, "could not read the replicas' heartbeats");
                false
            }
        }
    }

    /// Store the id and expiry of a running task's token on its record before the container gets
    /// the token, so that a recovery can revoke it after a crash. Only while this worker holds
    /// the task's lease.
    async fn record_token(&self, id: TaskId, claims: &Claims) -> Result<()> {
        let mut p = TaskPatch::to(TaskState::Running);
        p.token = Some(TaskToken {
            jti: claims.jti.clone(),
            exp: claims.exp,
        });
        self.inner
            .tasks
            .finish_leased(id, &self.inner.config.worker_id, Timestamp::now(), p)
            .await
            .map(|_| ())
    }

    /// Claim up to `limit` queued tasks for this worker.
    async fn claim(&self, limit: usize) -> Result<Vec<Task>> {
        let now = Timestamp::now();
        let until = now.plus_millis(duration_ms(self.inner.config.lease));
        self.inner
            .tasks
            .claim_tasks(&self.inner.config.worker_id, limit, now, until)
            .await
    }

    /// The worker: claims as many queued tasks as it has free slots, when woken (a task queued
    /// here, a slot freed, tasks requeued by a recovery) or every poll interval (tasks queued by
    /// other replicas), and runs each.
    async fn dispatch_loop(&self) {
        loop {
            if self.inner.shutdown.is_cancelled() {
                return;
            }
            let free = self.inner.slots.available_permits();
            let mut claimed = 0;
            if free > 0 {
                match self.claim(free).await {
                    Ok(tasks) => {
                        claimed = tasks.len();
                        for t in tasks {
                            let permit = self.inner.slots.clone().try_acquire_owned().ok();
                            let me = self.clone();
                            let id = t.id;
                            tokio::spawn(
                                async move {
                                    if let Err(e) = me.run_claimed(t).await {
                                        warn!(task = %id, error = %e, "task could not be run");
                                    }
                                    drop(permit);
                                    me.inner.wake.notify_one();
                                }
                                .instrument(info_span!("kat.task", task = %id)),
                            );
                        }
                    }
                    Err(e) => warn!(error = %e, "could not claim tasks"),
                }
            }
            if free > 0 && claimed == free {
                continue; // there may be more
            }
            tokio::select! {
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(self.inner.config.poll_interval) => {}
                () = self.inner.shutdown.cancelled() => return,
            }
        }
    }

    async fn schedule_loop(&self) {
        loop {
            if let Err(e) = self.tick(Timestamp::now()).await {
                warn!(error = %e, "scheduler tick failed");
            }
            tokio::select! {
                () = tokio::time::sleep(self.inner.config.tick_interval) => {}
                () = self.inner.shutdown.cancelled() => return,
            }
        }
    }

    /// Wait until a task has ended, up to `timeout`; returns it as it is then.
    ///
    /// # Errors
    /// [`Error::NotFound`], or [`Error::Timeout`] with the task's state.
    pub async fn wait_for(&self, id: TaskId, timeout: Duration) -> Result<Task> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let t = self
                .inner
                .tasks
                .get_task(id)
                .await?
                .ok_or_else(|| Error::not_found("task", id.to_string()))?;
            if t.state.is_final() {
                return Ok(t);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout(format!("task {id} is still {}", t.state)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // ---- queueing ---------------------------------------------------------------------------

    /// The plugin, when it is enabled for `org` (its override, else the catalogue's default).
    async fn enabled_plugin(&self, org: &OrgCode, plugin_id: &str) -> Result<PluginDef> {
        let (rec, enabled): (PluginRecord, bool) = self
            .inner
            .tasks
            .plugin_for(org, plugin_id)
            .await?
            .ok_or_else(|| Error::not_found("plugin", plugin_id))?;
        if !enabled {
            return Err(Error::Conflict(format!(
                "plugin {plugin_id} is disabled for organization {org}; enable it first"
            )));
        }
        self.inner.policy.check(&rec.def)?;
        Ok(rec.def)
    }

    /// Resolve one `input_data` string to an object the plugin takes, checking its scan level.
    async fn resolve_target(
        &self,
        org: &OrgCode,
        plugin: &PluginDef,
        raw: &str,
    ) -> Result<ObjectRef> {
        let types = plugin.consumed_types();
        if types.is_empty() {
            return Err(Error::invalid(
                "input_data",
                format!(
                    "plugin {} takes no objects, but the task names {raw:?}",
                    plugin.plugin_id
                ),
            ));
        }
        let mut tried = Vec::new();
        for ty in &types {
            let key = match ty {
                ObjectType::Hostname => HostnameRef::parse(raw).map(|h| h.key()),
                ObjectType::IpAddress => IpRef::parse(raw).map(|a| a.key()),
                // A bare URL is in the default network (a URL may itself contain '|').
                ObjectType::Url if is_bare_url(raw) => {
                    UrlRef::new(crate::object::DEFAULT_NETWORK, raw).map(|u| u.key())
                }
                other => other.parse_key(raw),
            };
            let Ok(key) = key else { continue };
            tried.push(format!("{ty} {key}"));
            if let Some(obj) = self.inner.objects.get(org, *ty, &key).await? {
                let Some(profile) = scan_of(self.inner.objects.as_ref(), &obj).await? else {
                    let host = match &obj.object {
                        Object::Url(u) => u.host_object().1.to_string(),
                        _ => String::new(),
                    };
                    return Err(Error::PermissionDenied(format!(
                        "plugin {} cannot scan {ty} {key}: its host {host} is not in organization {org}, and a URL is scanned at its host's scan level",
                        plugin.plugin_id,
                    )));
                };
                if !profile.allows(plugin.scan_level) {
                    let via = if obj.object_type() == ObjectType::Url {
                        " (through its host)"
                    } else {
                        ""
                    };
                    return Err(Error::PermissionDenied(format!(
                        "plugin {} needs scan level {} but {ty} {key} has {}{via}",
                        plugin.plugin_id,
                        plugin.scan_level,
                        profile
                            .level
                            .map_or("no scan level".to_string(), |l| format!("scan level {l}"))
                    )));
                }
                return Ok(ObjectRef {
                    object_type: *ty,
                    key,
                });
            }
        }
        Err(Error::not_found(
            "object",
            if tried.is_empty() {
                format!(
                    "{raw:?} is not a {} of plugin {}",
                    join_types(&types),
                    plugin.plugin_id
                )
            } else {
                format!(
                    "{} in organization {org} (declare it first)",
                    tried.join(" or ")
                )
            },
        ))
    }

    /// The scan-level gate of a file-triggered task: the consumer's scan level must be at most the
    /// level the file carries across its whole chain ([`crate::chain::check`]), and every object the
    /// producing task ran on must still allow it (a level lowered since the file was stored counts).
    async fn gate_file(&self, plugin: &PluginDef, file: &FileMeta) -> Result<()> {
        let inner = &self.inner;
        crate::chain::check(
            inner.objects.as_ref(),
            inner.files.as_ref(),
            inner.tasks.as_ref(),
            plugin,
            file,
        )
        .await?;
        let Some(producer) = file.task else {
            return Ok(());
        };
        let Some(task) = self.inner.tasks.get_task(producer).await? else {
            return Ok(());
        };
        for r in &task.input.objects {
            let profile = scan_of_key(
                self.inner.objects.as_ref(),
                &task.org,
                r.object_type,
                &r.key,
            )
            .await?
            .unwrap_or_default();
            if !profile.allows(plugin.scan_level) {
                return Err(Error::PermissionDenied(format!(
                    "plugin {} needs scan level {} but {} {} (input of task {producer}, which produced file {}) has {}",
                    plugin.plugin_id,
                    plugin.scan_level,
                    r.object_type,
                    r.key,
                    file.id,
                    profile
                        .level
                        .map_or("no scan level".to_string(), |l| format!("scan level {l}"))
                )));
            }
        }
        Ok(())
    }

    fn make_tasks(
        &self,
        org: &OrgCode,
        plugin: &PluginDef,
        input: Vec<ObjectRef>,
        files: Vec<FileId>,
    ) -> Vec<Task> {
        let size = plugin.effective_batch_size(self.inner.config.default_batch_size);
        if !files.is_empty() {
            let per_task = plan::files_per_task(plugin, self.inner.config.default_batch_size);
            return plan::batches(&files, per_task)
                .into_iter()
                .map(|files| {
                    Task::queued(
                        org.clone(),
                        &plugin.plugin_id,
                        TaskInput {
                            objects: Vec::new(),
                            files,
                        },
                    )
                })
                .collect();
        }
        plan::batches(&input, size)
            .into_iter()
            .map(|objects| {
                Task::queued(
                    org.clone(),
                    &plugin.plugin_id,
                    TaskInput {
                        objects,
                        files: Vec::new(),
                    },
                )
            })
            .collect()
    }

    async fn queue(&self, tasks: Vec<Task>) -> Result<Vec<Task>> {
        // All of them in one store call: one batch and one flush, however many.
        self.inner.tasks.create_tasks(tasks.clone()).await?;
        if !tasks.is_empty() {
            self.inner.wake.notify_one();
        }
        Ok(tasks)
    }

    // ---- scheduling -------------------------------------------------------------------------

    /// Run the scheduler once at `now`: every due schedule creates tasks for the objects of its set
    /// that pass the plugin's scan level and were not scheduled in the current interval, batched;
    /// then it is due again one interval later. Costs what is due, not the number of schedules.
    /// When objects were written through the API since the last tick ([`TaskControl::objects_written`]),
    /// the schedules of their organizations that are not due also run a catch-up pass over their
    /// sets, so what a plugin just found is scanned at the next tick, each target still at most
    /// once per interval ([`TickReport::caught_up`]).
    ///
    /// # Errors
    /// Store errors.
    pub async fn tick(&self, now: Timestamp) -> Result<TickReport> {
        let mut report = TickReport::default();
        let due = self.inner.tasks.due_schedules(now, 1000).await?;
        let mut ran = HashSet::new();
        for schedule in due {
            report.schedules += 1;
            let mut next = schedule.clone();
            match self.owner_gone(&schedule, now).await {
                Ok(Some(reason)) => {
                    warn!(schedule = %schedule.id, %reason, "schedule disabled");
                    next.enabled = false;
                    next.disabled_reason = Some(reason);
                    report.disabled += 1;
                }
                Ok(None) => match self.run_schedule(&schedule, now).await {
                    Ok((created, skipped)) => {
                        report.tasks += created;
                        report.skipped += skipped;
                    }
                    Err(e) => warn!(schedule = %schedule.id, error = %e, "schedule could not run"),
                },
                Err(e) => warn!(schedule = %schedule.id, error = %e, "schedule could not run"),
            }
            next.last_run_at = Some(now);
            next.next_run_at = now.plus_secs(schedule.interval.as_secs() as i64);
            self.inner.tasks.put_schedule(next).await?;
            ran.insert(schedule.id);
        }
        self.catch_up(now, &ran, &mut report).await?;
        Ok(report)
    }

    /// The catch-up pass: every enabled schedule over an object set that is not due, whose
    /// organization had objects written through the API since the last tick, runs over its set as
    /// a due one would; the per-interval claims leave it only the targets not yet scheduled in the
    /// current interval (what a plugin just found, what just inherited or was given a level). Its
    /// next run stays where it was. A tick after no writes costs nothing here.
    async fn catch_up(
        &self,
        now: Timestamp,
        ran: &HashSet<ScheduleId>,
        report: &mut TickReport,
    ) -> Result<()> {
        let mut orgs: HashSet<OrgCode> = std::mem::take(&mut *lock(&self.inner.written_orgs));
        match self.inner.tasks.written_marks().await {
            Ok(Some(marks)) => {
                let mut seen = lock(&self.inner.seen_marks);
                for (org, mark) in marks {
                    if seen.insert(org.clone(), mark) != Some(mark) {
                        orgs.insert(org);
                    }
                }
            }
            Ok(None) => {}
            // Writes through other replicas wait for the next tick (or their schedules' intervals).
            Err(e) => warn!(error = %e, "the store's write marks could not be read"),
        }
        if orgs.is_empty() {
            return Ok(());
        }
        for schedule in self.inner.tasks.list_schedules(None).await? {
            let relevant = schedule.enabled
                && schedule.object_set.is_some()
                && !ran.contains(&schedule.id)
                && schedule.org.as_ref().is_none_or(|o| orgs.contains(o));
            if !relevant {
                continue;
            }
            // A schedule whose owner is gone is disabled by its next due tick; it runs nothing now.
            match self.owner_gone(&schedule, now).await {
                Ok(None) => {}
                Ok(Some(_)) => continue,
                Err(e) => {
                    warn!(schedule = %schedule.id, error = %e, "schedule could not catch up");
                    continue;
                }
            }
            report.caught_up += 1;
            match self.run_schedule(&schedule, now).await {
                Ok((created, skipped)) => {
                    report.tasks += created;
                    report.skipped += skipped;
                }
                Err(e) => warn!(schedule = %schedule.id, error = %e, "schedule could not catch up"),
            }
        }
        Ok(())
    }

    /// Why a schedule may no longer run with its owner's rights, if it may not (see
    /// [`Schedule::owner`]); a schedule without an owner runs with the operator's.
    async fn owner_gone(&self, schedule: &Schedule, now: Timestamp) -> Result<Option<String>> {
        let Some(owner) = &schedule.owner else {
            return Ok(None);
        };
        let revoked = match &owner.token {
            Some(t) => self.inner.tasks.is_token_revoked(&t.jti).await?,
            None => false,
        };
        let plugin = self.inner.tasks.get_plugin(&schedule.plugin_id).await?;
        Ok(owner.gone(plugin.as_ref().map(|p| &p.def), revoked, now))
    }

    async fn run_schedule(&self, schedule: &Schedule, now: Timestamp) -> Result<(usize, usize)> {
        let Some(rec) = self.inner.tasks.get_plugin(&schedule.plugin_id).await? else {
            debug!(schedule = %schedule.id, plugin = %schedule.plugin_id, "skipping schedule: no such plugin");
            return Ok((0, 0));
        };
        let plugin = rec.def.clone();
        let orgs: Vec<OrgCode> = match &schedule.org {
            Some(o) => vec![o.clone()],
            None => self
                .inner
                .tasks
                .list_organizations()
                .await?
                .into_iter()
                .map(|o| o.code)
                .collect(),
        };
        let window_start = now
            .plus_secs(-(schedule.interval.as_secs() as i64))
            .plus_secs(1);
        let (mut created, mut skipped) = (0, 0);
        for org in orgs {
            let org_override = self
                .inner
                .tasks
                .plugin_overrides(&org)
                .await?
                .get(&schedule.plugin_id)
                .copied();
            if !rec.enabled_with(org_override) {
                debug!(schedule = %schedule.id, %org, "skipping schedule: plugin disabled for the organization");
                continue;
            }
            let set = match schedule.object_set {
                Some(id) => Some(
                    self.inner
                        .tasks
                        .get_object_set(id)
                        .await?
                        .ok_or_else(|| Error::not_found("object set", id.to_string()))?,
                ),
                None => None,
            };
            // The mark is read before the set: a write that lands during the enumeration changes
            // it, and the next run enumerates again.
            let memo_key = (schedule.id, org.clone());
            let memo_of = set.as_ref().and_then(|set| {
                let mark = self.inner.objects.change_mark(&org)?;
                Some((set_fingerprint(set, &plugin)?, mark))
            });
            if let Some((fingerprint, mark)) = memo_of {
                let memo = lock(&self.inner.set_memos).get(&memo_key).cloned();
                if let Some(m) = memo
                    && m.fingerprint == fingerprint
                    && m.mark == mark
                    && m.oldest.is_none_or(|o| o >= window_start)
                {
                    skipped += m.targets;
                    continue;
                }
            }
            let remember = |targets: usize, oldest: Option<Timestamp>| {
                if let Some((fingerprint, mark)) = memo_of {
                    let mut memos = lock(&self.inner.set_memos);
                    if memos.len() >= MAX_SET_MEMOS {
                        memos.clear();
                    }
                    memos.insert(
                        memo_key.clone(),
                        SetMemo {
                            fingerprint,
                            mark,
                            oldest,
                            targets,
                        },
                    );
                }
            };
            let targets: Vec<ObjectRef> = match &set {
                Some(set) => self.objects_of_set(&org, set, &plugin).await?,
                None => Vec::new(),
            };
            if set.is_some() && targets.is_empty() {
                remember(0, None);
                continue;
            }
            let keys: Vec<NaturalKey> = if targets.is_empty() {
                vec![NaturalKey::from_parts(["standalone", org.as_str()])]
            } else {
                targets
                    .iter()
                    .map(|t| NaturalKey::from_parts([t.object_type.as_str(), t.key.as_str()]))
                    .collect()
            };
            // One claim for the whole set: one store round trip (and one flush) per schedule and
            // organization, however many targets.
            let total = keys.len();
            let claimed = self
                .inner
                .tasks
                .claim_targets_oldest(schedule.id, window_start, now, keys.clone())
                .await?;
            let oldest = claimed.oldest;
            let fresh: HashSet<NaturalKey> = claimed.fresh.into_iter().collect();
            skipped += total - fresh.len();
            if fresh.is_empty() {
                if oldest.is_some() {
                    remember(total, oldest);
                }
                continue;
            }
            let chosen: Vec<ObjectRef> = targets
                .into_iter()
                .zip(&keys)
                .filter(|(_, k)| fresh.contains(*k))
                .map(|(t, _)| t)
                .collect();
            let mut tasks = self.make_tasks(&org, &plugin, chosen, Vec::new());
            for t in &mut tasks {
                t.schedule = Some(schedule.id);
            }
            created += tasks.len();
            self.queue(tasks).await?;
            if oldest.is_some() {
                remember(total, oldest);
            }
        }
        Ok((created, skipped))
    }

    /// The objects of a set that the plugin may scan (scan level at least the plugin's), by key.
    async fn objects_of_set(
        &self,
        org: &OrgCode,
        set: &ObjectSet,
        plugin: &PluginDef,
    ) -> Result<Vec<ObjectRef>> {
        if &set.org != org {
            return Ok(Vec::new());
        }
        let mut out: Vec<ObjectRef> = Vec::new();
        // URLs have no level of their own: each is checked at its host's level.
        let own_level = set.object_type.has_scan_level();
        if set.all || !set.filters.is_empty() {
            let mut q = ObjectQuery::new(org.clone(), set.object_type);
            q.filters = set.filters.clone();
            if own_level {
                q.min_scan_level = Some(plugin.scan_level);
            }
            // One pass over every match: paging with offsets would rescan the skipped matches.
            q.limit = 0;
            if own_level {
                let keys = self.inner.objects.query_keys(&q).await?;
                out.extend(keys.into_iter().map(|key| ObjectRef {
                    object_type: set.object_type,
                    key,
                }));
            } else {
                let page = self.inner.objects.query(&q).await?;
                for o in page.items {
                    if scan_of(self.inner.objects.as_ref(), &o)
                        .await?
                        .is_some_and(|p| p.allows(plugin.scan_level))
                    {
                        out.push(ObjectRef {
                            object_type: set.object_type,
                            key: o.key,
                        });
                    }
                }
            }
        }
        for key in &set.keys {
            if let Some(o) = self.inner.objects.get(org, set.object_type, key).await?
                && scan_of(self.inner.objects.as_ref(), &o)
                    .await?
                    .is_some_and(|p| p.allows(plugin.scan_level))
            {
                out.push(ObjectRef {
                    object_type: set.object_type,
                    key: key.clone(),
                });
            }
        }
        // By key, each once (a query's matches usually come in key order already: then this is
        // one pass).
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    // ---- running ----------------------------------------------------------------------------

    /// Store one of a task's temporary files (mode 4's stdin, a long list of commands): the engine's
    /// own type [`STDIN_FILE_TYPE`], which nobody may upload and which never chains; readable by the
    /// task's token only; deleted when the task ends.
    async fn temp_file(&self, task: &Task, name: &str, content: Vec<u8>) -> Result<FileId> {
        let body: crate::store::ByteStream =
            Box::pin(futures::stream::iter(vec![Ok(Bytes::from(content))]));
        let meta = self
            .inner
            .files
            .put(
                NewFile {
                    org: task.org.clone(),
                    file_type: STDIN_FILE_TYPE.into(),
                    name: name.into(),
                    task: Some(task.id),
                    scan_level: None,
                    level_from: crate::store::LevelSource::Engine,
                },
                body,
            )
            .await?;
        Ok(meta.id)
    }

    /// Write a task's end while this worker holds its lease; whether it was written (not when the
    /// lease was lost meanwhile: cancelled through the API, or recovered elsewhere).
    async fn finish(&self, id: TaskId, patch: TaskPatch) -> Result<bool> {
        match self
            .inner
            .tasks
            .finish_leased(id, &self.inner.config.worker_id, Timestamp::now(), patch)
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::Conflict(why)) => {
                info!(task = %id, %why, "the task's end is not recorded: this worker no longer holds it");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Renew this worker's lease on a running task every third of the lease until the future is
    /// dropped; when a renewal is refused (the task was cancelled, recovered elsewhere after a
    /// stall, or deleted), mark it `lost` and cancel the task's container. Other errors (the store
    /// out of reach) are retried at the next renewal: should the lease end meanwhile, that one is
    /// refused.
    async fn keep_lease(&self, id: TaskId, cancel: CancellationToken, lost: &AtomicBool) {
        let inner = &self.inner;
        let every = inner.config.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let now = Timestamp::now();
            let until = now.plus_millis(duration_ms(inner.config.lease));
            match inner
                .tasks
                .renew_lease(id, &inner.config.worker_id, now, until)
                .await
            {
                Ok(_) => debug!(task = %id, "lease renewed"),
                Err(e @ (Error::Conflict(_) | Error::NotFound { .. })) => {
                    warn!(task = %id, reason = %e, "lease lost: stopping the task's container, its end is not recorded here");
                    lost.store(true, AtomicOrdering::SeqCst);
                    cancel.cancel();
                    return std::future::pending().await;
                }
                Err(e) => warn!(task = %id, error = %e, "could not renew the lease; trying again"),
            }
        }
    }

    /// Run a task this worker claimed ([`TaskQueue::claim_tasks`](crate::store::TaskQueue::claim_tasks)):
    /// execute it while renewing its lease, and record its end unless the lease was lost.
    async fn run_claimed(&self, task: Task) -> Result<()> {
        let inner = &self.inner;
        let id = task.id;
        let cancel = inner.shutdown.child_token();
        lock(&inner.running).insert(
            id,
            Running {
                cancel: cancel.clone(),
                jti: None,
            },
        );
        let mut temp_files: Vec<FileId> = Vec::new();
        let lost = AtomicBool::new(false);
        let began = std::time::Instant::now();
        inner.metrics.task_started(&task.plugin_id);
        let result = tokio::select! {
            r = self.execute(&task, cancel.clone(), &mut temp_files) => r,
            () = self.keep_lease(id, cancel, &lost) => unreachable!("keeping a lease never ends"),
        };
        let entry = lock(&inner.running).remove(&id);
        if let Some((jti, exp)) = entry.and_then(|r| r.jti)
            && let Err(e) = inner.tokens.revoke(&jti, exp).await
        {
            warn!(task = %id, error = %e, "could not revoke the task's token");
        }
        for f in temp_files {
            if let Err(e) = inner.files.delete(f).await {
                warn!(task = %id, file = %f, error = %e, "could not delete a temporary file of the task");
            }
        }
        if lost.load(AtomicOrdering::SeqCst) {
            info!(task = %id, plugin = %task.plugin_id, "task stopped: its lease was lost");
            inner.metrics.lease_lost();
            return Ok(());
        }
        let patch = match result {
            Ok(p) => p,
            Err(e) => {
                inner.metrics.container_error(&task.plugin_id);
                let mut p = TaskPatch::to(TaskState::Failed);
                p.reason = Some(e.to_string());
                p
            }
        };
        let mut patch = patch;
        patch.ended_at = Some(Timestamp::now());
        // The container is gone: every refused call it made is on the record by now. A task that
        // ends with refused calls says so in its reason, whatever its state (decisions: refused
        // calls are visible).
        if let Ok(Some(now)) = inner.tasks.get_task(id).await
            && let Some(note) = refusal_note(&now)
        {
            patch.reason = Some(match patch.reason.take() {
                Some(r) => format!("{r}; {note}"),
                None => note,
            });
        }
        info!(task = %id, plugin = %task.plugin_id, state = %patch.state, reason = ?patch.reason, "task ended");
        let state = patch.state;
        let written = self.finish(id, patch).await?;
        if written {
            inner
                .metrics
                .task_ended(&task.plugin_id, state, began.elapsed());
        } else {
            inner.metrics.lease_lost();
        }
        if written && state == TaskState::Completed {
            let mut ended = task;
            ended.state = state;
            if let Err(e) = inner.rules.task_ended(&ended).await {
                warn!(task = %id, error = %e, "could not bring business rules up to date after the task");
            }
        }
        Ok(())
    }

    async fn execute(
        &self,
        task: &Task,
        cancel: CancellationToken,
        temp_files: &mut Vec<FileId>,
    ) -> Result<TaskPatch> {
        let inner = &self.inner;
        let (plugin, enabled) = inner
            .tasks
            .plugin_for(&task.org, &task.plugin_id)
            .await?
            .ok_or_else(|| Error::not_found("plugin", &task.plugin_id))?;
        if !enabled {
            return Err(Error::Conflict(format!(
                "plugin {} was disabled before the task started",
                task.plugin_id
            )));
        }
        let plugin = plugin.def;
        // Again here, whatever the catalogue said at sync: the policy this engine holds decides,
        // and gives what the plugin asks for or, where it asks for nothing, its grant.
        let privileges = inner.policy.privileges(&plugin)?;
        let input = if !task.input.files.is_empty() {
            PlanInput::Files(task.input.files.clone())
        } else if !task.input.objects.is_empty() {
            let mut targets = Vec::new();
            for r in &task.input.objects {
                let value = match r.object_type {
                    ObjectType::Hostname | ObjectType::IpAddress | ObjectType::Url => {
                        r.key.parts().get(1).cloned()
                    }
                    _ => None,
                }
                .ok_or_else(|| {
                    Error::invalid(
                        "input",
                        format!("{} {} cannot be a target", r.object_type, r.key),
                    )
                })?;
                targets.push(Target {
                    value,
                    object: Some(r.clone()),
                });
            }
            PlanInput::Objects(targets)
        } else {
            PlanInput::None
        };
        let plan = plan::plan(&plugin, &input)?;
        let mut env = plan.env.clone();
        let mut extra = Vec::new();
        match &plan.stdin {
            Stdin::None => {}
            Stdin::File(f) => {
                env.insert(protocol_env::IN_FILE.into(), f.to_string());
            }
            Stdin::Targets(content) => {
                let id = self
                    .temp_file(task, "stdin", content.clone().into_bytes())
                    .await?;
                temp_files.push(id);
                extra.push(id);
                env.insert(protocol_env::IN_FILE.into(), id.to_string());
            }
        }
        // One environment string may hold at most 128 KiB on Linux: many commands travel in a
        // temporary file the entrypoint downloads instead (docs/entrypoint-protocol.md §1).
        if env
            .get(protocol_env::COMMANDS)
            .is_some_and(|c| c.len() > protocol_env::COMMANDS_ENV_LIMIT)
            && let Some(commands) = env.remove(protocol_env::COMMANDS)
        {
            let id = self
                .temp_file(task, "commands.json", commands.into_bytes())
                .await?;
            temp_files.push(id);
            extra.push(id);
            env.insert(protocol_env::COMMANDS_FILE.into(), id.to_string());
        }
        let timeout = plugin
            .timeout_seconds
            .map_or(inner.config.plugin_timeout, Duration::from_secs);
        // The image is present before the token is minted, so that a slow pull does not eat the
        // token's life: the container's deadline starts after the pull (decisions: the token's life).
        tokio::select! {
            r = inner.runtime.ensure_image(&plugin.oci_image, timeout) => r?,
            () = cancel.cancelled() => {
                let mut p = TaskPatch::to(TaskState::Cancelled);
                p.reason = Some("cancelled".into());
                return Ok(p);
            }
        }
        let now = Timestamp::now();
        let deadline = now.plus_secs(timeout.as_secs() as i64 + 1);
        let mut permissions = plan.permissions(&plugin, &extra);
        permissions.merge(&privileges.extra_permissions);
        permissions.remove(&crate::permission::PermissionName::SET_SCAN_LEVEL);
        let claims = Claims::for_task(
            task.id,
            task.org.clone(),
            &plugin.plugin_id,
            permissions,
            now,
            deadline,
        );
        let token = inner.tokens.mint(&claims)?;
        if let Some(r) = lock(&inner.running).get_mut(&task.id) {
            r.jti = Some((claims.jti.clone(), claims.exp));
        }
        self.record_token(task.id, &claims).await?;
        env.insert(protocol_env::API.into(), inner.config.api_url.clone());
        env.insert(protocol_env::TOKEN.into(), token);
        env.insert(protocol_env::TASK_ID.into(), task.id.to_string());
        env.insert(protocol_env::ORGANIZATION_CODE.into(), task.org.to_string());
        let mount = self.prepare_entrypoint().await?;
        let short = task.id.to_string();
        let mut spec = ContainerSpec::new(
            format!("kat-{}-{}-{}", plugin.plugin_id, &short[..8], task.attempts),
            plugin.oci_image.clone(),
            plan.argv().to_vec(),
        );
        spec.env = env;
        spec.entrypoint = mount;
        spec.network = inner.config.network.clone();
        spec.timeout = timeout;
        spec.limits = inner.config.limits.clone();
        spec.hardening = Hardening {
            cap_add: privileges.cap_add,
            writable_paths: privileges.writable_paths,
            user: Some(privileges.user),
            ..Hardening::default()
        };
        spec.output_tail_bytes = inner.config.stderr_tail_bytes;
        spec.labels.insert(LABEL_TASK.into(), task.id.to_string());
        spec.labels
            .insert(LABEL_PLUGIN.into(), plugin.plugin_id.clone());
        spec.labels.insert(LABEL_ORG.into(), task.org.to_string());
        spec.labels
            .insert(LABEL_DEPLOYMENT.into(), inner.config.deployment.clone());
        debug!(task = %task.id, mode = %plan.mode, commands = plan.commands.len(), "starting container");
        let outcome = inner.runtime.run(spec, cancel).await?;
        let tail = String::from_utf8_lossy(&outcome.stderr_tail).into_owned();
        let mut patch = match outcome.reason {
            EndReason::TimedOut => {
                let mut p = TaskPatch::to(TaskState::TimedOut);
                p.reason = Some(format!("killed at its deadline of {} s", timeout.as_secs()));
                p
            }
            EndReason::Cancelled => {
                let mut p = TaskPatch::to(TaskState::Cancelled);
                p.reason = Some("cancelled".into());
                p
            }
            EndReason::Exited if outcome.exit_code == Some(0) => {
                let mut p = TaskPatch::to(TaskState::Completed);
                p.reason = Some(format!("{} finished", plan.mode));
                p
            }
            EndReason::Exited => {
                let mut p = TaskPatch::to(TaskState::Failed);
                p.reason = Some(exit_reason(outcome.exit_code));
                p
            }
        };
        patch.exit_code = outcome.exit_code;
        if !tail.is_empty() {
            patch.stderr_tail = Some(tail);
        }
        Ok(patch)
    }
}

/// Words for an exit code, naming the entrypoint's own codes ([`kat_protocol::exit::describe`]).
///
/// ```
/// use kat_core::engine::exit_reason;
/// assert_eq!(exit_reason(Some(122)), "exit 122: an input file could not be downloaded");
/// assert_eq!(exit_reason(None), "the container ended without an exit code");
/// ```
pub fn exit_reason(code: Option<i64>) -> String {
    match code {
        None => "the container ended without an exit code".into(),
        Some(c) => kat_protocol::exit::describe(c),
    }
}

/// A duration in whole milliseconds (saturating).
fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether a task is running under a lease that has not ended at `now`.
fn holds_live_lease(t: &Task, now: Timestamp) -> bool {
    t.state == TaskState::Running && t.lease.as_ref().is_some_and(|l| l.until >= now)
}

/// Whether a task's target text is a bare URL (`https://...`) rather than a `network|url` key.
fn is_bare_url(raw: &str) -> bool {
    let lower = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// The words a task's reason gets when some of its API calls were refused, or `None`.
///
/// ```
/// use kat_core::engine::refusal_note;
/// use kat_core::org::OrgCode;
/// use kat_core::task::{Task, TaskInput, TaskPatch};
/// let mut t = Task::queued(OrgCode::new("acme").unwrap(), "parse-nmap", TaskInput::default());
/// assert_eq!(refusal_note(&t), None);
/// TaskPatch::refused_call("POST /api/v1/objects/: 403 no objects.add_ipport").apply(&mut t);
/// assert_eq!(
///     refusal_note(&t).as_deref(),
///     Some("1 API call refused (first: POST /api/v1/objects/: 403 no objects.add_ipport)")
/// );
/// ```
pub fn refusal_note(task: &Task) -> Option<String> {
    let n = task.refused_calls;
    (n > 0).then(|| {
        format!(
            "{n} API call{} refused (first: {})",
            if n == 1 { "" } else { "s" },
            task.first_refusal
                .as_deref()
                .unwrap_or("no reason recorded")
        )
    })
}

fn join_types(types: &BTreeSet<ObjectType>) -> String {
    types
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

impl Engine {
    /// Validate a request the way [`TaskControl::submit`] does and make its tasks, queuing nothing.
    async fn prepare(&self, request: TaskRequest) -> Result<Vec<Task>> {
        let plugin = self
            .enabled_plugin(&request.org, &request.plugin_id)
            .await?;
        request.submitter.may_run(&plugin)?;
        let takes_files = !plugin.consumed_files().is_empty();
        let mut objects = Vec::new();
        let mut files = Vec::new();
        for (i, raw) in request.input.iter().enumerate() {
            let at = format!("input_data[{i}]");
            if takes_files && raw.chars().all(|c| c.is_ascii_digit()) && !raw.is_empty() {
                let id: FileId = raw.parse().map_err(|e: Error| e.within(&at))?;
                let meta = self
                    .inner
                    .files
                    .meta(id)
                    .await?
                    .filter(|m| m.org == request.org)
                    .ok_or_else(|| Error::not_found("file", raw.clone()))?;
                self.gate_file(&plugin, &meta).await?;
                files.push(id);
            } else {
                objects.push(self.resolve_target(&request.org, &plugin, raw).await?);
            }
        }
        if !objects.is_empty() && !files.is_empty() {
            return Err(Error::invalid(
                "input_data",
                "a task takes objects or files, not both",
            ));
        }
        // Check the plan now so that a bad request is refused here rather than failing later.
        let per_task = plan::files_per_task(&plugin, self.inner.config.default_batch_size);
        let probe = if !files.is_empty() {
            PlanInput::Files(plan::batches(&files, per_task).swap_remove(0))
        } else if objects.is_empty() {
            PlanInput::None
        } else {
            PlanInput::Objects(vec![Target::value("probe")])
        };
        plan::plan(&plugin, &probe)?;
        Ok(self.make_tasks(&request.org, &plugin, objects, files))
    }

    /// Add a stored file (already through its scan-level gate) to the plugin's open file-triggered
    /// task for the file's organization, when that task is still queued and has room for it
    /// ([`plan::files_per_task`]); the task it joined, or `None` when it must get a task of its own.
    /// The join is a compare-and-set from `queued` in the store, so a task a worker already started
    /// never gains a file.
    async fn join_batch(&self, file: &FileMeta, plugin: &PluginDef) -> Result<Option<Task>> {
        let key = (file.org.clone(), plugin.plugin_id.clone());
        let Some(open) = lock(&self.inner.open_batches).get(&key).copied() else {
            return Ok(None);
        };
        let max = plan::files_per_task(plugin, self.inner.config.default_batch_size);
        let mut patch = TaskPatch::to(TaskState::Queued);
        patch.add_file = Some(crate::task::FileJoin { file: file.id, max });
        let close = |inner: &Inner| {
            let mut g = lock(&inner.open_batches);
            if g.get(&key) == Some(&open) {
                g.remove(&key);
            }
        };
        match self
            .inner
            .tasks
            .transition_task(open, &[TaskState::Queued], patch)
            .await
        {
            Ok(t) if t.input.files.contains(&file.id) => {
                if max.is_some_and(|m| t.input.files.len() >= m as usize) {
                    close(&self.inner);
                }
                debug!(task = %t.id, file = %file.id, files = t.input.files.len(), "file joined a queued task");
                Ok(Some(t))
            }
            Ok(_) | Err(Error::Conflict(_) | Error::NotFound { .. }) => {
                close(&self.inner);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl TaskControl for Engine {
    async fn submit(&self, request: TaskRequest) -> Result<Vec<Task>> {
        let tasks = self.prepare(request).await?;
        self.queue(tasks).await
    }

    async fn submit_all(&self, requests: Vec<TaskRequest>) -> Result<Vec<Task>> {
        let mut tasks = Vec::new();
        for (i, request) in requests.into_iter().enumerate() {
            tasks.extend(
                self.prepare(request)
                    .await
                    .map_err(|e| e.within(&format!("[{i}]")))?,
            );
        }
        self.queue(tasks).await
    }

    async fn cancel(&self, org: &OrgCode, id: TaskId) -> Result<Task> {
        let t = self
            .inner
            .tasks
            .get_task(id)
            .await?
            .filter(|t| &t.org == org)
            .ok_or_else(|| Error::not_found("task", id.to_string()))?;
        if t.state.is_final() {
            return Err(Error::Conflict(format!(
                "task {id} has already ended ({})",
                t.state
            )));
        }
        let mut p = TaskPatch::to(TaskState::Cancelled);
        p.ended_at = Some(Timestamp::now());
        p.reason = Some("cancelled".into());
        let ended = self
            .inner
            .tasks
            .transition_task(id, &[TaskState::Queued, TaskState::Running], p)
            .await?;
        // Running here: stop the container now. Running on another replica: its worker's next
        // renewal is refused (the task is no longer running) and it stops the container then.
        let running = lock(&self.inner.running)
            .get(&id)
            .map(|r| (r.cancel.clone(), r.jti.clone()));
        if let Some((cancel, _)) = &running {
            cancel.cancel();
        }
        // The attempt's token dies now, wherever the container runs.
        let jti = running.and_then(|(_, jti)| jti).or_else(|| {
            (t.state == TaskState::Running)
                .then(|| ended.token.as_ref().map(|k| (k.jti.clone(), k.exp)))
                .flatten()
        });
        if let Some((jti, exp)) = jti {
            self.inner.tokens.revoke(&jti, exp).await?;
        }
        Ok(ended)
    }

    async fn file_stored(&self, file: &FileMeta) -> Result<Vec<Task>> {
        if file.file_type == ERROR_FILE_TYPE || file.file_type == STDIN_FILE_TYPE {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut joined = Vec::new();
        let consumers: Vec<_> = self
            .inner
            .tasks
            .list_plugins()
            .await?
            .into_iter()
            .filter(|rec| rec.def.consumed_files().contains(file.file_type.as_str()))
            .collect();
        if consumers.is_empty() {
            // Most outputs of a plugin nothing consumes: no override to read, nothing to queue.
            return Ok(Vec::new());
        }
        let overrides = self.inner.tasks.plugin_overrides(&file.org).await?;
        for rec in consumers {
            if !rec.enabled_with(overrides.get(&rec.def.plugin_id).copied()) {
                continue;
            }
            if let Some(why) = self.inner.policy.refusal(&rec.def) {
                info!(plugin = %rec.def.plugin_id, file = %file.id, reason = %why, "not chaining");
                continue;
            }
            if let Err(e) = self.gate_file(&rec.def, file).await {
                warn!(plugin = %rec.def.plugin_id, file = %file.id, reason = %e, "not chaining: refused by the scan-level gate");
                continue;
            }
            if let Some(t) = self.join_batch(file, &rec.def).await? {
                joined.push(t);
                continue;
            }
            let mut t = Task::queued(
                file.org.clone(),
                &rec.def.plugin_id,
                TaskInput {
                    objects: Vec::new(),
                    files: vec![file.id],
                },
            );
            t.source_file = Some(file.id);
            if plan::files_per_task(&rec.def, self.inner.config.default_batch_size) != Some(1) {
                lock(&self.inner.open_batches)
                    .insert((file.org.clone(), rec.def.plugin_id.clone()), t.id);
            }
            out.push(t);
        }
        let mut tasks = self.queue(out).await?;
        tasks.extend(joined);
        Ok(tasks)
    }

    async fn objects_written(
        &self,
        org: &OrgCode,
        objects: &[crate::object::Object],
    ) -> Result<()> {
        if !objects.is_empty() {
            lock(&self.inner.written_orgs).insert(org.clone());
            // For the schedulers of other replicas sharing the store; the objects are stored
            // already, so a failure here only delays their catch-up pass to their intervals.
            if let Err(e) = self.inner.tasks.mark_written(org).await {
                warn!(org = %org, error = %e, "the write mark could not be recorded");
            }
        }
        self.inner
            .rules
            .objects_written(org, objects)
            .await
            .map(|_| ())
    }

    async fn rules(&self, org: &OrgCode) -> Result<Vec<crate::rules::RuleView>> {
        let overrides = self.inner.tasks.rule_overrides(org).await?;
        Ok(self
            .inner
            .rules
            .rules()
            .iter()
            .map(|r| r.view(overrides.get(&r.name).copied()))
            .collect())
    }

    async fn set_rule_enabled(
        &self,
        org: &OrgCode,
        rule: &str,
        enabled: Option<bool>,
    ) -> Result<crate::rules::PassReport> {
        self.inner.rules.set_enabled(org, rule, enabled).await
    }

    async fn run_rules(&self, org: &OrgCode) -> Result<crate::rules::PassReport> {
        self.inner.rules.run_org(org).await
    }
}

#[cfg(test)]
mod tests;
