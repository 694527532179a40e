//! The Podman service's calls for the runtime written once ([`EngineCalls`]): the capabilities, create
//! (pulling a missing image once), attach, start, wait, kill and remove a container, list ours, and the volume
//! helper's archive calls (in `entrypoint.rs`).
//!
//! The life of a run around these calls (attach before start, the deadline and the cancellation, removal on
//! every path, a dropped caller included) is [`kat_runtime_engine::run_container`], the same as the
//! Docker runtime's. Podman specifics: libpod's attach (before the start) initialises the container
//! (`runc create`), so the start that follows only runs it; the exit code comes from libpod's wait, polled
//! every [`WAIT_INTERVAL`] instead of the default 250 ms; force removal uses a stop timeout of 0 (SIGKILL at
//! once, not SIGTERM and 10 s).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use kat_core::runtime::{Capabilities, ContainerSpec, LABEL_MANAGED, ManagedContainer};
use kat_runtime_engine::{
    EngineCalls, LABEL_HELPER, Output, OutputStream, REMOVAL_WAIT, RemoveAttempt, StopSignal,
    listed_container, pull_image, remove_until_gone,
};
use podman_api::Podman;
use podman_api::conn::TtyChunk;
use podman_api::opts::{
    ContainerAttachOpts, ContainerDeleteOpts, ContainerListFilter, ContainerListOpts, PullOpts,
};
use tracing::{debug, warn};

use crate::HostInfo;
use crate::api::Raw;
use crate::error::{PodmanError, classify, status};
use crate::spec::{Ulimits, create_body};

/// How often libpod's wait polls the container's state (its default, 250 ms, would add that much to
/// every run).
pub(crate) const WAIT_INTERVAL: &str = "10ms";

/// The service's calls: the podman-api client, the raw libpod client, the socket for messages, the libpod
/// API version in use, and the ulimits containers get.
#[derive(Debug, Clone)]
pub(crate) struct PodmanCalls {
    pub(crate) podman: Podman,
    pub(crate) raw: Raw,
    pub(crate) socket: Arc<str>,
    pub(crate) api_version: Arc<str>,
    pub(crate) ulimits: Ulimits,
}

/// Whether the service said the image is missing (libpod: 500 "image not known"; 404 in other versions).
pub(crate) fn is_no_such_image(e: &podman_api::Error) -> bool {
    matches!(status(e), Some((404 | 500, m)) if m.contains("image not known") || m.contains("no such image"))
}

impl PodmanCalls {
    /// The containers, in every state, that `filter` (a label filter) selects.
    async fn list_labelled(
        &self,
        filter: ContainerListFilter,
    ) -> Result<Vec<ManagedContainer>, PodmanError> {
        let opts = ContainerListOpts::builder()
            .all(true)
            .filter([filter])
            .build();
        let list = self
            .podman
            .containers()
            .list(&opts)
            .await
            .map_err(|e| self.err("list", e))?;
        let containers = list.into_iter().filter_map(|c| {
            listed_container(
                c.id,
                c.names,
                c.labels.as_ref(),
                c.state.unwrap_or_default(),
            )
        });
        Ok(containers.collect())
    }

    pub(crate) fn err(&self, op: &'static str, e: podman_api::Error) -> PodmanError {
        classify(op, &self.socket, e)
    }

    /// Pull `image` once, bounded by `timeout` and the stop signal. libpod answers a failed pull with 200
    /// and an `error` in the streamed report.
    async fn pull(
        &self,
        image: &str,
        timeout: Duration,
        stop: &StopSignal,
    ) -> Result<(), PodmanError> {
        let images = self.podman.images();
        let opts = PullOpts::builder().reference(image).quiet(true).build();
        let pulled = async {
            let mut stream = images.pull(&opts);
            while let Some(item) = stream.next().await {
                if let Some(error) = item?.error {
                    return Ok(Some(error));
                }
            }
            Ok(None)
        };
        pull_image(image, timeout, stop, pulled, |e| self.err("pull", e)).await
    }

    /// What the service reports about its host (see [`HostInfo`](crate::HostInfo)).
    pub(crate) async fn host_info(&self) -> Result<HostInfo, PodmanError> {
        let info = self.podman.info().await.map_err(|e| self.err("info", e))?;
        let host = info.host.ok_or_else(|| PodmanError::Unexpected {
            op: "info",
            message: "no host section".into(),
        })?;
        let rootless = host
            .security
            .as_ref()
            .and_then(|s| s.rootless)
            .unwrap_or(false);
        let uid_map = host
            .id_mappings
            .as_ref()
            .and_then(|m| m.uidmap.as_ref())
            .is_some_and(|m| !m.is_empty());
        let cgroup_version = host.cgroup_version.unwrap_or_default();
        let cgroup_controllers = host.cgroup_controllers.unwrap_or_default();
        let pids_limit =
            cgroup_controllers.iter().any(|c| c == "pids") && !(rootless && cgroup_version == "v1");
        Ok(HostInfo {
            version: info
                .version
                .and_then(|v| v.version)
                .unwrap_or_else(|| "unknown".to_string()),
            rootless,
            user_namespaces: rootless || uid_map,
            cgroup_version,
            cgroup_manager: host.cgroup_manager.unwrap_or_default(),
            cgroup_controllers,
            pids_limit,
            oci_runtime: host.oci_runtime.and_then(|r| r.name).unwrap_or_default(),
        })
    }
}

#[async_trait]
impl EngineCalls for PodmanCalls {
    type Error = PodmanError;

    async fn capabilities(&self) -> Result<Capabilities, PodmanError> {
        let host = self.host_info().await?;
        Ok(Capabilities {
            name: "podman".to_string(),
            engine_version: host.version,
            rootless: host.rootless,
            user_namespaces: host.user_namespaces,
            pids_limit: host.pids_limit,
            named_volumes: true,
            // Rootless Podman's host network is the host's own network namespace (unlike rootless dockerd's).
            host_network: true,
        })
    }

    async fn create(
        &self,
        name: &str,
        spec: &ContainerSpec,
        stop: &StopSignal,
    ) -> Result<String, PodmanError> {
        let body = create_body(spec, name, self.ulimits)?;
        let created = match self.raw.create_container(&body).await {
            Ok(c) => c,
            Err(e) if is_no_such_image(&e) => {
                self.pull(&spec.image, spec.timeout, stop).await?;
                self.raw
                    .create_container(&body)
                    .await
                    .map_err(|e| self.err("create", e))?
            }
            Err(e) => return Err(self.err("create", e)),
        };
        for w in created.warnings.iter().flatten().filter(|w| !w.is_empty()) {
            debug!(warning = %w, "engine warning on create");
        }
        Ok(created.id)
    }

    async fn ensure_image(
        &self,
        image: &str,
        timeout: Duration,
        stop: &StopSignal,
    ) -> Result<(), PodmanError> {
        match self.podman.images().get(image).inspect().await {
            Ok(_) => Ok(()),
            Err(e) if is_no_such_image(&e) || matches!(status(&e), Some((404, _))) => {
                self.pull(image, timeout, stop).await
            }
            Err(e) => Err(self.err("inspect image", e)),
        }
    }

    async fn attach(&self, id: &str) -> Result<OutputStream, PodmanError> {
        // libpod's attach, not the docker-compatible logs (whose `follow` truncates output). It initialises
        // the container: that is where the OCI runtime sets the rlimits.
        let opts = ContainerAttachOpts::builder()
            .stdout(true)
            .stderr(true)
            .build();
        let attach = self
            .podman
            .containers()
            .get(id)
            .attach(&opts)
            .await
            .map_err(|e| match status(&e) {
                Some((_, m)) if m.contains("error setting rlimit") => PodmanError::UlimitsRefused {
                    nofile: self.ulimits.nofile,
                    nproc: self.ulimits.nproc,
                    message: m.to_string(),
                },
                _ => self.err("attach", e),
            })?;
        let (reader, _stdin) = attach.split();
        // stdout and stderr arrive as separate frames (no tty).
        Ok(reader
            .map(|item| match item {
                Ok(TtyChunk::StdOut(b)) => Ok(Output::Stdout(Bytes::from(b))),
                Ok(TtyChunk::StdErr(b)) => Ok(Output::Stderr(Bytes::from(b))),
                Ok(TtyChunk::StdIn(_)) => Ok(Output::Other),
                Err(e) => Err(e.to_string()),
            })
            .boxed())
    }

    async fn start(&self, id: &str) -> Result<(), PodmanError> {
        self.podman
            .containers()
            .get(id)
            .start(None)
            .await
            .map_err(|e| self.err("start", e))
    }

    async fn wait(&self, id: &str) -> Result<Option<i64>, PodmanError> {
        self.raw
            .wait(id, WAIT_INTERVAL)
            .await
            .map_err(|e| self.err("wait", e))
    }

    async fn kill(&self, id: &str) {
        if let Err(e) = self.podman.containers().get(id).send_signal("KILL").await
            && !matches!(status(&e), Some((404 | 409, _)))
        {
            warn!(error = %e, "kill failed");
        }
    }

    async fn remove(&self, id: &str) -> Result<(), PodmanError> {
        let container = self.podman.containers().get(id);
        let opts = ContainerDeleteOpts::builder()
            .force(true)
            .volumes(true)
            .timeout(0)
            .build();
        remove_until_gone(
            || async {
                match container.delete(&opts).await {
                    Ok(()) => Ok(RemoveAttempt::Removed),
                    Err(e) => match status(&e) {
                        Some((404, _)) => Ok(RemoveAttempt::Gone),
                        Some((_, m)) if m.contains("no such container") => Ok(RemoveAttempt::Gone),
                        Some((_, m)) if m.contains("being removed") => {
                            Ok(RemoveAttempt::InProgress)
                        }
                        _ => Err(e),
                    },
                }
            },
            || container.exists(),
            || {
                podman_api::Error::StringError(format!(
                    "container {id} was still being removed after {REMOVAL_WAIT:?}"
                ))
            },
        )
        .await
        .map_err(|e| self.err("remove", e))
    }

    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, PodmanError> {
        self.list_labelled(ContainerListFilter::LabelKeyVal(
            LABEL_MANAGED.to_string(),
            "true".to_string(),
        ))
        .await
    }

    async fn list_helpers(&self) -> Result<Vec<ManagedContainer>, PodmanError> {
        self.list_labelled(ContainerListFilter::LabelKey(LABEL_HELPER.to_string()))
            .await
    }

    async fn ensure_volume(&self, volume: &str) -> Result<(), PodmanError> {
        crate::entrypoint::ensure_volume(self, volume).await
    }

    async fn create_helper(&self, volume: &str, deployment: &str) -> Result<String, PodmanError> {
        crate::entrypoint::create_helper(self, volume, deployment).await
    }

    async fn stat(&self, container: &str, path: &str) -> Result<Option<(u64, u32)>, PodmanError> {
        let stat = self
            .raw
            .stat(container, path)
            .await
            .map_err(|e| self.err("stat of the entrypoint", e))?;
        Ok(stat.map(|s| (s.size, s.mode)))
    }

    async fn read_archive(
        &self,
        container: &str,
        path: &str,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, PodmanError> {
        crate::entrypoint::read_archive(self, container, path, limit).await
    }

    async fn upload(&self, container: &str, dir: &str, tar: Vec<u8>) -> Result<(), PodmanError> {
        self.podman
            .containers()
            .get(container)
            .copy_to(dir, hyper014::Body::from(tar))
            .await
            .map_err(|e| self.err("upload of the entrypoint", e))
    }
}
