//! The container runtime contract: run one plugin container to completion, hardened, bounded in time,
//! cancellable, and always removed afterwards.
//!
//! Implementations: `kat-runtime-docker` (bollard) and `kat-runtime-podman` (podman-api), both written on
//! the generic engine runtime of `kat-runtime-engine`. The conformance suite (`conformance::runtime`,
//! feature `conformance`) holds every implementation to the same behaviour against a real engine.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
pub use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::task::TaskId;

/// Label on every container kat-rs creates; its value is always `true`.
pub const LABEL_MANAGED: &str = "kat.managed";
/// Label holding the task id.
pub const LABEL_TASK: &str = "kat.task";
/// Label holding the plugin id.
pub const LABEL_PLUGIN: &str = "kat.plugin";
/// Label holding the organization code.
pub const LABEL_ORG: &str = "kat.org";
/// Label holding the deployment a container belongs to: reaping touches only its own deployment's.
pub const LABEL_DEPLOYMENT: &str = "kat.deployment";
/// The deployment of containers without a [`LABEL_DEPLOYMENT`] (made before deployments were
/// labelled), and the engine's default deployment.
pub const DEFAULT_DEPLOYMENT: &str = "default";

/// Check a deployment name (the value of [`LABEL_DEPLOYMENT`]): 1 to 64 ASCII letters, digits,
/// `.`, `_` or `-`.
///
/// ```
/// use kat_core::runtime::check_deployment;
/// assert!(check_deployment("katd-3f2a9c").is_ok());
/// assert!(check_deployment("").is_err());
/// assert!(check_deployment("a b").is_err());
/// ```
///
/// # Errors
/// [`Error::Invalid`](crate::Error::Invalid) naming the bad name.
pub fn check_deployment(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(crate::Error::invalid(
            "deployment",
            format!("{name:?}: use 1 to 64 ASCII letters, digits, '.', '_' or '-'"),
        ))
    }
}

/// Where the entrypoint volume is mounted inside plugin containers.
pub const ENTRYPOINT_DIR: &str = "/plugin";
/// The entrypoint's path inside plugin containers.
pub const ENTRYPOINT_PATH: &str = "/plugin/entrypoint";
/// The default name of the entrypoint volume (`ENTRYPOINT_VOLUME`).
pub const DEFAULT_ENTRYPOINT_VOLUME: &str = "plugin-entrypoint";
/// The user plugin containers run as unless the plugin declares one (`nobody`).
pub const DEFAULT_USER: &str = "65534:65534";

/// The network a container joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The engine's default bridge.
    Bridge,
    /// The host's network stack (what our tests use, talking to 127.0.0.1).
    Host,
    /// No network at all.
    None,
    /// A named network.
    Named(String),
}

impl NetworkMode {
    /// Parse `DOCKER_NETWORK`: `bridge`, `host`, `none`, or any other name.
    ///
    /// ```
    /// use kat_core::runtime::NetworkMode;
    /// assert_eq!(NetworkMode::parse("host"), NetworkMode::Host);
    /// assert_eq!(NetworkMode::parse("kat-net"), NetworkMode::Named("kat-net".into()));
    /// ```
    pub fn parse(s: &str) -> Self {
        match s {
            "bridge" | "" => NetworkMode::Bridge,
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            other => NetworkMode::Named(other.to_string()),
        }
    }

    /// The engine's name for it.
    pub fn as_str(&self) -> &str {
        match self {
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
            NetworkMode::Named(n) => n,
        }
    }
}

/// Resource limits of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU limit in billionths of a CPU (1_000_000_000 = one CPU).
    pub nano_cpus: Option<u64>,
    /// Maximum number of processes.
    pub pids: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: Some(1 << 30),
            nano_cpus: Some(1_000_000_000),
            pids: Some(256),
        }
    }
}

/// Security settings of a container. The defaults are the hardened ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardening {
    /// Capabilities added back after dropping all (`NET_RAW` for a raw-socket scanner).
    pub cap_add: Vec<String>,
    /// Mount the root filesystem read-only (with a writable tmpfs on `/tmp`).
    pub read_only_rootfs: bool,
    /// Set `no-new-privileges`.
    pub no_new_privileges: bool,
    /// The user to run as; `None` means the image's own user. Defaults to [`DEFAULT_USER`].
    pub user: Option<String>,
    /// Size of the `/tmp` tmpfs in bytes, and of each of `writable_paths`.
    pub tmpfs_bytes: u64,
    /// More writable paths, each an empty tmpfs like `/tmp` (only what the operator's policy grants a
    /// plugin; see [`crate::policy`]).
    pub writable_paths: Vec<String>,
}

impl Default for Hardening {
    fn default() -> Self {
        Hardening {
            cap_add: Vec::new(),
            read_only_rootfs: true,
            no_new_privileges: true,
            user: Some(DEFAULT_USER.to_string()),
            tmpfs_bytes: 1 << 30,
            writable_paths: Vec::new(),
        }
    }
}

/// The entrypoint binary on the host, to be made available to containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrypointBinary {
    /// Path of the static binary.
    pub path: PathBuf,
}

/// A prepared entrypoint: the volume holding it and where it appears in containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrypointMount {
    /// The named volume.
    pub volume: String,
    /// The sha256 of the binary in it.
    pub sha256: String,
}

/// Everything needed to run one plugin container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// The container's name; unique per run (the engine rejects duplicates).
    pub name: String,
    /// The image reference.
    pub image: String,
    /// The command (with an entrypoint mount, the entrypoint's arguments).
    pub argv: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// The prepared entrypoint, mounted read-only at [`ENTRYPOINT_DIR`] and used as the container's
    /// entrypoint; `None` runs the image's own entrypoint with `argv`.
    pub entrypoint: Option<EntrypointMount>,
    /// The network.
    pub network: NetworkMode,
    /// How long the container may run before it is killed.
    pub timeout: Duration,
    /// Resource limits.
    pub limits: Limits,
    /// Security settings.
    pub hardening: Hardening,
    /// Labels; the runtime adds [`LABEL_MANAGED`].
    pub labels: BTreeMap<String, String>,
    /// How many bytes of the end of stdout and of stderr to keep in the [`Outcome`].
    pub output_tail_bytes: usize,
}

impl ContainerSpec {
    /// A spec with hardened defaults, host-independent settings and no entrypoint mount.
    ///
    /// ```
    /// use kat_core::runtime::ContainerSpec;
    /// let s = ContainerSpec::new("kat-test-1", "busybox:kat", ["echo", "hi"]);
    /// assert!(s.hardening.read_only_rootfs);
    /// assert_eq!(s.argv, vec!["echo", "hi"]);
    /// ```
    pub fn new<I, S>(name: impl Into<String>, image: impl Into<String>, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ContainerSpec {
            name: name.into(),
            image: image.into(),
            argv: argv.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            entrypoint: None,
            network: NetworkMode::None,
            timeout: Duration::from_secs(15 * 60),
            limits: Limits::default(),
            hardening: Hardening::default(),
            labels: BTreeMap::new(),
            output_tail_bytes: 64 * 1024,
        }
    }
}

/// Why a container stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The process exited by itself.
    Exited,
    /// It ran past its timeout and was killed.
    TimedOut,
    /// It was cancelled and killed.
    Cancelled,
}

/// What happened when a container ran. It has always been removed by the time this is returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Why it stopped.
    pub reason: EndReason,
    /// The exit code, when the engine reported one.
    pub exit_code: Option<i64>,
    /// The last bytes of stdout.
    pub stdout_tail: Vec<u8>,
    /// The last bytes of stderr.
    pub stderr_tail: Vec<u8>,
    /// The engine's id of the (now removed) container.
    pub container_id: String,
    /// Wall time from create to removed.
    pub elapsed: Duration,
}

impl Outcome {
    /// Whether the container exited by itself with code 0.
    pub fn success(&self) -> bool {
        self.reason == EndReason::Exited && self.exit_code == Some(0)
    }
}

/// What a runtime can do, reported truthfully so the engine and tests can adapt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// The backend's name (`docker`, `podman`, ...).
    pub name: String,
    /// The engine's version.
    pub engine_version: String,
    /// Whether containers run without root on the host.
    pub rootless: bool,
    /// Whether user namespaces are in use.
    pub user_namespaces: bool,
    /// Whether the pids limit is enforced.
    pub pids_limit: bool,
    /// Whether named volumes (for the entrypoint) are supported.
    pub named_volumes: bool,
    /// Whether host networking is supported.
    pub host_network: bool,
}

/// A container that carries our labels, as listed by [`ContainerRuntime::list_managed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedContainer {
    /// The engine's id.
    pub id: String,
    /// The container's name.
    pub name: String,
    /// The task it belongs to, when its label parses.
    pub task: Option<TaskId>,
    /// The engine's state (`running`, `exited`, `created`, ...).
    pub state: String,
    /// Its [`LABEL_DEPLOYMENT`], when it has one.
    pub deployment: Option<String>,
}

impl ManagedContainer {
    /// Whether it belongs to `deployment` (one without a deployment label belongs to
    /// [`DEFAULT_DEPLOYMENT`]).
    ///
    /// ```
    /// use kat_core::runtime::ManagedContainer;
    /// let mut c = ManagedContainer {
    ///     id: "c1".into(), name: "dns".into(), task: None, state: "running".into(), deployment: None,
    /// };
    /// assert!(c.belongs_to("default"));
    /// c.deployment = Some("blue".into());
    /// assert!(c.belongs_to("blue") && !c.belongs_to("default"));
    /// ```
    pub fn belongs_to(&self, deployment: &str) -> bool {
        self.deployment.as_deref().unwrap_or(DEFAULT_DEPLOYMENT) == deployment
    }
}

/// Runs plugin containers on some engine.
///
/// Contract for [`run`](ContainerRuntime::run): create the container from the spec (pulling a missing
/// image once; when that fails the error names the image and says it is neither local nor pullable),
/// start it, wait until it exits, its timeout passes or `cancel` fires (killing it in the last two
/// cases), collect the exit code and bounded output tails, and remove it on EVERY path, errors and
/// panics of the caller's future included (implementations remove in a guard or a spawned task).
#[async_trait]
pub trait ContainerRuntime: Send + Sync + Debug {
    /// What this runtime supports.
    async fn capabilities(&self) -> Result<Capabilities>;

    /// Make the entrypoint binary available in the named volume `volume`, idempotently: a volume that
    /// already holds a binary with the same sha256 is left alone; a different one is replaced.
    /// Whatever this leaves in the engine while it works (a helper container) carries `deployment`'s
    /// [`LABEL_DEPLOYMENT`], so that [`ContainerRuntime::reap_orphans`] of that deployment removes it
    /// should the process be killed in between.
    async fn prepare_entrypoint(
        &self,
        binary: &EntrypointBinary,
        volume: &str,
        deployment: &str,
    ) -> Result<EntrypointMount>;

    /// Make sure `image` is present, pulling it when it is missing (bounded by `timeout`), so that
    /// the engine mints a task's token after the pull and the token lives as long as the container
    /// may. Provided: nothing to do (for runtimes whose images are always there, or that pull inside
    /// [`run`](ContainerRuntime::run)).
    ///
    /// # Errors
    /// The image is neither present nor pullable within `timeout`; the engine is unreachable.
    async fn ensure_image(&self, image: &str, timeout: Duration) -> Result<()> {
        let _ = (image, timeout);
        Ok(())
    }

    /// Run one container to completion (see the trait docs).
    async fn run(&self, spec: ContainerSpec, cancel: CancellationToken) -> Result<Outcome>;

    /// List the containers that carry [`LABEL_MANAGED`].
    async fn list_managed(&self) -> Result<Vec<ManagedContainer>>;

    /// Remove (killing first if needed) every managed container of `deployment` (see
    /// [`ManagedContainer::belongs_to`]) whose task is not in `live`, and every helper container
    /// [`ContainerRuntime::prepare_entrypoint`] left for `deployment` (a process killed while it
    /// prepared); returns the removed containers' ids. Containers of other deployments are left
    /// alone.
    async fn reap_orphans(&self, deployment: &str, live: &HashSet<TaskId>) -> Result<Vec<String>>;
}
