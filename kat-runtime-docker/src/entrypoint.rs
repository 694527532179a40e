//! Populating the entrypoint volume: once per binary content, through a helper container that is created
//! (never started) from a tiny local image and removed again.

use std::collections::HashMap;
use std::io::Read;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions, VolumeCreateRequest,
};
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    DownloadFromContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures::StreamExt;
use kat_core::runtime::{ENTRYPOINT_DIR, EntrypointBinary, EntrypointMount};
use sha2::{Digest, Sha256};
use tracing::{debug, info};

use crate::error::{DockerError, server_status};
use crate::spec::valid_volume_name;

/// The local image the volume helper containers are created from: one text file, built `FROM scratch` by
/// import, so that no registry and no test image is needed. The tag is its recipe version.
///
/// ```
/// assert_eq!(kat_runtime_docker::HELPER_IMAGE, "kat-volume-helper:1");
/// ```
pub const HELPER_IMAGE: &str = "kat-volume-helper:1";
/// Label on helper containers and on the entrypoint volume (helpers are not plugin containers and carry no
/// `kat.managed`, so the reaper leaves them alone).
///
/// ```
/// assert_ne!(kat_runtime_docker::LABEL_HELPER, kat_core::runtime::LABEL_MANAGED);
/// ```
pub const LABEL_HELPER: &str = "kat.helper";
/// The file next to the entrypoint in the volume holding its sha256 (hex, newline-terminated).
///
/// ```
/// // In a container with the volume mounted: /plugin/entrypoint and /plugin/entrypoint.sha256.
/// assert_eq!(kat_runtime_docker::MARKER_FILE, "entrypoint.sha256");
/// ```
pub const MARKER_FILE: &str = "entrypoint.sha256";
/// The entrypoint's file name in the volume.
const BINARY_FILE: &str = "entrypoint";
/// The most we read back of the marker archive.
const MARKER_LIMIT: usize = 64 * 1024;

/// The binary's content and hash, and the archive to upload (built lazily by [`Binary::archive`]).
pub(crate) struct Binary {
    pub(crate) bytes: Vec<u8>,
    pub(crate) sha256: String,
}

impl Binary {
    /// Read and hash the binary (on a blocking thread: it is a file read plus a hash).
    pub(crate) async fn load(binary: &EntrypointBinary) -> Result<Self, DockerError> {
        let path = binary.path.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::open(&path).map_err(|source| DockerError::ReadBinary {
                path: path.clone(),
                source,
            })?;
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)
                .map_err(|source| DockerError::ReadBinary {
                    path: path.clone(),
                    source,
                })?;
            let sha256 = hex::encode(Sha256::digest(&bytes));
            Ok(Binary { bytes, sha256 })
        })
        .await;
        match res {
            Ok(r) => r,
            Err(e) => Err(DockerError::Task(format!(
                "reading the entrypoint binary: {e}"
            ))),
        }
    }

    /// A tar holding `entrypoint` (mode 0755) and then its marker (so that the marker only appears once the
    /// binary is complete).
    pub(crate) fn archive(&self) -> Result<Vec<u8>, DockerError> {
        let marker = format!("{}\n", self.sha256);
        let mut b = tar::Builder::new(Vec::with_capacity(self.bytes.len() + 4096));
        let add = |b: &mut tar::Builder<Vec<u8>>, name: &str, mode: u32, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, data)
        };
        add(&mut b, BINARY_FILE, 0o755, &self.bytes)
            .and_then(|_| add(&mut b, MARKER_FILE, 0o644, marker.as_bytes()))
            .and_then(|_| b.into_inner())
            .map_err(|e| DockerError::Unexpected {
                op: "building the entrypoint archive",
                message: e.to_string(),
            })
    }
}

/// The tar that [`HELPER_IMAGE`] is imported from.
fn helper_image_tar() -> Result<Vec<u8>, DockerError> {
    let text = b"kat-rs volume helper: containers from this image are created, never started, to reach a volume\n";
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "kat-volume-helper.txt", &text[..])
        .and_then(|_| b.into_inner())
        .map_err(|e| DockerError::Unexpected {
            op: "building the helper image",
            message: e.to_string(),
        })
}

/// Import [`HELPER_IMAGE`] into the engine.
async fn import_helper_image(docker: &Docker, socket: &str) -> Result<(), DockerError> {
    let (repo, tag) = HELPER_IMAGE
        .split_once(':')
        .unwrap_or((HELPER_IMAGE, "latest"));
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .build();
    let body = bollard::body_full(helper_image_tar()?.into());
    let mut stream = docker.create_image(Some(options), Some(body), None);
    while let Some(item) = stream.next().await {
        item.map_err(|e| DockerError::from_bollard("import of the helper image", socket, e))?;
    }
    info!(image = HELPER_IMAGE, "imported the volume helper image");
    Ok(())
}

/// A created (never started) helper container with `volume` mounted read-write at [`ENTRYPOINT_DIR`];
/// removed when dropped.
struct Helper {
    docker: Docker,
    id: String,
}

impl Helper {
    async fn create(docker: &Docker, socket: &str, volume: &str) -> Result<Self, DockerError> {
        let name = crate::spec::container_name("kat-volume-helper");
        let body = ContainerCreateBody {
            image: Some(HELPER_IMAGE.to_string()),
            cmd: Some(vec![format!("{ENTRYPOINT_DIR}/{BINARY_FILE}")]),
            labels: Some(HashMap::from([(
                LABEL_HELPER.to_string(),
                "entrypoint".to_string(),
            )])),
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
        let created = match docker.create_container(options(), body.clone()).await {
            Ok(c) => c,
            Err(e) if is_no_such_image(&e) => {
                import_helper_image(docker, socket).await?;
                docker
                    .create_container(options(), body)
                    .await
                    .map_err(|e| DockerError::from_bollard("create (volume helper)", socket, e))?
            }
            Err(e) => {
                return Err(DockerError::from_bollard(
                    "create (volume helper)",
                    socket,
                    e,
                ));
            }
        };
        Ok(Helper {
            docker: docker.clone(),
            id: created.id,
        })
    }

    /// The sha256 recorded in the volume, when there is one and the binary next to it has `len` bytes.
    async fn installed_sha(&self, socket: &str, len: usize) -> Result<Option<String>, DockerError> {
        let info = self
            .docker
            .get_container_archive_info(
                &self.id,
                Some(
                    ContainerArchiveInfoOptionsBuilder::new()
                        .path(&format!("{ENTRYPOINT_DIR}/{BINARY_FILE}"))
                        .build(),
                ),
            )
            .await;
        match info {
            Ok(stat) if stat.size == len as i64 && stat.file_mode & 0o111 != 0 => {}
            Ok(_) => return Ok(None),
            Err(e) if matches!(server_status(&e), Some((404, _))) => return Ok(None),
            Err(e) => {
                return Err(DockerError::from_bollard(
                    "stat of the entrypoint",
                    socket,
                    e,
                ));
            }
        }
        let mut stream = self.docker.download_from_container(
            &self.id,
            Some(
                DownloadFromContainerOptionsBuilder::new()
                    .path(&format!("{ENTRYPOINT_DIR}/{MARKER_FILE}"))
                    .build(),
            ),
        );
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    archive.extend_from_slice(&bytes);
                    if archive.len() > MARKER_LIMIT {
                        return Ok(None);
                    }
                }
                Err(e) if matches!(server_status(&e), Some((404, _))) => return Ok(None),
                Err(e) => {
                    return Err(DockerError::from_bollard(
                        "read of the entrypoint marker",
                        socket,
                        e,
                    ));
                }
            }
        }
        Ok(read_marker(&archive))
    }

    async fn upload(&self, socket: &str, archive: Vec<u8>) -> Result<(), DockerError> {
        self.docker
            .upload_to_container(
                &self.id,
                Some(
                    UploadToContainerOptionsBuilder::new()
                        .path(ENTRYPOINT_DIR)
                        .build(),
                ),
                bollard::body_full(archive.into()),
            )
            .await
            .map_err(|e| DockerError::from_bollard("upload of the entrypoint", socket, e))
    }
}

impl Helper {
    /// Remove the helper now (the drop guard covers the error paths).
    async fn remove(mut self) {
        let id = std::mem::take(&mut self.id);
        if let Err(e) = crate::run::remove_now(&self.docker, &id).await {
            tracing::warn!(container = %id, error = %e, "could not remove the volume helper");
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if !self.id.is_empty() {
            crate::run::spawn_removal(self.docker.clone(), std::mem::take(&mut self.id));
        }
    }
}

/// The hex sha256 in a tar holding the marker file, if it is well-formed.
fn read_marker(archive: &[u8]) -> Option<String> {
    let mut tar = tar::Archive::new(archive);
    let entries = tar.entries().ok()?;
    for entry in entries {
        let mut entry = entry.ok()?;
        let is_marker = entry
            .path()
            .ok()
            .is_some_and(|p| p.file_name().is_some_and(|n| n == MARKER_FILE));
        if !is_marker {
            continue;
        }
        let mut text = String::new();
        entry
            .by_ref()
            .take(MARKER_LIMIT as u64)
            .read_to_string(&mut text)
            .ok()?;
        let sha = text.trim();
        return (sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| sha.to_ascii_lowercase());
    }
    None
}

/// Whether the engine said the image is missing.
pub(crate) fn is_no_such_image(e: &bollard::errors::Error) -> bool {
    matches!(server_status(e), Some((404, m)) if m.contains("No such image"))
}

/// See [`kat_core::runtime::ContainerRuntime::prepare_entrypoint`].
pub(crate) async fn prepare(
    docker: &Docker,
    socket: &str,
    binary: &EntrypointBinary,
    volume: &str,
) -> Result<EntrypointMount, DockerError> {
    if !valid_volume_name(volume) {
        return Err(DockerError::Spec {
            field: "volume",
            message: format!(
                "not a valid volume name: {volume:?} (letters, digits, `_.-`, starting with a letter or digit)"
            ),
        });
    }
    let bin = Binary::load(binary).await?;
    docker
        .create_volume(VolumeCreateRequest {
            name: Some(volume.to_string()),
            labels: Some(HashMap::from([(
                LABEL_HELPER.to_string(),
                "entrypoint".to_string(),
            )])),
            ..Default::default()
        })
        .await
        .map_err(|e| DockerError::from_bollard("create of the entrypoint volume", socket, e))?;
    let helper = Helper::create(docker, socket, volume).await?;
    let installed = helper.installed_sha(socket, bin.bytes.len()).await?;
    if installed.as_deref() == Some(bin.sha256.as_str()) {
        debug!(volume, sha256 = %bin.sha256, "entrypoint already in the volume");
    } else {
        let archive = bin.archive()?;
        helper.upload(socket, archive).await?;
        info!(volume, sha256 = %bin.sha256, replaced = ?installed, "entrypoint written to the volume");
    }
    helper.remove().await;
    Ok(EntrypointMount {
        volume: volume.to_string(),
        sha256: bin.sha256,
    })
}

/// Remove options used for every container we remove: force (kill first), and anonymous volumes too.
pub(crate) fn remove_options() -> bollard::query_parameters::RemoveContainerOptions {
    RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_holds_the_binary_then_its_marker() {
        let bin = Binary {
            bytes: b"#!/bin/sh\necho hi\n".to_vec(),
            sha256: hex::encode(Sha256::digest(b"#!/bin/sh\necho hi\n")),
        };
        let archive = bin.archive().expect("archive");
        let mut tar = tar::Archive::new(&archive[..]);
        let mut names = Vec::new();
        for e in tar.entries().expect("entries") {
            let e = e.expect("entry");
            names.push((
                e.path().expect("path").display().to_string(),
                e.header().mode().expect("mode"),
            ));
        }
        assert_eq!(
            names,
            vec![
                ("entrypoint".into(), 0o755),
                ("entrypoint.sha256".into(), 0o644)
            ]
        );
        assert_eq!(read_marker(&archive), Some(bin.sha256.clone()));
    }

    #[test]
    fn malformed_markers_are_ignored() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, MARKER_FILE, &b"xyz"[..])
            .expect("append");
        let archive = b.into_inner().expect("tar");
        assert_eq!(read_marker(&archive), None);
        assert_eq!(read_marker(b"not a tar"), None);
    }

    #[test]
    fn helper_image_tar_is_deterministic() {
        assert_eq!(
            helper_image_tar().expect("tar"),
            helper_image_tar().expect("tar")
        );
    }
}
