//! Tasks: one run of one plugin over its input, and its life from queued to a final state.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Error, Result};

/// A task's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub Uuid);

impl TaskId {
    /// A new random id.
    pub fn new() -> Self {
        TaskId(Uuid::new_v4())
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s)
            .map(TaskId)
            .map_err(|_| Error::invalid("task_id", format!("not a task id (a UUID): {s:?}")))
    }
}

/// Where a task is in its life. Every task reaches one of the final states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for a worker.
    Queued,
    /// Its container is running.
    Running,
    /// Ended well.
    Completed,
    /// Ended badly (non-zero exit, refused, engine error, ...); `reason` says why.
    Failed,
    /// Cancelled by a person or the engine.
    Cancelled,
    /// Killed at its deadline.
    TimedOut,
}

impl TaskState {
    /// Every state.
    pub const ALL: [TaskState; 6] = [
        TaskState::Queued,
        TaskState::Running,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::TimedOut,
    ];

    /// Whether the task has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, TaskState::Queued | TaskState::Running)
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::TimedOut => "timed_out",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        TaskState::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| Error::invalid("state", format!("unknown task state {s:?}")))
    }
}

/// A reference to an object: its type and natural key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The type.
    pub object_type: crate::object::ObjectType,
    /// The key.
    pub key: crate::object::NaturalKey,
}

/// A task's input: objects (targets) or files, or nothing (standalone).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInput {
    /// Target objects.
    #[serde(default)]
    pub objects: Vec<ObjectRef>,
    /// Input files.
    #[serde(default)]
    pub files: Vec<crate::store::FileId>,
}

impl TaskInput {
    /// Whether there is no input at all.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.files.is_empty()
    }
}

/// One run of one plugin over its input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// Its organization.
    pub org: crate::org::OrgCode,
    /// The plugin.
    pub plugin_id: String,
    /// The input.
    pub input: TaskInput,
    /// Its state.
    pub state: TaskState,
    /// When it was queued.
    pub created_at: crate::clock::Timestamp,
    /// When its container started.
    pub started_at: Option<crate::clock::Timestamp>,
    /// When it ended.
    pub ended_at: Option<crate::clock::Timestamp>,
    /// The schedule that made it.
    pub schedule: Option<crate::schedule::ScheduleId>,
    /// The file whose arrival made it (normalizer chaining).
    pub source_file: Option<crate::store::FileId>,
    /// The container's exit code.
    pub exit_code: Option<i64>,
    /// Why it ended as it did, in words.
    pub reason: Option<String>,
    /// The last part of its stderr.
    pub stderr_tail: Option<String>,
    /// How many times it was started.
    pub attempts: u32,
    /// The token of its current (or last) attempt: recorded before the container gets it, so that
    /// a restart can revoke the token of a task it interrupted. Records written without it read as
    /// `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TaskToken>,
    /// How many of its API calls were refused with 403 (a permission its token lacks, a file type
    /// it may not upload, a scope). A task that ends `completed` with refused calls did not do all
    /// it tried to. Records written without it read as 0.
    #[serde(default)]
    pub refused_calls: u32,
    /// Why its first refused call was refused (the 403's detail, with the method and route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_refusal: Option<String>,
    /// The worker that runs it and until when, while it is [`TaskState::Running`] after a claim
    /// ([`crate::store::TaskQueue::claim_tasks`]); `None` in every other state (every patch that
    /// moves a task out of `running` clears it). A running task without one was started before
    /// leases existed. Records written without it read as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

/// A worker's hold on a running task: the worker runs it while the lease lasts, renews it
/// ([`crate::store::TaskQueue::renew_lease`]) well before `until`, and may write the task's end
/// only while it holds it ([`crate::store::TaskQueue::finish_leased`]). A lease that ended before
/// now is recovered by any worker ([`crate::store::TaskQueue::recover_expired`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The worker's id ([`crate::engine::EngineConfig::worker_id`]).
    pub worker: String,
    /// When the lease ends unless renewed.
    pub until: crate::clock::Timestamp,
}

/// Why [`Task::recover`] ended or requeued a running task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseLoss {
    /// Its lease ended before now: its worker stopped renewing it (died, stalled, lost the store).
    Expired,
    /// It has no lease: it was left running by a version from before leases.
    Unleased,
    /// Its lease belongs to the worker that is recovering: that worker restarted, and what it
    /// held died with it.
    Restarted,
}

/// The id and expiry of a task's token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskToken {
    /// The token's `jti`.
    pub jti: String,
    /// Its expiry (`exp`, unix seconds).
    pub exp: i64,
}

impl Task {
    /// A queued task.
    pub fn queued(
        org: crate::org::OrgCode,
        plugin_id: impl Into<String>,
        input: TaskInput,
    ) -> Self {
        Task {
            id: TaskId::new(),
            org,
            plugin_id: plugin_id.into(),
            input,
            state: TaskState::Queued,
            created_at: crate::clock::Timestamp::now(),
            started_at: None,
            ended_at: None,
            schedule: None,
            source_file: None,
            exit_code: None,
            reason: None,
            stderr_tail: None,
            attempts: 0,
            token: None,
            refused_calls: 0,
            first_refusal: None,
            lease: None,
        }
    }

    /// Whether `worker` holds an unexpired lease on this running task at `now`.
    ///
    /// # Errors
    /// [`Error::Conflict`] saying why not: the task is not running, it is leased to another worker
    /// (or to none), or the lease ended before `now`.
    pub fn check_lease(&self, worker: &str, now: crate::clock::Timestamp) -> Result<()> {
        if self.state != TaskState::Running {
            return Err(Error::Conflict(format!(
                "task {} is {}, not running: worker {worker} holds no lease on it",
                self.id, self.state
            )));
        }
        match &self.lease {
            None => Err(Error::Conflict(format!(
                "task {} is running without a lease: worker {worker} holds none",
                self.id
            ))),
            Some(l) if l.worker != worker => Err(Error::Conflict(format!(
                "task {} is leased to worker {}, not {worker}",
                self.id, l.worker
            ))),
            Some(l) if l.until < now => Err(Error::Conflict(format!(
                "the lease of worker {worker} on task {} ended at {}",
                self.id, l.until
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Claim this queued task for `worker` (no state check): running, started at `now`, one more
    /// attempt, leased until `until`. What every backend's
    /// [`crate::store::TaskQueue::claim_tasks`] does to each task it hands out.
    ///
    /// ```
    /// use kat_core::clock::Timestamp;
    /// use kat_core::org::OrgCode;
    /// use kat_core::task::{Task, TaskInput, TaskState};
    /// let mut t = Task::queued(OrgCode::new("acme").unwrap(), "dns", TaskInput::default());
    /// t.claim("w1", Timestamp::from_secs(10), Timestamp::from_secs(40));
    /// assert_eq!((t.state, t.attempts), (TaskState::Running, 1));
    /// assert!(t.check_lease("w1", Timestamp::from_secs(40)).is_ok());
    /// assert!(t.check_lease("w1", Timestamp::from_secs(41)).is_err());
    /// assert!(t.check_lease("w2", Timestamp::from_secs(20)).is_err());
    /// ```
    pub fn claim(
        &mut self,
        worker: &str,
        now: crate::clock::Timestamp,
        until: crate::clock::Timestamp,
    ) {
        self.state = TaskState::Running;
        self.started_at = Some(now);
        self.attempts = self.attempts.saturating_add(1);
        self.lease = Some(Lease {
            worker: worker.to_string(),
            until,
        });
    }

    /// Whether [`crate::store::TaskQueue::recover_expired`] recovers this task at `now` for
    /// `owner`, and why: a running task whose lease ended before `now`, that has no lease, or whose
    /// lease belongs to `owner`.
    pub fn lease_loss(
        &self,
        now: crate::clock::Timestamp,
        owner: Option<&str>,
    ) -> Option<LeaseLoss> {
        if self.state != TaskState::Running {
            return None;
        }
        match &self.lease {
            None => Some(LeaseLoss::Unleased),
            Some(l) if owner == Some(l.worker.as_str()) => Some(LeaseLoss::Restarted),
            Some(l) if l.until < now => Some(LeaseLoss::Expired),
            Some(_) => None,
        }
    }

    /// Recover this running task (no check; see [`Task::lease_loss`]): queued again when its
    /// plugin is in `requeue` (idempotent plugins), else failed at `now`; the lease is cleared and
    /// the reason says what happened. Returns the token of the interrupted attempt, which the
    /// backend revokes in the same atomic write.
    ///
    /// ```
    /// use kat_core::clock::Timestamp;
    /// use kat_core::org::OrgCode;
    /// use kat_core::task::{LeaseLoss, Task, TaskInput, TaskState};
    /// let mut t = Task::queued(OrgCode::new("acme").unwrap(), "dns", TaskInput::default());
    /// t.claim("w1", Timestamp::from_secs(10), Timestamp::from_secs(40));
    /// let now = Timestamp::from_secs(41);
    /// assert_eq!(t.lease_loss(now, None), Some(LeaseLoss::Expired));
    /// t.recover(now, &[], LeaseLoss::Expired);
    /// assert_eq!((t.state, t.lease.is_none()), (TaskState::Failed, true));
    /// assert!(t.reason.unwrap().contains("lease"));
    /// ```
    pub fn recover(
        &mut self,
        now: crate::clock::Timestamp,
        requeue: &[String],
        why: LeaseLoss,
    ) -> Option<TaskToken> {
        let lease = self.lease.take();
        let cause = match (why, &lease) {
            (LeaseLoss::Expired, Some(l)) => format!(
                "the lease of worker {} expired at {} while the task was running (the worker stopped renewing it)",
                l.worker, l.until
            ),
            (LeaseLoss::Restarted, Some(l)) => {
                format!("worker {} restarted while the task was running", l.worker)
            }
            _ => "the engine restarted while the task was running".to_string(),
        };
        if requeue.contains(&self.plugin_id) {
            self.state = TaskState::Queued;
            self.reason = Some(format!("requeued: {cause}"));
        } else {
            self.state = TaskState::Failed;
            self.ended_at = Some(now);
            self.reason = Some(cause);
        }
        self.token.clone()
    }
}

/// The longest [`Task::first_refusal`] kept, in bytes (longer is cut at a character boundary).
pub const MAX_REFUSAL_BYTES: usize = 1024;

/// A change to a task, applied by [`crate::store::TaskQueue::transition_task`] only when the task is
/// in one of the expected states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPatch {
    /// The new state.
    pub state: TaskState,
    /// Set `started_at`.
    pub started_at: Option<crate::clock::Timestamp>,
    /// Set `ended_at`.
    pub ended_at: Option<crate::clock::Timestamp>,
    /// Set the exit code.
    pub exit_code: Option<i64>,
    /// Set the reason.
    pub reason: Option<String>,
    /// Set the stderr tail.
    pub stderr_tail: Option<String>,
    /// Add one to `attempts`.
    pub bump_attempts: bool,
    /// Set the token of the current attempt.
    pub token: Option<TaskToken>,
    /// Count one refused API call ([`Task::refused_calls`]); its reason becomes
    /// [`Task::first_refusal`] when it is the first.
    pub refused: Option<String>,
    /// Add an input file to the task when it has room ([`FileJoin`]).
    pub add_file: Option<FileJoin>,
}

/// A file joining a queued task's input files, when the task holds fewer than `max` (no limit when
/// `None`) and not that file already; otherwise the patch leaves the input as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileJoin {
    /// The file.
    pub file: crate::store::FileId,
    /// The most files the task may hold.
    pub max: Option<u32>,
}

impl TaskPatch {
    /// A patch that only changes the state.
    pub fn to(state: TaskState) -> Self {
        TaskPatch {
            state,
            started_at: None,
            ended_at: None,
            exit_code: None,
            reason: None,
            stderr_tail: None,
            bump_attempts: false,
            token: None,
            refused: None,
            add_file: None,
        }
    }

    /// A patch that counts one refused API call of a running task and keeps the state (for
    /// [`crate::store::TaskQueue::transition_task`] from [`TaskState::Running`]).
    ///
    /// ```
    /// use kat_core::org::OrgCode;
    /// use kat_core::task::{Task, TaskInput, TaskPatch, TaskState};
    /// let mut t = Task::queued(OrgCode::new("acme").unwrap(), "parse-nmap", TaskInput::default());
    /// t.state = TaskState::Running;
    /// TaskPatch::refused_call("POST /objects/: no objects.add_ipport").apply(&mut t);
    /// TaskPatch::refused_call("POST /objects/: again").apply(&mut t);
    /// assert_eq!(t.refused_calls, 2);
    /// assert_eq!(t.first_refusal.as_deref(), Some("POST /objects/: no objects.add_ipport"));
    /// assert_eq!(t.state, TaskState::Running);
    /// ```
    pub fn refused_call(reason: impl Into<String>) -> Self {
        let mut p = TaskPatch::to(TaskState::Running);
        p.refused = Some(reason.into());
        p
    }

    /// Apply to a task (no state check). A patch to any state but [`TaskState::Running`] clears
    /// the task's [`Lease`].
    pub fn apply(&self, t: &mut Task) {
        t.state = self.state;
        if self.state != TaskState::Running {
            t.lease = None;
        }
        if let Some(v) = self.started_at {
            t.started_at = Some(v);
        }
        if let Some(v) = self.ended_at {
            t.ended_at = Some(v);
        }
        if let Some(v) = self.exit_code {
            t.exit_code = Some(v);
        }
        if let Some(v) = &self.reason {
            t.reason = Some(v.clone());
        }
        if let Some(v) = &self.stderr_tail {
            t.stderr_tail = Some(v.clone());
        }
        if self.bump_attempts {
            t.attempts += 1;
        }
        if let Some(v) = &self.token {
            t.token = Some(v.clone());
        }
        if let Some(join) = self.add_file {
            let files = &mut t.input.files;
            let room = join.max.is_none_or(|m| files.len() < m as usize);
            if room && !files.contains(&join.file) {
                files.push(join.file);
            }
        }
        if let Some(why) = &self.refused {
            t.refused_calls = t.refused_calls.saturating_add(1);
            if t.first_refusal.is_none() {
                t.first_refusal = Some(cut(why, MAX_REFUSAL_BYTES));
            }
        }
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_written_without_a_token_still_read() {
        let org = crate::org::OrgCode::new("acme").unwrap();
        let mut t = Task::queued(org, "dns", TaskInput::default());
        let mut v = serde_json::to_value(&t).unwrap();
        assert!(v.get("token").is_none(), "no token, no field");
        v.as_object_mut().unwrap().remove("token");
        assert_eq!(serde_json::from_value::<Task>(v).unwrap(), t);
        t.token = Some(TaskToken {
            jti: "j".into(),
            exp: 5,
        });
        let back: Task = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(back.token, t.token);
    }

    #[test]
    fn records_written_without_refusals_read_as_none() {
        let org = crate::org::OrgCode::new("acme").unwrap();
        let t = Task::queued(org, "dns", TaskInput::default());
        let mut v = serde_json::to_value(&t).unwrap();
        v.as_object_mut().unwrap().remove("refused_calls");
        let back: Task = serde_json::from_value(v).unwrap();
        assert_eq!((back.refused_calls, back.first_refusal), (0, None));
    }

    #[test]
    fn a_long_refusal_is_cut_at_a_character_boundary() {
        let org = crate::org::OrgCode::new("acme").unwrap();
        let mut t = Task::queued(org, "dns", TaskInput::default());
        TaskPatch::refused_call("é".repeat(MAX_REFUSAL_BYTES)).apply(&mut t);
        let kept = t.first_refusal.unwrap();
        assert!(kept.len() <= MAX_REFUSAL_BYTES && kept.len() >= MAX_REFUSAL_BYTES - 1);
        assert!(kept.chars().all(|c| c == 'é'));
    }
}
