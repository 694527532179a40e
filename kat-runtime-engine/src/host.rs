//! Where an engine listens, and how its client errors read.

use std::error::Error as StdError;
use std::io;

/// The unix socket path named by an engine host variable (`DOCKER_HOST`, `CONTAINER_HOST`): `unix:///path`
/// or a bare absolute path. `None` or an empty value gives `Ok(None)` (use the engine's default); any other
/// scheme (`tcp://`, `ssh://`, ...) is returned as `Err` with the value.
///
/// ```
/// use kat_runtime_engine::unix_socket_from_host;
/// assert_eq!(unix_socket_from_host(None), Ok(None));
/// assert_eq!(
///     unix_socket_from_host(Some("unix:///run/podman/podman.sock")),
///     Ok(Some("/run/podman/podman.sock".to_string()))
/// );
/// assert_eq!(unix_socket_from_host(Some("/tmp/d.sock")), Ok(Some("/tmp/d.sock".to_string())));
/// assert_eq!(
///     unix_socket_from_host(Some("tcp://127.0.0.1:2375")),
///     Err("tcp://127.0.0.1:2375".to_string())
/// );
/// ```
///
/// # Errors
/// The value itself when it is neither empty nor a unix socket.
pub fn unix_socket_from_host(value: Option<&str>) -> Result<Option<String>, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(h) if h.starts_with("unix://") => Ok(Some(h["unix://".len()..].to_string())),
        Some(h) if h.starts_with('/') => Ok(Some(h.to_string())),
        Some(h) => Err(h.to_string()),
    }
}

/// The error and its sources, joined with `: ` (a source whose text is already included is skipped).
///
/// ```
/// use kat_runtime_engine::error_chain;
/// #[derive(Debug, thiserror::Error)]
/// #[error("connect failed")]
/// struct Outer(#[source] std::io::Error);
/// let e = Outer(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"));
/// assert_eq!(error_chain(&e), "connect failed: connection refused");
/// ```
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = err.source();
    }
    out
}

/// The kind of the first [`io::Error`] in `e` or its source chain (how a client library says "the socket is
/// missing", "connection refused", "permission denied" without a variant of its own).
///
/// ```
/// use kat_runtime_engine::io_error_kind;
/// #[derive(Debug, thiserror::Error)]
/// #[error("request failed")]
/// struct Outer(#[source] std::io::Error);
/// let e = Outer(std::io::Error::from(std::io::ErrorKind::NotFound));
/// assert_eq!(io_error_kind(&e), Some(std::io::ErrorKind::NotFound));
/// ```
pub fn io_error_kind(e: &(dyn StdError + 'static)) -> Option<io::ErrorKind> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

/// Whether an I/O error kind means "nothing answers there" (missing socket, refused, reset, closed early):
/// start the engine, then retry.
///
/// ```
/// use std::io::ErrorKind;
/// use kat_runtime_engine::is_unreachable_kind;
/// assert!(is_unreachable_kind(ErrorKind::ConnectionRefused));
/// assert!(!is_unreachable_kind(ErrorKind::PermissionDenied));
/// ```
pub fn is_unreachable_kind(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::NotFound
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle: {0}")]
    struct Middle(#[source] io::Error);

    #[test]
    fn chains_skip_repeated_text() {
        let e = Outer(Middle(io::Error::other("deep")));
        assert_eq!(error_chain(&e), "outer: middle: deep");
        assert_eq!(io_error_kind(&e), Some(io::ErrorKind::Other));
    }

    #[test]
    fn hosts() {
        assert_eq!(unix_socket_from_host(Some("  ")), Ok(None));
        assert_eq!(
            unix_socket_from_host(Some("ssh://core@host/run/podman.sock")),
            Err("ssh://core@host/run/podman.sock".into())
        );
    }
}
