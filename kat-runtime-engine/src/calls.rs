//! A [`ContainerRuntime`](kat_core::runtime::ContainerRuntime) written once, on the handful of calls an engine
//! provides ([`EngineCalls`]): [`run_container`], [`prepare_entrypoint`] and [`reap_orphans`] hold the
//! behaviour the conformance suite checks (the order of the calls, attach before start, the deadline and the
//! cancellation, removal on every path, the entrypoint volume by content hash, reaping), and each engine crate
//! only says how to create, attach, start, wait, kill, remove and reach a volume.

use std::collections::HashSet;
use std::fmt::Debug;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn};

use crate::{
    CleanupGuard, EngineError, EntrypointPayload, Output, StopSignal, Supervised, VolumeAccess,
    check_volume_name, conclude, container_name, reap_each, spawn_run, supervise, sync_entrypoint,
};
use kat_core::runtime::{
    Capabilities, ContainerSpec, EntrypointBinary, EntrypointMount, LABEL_PLUGIN, LABEL_TASK,
    ManagedContainer, Outcome,
};
use kat_core::task::TaskId;

/// A container's output as [`EngineCalls::attach`] gives it: stdout and stderr chunks; an error (only
/// logged) ends it.
pub type OutputStream = BoxStream<'static, Result<Output<Bytes>, String>>;

/// The calls of one container engine, on which [`run_container`], [`prepare_entrypoint`] and
/// [`reap_orphans`] (and so [`EngineRuntime`](crate::EngineRuntime)) are written. Implementations map the
/// engine's failures onto their error type (with the operation's name; a runtime crate uses
/// [`RuntimeError`](crate::RuntimeError)), and treat "already gone" as success where the docs say so.
///
/// A runtime crate implements this for its client and gets its `ContainerRuntime` from
/// [`EngineRuntime`](crate::EngineRuntime):
///
/// ```no_run
/// use kat_core::runtime::{
///     Capabilities, ContainerRuntime, ContainerSpec, ManagedContainer,
/// };
/// use kat_runtime_engine::{EngineCalls, EngineRuntime, OutputStream, StopSignal};
///
/// #[derive(Debug, Clone)]
/// struct MyCalls;
///
/// #[derive(Debug, thiserror::Error)]
/// enum MyError {
///     #[error(transparent)]
///     Spec(#[from] kat_runtime_engine::SpecError),
///     #[error(transparent)]
///     Load(#[from] kat_runtime_engine::LoadError),
///     #[error(transparent)]
///     Task(#[from] kat_runtime_engine::TaskFailed),
///     #[error("{0}")]
///     Other(String),
/// }
///
/// impl kat_runtime_engine::EngineError for MyError {
///     fn cancelled() -> Self { MyError::Other("cancelled".into()) }
///     fn unexpected(op: &'static str, message: String) -> Self { MyError::Other(format!("{op}: {message}")) }
/// }
///
/// /// This sketch talks to no engine: every call says so.
/// fn no_engine() -> MyError { MyError::Other("no engine behind this sketch".into()) }
///
/// impl From<MyError> for kat_core::Error {
///     fn from(e: MyError) -> Self { kat_core::Error::backend("my-engine", e.to_string(), false) }
/// }
///
/// #[async_trait::async_trait]
/// impl EngineCalls for MyCalls {
///     type Error = MyError;
///     async fn capabilities(&self) -> Result<Capabilities, MyError> { Err(no_engine()) }
///     async fn create(&self, _: &str, _: &ContainerSpec, _: &StopSignal) -> Result<String, MyError> { Err(no_engine()) }
///     async fn attach(&self, _: &str) -> Result<OutputStream, MyError> { Err(no_engine()) }
///     async fn start(&self, _: &str) -> Result<(), MyError> { Err(no_engine()) }
///     async fn wait(&self, _: &str) -> Result<Option<i64>, MyError> { Err(no_engine()) }
///     async fn kill(&self, _: &str) {}
///     async fn remove(&self, _: &str) -> Result<(), MyError> { Err(no_engine()) }
///     async fn list_managed(&self) -> Result<Vec<ManagedContainer>, MyError> { Err(no_engine()) }
///     async fn ensure_volume(&self, _: &str) -> Result<(), MyError> { Err(no_engine()) }
///     async fn create_helper(&self, _: &str, _: &str) -> Result<String, MyError> { Err(no_engine()) }
///     async fn list_helpers(&self) -> Result<Vec<ManagedContainer>, MyError> { Err(no_engine()) }
///     async fn stat(&self, _: &str, _: &str) -> Result<Option<(u64, u32)>, MyError> { Err(no_engine()) }
///     async fn read_archive(&self, _: &str, _: &str, _: usize) -> Result<Option<Vec<u8>>, MyError> { Err(no_engine()) }
///     async fn upload(&self, _: &str, _: &str, _: Vec<u8>) -> Result<(), MyError> { Err(no_engine()) }
/// }
///
/// let rt: std::sync::Arc<dyn ContainerRuntime> = std::sync::Arc::new(EngineRuntime::new(MyCalls));
/// ```
#[async_trait]
pub trait EngineCalls: Clone + Debug + Send + Sync + 'static {
    /// The engine crate's error type.
    type Error: EngineError;

    /// What the engine supports ([`ContainerRuntime::capabilities`](kat_core::runtime::ContainerRuntime::capabilities)).
    async fn capabilities(&self) -> Result<Capabilities, Self::Error>;

    /// Create (never start) the container `name` for `spec`, pulling a missing image once (bounded by the
    /// spec's timeout and `stop`); returns its id.
    async fn create(
        &self,
        name: &str,
        spec: &ContainerSpec,
        stop: &StopSignal,
    ) -> Result<String, Self::Error>;

    /// Make sure `image` is present, pulling it once when it is missing (bounded by `timeout` and `stop`),
    /// before a task's token is minted
    /// ([`ContainerRuntime::ensure_image`](kat_core::runtime::ContainerRuntime::ensure_image)). Provided:
    /// nothing (the image is then pulled by [`EngineCalls::create`]); Docker and Podman implement it.
    async fn ensure_image(
        &self,
        image: &str,
        timeout: std::time::Duration,
        stop: &StopSignal,
    ) -> Result<(), Self::Error> {
        let _ = (image, timeout, stop);
        Ok(())
    }

    /// Attach to the created container's stdout and stderr (separately, no tty), so that nothing written
    /// after [`EngineCalls::start`] is missed.
    async fn attach(&self, id: &str) -> Result<OutputStream, Self::Error>;

    /// Start the container.
    async fn start(&self, id: &str) -> Result<(), Self::Error>;

    /// Wait until the started container exits; its exit code, when the engine reports one.
    async fn wait(&self, id: &str) -> Result<Option<i64>, Self::Error>;

    /// SIGKILL the container; failures are only logged ("not running" and "no such container" are fine).
    async fn kill(&self, id: &str);

    /// Remove the container (force: killing it first), waiting for a removal someone else started; a
    /// container that is already gone counts as removed.
    async fn remove(&self, id: &str) -> Result<(), Self::Error>;

    /// The containers that carry [`LABEL_MANAGED`](kat_core::runtime::LABEL_MANAGED), in every state.
    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, Self::Error>;

    /// Create the named volume unless it exists.
    async fn ensure_volume(&self, volume: &str) -> Result<(), Self::Error>;

    /// Create (never start) a helper container with `volume` mounted read-write at
    /// [`ENTRYPOINT_DIR`](kat_core::runtime::ENTRYPOINT_DIR), from [`HELPER_IMAGE`](crate::HELPER_IMAGE)
    /// (imported on first need), labelled [`LABEL_HELPER`](crate::LABEL_HELPER) and `deployment` as
    /// its [`LABEL_DEPLOYMENT`](kat_core::runtime::LABEL_DEPLOYMENT); returns its id. It must not
    /// carry `kat.managed`.
    async fn create_helper(&self, volume: &str, deployment: &str) -> Result<String, Self::Error>;

    /// The containers that carry [`LABEL_HELPER`](crate::LABEL_HELPER), in every state (their
    /// deployment from its label, no task).
    async fn list_helpers(&self) -> Result<Vec<ManagedContainer>, Self::Error>;

    /// The size and mode of `path` in `container`, `None` when it does not exist.
    async fn stat(&self, container: &str, path: &str) -> Result<Option<(u64, u32)>, Self::Error>;

    /// A tar of `path` in `container`, `None` when it does not exist or is longer than `limit` bytes.
    async fn read_archive(
        &self,
        container: &str,
        path: &str,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, Self::Error>;

    /// Extract `tar` into the directory `dir` of `container`.
    async fn upload(&self, container: &str, dir: &str, tar: Vec<u8>) -> Result<(), Self::Error>;
}

/// A guard that removes `id` with `engine` from a background thread unless disarmed (see [`CleanupGuard`]).
///
/// ```no_run
/// # async fn demo<E: kat_runtime_engine::EngineCalls>(engine: E, id: String) -> Result<(), E::Error> {
/// let guard = kat_runtime_engine::removal_guard(engine.clone(), id.clone());
/// // ... work with the container; an early return or a panic removes it ...
/// engine.remove(&id).await?;
/// guard.disarm();
/// # Ok(())
/// # }
/// ```
pub fn removal_guard<E: EngineCalls>(engine: E, id: String) -> CleanupGuard {
    CleanupGuard::new(format!("container {id}"), move || async move {
        if let Err(e) = engine.remove(&id).await {
            warn!(container = %id, error = %e, "could not remove the container");
        }
    })
}

/// When a removal by name is tried again after a create request was dropped in flight: the engine
/// may finish the create after the request's future is gone.
const LATE_CREATE_RETRIES_MS: [u64; 4] = [0, 250, 1000, 3000];

/// A guard for a create request in flight: dropped armed, it removes the container `name` from a
/// thread of its own, at once and again over the next few seconds ([`LATE_CREATE_RETRIES_MS`]),
/// since a removal before the engine has finished the create finds nothing (which counts as
/// removed).
fn late_create_guard<E: EngineCalls>(engine: E, name: String) -> CleanupGuard {
    CleanupGuard::new(
        format!("container {name} (create in flight)"),
        move || async move {
            for wait in LATE_CREATE_RETRIES_MS {
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                // An engine still busy creating it may refuse: the next try comes later.
                if let Err(e) = engine.remove(&name).await {
                    warn!(container = %name, error = %e, "could not remove the container (yet)");
                }
            }
        },
    )
}

/// [`ContainerRuntime::run`](kat_core::runtime::ContainerRuntime::run) on `engine`: create (pulling a missing
/// image once), attach, start, then [`supervise`] until the exit, the spec's timeout or `cancel` (the last two
/// SIGKILL the container), and remove the container on every path.
///
/// The life runs in a task spawned by [`spawn_run`]: a caller that drops this future still gets the
/// container killed and removed, and a [`CleanupGuard`] removes it from a thread of its own should the task
/// be dropped too (its runtime shutting down). One `kat_container` span per run (task, plugin, image,
/// container).
///
/// ```no_run
/// # async fn demo<E: kat_runtime_engine::EngineCalls>(engine: E) -> Result<(), E::Error> {
/// use kat_core::runtime::{CancellationToken, ContainerSpec};
/// let spec = ContainerSpec::new("hello", "kat-busybox:latest", ["echo", "hello"]);
/// let outcome = kat_runtime_engine::run_container(engine, spec, CancellationToken::new()).await?;
/// assert_eq!(outcome.stdout_tail, b"hello\n");
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// `cancel` firing before the create ([`EngineError::cancelled`]), and the engine's errors; a timeout or a
/// cancellation after the create is an [`Outcome`], not an error.
pub async fn run_container<E: EngineCalls>(
    engine: E,
    spec: ContainerSpec,
    cancel: CancellationToken,
) -> Result<Outcome, E::Error> {
    let span = info_span!(
        "kat_container",
        task = spec.labels.get(LABEL_TASK).map(String::as_str).unwrap_or(""),
        plugin = spec.labels.get(LABEL_PLUGIN).map(String::as_str).unwrap_or(""),
        image = %spec.image,
        container = tracing::field::Empty,
    );
    spawn_run(cancel, span, |stop| lifecycle(engine, spec, stop)).await?
}

async fn lifecycle<E: EngineCalls>(
    engine: E,
    spec: ContainerSpec,
    stop: StopSignal,
) -> Result<Outcome, E::Error> {
    let t0 = Instant::now();
    let name = container_name(&spec.name);
    if stop.fired_now().is_some() {
        return Err(E::Error::cancelled());
    }
    // Until the create answers only the name identifies the container: if this task is dropped with
    // the request in flight (its runtime shutting down), the engine may still create it.
    let pending = late_create_guard(engine.clone(), name.clone());
    let created = engine.create(&name, &spec, &stop).await;
    pending.disarm();
    let id = created?;
    tracing::Span::current().record("container", id.as_str());
    debug!(name = %name, elapsed_ms = t0.elapsed().as_millis() as u64, "created");
    let guard = removal_guard(engine.clone(), id.clone());
    let driven = drive(&engine, &id, &spec, &stop).await;
    let removed = engine.remove(&id).await;
    guard.disarm();
    if removed.is_ok() {
        debug!("removed");
    }
    conclude(id, t0, driven, removed)
}

/// Attach, start, and supervise; a stop before the start skips the rest.
async fn drive<E: EngineCalls>(
    engine: &E,
    id: &str,
    spec: &ContainerSpec,
    stop: &StopSignal,
) -> Result<Supervised<E::Error>, E::Error> {
    let not_started = |reason| Supervised::before_start(reason, spec.output_tail_bytes);
    if let Some(reason) = stop.fired_now() {
        return Ok(not_started(reason));
    }
    let output = engine.attach(id).await?;
    if let Some(reason) = stop.fired_now() {
        return Ok(not_started(reason));
    }
    engine.start(id).await?;
    debug!("started");
    let mut s = supervise(
        output,
        engine.wait(id),
        |why| async move {
            tracing::info!(why, "killing the container");
            engine.kill(id).await;
        },
        stop,
        spec.timeout,
        spec.output_tail_bytes,
    )
    .await;
    match s.wait_error.take() {
        Some(e) => Err(e),
        None => Ok(s),
    }
}

/// A helper container seen through [`VolumeAccess`].
struct Helper<'a, E> {
    engine: &'a E,
    id: &'a str,
}

#[async_trait]
impl<E: EngineCalls> VolumeAccess for Helper<'_, E> {
    type Error = E::Error;

    async fn stat(&self, path: &str) -> Result<Option<(u64, u32)>, E::Error> {
        self.engine.stat(self.id, path).await
    }

    async fn read_archive(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, E::Error> {
        self.engine.read_archive(self.id, path, limit).await
    }

    async fn upload(&self, dir: &str, tar: Vec<u8>) -> Result<(), E::Error> {
        self.engine.upload(self.id, dir, tar).await
    }
}

/// [`ContainerRuntime::prepare_entrypoint`](kat_core::runtime::ContainerRuntime::prepare_entrypoint) on
/// `engine`: check the volume name, hash the binary, create the volume, and [`sync_entrypoint`] through a
/// helper container of `deployment` that is removed again on every path (and by [`reap_orphans`] of
/// that deployment, should the process be killed in between). Callers serialize calls of one process.
///
/// ```no_run
/// # async fn demo<E: kat_runtime_engine::EngineCalls>(engine: E) -> Result<(), E::Error> {
/// use kat_core::runtime::{DEFAULT_ENTRYPOINT_VOLUME, EntrypointBinary};
/// let binary = EntrypointBinary { path: "/usr/local/lib/kat/kat-entrypoint".into() };
/// let mount = kat_runtime_engine::prepare_entrypoint(
///     &engine,
///     &binary,
///     DEFAULT_ENTRYPOINT_VOLUME,
///     "default",
/// )
/// .await?;
/// println!("{} in {}", mount.sha256, mount.volume);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// An invalid volume name ([`SpecError`](crate::SpecError)), an unreadable binary
/// ([`LoadError`](crate::LoadError)), the engine's errors.
pub async fn prepare_entrypoint<E: EngineCalls>(
    engine: &E,
    binary: &EntrypointBinary,
    volume: &str,
    deployment: &str,
) -> Result<EntrypointMount, E::Error> {
    check_volume_name("volume", volume)?;
    let payload = EntrypointPayload::load(binary).await?;
    engine.ensure_volume(volume).await?;
    let id = engine.create_helper(volume, deployment).await?;
    let guard = removal_guard(engine.clone(), id.clone());
    let synced = sync_entrypoint(
        &Helper {
            engine,
            id: id.as_str(),
        },
        volume,
        &payload,
    )
    .await;
    match engine.remove(&id).await {
        Ok(()) => guard.disarm(),
        Err(e) => warn!(container = %id, error = %e, "could not remove the volume helper"),
    }
    synced.map_err(|e| {
        e.into_engine(|e| E::Error::unexpected("building the entrypoint archive", e.to_string()))
    })?;
    Ok(EntrypointMount {
        volume: volume.to_string(),
        sha256: payload.sha256,
    })
}

/// [`ContainerRuntime::reap_orphans`](kat_core::runtime::ContainerRuntime::reap_orphans) on `engine`: remove
/// every managed container of `deployment` whose task is not in `live` (or does not parse), and every
/// helper container of `deployment` older than [`HELPER_GRACE_SECS`](crate::HELPER_GRACE_SECS) (left by
/// a process killed during [`prepare_entrypoint`]; a younger one may be another replica's prepare in
/// progress), trying all of them.
///
/// ```no_run
/// # async fn demo<E: kat_runtime_engine::EngineCalls>(engine: E) -> Result<(), E::Error> {
/// // At start-up, before any task runs: nothing is live.
/// let removed = kat_runtime_engine::reap_orphans(&engine, "default", &Default::default()).await?;
/// println!("reaped {}", removed.len());
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// The listing's error, or [`EngineError::unexpected`] naming the containers that could not be removed.
pub async fn reap_orphans<E: EngineCalls>(
    engine: &E,
    deployment: &str,
    live: &HashSet<TaskId>,
) -> Result<Vec<String>, E::Error> {
    let mut containers = engine.list_managed().await?;
    // Helpers have no task: one of the deployment's is left over from a killed process once it is older
    // than a prepare takes (a younger one may be another replica's prepare in progress).
    let now = crate::spec::unix_now_secs();
    containers.extend(engine.list_helpers().await?.into_iter().filter(|h| {
        crate::spec::helper_age_secs(&h.name, now)
            .is_none_or(|age| age >= crate::spec::HELPER_GRACE_SECS)
    }));
    let reaped = reap_each(containers, deployment, live, |id| async move {
        engine.remove(&id).await
    })
    .await;
    match reaped.failure() {
        None => Ok(reaped.removed),
        Some(message) => Err(E::Error::unexpected("reap", message)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;
    use crate::{LoadError, SpecError, TaskFailed};
    use kat_core::runtime::EndReason;

    #[derive(Debug, thiserror::Error)]
    enum FakeError {
        #[error("{0}")]
        Engine(String),
        #[error(transparent)]
        Spec(#[from] SpecError),
        #[error(transparent)]
        Load(#[from] LoadError),
        #[error(transparent)]
        Task(#[from] TaskFailed),
        #[error("cancelled")]
        Cancelled,
    }

    /// What the fake engine's containers do.
    #[derive(Debug, Clone, Default)]
    struct Script {
        stdout: Vec<&'static [u8]>,
        stderr: Vec<&'static [u8]>,
        exit: i64,
        runs_for: Duration,
        fail: Option<&'static str>,
        /// The create request never answers; the container appears 100 ms after it was sent (an
        /// engine finishing a create whose client went away).
        create_lands_late: bool,
    }

    #[derive(Debug, Default)]
    struct State {
        calls: Vec<String>,
        containers: BTreeMap<String, bool>,
        files: BTreeMap<String, Vec<u8>>,
        /// Helper containers (also in `containers`) and their deployment.
        helpers: BTreeMap<String, String>,
        killed: bool,
        /// A late create (`Script::create_lands_late`) has added its container.
        landed: bool,
    }

    #[derive(Debug, Clone)]
    struct Fake {
        script: Script,
        state: Arc<Mutex<State>>,
        kill: Arc<tokio::sync::Notify>,
    }

    impl Fake {
        fn new(script: Script) -> Self {
            Fake {
                script,
                state: Arc::default(),
                kill: Arc::default(),
            }
        }

        fn state(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|p| p.into_inner())
        }

        fn call(&self, what: &str) -> Result<(), FakeError> {
            self.state().calls.push(what.to_string());
            if self.script.fail == Some(what) {
                return Err(FakeError::Engine(format!("{what} failed")));
            }
            Ok(())
        }

        fn calls(&self) -> Vec<String> {
            self.state().calls.clone()
        }

        fn live_containers(&self) -> usize {
            self.state().containers.len()
        }
    }

    impl EngineError for FakeError {
        fn cancelled() -> FakeError {
            FakeError::Cancelled
        }

        fn unexpected(op: &'static str, message: String) -> FakeError {
            FakeError::Engine(format!("{op}: {message}"))
        }
    }

    #[async_trait]
    impl EngineCalls for Fake {
        type Error = FakeError;

        async fn capabilities(&self) -> Result<Capabilities, FakeError> {
            Ok(Capabilities {
                name: "fake".into(),
                engine_version: "1".into(),
                rootless: false,
                user_namespaces: false,
                pids_limit: true,
                named_volumes: true,
                host_network: true,
            })
        }

        async fn create(
            &self,
            name: &str,
            _spec: &ContainerSpec,
            _stop: &StopSignal,
        ) -> Result<String, FakeError> {
            self.call("create")?;
            if self.script.create_lands_late {
                let (state, name) = (Arc::clone(&self.state), name.to_string());
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(100));
                    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                    s.containers.insert(name, false);
                    s.landed = true;
                });
                std::future::pending::<()>().await;
            }
            self.state().containers.insert(name.to_string(), false);
            Ok(name.to_string())
        }

        async fn attach(&self, _id: &str) -> Result<OutputStream, FakeError> {
            self.call("attach")?;
            let out = self.script.stdout.iter().map(|b| Output::Stdout(*b));
            let err = self.script.stderr.iter().map(|b| Output::Stderr(*b));
            Ok(futures::stream::iter(
                out.chain(err)
                    .map(|o| {
                        Ok(match o {
                            Output::Stdout(b) => Output::Stdout(Bytes::from_static(b)),
                            Output::Stderr(b) => Output::Stderr(Bytes::from_static(b)),
                            Output::Other => Output::Other,
                        })
                    })
                    .collect::<Vec<_>>(),
            )
            .boxed())
        }

        async fn start(&self, _id: &str) -> Result<(), FakeError> {
            self.call("start")
        }

        async fn wait(&self, _id: &str) -> Result<Option<i64>, FakeError> {
            self.call("wait")?;
            tokio::select! {
                _ = tokio::time::sleep(self.script.runs_for) => Ok(Some(self.script.exit)),
                _ = self.kill.notified() => Ok(Some(137)),
            }
        }

        async fn kill(&self, _id: &str) {
            self.state().calls.push("kill".into());
            self.state().killed = true;
            self.kill.notify_one();
        }

        async fn remove(&self, id: &str) -> Result<(), FakeError> {
            self.state().calls.push("remove".into());
            self.state().containers.remove(id);
            self.state().helpers.remove(id);
            Ok(())
        }

        async fn list_managed(&self) -> Result<Vec<ManagedContainer>, FakeError> {
            let s = self.state();
            Ok(s.containers
                .keys()
                .filter(|id| !s.helpers.contains_key(*id))
                .map(|id| ManagedContainer {
                    id: id.clone(),
                    name: id.clone(),
                    task: None,
                    state: "running".into(),
                    deployment: None,
                })
                .collect())
        }

        async fn ensure_volume(&self, _volume: &str) -> Result<(), FakeError> {
            self.call("ensure_volume")
        }

        async fn create_helper(
            &self,
            _volume: &str,
            deployment: &str,
        ) -> Result<String, FakeError> {
            self.call("create_helper")?;
            let id = format!("helper-{deployment}");
            self.state().containers.insert(id.clone(), false);
            self.state().helpers.insert(id.clone(), deployment.into());
            Ok(id)
        }

        async fn list_helpers(&self) -> Result<Vec<ManagedContainer>, FakeError> {
            Ok(self
                .state()
                .helpers
                .iter()
                .map(|(id, d)| ManagedContainer {
                    id: id.clone(),
                    name: id.clone(),
                    task: None,
                    state: "created".into(),
                    deployment: Some(d.clone()),
                })
                .collect())
        }

        async fn stat(&self, _c: &str, path: &str) -> Result<Option<(u64, u32)>, FakeError> {
            Ok(self
                .state()
                .files
                .get(path)
                .map(|f| (f.len() as u64, 0o755)))
        }

        async fn read_archive(
            &self,
            _c: &str,
            _path: &str,
            _limit: usize,
        ) -> Result<Option<Vec<u8>>, FakeError> {
            Ok(self.state().files.get("tar").cloned())
        }

        async fn upload(&self, _c: &str, dir: &str, tar: Vec<u8>) -> Result<(), FakeError> {
            self.call("upload")?;
            // The first entry is the binary: remember its size for `stat`.
            let len = ::tar::Archive::new(&tar[..])
                .entries()
                .ok()
                .and_then(|mut entries| entries.next())
                .and_then(Result::ok)
                .and_then(|e| e.header().size().ok())
                .unwrap_or(0);
            let mut s = self.state();
            s.files.insert(
                format!("{dir}/entrypoint"),
                vec![0; usize::try_from(len).unwrap_or(0)],
            );
            s.files.insert("tar".into(), tar);
            Ok(())
        }
    }

    fn spec() -> ContainerSpec {
        let mut s = ContainerSpec::new("t", "img", ["true"]);
        s.timeout = Duration::from_secs(60);
        s
    }

    #[tokio::test]
    async fn a_run_attaches_before_start_and_removes() {
        let fake = Fake::new(Script {
            stdout: vec![b"out\n"],
            stderr: vec![b"err\n"],
            exit: 3,
            ..Default::default()
        });
        let o = run_container(fake.clone(), spec(), CancellationToken::new())
            .await
            .expect("run");
        assert_eq!((o.reason, o.exit_code), (EndReason::Exited, Some(3)));
        assert_eq!(o.stdout_tail, b"out\n");
        assert_eq!(o.stderr_tail, b"err\n");
        assert!(o.container_id.starts_with("t-"), "{}", o.container_id);
        assert_eq!(
            fake.calls(),
            ["create", "attach", "start", "wait", "remove"]
        );
        assert_eq!(fake.live_containers(), 0);
    }

    #[tokio::test]
    async fn failures_after_the_create_still_remove() {
        for step in ["attach", "start", "wait"] {
            let fake = Fake::new(Script {
                fail: Some(step),
                ..Default::default()
            });
            let e = run_container(fake.clone(), spec(), CancellationToken::new())
                .await
                .expect_err("the step fails");
            assert_eq!(e.to_string(), format!("{step} failed"));
            assert_eq!(fake.calls().last().map(String::as_str), Some("remove"));
            assert_eq!(fake.live_containers(), 0, "{step}");
        }
        let fake = Fake::new(Script {
            fail: Some("create"),
            ..Default::default()
        });
        assert!(
            run_container(fake.clone(), spec(), CancellationToken::new())
                .await
                .is_err()
        );
        assert_eq!(fake.calls(), ["create"]);
    }

    #[tokio::test]
    async fn the_deadline_and_the_token_kill_then_remove() {
        let fake = Fake::new(Script {
            runs_for: Duration::from_secs(30),
            ..Default::default()
        });
        let mut s = spec();
        s.timeout = Duration::from_millis(50);
        let o = run_container(fake.clone(), s, CancellationToken::new())
            .await
            .expect("run");
        assert_eq!((o.reason, o.exit_code), (EndReason::TimedOut, Some(137)));
        assert_eq!(
            fake.calls(),
            ["create", "attach", "start", "wait", "kill", "remove"]
        );

        let fake = Fake::new(Script {
            runs_for: Duration::from_secs(30),
            ..Default::default()
        });
        let cancel = CancellationToken::new();
        let run = tokio::spawn(run_container(fake.clone(), spec(), cancel.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
        let o = run.await.expect("join").expect("run");
        assert_eq!(o.reason, EndReason::Cancelled);
        assert_eq!(fake.live_containers(), 0);
    }

    #[tokio::test]
    async fn a_token_cancelled_before_the_create_creates_nothing() {
        let fake = Fake::new(Script::default());
        let cancel = CancellationToken::new();
        cancel.cancel();
        let e = run_container(fake.clone(), spec(), cancel)
            .await
            .expect_err("cancelled");
        assert!(matches!(e, FakeError::Cancelled), "{e:?}");
        assert!(fake.calls().is_empty());
    }

    #[tokio::test]
    async fn a_dropped_caller_still_kills_and_removes() {
        let fake = Fake::new(Script {
            runs_for: Duration::from_secs(30),
            ..Default::default()
        });
        let dropped = tokio::time::timeout(
            Duration::from_millis(50),
            run_container(fake.clone(), spec(), CancellationToken::new()),
        )
        .await;
        assert!(dropped.is_err());
        for _ in 0..100 {
            if fake.live_containers() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(fake.live_containers(), 0);
        assert!(fake.state().killed);
    }

    #[tokio::test]
    async fn the_entrypoint_is_written_once_and_the_helper_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("entrypoint");
        std::fs::write(&path, b"#!/bin/sh\n").expect("write");
        let binary = EntrypointBinary { path };
        let fake = Fake::new(Script::default());
        let m1 = prepare_entrypoint(&fake, &binary, "vol", "blue")
            .await
            .expect("prepare");
        let m2 = prepare_entrypoint(&fake, &binary, "vol", "blue")
            .await
            .expect("again");
        assert_eq!(m1, m2);
        let uploads = fake.calls().iter().filter(|c| *c == "upload").count();
        assert_eq!(uploads, 1, "{:?}", fake.calls());
        assert_eq!(fake.live_containers(), 0);
        assert!(matches!(
            prepare_entrypoint(&fake, &binary, "bad/name", "blue").await,
            Err(FakeError::Spec(_))
        ));
    }

    #[tokio::test]
    async fn reaping_removes_what_is_not_live() {
        let fake = Fake::new(Script::default());
        fake.state().containers.insert("a".into(), false);
        fake.state().containers.insert("b".into(), false);
        let removed = reap_orphans(&fake, "default", &HashSet::new())
            .await
            .expect("reap");
        assert_eq!(removed, ["a", "b"]);
        assert_eq!(fake.live_containers(), 0);
    }

    #[tokio::test]
    async fn reaping_removes_the_helpers_a_killed_prepare_left_of_its_deployment_only() {
        let fake = Fake::new(Script::default());
        // What a process killed between creating and removing its helper leaves behind.
        fake.create_helper("vol", "blue").await.expect("helper");
        fake.create_helper("vol", "green").await.expect("helper");
        let removed = reap_orphans(&fake, "blue", &HashSet::new())
            .await
            .expect("reap");
        assert_eq!(removed, ["helper-blue"]);
        assert_eq!(
            fake.state().helpers.keys().cloned().collect::<Vec<_>>(),
            ["helper-green"]
        );
    }

    /// A runtime shut down while the create request is in flight: the engine creates the container
    /// after the request's future is gone, and the guard of the request removes it by name once it
    /// lands.
    #[test]
    fn a_container_created_after_its_runtime_stopped_is_removed() {
        let fake = Fake::new(Script {
            create_lands_late: true,
            ..Script::default()
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let f = fake.clone();
        rt.spawn(async move {
            let spec = ContainerSpec::new("late", "kat-busybox:latest", ["true"]);
            let _ = run_container(f, spec, CancellationToken::new()).await;
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !fake.calls().contains(&"create".to_string()) {
            assert!(std::time::Instant::now() < deadline, "no create");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The request is in flight; the runtime goes away before it answers.
        drop(rt);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let landed = fake.state().landed;
            let live = fake.live_containers();
            if landed && live == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the late container is still there: landed {landed}, live {live}, calls {:?}",
                fake.calls()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(fake.calls().contains(&"remove".to_string()));
    }
}
