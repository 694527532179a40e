//! The entrypoint volume's engine calls: the volume, a helper container that is created (never started) from
//! a tiny local image, and the archive API on it. What to write when (once per binary content) is kat-runtime-engine's
//! [`prepare_entrypoint`](kat_runtime_engine::prepare_entrypoint).

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions, VolumeCreateRequest,
};
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    DownloadFromContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures::StreamExt;
use kat_core::runtime::{ENTRYPOINT_DIR, LABEL_DEPLOYMENT};
use kat_runtime_engine::{HELPER_IMAGE, LABEL_HELPER, binary_path, helper_image_tar};
use tracing::info;

use crate::error::{DockerError, server_status};
use crate::run::DockerCalls;

/// Import [`HELPER_IMAGE`] into the engine.
async fn import_helper_image(ctx: &DockerCalls) -> Result<(), DockerError> {
    let (repo, tag) = HELPER_IMAGE
        .split_once(':')
        .unwrap_or((HELPER_IMAGE, "latest"));
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .build();
    let tar = helper_image_tar().map_err(|e| DockerError::Unexpected {
        op: "building the helper image",
        message: e.to_string(),
    })?;
    let body = bollard::body_full(tar.into());
    let mut stream = ctx.docker.create_image(Some(options), Some(body), None);
    while let Some(item) = stream.next().await {
        item.map_err(|e| ctx.err("import of the helper image", e))?;
    }
    info!(image = HELPER_IMAGE, "imported the volume helper image");
    Ok(())
}

/// Create the volume (idempotent in the engine), labelled like the helpers.
pub(crate) async fn ensure_volume(ctx: &DockerCalls, volume: &str) -> Result<(), DockerError> {
    ctx.docker
        .create_volume(VolumeCreateRequest {
            name: Some(volume.to_string()),
            labels: Some(HashMap::from([(
                LABEL_HELPER.to_string(),
                "entrypoint".to_string(),
            )])),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|e| ctx.err("create of the entrypoint volume", e))
}

/// A created (never started) helper container of `deployment` with `volume` mounted read-write at
/// [`ENTRYPOINT_DIR`].
pub(crate) async fn create_helper(
    ctx: &DockerCalls,
    volume: &str,
    deployment: &str,
) -> Result<String, DockerError> {
    let name = kat_runtime_engine::helper_name();
    let body = ContainerCreateBody {
        image: Some(HELPER_IMAGE.to_string()),
        cmd: Some(vec![binary_path()]),
        labels: Some(HashMap::from([
            (LABEL_HELPER.to_string(), "entrypoint".to_string()),
            (LABEL_DEPLOYMENT.to_string(), deployment.to_string()),
        ])),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_string()),
            mounts: Some(vec![Mount {
                target: Some(ENTRYPOINT_DIR.to_string()),
                source: Some(volume.to_string()),
                typ: Some(MountType::VOLUME),
                read_only: Some(false),
                volume_options: Some(MountVolumeOptions {
                    no_copy: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = || Some(CreateContainerOptionsBuilder::new().name(&name).build());
    let created = match ctx.docker.create_container(options(), body.clone()).await {
        Ok(c) => c,
        Err(e) if is_no_such_image(&e) => {
            import_helper_image(ctx).await?;
            ctx.docker
                .create_container(options(), body)
                .await
                .map_err(|e| ctx.err("create (volume helper)", e))?
        }
        Err(e) => return Err(ctx.err("create (volume helper)", e)),
    };
    Ok(created.id)
}

/// The size and mode of `path` in `container`.
pub(crate) async fn stat(
    ctx: &DockerCalls,
    container: &str,
    path: &str,
) -> Result<Option<(u64, u32)>, DockerError> {
    let options = ContainerArchiveInfoOptionsBuilder::new().path(path).build();
    match ctx
        .docker
        .get_container_archive_info(container, Some(options))
        .await
    {
        Ok(stat) => Ok(u64::try_from(stat.size)
            .ok()
            .map(|size| (size, stat.file_mode))),
        Err(e) if matches!(server_status(&e), Some((404, _))) => Ok(None),
        Err(e) => Err(ctx.err("stat of the entrypoint", e)),
    }
}

/// A tar of `path` in `container`, at most `limit` bytes.
pub(crate) async fn read_archive(
    ctx: &DockerCalls,
    container: &str,
    path: &str,
    limit: usize,
) -> Result<Option<Vec<u8>>, DockerError> {
    let options = DownloadFromContainerOptionsBuilder::new()
        .path(path)
        .build();
    let mut stream = ctx.docker.download_from_container(container, Some(options));
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) if archive.len() + bytes.len() > limit => return Ok(None),
            Ok(bytes) => archive.extend_from_slice(&bytes),
            Err(e) if matches!(server_status(&e), Some((404, _))) => return Ok(None),
            Err(e) => return Err(ctx.err("read of the entrypoint marker", e)),
        }
    }
    Ok(Some(archive))
}

/// Extract `tar` into `dir` of `container`.
pub(crate) async fn upload(
    ctx: &DockerCalls,
    container: &str,
    dir: &str,
    tar: Vec<u8>,
) -> Result<(), DockerError> {
    let options = UploadToContainerOptionsBuilder::new().path(dir).build();
    ctx.docker
        .upload_to_container(container, Some(options), bollard::body_full(tar.into()))
        .await
        .map_err(|e| ctx.err("upload of the entrypoint", e))
}

/// Whether the engine said the image is missing.
pub(crate) fn is_no_such_image(e: &bollard::errors::Error) -> bool {
    matches!(server_status(e), Some((404, m)) if m.contains("No such image"))
}

/// Remove options used for every container we remove: force (kill first), and anonymous volumes too.
pub(crate) fn remove_options() -> bollard::query_parameters::RemoveContainerOptions {
    RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build()
}
