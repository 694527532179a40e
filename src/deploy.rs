//! A whole deployment in one call: sled storage, a container runtime, the engine and the HTTP API,
//! wired together the way `katd serve` runs them. Applications with other needs assemble the parts
//! themselves (see the crate docs); this is the reference assembly, used by `katd` and by the
//! end-to-end tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kat::core::Error> {
//! use kat::deploy::{DeployConfig, Deployment};
//! let mut cfg = DeployConfig::new("/var/lib/kat", "127.0.0.1:8000".parse().unwrap(), vec![7u8; 32]);
//! cfg.plugin_files = vec!["plugins/plugins.json".into()];
//! let d = Deployment::start(cfg).await?;
//! println!("API on http://{}/api/v1/", d.addr());
//! d.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kat_core::Error;
use kat_core::engine::{Engine, EngineConfig, Recovery};
use kat_core::finding::FindingTypes;
use kat_core::object::{FindingTypeObject, Object};
use kat_core::org::{OrgCode, Organization};
use kat_core::plugin::{PluginDef, SyncReport, sync};
use kat_core::runtime::ContainerRuntime;
use kat_core::store::{ObjectStore, TaskStore};
use kat_core::token::TokenAuthority;
use kat_http::{Api, ApiConfig, JwtAuthority};
use kat_store_sled::{SledOptions, SledStore};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Which container engine runs plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// A Docker engine (`DOCKER_HOST` or `/var/run/docker.sock`).
    Docker,
}

/// What a deployment is made of.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    /// Where sled and file contents live.
    pub data_dir: PathBuf,
    /// Where the API listens (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The container engine.
    pub runtime: RuntimeKind,
    /// The engine's settings. An empty `api_url` is derived from the listening address.
    pub engine: EngineConfig,
    /// Plugin definition files, synced at start (plugins missing from them are disabled, not deleted).
    pub plugin_files: Vec<PathBuf>,
    /// Whether plugins new to the catalogue start enabled.
    pub enable_new_plugins: bool,
    /// A `finding_types.json` whose entries are stored as finding types in every organization.
    pub finding_types: Option<PathBuf>,
    /// Organizations to create if missing.
    pub organizations: Vec<Organization>,
    /// The HS256 secret of task and operator tokens (at least 32 bytes).
    pub jwt_secret: Vec<u8>,
    /// The API's settings. An empty `public_base_url` is derived from the listening address.
    pub api: ApiConfig,
    /// sled's settings.
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
    /// A configuration with defaults for everything but the data directory, address and secret; the
    /// engine's deployment name is [`deployment_name`] of the data directory.
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr, jwt_secret: Vec<u8>) -> Self {
        let data_dir = data_dir.into();
        DeployConfig {
            listen,
            runtime: RuntimeKind::Docker,
            engine: EngineConfig {
                api_url: String::new(),
                deployment: deployment_name(&data_dir),
                ..EngineConfig::default()
            },
            data_dir,
            plugin_files: Vec::new(),
            enable_new_plugins: true,
            finding_types: None,
            organizations: Vec::new(),
            jwt_secret,
            api: ApiConfig::default(),
            sled: SledOptions::default(),
        }
    }
}

/// A running deployment.
#[derive(Debug)]
pub struct Deployment {
    engine: Engine,
    store: SledStore,
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
    /// Whatever fails first, with its cause: a bad plugin file, an unreachable engine, a busy port, a
    /// store that cannot be opened.
    pub async fn start(cfg: DeployConfig) -> Result<Self, Error> {
        let store = SledStore::open(&cfg.data_dir, cfg.sled.clone())?;
        let tasks: Arc<dyn TaskStore> = Arc::new(store.clone());
        let objects: Arc<dyn ObjectStore> = Arc::new(store.clone());
        let tokens = Arc::new(JwtAuthority::hs256(&cfg.jwt_secret, tasks.clone())?);
        let runtime: Arc<dyn ContainerRuntime> = match cfg.runtime {
            RuntimeKind::Docker => Arc::new(
                kat_runtime_docker::DockerRuntime::connect()
                    .await
                    .map_err(Error::from)?,
            ),
        };

        let defs = PluginDef::load_files(&cfg.plugin_files)?;
        let existing = tasks.list_plugins().await?;
        let (writes, report) = sync(&existing, &defs, cfg.enable_new_plugins);
        tasks.put_plugins(writes).await?;
        info!(
            added = report.added.len(),
            updated = report.updated.len(),
            removed = report.removed.len(),
            "plugins synced"
        );

        for org in &cfg.organizations {
            if tasks.get_organization(&org.code).await?.is_none() {
                tasks.put_organization(org.clone()).await?;
            }
        }
        if let Some(path) = &cfg.finding_types {
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
            for org in tasks.list_organizations().await? {
                objects.upsert(&org.code, objs.clone(), None).await?;
            }
        }

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
            .objects(objects.clone())
            .files(Arc::new(store.clone()))
            .tasks(tasks.clone())
            .runtime(runtime)
            .tokens(tokens.clone())
            .config(engine_cfg)
            .build()?;
        let mut api_cfg = cfg.api.clone();
        if api_cfg.public_base_url.is_empty() {
            api_cfg.public_base_url = format!("http://{addr}");
        }
        let api = Api::new(
            objects,
            Arc::new(store.clone()),
            tasks,
            tokens.clone(),
            Some(Arc::new(engine.clone())),
            api_cfg,
        );
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let server = tokio::spawn(api.serve(listener, async move { stopped.cancelled().await }));
        let recovery = engine.start().await?;
        info!(%addr, "kat-rs is serving");
        Ok(Deployment {
            engine,
            store,
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

    /// The store.
    pub fn store(&self) -> &SledStore {
        &self.store
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
        let _ = self.store.flush().await;
    }
}
