//! The few libpod calls podman-api 0.11 does not make the way we need, sent directly over the unix socket
//! with hyper 0.14 (the version podman-api itself uses). Errors are podman-api's own type, so that they are
//! classified like every other call.
//!
//! - `POST /libpod/containers/create` with our own JSON: podman-api's builder sends the hardening flag as
//!   `no_new_privilages` (sic), which the service ignores; we need `no_new_privileges`.
//! - `POST /libpod/containers/{id}/wait`: its answer is the exit code, which podman-api's `wait()` drops
//!   (it would cost an `inspect()` more per run).
//! - `HEAD /libpod/containers/{id}/archive`: the stat of a path (size, mode) without downloading it.

use std::path::PathBuf;

use base64::Engine as _;
use hyper014::body::Bytes;
use hyper014::{Body, Method, Request, StatusCode};
use serde::Deserialize;
use tracing::debug;

/// A minimal client for one libpod service.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    socket: PathBuf,
    /// The API version in paths (`4.3.1`).
    version: String,
}

/// The answer of a container create.
#[derive(Debug, Deserialize)]
pub(crate) struct Created {
    #[serde(rename = "Id")]
    pub(crate) id: String,
    #[serde(rename = "Warnings", default)]
    pub(crate) warnings: Option<Vec<String>>,
}

/// What `HEAD .../archive` says about a path.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub(crate) struct PathStat {
    pub(crate) size: u64,
    /// Go's `os.FileMode`: permission bits in the low 9 bits, type bits high.
    pub(crate) mode: u32,
}

/// The error body of the service.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    cause: Option<String>,
}

fn hyper_err(e: hyper014::Error) -> podman_api::Error {
    podman_api::Error::Error(podman_api::conn::Error::Hyper(e))
}

/// The error for an answer with a non-success status.
fn fault(status: StatusCode, body: &[u8]) -> podman_api::Error {
    let text = String::from_utf8_lossy(body);
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            message: Some(m),
            cause,
        }) => match cause {
            Some(c) if !c.is_empty() && !m.contains(&c) => format!("{m}: {c}"),
            _ => m,
        },
        _ if text.trim().is_empty() => status.canonical_reason().unwrap_or("error").to_string(),
        _ => text.trim().to_string(),
    };
    podman_api::Error::Fault {
        code: status,
        message,
    }
}

impl Raw {
    pub(crate) fn new(socket: PathBuf, version: String) -> Self {
        Raw { socket, version }
    }

    /// Send one request on a fresh connection; returns the status, the `X-Docker-Container-Path-Stat`
    /// header and the body. Non-success statuses are errors.
    async fn send(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
    ) -> podman_api::Result<(Option<String>, Bytes)> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(podman_api::Error::IO)?;
        let (mut sender, connection) = hyper014::client::conn::handshake(stream)
            .await
            .map_err(hyper_err)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "libpod connection ended with an error");
            }
        });
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/v{}{path}", self.version))
            .header("Host", "podman");
        let body = match json {
            Some(b) => {
                req = req.header("Content-Type", "application/json");
                Body::from(b)
            }
            None => Body::empty(),
        };
        let req = req
            .body(body)
            .map_err(|e| podman_api::Error::Error(podman_api::conn::Error::Http(e)))?;
        let resp = sender.send_request(req).await.map_err(hyper_err)?;
        let status = resp.status();
        let stat = resp
            .headers()
            .get("X-Docker-Container-Path-Stat")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = hyper014::body::to_bytes(resp.into_body())
            .await
            .map_err(hyper_err)?;
        if status.is_success() {
            Ok((stat, body))
        } else {
            Err(fault(status, &body))
        }
    }

    /// `POST /libpod/containers/create` with `spec` (a libpod SpecGenerator).
    pub(crate) async fn create_container(
        &self,
        spec: &serde_json::Value,
    ) -> podman_api::Result<Created> {
        let body = serde_json::to_vec(spec)?;
        let (_, answer) = self
            .send(Method::POST, "/libpod/containers/create", Some(body))
            .await?;
        Ok(serde_json::from_slice(&answer)?)
    }

    /// `POST /libpod/containers/{id}/wait` (polling the state every `interval`): the exit code.
    pub(crate) async fn wait(&self, id: &str, interval: &str) -> podman_api::Result<Option<i64>> {
        let (_, answer) = self
            .send(
                Method::POST,
                &format!("/libpod/containers/{id}/wait?interval={interval}"),
                None,
            )
            .await?;
        Ok(String::from_utf8_lossy(&answer).trim().parse::<i64>().ok())
    }

    /// `HEAD /libpod/containers/{id}/archive?path=...`: the path's size and mode, `None` when it does not
    /// exist.
    pub(crate) async fn stat(&self, id: &str, path: &str) -> podman_api::Result<Option<PathStat>> {
        let query = format!("path={}", encode(path));
        match self
            .send(
                Method::HEAD,
                &format!("/libpod/containers/{id}/archive?{query}"),
                None,
            )
            .await
        {
            Ok((Some(header), _)) => Ok(decode_stat(&header)),
            Ok((None, _)) => Err(podman_api::Error::InvalidResponse(
                "no X-Docker-Container-Path-Stat header in the archive stat".into(),
            )),
            Err(podman_api::Error::Fault { code, .. }) if code == StatusCode::NOT_FOUND => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The base64 JSON of `X-Docker-Container-Path-Stat`.
fn decode_stat(header: &str) -> Option<PathStat> {
    let json = base64::engine::general_purpose::STANDARD
        .decode(header.trim())
        .ok()?;
    serde_json::from_slice(&json).ok()
}

/// Percent-encode a query value (paths: letters, digits and `/-._~` stay).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_decode() {
        // What Podman 4.3.1 sent for a 10-byte 0755 file.
        let header = "eyJuYW1lIjoiZW50cnlwb2ludCIsInNpemUiOjEwLCJtb2RlIjo0OTMsIm10aW1lIjoiMjAyNi0xMS0yMlQwMzo0Njo1NFoiLCJpc0RpciI6ZmFsc2UsImxpbmtUYXJnZXQiOiIvcGx1Z2luL2VudHJ5cG9pbnQifQ==";
        assert_eq!(
            decode_stat(header),
            Some(PathStat {
                size: 10,
                mode: 0o755
            })
        );
        assert_eq!(decode_stat("not base64"), None);
    }

    #[test]
    fn faults_carry_the_message() {
        let body =
            br#"{"cause":"image not known","message":"x:y: image not known","response":500}"#;
        let e = fault(StatusCode::INTERNAL_SERVER_ERROR, body);
        assert_eq!(
            crate::error::status(&e),
            Some((500, "x:y: image not known"))
        );
        let body = br#"{"cause":"no such container","message":"container abc","response":404}"#;
        let e = fault(StatusCode::NOT_FOUND, body);
        assert_eq!(
            crate::error::status(&e),
            Some((404, "container abc: no such container"))
        );
        let e = fault(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(crate::error::status(&e), Some((502, "Bad Gateway")));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("/plugin/entrypoint"), "/plugin/entrypoint");
        assert_eq!(encode("/a b&c"), "/a%20b%26c");
    }
}
