//! The Podman service as the runtime error shared with the Docker runtime sees it ([`PodmanEngine`]), and the
//! classification of podman-api's errors into that error ([`PodmanError`]).

use kat_runtime_engine::{
    EngineKind, RuntimeError, error_chain, io_error_kind, is_unreachable_kind,
};

use crate::PodmanEngine;

/// How to start the service this runtime talks to, for error messages.
pub(crate) fn start_advice(socket: &str) -> String {
    format!(
        "start it with `CONTAINERS_CONF=/run/kat-podman/containers.conf podman system service --time=0 \
         unix://{socket}` (that containers.conf selects runc and modest default ulimits), or run \
         `eval \"$(scripts/engines.sh podman)\"`"
    )
}

/// What can go wrong in the Podman runtime: kat-runtime-engine's [`RuntimeError`] for the Podman service.
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
pub type PodmanError = RuntimeError<PodmanEngine>;

/// Classify a podman-api error from operation `op` on the service at `socket`: connection failures become
/// [`PodmanError::Unreachable`] or [`PodmanError::PermissionDenied`], everything else [`PodmanError::Api`].
pub(crate) fn classify(op: &'static str, socket: &str, source: podman_api::Error) -> PodmanError {
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

/// The HTTP status of the service's answer, when the error is one.
#[cfg(test)]
pub(crate) fn answer_status(e: &PodmanError) -> Option<(u16, &str)> {
    match e {
        PodmanError::Api { source, .. } => status(source),
        _ => None,
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

impl EngineKind for PodmanEngine {
    const BACKEND: &'static str = "podman";
    const NAME: &'static str = "Podman";
    const SERVICE: &'static str = "Podman service";
    const PERMISSION_ADVICE: &'static str = "run as the user that owns the service (root for a rootful \
         service), or start a service of your own (rootless: $XDG_RUNTIME_DIR/podman/podman.sock)";
    const ULIMITS_ADVICE: &'static str =
        "lower them with PodmanRuntime::with_ulimits, or raise the service's hard limits";

    type ApiError = podman_api::Error;

    fn start_advice(socket: &str) -> String {
        start_advice(socket)
    }

    fn status(e: &podman_api::Error) -> Option<u16> {
        status(e).map(|(status, _)| status)
    }

    fn describe(e: &podman_api::Error) -> String {
        error_chain(e)
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
        let e = classify(
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
        let e = classify(
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
        let e = classify("create", "s", fault(409, "name in use"));
        assert_eq!(answer_status(&e), Some((409, "name in use")));
        assert!(matches!(
            kat_core::Error::from(e),
            kat_core::Error::Conflict(_)
        ));
        let e = classify("create", "s", fault(503, "busy"));
        assert!(kat_core::Error::from(e).is_retryable());
        let e = classify("start", "s", fault(500, "OCI runtime error"));
        let core = kat_core::Error::from(e);
        assert!(!core.is_retryable());
        assert!(core.to_string().contains("OCI runtime error"), "{core}");
    }

    #[test]
    fn spec_errors_are_invalid_input() {
        let e = PodmanError::from(kat_runtime_engine::SpecError::new("env", "bad"));
        assert!(matches!(
            kat_core::Error::from(e),
            kat_core::Error::Invalid { .. }
        ));
    }
}
