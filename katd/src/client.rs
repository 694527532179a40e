//! A small client of the kat-rs API for katd's operator subcommands.

use kat::core::Error;
use serde_json::Value;

/// Percent-encode a path segment (natural keys may hold `|`, `/` and spaces).
pub(crate) fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The API at a base URL with a token.
pub(crate) struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub(crate) fn new(base: &str, token: &str) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| Error::backend("katd", e.to_string(), false))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, Error> {
        let resp = req
            .header("Authorization", format!("Token {}", self.token))
            .send()
            .await
            .map_err(|e| Error::Unavailable {
                backend: "api",
                message: format!("{e} (is katd serve running at {}?)", self.base),
                source: Some(Box::new(e)),
            })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| Error::backend("api", e.to_string(), true))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if !status.is_success() {
            let detail = v["errors"]
                .as_array()
                .map(|errs| {
                    errs.iter()
                        .map(|e| {
                            format!(
                                "{}{}",
                                e["detail"].as_str().unwrap_or(""),
                                e["attr"]
                                    .as_str()
                                    .map(|a| format!(" (at {a})"))
                                    .unwrap_or_default()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or(text);
            return Err(Error::backend(
                "api",
                format!("HTTP {status}: {detail}"),
                status.is_server_error(),
            ));
        }
        Ok(v)
    }

    pub(crate) async fn get(&self, path: &str, query: &[(String, String)]) -> Result<Value, Error> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query))
            .await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub(crate) async fn patch(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.send(self.http.patch(format!("{}{path}", self.base)).json(body))
            .await
    }
}
