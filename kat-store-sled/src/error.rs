//! The crate's own errors, and how they become [`kat_core::Error`] at the trait boundary.

use std::io;

/// What can go wrong inside the sled store.
///
/// Every trait method converts this into [`kat_core::Error`]: database I/O becomes `Io` (or
/// `Unavailable` when another process holds the database), unreadable data becomes `Corrupt`, and
/// internal failures become `Backend` with `retryable` saying whether trying again can help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SledStoreError {
    /// sled reported an error.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A file-system operation on the blob directory failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Another process has the database open.
    #[error("the database at {path} is locked by another process: {source}")]
    Locked {
        /// The database directory.
        path: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A stored value could not be decoded.
    #[error("undecodable {what} in the database: {message}")]
    Decode {
        /// What kind of record.
        what: &'static str,
        /// What the decoder said.
        message: String,
    },
    /// A value could not be encoded (should not happen for kat-core's types).
    #[error("cannot encode {what}: {message}")]
    Encode {
        /// What kind of record.
        what: &'static str,
        /// What the encoder said.
        message: String,
    },
    /// The database was written by an incompatible format version.
    #[error("{0}")]
    Format(String),
    /// A file's metadata exists but its contents are missing.
    #[error("the contents of file {id} (sha256 {sha256}) are missing from {path}")]
    MissingBlob {
        /// The file id.
        id: u64,
        /// Its content hash.
        sha256: String,
        /// Where the contents should be.
        path: String,
    },
    /// A bulk write was larger than the configured maximum.
    #[error(
        "a bulk write of {objects} objects (including referenced ones) exceeds the maximum of {max} per request; split it"
    )]
    BatchTooLarge {
        /// Objects in the write, referenced ones included.
        objects: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A blocking worker panicked or was cancelled.
    #[error("a storage worker failed: {0}")]
    Worker(String),
    /// The object to replace does not exist (its natural key).
    #[error("no object {0:?}")]
    ObjectNotFound(String),
}

impl SledStoreError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        SledStoreError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn decode(what: &'static str, e: impl std::fmt::Display) -> Self {
        SledStoreError::Decode {
            what,
            message: e.to_string(),
        }
    }
}

fn is_transient(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl From<SledStoreError> for kat_core::Error {
    fn from(e: SledStoreError) -> Self {
        use kat_core::Error as K;
        match e {
            SledStoreError::Sled(sled::Error::Io(io)) => {
                if is_transient(io.kind()) {
                    K::Unavailable {
                        backend: "sled",
                        message: io.to_string(),
                    }
                } else {
                    K::Io(io)
                }
            }
            SledStoreError::Sled(sled::Error::Corruption { at, .. }) => K::Corrupt(format!(
                "sled detected corruption{}",
                at.map(|p| format!(" at {p:?}")).unwrap_or_default()
            )),
            SledStoreError::Sled(other) => K::backend("sled", other.to_string(), false),
            SledStoreError::Io { context, source } => K::Io(io::Error::new(
                source.kind(),
                format!("{context}: {source}"),
            )),
            e @ SledStoreError::Locked { .. } => K::Unavailable {
                backend: "sled",
                message: e.to_string(),
            },
            e @ (SledStoreError::Decode { .. }
            | SledStoreError::Format(_)
            | SledStoreError::MissingBlob { .. }) => K::Corrupt(e.to_string()),
            e @ SledStoreError::Encode { .. } => K::backend("sled", e.to_string(), false),
            e @ SledStoreError::BatchTooLarge { .. } => K::LimitExceeded(e.to_string()),
            e @ SledStoreError::Worker(_) => K::backend("sled", e.to_string(), true),
            SledStoreError::ObjectNotFound(key) => K::not_found("object", key),
        }
    }
}

/// The crate's result type.
pub(crate) type SResult<T> = std::result::Result<T, SledStoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_onto_kat_core_errors() {
        let e: kat_core::Error = SledStoreError::Format("written by version 9".into()).into();
        assert!(matches!(e, kat_core::Error::Corrupt(ref m) if m.contains("version 9")));
        let e: kat_core::Error = SledStoreError::BatchTooLarge {
            objects: 20_000,
            max: 10_000,
        }
        .into();
        assert!(matches!(e, kat_core::Error::LimitExceeded(_)));
        let e: kat_core::Error =
            SledStoreError::Sled(sled::Error::Io(io::ErrorKind::WouldBlock.into())).into();
        assert!(e.is_retryable());
        let e: kat_core::Error =
            SledStoreError::Sled(sled::Error::Io(io::ErrorKind::PermissionDenied.into())).into();
        assert!(matches!(e, kat_core::Error::Io(_)));
        assert!(!e.is_retryable());
        let e: kat_core::Error =
            SledStoreError::Sled(sled::Error::ReportableBug("x".into())).into();
        assert!(matches!(
            e,
            kat_core::Error::Backend {
                retryable: false,
                ..
            }
        ));
        let e: kat_core::Error = SledStoreError::Locked {
            path: "/x".into(),
            source: io::ErrorKind::WouldBlock.into(),
        }
        .into();
        assert!(matches!(e, kat_core::Error::Unavailable { .. }));
    }
}
