//! A whole deployment in one call: a store, a container runtime, the engine and the HTTP API, wired
//! together the way `katd serve` runs them. Applications with other needs assemble the parts themselves
//! (see the crate docs); this is the reference assembly, used by `katd` and by the end-to-end tests.
//!
//! The store and the runtime come from the configuration ([`StoreChoice`], [`RuntimeChoice`]), so a new
//! backend is one more choice here and no change to the commands that use a deployment. Which choices a
//! build has is decided by the facade's features: `sled` (the sled store), `docker` and `podman` (the
//! runtimes); the memory store is always there. A choice whose feature is off is an error naming the
//! feature, both when parsed and when a deployment starts.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kat::core::Error> {
//! use kat::deploy::{DeployConfig, Deployment, RuntimeChoice};
//! let mut cfg = DeployConfig::new("/var/lib/kat", "127.0.0.1:8000".parse().unwrap(), vec![7u8; 32]);
//! cfg.runtime = "podman".parse::<RuntimeChoice>()?;
//! cfg.plugin_files = vec!["plugins/plugins.json".into()];
//! let d = Deployment::start(cfg).await?;
//! println!("API on http://{}/api/v1/", d.addr());
//! d.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use kat_core::Error;
use kat_core::engine::{Engine, EngineConfig, Recovery};
use kat_core::finding::FindingTypes;
use kat_core::memory::{MemoryFileStore, MemoryObjectStore, MemoryTaskStore};
use kat_core::object::{FindingTypeObject, Object};
use kat_core::org::{OrgCode, Organization};
use kat_core::plugin::{PluginDef, SyncReport, sync_with_policy};
use kat_core::policy::Policy;
use kat_core::runtime::ContainerRuntime;
use kat_core::store::{FileStore, ObjectStore, TaskStore};
use kat_core::token::TokenAuthority;
use kat_http::{Api, ApiConfig, JwtAuthority};
#[cfg(feature = "sled")]
use kat_store_sled::{SledOptions, SledStore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Which container engine runs plugins.
///
/// Parsed from `docker` or `podman` (as `katd serve --runtime` and `KAT_RUNTIME` take it); a name this
/// build has no feature for is an error that names the feature and the runtimes it has.
///
/// ```
/// use kat::deploy::RuntimeChoice;
/// assert_eq!("podman".parse::<RuntimeChoice>().unwrap(), RuntimeChoice::Podman);
/// assert_eq!(RuntimeChoice::default().to_string(), "docker");
/// let e = "lxc".parse::<RuntimeChoice>().unwrap_err().to_string();
/// assert!(e.contains("\"lxc\"") && e.contains("docker, podman"), "{e}");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RuntimeChoice {
    /// A Docker engine (`DOCKER_HOST` or `/var/run/docker.sock`); feature `docker`.
    #[default]
    Docker,
    /// Podman's libpod service (`CONTAINER_HOST`, else its default sockets); feature `podman`.
    Podman,
}

impl RuntimeChoice {
    /// Every runtime a deployment knows, whether this build has it or not.
    pub const ALL: [RuntimeChoice; 2] = [RuntimeChoice::Docker, RuntimeChoice::Podman];

    /// Its name, as parsed and printed; also the name of the facade's feature that builds it in.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeChoice::Docker => "docker",
            RuntimeChoice::Podman => "podman",
        }
    }

    /// Whether this build has it (its feature is on).
    pub fn is_built_in(self) -> bool {
        match self {
            RuntimeChoice::Docker => cfg!(feature = "docker"),
            RuntimeChoice::Podman => cfg!(feature = "podman"),
        }
    }

    /// The error for a runtime this build does not have.
    fn not_built_in(self) -> Error {
        let valid: Vec<&str> = Self::ALL
            .into_iter()
            .filter(|r| r.is_built_in())
            .map(RuntimeChoice::name)
            .collect();
        Error::invalid(
            "runtime",
            format!(
                "the runtime {:?} is not built in (the feature `{}` of the kat crate is off); {}",
                self.name(),
                self.name(),
                valid_list(&valid)
            ),
        )
    }
}

impl fmt::Display for RuntimeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RuntimeChoice {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        let wanted = value.trim();
        let choice = Self::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                let valid: Vec<&str> = Self::ALL
                    .into_iter()
                    .filter(|r| r.is_built_in())
                    .map(RuntimeChoice::name)
                    .collect();
                Error::invalid(
                    "runtime",
                    format!("unknown runtime {value:?}; {}", valid_list(&valid)),
                )
            })?;
        if !choice.is_built_in() {
            return Err(choice.not_built_in());
        }
        Ok(choice)
    }
}

/// Where objects, files, tasks and the plugin catalogue live.
///
/// Parsed by [`StoreChoice::parse`] from `sled` (in the data directory), `sled:<path>`, `memory` or a
/// `postgres://` URL (as `katd serve --store` and `KAT_STORE` take it).
///
/// ```
/// use std::path::Path;
/// use kat::deploy::StoreChoice;
/// let data = Path::new("/var/lib/kat");
/// assert_eq!(StoreChoice::parse("memory", data).unwrap(), StoreChoice::Memory);
/// assert_eq!(StoreChoice::parse("sled", data).unwrap(), StoreChoice::Sled(data.into()));
/// assert_eq!(StoreChoice::parse("sled:/srv/kat", data).unwrap(), StoreChoice::Sled("/srv/kat".into()));
/// let pg = StoreChoice::parse("postgres://kat:pw@db:5432/kat", data).unwrap();
/// assert_eq!(pg.to_string(), "postgres://kat:***@db:5432/kat"); // never the password
/// let e = StoreChoice::parse("postgres", data).unwrap_err().to_string();
/// assert!(e.contains("\"postgres\"") && e.contains("memory"), "{e}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreChoice {
    /// sled in this directory (the database and the file contents); feature `sled`.
    Sled(PathBuf),
    /// In memory: everything is gone when the deployment stops (demos, tests).
    Memory,
    /// PostgreSQL at this URL (`postgres://user[:password]@host[:port]/database`); feature
    /// `postgres`. Several deployments (replicas) may share one database.
    Postgres(String),
}

impl StoreChoice {
    /// Parse `sled` (sled in `data_dir`), `sled:<path>` or `memory`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the value and listing the valid ones, also for `sled` when the facade's
    /// feature `sled` is off.
    pub fn parse(value: &str, data_dir: &Path) -> Result<Self, Error> {
        let wanted = value.trim();
        let choice = if wanted.eq_ignore_ascii_case("memory") {
            StoreChoice::Memory
        } else if wanted.eq_ignore_ascii_case("sled") {
            StoreChoice::Sled(data_dir.to_path_buf())
        } else if wanted.starts_with("postgres://") || wanted.starts_with("postgresql://") {
            StoreChoice::Postgres(wanted.to_string())
        } else if let Some(path) = wanted.strip_prefix("sled:") {
            if path.is_empty() {
                return Err(Error::invalid(
                    "store",
                    format!("{value:?} names no directory; {}", Self::valid()),
                ));
            }
            StoreChoice::Sled(PathBuf::from(path))
        } else {
            return Err(Error::invalid(
                "store",
                format!("unknown store {value:?}; {}", Self::valid()),
            ));
        };
        if !choice.is_built_in() {
            return Err(choice.not_built_in());
        }
        Ok(choice)
    }

    /// Its kind: `sled`, `memory` or `postgres`; for sled and postgres also the name of the facade's
    /// feature that builds it in.
    pub fn name(&self) -> &'static str {
        match self {
            StoreChoice::Sled(_) => "sled",
            StoreChoice::Memory => "memory",
            StoreChoice::Postgres(_) => "postgres",
        }
    }

    /// Whether several deployments (replicas) may share this store: only PostgreSQL.
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreChoice::Postgres(_))
    }

    /// Whether this build has it (the memory store always; sled with the feature `sled`).
    pub fn is_built_in(&self) -> bool {
        match self {
            StoreChoice::Sled(_) => cfg!(feature = "sled"),
            StoreChoice::Memory => true,
            StoreChoice::Postgres(_) => cfg!(feature = "postgres"),
        }
    }

    /// The values this build accepts, for error messages.
    fn valid() -> String {
        let mut valid = Vec::new();
        if cfg!(feature = "sled") {
            valid.extend(["sled (in the data directory)", "sled:<path>"]);
        }
        valid.push("memory");
        if cfg!(feature = "postgres") {
            valid.push("postgres://user@host:port/database");
        }
        valid_list(&valid)
    }

    /// The error for a store this build does not have.
    fn not_built_in(&self) -> Error {
        Error::invalid(
            "store",
            format!(
                "the store {:?} is not built in (the feature `{}` of the kat crate is off); {}",
                self.name(),
                self.name(),
                Self::valid()
            ),
        )
    }
}

impl fmt::Display for StoreChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreChoice::Sled(path) => write!(f, "sled:{}", path.display()),
            StoreChoice::Memory => f.write_str("memory"),
            StoreChoice::Postgres(url) => f.write_str(&redact_password(url)),
        }
    }
}

/// A connection URL with its password, if any (in the user part or as a `password=` parameter),
/// replaced by `***`: what logs and errors show.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let mut out = match rest.rsplit_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{rest}"),
        },
        None => format!("{scheme}://{rest}"),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// The deployment name of deployments sharing the database at `url` (user, host, port and database,
/// never the password): `kat-` and 12 hex digits, as [`deployment_name`] makes for a data directory.
/// Replicas on one database share it, so that any worker reaps the containers a dead one left.
///
/// ```
/// let a = kat::deploy::shared_deployment_name("postgres://kat:one@db:5432/kat");
/// assert_eq!(a, kat::deploy::shared_deployment_name("postgres://kat:two@db:5432/kat"));
/// assert_ne!(a, kat::deploy::shared_deployment_name("postgres://kat@db:5432/other"));
/// assert!(kat::core::runtime::check_deployment(&a).is_ok());
/// ```
pub fn shared_deployment_name(url: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(redact_password(url).as_bytes());
    format!("kat-{}", &hex::encode(digest)[..12])
}

/// `valid: a, b` or, with nothing built in, what to do about it.
fn valid_list(valid: &[&str]) -> String {
    if valid.is_empty() {
        "this build has none (enable a feature of the kat crate)".to_string()
    } else {
        format!("valid: {}", valid.join(", "))
    }
}

/// What a deployment is made of.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    /// Where objects, files and tasks live.
    pub store: StoreChoice,
    /// Where the API listens (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The container engine.
    pub runtime: RuntimeChoice,
    /// The engine's settings. An empty `api_url` is derived from the listening address.
    pub engine: EngineConfig,
    /// Plugin definition files, synced at start (plugins missing from them are disabled, not deleted).
    pub plugin_files: Vec<PathBuf>,
    /// Whether plugins new to the catalogue start enabled.
    pub enable_new_plugins: bool,
    /// The operator's privilege policy (`katd serve --policy`, `KAT_POLICY`): which plugins may run as
    /// another user or with capabilities. The default grants nothing beyond the hardened default; a
    /// plugin asking for more is synced but refused (see [`kat_core::policy`]), and the others serve.
    pub policy: Policy,
    /// A `finding_types.json` whose entries are stored as finding types in every organization.
    pub finding_types: Option<PathBuf>,
    /// The business rules file (`katd serve --rules`, `KAT_RULES`). It must exist. Without one, the
    /// `business_rules.json` beside the first plugin file is loaded when it exists; otherwise the
    /// deployment has no rules. Either way a bad rule, or one that `requires` a plugin the catalogue
    /// lacks, stops the start with an error naming the file, the rule and the field.
    pub rules_file: Option<PathBuf>,
    /// Organizations to create if missing.
    pub organizations: Vec<Organization>,
    /// The HS256 secret of task and operator tokens (at least 32 bytes).
    pub jwt_secret: Vec<u8>,
    /// The API's settings. An empty `public_base_url` is derived from the listening address; without
    /// a `spool_dir`, uploads are spooled in a directory of this deployment's own ([`spool_dir`]),
    /// which every start clears of what a killed process left.
    pub api: ApiConfig,
    /// sled's settings, when the store is sled.
    #[cfg(feature = "sled")]
    pub sled: SledOptions,
}

/// The deployment name (`EngineConfig::deployment`) of a deployment whose data lives in `data_dir`:
/// `kat-` and 12 hex digits of the sha256 of the absolute path. Two deployments on one container
/// engine with different data directories then never reap each other's containers, and a restarted
/// one finds its own.
///
/// ```
/// use std::path::Path;
/// let a = kat::deploy::deployment_name(Path::new("/var/lib/kat"));
/// assert_eq!(a, kat::deploy::deployment_name(Path::new("/var/lib/kat")));
/// assert_ne!(a, kat::deploy::deployment_name(Path::new("/var/lib/kat2")));
/// assert!(a.starts_with("kat-") && a.len() == 16);
/// assert!(kat::core::runtime::check_deployment(&a).is_ok());
/// ```
pub fn deployment_name(data_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let path = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    format!("kat-{}", &hex::encode(digest)[..12])
}

impl DeployConfig {
    /// A configuration with defaults for everything but the data directory, address and secret: sled
    /// in the data directory, Docker, and as the engine's deployment name [`deployment_name`] of the
    /// data directory.
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr, jwt_secret: Vec<u8>) -> Self {
        let data_dir = data_dir.into();
        DeployConfig {
            listen,
            runtime: RuntimeChoice::Docker,
            engine: EngineConfig {
                api_url: String::new(),
                deployment: deployment_name(&data_dir),
                ..EngineConfig::default()
            },
            store: StoreChoice::Sled(data_dir),
            plugin_files: Vec::new(),
            enable_new_plugins: true,
            policy: Policy::default(),
            finding_types: None,
            rules_file: None,
            organizations: Vec::new(),
            jwt_secret,
            api: ApiConfig::default(),
            #[cfg(feature = "sled")]
            sled: SledOptions::default(),
        }
    }
}

/// The stores of a deployment, as the engine and the API take them.
#[derive(Debug, Clone)]
struct Stores {
    objects: Arc<dyn ObjectStore>,
    files: Arc<dyn FileStore>,
    tasks: Arc<dyn TaskStore>,
    /// The sled store behind the three, to flush at the end.
    #[cfg(feature = "sled")]
    sled: Option<SledStore>,
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Stores, Error> {
    let store = kat_store_postgres::PgStore::connect(url, kat_store_postgres::PgOptions::default())
        .await
        .map_err(|e| match e {
            e @ kat_store_postgres::PgStoreError::Config(_) => {
                Error::invalid("store", format!("{} ({})", e, redact_password(url)))
            }
            e => Error::from(e),
        })?;
    Ok(Stores {
        objects: Arc::new(store.clone()),
        files: Arc::new(store.clone()),
        tasks: Arc::new(store),
        #[cfg(feature = "sled")]
        sled: None,
    })
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(url: &str) -> Result<Stores, Error> {
    Err(StoreChoice::Postgres(url.to_string()).not_built_in())
}

/// How to open a store, beyond the choice.
#[derive(Debug, Clone, Default)]
struct StoreOptions {
    #[cfg(feature = "sled")]
    sled: SledOptions,
}

impl Stores {
    /// Open the chosen store.
    async fn open(choice: &StoreChoice, options: &StoreOptions) -> Result<Self, Error> {
        match choice {
            StoreChoice::Sled(path) => Self::open_sled(path, options),
            StoreChoice::Postgres(url) => open_postgres(url).await,
            StoreChoice::Memory => Ok(Stores {
                objects: Arc::new(MemoryObjectStore::default()),
                files: Arc::new(MemoryFileStore::default()),
                tasks: Arc::new(MemoryTaskStore::default()),
                #[cfg(feature = "sled")]
                sled: None,
            }),
        }
    }

    #[cfg(feature = "sled")]
    fn open_sled(path: &Path, options: &StoreOptions) -> Result<Self, Error> {
        let store = SledStore::open(path, options.sled.clone())?;
        Ok(Stores {
            objects: Arc::new(store.clone()),
            files: Arc::new(store.clone()),
            tasks: Arc::new(store.clone()),
            sled: Some(store),
        })
    }

    #[cfg(not(feature = "sled"))]
    fn open_sled(path: &Path, _options: &StoreOptions) -> Result<Self, Error> {
        Err(StoreChoice::Sled(path.to_path_buf()).not_built_in())
    }

    /// Write what the store buffers to disk (nothing to do in memory).
    async fn flush(&self) -> Result<(), Error> {
        #[cfg(feature = "sled")]
        if let Some(store) = &self.sled {
            store.flush().await?;
        }
        Ok(())
    }
}

/// Connect to the chosen container engine.
async fn connect_runtime(choice: RuntimeChoice) -> Result<Arc<dyn ContainerRuntime>, Error> {
    match choice {
        RuntimeChoice::Docker => connect_docker().await,
        RuntimeChoice::Podman => connect_podman().await,
    }
}

#[cfg(feature = "docker")]
async fn connect_docker() -> Result<Arc<dyn ContainerRuntime>, Error> {
    let runtime = kat_runtime_docker::DockerRuntime::connect()
        .await
        .map_err(Error::from)?;
    Ok(Arc::new(runtime))
}

#[cfg(not(feature = "docker"))]
async fn connect_docker() -> Result<Arc<dyn ContainerRuntime>, Error> {
    Err(RuntimeChoice::Docker.not_built_in())
}

#[cfg(feature = "podman")]
async fn connect_podman() -> Result<Arc<dyn ContainerRuntime>, Error> {
    let runtime = kat_runtime_podman::PodmanRuntime::connect()
        .await
        .map_err(Error::from)?;
    Ok(Arc::new(runtime))
}

#[cfg(not(feature = "podman"))]
async fn connect_podman() -> Result<Arc<dyn ContainerRuntime>, Error> {
    Err(RuntimeChoice::Podman.not_built_in())
}

/// Sync the plugin definition files into a catalogue: changed plugins are updated, plugins missing
/// from the files are disabled (never deleted), new ones start enabled if `enable_new_plugins`, and
/// plugins asking for more than `policy` grants are marked refused (and logged).
async fn sync_catalogue(
    tasks: &dyn TaskStore,
    plugin_files: &[PathBuf],
    enable_new_plugins: bool,
    policy: &Policy,
) -> Result<SyncReport, Error> {
    let defs = PluginDef::load_files(plugin_files)?;
    let existing = tasks.list_plugins().await?;
    let (writes, report) = sync_with_policy(&existing, &defs, enable_new_plugins, policy);
    tasks.put_plugins(writes).await?;
    for (plugin, reason) in &report.refused {
        warn!(%plugin, %reason, "plugin refused by the operator policy; it will not run");
    }
    Ok(report)
}

/// Sync plugin definition files into a store that no deployment is serving (what `katd sync` does),
/// the way [`Deployment::start`] syncs them, and flush.
///
/// ```no_run
/// # async fn demo() -> Result<(), kat::core::Error> {
/// use kat::deploy::{StoreChoice, sync_plugins};
/// let store = StoreChoice::Sled("/var/lib/kat".into());
/// let policy = kat::core::policy::Policy::default();
/// let report = sync_plugins(&store, &["plugins/plugins.json".into()], true, &policy).await?;
/// println!("added {:?}", report.added);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// A bad plugin file, a store that cannot be opened (for instance because a deployment holds it), or
/// the memory store (which nothing outlives).
pub async fn sync_plugins(
    store: &StoreChoice,
    plugin_files: &[PathBuf],
    enable_new_plugins: bool,
    policy: &Policy,
) -> Result<SyncReport, Error> {
    if *store == StoreChoice::Memory {
        return Err(Error::invalid(
            "store",
            "a memory store lives only inside a running deployment; sync into a sled store",
        ));
    }
    let stores = Stores::open(store, &StoreOptions::default()).await?;
    let report = sync_catalogue(
        stores.tasks.as_ref(),
        plugin_files,
        enable_new_plugins,
        policy,
    )
    .await?;
    stores.flush().await?;
    Ok(report)
}

/// Run every business rule of `rules_file` over every organization of a store that no deployment
/// holds (`katd rules run --data`): a full pass each, the same as `POST /business-rule-runs/` per
/// organization. Returns what each pass did, by organization.
///
/// # Errors
/// A bad rules file (naming the file, the rule and the field), a store that cannot be opened, or the
/// memory store.
pub async fn run_rules(
    store: &StoreChoice,
    rules_file: &Path,
) -> Result<Vec<(OrgCode, kat_core::rules::PassReport)>, Error> {
    run_rules_in(store, rules_file, &StoreOptions::default()).await
}

/// [`run_rules`] with sled opened with `sled` (`katd rules run --data --sled-cache-mib`: a cache
/// that holds what a full pass reads makes it several times faster, docs/store-sled.md).
///
/// # Errors
/// As [`run_rules`].
#[cfg(feature = "sled")]
pub async fn run_rules_with_sled(
    store: &StoreChoice,
    rules_file: &Path,
    sled: SledOptions,
) -> Result<Vec<(OrgCode, kat_core::rules::PassReport)>, Error> {
    run_rules_in(store, rules_file, &StoreOptions { sled }).await
}

async fn run_rules_in(
    store: &StoreChoice,
    rules_file: &Path,
    options: &StoreOptions,
) -> Result<Vec<(OrgCode, kat_core::rules::PassReport)>, Error> {
    if *store == StoreChoice::Memory {
        return Err(Error::invalid(
            "store",
            "a memory store lives only inside a running deployment; run rules on a sled store",
        ));
    }
    let rules = Arc::new(kat_core::rules::RuleSet::load(rules_file)?);
    let stores = Stores::open(store, options).await?;
    let runner =
        kat_core::rules::RuleRunner::new(rules, stores.objects.clone(), stores.tasks.clone());
    let mut out = Vec::new();
    for org in stores.tasks.list_organizations().await? {
        let report = runner.run_org(&org.code).await?;
        out.push((org.code, report));
    }
    stores.flush().await?;
    Ok(out)
}

/// A running deployment.
#[derive(Debug)]
pub struct Deployment {
    engine: Engine,
    stores: Stores,
    tokens: Arc<JwtAuthority>,
    addr: SocketAddr,
    recovery: Recovery,
    sync: SyncReport,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), Error>>,
}

impl Deployment {
    /// Open the store, connect to the engine, sync plugins, create organizations and finding types,
    /// recover from a previous run, and serve the API.
    ///
    /// # Errors
    /// Whatever fails first, with its cause: a store or runtime this build does not have, a bad plugin
    /// file, an unreachable engine, a busy port, a store that cannot be opened.
    pub async fn start(cfg: DeployConfig) -> Result<Self, Error> {
        // A bad rules file stops the start before anything is opened.
        let rules_file = rules_path(&cfg);
        let rules = match &rules_file {
            Some(p) => kat_core::rules::RuleSet::load(p)?,
            None => kat_core::rules::RuleSet::default(),
        };
        let options = StoreOptions {
            #[cfg(feature = "sled")]
            sled: cfg.sled.clone(),
        };
        let stores = Stores::open(&cfg.store, &options).await?;
        let tokens = Arc::new(JwtAuthority::hs256(&cfg.jwt_secret, stores.tasks.clone())?);
        let runtime = connect_runtime(cfg.runtime).await?;
        let report = sync_catalogue(
            stores.tasks.as_ref(),
            &cfg.plugin_files,
            cfg.enable_new_plugins,
            &cfg.policy,
        )
        .await?;
        info!(
            added = report.added.len(),
            updated = report.updated.len(),
            removed = report.removed.len(),
            refused = report.refused.len(),
            "plugins synced"
        );
        create_organizations(&stores, &cfg.organizations).await?;
        if let Some(path) = &cfg.finding_types {
            store_finding_types(&stores, path).await?;
        }
        check_rules(&rules, rules_file.as_deref(), stores.tasks.as_ref()).await?;

        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| {
                Error::invalid("listen", format!("cannot listen on {}: {e}", cfg.listen))
            })?;
        let addr = listener.local_addr()?;
        let mut engine_cfg = cfg.engine.clone();
        if engine_cfg.api_url.is_empty() {
            engine_cfg.api_url = format!("http://{addr}/api/v1");
        }
        let engine = Engine::builder()
            .rules(Arc::new(rules))
            .objects(stores.objects.clone())
            .files(stores.files.clone())
            .tasks(stores.tasks.clone())
            .runtime(runtime)
            .tokens(tokens.clone())
            .config(engine_cfg)
            .policy(cfg.policy.clone())
            .metrics(Arc::new(kat_core::metrics::Metrics::new()))
            .build()?;
        let mut api_cfg = cfg.api.clone();
        api_cfg.spool_dir = Some(spool_dir(&cfg));
        if api_cfg.public_base_url.is_empty() {
            api_cfg.public_base_url = format!("http://{addr}");
        }
        let api = Api::new(
            stores.objects.clone(),
            stores.files.clone(),
            stores.tasks.clone(),
            tokens.clone(),
            Some(Arc::new(engine.clone())),
            api_cfg,
        )
        .with_metrics(engine.metrics().clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let server = tokio::spawn(api.serve(listener, async move { stopped.cancelled().await }));
        let recovery = engine.start().await?;
        info!(%addr, runtime = %cfg.runtime, store = %cfg.store, "kat-rs is serving");
        Ok(Deployment {
            engine,
            stores,
            tokens,
            addr,
            recovery,
            sync: report,
            stop,
            server,
        })
    }

    /// The API's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API's base URL (`http://addr/api/v1`).
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The object store.
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.stores.objects
    }

    /// The file store.
    pub fn files(&self) -> &Arc<dyn FileStore> {
        &self.stores.files
    }

    /// The task store (tasks, schedules, organizations, the plugin catalogue, revoked tokens).
    pub fn tasks(&self) -> &Arc<dyn TaskStore> {
        &self.stores.tasks
    }

    /// The token authority.
    pub fn tokens(&self) -> &Arc<JwtAuthority> {
        &self.tokens
    }

    /// What start-up recovery did.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// What the plugin sync at start did.
    pub fn sync_report(&self) -> &SyncReport {
        &self.sync
    }

    /// An operator token for `org` with every permission.
    ///
    /// # Errors
    /// Signing errors.
    pub fn operator_token(&self, org: &OrgCode, ttl: Duration) -> Result<String, Error> {
        kat_http::mint_operator_token(
            self.tokens.as_ref() as &dyn TokenAuthority,
            "operator",
            org.clone(),
            kat_http::all_permissions(),
            ttl,
        )
    }

    /// Stop: cancel running tasks (their containers are killed and removed), stop the API, flush.
    pub async fn shutdown(self) {
        self.engine.shutdown(Duration::from_secs(20)).await;
        self.stop.cancel();
        let _ = self.server.await;
        let _ = self.stores.flush().await;
    }
}

/// Where a deployment spools uploads whose `type` comes after the file ([`ApiConfig::spool_dir`]):
/// the configured directory, else `spool` in a sled store's directory, else (a memory store, which
/// writes nothing to the data directory) `kat-spool-<deployment>` in the system's temporary
/// directory (on PostgreSQL `kat-spool-<deployment>-<worker id>`: one per replica). A directory of the deployment's own either way, so that a start may remove the spooled
/// uploads a killed process left there.
///
/// ```
/// use kat::deploy::{DeployConfig, spool_dir};
/// let cfg = DeployConfig::new("/var/lib/kat", "127.0.0.1:0".parse().unwrap(), vec![7; 32]);
/// assert_eq!(spool_dir(&cfg), std::path::Path::new("/var/lib/kat/spool"));
/// ```
pub fn spool_dir(cfg: &DeployConfig) -> PathBuf {
    if let Some(dir) = &cfg.api.spool_dir {
        return dir.clone();
    }
    match &cfg.store {
        StoreChoice::Sled(path) => path.join("spool"),
        StoreChoice::Memory => {
            std::env::temp_dir().join(format!("kat-spool-{}", cfg.engine.deployment))
        }
        // Replicas of one database share the deployment name: each spools apart (a start clears
        // its own spool only).
        StoreChoice::Postgres(_) => std::env::temp_dir().join(format!(
            "kat-spool-{}-{}",
            cfg.engine.deployment, cfg.engine.worker_id
        )),
    }
}

/// Create the organizations that do not exist yet.
async fn create_organizations(stores: &Stores, orgs: &[Organization]) -> Result<(), Error> {
    for org in orgs {
        if stores.tasks.get_organization(&org.code).await?.is_none() {
            stores.tasks.put_organization(org.clone()).await?;
        }
    }
    Ok(())
}

/// The rules file a configuration names ([`DeployConfig::rules_file`]), or the
/// `business_rules.json` beside its first plugin file; `None` when neither applies.
pub fn rules_path(cfg: &DeployConfig) -> Option<PathBuf> {
    if let Some(p) = &cfg.rules_file {
        return Some(p.clone());
    }
    let beside = cfg
        .plugin_files
        .first()?
        .parent()
        .map(|d| d.join("business_rules.json"))?;
    beside.is_file().then_some(beside)
}

/// Check the `requires` of the deployment's business rules against the catalogue.
async fn check_rules(
    rules: &kat_core::rules::RuleSet,
    file: Option<&Path>,
    tasks: &dyn TaskStore,
) -> Result<(), Error> {
    let Some(path) = file else {
        info!("no business rules file: no business rules");
        return Ok(());
    };
    let ids: Vec<String> = tasks
        .list_plugins()
        .await?
        .into_iter()
        .map(|p| p.def.plugin_id)
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    rules.check_plugins(&path.display().to_string(), &ids)?;
    info!(rules = rules.len(), file = %path.display(), "business rules loaded");
    Ok(())
}

/// Store the entries of a `finding_types.json` as finding types in every organization.
async fn store_finding_types(stores: &Stores, path: &Path) -> Result<(), Error> {
    let catalogue = FindingTypes::load(path)?;
    let objs: Vec<Object> = catalogue
        .0
        .iter()
        .map(|(code, def)| {
            Object::FindingType(FindingTypeObject {
                code: code.clone(),
                def: Some(def.clone()),
            })
        })
        .collect();
    for org in stores.tasks.list_organizations().await? {
        stores.objects.upsert(&org.code, objs.clone(), None).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> &'static Path {
        Path::new("/var/lib/kat")
    }

    fn message(e: Error) -> String {
        e.to_string()
    }

    #[cfg(all(feature = "docker", feature = "podman"))]
    #[test]
    fn runtime_names_parse_in_any_case_and_with_spaces() {
        assert_eq!(
            "docker".parse::<RuntimeChoice>().ok(),
            Some(RuntimeChoice::Docker)
        );
        assert_eq!(
            "podman".parse::<RuntimeChoice>().ok(),
            Some(RuntimeChoice::Podman)
        );
        assert_eq!(
            " Podman ".parse::<RuntimeChoice>().ok(),
            Some(RuntimeChoice::Podman)
        );
        assert_eq!(
            "DOCKER".parse::<RuntimeChoice>().ok(),
            Some(RuntimeChoice::Docker)
        );
    }

    #[cfg(all(feature = "docker", feature = "podman"))]
    #[test]
    fn runtime_default_is_docker_and_names_round_trip() {
        assert_eq!(RuntimeChoice::default(), RuntimeChoice::Docker);
        for r in RuntimeChoice::ALL {
            assert_eq!(r.to_string().parse::<RuntimeChoice>().ok(), Some(r));
        }
    }

    #[cfg(all(feature = "docker", feature = "podman"))]
    #[test]
    fn an_unknown_runtime_is_named_with_the_valid_ones() {
        for bad in ["", "lxc", "docker ce", "podman:", "dockerd"] {
            let e = bad.parse::<RuntimeChoice>().expect_err(bad);
            assert!(
                matches!(e, Error::Invalid { ref at, .. } if at == "runtime"),
                "{e}"
            );
            let m = message(e);
            assert!(m.contains(&format!("unknown runtime {bad:?}")), "{m}");
            assert!(m.contains("valid: docker, podman"), "{m}");
        }
    }

    #[test]
    fn a_runtime_without_its_feature_names_the_feature() {
        let m = message(RuntimeChoice::Podman.not_built_in());
        assert!(m.contains("\"podman\" is not built in"), "{m}");
        assert!(m.contains("feature `podman`"), "{m}");
    }

    #[cfg(feature = "sled")]
    #[test]
    fn store_values_parse() {
        assert_eq!(
            StoreChoice::parse("memory", data()).ok(),
            Some(StoreChoice::Memory)
        );
        assert_eq!(
            StoreChoice::parse(" MEMORY ", data()).ok(),
            Some(StoreChoice::Memory)
        );
        assert_eq!(
            StoreChoice::parse("sled", data()).ok(),
            Some(StoreChoice::Sled(data().to_path_buf()))
        );
        assert_eq!(
            StoreChoice::parse("sled:/srv/kat data", data()).ok(),
            Some(StoreChoice::Sled(PathBuf::from("/srv/kat data")))
        );
        assert_eq!(
            StoreChoice::parse("sled:relative/dir", data()).ok(),
            Some(StoreChoice::Sled(PathBuf::from("relative/dir")))
        );
    }

    #[cfg(feature = "sled")]
    #[test]
    fn store_choices_print_as_they_parse() {
        for s in [StoreChoice::Memory, StoreChoice::Sled("/srv/kat".into())] {
            assert_eq!(StoreChoice::parse(&s.to_string(), data()).ok(), Some(s));
        }
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn a_postgres_url_is_a_shared_store_shown_without_its_password() {
        for url in [
            "postgres://kat:s3cret@db:5432/kat",
            "postgresql://kat:s3cret@db/kat?sslmode=disable&password=s3cret",
        ] {
            let choice = StoreChoice::parse(url, data()).expect(url);
            assert!(choice.is_shared(), "{url}");
            assert_eq!(choice.name(), "postgres");
            let shown = choice.to_string();
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("@db"), "{shown}");
        }
        assert!(!StoreChoice::Memory.is_shared());
    }

    #[cfg(feature = "sled")]
    #[test]
    fn an_unknown_store_is_named_with_the_valid_ones() {
        for bad in ["", "postgres", "sled/tmp", "mem", "pg://localhost/kat"] {
            let e = StoreChoice::parse(bad, data()).expect_err(bad);
            assert!(
                matches!(e, Error::Invalid { ref at, .. } if at == "store"),
                "{e}"
            );
            let m = message(e);
            assert!(m.contains(&format!("unknown store {bad:?}")), "{m}");
            assert!(
                m.contains("valid: sled (in the data directory), sled:<path>, memory"),
                "{m}"
            );
        }
    }

    #[cfg(feature = "sled")]
    #[test]
    fn a_sled_store_without_a_directory_is_refused() {
        let m = message(StoreChoice::parse("sled:", data()).expect_err("no path"));
        assert!(m.contains("\"sled:\" names no directory"), "{m}");
    }

    #[test]
    fn a_store_without_its_feature_names_the_feature() {
        let m = message(StoreChoice::Sled(data().into()).not_built_in());
        assert!(m.contains("\"sled\" is not built in"), "{m}");
        assert!(m.contains("feature `sled`"), "{m}");
    }

    #[test]
    fn new_configurations_use_sled_in_the_data_directory_and_docker() {
        let cfg = DeployConfig::new("/var/lib/kat", "127.0.0.1:0".parse().expect("addr"), vec![]);
        assert_eq!(cfg.store, StoreChoice::Sled(data().to_path_buf()));
        assert_eq!(cfg.runtime, RuntimeChoice::Docker);
        assert_eq!(cfg.engine.deployment, deployment_name(data()));
    }

    #[test]
    fn uploads_are_spooled_with_the_data_or_in_a_directory_of_the_deployment() {
        let cfg = DeployConfig::new("/var/lib/kat", "127.0.0.1:0".parse().expect("addr"), vec![]);
        assert_eq!(spool_dir(&cfg), data().join("spool"));
        let mut mem = cfg.clone();
        mem.store = StoreChoice::Memory;
        assert_eq!(
            spool_dir(&mem),
            std::env::temp_dir().join(format!("kat-spool-{}", deployment_name(data())))
        );
        let mut own = cfg;
        own.api.spool_dir = Some("/srv/spool".into());
        assert_eq!(spool_dir(&own), PathBuf::from("/srv/spool"));
    }

    #[test]
    fn the_memory_store_is_always_built_in() {
        assert_eq!(
            StoreChoice::parse("memory", data()).ok(),
            Some(StoreChoice::Memory)
        );
    }

    #[cfg(not(feature = "sled"))]
    #[test]
    fn sled_is_refused_when_its_feature_is_off() {
        let m = message(StoreChoice::parse("sled", data()).expect_err("no sled"));
        assert!(
            m.contains("feature `sled`") && m.contains("valid: memory"),
            "{m}"
        );
        let m = message(StoreChoice::parse("nosql", data()).expect_err("unknown"));
        assert!(m.contains("unknown store \"nosql\"; valid: memory"), "{m}");
    }

    #[cfg(not(feature = "podman"))]
    #[test]
    fn podman_is_refused_when_its_feature_is_off() {
        let m = message("podman".parse::<RuntimeChoice>().expect_err("no podman"));
        assert!(m.contains("feature `podman`"), "{m}");
    }

    #[cfg(not(any(feature = "docker", feature = "podman")))]
    #[test]
    fn with_no_runtime_built_in_the_error_says_how_to_get_one() {
        let m = message("docker".parse::<RuntimeChoice>().expect_err("no docker"));
        assert!(m.contains("this build has none"), "{m}");
    }

    #[cfg(not(feature = "docker"))]
    #[tokio::test]
    async fn a_deployment_on_a_runtime_without_its_feature_does_not_start() {
        let mut cfg = DeployConfig::new(
            "/nonexistent",
            "127.0.0.1:0".parse().expect("addr"),
            vec![7; 32],
        );
        cfg.store = StoreChoice::Memory;
        let e = Deployment::start(cfg).await.expect_err("no docker");
        assert!(message(e).contains("feature `docker`"));
    }

    #[tokio::test]
    async fn plugins_are_not_synced_into_a_memory_store() {
        let e = sync_plugins(&StoreChoice::Memory, &[], true, &Policy::default())
            .await
            .expect_err("memory");
        assert!(message(e).contains("memory store"));
    }
}
