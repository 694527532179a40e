//! The engine-independent life of a container run: the run in a spawned task that a dropped caller cannot
//! abandon, the select over output, exit, deadline and cancellation, clean-up from drop guards, removal that
//! tolerates "already gone" and "already being removed", and reaping.
//!
//! A runtime's `run` looks like this (engine calls elided):
//!
//! ```no_run
//! use std::time::Duration;
//! use futures::StreamExt;
//! use kat_core::runtime::{CancellationToken, EndReason};
//! use kat_runtime_engine::{CleanupGuard, Output, StopSignal, spawn_run, supervise};
//!
//! # async fn demo(cancel: CancellationToken) -> Result<(), Box<dyn std::error::Error>> {
//! let outcome = spawn_run(cancel, tracing::info_span!("run"), |stop: StopSignal| async move {
//!     // create the container, then guard it: a panic or a dropped task still removes it
//!     let guard = CleanupGuard::new("container abc", || async { /* force-remove abc */ });
//!     // attach, start, then:
//!     let output = futures::stream::iter([Ok::<_, std::io::Error>(Output::Stdout(b"hi\n".to_vec()))]);
//!     let wait = async { Ok::<_, std::io::Error>(Some(0)) };
//!     let kill = |_why: &'static str| async { /* SIGKILL abc */ };
//!     let s = supervise(output, wait, kill, &stop, Duration::from_secs(60), 64 * 1024).await;
//!     // remove the container, then:
//!     guard.disarm();
//!     (s.reason, s.exit_code)
//! })
//! .await?;
//! assert_eq!(outcome, (EndReason::Exited, Some(0)));
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::OutputTail;
use kat_core::runtime::{EndReason, ManagedContainer, Outcome};
use kat_core::task::TaskId;

/// After a kill, how long to wait for the engine to report the exit before giving up on it.
pub const KILL_GRACE: Duration = Duration::from_secs(10);
/// After the exit, how long to wait for the rest of the output.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for a removal that someone else started.
pub const REMOVAL_WAIT: Duration = Duration::from_secs(10);

/// The two reasons to stop a run early: the caller's cancellation token, and the caller's future being
/// dropped (see [`spawn_run`]).
///
/// ```
/// use kat_core::runtime::{CancellationToken, EndReason};
/// use kat_runtime_engine::StopSignal;
/// let cancel = CancellationToken::new();
/// let stop = StopSignal::new(cancel.clone(), CancellationToken::new());
/// assert_eq!(stop.fired_now(), None);
/// cancel.cancel();
/// assert_eq!(stop.fired_now(), Some(EndReason::Cancelled));
/// ```
#[derive(Debug, Clone)]
pub struct StopSignal {
    cancel: CancellationToken,
    dropped: CancellationToken,
}

impl StopSignal {
    /// A signal that fires with either token.
    pub fn new(cancel: CancellationToken, dropped: CancellationToken) -> Self {
        StopSignal { cancel, dropped }
    }

    /// Resolves when either token fires.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use kat_core::runtime::{CancellationToken, EndReason};
    /// use kat_runtime_engine::StopSignal;
    /// let dropped = CancellationToken::new();
    /// let stop = StopSignal::new(CancellationToken::new(), dropped.clone());
    /// dropped.cancel();
    /// assert_eq!(stop.fired().await, EndReason::Cancelled);
    /// # }
    /// ```
    pub async fn fired(&self) -> EndReason {
        tokio::select! {
            _ = self.cancel.cancelled() => EndReason::Cancelled,
            _ = self.dropped.cancelled() => EndReason::Cancelled,
        }
    }

    /// Whether either token has fired.
    pub fn fired_now(&self) -> Option<EndReason> {
        (self.cancel.is_cancelled() || self.dropped.is_cancelled()).then_some(EndReason::Cancelled)
    }
}

/// The task driving a container failed (it panicked, or its runtime shut down under it).
///
/// ```
/// let e = kat_runtime_engine::TaskFailed("it panicked".into());
/// assert_eq!(e.to_string(), "the container's background task failed: it panicked");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the container's background task failed: {0}")]
pub struct TaskFailed(pub String);

/// Run the future `make(stop)` builds in a spawned task (instrumented with `span`) and await it.
///
/// When the caller drops the returned future, a drop guard fires the [`StopSignal`] handed to `make`, and the
/// task goes on by itself: it kills and removes its container. That is what makes removal happen on every
/// path, a caller's timeout or an aborted caller included.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use kat_core::runtime::CancellationToken;
/// use kat_runtime_engine::spawn_run;
/// let n = spawn_run(CancellationToken::new(), tracing::Span::none(), |_stop| async { 42 }).await;
/// assert_eq!(n, Ok(42));
/// # }
/// ```
///
/// # Errors
/// [`TaskFailed`] when the task panicked or was cancelled by its runtime.
pub async fn spawn_run<T, Fut>(
    cancel: CancellationToken,
    span: tracing::Span,
    make: impl FnOnce(StopSignal) -> Fut,
) -> Result<T, TaskFailed>
where
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let dropped = CancellationToken::new();
    let guard = dropped.clone().drop_guard();
    let stop = StopSignal::new(cancel, dropped);
    let joined = tokio::spawn(make(stop).instrument(span)).await;
    guard.disarm();
    match joined {
        Ok(r) => Ok(r),
        Err(e) if e.is_panic() => Err(TaskFailed("it panicked".into())),
        Err(e) => Err(TaskFailed(e.to_string())),
    }
}

/// One item of a container's output stream, as [`supervise`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<B> {
    /// Bytes of stdout.
    Stdout(B),
    /// Bytes of stderr.
    Stderr(B),
    /// Anything else the engine sends (stdin echoes, ...): ignored.
    Other,
}

/// What [`supervise`] saw.
#[derive(Debug)]
pub struct Supervised<E> {
    /// Why the container stopped.
    pub reason: EndReason,
    /// The exit code, when the wait reported one.
    pub exit_code: Option<i64>,
    /// The wait's error, when it failed and the run was neither timed out nor cancelled (then the error is
    /// the expected consequence of the kill and is dropped).
    pub wait_error: Option<E>,
    /// The end of stdout.
    pub stdout: OutputTail,
    /// The end of stderr.
    pub stderr: OutputTail,
}

impl<E> Supervised<E> {
    /// The result for a run stopped (with `reason`) before its container started: no exit code, no output.
    ///
    /// ```
    /// use kat_core::runtime::EndReason;
    /// use kat_runtime_engine::Supervised;
    /// let s = Supervised::<std::io::Error>::before_start(EndReason::Cancelled, 1024);
    /// assert_eq!((s.reason, s.exit_code), (EndReason::Cancelled, None));
    /// ```
    pub fn before_start(reason: EndReason, tail_bytes: usize) -> Self {
        Supervised {
            reason,
            exit_code: None,
            wait_error: None,
            stdout: OutputTail::new(tail_bytes),
            stderr: OutputTail::new(tail_bytes),
        }
    }
}

/// Watch a started container until it exits and its output ends, its `timeout` passes, or `stop` fires.
///
/// - `output`: stdout and stderr, kept in two [`OutputTail`]s of `tail_bytes` each; an error ends the output.
/// - `wait`: resolves with the exit code when the container exits (or with the engine's error).
/// - `kill`: called once on deadline or stop (with the reason, for the logs); the run is then
///   [`EndReason::TimedOut`] or [`EndReason::Cancelled`], and the exit is awaited for at most [`KILL_GRACE`].
///
/// After the exit, output still open is drained for at most [`DRAIN_GRACE`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use kat_core::runtime::{CancellationToken, EndReason};
/// use kat_runtime_engine::{Output, StopSignal, supervise};
/// let stop = StopSignal::new(CancellationToken::new(), CancellationToken::new());
/// let output = futures::stream::iter([
///     Ok::<_, std::io::Error>(Output::Stdout(&b"out\n"[..])),
///     Ok(Output::Stderr(&b"err\n"[..])),
/// ]);
/// let s = supervise(
///     output,
///     async { Ok::<_, std::io::Error>(Some(3)) },
///     |_why| async {},
///     &stop,
///     Duration::from_secs(5),
///     1024,
/// )
/// .await;
/// assert_eq!((s.reason, s.exit_code), (EndReason::Exited, Some(3)));
/// assert_eq!(s.stdout.into_vec(), b"out\n");
/// assert_eq!(s.stderr.into_vec(), b"err\n");
/// # }
/// ```
pub async fn supervise<S, B, OE, W, E, K, KF>(
    mut output: S,
    wait: W,
    mut kill: K,
    stop: &StopSignal,
    timeout: Duration,
    tail_bytes: usize,
) -> Supervised<E>
where
    S: Stream<Item = Result<Output<B>, OE>> + Unpin,
    B: AsRef<[u8]>,
    OE: Display,
    W: Future<Output = Result<Option<i64>, E>>,
    K: FnMut(&'static str) -> KF,
    KF: Future<Output = ()>,
{
    let started = Instant::now();
    let mut out = Supervised::before_start(EndReason::Exited, tail_bytes);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let grace = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(grace);
    tokio::pin!(wait);
    let mut grace_armed = false;
    let mut stopped: Option<EndReason> = None;
    let mut exited = false;
    let mut output_done = false;

    while !(exited && output_done) {
        tokio::select! {
            biased;
            reason = stop.fired(), if stopped.is_none() && !exited => {
                stopped = Some(reason);
                kill("cancelled").await;
                grace.as_mut().reset(tokio::time::Instant::now() + KILL_GRACE);
                grace_armed = true;
            }
            _ = &mut deadline, if stopped.is_none() && !exited => {
                stopped = Some(EndReason::TimedOut);
                kill("deadline passed").await;
                grace.as_mut().reset(tokio::time::Instant::now() + KILL_GRACE);
                grace_armed = true;
            }
            item = output.next(), if !output_done => match item {
                Some(Ok(Output::Stdout(b))) => out.stdout.push(b.as_ref()),
                Some(Ok(Output::Stderr(b))) => out.stderr.push(b.as_ref()),
                Some(Ok(Output::Other)) => {}
                Some(Err(e)) => {
                    debug!(error = %e, "output stream ended with an error");
                    output_done = true;
                }
                None => {
                    debug!(after_start_ms = started.elapsed().as_millis() as u64, "output ended");
                    output_done = true;
                }
            },
            w = &mut wait, if !exited => {
                exited = true;
                match w {
                    Ok(code) => out.exit_code = code,
                    Err(e) => out.wait_error = Some(e),
                }
                debug!(
                    after_start_ms = started.elapsed().as_millis() as u64,
                    exit_code = ?out.exit_code,
                    "exited"
                );
                grace.as_mut().reset(tokio::time::Instant::now() + DRAIN_GRACE);
                grace_armed = true;
            }
            _ = &mut grace, if grace_armed => {
                if exited {
                    debug!("output still open after the exit; not waiting for it any longer");
                } else {
                    warn!("the engine did not report the exit after the kill; removing anyway");
                }
                break;
            }
        }
    }
    if let Some(reason) = stopped {
        out.reason = reason;
        out.wait_error = None;
    }
    out
}

/// The end of a run: what [`supervise`] saw (or the error that ended the run first) and whether the
/// removal worked, as the run's result, with the info event that reports it (or the warnings).
///
/// `started` is when the run began (before the create); `Outcome::elapsed` is measured up to now.
///
/// ```
/// use std::time::Instant;
/// use kat_core::runtime::EndReason;
/// use kat_runtime_engine::{Supervised, conclude};
/// let s = Supervised::<String>::before_start(EndReason::Cancelled, 16);
/// let o = conclude("abc".into(), Instant::now(), Ok::<_, String>(s), Ok(())).expect("removed");
/// assert_eq!((o.reason, o.container_id.as_str()), (EndReason::Cancelled, "abc"));
/// let e = conclude::<String, String>("abc".into(), Instant::now(), Err("start failed".into()), Ok(()));
/// assert_eq!(e.err().as_deref(), Some("start failed"));
/// ```
///
/// # Errors
/// The run's error when it failed (a failed removal is then only logged), else the removal's error.
pub fn conclude<W, E: Display>(
    container_id: String,
    started: Instant,
    driven: Result<Supervised<W>, E>,
    removed: Result<(), E>,
) -> Result<Outcome, E> {
    let elapsed = started.elapsed();
    let driven = match (driven, removed) {
        (Ok(d), Ok(())) => d,
        (Err(e), removed) => {
            if let Err(r) = removed {
                warn!(error = %r, "could not remove the container after a failed run");
            }
            warn!(error = %e, elapsed_ms = elapsed.as_millis() as u64, "run failed; container removed");
            return Err(e);
        }
        (Ok(_), Err(r)) => return Err(r),
    };
    info!(
        reason = ?driven.reason,
        exit_code = ?driven.exit_code,
        stdout_bytes = driven.stdout.total(),
        stderr_bytes = driven.stderr.total(),
        elapsed_ms = elapsed.as_millis() as u64,
        "container finished and removed"
    );
    Ok(Outcome {
        reason: driven.reason,
        exit_code: driven.exit_code,
        stdout_tail: driven.stdout.into_vec(),
        stderr_tail: driven.stderr.into_vec(),
        container_id,
        elapsed,
    })
}

/// How a [`bounded`] wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bounded<T> {
    /// The future finished.
    Done(T),
    /// The time ran out first.
    TimedOut,
    /// The stop signal fired first.
    Stopped,
}

/// Await `fut` for at most `timeout`, and no longer than `stop` lets it (a pull before the create, ...).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use kat_core::runtime::CancellationToken;
/// use kat_runtime_engine::{Bounded, StopSignal, bounded};
/// let stop = StopSignal::new(CancellationToken::new(), CancellationToken::new());
/// assert_eq!(bounded(async { 1 }, Duration::from_secs(1), &stop).await, Bounded::Done(1));
/// let never = futures::future::pending::<()>();
/// assert_eq!(bounded(never, Duration::from_millis(10), &stop).await, Bounded::TimedOut);
/// # }
/// ```
pub async fn bounded<T>(
    fut: impl Future<Output = T>,
    timeout: Duration,
    stop: &StopSignal,
) -> Bounded<T> {
    tokio::select! {
        r = fut => Bounded::Done(r),
        _ = tokio::time::sleep(timeout) => Bounded::TimedOut,
        _ = stop.fired() => Bounded::Stopped,
    }
}

type CleanupJob = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Runs a clean-up job (removing a container) when dropped without [`CleanupGuard::disarm`]: from a
/// short-lived thread with its own tokio runtime, so that it works even while the caller's runtime is
/// shutting down.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use kat_runtime_engine::CleanupGuard;
/// let done = Arc::new(AtomicBool::new(false));
/// let guard = {
///     let done = done.clone();
///     CleanupGuard::new("container abc", move || async move { done.store(true, Ordering::SeqCst) })
/// };
/// guard.disarm(); // removed normally: nothing to do
/// assert!(!done.load(Ordering::SeqCst));
/// ```
pub struct CleanupGuard {
    what: String,
    // A mutex only to make the guard `Sync` (it is held across awaits) without asking that of the job.
    job: std::sync::Mutex<Option<CleanupJob>>,
}

impl std::fmt::Debug for CleanupGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CleanupGuard")
            .field("what", &self.what)
            .field("armed", &self.armed())
            .finish()
    }
}

impl CleanupGuard {
    /// A guard that runs `job` (described as `what` in the logs) when dropped armed.
    pub fn new<F, Fut>(what: impl Into<String>, job: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let job: CleanupJob = Box::new(move || Box::pin(job()));
        CleanupGuard {
            what: what.into(),
            job: std::sync::Mutex::new(Some(job)),
        }
    }

    /// The clean-up happened normally: do nothing on drop.
    pub fn disarm(self) {
        self.take();
    }

    fn take(&self) -> Option<CleanupJob> {
        self.job
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    fn armed(&self) -> bool {
        self.job
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some()
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if let Some(job) = self.take() {
            warn!(what = %self.what, "cleaning up from a drop guard");
            run_in_background_thread(std::mem::take(&mut self.what), job);
        }
    }
}

/// Run `job` to completion on a new thread with its own current-thread tokio runtime (for drop guards:
/// there may be no runtime to spawn on, or it may be shutting down).
///
/// ```
/// let (tx, rx) = std::sync::mpsc::channel();
/// kat_runtime_engine::run_in_background_thread("demo".into(), move || async move {
///     tx.send(1).ok();
/// });
/// assert_eq!(rx.recv().ok(), Some(1));
/// ```
pub fn run_in_background_thread<F, Fut>(what: String, job: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let spawned = std::thread::Builder::new()
        .name("kat-runtime-cleanup".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(job()),
                Err(e) => warn!(what = %what, error = %e, "no runtime to clean up with"),
            }
        });
    if let Err(e) = spawned {
        warn!(error = %e, "could not spawn the clean-up thread");
    }
}

/// The answer to one removal request, as [`remove_until_gone`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveAttempt {
    /// The engine removed it.
    Removed,
    /// It did not exist (any more): as good as removed.
    Gone,
    /// Someone else is removing it right now (a reaper, a concurrent clean-up).
    InProgress,
}

/// Remove something, retrying a failed request twice (after 100 and 200 ms); when someone else is already
/// removing it, poll `exists` (every 50 ms, for at most [`REMOVAL_WAIT`]) until it is gone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use kat_runtime_engine::{RemoveAttempt, remove_until_gone};
/// let r: Result<(), String> = remove_until_gone(
///     || async { Ok(RemoveAttempt::Gone) },
///     || async { Ok(false) },
///     || "still there".to_string(),
/// )
/// .await;
/// assert_eq!(r, Ok(()));
/// # }
/// ```
///
/// # Errors
/// The last request's error after the retries, `exists`'s error, or `timed_out()` when a removal started by
/// someone else did not finish within [`REMOVAL_WAIT`].
pub async fn remove_until_gone<E, R, RF, X, XF>(
    mut remove: R,
    mut exists: X,
    timed_out: impl FnOnce() -> E,
) -> Result<(), E>
where
    R: FnMut() -> RF,
    RF: Future<Output = Result<RemoveAttempt, E>>,
    X: FnMut() -> XF,
    XF: Future<Output = Result<bool, E>>,
{
    let mut attempt = 0u32;
    loop {
        match remove().await {
            Ok(RemoveAttempt::Removed | RemoveAttempt::Gone) => return Ok(()),
            Ok(RemoveAttempt::InProgress) => break,
            Err(_) if attempt < 2 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            Err(e) => return Err(e),
        }
    }
    let until = tokio::time::Instant::now() + REMOVAL_WAIT;
    loop {
        if !exists().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= until {
            return Err(timed_out());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What [`reap_each`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// The ids of the removed containers.
    pub removed: Vec<String>,
    /// `id: error` of each container that could not be removed.
    pub failed: Vec<String>,
}

impl Reaped {
    /// `None` when everything was removed, else a message naming what could not be.
    ///
    /// ```
    /// use kat_runtime_engine::Reaped;
    /// assert_eq!(Reaped::default().failure(), None);
    /// let r = Reaped { removed: vec!["a".into()], failed: vec!["b: busy".into()] };
    /// assert_eq!(r.failure().as_deref(), Some("removed 1 container(s) but could not remove b: busy"));
    /// ```
    pub fn failure(&self) -> Option<String> {
        (!self.failed.is_empty()).then(|| {
            format!(
                "removed {} container(s) but could not remove {}",
                self.removed.len(),
                self.failed.join("; ")
            )
        })
    }
}

/// Remove each of `containers` that belongs to `deployment` (see
/// [`ManagedContainer::belongs_to`]) and whose task is not in `live` (or has no parsable task) with
/// `remove(id)`, trying all of them; logs each removal. Other deployments' containers are left alone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::collections::HashSet;
/// use kat_core::runtime::ManagedContainer;
/// use kat_runtime_engine::reap_each;
/// use kat_core::task::TaskId;
/// let live = TaskId::new();
/// let c = |id: &str, task, deployment: &str| ManagedContainer {
///     id: id.into(), name: id.into(), task, state: "running".into(), deployment: Some(deployment.into()),
/// };
/// let all = vec![
///     c("orphan", Some(TaskId::new()), "blue"),
///     c("live", Some(live), "blue"),
///     c("garbage", None, "blue"),
///     c("green's", Some(TaskId::new()), "green"),
/// ];
/// let r = reap_each(all, "blue", &HashSet::from([live]), |_id| async { Ok::<_, String>(()) }).await;
/// assert_eq!(r.removed, vec!["orphan".to_string(), "garbage".to_string()]);
/// # }
/// ```
pub async fn reap_each<E, F, Fut>(
    containers: Vec<ManagedContainer>,
    deployment: &str,
    live: &HashSet<TaskId>,
    mut remove: F,
) -> Reaped
where
    E: Display,
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut reaped = Reaped::default();
    for c in containers {
        if !c.belongs_to(deployment) || c.task.is_some_and(|t| live.contains(&t)) {
            continue;
        }
        match remove(c.id.clone()).await {
            Ok(()) => {
                info!(container = %c.id, name = %c.name, task = ?c.task, state = %c.state, "reaped an orphaned container");
                reaped.removed.push(c.id);
            }
            Err(e) => {
                warn!(container = %c.id, error = %e, "could not reap a container");
                reaped.failed.push(format!("{}: {e}", c.id));
            }
        }
    }
    reaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn stop() -> (CancellationToken, StopSignal) {
        let cancel = CancellationToken::new();
        (
            cancel.clone(),
            StopSignal::new(cancel, CancellationToken::new()),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_kills_and_reports_timed_out() {
        let (_, stop) = stop();
        let killed = Arc::new(AtomicU32::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut tx = Some(tx);
        let s = supervise(
            futures::stream::pending::<Result<Output<Vec<u8>>, String>>(),
            async {
                rx.await.ok();
                Ok::<_, String>(Some(137))
            },
            |why| {
                assert_eq!(why, "deadline passed");
                killed.fetch_add(1, Ordering::SeqCst);
                if let Some(tx) = tx.take() {
                    tx.send(()).ok();
                }
                async {}
            },
            &stop,
            Duration::from_secs(2),
            16,
        )
        .await;
        assert_eq!(s.reason, EndReason::TimedOut);
        assert_eq!(s.exit_code, Some(137));
        assert_eq!(killed.load(Ordering::SeqCst), 1);
    }

    /// Supervise a silent container (output never ends unless `ended`) whose wait gives `wait`, with a
    /// 60 s timeout and a kill that does nothing.
    async fn silent(
        stop: &StopSignal,
        ended: bool,
        wait: impl Future<Output = Result<Option<i64>, String>>,
    ) -> Supervised<String> {
        let output = if ended {
            futures::stream::empty().boxed()
        } else {
            futures::stream::pending().boxed()
        };
        let output: futures::stream::BoxStream<'_, Result<Output<Vec<u8>>, String>> = output;
        supervise(
            output,
            wait,
            |_| async {},
            stop,
            Duration::from_secs(60),
            16,
        )
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_kills_and_drops_the_wait_error() {
        let (cancel, stop) = stop();
        cancel.cancel();
        let s = silent(&stop, true, async { Err("no such container".to_string()) }).await;
        assert_eq!(s.reason, EndReason::Cancelled);
        assert!(s.wait_error.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_error_is_reported_and_open_output_is_not_awaited_forever() {
        let (_, stop) = stop();
        let started = tokio::time::Instant::now();
        let s = silent(&stop, false, async { Err("boom".to_string()) }).await;
        assert_eq!(s.reason, EndReason::Exited);
        assert_eq!(s.wait_error.as_deref(), Some("boom"));
        let took = started.elapsed();
        assert!(
            took >= DRAIN_GRACE && took < DRAIN_GRACE + Duration::from_millis(10),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreported_exit_after_a_kill_gives_up_after_the_grace() {
        let (cancel, stop) = stop();
        cancel.cancel();
        let started = tokio::time::Instant::now();
        let s = silent(&stop, false, futures::future::pending()).await;
        assert_eq!(s.reason, EndReason::Cancelled);
        assert_eq!(s.exit_code, None);
        let took = started.elapsed();
        assert!(
            took >= KILL_GRACE && took < KILL_GRACE + Duration::from_millis(10),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_dropped_caller_fires_the_stop_signal() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let fut = spawn_run(
            CancellationToken::new(),
            tracing::Span::none(),
            |stop| async move {
                let r = stop.fired().await;
                tx.send(r).ok();
            },
        );
        let dropped = tokio::time::timeout(Duration::from_millis(50), fut).await;
        assert!(dropped.is_err(), "the run must still be going");
        assert_eq!(rx.await.ok(), Some(EndReason::Cancelled));
    }

    #[tokio::test]
    async fn a_panicking_run_is_a_task_failure() {
        let r: Result<(), TaskFailed> =
            spawn_run(CancellationToken::new(), tracing::Span::none(), |_| async {
                panic!("boom")
            })
            .await;
        assert_eq!(r, Err(TaskFailed("it panicked".into())));
    }

    #[test]
    fn an_armed_guard_runs_its_job_on_drop() {
        let (tx, rx) = std::sync::mpsc::channel();
        drop(CleanupGuard::new("x", move || async move {
            tx.send(()).ok();
        }));
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn removal_retries_then_waits_for_someone_elses_removal() {
        let calls = AtomicU32::new(0);
        let checks = AtomicU32::new(0);
        let r: Result<(), String> = remove_until_gone(
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err("busy".to_string())
                    } else {
                        Ok(RemoveAttempt::InProgress)
                    }
                }
            },
            || {
                let n = checks.fetch_add(1, Ordering::SeqCst);
                async move { Ok(n < 3) }
            },
            || "timed out".to_string(),
        )
        .await;
        assert_eq!(r, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(checks.load(Ordering::SeqCst), 4);

        let r: Result<(), String> = remove_until_gone(
            || async { Err("down".to_string()) },
            || async { Ok(true) },
            || "timed out".to_string(),
        )
        .await;
        assert_eq!(r, Err("down".to_string()));

        let r: Result<(), String> = remove_until_gone(
            || async { Ok(RemoveAttempt::InProgress) },
            || async { Ok(true) },
            || "timed out".to_string(),
        )
        .await;
        assert_eq!(r, Err("timed out".to_string()));
    }

    #[tokio::test]
    async fn reaping_tries_everything_and_reports_failures() {
        let live = TaskId::new();
        let c = |id: &str, task, deployment: Option<&str>| ManagedContainer {
            id: id.into(),
            name: id.into(),
            task,
            state: "exited".into(),
            deployment: deployment.map(str::to_string),
        };
        let r = reap_each(
            vec![
                c("a", Some(TaskId::new()), None),
                c("b", None, Some("default")),
                c("c", Some(live), None),
                c("d", Some(TaskId::new()), Some("other")),
            ],
            "default",
            &HashSet::from([live]),
            |id| async move { if id == "a" { Err("busy") } else { Ok(()) } },
        )
        .await;
        // "a" (unlabelled: the default deployment's) failed, "d" is another deployment's.
        assert_eq!(r.removed, vec!["b".to_string()]);
        assert_eq!(r.failed, vec!["a: busy".to_string()]);
        assert!(r.failure().is_some_and(|m| m.contains("a: busy")));
    }
}
