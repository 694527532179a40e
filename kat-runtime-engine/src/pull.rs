//! Pulling a missing image once, bounded by the run's timeout and stop signal, as every engine does it.

use std::future::Future;
use std::time::Duration;

use tracing::info;

use crate::{Bounded, EngineKind, RuntimeError, StopSignal, bounded};

/// Pull `image` with `pulled` (the engine's pull, driven to its end: `Ok(None)` when the image is there,
/// `Ok(Some(reason))` when the engine reported a failed pull in its answer), bounded by `timeout` and `stop`.
/// `classify` turns the API client's error into the runtime error (connection failures stay what they are;
/// any other API error means the image is unavailable).
///
/// ```no_run
/// # async fn demo<K: kat_runtime_engine::EngineKind>(
/// #     stop: &kat_runtime_engine::StopSignal,
/// #     pull: impl std::future::Future<Output = Result<(), K::ApiError>>,
/// #     classify: impl FnOnce(K::ApiError) -> kat_runtime_engine::RuntimeError<K>,
/// # ) -> Result<(), kat_runtime_engine::RuntimeError<K>> {
/// use std::time::Duration;
/// kat_runtime_engine::pull_image(
///     "kat-busybox:latest",
///     Duration::from_secs(60),
///     stop,
///     async { pull.await.map(|()| None) },
///     classify,
/// )
/// .await
/// # }
/// ```
///
/// # Errors
/// [`RuntimeError::ImageUnavailable`] naming the image when the pull fails or does not finish within
/// `timeout`, [`RuntimeError::Cancelled`] when `stop` fires first, and what `classify` makes of a
/// connection failure.
pub async fn pull_image<K: EngineKind>(
    image: &str,
    timeout: Duration,
    stop: &StopSignal,
    pulled: impl Future<Output = Result<Option<String>, K::ApiError>>,
    classify: impl FnOnce(K::ApiError) -> RuntimeError<K>,
) -> Result<(), RuntimeError<K>> {
    info!(image, "image not present locally; pulling it");
    let unavailable = |reason: String| RuntimeError::ImageUnavailable {
        image: image.to_string(),
        reason,
    };
    match bounded(pulled, timeout, stop).await {
        Bounded::Done(Ok(None)) => Ok(()),
        Bounded::Done(Ok(Some(error))) => Err(unavailable(error)),
        Bounded::Done(Err(e)) => match classify(e) {
            RuntimeError::Api { source, .. } => Err(unavailable(source.to_string())),
            other => Err(other),
        },
        Bounded::TimedOut => Err(unavailable(format!(
            "the pull did not finish within {timeout:?}"
        ))),
        Bounded::Stopped => Err(RuntimeError::Cancelled),
    }
}
