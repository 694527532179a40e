//! The API client: `OPENKAT_API` + `Authorization: Token <OPENKAT_TOKEN>`, JSON in and out, bounded
//! timeouts, a few retries for transient failures, and errors that say which request failed, its
//! status and the API's own message (never the token). Any status other than 2xx is an error: the
//! original's scripts ignored them and "succeeded".

use std::fmt;
use std::time::Duration;

use kat_protocol::env;
use serde_json::Value;

use crate::names::{encode_component, repeated_query};
use crate::{Error, Result};

/// Largest JSON response read, in bytes.
pub const MAX_JSON_RESPONSE: u64 = 64 * 1024 * 1024;
/// Largest file downloaded (an nmap XML), in bytes.
pub const MAX_DOWNLOAD: u64 = 512 * 1024 * 1024;
/// Page size used when listing.
pub const PAGE_SIZE: usize = 1000;
/// Longest query string put on one DELETE (many ids are split over several requests).
pub const MAX_QUERY: usize = 6 * 1024;

/// How many times a request is tried when the connection fails or the API answers 502, 503 or 504.
const ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// A client of the kat-rs (or OpenKAT v2) plugin API.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    origin: String,
    token: String,
    agent: ureq::Agent,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token.
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// `scheme://host[:port]` of an absolute http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{authority}"))
}

impl ApiClient {
    /// A client from `OPENKAT_API` and `OPENKAT_TOKEN`.
    ///
    /// # Errors
    /// A usage error when either is missing or malformed.
    pub fn from_env() -> Result<ApiClient> {
        let base = std::env::var(env::API).unwrap_or_default();
        let token = std::env::var(env::TOKEN).unwrap_or_default();
        if base.trim().is_empty() {
            return Err(Error::usage(
                "OPENKAT_API is not set (the API base URL, such as http://127.0.0.1:8000/api/v1)",
            ));
        }
        if token.trim().is_empty() {
            return Err(Error::usage("OPENKAT_TOKEN is not set"));
        }
        ApiClient::new(&base, &token)
    }

    /// A client of the API at `base` (`http://host:port/api/v1`) with this token.
    ///
    /// # Errors
    /// A usage error for a base that is not an absolute http(s) URL or a token that cannot be a header.
    pub fn new(base: &str, token: &str) -> Result<ApiClient> {
        let base = base.trim().trim_end_matches('/').to_string();
        let origin = origin_of(&base).ok_or_else(|| {
            Error::usage(format!(
                "OPENKAT_API must be an absolute http:// or https:// URL without user info, got {base:?}"
            ))
        })?;
        if base.contains(['?', '#']) {
            return Err(Error::usage(format!(
                "OPENKAT_API must not carry a query or a fragment, got {base:?}"
            )));
        }
        let token = token.trim().to_string();
        if token.is_empty() || token.chars().any(|c| c.is_control() || c == ' ') {
            return Err(Error::usage(
                "OPENKAT_TOKEN must be one printable word (no spaces or control characters)",
            ));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(300)))
            .user_agent(format!("kat-plugins/{}", crate::VERSION))
            .build();
        Ok(ApiClient {
            base,
            origin,
            token,
            agent: ureq::Agent::new_with_config(config),
        })
    }

    /// The base URL (`http://host:port/api/v1`).
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Replace the token wherever it appears (a server echoing it back must not leak it to a log).
    fn redact(&self, s: &str) -> String {
        if self.token.len() >= 4 {
            s.replace(&self.token, "[token]")
        } else {
            s.to_string()
        }
    }

    fn send_once(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
        limit: u64,
    ) -> std::result::Result<(u16, Vec<u8>), ureq::Error> {
        let auth = format!("Token {}", self.token);
        let mut resp = match method {
            Method::Get => self
                .agent
                .get(url)
                .header("Authorization", &auth)
                .header("Accept", "application/json")
                .call()?,
            Method::Delete => self
                .agent
                .delete(url)
                .header("Authorization", &auth)
                .header("Accept", "application/json")
                .call()?,
            Method::Post => self
                .agent
                .post(url)
                .header("Authorization", &auth)
                .header("Accept", "application/json")
                .content_type("application/json")
                .send(body.unwrap_or_default())?,
        };
        let status = resp.status().as_u16();
        let bytes = resp.body_mut().with_config().limit(limit).read_to_vec()?;
        Ok((status, bytes))
    }

    fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
        limit: u64,
    ) -> Result<(u16, Vec<u8>)> {
        let what = format!("{} {url}", method.as_str());
        let mut attempt = 1;
        loop {
            match self.send_once(method, url, body, limit) {
                Ok((status, bytes)) => {
                    if matches!(status, 502..=504) && attempt < ATTEMPTS {
                        eprintln!(
                            "kat-plugins: {what}: HTTP {status}, retrying (attempt {attempt} of {ATTEMPTS})"
                        );
                    } else {
                        return Ok((status, bytes));
                    }
                }
                Err(e) => {
                    let transient = matches!(
                        e,
                        ureq::Error::Io(_)
                            | ureq::Error::ConnectionFailed
                            | ureq::Error::Timeout(_)
                            | ureq::Error::HostNotFound
                    );
                    let msg = self.redact(&e.to_string());
                    if !transient || attempt >= ATTEMPTS {
                        return Err(Error::new(format!(
                            "{what}: {msg} (after {attempt} attempt{})",
                            if attempt == 1 { "" } else { "s" }
                        )));
                    }
                    eprintln!(
                        "kat-plugins: {what}: {msg}, retrying (attempt {attempt} of {ATTEMPTS})"
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(500 * u64::from(attempt * attempt)));
            attempt += 1;
        }
    }

    /// Turn a non-2xx answer into an error with the API's own message.
    fn check(&self, method: Method, url: &str, status: u16, bytes: &[u8]) -> Result<()> {
        if (200..300).contains(&status) {
            return Ok(());
        }
        Err(Error::new(format!(
            "{} {url}: HTTP {status} {}: {}",
            method.as_str(),
            reason(status),
            self.redact(&describe_error_body(bytes))
        )))
    }

    fn json(&self, method: Method, url: &str, body: Option<&[u8]>) -> Result<Value> {
        let (status, bytes) = self.send(method, url, body, MAX_JSON_RESPONSE)?;
        self.check(method, url, status, &bytes)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(format!(
                "{} {url}: HTTP {status} but the answer is not JSON ({e}): {}",
                method.as_str(),
                excerpt(&self.redact(&String::from_utf8_lossy(&bytes)))
            ))
        })
    }

    /// `GET {base}{path}` (path includes any query), expecting 2xx and JSON.
    ///
    /// # Errors
    /// A failure naming the request, the status and the API's message.
    pub fn get_json(&self, path: &str) -> Result<Value> {
        self.json(Method::Get, &self.url(path), None)
    }

    /// `POST {base}{path}` with a JSON body, expecting 2xx and JSON.
    ///
    /// # Errors
    /// A failure naming the request, the status and the API's message.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::new(e.to_string()))?;
        self.json(Method::Post, &self.url(path), Some(&bytes))
    }

    /// `DELETE {base}{path}` (path includes the query), expecting 2xx.
    ///
    /// # Errors
    /// A failure naming the request, the status and the API's message.
    pub fn delete(&self, path: &str) -> Result<Value> {
        self.json(Method::Delete, &self.url(path), None)
    }

    /// Every object of a list route, following `limit`/`offset` until `count` is reached.
    /// `query` is `name=value&...` (already encoded) or empty.
    ///
    /// # Errors
    /// A failure of any page, or an answer that is not a list page.
    pub fn list_all(&self, path: &str, query: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        loop {
            let sep = if query.is_empty() { "" } else { "&" };
            let url = format!("{path}?{query}{sep}limit={PAGE_SIZE}&offset={}", out.len());
            let page = self.get_json(&url)?;
            let results = page
                .get("results")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    Error::new(format!(
                        "GET {}{url}: expected a list page with \"results\", got {}",
                        self.base,
                        excerpt(&page.to_string())
                    ))
                })?;
            let n = results.len();
            out.extend(results.iter().cloned());
            let count = page
                .get("count")
                .and_then(Value::as_u64)
                .unwrap_or(out.len() as u64);
            if n == 0 || out.len() as u64 >= count {
                return Ok(out);
            }
        }
    }

    /// `DELETE {path}?{param}=a&{param}=b...` for these values, split over several requests when the
    /// query would grow too long; returns the sum of the answers' `deleted` counts. Nothing is sent
    /// for no values (the API refuses a DELETE without ids, and it must never mean "all").
    ///
    /// # Errors
    /// The first failing request.
    pub fn delete_by(&self, path: &str, param: &str, values: &[String]) -> Result<u64> {
        let mut deleted = 0;
        for chunk in crate::names::chunk_query(param, values, MAX_QUERY) {
            let v = self.delete(&format!("{path}?{}", repeated_query(param, &chunk)))?;
            deleted += v.get("deleted").and_then(Value::as_u64).unwrap_or(0);
        }
        Ok(deleted)
    }

    /// Download a stored file as the original's `cat.py` does: `GET /file/<id>/` for its metadata,
    /// then `GET meta["file"]` with the token. The token is only ever sent to the API's own origin:
    /// a `file` URL elsewhere is replaced by `{base}/file/<id>/download/`.
    ///
    /// # Errors
    /// A failure of either request, or an id that is not a number.
    pub fn download_file(&self, id: &str) -> Result<Vec<u8>> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::usage(format!("a file id is a number, got {id:?}")));
        }
        let meta = self.get_json(&format!("/file/{}/", encode_component(id)))?;
        let fallback = format!("{}/file/{id}/download/", self.base);
        let url = match meta.get("file").and_then(Value::as_str) {
            Some(u) if u.starts_with('/') => format!("{}{u}", self.origin),
            Some(u) if origin_of(u).as_deref() == Some(self.origin.as_str()) => u.to_string(),
            Some(u) => {
                eprintln!(
                    "kat-plugins: file {id}: its download URL {u:?} is not on the API's origin {}; downloading from {fallback} instead",
                    self.origin
                );
                fallback
            }
            None => fallback,
        };
        let (status, bytes) = self.send(Method::Get, &url, None, MAX_DOWNLOAD)?;
        self.check(Method::Get, &url, status, &bytes)?;
        Ok(bytes)
    }
}

/// The reason phrase of common statuses.
fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

fn excerpt(s: &str) -> String {
    const MAX: usize = 600;
    let s = s.trim();
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// The API's error shape `{"type", "errors": [{"code","detail","attr"}]}` as one line; anything else
/// as an excerpt of the body.
fn describe_error_body(bytes: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        if let Some(errors) = v.get("errors").and_then(Value::as_array) {
            let parts: Vec<String> = errors
                .iter()
                .map(|e| {
                    let detail = e.get("detail").and_then(Value::as_str).unwrap_or("?");
                    match e.get("attr").and_then(Value::as_str) {
                        Some(a) if !a.is_empty() => format!("{detail} (at {a})"),
                        _ => detail.to_string(),
                    }
                })
                .collect();
            if !parts.is_empty() {
                return excerpt(&parts.join("; "));
            }
        }
        for key in ["detail", "error"] {
            if let Some(d) = v.get(key).and_then(Value::as_str) {
                return excerpt(d);
            }
        }
    }
    let text = String::from_utf8_lossy(bytes);
    if text.trim().is_empty() {
        "(empty answer)".to_string()
    } else {
        excerpt(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_and_origins() {
        let c = ApiClient::new("http://127.0.0.1:8000/api/v1/", "abc.def").unwrap();
        assert_eq!(c.base(), "http://127.0.0.1:8000/api/v1");
        assert_eq!(c.origin, "http://127.0.0.1:8000");
        assert!(!format!("{c:?}").contains("abc.def"));
        assert!(ApiClient::new("ftp://x/api", "t").is_err());
        assert!(ApiClient::new("http://user:pw@x/api", "t").is_err());
        assert!(ApiClient::new("http://x/api?a=b", "t").is_err());
        assert!(ApiClient::new("http://x/api", "two words").is_err());
        assert!(ApiClient::new("http://x/api", "a\nb").is_err());
        assert_eq!(origin_of("https://h:1/p?q").as_deref(), Some("https://h:1"));
    }

    #[test]
    fn error_bodies() {
        let b = br#"{"type":"client_error","errors":[{"code":"permission_denied","detail":"You do not have permission (objects.add_ipport).","attr":null}]}"#;
        assert_eq!(
            describe_error_body(b),
            "You do not have permission (objects.add_ipport)."
        );
        let b = br#"{"type":"validation_error","errors":[{"code":"invalid","detail":"bad","attr":"ipport[0].port"}]}"#;
        assert_eq!(describe_error_body(b), "bad (at ipport[0].port)");
        assert_eq!(describe_error_body(b"{\"error\":\"x\"}"), "x");
        assert_eq!(describe_error_body(b""), "(empty answer)");
        assert!(describe_error_body(&[b'a'; 5000]).ends_with("(5000 bytes)"));
    }
}
