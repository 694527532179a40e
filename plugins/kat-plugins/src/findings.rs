//! Finding codes the plugins emit, the JSON of a finding, and writing them (with removal of the ones a
//! plugin no longer sees, by explicit id only).

use serde_json::{Value, json};

use crate::Result;
use crate::api::ApiClient;
use crate::names::Subject;

/// A database port (MS SQL, Interbase, MySQL, PostgreSQL, Redis, MongoDB, Elasticsearch, ...) is open.
pub const OPEN_DATABASE_PORT: &str = "KAT-OPEN-DATABASE-PORT";
/// An administration port (FTP, SSH, Telnet, VNC) is open.
pub const OPEN_SYSADMIN_PORT: &str = "KAT-OPEN-SYSADMIN-PORT";
/// The remote desktop port (RDP) is open.
pub const REMOTE_DESKTOP_PORT: &str = "KAT-REMOTE-DESKTOP-PORT";
/// A port outside the common ones is open.
pub const UNCOMMON_OPEN_PORT: &str = "KAT-UNCOMMON-OPEN-PORT";
/// The certificate has expired.
pub const CERTIFICATE_EXPIRED: &str = "KAT-CERTIFICATE-EXPIRED";
/// The certificate expires within 30 days.
pub const CERTIFICATE_EXPIRING_SOON: &str = "KAT-CERTIFICATE-EXPIRING-SOON";
/// The certificate is self-signed (issuer == subject).
pub const SELF_SIGNED: &str = "KAT-SELF-SIGNED";
/// The chain does not verify against the trusted roots (and the certificate is not self-signed).
pub const CERTIFICATE_UNTRUSTED: &str = "KAT-CERTIFICATE-UNTRUSTED";
/// The certificate is not valid for the name that was connected to.
pub const CERTIFICATE_HOSTNAME_MISMATCH: &str = "KAT-CERTIFICATE-HOSTNAME-MISMATCH";
/// The server accepts TLS 1.0.
pub const TLS_1_0_SUPPORT: &str = "KAT-TLS-1.0-SUPPORT";
/// The server accepts TLS 1.1.
pub const TLS_1_1_SUPPORT: &str = "KAT-TLS-1.1-SUPPORT";
/// An HTTPS server sends no (or a disabling) Strict-Transport-Security header.
pub const NO_HSTS: &str = "KAT-NO-HSTS";
/// A web server answers over plain HTTP only.
pub const NO_HTTPS: &str = "KAT-NO-HTTPS";

/// Every finding code any of the plugins can emit (each must exist in `plugins/finding_types.json`).
pub const ALL_CODES: [&str; 13] = [
    OPEN_DATABASE_PORT,
    OPEN_SYSADMIN_PORT,
    REMOTE_DESKTOP_PORT,
    UNCOMMON_OPEN_PORT,
    CERTIFICATE_EXPIRED,
    CERTIFICATE_EXPIRING_SOON,
    SELF_SIGNED,
    CERTIFICATE_UNTRUSTED,
    CERTIFICATE_HOSTNAME_MISMATCH,
    TLS_1_0_SUPPORT,
    TLS_1_1_SUPPORT,
    NO_HSTS,
    NO_HTTPS,
];

/// One finding about a hostname or an address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// Its type's code.
    pub code: &'static str,
    /// What it is about.
    pub subject: Subject,
    /// Why, for a person.
    pub description: String,
}

impl Finding {
    /// A finding.
    pub fn new(code: &'static str, subject: Subject, description: impl Into<String>) -> Self {
        Finding {
            code,
            subject,
            description: description.into(),
        }
    }

    /// The API's JSON: `{"finding_type", "hostname"|"address", "description"}`.
    pub fn to_json(&self) -> Value {
        let (field, key) = self.subject.finding_field();
        let mut v = json!({"finding_type": self.code, "description": self.description});
        if let Value::Object(m) = &mut v {
            m.insert(field.to_string(), Value::String(key));
        }
        v
    }

    /// Its natural key.
    pub fn key(&self) -> String {
        self.subject.finding_key(self.code)
    }
}

/// What [`sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Findings written.
    pub posted: usize,
    /// Ids of the findings asked to be removed (they no longer apply).
    pub removed_ids: Vec<String>,
    /// How many of those existed and were removed.
    pub removed: u64,
}

/// Write `found` (all about `subject`), then, when `cleanup` is on, remove the findings of the
/// `managed` codes about `subject` that were not found this time: `DELETE /objects/finding/?id=...`
/// with their explicit ids (absent ones count zero).
///
/// # Errors
/// The first failing request.
pub fn sync(
    api: &ApiClient,
    subject: &Subject,
    found: &[Finding],
    managed: &[&'static str],
    cleanup: bool,
) -> Result<SyncReport> {
    let mut report = SyncReport::default();
    if !found.is_empty() {
        let items: Vec<Value> = found.iter().map(Finding::to_json).collect();
        api.post_json("/objects/", &json!({ "finding": items }))?;
        report.posted = found.len();
    }
    if cleanup {
        report.removed_ids = managed
            .iter()
            .filter(|code| !found.iter().any(|f| f.code == **code))
            .map(|code| subject.finding_key(code))
            .collect();
        if !report.removed_ids.is_empty() {
            report.removed = api.delete_by("/objects/finding/", "id", &report.removed_ids)?;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_json_and_keys() {
        let f = Finding::new(NO_HSTS, Subject::Hostname("a.example".into()), "x");
        assert_eq!(
            f.to_json(),
            json!({"finding_type": "KAT-NO-HSTS", "hostname": "internet|a.example", "description": "x"})
        );
        assert_eq!(f.key(), "KAT-NO-HSTS|internet|a.example");
        let f = Finding::new(
            OPEN_DATABASE_PORT,
            Subject::Address("127.0.0.1".parse().unwrap()),
            "y",
        );
        assert_eq!(
            f.to_json(),
            json!({"finding_type": "KAT-OPEN-DATABASE-PORT", "address": "internet|127.0.0.1", "description": "y"})
        );
        assert_eq!(f.key(), "KAT-OPEN-DATABASE-PORT||internet|127.0.0.1");
    }
}
