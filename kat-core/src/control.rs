//! The engine's control surface as the HTTP API sees it: queue tasks, cancel them, and react to new
//! files (normalizer chaining). `kat-core`'s engine implements it; the API holds it as
//! `Arc<dyn TaskControl>`.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::Result;
use crate::org::OrgCode;
use crate::store::FileMeta;
use crate::task::{Task, TaskId};

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
}

/// Queue, cancel and chain tasks.
#[async_trait]
pub trait TaskControl: Send + Sync + Debug {
    /// Validate and queue a request: the plugin must exist and be enabled, every target must exist
    /// and pass the plugin's scan level (a refusal says which target and why), and the input is split
    /// into batches. Returns the queued tasks.
    async fn submit(&self, request: TaskRequest) -> Result<Vec<Task>>;

    /// Validate every request as [`TaskControl::submit`] does, then queue the tasks of all of them:
    /// all or nothing, so one refused request (its error located at `[i]`, its index) queues none.
    async fn submit_all(&self, requests: Vec<TaskRequest>) -> Result<Vec<Task>>;

    /// Cancel a task: a queued one never starts; a running one has its container killed and its
    /// token revoked. The task ends `cancelled`.
    async fn cancel(&self, org: &OrgCode, task: TaskId) -> Result<Task>;

    /// A file was stored: queue every enabled plugin that consumes `file:<its type>` (never for
    /// `error` files). Returns the queued tasks.
    async fn file_stored(&self, file: &FileMeta) -> Result<Vec<Task>>;
}
