//! Request and response bodies: the boxed body types, bounded JSON reading, response builders.

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// The error type of request bodies once boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response: a full buffer or a stream (file downloads).
pub type ApiBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// A request body once boxed.
pub(crate) type ReqBody = UnsyncBoxBody<Bytes, BoxError>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> ApiBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty request body (what is left once a handler took the real one).
pub(crate) fn empty_request() -> ReqBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn empty() -> ApiBody {
    full(Bytes::new())
}

/// A JSON response.
pub(crate) fn json<T: serde::Serialize + ?Sized>(status: StatusCode, v: &T) -> Response<ApiBody> {
    let bytes = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(full(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A response with no body.
pub(crate) fn no_content() -> Response<ApiBody> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// An error response.
pub(crate) fn error(e: &ApiError) -> Response<ApiBody> {
    let mut r = json(e.status, &e.body());
    for (name, value) in &e.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            r.headers_mut().insert(name.clone(), v);
        }
    }
    r
}

/// Whether the request declares a JSON body (or none at all, as curl users often forget).
fn check_json_content_type(headers: &http::HeaderMap) -> ApiResult<()> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(format!(
            "Unsupported media type \"{essence}\" in request; send application/json."
        )))
    }
}

/// The declared length, if any; a malformed one is a 400.
pub(crate) fn content_length(headers: &http::HeaderMap) -> ApiResult<Option<u64>> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| ApiError::parse("malformed Content-Length")),
    }
}

/// The error for a request body that could not be read: a 408 when [`crate::timed::TimedBody`] cut
/// it, else a 400.
pub(crate) fn read_error(e: &BoxError) -> ApiError {
    match e.downcast_ref::<crate::timed::BodyTimeout>() {
        Some(t) => ApiError::request_timeout(format!("{t}; send it faster")),
        None => ApiError::parse(format!("cannot read the body: {e}")),
    }
}

/// Read a whole body of at most `limit` bytes, frame by frame; a larger one is a 413 before more than
/// `limit` bytes are held.
pub(crate) async fn read_limited(
    headers: &http::HeaderMap,
    body: &mut ReqBody,
    limit: usize,
) -> ApiResult<Bytes> {
    if let Some(n) = content_length(headers)?
        && n > limit as u64
    {
        return Err(too_large_body(limit));
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| read_error(&e))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large_body(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

fn too_large_body(limit: usize) -> ApiError {
    ApiError::too_large(format!("the request body is larger than {limit} bytes"))
}

/// Read and parse a JSON body (bounded; must be UTF-8 JSON).
pub(crate) async fn read_json(
    headers: &http::HeaderMap,
    body: &mut ReqBody,
    limit: usize,
) -> ApiResult<Value> {
    check_json_content_type(headers)?;
    let bytes = read_limited(headers, body, limit).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::parse(
            "the request body is empty; send a JSON document",
        ));
    }
    if std::str::from_utf8(&bytes).is_err() {
        return Err(ApiError::parse("the request body is not valid UTF-8"));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::parse(format!("JSON parse error - {e}")))
}
