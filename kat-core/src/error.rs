//! The one error type of kat-core, shared by every trait so that backends can say what went wrong in terms
//! the engine and the HTTP layer understand (not found, conflict, invalid input, unavailable, ...).

/// The error of every kat-core operation and of every backend trait.
///
/// Backends map their own failures onto these variants; [`Error::is_retryable`] tells the engine whether
/// trying again can help.
///
/// ```
/// use kat_core::Error;
/// let e = Error::invalid("hostname[0].name", "not a valid hostname: \"-bad\"");
/// assert!(!e.is_retryable());
/// assert_eq!(e.to_string(), "invalid input at hostname[0].name: not a valid hostname: \"-bad\"");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is malformed or violates a rule; `at` says where.
    #[error("invalid input at {at}: {message}")]
    Invalid {
        /// Where the problem is (a field path, a file and field, ...).
        at: String,
        /// What is wrong.
        message: String,
    },
    /// The thing asked for does not exist.
    #[error("{kind} not found: {id}")]
    NotFound {
        /// What kind of thing (`hostname`, `file`, `task`, ...).
        kind: &'static str,
        /// Its identifier as the caller gave it.
        id: String,
    },
    /// The operation conflicts with the current state (a task that already ended, a duplicate id, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller is not allowed to do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A token could not be verified (bad signature, expired, revoked, malformed, ...).
    #[error("invalid token: {0}")]
    Unauthenticated(String),
    /// A backend (database, container engine, API) is unreachable or overloaded; retrying may help.
    #[error("{backend} unavailable: {message}")]
    Unavailable {
        /// Which backend (`docker`, `podman`, `sled`, ...).
        backend: &'static str,
        /// What happened and, where known, what to do about it.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A limit was exceeded (body size, output size, batch size, ...).
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The operation did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The operation was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The store's on-disk data is unreadable or was written by an incompatible version.
    #[error("corrupt or incompatible data: {message}")]
    Corrupt {
        /// What is wrong, and where.
        message: String,
        /// The error that found it (a decoder's), when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// An I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else a backend reports; `retryable` says whether trying again can help. The backend's
    /// own error is kept as the [`source`](std::error::Error::source), the way object_store's
    /// `Generic { store, source }` keeps it; [`Error::backend`] makes one from a message alone.
    #[error("{backend}: {source}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// Whether a retry can help.
        retryable: bool,
        /// What the backend reported.
        #[source]
        source: BoxError,
    },
}

/// Any error, as [`Error::Backend`] and [`Error::Corrupt`] keep their cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl Error {
    /// An [`Error::Invalid`] at `at`.
    pub fn invalid(at: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            at: at.into(),
            message: message.into(),
        }
    }

    /// An [`Error::NotFound`].
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// An [`Error::Unavailable`] from a message alone.
    ///
    /// ```
    /// let e = kat_core::Error::unavailable("docker", "connection refused");
    /// assert_eq!(e.to_string(), "docker unavailable: connection refused");
    /// assert!(e.is_retryable());
    /// ```
    pub fn unavailable(backend: &'static str, message: impl Into<String>) -> Self {
        Error::Unavailable {
            backend,
            message: message.into(),
            source: None,
        }
    }

    /// An [`Error::Unavailable`] keeping the backend's own error as its source; the message is the
    /// source's.
    ///
    /// ```
    /// use std::error::Error as _;
    /// let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    /// let e = kat_core::Error::unavailable_source("sled", io);
    /// assert!(e.source().is_some_and(|s| s.is::<std::io::Error>()));
    /// ```
    pub fn unavailable_source(backend: &'static str, source: impl Into<BoxError>) -> Self {
        let source = source.into();
        Error::Unavailable {
            backend,
            message: source.to_string(),
            source: Some(source),
        }
    }

    /// An [`Error::Backend`] error from a message alone (the message becomes its source).
    ///
    /// ```
    /// use kat_core::Error;
    /// let e = Error::backend("sled", "busy", true);
    /// assert_eq!(e.to_string(), "sled: busy");
    /// assert!(e.is_retryable());
    /// ```
    pub fn backend(backend: &'static str, message: impl Into<String>, retryable: bool) -> Self {
        Error::Backend {
            backend,
            retryable,
            source: message.into().into(),
        }
    }

    /// An [`Error::Backend`] error keeping the backend's own error as its source; the message is
    /// the source's.
    ///
    /// ```
    /// use std::error::Error as _;
    /// use kat_core::Error;
    /// let io = std::io::Error::other("disk on fire");
    /// let e = Error::backend_source("sled", io, false);
    /// assert_eq!(e.to_string(), "sled: disk on fire");
    /// assert!(e.source().is_some_and(|s| s.is::<std::io::Error>()));
    /// ```
    pub fn backend_source(
        backend: &'static str,
        source: impl Into<BoxError>,
        retryable: bool,
    ) -> Self {
        Error::Backend {
            backend,
            retryable,
            source: source.into(),
        }
    }

    /// An [`Error::Corrupt`] error from a message alone.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Error::Corrupt {
            message: message.into(),
            source: None,
        }
    }

    /// An [`Error::Corrupt`] error keeping the error that found the problem as its source; the
    /// message is the source's.
    pub fn corrupt_source(source: impl Into<BoxError>) -> Self {
        let source = source.into();
        Error::Corrupt {
            message: source.to_string(),
            source: Some(source),
        }
    }

    /// Whether retrying the same operation can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::Timeout(_) => true,
            Error::Backend { retryable, .. } => *retryable,
            Error::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
            ),
            _ => false,
        }
    }

    /// Prefix the location of an [`Error::Invalid`] with `outer` (`outer.inner`, or `outer[..]`).
    pub fn within(self, outer: &str) -> Self {
        match self {
            Error::Invalid { at, message } if outer.is_empty() => Error::Invalid { at, message },
            Error::Invalid { at, message } => {
                let at = if at.is_empty() {
                    outer.to_string()
                } else if at.starts_with('[') {
                    format!("{outer}{at}")
                } else {
                    format!("{outer}.{at}")
                };
                Error::Invalid { at, message }
            }
            other => other,
        }
    }
}

/// The result type of kat-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        assert!(Error::unavailable("docker", "down").is_retryable());
        assert!(Error::Timeout("x".into()).is_retryable());
        assert!(Error::backend("sled", "busy", true).is_retryable());
        assert!(!Error::backend("sled", "bad", false).is_retryable());
        assert!(!Error::not_found("task", "1").is_retryable());
        assert!(!Error::Cancelled.is_retryable());
        assert!(
            Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)).is_retryable()
        );
        assert!(!Error::Io(std::io::Error::from(std::io::ErrorKind::NotFound)).is_retryable());
    }

    #[test]
    fn backend_errors_keep_their_source() {
        use std::error::Error as _;
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no access to /db");
        let e = Error::backend_source("sled", io, false);
        assert_eq!(e.to_string(), "sled: no access to /db");
        let source = e.source().expect("a source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the original io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
        // A message-only error has its message as its source.
        let e = Error::backend("sled", "busy", true);
        assert_eq!(e.source().map(ToString::to_string).as_deref(), Some("busy"));
        let json = serde_json::from_str::<serde_json::Value>("{").expect_err("bad JSON");
        let e = Error::corrupt_source(json);
        assert!(
            e.to_string()
                .starts_with("corrupt or incompatible data: EOF"),
            "{e}"
        );
        assert!(
            e.source()
                .is_some_and(|s| s.downcast_ref::<serde_json::Error>().is_some())
        );
        assert!(Error::corrupt("bad").source().is_none());
    }

    #[test]
    fn within_prefixes_locations() {
        let e = Error::invalid("name", "bad").within("hostname[3]");
        assert_eq!(e.to_string(), "invalid input at hostname[3].name: bad");
        let e = Error::invalid("[2]", "bad").within("oci_arguments");
        assert_eq!(e.to_string(), "invalid input at oci_arguments[2]: bad");
        let e = Error::invalid("", "bad").within("port");
        assert_eq!(e.to_string(), "invalid input at port: bad");
    }
}
