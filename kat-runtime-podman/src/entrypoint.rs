//! The entrypoint volume's service calls: the volume, a helper container that is created (never started)
//! from a tiny local image, and reading an archive from it. What to write when (once per binary content) is
//! kat-runtime-engine's [`prepare_entrypoint`](kat_runtime_engine::prepare_entrypoint).

use futures::StreamExt;
use kat_core::runtime::{ENTRYPOINT_DIR, LABEL_DEPLOYMENT};
use kat_runtime_engine::{HELPER_IMAGE, LABEL_HELPER, binary_path, helper_image_tar};
use podman_api::opts::{ImageImportOpts, VolumeCreateOpts};
use serde_json::json;
use tracing::info;

use crate::error::{PodmanError, status};
use crate::run::{PodmanCalls, is_no_such_image};

/// Import [`HELPER_IMAGE`] into the service's image store.
async fn import_helper_image(ctx: &PodmanCalls) -> Result<(), PodmanError> {
    let tar = helper_image_tar().map_err(|e| PodmanError::Unexpected {
        op: "building the helper image",
        message: e.to_string(),
    })?;
    let report = ctx
        .podman
        .images()
        .import(
            &ImageImportOpts::builder().reference(HELPER_IMAGE).build(),
            tar,
        )
        .await
        .map_err(|e| ctx.err("import of the helper image", e))?;
    if let Some(error) = report.error {
        return Err(PodmanError::Unexpected {
            op: "import of the helper image",
            message: error,
        });
    }
    info!(image = HELPER_IMAGE, "imported the volume helper image");
    Ok(())
}

/// Create `volume` unless it exists, labelled like the helpers.
pub(crate) async fn ensure_volume(ctx: &PodmanCalls, volume: &str) -> Result<(), PodmanError> {
    let volumes = ctx.podman.volumes();
    if volumes
        .get(volume)
        .exists()
        .await
        .map_err(|e| ctx.err("inspect of the entrypoint volume", e))?
    {
        return Ok(());
    }
    let opts = VolumeCreateOpts::builder()
        .name(volume)
        .labels([(LABEL_HELPER, "entrypoint")])
        .build();
    match volumes.create(&opts).await {
        Ok(_) => Ok(()),
        // Created by someone else in between.
        Err(e) if matches!(status(&e), Some((_, m)) if m.contains("already exists")) => Ok(()),
        Err(e) => Err(ctx.err("create of the entrypoint volume", e)),
    }
}

/// A created (never started) helper container of `deployment` with `volume` mounted read-write at
/// [`ENTRYPOINT_DIR`].
pub(crate) async fn create_helper(
    ctx: &PodmanCalls,
    volume: &str,
    deployment: &str,
) -> Result<String, PodmanError> {
    let body = json!({
        "name": kat_runtime_engine::helper_name(),
        "image": HELPER_IMAGE,
        "command": [binary_path()],
        "labels": { LABEL_HELPER: "entrypoint", LABEL_DEPLOYMENT: deployment },
        "netns": { "nsmode": "none" },
        "volumes": [{ "Name": volume, "Dest": ENTRYPOINT_DIR, "Options": ["rw", "nocopy"] }],
    });
    let created = match ctx.raw.create_container(&body).await {
        Ok(c) => c,
        Err(e) if is_no_such_image(&e) => {
            import_helper_image(ctx).await?;
            ctx.raw
                .create_container(&body)
                .await
                .map_err(|e| ctx.err("create (volume helper)", e))?
        }
        Err(e) => return Err(ctx.err("create (volume helper)", e)),
    };
    Ok(created.id)
}

/// A tar of `path` in `container`, at most `limit` bytes.
pub(crate) async fn read_archive(
    ctx: &PodmanCalls,
    container: &str,
    path: &str,
    limit: usize,
) -> Result<Option<Vec<u8>>, PodmanError> {
    let handle = ctx.podman.containers().get(container);
    let mut stream = Box::pin(handle.copy_from(path));
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) if archive.len() + bytes.len() > limit => return Ok(None),
            Ok(bytes) => archive.extend_from_slice(&bytes),
            Err(e) if matches!(status(&e), Some((404, _))) => return Ok(None),
            Err(e) => return Err(ctx.err("read of the entrypoint marker", e)),
        }
    }
    Ok(Some(archive))
}
