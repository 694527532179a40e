//! The Docker engine as the runtime error shared with the Podman runtime sees it ([`DockerEngine`]), and the
//! classification of bollard's errors into that error ([`DockerError`]).

use kat_runtime_engine::{
    EngineKind, RuntimeError, error_chain, io_error_kind, is_unreachable_kind,
};

use crate::DockerEngine;

/// What can go wrong in the Docker runtime: kat-runtime-engine's [`RuntimeError`] for the Docker engine.
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
pub type DockerError = RuntimeError<DockerEngine>;

/// Classify a bollard error from operation `op` on the engine at `socket`: connection failures become
/// [`DockerError::Unreachable`] or [`DockerError::PermissionDenied`], everything else [`DockerError::Api`].
pub(crate) fn classify(
    op: &'static str,
    socket: &str,
    source: bollard::errors::Error,
) -> DockerError {
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

/// Whether this is the engine's 404.
#[cfg(test)]
pub(crate) fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::Api {
            source: bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            },
            ..
        }
    )
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

impl EngineKind for DockerEngine {
    const BACKEND: &'static str = "docker";
    const NAME: &'static str = "Docker";
    const SERVICE: &'static str = "Docker engine";
    const PERMISSION_ADVICE: &'static str = "run as root, or add this user to the `docker` group";

    type ApiError = bollard::errors::Error;

    fn start_advice(_socket: &str) -> String {
        "start dockerd, or run scripts/engines.sh docker".to_string()
    }

    fn status(e: &bollard::errors::Error) -> Option<u16> {
        server_status(e).map(|(status, _)| status)
    }

    fn is_timeout(e: &bollard::errors::Error) -> bool {
        matches!(e, bollard::errors::Error::RequestTimeoutError)
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
        let e = classify(
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

        let e = classify(
            "connect",
            "/x.sock",
            bollard::errors::Error::SocketNotFoundError("/x.sock".into()),
        );
        assert!(e.to_string().contains("/x.sock"));
        assert!(kat_core::Error::from(e).is_retryable());
    }

    #[test]
    fn permission_denied_is_not_retryable() {
        let e = classify(
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
        let e = classify("create", "s", server(409, "name in use"));
        assert!(matches!(
            kat_core::Error::from(e),
            kat_core::Error::Conflict(_)
        ));
        let e = classify("create", "s", server(503, "busy"));
        assert!(kat_core::Error::from(e).is_retryable());
        let e = classify("start", "s", server(500, "OCI runtime create failed"));
        assert!(!kat_core::Error::from(e).is_retryable());
        let e = classify("inspect", "s", server(404, "No such container: x"));
        assert!(is_not_found(&e));
    }
}
