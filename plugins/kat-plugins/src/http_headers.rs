//! `http-headers <hostname>`: `GET https://<hostname>/` (any certificate is accepted: this checks
//! headers, not trust; redirects are not followed: the header must be on this name's own answer) and
//! report KAT-NO-HSTS when Strict-Transport-Security is missing or disables HSTS (`max-age=0`). When
//! HTTPS does not answer but `http://<hostname>/` does, report KAT-NO-HTTPS. When neither answers
//! there is no web server to judge, and nothing is written.

use std::time::Duration;

use serde_json::{Value, json};

use crate::api::ApiClient;
use crate::cli::Args;
use crate::findings::{self, Finding, NO_HSTS, NO_HTTPS};
use crate::names::{Subject, parse_target};
use crate::{Error, Result};

/// What one GET gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// An HTTP answer with this status and Strict-Transport-Security value (if any).
    Answered {
        /// The status code.
        status: u16,
        /// The Strict-Transport-Security header.
        hsts: Option<String>,
    },
    /// No HTTP answer (no connection, TLS failure, timeout).
    Failed(String),
}

/// The `max-age` of a Strict-Transport-Security value, if it has a valid one.
pub fn hsts_max_age(value: &str) -> Option<u64> {
    value.split(';').find_map(|d| {
        let (k, v) = d.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("max-age") {
            v.trim().trim_matches('"').parse().ok()
        } else {
            None
        }
    })
}

/// The findings for what HTTPS and (when HTTPS failed) HTTP gave, and the codes this run is
/// conclusive about (so that stale ones of them may be removed).
pub fn judge(
    subject: &Subject,
    url: &str,
    https: &Fetch,
    http: Option<&Fetch>,
) -> (Vec<Finding>, Vec<&'static str>) {
    match (https, http) {
        (Fetch::Answered { hsts, status }, _) => {
            let problem = match hsts.as_deref() {
                None => Some("sends no Strict-Transport-Security header".to_string()),
                Some(v) => match hsts_max_age(v) {
                    None => Some(format!(
                        "sends a Strict-Transport-Security header without a valid max-age ({v:?})"
                    )),
                    Some(0) => Some(format!(
                        "sends Strict-Transport-Security with max-age=0, which turns HSTS off ({v:?})"
                    )),
                    Some(_) => None,
                },
            };
            let found = problem
                .map(|p| {
                    Finding::new(
                        NO_HSTS,
                        subject.clone(),
                        format!("{url} (HTTP {status}) {p}."),
                    )
                })
                .into_iter()
                .collect();
            (found, vec![NO_HSTS, NO_HTTPS])
        }
        (Fetch::Failed(e), Some(Fetch::Answered { status, .. })) => (
            vec![Finding::new(
                NO_HTTPS,
                subject.clone(),
                format!(
                    "{} answers over plain HTTP (HTTP {status}) but HTTPS does not ({e}).",
                    subject.host(false)
                ),
            )],
            vec![NO_HTTPS],
        ),
        _ => (Vec::new(), Vec::new()),
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .disable_verification(true)
        .build();
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .tls_config(tls)
        .timeout_global(Some(timeout))
        .user_agent(format!("kat-plugins-http-headers/{}", crate::VERSION))
        .build();
    ureq::Agent::new_with_config(config)
}

/// GET `url` and read its status and HSTS header (the body is not read).
pub fn fetch(url: &str, timeout: Duration) -> Fetch {
    match agent(timeout).get(url).call() {
        Ok(resp) => Fetch::Answered {
            status: resp.status().as_u16(),
            hsts: resp
                .headers()
                .get("strict-transport-security")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string()),
        },
        Err(e) => Fetch::Failed(e.to_string()),
    }
}

/// `http-headers <hostname>[:port] [--https-port N] [--http-port N] [--timeout SECS] [--no-cleanup]`.
///
/// # Errors
/// Bad arguments or a failing API request.
pub fn run(args: &[String]) -> Result<Value> {
    let a = Args::parse(
        args,
        &["https-port", "http-port", "timeout"],
        &["no-cleanup"],
    )?;
    let (subject, mut https_port) =
        parse_target(a.one_positional("hostname")?, 443).map_err(Error::usage)?;
    if a.option("https-port").is_some() {
        https_port = a.number("https-port", 443, 1, 65535)? as u16;
    }
    let http_port = a.number("http-port", 80, 1, 65535)? as u16;
    let timeout = a.seconds("timeout", Duration::from_secs(15), 120.0)?;
    let api = ApiClient::from_env()?;
    let host = subject.host(true);
    let url_of = |scheme: &str, port: u16, default: u16| {
        if port == default {
            format!("{scheme}://{host}/")
        } else {
            format!("{scheme}://{host}:{port}/")
        }
    };
    let https_url = url_of("https", https_port, 443);
    let http_url = url_of("http", http_port, 80);
    let https = fetch(&https_url, timeout);
    let http = match &https {
        Fetch::Failed(_) => Some(fetch(&http_url, timeout)),
        Fetch::Answered { .. } => None,
    };
    let (found, managed) = judge(&subject, &https_url, &https, http.as_ref());
    if managed.is_empty() {
        eprintln!("kat-plugins http-headers: no web server answered on {https_url} or {http_url}");
    }
    let cleanup = !a.flag("no-cleanup");
    let report = findings::sync(&api, &subject, &found, &managed, cleanup)?;
    let show = |f: &Fetch| match f {
        Fetch::Answered { status, hsts } => {
            json!({"status": status, "strict_transport_security": hsts})
        }
        Fetch::Failed(e) => json!({"error": e}),
    };
    Ok(json!({
        "plugin": "http-headers",
        "target": subject.host(false),
        "https": {"url": https_url, "result": show(&https)},
        "http": http.as_ref().map(|h| json!({"url": http_url, "result": show(h)})),
        "findings": found.iter().map(|f| json!({"finding_type": f.code, "id": f.key(), "description": f.description})).collect::<Vec<_>>(),
        "cleanup": cleanup,
        "stale_findings": report.removed_ids,
        "removed_findings": report.removed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age() {
        assert_eq!(
            hsts_max_age("max-age=31536000; includeSubDomains"),
            Some(31_536_000)
        );
        assert_eq!(hsts_max_age("includeSubDomains; Max-Age=\"60\""), Some(60));
        assert_eq!(hsts_max_age("max-age=0"), Some(0));
        assert_eq!(hsts_max_age("preload"), None);
        assert_eq!(hsts_max_age("max-age=abc"), None);
    }

    #[test]
    fn judgements() {
        let s = Subject::Hostname("a.example".into());
        let ok = Fetch::Answered {
            status: 200,
            hsts: Some("max-age=63072000".into()),
        };
        let (f, m) = judge(&s, "https://a.example/", &ok, None);
        assert!(f.is_empty());
        assert_eq!(m, vec![NO_HSTS, NO_HTTPS]);
        let none = Fetch::Answered {
            status: 301,
            hsts: None,
        };
        let (f, _) = judge(&s, "https://a.example/", &none, None);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, NO_HSTS);
        assert!(f[0].description.contains("HTTP 301"));
        let zero = Fetch::Answered {
            status: 200,
            hsts: Some("max-age=0".into()),
        };
        assert_eq!(judge(&s, "u", &zero, None).0[0].code, NO_HSTS);
        let failed = Fetch::Failed("Connection refused".into());
        let plain = Fetch::Answered {
            status: 200,
            hsts: None,
        };
        let (f, m) = judge(&s, "u", &failed, Some(&plain));
        assert_eq!((f[0].code, m), (NO_HTTPS, vec![NO_HTTPS]));
        let (f, m) = judge(&s, "u", &failed, Some(&failed));
        assert!(f.is_empty() && m.is_empty());
    }
}
