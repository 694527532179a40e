//! The one error type: a message for stderr and the exit code it maps to.

use std::fmt;

/// Exit code of a failure (an API error, a network failure, bad input data).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a usage error (bad arguments or environment).
pub const EXIT_USAGE: u8 = 2;

/// A failure with a message meant for a person (never carrying the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    exit_code: u8,
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A failure (exit code 1).
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            exit_code: EXIT_FAILURE,
        }
    }

    /// A usage error (exit code 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            exit_code: EXIT_USAGE,
        }
    }

    /// Prefix the message with what was being done.
    #[must_use]
    pub fn context(self, what: impl fmt::Display) -> Self {
        Error {
            message: format!("{what}: {}", self.message),
            exit_code: self.exit_code,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        self.exit_code
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(e.to_string())
    }
}
