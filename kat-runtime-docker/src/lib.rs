//! # kat-runtime-docker
//!
//! kat-core's [`ContainerRuntime`](kat_core::runtime::ContainerRuntime) on a Docker engine, through
//! [bollard]: the entrypoint volume, hardened plugin containers with deadlines and cancellation, removal on
//! every path, and orphan reaping. It passes kat-core's runtime conformance suite against a real dockerd
//! (`tests/conformance.rs`).
//!
//! ```no_run
//! use kat_core::runtime::{CancellationToken, ContainerRuntime, ContainerSpec};
//! use kat_runtime_docker::DockerRuntime;
//!
//! # async fn demo() -> kat_core::Result<()> {
//! let rt = DockerRuntime::connect().await?;
//! let spec = ContainerSpec::new("hello", "kat-busybox:latest", ["echo", "hello"]);
//! let outcome = rt.run(spec, CancellationToken::new()).await?;
//! assert!(outcome.success());
//! assert_eq!(outcome.stdout_tail, b"hello\n");
//! # Ok(())
//! # }
//! ```
//!
//! How a run goes: create (a missing image is pulled once), attach (stdout and stderr separately, keeping only
//! the last `output_tail_bytes` of each), start, then wait for the exit, the spec's timeout or the cancellation
//! token, whichever comes first (the last two SIGKILL the container), and remove it (force) on every path.
//! The life of a container runs in a spawned task, so a caller that drops its future still gets the container
//! killed and removed. That life, the entrypoint volume, reaping and the error type are kat-runtime-engine's,
//! shared with the Podman runtime ([`EngineRuntime`] on this crate's
//! [`EngineCalls`](kat_runtime_engine::EngineCalls), and [`RuntimeError`](kat_runtime_engine::RuntimeError)
//! for [`DockerEngine`]); this crate holds the engine's calls, connecting, the capabilities and the reading of
//! bollard's errors. See `docs/runtime-docker.md` for the details and the measurements.
//!
//! [bollard]: https://docs.rs/bollard

#![forbid(unsafe_code)]

mod entrypoint;
mod error;
mod run;
mod spec;

use std::sync::Arc;

use bollard::{API_DEFAULT_VERSION, Docker};
use kat_runtime_engine::{EngineRuntime, unix_socket_from_host};
use tracing::info;

pub use error::DockerError;
pub use kat_runtime_engine::{HELPER_IMAGE, LABEL_HELPER, MARKER_FILE};

/// The socket used when `DOCKER_HOST` is not set.
///
/// ```
/// assert_eq!(kat_runtime_docker::DEFAULT_SOCKET, "/var/run/docker.sock");
/// ```
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// The Docker engine, as [`DockerError`] names it and reads bollard's errors: backend `docker`, socket
/// named by `DOCKER_HOST`, an HTTP status for the engine's answers, bollard's own timeout as a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DockerEngine;

/// How long bollard waits for the response headers of one API call (the task deadline is enforced
/// separately, by the runtime itself).
const CLIENT_TIMEOUT_SECS: u64 = 120;

/// A [`ContainerRuntime`](kat_core::runtime::ContainerRuntime) on a Docker engine. Cheap to clone; clones
/// share the connection settings.
///
/// ```no_run
/// use std::collections::HashSet;
/// use std::sync::Arc;
/// use kat_core::runtime::{ContainerRuntime, DEFAULT_ENTRYPOINT_VOLUME, EntrypointBinary};
/// use kat_runtime_docker::DockerRuntime;
///
/// # async fn demo() -> kat_core::Result<()> {
/// let rt: Arc<dyn ContainerRuntime> = Arc::new(DockerRuntime::connect().await?);
/// // At start-up: remove what a previous process left, then make the entrypoint available.
/// rt.reap_orphans("default", &HashSet::new()).await?;
/// let binary = EntrypointBinary { path: "target/x86_64-unknown-linux-gnu/entrypoint/kat-entrypoint".into() };
/// let mount = rt.prepare_entrypoint(&binary, DEFAULT_ENTRYPOINT_VOLUME, "default").await?;
/// println!("entrypoint {} in volume {}", mount.sha256, mount.volume);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DockerRuntime(EngineRuntime<run::DockerCalls>);

kat_runtime_engine::delegate_container_runtime!(DockerRuntime, 0);

impl DockerRuntime {
    /// Connect to the engine named by `DOCKER_HOST` (a unix socket: `unix:///path` or a bare path), else to
    /// [`DEFAULT_SOCKET`], and negotiate the API version down to what the engine speaks (dockerd 20.10 refuses
    /// bollard's default 1.53 and agrees on 1.41).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), kat_runtime_docker::DockerError> {
    /// let rt = kat_runtime_docker::DockerRuntime::connect().await?;
    /// println!("connected to {}", rt.socket());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`DockerError::Unreachable`] when the socket is missing or nothing answers (start dockerd, or run
    /// `scripts/engines.sh docker`), [`DockerError::PermissionDenied`] when this user may not use the socket,
    /// [`DockerError::UnsupportedHost`] for a `DOCKER_HOST` that is not a unix socket.
    pub async fn connect() -> Result<Self, DockerError> {
        let socket = socket_from_env(std::env::var("DOCKER_HOST").ok().as_deref())?;
        Self::connect_with_socket(&socket).await
    }

    /// Connect to the engine on the unix socket at `path` (see [`DockerRuntime::connect`]).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), kat_runtime_docker::DockerError> {
    /// let rt = kat_runtime_docker::DockerRuntime::connect_with_socket("/var/run/docker.sock").await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`DockerRuntime::connect`].
    pub async fn connect_with_socket(path: &str) -> Result<Self, DockerError> {
        let path = path.strip_prefix("unix://").unwrap_or(path);
        let docker = Docker::connect_with_unix(path, CLIENT_TIMEOUT_SECS, API_DEFAULT_VERSION)
            .map_err(|e| error::classify("connect", path, e))?
            .negotiate_version()
            .await
            .map_err(|e| error::classify("version negotiation", path, e))?;
        let version = docker.client_version();
        info!(socket = path, api = %version, "connected to the Docker engine");
        Ok(Self::from_docker(docker, path))
    }

    /// Wrap an existing bollard client (already negotiated); `socket` is only used in messages.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use bollard::{API_DEFAULT_VERSION, Docker};
    /// let docker = Docker::connect_with_unix("/var/run/docker.sock", 120, API_DEFAULT_VERSION)?
    ///     .negotiate_version()
    ///     .await?;
    /// let rt = kat_runtime_docker::DockerRuntime::from_docker(docker, "/var/run/docker.sock");
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_docker(docker: Docker, socket: &str) -> Self {
        DockerRuntime(EngineRuntime::new(run::DockerCalls {
            docker,
            socket: Arc::from(socket),
        }))
    }

    /// The bollard client, for what the trait does not cover.
    ///
    /// ```no_run
    /// # async fn demo(rt: kat_runtime_docker::DockerRuntime) -> Result<(), bollard::errors::Error> {
    /// let version = rt.docker().version().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn docker(&self) -> &Docker {
        &self.0.engine().docker
    }

    /// The socket this runtime talks to.
    ///
    /// ```no_run
    /// # async fn demo(rt: kat_runtime_docker::DockerRuntime) {
    /// assert_eq!(rt.socket(), "/var/run/docker.sock");
    /// # }
    /// ```
    pub fn socket(&self) -> &str {
        &self.0.engine().socket
    }
}

/// The socket path named by a `DOCKER_HOST` value.
fn socket_from_env(docker_host: Option<&str>) -> Result<String, DockerError> {
    match unix_socket_from_host(docker_host) {
        Ok(socket) => Ok(socket.unwrap_or_else(|| DEFAULT_SOCKET.to_string())),
        Err(value) => Err(DockerError::UnsupportedHost {
            var: "DOCKER_HOST",
            value,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_parsing() {
        assert_eq!(socket_from_env(None).ok().as_deref(), Some(DEFAULT_SOCKET));
        assert_eq!(
            socket_from_env(Some("")).ok().as_deref(),
            Some(DEFAULT_SOCKET)
        );
        assert_eq!(
            socket_from_env(Some("unix:///run/user/1000/docker.sock"))
                .ok()
                .as_deref(),
            Some("/run/user/1000/docker.sock")
        );
        assert_eq!(
            socket_from_env(Some("/tmp/d.sock")).ok().as_deref(),
            Some("/tmp/d.sock")
        );
        let e = socket_from_env(Some("tcp://127.0.0.1:2375")).expect_err("tcp is not supported");
        assert!(e.to_string().contains("tcp://127.0.0.1:2375"));
        assert!(matches!(
            kat_core::Error::from(e),
            kat_core::Error::Invalid { .. }
        ));
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("docker.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        let e = DockerRuntime::connect_with_socket(&format!("unix://{}", path.display()))
            .await
            .expect_err("nothing listens there");
        assert!(matches!(e, DockerError::Unreachable { .. }), "{e:?}");
        assert!(kat_core::Error::from(e).is_retryable());
    }

    #[tokio::test]
    async fn a_missing_socket_is_unavailable_with_advice() {
        let e = DockerRuntime::connect_with_socket("/nonexistent/kat/docker.sock")
            .await
            .expect_err("no socket there");
        assert!(matches!(e, DockerError::Unreachable { .. }), "{e:?}");
        let core = kat_core::Error::from(e);
        assert!(core.is_retryable());
        let s = core.to_string();
        assert!(s.contains("/nonexistent/kat/docker.sock"), "{s}");
        assert!(s.contains("scripts/engines.sh docker"), "{s}");
    }
}
