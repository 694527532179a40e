//! The API's error responses, in the original's shape:
//! `{"type": "client_error"|"validation_error"|"server_error", "errors": [{"code", "detail", "attr"}]}`.

use http::StatusCode;
use serde_json::{Value, json};

use kat_core::Error;

/// The `type` of an error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorType {
    Client,
    Validation,
    Server,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            ErrorType::Client => "client_error",
            ErrorType::Validation => "validation_error",
            ErrorType::Server => "server_error",
        }
    }
}

/// An error on its way to becoming a response.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) kind: ErrorType,
    pub(crate) code: &'static str,
    pub(crate) detail: String,
    pub(crate) attr: Option<String>,
    /// Extra headers (`Allow` on a 405, `WWW-Authenticate` on a 401).
    pub(crate) headers: Vec<(http::HeaderName, String)>,
}

pub(crate) type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        kind: ErrorType,
        code: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind,
            code,
            detail: detail.into(),
            attr: None,
            headers: Vec::new(),
        }
    }

    pub(crate) fn with_attr(mut self, attr: impl Into<String>) -> Self {
        let a = attr.into();
        self.attr = if a.is_empty() { None } else { Some(a) };
        self
    }

    /// 400 for a request that cannot be parsed at all (malformed JSON, bad multipart, bad encoding).
    pub(crate) fn parse(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorType::Client,
            "parse_error",
            detail,
        )
    }

    /// 400 for a well-formed request with a bad value; `attr` names it.
    pub(crate) fn invalid(attr: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorType::Validation,
            "invalid",
            detail,
        )
        .with_attr(attr)
    }

    /// 400 for a query parameter the route does not know.
    pub(crate) fn unknown_param(name: &str, known: &str) -> Self {
        Self::invalid(
            name,
            format!("unknown query parameter {name:?}; this route accepts {known}"),
        )
    }

    pub(crate) fn not_authenticated() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::Client,
            "not_authenticated",
            "Authentication credentials were not provided.",
        );
        e.headers
            .push((http::header::WWW_AUTHENTICATE, "Token".to_string()));
        e
    }

    pub(crate) fn authentication_failed(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::Client,
            "authentication_failed",
            detail,
        );
        e.headers
            .push((http::header::WWW_AUTHENTICATE, "Token".to_string()));
        e
    }

    pub(crate) fn permission_denied(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorType::Client,
            "permission_denied",
            detail,
        )
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorType::Client,
            "not_found",
            detail,
        )
    }

    pub(crate) fn method_not_allowed(method: &http::Method, allow: &[&str]) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorType::Client,
            "method_not_allowed",
            format!(
                "Method \"{method}\" not allowed here; allowed: {}.",
                allow.join(", ")
            ),
        );
        e.headers.push((http::header::ALLOW, allow.join(", ")));
        e
    }

    pub(crate) fn too_large(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::Client,
            "too_large",
            detail,
        )
    }

    /// 408 for a request body that stalled or arrived too slowly (the connection is closed after it).
    pub(crate) fn request_timeout(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorType::Client,
            "request_timeout",
            detail,
        )
    }

    pub(crate) fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorType::Client,
            "unsupported_media_type",
            detail,
        )
    }

    pub(crate) fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Server,
            "unavailable",
            detail,
        )
    }

    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::Server,
            "error",
            "A server error occurred.",
        )
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> Value {
        json!({
            "type": self.kind.as_str(),
            "errors": [{"code": self.code, "detail": self.detail, "attr": self.attr}],
        })
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid { at, message } => ApiError::invalid(at, message),
            Error::NotFound { kind, id } => ApiError::not_found(format!("{kind} not found: {id}")),
            Error::Conflict(m) => {
                ApiError::new(StatusCode::CONFLICT, ErrorType::Client, "conflict", m)
            }
            Error::PermissionDenied(m) => ApiError::permission_denied(m),
            Error::Unauthenticated(_) => ApiError::authentication_failed("Invalid token."),
            Error::LimitExceeded(m) => ApiError::too_large(m),
            Error::Unavailable {
                backend, message, ..
            } => {
                tracing::warn!(backend, %message, "backend unavailable");
                ApiError::unavailable(format!(
                    "the {backend} backend is unavailable; try again later"
                ))
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::internal()
            }
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::from(Error::Io(e))
    }
}
