//! The crate's own error type and its mapping onto [`kat_core::Error`].

use std::path::PathBuf;

use kat_core::runtime::support::{
    LoadError, SpecError, TaskFailed, error_chain, io_error_kind, is_unreachable_kind,
};

/// The backend name used in [`kat_core::Error`] values.
pub(crate) const BACKEND: &str = "docker";

/// What can go wrong in the Docker runtime.
///
/// Every variant converts into [`kat_core::Error`] (that is what the [`ContainerRuntime`] methods return),
/// keeping the distinction the engine needs: [`kat_core::Error::is_retryable`] is true exactly where trying
/// again can help (the daemon is down or overloaded), false for a bad spec, a missing image or a socket we may
/// not use.
///
/// ```
/// use kat_runtime_docker::DockerError;
/// let e = DockerError::Unreachable {
///     socket: "/var/run/docker.sock".into(),
///     reason: "connection refused".into(),
/// };
/// assert!(e.to_string().contains("scripts/engines.sh docker"));
/// let core: kat_core::Error = e.into();
/// assert!(core.is_retryable());
/// ```
///
/// [`ContainerRuntime`]: kat_core::runtime::ContainerRuntime
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    /// The engine's socket is missing or nothing answers on it.
    #[error(
        "cannot reach the Docker engine at {socket}: {reason}; start dockerd, or run scripts/engines.sh docker"
    )]
    Unreachable {
        /// The socket path.
        socket: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// The socket exists but this process may not use it.
    #[error(
        "permission denied on the Docker socket {socket}: run as root, or add this user to the `docker` group"
    )]
    PermissionDenied {
        /// The socket path.
        socket: String,
    },
    /// `DOCKER_HOST` names something other than a unix socket.
    #[error(
        "DOCKER_HOST={0:?} is not supported: use a unix socket (unix:///path/to/docker.sock, or the bare path)"
    )]
    UnsupportedHost(String),
    /// An engine API call failed.
    #[error("Docker {op} failed: {source}")]
    Api {
        /// The operation (`create`, `start`, `remove`, ...).
        op: &'static str,
        /// bollard's error.
        #[source]
        source: bollard::errors::Error,
    },
    /// The image is not present locally and pulling it failed.
    #[error("image {image:?} is neither present locally nor pullable: {reason}")]
    ImageUnavailable {
        /// The image reference.
        image: String,
        /// Why the pull failed.
        reason: String,
    },
    /// The entrypoint binary could not be read.
    #[error("cannot read the entrypoint binary {}: {source}", path.display())]
    ReadBinary {
        /// The binary's path on the host.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The spec cannot be turned into a container.
    #[error("invalid container spec at {field}: {message}")]
    Spec {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The engine answered with something unexpected.
    #[error("unexpected answer from Docker ({op}): {message}")]
    Unexpected {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The run was cancelled before its container existed.
    #[error("cancelled before the container was created")]
    Cancelled,
    /// The background task driving a container failed.
    #[error("the container's background task failed: {0}")]
    Task(String),
}

impl DockerError {
    /// Classify a bollard error from operation `op` on the engine at `socket`: connection failures become
    /// [`DockerError::Unreachable`] or [`DockerError::PermissionDenied`], everything else [`DockerError::Api`].
    pub(crate) fn from_bollard(
        op: &'static str,
        socket: &str,
        source: bollard::errors::Error,
    ) -> Self {
        use bollard::errors::Error as B;
        match &source {
            B::SocketNotFoundError(path) => DockerError::Unreachable {
                socket: path.clone(),
                reason: "the socket does not exist".into(),
            },
            B::IOError { .. } | B::HyperLegacyError { .. } | B::HyperResponseError { .. } => {
                match io_kind(&source) {
                    Some(std::io::ErrorKind::PermissionDenied) => DockerError::PermissionDenied {
                        socket: socket.to_string(),
                    },
                    Some(kind) if !is_unreachable_kind(kind) => DockerError::Api { op, source },
                    _ => DockerError::Unreachable {
                        socket: socket.to_string(),
                        reason: format!("{op}: {}", error_chain(&source)),
                    },
                }
            }
            _ => DockerError::Api { op, source },
        }
    }

    /// Whether this is the engine's 404 for `op`.
    #[cfg(test)]
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(
            self,
            DockerError::Api {
                source: bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ..
                },
                ..
            }
        )
    }
}

/// The engine's HTTP status and message, when the error is an answer from the engine.
pub(crate) fn server_status(e: &bollard::errors::Error) -> Option<(u16, &str)> {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => Some((*status_code, message.as_str())),
        _ => None,
    }
}

/// The kind of the first `std::io::Error` in the error or its source chain. (bollard's `IOError` is
/// `#[error(transparent)]`: its `source()` skips the `io::Error` itself, so it is matched first.)
fn io_kind(e: &bollard::errors::Error) -> Option<std::io::ErrorKind> {
    if let bollard::errors::Error::IOError { err } = e {
        return Some(err.kind());
    }
    io_error_kind(e)
}

impl From<SpecError> for DockerError {
    fn from(e: SpecError) -> Self {
        DockerError::Spec {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<LoadError> for DockerError {
    fn from(e: LoadError) -> Self {
        DockerError::ReadBinary {
            path: e.path,
            source: e.source,
        }
    }
}

impl From<TaskFailed> for DockerError {
    fn from(e: TaskFailed) -> Self {
        DockerError::Task(e.0)
    }
}

impl From<DockerError> for kat_core::Error {
    fn from(e: DockerError) -> Self {
        let message = e.to_string();
        match e {
            DockerError::Unreachable { .. } => kat_core::Error::Unavailable {
                backend: BACKEND,
                message,
            },
            DockerError::PermissionDenied { .. } => {
                kat_core::Error::backend(BACKEND, message, false)
            }
            DockerError::UnsupportedHost(_) => kat_core::Error::invalid("DOCKER_HOST", message),
            DockerError::ImageUnavailable { .. } => kat_core::Error::invalid("image", message),
            DockerError::ReadBinary { ref path, .. } => {
                kat_core::Error::invalid(path.display().to_string(), message)
            }
            DockerError::Spec { field, .. } => kat_core::Error::invalid(field, message),
            DockerError::Cancelled => kat_core::Error::Cancelled,
            DockerError::Api { ref source, .. } => match server_status(source) {
                Some((409, _)) => kat_core::Error::Conflict(message),
                // 500 is also what the engine says for deterministic failures (an OCI runtime error, a bad
                // mount), so only the overload statuses are worth a retry.
                Some((502..=504, _)) => kat_core::Error::Unavailable {
                    backend: BACKEND,
                    message,
                },
                Some(_) => kat_core::Error::backend(BACKEND, message, false),
                None => match source {
                    bollard::errors::Error::RequestTimeoutError => {
                        kat_core::Error::Timeout(message)
                    }
                    _ => kat_core::Error::backend(BACKEND, message, false),
                },
            },
            DockerError::Unexpected { .. } | DockerError::Task(_) => {
                kat_core::Error::backend(BACKEND, message, false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status_code: u16, message: &str) -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.into(),
        }
    }

    #[test]
    fn connection_failures_are_unavailable_and_retryable() {
        let e = DockerError::from_bollard(
            "ping",
            "/var/run/docker.sock",
            bollard::errors::Error::IOError {
                err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            },
        );
        assert!(matches!(e, DockerError::Unreachable { .. }), "{e:?}");
        let core: kat_core::Error = e.into();
        assert!(core.is_retryable());
        assert!(core.to_string().contains("docker unavailable"), "{core}");
        assert!(core.to_string().contains("start dockerd"), "{core}");

        let e = DockerError::from_bollard(
            "connect",
            "/x.sock",
            bollard::errors::Error::SocketNotFoundError("/x.sock".into()),
        );
        assert!(e.to_string().contains("/x.sock"));
        assert!(kat_core::Error::from(e).is_retryable());
    }

    #[test]
    fn permission_denied_is_not_retryable() {
        let e = DockerError::from_bollard(
            "ping",
            "/var/run/docker.sock",
            bollard::errors::Error::IOError {
                err: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            },
        );
        assert!(matches!(e, DockerError::PermissionDenied { .. }), "{e:?}");
        assert!(e.to_string().contains("docker` group"));
        assert!(!kat_core::Error::from(e).is_retryable());
    }

    #[test]
    fn server_errors_map_by_status() {
        let e = DockerError::from_bollard("create", "s", server(409, "name in use"));
        assert!(matches!(
            kat_core::Error::from(e),
            kat_core::Error::Conflict(_)
        ));
        let e = DockerError::from_bollard("create", "s", server(503, "busy"));
        assert!(kat_core::Error::from(e).is_retryable());
        let e = DockerError::from_bollard("start", "s", server(500, "OCI runtime create failed"));
        assert!(!kat_core::Error::from(e).is_retryable());
        let e = DockerError::from_bollard("inspect", "s", server(404, "No such container: x"));
        assert!(e.is_not_found());
    }

    #[test]
    fn missing_image_names_the_image_and_is_not_retryable() {
        let e = DockerError::ImageUnavailable {
            image: "127.0.0.1:1/none:x".into(),
            reason: "connection refused".into(),
        };
        let core = kat_core::Error::from(e);
        assert!(!core.is_retryable());
        let s = core.to_string();
        assert!(s.contains("127.0.0.1:1/none:x"), "{s}");
        assert!(s.contains("neither present locally nor pullable"), "{s}");
    }
}
