//! Tokens: short-lived credentials scoped to one task, verified by the API on every request.
//!
//! The claims and how the API checks them are in `docs/http-api.md` (section "Tokens"); how a plugin's
//! container receives its token, in `docs/entrypoint-protocol.md` (section "Environment").
//! Implementations (`kat-http`'s `JwtAuthority`) fix the algorithm in the verifier, require every
//! claim, and consult a denylist for revoked `jti`s.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::clock::Timestamp;
use crate::org::OrgCode;
use crate::permission::Permissions;
use crate::task::TaskId;

/// The audience of every token.
pub const AUDIENCE: &str = "kat-http";
/// The default issuer.
pub const ISSUER: &str = "kat";
/// Seconds a task's token outlives the task's deadline.
pub const GRACE_SECS: i64 = 60;

/// The claims of a token. Every field is required on the wire; `task_id` and `plugin_id` are `null`
/// for an operator's token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience: [`AUDIENCE`].
    pub aud: String,
    /// Subject: `task:<uuid>` or `user:<name>`.
    pub sub: String,
    /// The task the token belongs to (present, `null` for an operator).
    #[serde(deserialize_with = "Option::deserialize")]
    pub task_id: Option<TaskId>,
    /// The organization it may see.
    pub org: OrgCode,
    /// The plugin the task runs (present, `null` for an operator).
    #[serde(deserialize_with = "Option::deserialize")]
    pub plugin_id: Option<String>,
    /// What it may do.
    pub permissions: Permissions,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Not before (unix seconds).
    pub nbf: i64,
    /// Expires (unix seconds).
    pub exp: i64,
    /// Unique token id, for revocation.
    pub jti: String,
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("sub", &self.sub)
            .field("org", &self.org)
            .field("plugin_id", &self.plugin_id)
            .field("exp", &self.exp)
            .field("jti", &self.jti)
            .finish_non_exhaustive()
    }
}

impl Claims {
    /// Claims for a task's token, valid from now until `deadline` plus [`GRACE_SECS`].
    ///
    /// ```
    /// use kat_core::{clock::Timestamp, org::OrgCode, permission::Permissions, task::TaskId, token::Claims};
    /// let now = Timestamp::now();
    /// let c = Claims::for_task(TaskId::new(), OrgCode::new("acme").unwrap(), "dns", Permissions::new(), now, now.plus_secs(900));
    /// assert_eq!(c.aud, "kat-http");
    /// assert!(c.sub.starts_with("task:"));
    /// assert_eq!(c.exp, now.as_secs() + 900 + 60);
    /// ```
    pub fn for_task(
        task: TaskId,
        org: OrgCode,
        plugin_id: &str,
        permissions: Permissions,
        now: Timestamp,
        deadline: Timestamp,
    ) -> Self {
        Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: format!("task:{task}"),
            task_id: Some(task),
            org,
            plugin_id: Some(plugin_id.into()),
            permissions,
            iat: now.as_secs(),
            nbf: now.as_secs(),
            exp: deadline.as_secs() + GRACE_SECS,
            jti: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Claims for a person or program (an operator's token), valid for `ttl_secs`.
    pub fn for_user(
        user: &str,
        org: OrgCode,
        permissions: Permissions,
        now: Timestamp,
        ttl_secs: i64,
    ) -> Self {
        Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: format!("user:{user}"),
            task_id: None,
            org,
            plugin_id: None,
            permissions,
            iat: now.as_secs(),
            nbf: now.as_secs(),
            exp: now.as_secs() + ttl_secs,
            jti: uuid::Uuid::new_v4().to_string(),
        }
    }
}

/// Mints and verifies tokens.
#[async_trait]
pub trait TokenAuthority: Send + Sync + fmt::Debug {
    /// Sign claims into a token.
    fn mint(&self, claims: &Claims) -> Result<String>;

    /// Verify a token: signature with the fixed algorithm, audience, issuer, `nbf`, `exp`, every claim
    /// present and well-typed, and not revoked. Any failure is [`crate::Error::Unauthenticated`].
    async fn verify(&self, token: &str) -> Result<Claims>;

    /// Revoke a token id until `exp` (unix seconds).
    async fn revoke(&self, jti: &str, exp: i64) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> serde_json::Value {
        let c = Claims::for_user(
            "alice",
            OrgCode::new("acme").unwrap(),
            Permissions::new(),
            Timestamp::from_secs(1000),
            60,
        );
        serde_json::to_value(&c).unwrap()
    }

    #[test]
    fn every_claim_is_required() {
        let full = sample();
        assert!(serde_json::from_value::<Claims>(full.clone()).is_ok());
        for key in [
            "iss",
            "aud",
            "sub",
            "task_id",
            "org",
            "plugin_id",
            "permissions",
            "iat",
            "nbf",
            "exp",
            "jti",
        ] {
            let mut v = full.clone();
            v.as_object_mut().unwrap().remove(key);
            let e = serde_json::from_value::<Claims>(v)
                .expect_err(key)
                .to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
        let mut v = full.clone();
        v["exp"] = serde_json::json!("1060");
        assert!(
            serde_json::from_value::<Claims>(v).is_err(),
            "a string exp is refused"
        );
        let mut v = full;
        v["extra"] = serde_json::json!(1);
        assert!(
            serde_json::from_value::<Claims>(v).is_err(),
            "unknown claims are refused"
        );
    }

    #[test]
    fn debug_never_shows_permissions_or_secrets() {
        let c: Claims = serde_json::from_value(sample()).unwrap();
        let d = format!("{c:?}");
        assert!(
            d.contains("user:alice") && !d.contains("permissions"),
            "{d}"
        );
    }
}
