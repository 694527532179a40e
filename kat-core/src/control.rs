//! The engine's control surface as the HTTP API sees it: queue tasks, cancel them, and react to new
//! files (normalizer chaining). `kat-core`'s engine implements it; the API holds it as
//! `Arc<dyn TaskControl>`.

use std::fmt::Debug;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::object::Object;
use crate::org::OrgCode;
use crate::permission::Permissions;
use crate::plugin::PluginDef;
use crate::store::FileMeta;
use crate::task::{Task, TaskId};
use crate::{Error, Result};

/// Who asks for a task or a schedule, and with which rights: a task's token only ever carries the
/// plugin's declared permissions when the submitter holds every one of them
/// ([`Permissions::covers`]; docs/decisions.md, "Plugin permissions are the submitter's").
///
/// ```
/// use kat_core::control::Submitter;
/// let s = Submitter::operator("katd");
/// assert_eq!(s.subject, "operator:katd");
/// assert!(s.token.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitter {
    /// The token's subject (`user:alice`, `task:<uuid>`), or `operator:<tool>` for a program that
    /// calls the engine directly.
    pub subject: String,
    /// The submitter's permissions, with their scopes.
    pub permissions: Permissions,
    /// The token the request came with: its id and expiry. `None` for an operator tool, whose rights
    /// do not depend on a token.
    pub token: Option<SubmitterToken>,
}

/// The token a submitter used: what a schedule checks at every tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitterToken {
    /// The token's `jti`.
    pub jti: String,
    /// When it expires.
    pub expires_at: Timestamp,
}

impl Submitter {
    /// Whether the submitter may run `plugin`: they hold every permission it declares, scopes
    /// included ([`Permissions::missing`]).
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] naming the plugin and each permission (with its scope) the
    /// submitter lacks.
    pub fn may_run(&self, plugin: &PluginDef) -> Result<()> {
        let missing = self.permissions.missing(&plugin.permissions);
        if missing.0.is_empty() {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "plugin {} declares permissions that {} does not hold: {}",
            plugin.plugin_id,
            self.subject,
            missing.describe()
        )))
    }

    /// Why a schedule owned by this submitter may no longer run at `now`, if it may not: its token
    /// expired or was revoked (`revoked`, from the revocation list), or its permissions no longer
    /// cover `plugin`'s.
    pub fn gone(
        &self,
        plugin: Option<&PluginDef>,
        revoked: bool,
        now: Timestamp,
    ) -> Option<String> {
        if let Some(t) = &self.token {
            if revoked {
                return Some(format!(
                    "the token of its owner {} (jti {}) was revoked",
                    self.subject, t.jti
                ));
            }
            if t.expires_at <= now {
                return Some(format!(
                    "the token of its owner {} (jti {}) expired at {}",
                    self.subject, t.jti, t.expires_at
                ));
            }
        }
        match plugin.map(|p| self.may_run(p)) {
            Some(Err(e)) => Some(e.to_string()),
            _ => None,
        }
    }

    /// An operator tool calling the engine directly (not through the API): every permission,
    /// explicitly, and no token.
    pub fn operator(tool: &str) -> Self {
        Submitter {
            subject: format!("operator:{tool}"),
            permissions: Permissions::all(),
            token: None,
        }
    }
}

/// A request to run a plugin now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRequest {
    /// The organization the task runs for.
    pub org: OrgCode,
    /// The plugin.
    pub plugin_id: String,
    /// The input as the API's `input_data` gives it: natural keys (`internet|example.com`), bare
    /// values (`example.com`, `192.0.2.1`) or file ids; empty for a standalone run.
    pub input: Vec<String>,
    /// Who submits it: the plugin's declared permissions must be among theirs.
    pub submitter: Submitter,
}

/// Queue, cancel and chain tasks.
#[async_trait]
pub trait TaskControl: Send + Sync + Debug {
    /// Validate and queue a request: the plugin must exist and be enabled, the submitter must hold
    /// every permission the plugin declares (scopes included; otherwise
    /// [`Error::PermissionDenied`] naming each missing one, and
    /// nothing is queued), every target must exist and pass the plugin's scan level (an input file: the
    /// level it carries; a refusal says which target and why), and the input is split into batches.
    /// Returns the queued tasks.
    async fn submit(&self, request: TaskRequest) -> Result<Vec<Task>>;

    /// Validate every request as [`TaskControl::submit`] does, then queue the tasks of all of them:
    /// all or nothing, so one refused request (its error located at `[i]`, its index) queues none.
    async fn submit_all(&self, requests: Vec<TaskRequest>) -> Result<Vec<Task>>;

    /// Cancel a task: a queued one never starts; a running one has its container killed and its
    /// token revoked. The task ends `cancelled`.
    async fn cancel(&self, org: &OrgCode, task: TaskId) -> Result<Task>;

    /// A file was stored: queue every enabled plugin that consumes `file:<its type>` (never for
    /// `error` files) and whose scan level the file's carried level allows ([`crate::chain`]; a
    /// refused consumer is logged and not queued). The file may join a consumer's task that is still
    /// queued, up to the plugin's batch size, instead of getting a new one. Returns the tasks the
    /// file went into (new and joined).
    async fn file_stored(&self, file: &FileMeta) -> Result<Vec<Task>>;

    /// Objects of `org` were written or deleted through the API (`objects`: their data as written,
    /// or as they were before the deletion): bring the business rules' findings up to date
    /// ([`crate::rules::RuleRunner::objects_written`]) before the write is answered, and let the
    /// next scheduler tick catch up on what the write made scannable ([`crate::engine::Engine::tick`]).
    /// The default does nothing (a control without rules or schedules).
    async fn objects_written(&self, org: &OrgCode, objects: &[Object]) -> Result<()> {
        let _ = (org, objects);
        Ok(())
    }

    /// The business rules, each with whether it runs for `org`. The default has none.
    async fn rules(&self, org: &OrgCode) -> Result<Vec<crate::rules::RuleView>> {
        let _ = org;
        Ok(Vec::new())
    }

    /// Enable (`Some(true)`), disable (`Some(false)`) or reset (`None`) a rule for `org`, then run
    /// the rules over `org` so that its findings follow. [`Error::NotFound`] for an unknown rule
    /// (the default knows none).
    async fn set_rule_enabled(
        &self,
        org: &OrgCode,
        rule: &str,
        enabled: Option<bool>,
    ) -> Result<crate::rules::PassReport> {
        let _ = (org, enabled);
        Err(Error::not_found("business rule", rule))
    }

    /// A full pass of the rules over `org`. The default does nothing.
    async fn run_rules(&self, org: &OrgCode) -> Result<crate::rules::PassReport> {
        let _ = org;
        Ok(crate::rules::PassReport::default())
    }
}
