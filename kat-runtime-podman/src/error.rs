//! The crate's own error type and its mapping onto [`kat_core::Error`].

use std::path::PathBuf;

use kat_core::runtime::support::{
    LoadError, SpecError, TaskFailed, error_chain, io_error_kind, is_unreachable_kind,
};

/// The backend name used in [`kat_core::Error`] values.
pub(crate) const BACKEND: &str = "podman";

/// How to start the service this runtime talks to, for error messages.
pub(crate) fn start_advice(socket: &str) -> String {
    format!(
        "start it with `CONTAINERS_CONF=/run/kat-podman/containers.conf podman system service --time=0 \
         unix://{socket}` (that containers.conf selects runc and modest default ulimits), or run \
         `eval \"$(scripts/engines.sh podman)\"`"
    )
}

/// What can go wrong in the Podman runtime.
///
/// Every variant converts into [`kat_core::Error`] (that is what the [`ContainerRuntime`] methods return),
/// keeping the distinction the engine needs: [`kat_core::Error::is_retryable`] is true exactly where trying
/// again can help (the service is down or overloaded), false for a bad spec, a missing image or a socket we
/// may not use.
///
/// ```
/// use kat_runtime_podman::PodmanError;
/// let e = PodmanError::Unreachable {
///     socket: "/run/kat-podman/podman.sock".into(),
///     reason: "connection refused".into(),
/// };
/// assert!(e.to_string().contains("podman system service --time=0 unix:///run/kat-podman/podman.sock"));
/// let core: kat_core::Error = e.into();
/// assert!(core.is_retryable());
/// ```
///
/// [`ContainerRuntime`]: kat_core::runtime::ContainerRuntime
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PodmanError {
    /// The service's socket is missing or nothing answers on it.
    #[error(
        "cannot reach the Podman service at {socket}: {reason}; {}",
        start_advice(socket)
    )]
    Unreachable {
        /// The socket path.
        socket: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// The socket exists but this process may not use it.
    #[error(
        "permission denied on the Podman socket {socket}: run as the user that owns the service (root for a \
         rootful service), or start a service of your own (rootless: $XDG_RUNTIME_DIR/podman/podman.sock)"
    )]
    PermissionDenied {
        /// The socket path.
        socket: String,
    },
    /// Something answers on the socket, but it is not a Podman (libpod) service.
    #[error("{socket} does not answer like a Podman service: {reason}")]
    NotPodman {
        /// The socket path.
        socket: String,
        /// What was wrong with the answer.
        reason: String,
    },
    /// `CONTAINER_HOST` names something other than a unix socket.
    #[error(
        "CONTAINER_HOST={0:?} is not supported: use a unix socket (unix:///path/to/podman.sock, or the bare path)"
    )]
    UnsupportedHost(String),
    /// A libpod API call failed.
    #[error("Podman {op} failed: {}", describe(source))]
    Api {
        /// The operation (`create`, `start`, `remove`, ...).
        op: &'static str,
        /// podman-api's error.
        #[source]
        source: podman_api::Error,
    },
    /// The OCI runtime may not set the container's rlimits: the service's own hard limits are lower than
    /// [`Ulimits`](crate::Ulimits) asks for.
    #[error(
        "the Podman service cannot give containers {nofile} open files and {nproc} processes: {message}; \
         lower them with PodmanRuntime::with_ulimits, or raise the service's hard limits"
    )]
    UlimitsRefused {
        /// The `nofile` asked for.
        nofile: u64,
        /// The `nproc` asked for.
        nproc: u64,
        /// What the service said.
        message: String,
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
    /// The service answered with something unexpected.
    #[error("unexpected answer from Podman ({op}): {message}")]
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

/// podman-api's error with its sources (its own text is often just "error 500 - ...").
fn describe(e: &podman_api::Error) -> String {
    error_chain(e)
}

impl PodmanError {
    /// Classify a podman-api error from operation `op` on the service at `socket`: connection failures become
    /// [`PodmanError::Unreachable`] or [`PodmanError::PermissionDenied`], everything else [`PodmanError::Api`].
    pub(crate) fn from_api(op: &'static str, socket: &str, source: podman_api::Error) -> Self {
        if status(&source).is_some() {
            return PodmanError::Api { op, source };
        }
        match transport_io_kind(&source) {
            Some(std::io::ErrorKind::PermissionDenied) => PodmanError::PermissionDenied {
                socket: socket.to_string(),
            },
            Some(kind) if is_unreachable_kind(kind) => PodmanError::Unreachable {
                socket: socket.to_string(),
                reason: format!("{op}: {}", error_chain(&source)),
            },
            // A hyper error without an I/O cause (the connection closed before a response, ...).
            None if is_transport(&source) => PodmanError::Unreachable {
                socket: socket.to_string(),
                reason: format!("{op}: {}", error_chain(&source)),
            },
            _ => PodmanError::Api { op, source },
        }
    }

    /// The HTTP status of the service's answer, when this is one.
    #[cfg(test)]
    pub(crate) fn status(&self) -> Option<(u16, &str)> {
        match self {
            PodmanError::Api { source, .. } => status(source),
            _ => None,
        }
    }
}

/// The HTTP status and message of an error answer from the service.
pub(crate) fn status(e: &podman_api::Error) -> Option<(u16, &str)> {
    match e {
        podman_api::Error::Fault { code, message } => Some((code.as_u16(), message.as_str())),
        podman_api::Error::Error(podman_api::conn::Error::Fault { code, message }) => {
            Some((code.as_u16(), message.as_str()))
        }
        _ => None,
    }
}

/// Whether the error came from the transport (hyper, I/O) rather than from an answer.
fn is_transport(e: &podman_api::Error) -> bool {
    matches!(
        e,
        podman_api::Error::IO(_)
            | podman_api::Error::Error(
                podman_api::conn::Error::Hyper(_) | podman_api::conn::Error::IO(_)
            )
    )
}

/// The kind of the I/O error behind a transport failure. podman-api's `IO` and `Error` variants are
/// `#[error(transparent)]`: their `source()` skips the wrapped error itself, so those are matched first.
fn transport_io_kind(e: &podman_api::Error) -> Option<std::io::ErrorKind> {
    match e {
        podman_api::Error::IO(io) | podman_api::Error::Error(podman_api::conn::Error::IO(io)) => {
            Some(io.kind())
        }
        podman_api::Error::Error(podman_api::conn::Error::Hyper(h)) => io_error_kind(h),
        other => io_error_kind(other),
    }
}

impl From<SpecError> for PodmanError {
    fn from(e: SpecError) -> Self {
        PodmanError::Spec {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<LoadError> for PodmanError {
    fn from(e: LoadError) -> Self {
        PodmanError::ReadBinary {
            path: e.path,
            source: e.source,
        }
    }
}

impl From<TaskFailed> for PodmanError {
    fn from(e: TaskFailed) -> Self {
        PodmanError::Task(e.0)
    }
}

impl From<PodmanError> for kat_core::Error {
    fn from(e: PodmanError) -> Self {
        let message = e.to_string();
        match e {
            PodmanError::Unreachable { .. } => kat_core::Error::Unavailable {
                backend: BACKEND,
                message,
            },
            PodmanError::PermissionDenied { .. }
            | PodmanError::NotPodman { .. }
            | PodmanError::UlimitsRefused { .. } => {
                kat_core::Error::backend(BACKEND, message, false)
            }
            PodmanError::UnsupportedHost(_) => kat_core::Error::invalid("CONTAINER_HOST", message),
            PodmanError::ImageUnavailable { .. } => kat_core::Error::invalid("image", message),
            PodmanError::ReadBinary { ref path, .. } => {
                kat_core::Error::invalid(path.display().to_string(), message)
            }
            PodmanError::Spec { field, .. } => kat_core::Error::invalid(field, message),
            PodmanError::Cancelled => kat_core::Error::Cancelled,
            PodmanError::Api { ref source, .. } => match status(source) {
                Some((409, _)) => kat_core::Error::Conflict(message),
                // 500 is also what the service says for deterministic failures (an OCI runtime error, a bad
                // mount), so only the overload statuses are worth a retry.
                Some((502..=504, _)) => kat_core::Error::Unavailable {
                    backend: BACKEND,
                    message,
                },
                _ => kat_core::Error::backend(BACKEND, message, false),
            },
            PodmanError::Unexpected { .. } | PodmanError::Task(_) => {
                kat_core::Error::backend(BACKEND, message, false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(code: u16, message: &str) -> podman_api::Error {
        podman_api::Error::Fault {
            code: hyper014::StatusCode::from_u16(code).expect("a status"),
            message: message.into(),
        }
    }

    #[test]
    fn connection_failures_are_unavailable_and_retryable() {
        let e = PodmanError::from_api(
            "ping",
            "/run/kat-podman/podman.sock",
            podman_api::Error::IO(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        );
        assert!(matches!(e, PodmanError::Unreachable { .. }), "{e:?}");
        let core: kat_core::Error = e.into();
        assert!(core.is_retryable());
        let s = core.to_string();
        assert!(s.contains("podman unavailable"), "{s}");
        assert!(s.contains("CONTAINERS_CONF="), "{s}");
        assert!(s.contains("scripts/engines.sh podman"), "{s}");
    }

    #[test]
    fn permission_denied_is_not_retryable() {
        let e = PodmanError::from_api(
            "ping",
            "/run/podman/podman.sock",
            podman_api::Error::Error(podman_api::conn::Error::IO(std::io::Error::from(
                std::io::ErrorKind::PermissionDenied,
            ))),
        );
        assert!(matches!(e, PodmanError::PermissionDenied { .. }), "{e:?}");
        assert!(!kat_core::Error::from(e).is_retryable());
    }

    #[test]
    fn server_errors_map_by_status() {
        let e = PodmanError::from_api("create", "s", fault(409, "name in use"));
        assert_eq!(e.status(), Some((409, "name in use")));
        assert!(matches!(
            kat_core::Error::from(e),
            kat_core::Error::Conflict(_)
        ));
        let e = PodmanError::from_api("create", "s", fault(503, "busy"));
        assert!(kat_core::Error::from(e).is_retryable());
        let e = PodmanError::from_api("start", "s", fault(500, "OCI runtime error"));
        let core = kat_core::Error::from(e);
        assert!(!core.is_retryable());
        assert!(core.to_string().contains("OCI runtime error"), "{core}");
    }

    #[test]
    fn missing_image_names_the_image_and_is_not_retryable() {
        let e = PodmanError::ImageUnavailable {
            image: "127.0.0.1:1/none:x".into(),
            reason: "connection refused".into(),
        };
        let core = kat_core::Error::from(e);
        assert!(!core.is_retryable());
        let s = core.to_string();
        assert!(s.contains("127.0.0.1:1/none:x"), "{s}");
        assert!(s.contains("neither present locally nor pullable"), "{s}");
    }

    #[test]
    fn spec_errors_are_invalid_input() {
        let e = PodmanError::from(SpecError::new("env", "bad"));
        assert!(matches!(
            kat_core::Error::from(e),
            kat_core::Error::Invalid { .. }
        ));
    }
}
