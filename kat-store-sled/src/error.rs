//! The crate's own errors, and how they become [`kat_core::Error`] at the trait boundary.

use std::io;

use kat_core::error::BoxError;

/// What can go wrong inside the sled store.
///
/// Every trait method converts this into [`kat_core::Error`]: database I/O becomes `Io` (or
/// `Unavailable` when another process holds the database), unreadable data becomes `Corrupt`, and
/// internal failures become `Backend` with `retryable` saying whether trying again can help. `Io`,
/// `Corrupt` and `Backend` keep this error (and so what it wraps) as their source.
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
    #[error("undecodable {what} in the database: {source}")]
    Decode {
        /// What kind of record.
        what: &'static str,
        /// What the decoder said.
        #[source]
        source: BoxError,
    },
    /// A value could not be encoded (should not happen for kat-core's types).
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What kind of record.
        what: &'static str,
        /// What the encoder said.
        #[source]
        source: serde_json::Error,
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
    /// A blocking worker panicked or was cancelled (the source is the join error), or lost a result.
    #[error("a storage worker failed: {0}")]
    Worker(#[source] BoxError),
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

    /// A [`SledStoreError::Decode`]; `e` is the decoder's error, or a message.
    pub(crate) fn decode(what: &'static str, e: impl Into<BoxError>) -> Self {
        SledStoreError::Decode {
            what,
            source: e.into(),
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
                    K::unavailable_source("sled", io)
                } else {
                    K::Io(io)
                }
            }
            SledStoreError::Sled(e @ sled::Error::Corruption { .. }) => {
                let at = match &e {
                    sled::Error::Corruption { at, .. } => at.map(|p| format!(" at {p:?}")),
                    _ => None,
                };
                K::Corrupt {
                    message: format!("sled detected corruption{}", at.unwrap_or_default()),
                    source: Some(Box::new(e)),
                }
            }
            SledStoreError::Sled(other) => K::backend_source("sled", other, false),
            // The io::Error's message stays "context: cause"; its source is the original error.
            e @ SledStoreError::Io { .. } => {
                let kind = match &e {
                    SledStoreError::Io { source, .. } => source.kind(),
                    _ => io::ErrorKind::Other,
                };
                K::Io(io::Error::new(kind, e))
            }
            e @ SledStoreError::Locked { .. } => K::unavailable_source("sled", e),
            e @ (SledStoreError::Decode { .. }
            | SledStoreError::Format(_)
            | SledStoreError::MissingBlob { .. }) => K::corrupt_source(e),
            e @ SledStoreError::Encode { .. } => K::backend_source("sled", e, false),
            e @ SledStoreError::BatchTooLarge { .. } => K::LimitExceeded(e.to_string()),
            e @ SledStoreError::Worker(_) => K::backend_source("sled", e, true),
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
        assert!(
            matches!(e, kat_core::Error::Corrupt { ref message, .. } if message.contains("version 9"))
        );
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

    /// The converted errors keep what went wrong as their source, down to the original error.
    #[test]
    fn conversions_keep_the_source_chain() {
        use std::error::Error as _;
        // Backend: the sled error itself.
        let e: kat_core::Error =
            SledStoreError::Sled(sled::Error::ReportableBug("x".into())).into();
        assert_eq!(
            e.to_string(),
            format!("sled: {}", sled::Error::ReportableBug("x".into()))
        );
        let source = e.source().expect("a source");
        assert!(source.downcast_ref::<sled::Error>().is_some(), "{source:?}");
        // Corrupt: the decode error, then the JSON parser's.
        let json = serde_json::from_slice::<serde_json::Value>(b"{").expect_err("bad JSON");
        let e: kat_core::Error = SledStoreError::decode("task", json).into();
        assert!(
            e.to_string()
                .starts_with("corrupt or incompatible data: undecodable task")
        );
        let decode = e.source().expect("a source");
        assert!(matches!(
            decode.downcast_ref::<SledStoreError>(),
            Some(SledStoreError::Decode { what: "task", .. })
        ));
        let parser = decode.source().expect("the parser's error");
        assert!(parser.downcast_ref::<serde_json::Error>().is_some());
        // Io: the same text as before; the chain reaches the file system's error.
        let e: kat_core::Error = SledStoreError::io(
            "creating /x/files",
            io::Error::new(io::ErrorKind::PermissionDenied, "denied"),
        )
        .into();
        assert_eq!(e.to_string(), "I/O error: creating /x/files: denied");
        let io_err = e
            .source()
            .and_then(|s| s.downcast_ref::<io::Error>())
            .expect("an io::Error");
        assert_eq!(io_err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(
            io_err.source().map(ToString::to_string).as_deref(),
            Some("denied")
        );
        // Worker: the join error.
        let e: kat_core::Error = SledStoreError::Worker("lost".into()).into();
        assert!(e.is_retryable());
        assert_eq!(e.to_string(), "sled: a storage worker failed: lost");
        assert!(e.source().and_then(|s| s.source()).is_some());
    }
}
