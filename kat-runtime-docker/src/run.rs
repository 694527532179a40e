//! One container's life: create (pulling a missing image once), attach, start, wait under a deadline and a
//! cancellation token, kill when needed, and remove on every path.
//!
//! The whole life runs in a spawned task that the caller's future only awaits. When the caller's future is
//! dropped, a drop guard cancels the task's own token, and the task kills and removes the container by itself.
//! Should the task itself be dropped before removing (its runtime shutting down), a last guard removes the
//! container from a short-lived thread with its own runtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    InspectContainerOptions, KillContainerOptionsBuilder,
};
use futures::StreamExt;
use kat_core::runtime::{
    CancellationToken, ContainerSpec, EndReason, LABEL_PLUGIN, LABEL_TASK, Outcome,
};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::entrypoint::{is_no_such_image, remove_options};
use crate::error::{DockerError, server_status};
use crate::spec::{container_name, create_body, pull_reference};
use crate::tail::Tail;

/// After a kill, how long to wait for the engine to report the exit before removing anyway.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// After the exit, how long to wait for the rest of the output.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for a removal that someone else started.
const REMOVAL_WAIT: Duration = Duration::from_secs(10);

/// What a run needs of the runtime.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) docker: Docker,
    pub(crate) socket: Arc<str>,
}

impl Ctx {
    fn err(&self, op: &'static str, e: bollard::errors::Error) -> DockerError {
        DockerError::from_bollard(op, &self.socket, e)
    }
}

/// Run `spec` to completion in a spawned task; see the module docs.
pub(crate) async fn run(
    ctx: Ctx,
    spec: ContainerSpec,
    cancel: CancellationToken,
) -> Result<Outcome, DockerError> {
    let span = info_span!(
        "kat_container",
        task = spec.labels.get(LABEL_TASK).map(String::as_str).unwrap_or(""),
        plugin = spec.labels.get(LABEL_PLUGIN).map(String::as_str).unwrap_or(""),
        image = %spec.image,
        container = tracing::field::Empty,
    );
    let dropped = CancellationToken::new();
    let guard = dropped.clone().drop_guard();
    let stop = Stop { cancel, dropped };
    let joined = tokio::spawn(lifecycle(ctx, spec, stop).instrument(span)).await;
    guard.disarm();
    match joined {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(DockerError::Task("it panicked".into())),
        Err(e) => Err(DockerError::Task(e.to_string())),
    }
}

/// The two reasons to stop early: the caller's token, and the caller's future being dropped.
struct Stop {
    cancel: CancellationToken,
    dropped: CancellationToken,
}

impl Stop {
    /// Resolves when either token fires.
    async fn fired(&self) -> EndReason {
        tokio::select! {
            _ = self.cancel.cancelled() => EndReason::Cancelled,
            _ = self.dropped.cancelled() => EndReason::Cancelled,
        }
    }

    fn fired_now(&self) -> Option<EndReason> {
        (self.cancel.is_cancelled() || self.dropped.is_cancelled()).then_some(EndReason::Cancelled)
    }
}

/// What [`drive`] collected.
struct Driven {
    reason: EndReason,
    exit_code: Option<i64>,
    stdout: Tail,
    stderr: Tail,
}

async fn lifecycle(ctx: Ctx, spec: ContainerSpec, stop: Stop) -> Result<Outcome, DockerError> {
    let t0 = Instant::now();
    let body = create_body(&spec)?;
    let name = container_name(&spec.name);
    if stop.fired_now().is_some() {
        return Err(DockerError::Cancelled);
    }
    let id = create(&ctx, &name, &spec, body, &stop).await?;
    tracing::Span::current().record("container", id.as_str());
    debug!(name = %name, elapsed_ms = t0.elapsed().as_millis() as u64, "created");
    let guard = Removal {
        docker: ctx.docker.clone(),
        id: id.clone(),
    };
    let driven = drive(&ctx, &id, &spec, &stop).await;
    let removed = guard.remove(&ctx).await;
    let elapsed = t0.elapsed();
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
        container_id: id,
        elapsed,
    })
}

/// Create the container; a missing image is pulled once.
async fn create(
    ctx: &Ctx,
    name: &str,
    spec: &ContainerSpec,
    body: bollard::models::ContainerCreateBody,
    stop: &Stop,
) -> Result<String, DockerError> {
    let options = || Some(CreateContainerOptionsBuilder::new().name(name).build());
    let created = match ctx.docker.create_container(options(), body.clone()).await {
        Ok(c) => c,
        Err(e) if is_no_such_image(&e) => {
            pull(ctx, &spec.image, spec.timeout, stop).await?;
            ctx.docker
                .create_container(options(), body)
                .await
                .map_err(|e| ctx.err("create", e))?
        }
        Err(e) => return Err(ctx.err("create", e)),
    };
    for w in created.warnings.iter().filter(|w| !w.is_empty()) {
        debug!(warning = %w, "engine warning on create");
    }
    Ok(created.id)
}

/// Pull `image` once, bounded by `timeout` and the stop tokens.
async fn pull(ctx: &Ctx, image: &str, timeout: Duration, stop: &Stop) -> Result<(), DockerError> {
    info!(image, "image not present locally; pulling it");
    let (from, tag) = pull_reference(image);
    let mut options = CreateImageOptionsBuilder::new().from_image(&from);
    if let Some(tag) = &tag {
        options = options.tag(tag);
    }
    let mut stream = ctx.docker.create_image(Some(options.build()), None, None);
    let pulled = async {
        while let Some(item) = stream.next().await {
            item?;
        }
        Ok::<(), bollard::errors::Error>(())
    };
    let unavailable = |reason: String| DockerError::ImageUnavailable {
        image: image.to_string(),
        reason,
    };
    tokio::select! {
        r = pulled => match r {
            Ok(()) => Ok(()),
            Err(e) => match ctx.err("pull", e) {
                DockerError::Api { source, .. } => Err(unavailable(source.to_string())),
                other => Err(other),
            },
        },
        _ = tokio::time::sleep(timeout) => {
            Err(unavailable(format!("the pull did not finish within {timeout:?}")))
        }
        _ = stop.fired() => Err(DockerError::Cancelled),
    }
}

/// Attach, start, and wait for the exit, the deadline or a stop; kill in the last two cases.
async fn drive(
    ctx: &Ctx,
    id: &str,
    spec: &ContainerSpec,
    stop: &Stop,
) -> Result<Driven, DockerError> {
    let mut out = Driven {
        reason: EndReason::Exited,
        exit_code: None,
        stdout: Tail::new(spec.output_tail_bytes),
        stderr: Tail::new(spec.output_tail_bytes),
    };
    if let Some(reason) = stop.fired_now() {
        out.reason = reason;
        return Ok(out);
    }
    // Attach before start, so that no output is missed; stdout and stderr arrive as separate frames.
    let attach = ctx
        .docker
        .attach_container(
            id,
            Some(
                AttachContainerOptionsBuilder::new()
                    .stream(true)
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        )
        .await
        .map_err(|e| ctx.err("attach", e))?;
    let mut output = attach.output;
    drop(attach.input);
    if let Some(reason) = stop.fired_now() {
        out.reason = reason;
        return Ok(out);
    }
    ctx.docker
        .start_container(id, None)
        .await
        .map_err(|e| ctx.err("start", e))?;
    let started = Instant::now();
    debug!("started");

    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);
    let grace = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(grace);
    let mut grace_armed = false;
    let mut wait = ctx.docker.wait_container(id, None);
    let mut stopped: Option<EndReason> = None;
    let mut exited = false;
    let mut output_done = false;
    let mut wait_error = None;

    while !(exited && output_done) {
        tokio::select! {
            biased;
            reason = stop.fired(), if stopped.is_none() && !exited => {
                stopped = Some(reason);
                kill(ctx, id, "cancelled").await;
                grace.as_mut().reset((Instant::now() + KILL_GRACE).into());
                grace_armed = true;
            }
            _ = &mut deadline, if stopped.is_none() && !exited => {
                stopped = Some(EndReason::TimedOut);
                kill(ctx, id, "deadline passed").await;
                grace.as_mut().reset((Instant::now() + KILL_GRACE).into());
                grace_armed = true;
            }
            item = output.next(), if !output_done => match item {
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                    out.stdout.push(&message);
                }
                Some(Ok(LogOutput::StdErr { message })) => out.stderr.push(&message),
                Some(Ok(LogOutput::StdIn { .. })) => {}
                Some(Err(e)) => {
                    debug!(error = %e, "output stream ended with an error");
                    output_done = true;
                }
                None => {
                    debug!(after_start_ms = started.elapsed().as_millis() as u64, "output ended");
                    output_done = true;
                }
            },
            w = wait.next(), if !exited => {
                exited = true;
                match w {
                    Some(Ok(r)) => out.exit_code = Some(r.status_code),
                    Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                        out.exit_code = Some(code);
                    }
                    Some(Err(e)) => wait_error = Some(e),
                    None => {}
                }
                debug!(
                    after_start_ms = started.elapsed().as_millis() as u64,
                    exit_code = ?out.exit_code,
                    "exited"
                );
                grace.as_mut().reset((Instant::now() + DRAIN_GRACE).into());
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
    } else if let Some(e) = wait_error {
        return Err(ctx.err("wait", e));
    }
    Ok(out)
}

/// SIGKILL the container; "not running" and "no such container" are fine.
async fn kill(ctx: &Ctx, id: &str, why: &str) {
    info!(why, "killing the container");
    let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
    if let Err(e) = ctx.docker.kill_container(id, Some(options)).await
        && !matches!(server_status(&e), Some((404 | 409, _)))
    {
        warn!(error = %e, "kill failed");
    }
}

/// Removes the container when dropped without [`Removal::remove`] having run.
struct Removal {
    docker: Docker,
    id: String,
}

impl Removal {
    async fn remove(mut self, ctx: &Ctx) -> Result<(), DockerError> {
        let id = std::mem::take(&mut self.id);
        let r = remove_now(&self.docker, &id)
            .await
            .map_err(|e| ctx.err("remove", e));
        if r.is_ok() {
            debug!("removed");
        }
        r
    }
}

impl Drop for Removal {
    fn drop(&mut self) {
        if !self.id.is_empty() {
            spawn_removal(self.docker.clone(), std::mem::take(&mut self.id));
        }
    }
}

/// Remove `id` (force), retrying briefly; a container that is already gone counts as removed, and one
/// whose removal someone else started is waited for.
pub(crate) async fn remove_now(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    let mut attempt = 0u32;
    loop {
        match docker.remove_container(id, Some(remove_options())).await {
            Ok(()) => return Ok(()),
            Err(e) => match server_status(&e) {
                Some((404, _)) => return Ok(()),
                Some((409, m)) if m.contains("already in progress") => {
                    return wait_gone(docker, id).await;
                }
                _ if attempt < 2 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                _ => return Err(e),
            },
        }
    }
}

/// Poll until `id` no longer exists (bounded by [`REMOVAL_WAIT`]).
async fn wait_gone(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    let until = Instant::now() + REMOVAL_WAIT;
    loop {
        match docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Err(e) if matches!(server_status(&e), Some((404, _))) => return Ok(()),
            Err(e) => return Err(e),
            Ok(_) if Instant::now() >= until => {
                return Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409,
                    message: format!(
                        "container {id} was still being removed after {REMOVAL_WAIT:?}"
                    ),
                });
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Remove `id` in the background, from a short-lived thread with its own runtime, so that it works even while
/// the caller's runtime is shutting down. Used by drop guards only.
pub(crate) fn spawn_removal(docker: Docker, id: String) {
    if id.is_empty() {
        return;
    }
    warn!(container = %id, "removing the container from a drop guard");
    let spawned = std::thread::Builder::new()
        .name("kat-docker-remove".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!(container = %id, error = %e, "no runtime to remove the container with");
                    return;
                }
            };
            if let Err(e) = rt.block_on(remove_now(&docker, &id)) {
                warn!(container = %id, error = %e, "could not remove the container");
            }
        });
    if let Err(e) = spawned {
        warn!(error = %e, "could not spawn the removal thread");
    }
}
