//! The runtime error shared by the engine runtimes ([`RuntimeError`]), what it needs to know about an engine
//! ([`EngineKind`]), what the shared code needs from any engine's error ([`EngineError`]), and the one
//! mapping onto [`kat_core::Error`].

use std::fmt::Debug;
use std::path::PathBuf;

use crate::{LoadError, SpecError, TaskFailed};

/// What the code written once needs to make of its own failures, in an engine's error type: the error type
/// of [`EngineCalls`](crate::EngineCalls). [`RuntimeError`] is one; a test's fake engine can bring its own.
pub trait EngineError:
    std::error::Error + From<SpecError> + From<LoadError> + From<TaskFailed> + Send + Sync + 'static
{
    /// The error for a run cancelled before its container was created.
    fn cancelled() -> Self;

    /// An unexpected answer of the engine to `op`.
    fn unexpected(op: &'static str, message: String) -> Self;
}

/// An engine as [`RuntimeError`] sees it: its names and advice in messages, and how to read its API client's
/// errors. Implemented by a marker type of each runtime crate (`kat_runtime_docker::DockerEngine`,
/// `kat_runtime_podman::PodmanEngine`).
///
/// ```
/// use kat_runtime_engine::{EngineKind, RuntimeError};
///
/// #[derive(Debug)]
/// struct Toy;
///
/// impl EngineKind for Toy {
///     const BACKEND: &'static str = "toy";
///     const NAME: &'static str = "Toy";
///     const SERVICE: &'static str = "Toy daemon";
///     const PERMISSION_ADVICE: &'static str = "run as root";
///     type ApiError = std::io::Error;
///     fn start_advice(_socket: &str) -> String {
///         "start toyd".into()
///     }
///     fn status(_e: &std::io::Error) -> Option<u16> {
///         None
///     }
/// }
///
/// let e = RuntimeError::<Toy>::Unreachable { socket: "/run/toy.sock".into(), reason: "refused".into() };
/// assert_eq!(e.to_string(), "cannot reach the Toy daemon at /run/toy.sock: refused; start toyd");
/// assert!(kat_core::Error::from(e).is_retryable());
/// ```
pub trait EngineKind: Debug + Send + Sync + 'static {
    /// The backend's name in [`kat_core::Error`] values (`docker`); also names the socket in advice
    /// (`unix:///path/to/docker.sock`).
    const BACKEND: &'static str;
    /// The engine's name in messages (`Docker`).
    const NAME: &'static str;
    /// What answers on the socket, in messages (`Docker engine`, `Podman service`).
    const SERVICE: &'static str;
    /// What to do when this process may not use the socket.
    const PERMISSION_ADVICE: &'static str;
    /// What to do when the engine cannot give containers the ulimits asked for.
    const ULIMITS_ADVICE: &'static str = "raise the engine's hard limits";

    /// The engine API client's error type.
    type ApiError: std::error::Error + Send + Sync + 'static;

    /// How to start the engine on `socket`, for [`RuntimeError::Unreachable`].
    fn start_advice(socket: &str) -> String;

    /// The HTTP status of an API error that is the engine's answer, `None` for a transport failure.
    fn status(e: &Self::ApiError) -> Option<u16>;

    /// Whether an API error is the client giving up waiting (a [`kat_core::Error::Timeout`]).
    fn is_timeout(_e: &Self::ApiError) -> bool {
        false
    }

    /// An API error's text in [`RuntimeError::Api`]'s message (its `Display` unless an engine says more).
    fn describe(e: &Self::ApiError) -> String {
        e.to_string()
    }
}

/// What can go wrong in a runtime on the engine `K` (`kat_runtime_docker::DockerError` and
/// `kat_runtime_podman::PodmanError` are this for their engines).
///
/// Every variant converts into [`kat_core::Error`] (that is what the
/// [`ContainerRuntime`](kat_core::runtime::ContainerRuntime) methods return), keeping the distinction the
/// engine needs: [`kat_core::Error::is_retryable`] is true exactly where trying again can help (the engine is
/// down or overloaded), false for a bad spec, a missing image or a socket we may not use. A runtime crate only
/// classifies its client's errors into these variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError<K: EngineKind> {
    /// The engine's socket is missing or nothing answers on it.
    #[error(
        "cannot reach the {} at {socket}: {reason}; {}",
        K::SERVICE,
        K::start_advice(socket)
    )]
    Unreachable {
        /// The socket path.
        socket: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// The socket exists but this process may not use it.
    #[error(
        "permission denied on the {} socket {socket}: {}",
        K::NAME,
        K::PERMISSION_ADVICE
    )]
    PermissionDenied {
        /// The socket path.
        socket: String,
    },
    /// Something answers on the socket, but not like the engine's service.
    #[error("{socket} does not answer like a {}: {reason}", K::SERVICE)]
    NotTheEngine {
        /// The socket path.
        socket: String,
        /// What was wrong with the answer.
        reason: String,
    },
    /// The environment variable naming the engine's socket (`DOCKER_HOST`) names something other than a
    /// unix socket.
    #[error(
        "{var}={value:?} is not supported: use a unix socket (unix:///path/to/{}.sock, or the bare path)",
        K::BACKEND
    )]
    UnsupportedHost {
        /// The variable (`DOCKER_HOST`, `CONTAINER_HOST`).
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// An engine API call failed.
    #[error("{} {op} failed: {}", K::NAME, K::describe(source))]
    Api {
        /// The operation (`create`, `start`, `remove`, ...).
        op: &'static str,
        /// The API client's error.
        #[source]
        source: K::ApiError,
    },
    /// The OCI runtime may not set the container's rlimits: the engine's own hard limits are lower than
    /// what the runtime asks for.
    #[error(
        "the {} cannot give containers {nofile} open files and {nproc} processes: {message}; {}",
        K::SERVICE,
        K::ULIMITS_ADVICE
    )]
    UlimitsRefused {
        /// The `nofile` asked for.
        nofile: u64,
        /// The `nproc` asked for.
        nproc: u64,
        /// What the engine said.
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
    /// The engine answered with something unexpected.
    #[error("unexpected answer from {} ({op}): {message}", K::NAME)]
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

impl<K: EngineKind> From<SpecError> for RuntimeError<K> {
    fn from(e: SpecError) -> Self {
        RuntimeError::Spec {
            field: e.field,
            message: e.message,
        }
    }
}

impl<K: EngineKind> From<LoadError> for RuntimeError<K> {
    fn from(e: LoadError) -> Self {
        RuntimeError::ReadBinary {
            path: e.path,
            source: e.source,
        }
    }
}

impl<K: EngineKind> From<TaskFailed> for RuntimeError<K> {
    fn from(e: TaskFailed) -> Self {
        RuntimeError::Task(e.0)
    }
}

impl<K: EngineKind> EngineError for RuntimeError<K> {
    fn cancelled() -> Self {
        RuntimeError::Cancelled
    }

    fn unexpected(op: &'static str, message: String) -> Self {
        RuntimeError::Unexpected { op, message }
    }
}

impl<K: EngineKind> From<RuntimeError<K>> for kat_core::Error {
    /// The runtime error becomes the [`kat_core::Error`]'s source (its text is the message), classified
    /// so that [`kat_core::Error::is_retryable`] is true exactly where trying again can help.
    fn from(e: RuntimeError<K>) -> Self {
        let backend = K::BACKEND;
        match e {
            RuntimeError::Unreachable { .. } => kat_core::Error::unavailable_source(backend, e),
            RuntimeError::PermissionDenied { .. }
            | RuntimeError::NotTheEngine { .. }
            | RuntimeError::UlimitsRefused { .. }
            | RuntimeError::Unexpected { .. }
            | RuntimeError::Task(_) => kat_core::Error::backend_source(backend, e, false),
            RuntimeError::UnsupportedHost { var, .. } => {
                kat_core::Error::invalid(var, e.to_string())
            }
            RuntimeError::ImageUnavailable { .. } => {
                kat_core::Error::invalid("image", e.to_string())
            }
            RuntimeError::ReadBinary { ref path, .. } => {
                kat_core::Error::invalid(path.display().to_string(), e.to_string())
            }
            RuntimeError::Spec { field, .. } => kat_core::Error::invalid(field, e.to_string()),
            RuntimeError::Cancelled => kat_core::Error::Cancelled,
            RuntimeError::Api { ref source, .. } => match K::status(source) {
                Some(409) => kat_core::Error::Conflict(e.to_string()),
                // 500 is also what engines say for deterministic failures (an OCI runtime error, a bad
                // mount), so only the overload statuses are worth a retry.
                Some(502..=504) => kat_core::Error::unavailable_source(backend, e),
                None if K::is_timeout(source) => kat_core::Error::Timeout(e.to_string()),
                Some(_) | None => kat_core::Error::backend_source(backend, e, false),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine whose API errors are an answer with a status, a client timeout, or a transport failure.
    #[derive(Debug)]
    struct Toy;

    #[derive(Debug, thiserror::Error)]
    enum ToyApi {
        #[error("status {0}")]
        Status(u16),
        #[error("timed out")]
        Timeout,
        #[error("broken pipe")]
        Transport,
    }

    impl EngineKind for Toy {
        const BACKEND: &'static str = "toy";
        const NAME: &'static str = "Toy";
        const SERVICE: &'static str = "Toy daemon";
        const PERMISSION_ADVICE: &'static str = "run as root";
        type ApiError = ToyApi;

        fn start_advice(socket: &str) -> String {
            format!("start toyd on {socket}")
        }

        fn status(e: &ToyApi) -> Option<u16> {
            match e {
                ToyApi::Status(s) => Some(*s),
                _ => None,
            }
        }

        fn is_timeout(e: &ToyApi) -> bool {
            matches!(e, ToyApi::Timeout)
        }
    }

    fn api(source: ToyApi) -> kat_core::Error {
        RuntimeError::<Toy>::Api {
            op: "create",
            source,
        }
        .into()
    }

    #[test]
    fn messages_name_the_engine() {
        let e = RuntimeError::<Toy>::UnsupportedHost {
            var: "TOY_HOST",
            value: "tcp://x".into(),
        };
        assert_eq!(
            e.to_string(),
            "TOY_HOST=\"tcp://x\" is not supported: use a unix socket (unix:///path/to/toy.sock, or the bare path)"
        );
        assert!(matches!(
            kat_core::Error::from(e),
            kat_core::Error::Invalid { .. }
        ));
        let e = RuntimeError::<Toy>::Api {
            op: "start",
            source: ToyApi::Status(500),
        };
        assert_eq!(e.to_string(), "Toy start failed: status 500");
        assert!(std::error::Error::source(&e).is_some());
        let e = RuntimeError::<Toy>::PermissionDenied {
            socket: "/s".into(),
        };
        assert_eq!(
            e.to_string(),
            "permission denied on the Toy socket /s: run as root"
        );
        assert!(!kat_core::Error::from(e).is_retryable());
    }

    #[test]
    fn api_errors_map_by_status() {
        assert!(matches!(
            api(ToyApi::Status(409)),
            kat_core::Error::Conflict(_)
        ));
        assert!(api(ToyApi::Status(503)).is_retryable());
        assert!(!api(ToyApi::Status(500)).is_retryable());
        assert!(matches!(api(ToyApi::Timeout), kat_core::Error::Timeout(_)));
        assert!(!api(ToyApi::Transport).is_retryable());
    }

    #[test]
    fn missing_image_names_the_image_and_is_not_retryable() {
        let e = RuntimeError::<Toy>::ImageUnavailable {
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
    fn the_shared_failures_map_like_the_engines_did() {
        let e = RuntimeError::<Toy>::from(SpecError::new("env", "bad"));
        assert!(matches!(
            kat_core::Error::from(e),
            kat_core::Error::Invalid { .. }
        ));
        assert!(matches!(
            kat_core::Error::from(RuntimeError::<Toy>::cancelled()),
            kat_core::Error::Cancelled
        ));
        let e = RuntimeError::<Toy>::unexpected("reap", "x".into());
        assert_eq!(e.to_string(), "unexpected answer from Toy (reap): x");
        assert!(!kat_core::Error::from(e).is_retryable());
    }
}
