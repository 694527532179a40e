//! Docker-specific behaviour beyond the shared conformance suite, against the real dockerd: what the engine
//! itself records about our containers (inspect) and the reported capabilities against `docker info`, plus
//! the engine-agnostic cases of `kat_runtime_engine::testing` (names, start failures, bad inputs,
//! pre-cancelled runs, 8 MB per stream drained, a few MB per stream arriving whole).
//!
//! Needs `scripts/engines.sh docker && scripts/test-images.sh` (see `tests/common`).

mod common;

use bollard::query_parameters::InspectContainerOptions;
use common::{IMAGE, runtime};
use kat_core::runtime::{ContainerRuntime, LABEL_MANAGED, LABEL_TASK};
use kat_runtime_engine::testing::InspectCase;

kat_runtime_engine::runtime_extra_tests!(common::runtime, common::IMAGE);

/// The engine records the hardened host config, our labels and the read-only entrypoint mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_the_hardened_config() {
    let Some(rt) = runtime().await else { return };
    let case =
        InspectCase::start(&rt, IMAGE, "kat-test-entrypoint-inspect", "docker-inspect").await;
    let task = case.task;
    let info = rt
        .docker()
        .inspect_container(&case.container.id, None::<InspectContainerOptions>)
        .await
        .expect("inspect");
    case.stop(&rt).await;

    let config = info.config.expect("config");
    assert_eq!(
        config.entrypoint,
        Some(vec!["/plugin/entrypoint".to_string()])
    );
    assert_eq!(
        config.cmd,
        Some(vec!["sleep".to_string(), "30".to_string()])
    );
    assert_eq!(config.user.as_deref(), Some("65534:65534"));
    assert_eq!(config.tty, Some(false));
    let labels = config.labels.expect("labels");
    assert_eq!(labels.get(LABEL_MANAGED).map(String::as_str), Some("true"));
    assert_eq!(labels.get(LABEL_TASK), Some(&task.to_string()));

    let hc = info.host_config.expect("host config");
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(hc.cap_add, Some(vec!["NET_RAW".to_string()]));
    assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_string()]));
    assert_eq!(hc.readonly_rootfs, Some(true));
    assert_eq!(hc.privileged, Some(false));
    assert_eq!(hc.pids_limit, Some(77));
    assert_eq!(hc.memory, Some(256 << 20));
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    assert_eq!(hc.network_mode.as_deref(), Some("host"));
    assert_eq!(hc.auto_remove, Some(false));
    assert_eq!(
        hc.tmpfs.expect("tmpfs").get("/tmp").map(String::as_str),
        Some("rw,nosuid,nodev,noexec,size=8388608,mode=1777")
    );
    assert_eq!(
        hc.log_config.and_then(|l| l.typ).as_deref(),
        Some("none"),
        "output is read over attach; no log files"
    );
    let mounts = info.mounts.expect("mounts");
    let plugin = mounts
        .iter()
        .find(|m| m.destination.as_deref() == Some("/plugin"))
        .expect("the /plugin mount");
    assert_eq!(plugin.name.as_deref(), Some("kat-test-entrypoint-inspect"));
    assert_eq!(plugin.rw, Some(false));
}

/// The capabilities agree with `docker version` and `docker info`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_match_the_engine() {
    let Some(rt) = runtime().await else { return };
    let caps = rt.capabilities().await.expect("capabilities");
    let version = rt.docker().version().await.expect("version");
    let info = rt.docker().info().await.expect("info");
    assert_eq!(caps.name, "docker");
    assert_eq!(Some(caps.engine_version.clone()), version.version);
    assert_eq!(caps.pids_limit, info.pids_limit.unwrap_or(false));
    let security = info.security_options.unwrap_or_default().join(" ");
    assert_eq!(
        caps.rootless,
        security.contains("name=rootless"),
        "{security}"
    );
    assert_eq!(
        caps.user_namespaces,
        security.contains("name=userns"),
        "{security}"
    );
    assert!(caps.named_volumes);
    assert_eq!(caps.host_network, !caps.rootless);
}

/// A helper container left by a process killed while it prepared the entrypoint (created, never
/// removed) is removed by the next `reap_orphans` of its deployment, and only of its deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_volume_helper_is_reaped_by_its_deployment() {
    use std::collections::{HashMap, HashSet};

    use bollard::models::ContainerCreateBody;
    use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptions};
    use kat_core::runtime::{EntrypointBinary, LABEL_DEPLOYMENT};
    use kat_runtime_docker::{HELPER_IMAGE, LABEL_HELPER};

    let Some(rt) = runtime().await else { return };
    // Preparing once imports the helper image (and shows a normal prepare leaves no helper).
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("entrypoint");
    std::fs::write(&path, "#!/bin/sh\nexec \"$@\"\n").expect("write shim");
    let volume = "kat-test-entrypoint-leftover";
    let mine = format!("kat-test-leftover-{}", std::process::id());
    let other = format!("{mine}-other");
    rt.prepare_entrypoint(&EntrypointBinary { path }, volume, &mine)
        .await
        .expect("prepare");
    // What a prepare killed between its create and its remove leaves: one per deployment.
    let leftover = |deployment: String, name: String| {
        let docker = rt.docker().clone();
        async move {
            let body = ContainerCreateBody {
                image: Some(HELPER_IMAGE.to_string()),
                cmd: Some(vec!["/plugin/entrypoint".to_string()]),
                labels: Some(HashMap::from([
                    (LABEL_HELPER.to_string(), "entrypoint".to_string()),
                    (LABEL_DEPLOYMENT.to_string(), deployment.clone()),
                ])),
                ..Default::default()
            };
            docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                    body,
                )
                .await
                .expect("create a leftover helper")
                .id
        }
    };
    let now = kat_runtime_engine::unix_now_secs();
    let stale = leftover(mine.clone(), format!("{mine}-helper")).await;
    let foreign = leftover(other.clone(), format!("{other}-helper")).await;
    // Named as helpers are: one older than the grace (left by a killed process), one younger (another
    // replica of the deployment may be preparing with it right now).
    let old = leftover(
        mine.clone(),
        format!("kat-volume-helper-{}-{}a", now - 1000, std::process::id()),
    )
    .await;
    let young = leftover(
        mine.clone(),
        format!("kat-volume-helper-{now}-{}b", std::process::id()),
    )
    .await;
    let exists = |id: String| {
        let docker = rt.docker().clone();
        async move {
            docker
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
                .is_ok()
        }
    };
    assert!(exists(stale.clone()).await);
    let reaped = rt.reap_orphans(&mine, &HashSet::new()).await.expect("reap");
    assert!(reaped.contains(&stale), "{reaped:?}");
    assert!(!exists(stale).await, "the leftover helper is removed");
    assert!(reaped.contains(&old), "{reaped:?}");
    assert!(
        !exists(old).await,
        "a helper older than the grace is removed"
    );
    assert!(!reaped.contains(&young), "{reaped:?}");
    assert!(
        exists(young.clone()).await,
        "a helper in its grace (another replica's prepare) is left alone"
    );
    assert!(
        exists(foreign.clone()).await,
        "another deployment's helper is left alone"
    );
    assert!(!reaped.contains(&foreign));
    let _ = rt
        .docker()
        .remove_container(
            &young,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    let _ = rt
        .docker()
        .remove_container(
            &foreign,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
}
