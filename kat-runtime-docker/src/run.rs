//! The Docker engine's calls for the runtime written once ([`EngineCalls`]): the capabilities, create
//! (pulling a missing image once), attach, start, wait, kill and remove a container, list ours, and the volume
//! helper's archive calls (in `entrypoint.rs`).
//!
//! The life of a run around these calls (attach before start, the deadline and the cancellation, removal on
//! every path, a dropped caller included) is [`kat_runtime_engine::run_container`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    InspectContainerOptions, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
};
use futures::StreamExt;
use kat_core::runtime::{Capabilities, ContainerSpec, LABEL_MANAGED, ManagedContainer};
use kat_runtime_engine::{
    EngineCalls, LABEL_HELPER, Output, OutputStream, REMOVAL_WAIT, RemoveAttempt, StopSignal,
    listed_container, pull_image, pull_reference, remove_until_gone,
};
use tracing::{debug, warn};

use crate::entrypoint::{is_no_such_image, remove_options};
use crate::error::{DockerError, classify, server_status};
use crate::spec::create_body;

/// The engine's calls: the client, and the socket for messages.
#[derive(Debug, Clone)]
pub(crate) struct DockerCalls {
    pub(crate) docker: Docker,
    pub(crate) socket: Arc<str>,
}

impl DockerCalls {
    /// The containers, in every state, that carry the label `filter` (`key` or `key=value`).
    async fn list_labelled(&self, filter: &str) -> Result<Vec<ManagedContainer>, DockerError> {
        let filters = HashMap::from([("label", vec![filter.to_string()])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.err("list", e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let state = c.state.map(|s| s.to_string()).unwrap_or_default();
                listed_container(c.id, c.names, c.labels.as_ref(), state)
            })
            .collect())
    }

    pub(crate) fn err(&self, op: &'static str, e: bollard::errors::Error) -> DockerError {
        classify(op, &self.socket, e)
    }

    /// Pull `image` once, bounded by `timeout` and the stop signal.
    async fn pull(
        &self,
        image: &str,
        timeout: Duration,
        stop: &StopSignal,
    ) -> Result<(), DockerError> {
        let (from, tag) = pull_reference(image);
        let mut options = CreateImageOptionsBuilder::new().from_image(&from);
        if let Some(tag) = &tag {
            options = options.tag(tag);
        }
        let mut stream = self.docker.create_image(Some(options.build()), None, None);
        let pulled = async {
            while let Some(item) = stream.next().await {
                item?;
            }
            Ok(None)
        };
        pull_image(image, timeout, stop, pulled, |e| self.err("pull", e)).await
    }
}

#[async_trait]
impl EngineCalls for DockerCalls {
    type Error = DockerError;

    async fn capabilities(&self) -> Result<Capabilities, DockerError> {
        let (version, info) = tokio::join!(self.docker.version(), self.docker.info());
        let version = version.map_err(|e| self.err("version", e))?;
        let info = info.map_err(|e| self.err("info", e))?;
        let security = info.security_options.unwrap_or_default();
        let has = |name: &str| {
            security
                .iter()
                .any(|o| o.split(',').any(|kv| kv == format!("name={name}")))
        };
        let rootless = has("rootless");
        Ok(Capabilities {
            name: "docker".to_string(),
            engine_version: version
                .version
                .or(info.server_version)
                .unwrap_or_else(|| "unknown".to_string()),
            rootless,
            user_namespaces: has("userns"),
            pids_limit: info.pids_limit.unwrap_or(false),
            named_volumes: true,
            // Rootless dockerd's "host" network is the network namespace of its rootlesskit, not the host's.
            host_network: !rootless,
        })
    }

    async fn create(
        &self,
        name: &str,
        spec: &ContainerSpec,
        stop: &StopSignal,
    ) -> Result<String, DockerError> {
        let body = create_body(spec)?;
        let options = || Some(CreateContainerOptionsBuilder::new().name(name).build());
        let created = match self.docker.create_container(options(), body.clone()).await {
            Ok(c) => c,
            Err(e) if is_no_such_image(&e) => {
                self.pull(&spec.image, spec.timeout, stop).await?;
                self.docker
                    .create_container(options(), body)
                    .await
                    .map_err(|e| self.err("create", e))?
            }
            Err(e) => return Err(self.err("create", e)),
        };
        for w in created.warnings.iter().filter(|w| !w.is_empty()) {
            debug!(warning = %w, "engine warning on create");
        }
        Ok(created.id)
    }

    async fn ensure_image(
        &self,
        image: &str,
        timeout: Duration,
        stop: &StopSignal,
    ) -> Result<(), DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) if is_no_such_image(&e) => self.pull(image, timeout, stop).await,
            Err(e) => Err(self.err("inspect image", e)),
        }
    }

    async fn attach(&self, id: &str) -> Result<OutputStream, DockerError> {
        let options = AttachContainerOptionsBuilder::new()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .build();
        let attach = self
            .docker
            .attach_container(id, Some(options))
            .await
            .map_err(|e| self.err("attach", e))?;
        // stdout and stderr arrive as separate frames (no tty).
        Ok(attach
            .output
            .map(|item| match item {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    Ok(Output::Stdout(message))
                }
                Ok(LogOutput::StdErr { message }) => Ok(Output::Stderr(message)),
                Ok(LogOutput::StdIn { .. }) => Ok(Output::Other),
                Err(e) => Err(e.to_string()),
            })
            .boxed())
    }

    async fn start(&self, id: &str) -> Result<(), DockerError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| self.err("start", e))
    }

    async fn wait(&self, id: &str) -> Result<Option<i64>, DockerError> {
        match self.docker.wait_container(id, None).next().await {
            Some(Ok(r)) => Ok(Some(r.status_code)),
            // bollard reports a non-zero exit as an error; it is an exit code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                Ok(Some(code))
            }
            Some(Err(e)) => Err(self.err("wait", e)),
            None => Ok(None),
        }
    }

    async fn kill(&self, id: &str) {
        let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        if let Err(e) = self.docker.kill_container(id, Some(options)).await
            && !matches!(server_status(&e), Some((404 | 409, _)))
        {
            warn!(error = %e, "kill failed");
        }
    }

    async fn remove(&self, id: &str) -> Result<(), DockerError> {
        let docker = &self.docker;
        remove_until_gone(
            || async {
                match docker.remove_container(id, Some(remove_options())).await {
                    Ok(()) => Ok(RemoveAttempt::Removed),
                    Err(e) => match server_status(&e) {
                        Some((404, _)) => Ok(RemoveAttempt::Gone),
                        Some((409, m)) if m.contains("already in progress") => {
                            Ok(RemoveAttempt::InProgress)
                        }
                        _ => Err(e),
                    },
                }
            },
            || async {
                match docker
                    .inspect_container(id, None::<InspectContainerOptions>)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if matches!(server_status(&e), Some((404, _))) => Ok(false),
                    Err(e) => Err(e),
                }
            },
            || bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message: format!("container {id} was still being removed after {REMOVAL_WAIT:?}"),
            },
        )
        .await
        .map_err(|e| self.err("remove", e))
    }

    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, DockerError> {
        self.list_labelled(&format!("{LABEL_MANAGED}=true")).await
    }

    async fn list_helpers(&self) -> Result<Vec<ManagedContainer>, DockerError> {
        self.list_labelled(LABEL_HELPER).await
    }

    async fn ensure_volume(&self, volume: &str) -> Result<(), DockerError> {
        crate::entrypoint::ensure_volume(self, volume).await
    }

    async fn create_helper(&self, volume: &str, deployment: &str) -> Result<String, DockerError> {
        crate::entrypoint::create_helper(self, volume, deployment).await
    }

    async fn stat(&self, container: &str, path: &str) -> Result<Option<(u64, u32)>, DockerError> {
        crate::entrypoint::stat(self, container, path).await
    }

    async fn read_archive(
        &self,
        container: &str,
        path: &str,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, DockerError> {
        crate::entrypoint::read_archive(self, container, path, limit).await
    }

    async fn upload(&self, container: &str, dir: &str, tar: Vec<u8>) -> Result<(), DockerError> {
        crate::entrypoint::upload(self, container, dir, tar).await
    }
}
