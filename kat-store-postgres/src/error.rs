//! The crate's own errors, and how they become [`kat_core::Error`] at the trait boundary.

use kat_core::error::BoxError;

/// What can go wrong inside the PostgreSQL store.
///
/// Every trait method converts this into [`kat_core::Error`]: a server that cannot be reached, a
/// pool that times out and a serialization failure become `Unavailable` (trying again can help),
/// unreadable stored data becomes `Corrupt`, a unique violation `Conflict`, and everything else
/// `Backend`. Each keeps this error (and so what it wraps) as its source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgStoreError {
    /// The connection URL could not be parsed.
    #[error("invalid PostgreSQL URL: {0}")]
    Config(#[source] tokio_postgres::Error),
    /// The connection pool could not be built.
    #[error("cannot build the connection pool: {0}")]
    Build(#[source] deadpool_postgres::BuildError),
    /// No connection could be had from the pool (the server is down, or every connection is busy
    /// for longer than the pool's wait timeout).
    #[error("no PostgreSQL connection: {0}")]
    Pool(#[source] deadpool_postgres::PoolError),
    /// The server answered with an error, or the connection broke.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
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
    /// The database's schema is newer than this build knows.
    #[error(
        "the database's schema is at version {found}, newer than this build's {known}: upgrade katd"
    )]
    SchemaTooNew {
        /// The version recorded in the database.
        found: i32,
        /// The newest version this build has.
        known: i32,
    },
    /// The body of an upload failed while it was read (the client went away): nothing was stored.
    #[error("reading the upload failed: {0}")]
    Body(#[source] std::io::Error),
    /// A blocking worker panicked or was cancelled.
    #[error("a storage worker failed: {0}")]
    Worker(#[source] BoxError),
}

impl PgStoreError {
    /// A [`PgStoreError::Decode`]; `e` is the decoder's error, or a message.
    #[allow(dead_code)]
    pub(crate) fn decode(what: &'static str, e: impl Into<BoxError>) -> Self {
        PgStoreError::Decode {
            what,
            source: e.into(),
        }
    }

    /// A [`PgStoreError::Encode`].
    #[allow(dead_code)]
    pub(crate) fn encode(what: &'static str, e: serde_json::Error) -> Self {
        PgStoreError::Encode { what, source: e }
    }

    /// The SQLSTATE of a server error, when this is one.
    pub fn sqlstate(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            PgStoreError::Postgres(e) => e.code(),
            PgStoreError::Pool(deadpool_postgres::PoolError::Backend(e)) => e.code(),
            _ => None,
        }
    }
}

impl From<deadpool_postgres::PoolError> for PgStoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PgStoreError::Pool(e)
    }
}

impl From<PgStoreError> for kat_core::Error {
    fn from(e: PgStoreError) -> Self {
        use kat_core::Error as K;
        use tokio_postgres::error::SqlState;
        let state = e.sqlstate().cloned();
        match e {
            e @ (PgStoreError::Decode { .. } | PgStoreError::SchemaTooNew { .. }) => {
                K::corrupt_source(e)
            }
            e @ PgStoreError::Pool(_) => K::unavailable_source("postgres", e),
            PgStoreError::Body(e) => K::Io(e),
            e @ PgStoreError::Worker(_) => K::backend_source("postgres", e, true),
            e => match state {
                Some(s) if s == SqlState::UNIQUE_VIOLATION => K::Conflict(e.to_string()),
                Some(s)
                    if s == SqlState::T_R_SERIALIZATION_FAILURE
                        || s == SqlState::T_R_DEADLOCK_DETECTED
                        || s == SqlState::ADMIN_SHUTDOWN
                        || s == SqlState::CANNOT_CONNECT_NOW
                        || s == SqlState::TOO_MANY_CONNECTIONS =>
                {
                    K::unavailable_source("postgres", e)
                }
                Some(_) => K::backend_source("postgres", e, false),
                None => match &e {
                    // No SQLSTATE: the connection broke or could not be made.
                    PgStoreError::Postgres(_) => K::unavailable_source("postgres", e),
                    _ => K::backend_source("postgres", e, false),
                },
            },
        }
    }
}

/// The crate's result type.
pub(crate) type PResult<T> = std::result::Result<T, PgStoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_onto_kat_core_errors() {
        let e: kat_core::Error = PgStoreError::SchemaTooNew { found: 9, known: 1 }.into();
        assert!(matches!(e, kat_core::Error::Corrupt { .. }), "{e:?}");
        assert!(e.to_string().contains("version 9"));
        let e: kat_core::Error = PgStoreError::decode("task", "bad").into();
        assert!(matches!(e, kat_core::Error::Corrupt { .. }));
        let e: kat_core::Error = PgStoreError::Pool(deadpool_postgres::PoolError::Closed).into();
        assert!(e.is_retryable(), "{e:?}");
        let e: kat_core::Error = PgStoreError::Worker("lost".into()).into();
        assert!(e.is_retryable());
    }
}
