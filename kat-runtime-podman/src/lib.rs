//! # kat-runtime-podman
//!
//! kat-core's [`ContainerRuntime`](kat_core::runtime::ContainerRuntime) on Podman's libpod REST service,
//! through [podman-api]: the entrypoint volume, hardened plugin containers with deadlines and cancellation,
//! removal on every path, and orphan reaping. It passes kat-core's runtime conformance suite against a real Podman 4.3 service
//! (`tests/conformance.rs`), like the Docker runtime, with which it shares everything that is not
//! engine-specific ([`kat_runtime_engine`]).
//!
//! ```no_run
//! use kat_core::runtime::{CancellationToken, ContainerRuntime, ContainerSpec};
//! use kat_runtime_podman::PodmanRuntime;
//!
//! # async fn demo() -> kat_core::Result<()> {
//! let rt = PodmanRuntime::connect().await?;
//! let spec = ContainerSpec::new("hello", "kat-busybox:latest", ["echo", "hello"]);
//! let outcome = rt.run(spec, CancellationToken::new()).await?;
//! assert!(outcome.success());
//! assert_eq!(outcome.stdout_tail, b"hello\n");
//! # Ok(())
//! # }
//! ```
//!
//! The service must be running: `podman system service --time=0 unix:///run/kat-podman/podman.sock`, with a
//! `containers.conf` (named by `CONTAINERS_CONF`) that picks a working OCI runtime for the machine;
//! `scripts/engines.sh podman` does both. How a run goes: create (a missing image is pulled once), attach with
//! libpod's attach (stdout and stderr separately, keeping only the last `output_tail_bytes` of each; Podman's
//! docker-compatible `logs --follow` truncates output and is not used), start, then wait for the exit, the
//! spec's timeout or the cancellation token, whichever comes first (the last two SIGKILL the container), read
//! the exit code from libpod's wait, and remove the container (force) on every path. That life, the
//! entrypoint volume, reaping and the error type are kat-runtime-engine's ([`EngineRuntime`] on this crate's
//! [`EngineCalls`](kat_runtime_engine::EngineCalls), and [`RuntimeError`](kat_runtime_engine::RuntimeError)
//! for [`PodmanEngine`]); this crate holds the service's calls, connecting, the capabilities and the reading
//! of podman-api's errors. See `docs/runtime-podman.md` for the details and the measurements.
//!
//! [podman-api]: https://docs.rs/podman-api

#![forbid(unsafe_code)]

mod api;
mod entrypoint;
mod error;
mod run;
mod spec;

use std::path::Path;
use std::sync::Arc;

use kat_runtime_engine::{EngineRuntime, unix_socket_from_host};
use podman_api::{ApiVersion, LATEST_API_VERSION, Podman};
use tracing::info;

pub use error::PodmanError;
pub use kat_runtime_engine::{HELPER_IMAGE, LABEL_HELPER, MARKER_FILE};
pub use spec::Ulimits;

/// The Podman service, as [`PodmanError`] names it and reads podman-api's errors: backend `podman`, socket
/// named by `CONTAINER_HOST`, an HTTP status for the service's answers, and the whole chain of sources in
/// messages (podman-api's own text is often just "error 500 - ...").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodmanEngine;

/// The socket `scripts/engines.sh podman` starts the service on, tried first when `CONTAINER_HOST` is not
/// set.
///
/// ```
/// assert_eq!(kat_runtime_podman::DEFAULT_SOCKET, "/run/kat-podman/podman.sock");
/// ```
pub const DEFAULT_SOCKET: &str = "/run/kat-podman/podman.sock";

/// The system-wide socket of a rootful Podman service (`podman.socket` under systemd).
///
/// ```
/// assert_eq!(kat_runtime_podman::SYSTEM_SOCKET, "/run/podman/podman.sock");
/// ```
pub const SYSTEM_SOCKET: &str = "/run/podman/podman.sock";

/// The sockets tried, in order, when `CONTAINER_HOST` is not set: [`DEFAULT_SOCKET`], then the rootless
/// service's `$XDG_RUNTIME_DIR/podman/podman.sock` (when `xdg_runtime_dir` is given), then
/// [`SYSTEM_SOCKET`].
///
/// ```
/// let c = kat_runtime_podman::socket_candidates(Some("/run/user/1000"));
/// assert_eq!(c, [
///     "/run/kat-podman/podman.sock",
///     "/run/user/1000/podman/podman.sock",
///     "/run/podman/podman.sock",
/// ]);
/// assert_eq!(kat_runtime_podman::socket_candidates(None).len(), 2);
/// ```
pub fn socket_candidates(xdg_runtime_dir: Option<&str>) -> Vec<String> {
    let mut c = vec![DEFAULT_SOCKET.to_string()];
    if let Some(dir) = xdg_runtime_dir.map(str::trim).filter(|d| !d.is_empty()) {
        c.push(format!("{}/podman/podman.sock", dir.trim_end_matches('/')));
    }
    c.push(SYSTEM_SOCKET.to_string());
    c
}

/// The socket to use: `CONTAINER_HOST` when set, else the first of [`socket_candidates`] that exists (else
/// the first one, for the error message).
fn resolve_socket(
    container_host: Option<&str>,
    xdg_runtime_dir: Option<&str>,
    exists: impl Fn(&str) -> bool,
) -> Result<String, PodmanError> {
    match unix_socket_from_host(container_host) {
        Ok(Some(socket)) => Ok(socket),
        Err(value) => Err(PodmanError::UnsupportedHost {
            var: "CONTAINER_HOST",
            value,
        }),
        Ok(None) => {
            let candidates = socket_candidates(xdg_runtime_dir);
            match candidates.iter().find(|c| exists(c)) {
                Some(found) => Ok(found.clone()),
                None => Err(PodmanError::Unreachable {
                    socket: DEFAULT_SOCKET.to_string(),
                    reason: format!(
                        "CONTAINER_HOST is not set and none of {} exists",
                        candidates.join(", ")
                    ),
                }),
            }
        }
    }
}

/// What the service reports about its host, beyond
/// [`Capabilities`](kat_core::runtime::Capabilities).
///
/// ```no_run
/// # async fn demo(rt: kat_runtime_podman::PodmanRuntime) -> Result<(), kat_runtime_podman::PodmanError> {
/// let host = rt.host_info().await?;
/// println!("cgroup {} ({}), OCI runtime {}", host.cgroup_version, host.cgroup_manager, host.oci_runtime);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// Podman's version.
    pub version: String,
    /// Whether the service runs rootless.
    pub rootless: bool,
    /// Whether containers run in a user namespace (rootless, or a uid map).
    pub user_namespaces: bool,
    /// `v1` or `v2`.
    pub cgroup_version: String,
    /// `systemd` or `cgroupfs`.
    pub cgroup_manager: String,
    /// The cgroup controllers available to containers.
    pub cgroup_controllers: Vec<String>,
    /// Whether the pids limit is enforced (the `pids` controller is available, and not rootless on v1).
    pub pids_limit: bool,
    /// The OCI runtime's name (`runc`, `crun`).
    pub oci_runtime: String,
}

/// A [`ContainerRuntime`](kat_core::runtime::ContainerRuntime) on a Podman service. Cheap to clone; clones
/// share the connection settings.
///
/// ```no_run
/// use std::collections::HashSet;
/// use std::sync::Arc;
/// use kat_core::runtime::{ContainerRuntime, DEFAULT_ENTRYPOINT_VOLUME, EntrypointBinary};
/// use kat_runtime_podman::PodmanRuntime;
///
/// # async fn demo() -> kat_core::Result<()> {
/// let rt: Arc<dyn ContainerRuntime> = Arc::new(PodmanRuntime::connect().await?);
/// // At start-up: remove what a previous process left, then make the entrypoint available.
/// rt.reap_orphans("default", &HashSet::new()).await?;
/// let binary = EntrypointBinary { path: "target/x86_64-unknown-linux-gnu/entrypoint/kat-entrypoint".into() };
/// let mount = rt.prepare_entrypoint(&binary, DEFAULT_ENTRYPOINT_VOLUME, "default").await?;
/// println!("entrypoint {} in volume {}", mount.sha256, mount.volume);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PodmanRuntime(EngineRuntime<run::PodmanCalls>);

kat_runtime_engine::delegate_container_runtime!(PodmanRuntime, 0);

impl PodmanRuntime {
    /// Connect to the service named by `CONTAINER_HOST` (a unix socket: `unix:///path` or a bare path), else
    /// to the first existing socket of [`socket_candidates`] (`$XDG_RUNTIME_DIR` from the environment), and
    /// agree on the libpod API version (the service's, at most podman-api's 4.3.1).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), kat_runtime_podman::PodmanError> {
    /// let rt = kat_runtime_podman::PodmanRuntime::connect().await?;
    /// println!("connected to {} (libpod API {})", rt.socket(), rt.api_version());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`PodmanError::Unreachable`] when no socket exists or nothing answers (its message shows how to start
    /// the service), [`PodmanError::PermissionDenied`] when this user may not use the socket,
    /// [`PodmanError::NotTheEngine`] when something else answers, [`PodmanError::UnsupportedHost`] for a
    /// `CONTAINER_HOST` that is not a unix socket.
    pub async fn connect() -> Result<Self, PodmanError> {
        let socket = resolve_socket(
            std::env::var("CONTAINER_HOST").ok().as_deref(),
            std::env::var("XDG_RUNTIME_DIR").ok().as_deref(),
            |p| Path::new(p).exists(),
        )?;
        Self::connect_with_socket(&socket).await
    }

    /// Connect to the service on the unix socket at `path` (`unix://` prefix optional; see
    /// [`PodmanRuntime::connect`]).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), kat_runtime_podman::PodmanError> {
    /// let rt = kat_runtime_podman::PodmanRuntime::connect_with_socket("/run/kat-podman/podman.sock").await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`PodmanRuntime::connect`].
    pub async fn connect_with_socket(path: &str) -> Result<Self, PodmanError> {
        let path = path.strip_prefix("unix://").unwrap_or(path);
        if !Path::new(path).exists() {
            return Err(PodmanError::Unreachable {
                socket: path.to_string(),
                reason: "the socket does not exist".into(),
            });
        }
        let ping = Podman::unix(path).ping().await.map_err(|e| {
            match error::classify("ping", path, e) {
                PodmanError::Api { source, .. } => PodmanError::NotTheEngine {
                    socket: path.to_string(),
                    reason: source.to_string(),
                },
                other => other,
            }
        })?;
        let server: ApiVersion =
            ping.libpod_api_version
                .parse()
                .map_err(|e| PodmanError::NotTheEngine {
                    socket: path.to_string(),
                    reason: format!("Libpod-Api-Version {:?}: {e}", ping.libpod_api_version),
                })?;
        let version = if server < LATEST_API_VERSION {
            server
        } else {
            LATEST_API_VERSION
        };
        info!(socket = path, api = %version, server = %server, "connected to the Podman service");
        Ok(PodmanRuntime(EngineRuntime::new(run::PodmanCalls {
            podman: Podman::unix_versioned(path, version),
            raw: api::Raw::new(path.into(), version.to_string()),
            socket: Arc::from(path),
            api_version: Arc::from(version.to_string()),
            ulimits: Ulimits::default().within_current(),
        })))
    }

    /// The same runtime giving containers `ulimits` (lowered to this process's hard limits, see
    /// [`Ulimits::within_current`]) instead of the default 1024 open files and 1024 processes.
    ///
    /// ```no_run
    /// use kat_runtime_podman::{PodmanRuntime, Ulimits};
    /// # async fn demo() -> Result<(), kat_runtime_podman::PodmanError> {
    /// let rt = PodmanRuntime::connect().await?.with_ulimits(Ulimits { nofile: 4096, nproc: 512 });
    /// assert!(rt.ulimits().nofile <= 4096);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_ulimits(mut self, ulimits: Ulimits) -> Self {
        self.0.engine_mut().ulimits = ulimits.within_current();
        self
    }

    /// The ulimits containers get.
    ///
    /// ```no_run
    /// # fn demo(rt: kat_runtime_podman::PodmanRuntime) {
    /// println!("nofile {}, nproc {}", rt.ulimits().nofile, rt.ulimits().nproc);
    /// # }
    /// ```
    pub fn ulimits(&self) -> Ulimits {
        self.0.engine().ulimits
    }

    /// The podman-api client, for what the trait does not cover.
    ///
    /// ```no_run
    /// # async fn demo(rt: kat_runtime_podman::PodmanRuntime) -> Result<(), podman_api::Error> {
    /// let exists = rt.podman().images().get("kat-busybox:latest").exists().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn podman(&self) -> &Podman {
        &self.0.engine().podman
    }

    /// The socket this runtime talks to.
    ///
    /// ```no_run
    /// # fn demo(rt: kat_runtime_podman::PodmanRuntime) {
    /// assert_eq!(rt.socket(), "/run/kat-podman/podman.sock");
    /// # }
    /// ```
    pub fn socket(&self) -> &str {
        &self.0.engine().socket
    }

    /// The libpod API version in use (`4.3.1`).
    ///
    /// ```no_run
    /// # fn demo(rt: kat_runtime_podman::PodmanRuntime) {
    /// assert!(rt.api_version().starts_with("4."));
    /// # }
    /// ```
    pub fn api_version(&self) -> &str {
        &self.0.engine().api_version
    }

    /// What the service reports about its host: cgroup version and manager, controllers, OCI runtime,
    /// rootless, user namespaces.
    ///
    /// ```no_run
    /// # async fn demo(rt: kat_runtime_podman::PodmanRuntime) -> Result<(), kat_runtime_podman::PodmanError> {
    /// assert!(["v1", "v2"].contains(&rt.host_info().await?.cgroup_version.as_str()));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// When the service does not answer.
    pub async fn host_info(&self) -> Result<HostInfo, PodmanError> {
        self.0.engine().host_info().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_resolution() {
        let none = |_: &str| false;
        let all = |_: &str| true;
        assert_eq!(
            resolve_socket(Some("unix:///tmp/p.sock"), None, none).ok(),
            Some("/tmp/p.sock".to_string())
        );
        assert_eq!(
            resolve_socket(Some("/tmp/p.sock"), None, none).ok(),
            Some("/tmp/p.sock".to_string())
        );
        assert_eq!(
            resolve_socket(None, Some("/run/user/7"), all).ok(),
            Some(DEFAULT_SOCKET.to_string())
        );
        assert_eq!(
            resolve_socket(None, Some("/run/user/7"), |p: &str| p.contains("user")).ok(),
            Some("/run/user/7/podman/podman.sock".to_string())
        );
        assert_eq!(
            resolve_socket(Some(""), None, |p: &str| p == SYSTEM_SOCKET).ok(),
            Some(SYSTEM_SOCKET.to_string())
        );
        let e = resolve_socket(Some("ssh://core@host/run/podman.sock"), None, all)
            .expect_err("ssh is not supported");
        assert!(matches!(
            kat_core::Error::from(e),
            kat_core::Error::Invalid { .. }
        ));
        let e = resolve_socket(None, Some("/run/user/7"), none).expect_err("nothing exists");
        let s = e.to_string();
        assert!(s.contains("/run/user/7/podman/podman.sock"), "{s}");
        assert!(s.contains("podman system service --time=0"), "{s}");
        assert!(kat_core::Error::from(e).is_retryable());
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("podman.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        let e = PodmanRuntime::connect_with_socket(&format!("unix://{}", path.display()))
            .await
            .expect_err("nothing listens there");
        assert!(matches!(e, PodmanError::Unreachable { .. }), "{e:?}");
        let core = kat_core::Error::from(e);
        assert!(core.is_retryable());
        assert!(core.to_string().contains("podman system service"), "{core}");
    }

    #[tokio::test]
    async fn a_missing_socket_is_unavailable_with_advice() {
        let e = PodmanRuntime::connect_with_socket("/nonexistent/kat/podman.sock")
            .await
            .expect_err("no socket there");
        assert!(matches!(e, PodmanError::Unreachable { .. }), "{e:?}");
        let core = kat_core::Error::from(e);
        assert!(core.is_retryable());
        let s = core.to_string();
        assert!(s.contains("/nonexistent/kat/podman.sock"), "{s}");
        assert!(
            s.contains(
                "CONTAINERS_CONF=/run/kat-podman/containers.conf podman system service --time=0 \
                 unix:///nonexistent/kat/podman.sock"
            ),
            "{s}"
        );
        assert!(s.contains("scripts/engines.sh podman"), "{s}");
    }
}
