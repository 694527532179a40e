//! Podman-specific behaviour beyond the shared conformance suite, against the real Podman service: what the
//! service itself records about our containers (inspect), the reported capabilities against `podman info`,
//! exit codes from libpod's wait, the ulimits containers get, the volume helper, plus the engine-agnostic
//! cases of `kat_runtime_engine::testing` (names, start failures, bad inputs, pre-cancelled runs, 8 MB per
//! stream drained, a few MB per stream arriving whole).
//!
//! Needs `eval "$(scripts/engines.sh podman)" && scripts/test-images.sh` (see `tests/common`).

mod common;

use std::time::Duration;

use common::{IMAGE, runtime};
use kat_core::runtime::{
    CancellationToken, ContainerRuntime, EndReason, EntrypointBinary, LABEL_MANAGED, LABEL_TASK,
};
use kat_runtime_engine::testing::{InspectCase, container_of, task_spec};
use kat_runtime_podman::{LABEL_HELPER, PodmanRuntime, Ulimits};
use podman_api::opts::{ContainerListFilter, ContainerListOpts};

kat_runtime_engine::runtime_extra_tests!(common::runtime, common::IMAGE);

/// The service records the hardened config, our labels, ulimits and the read-only entrypoint volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_the_hardened_config() {
    let Some(rt) = runtime().await else { return };
    let case =
        InspectCase::start(&rt, IMAGE, "kat-test-entrypoint-inspect", "podman-inspect").await;
    let task = case.task;
    let info = rt
        .podman()
        .containers()
        .get(&case.container.id)
        .inspect()
        .await
        .expect("inspect");
    let o = case.stop(&rt).await;
    assert_eq!(o.exit_code, Some(137), "SIGKILL");

    let config = info.config.expect("config");
    assert_eq!(
        config.entrypoint.as_deref(),
        Some("/plugin/entrypoint"),
        "libpod shows the entrypoint as a string"
    );
    assert_eq!(
        config.cmd,
        Some(vec!["sleep".to_string(), "30".to_string()])
    );
    assert_eq!(config.user.as_deref(), Some("65534:65534"));
    assert_eq!(config.tty, Some(false));
    let env = config.env.unwrap_or_default();
    assert!(env.contains(&"KAT_VISIBLE=yes".to_string()), "{env:?}");
    assert!(
        !env.iter()
            .any(|e| e.starts_with("http_proxy=") || e.starts_with("HTTP_PROXY=")),
        "no host proxy variables: {env:?}"
    );
    let labels = config.labels.expect("labels");
    assert_eq!(labels.get(LABEL_MANAGED).map(String::as_str), Some("true"));
    assert_eq!(labels.get(LABEL_TASK), Some(&task.to_string()));

    let hc = info.host_config.expect("host config");
    // libpod reports capabilities relative to its default set, which holds NET_RAW: every other default
    // one is dropped, and nothing beyond the defaults is added.
    let cap_drop = hc.cap_drop.unwrap_or_default();
    for cap in [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_KILL",
    ] {
        assert!(cap_drop.contains(&cap.to_string()), "{cap} in {cap_drop:?}");
    }
    assert!(
        !cap_drop.contains(&"CAP_NET_RAW".to_string()),
        "{cap_drop:?}"
    );
    assert_eq!(hc.cap_add.unwrap_or_default(), Vec::<String>::new());
    assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_string()]));
    assert_eq!(hc.readonly_rootfs, Some(true));
    assert_eq!(hc.privileged, Some(false));
    assert_eq!(hc.pids_limit, Some(77));
    assert_eq!(hc.memory, Some(256 << 20));
    assert_eq!(hc.memory_swap, Some(256 << 20));
    assert_eq!(hc.cpu_quota, Some(50_000));
    assert_eq!(hc.cpu_period, Some(100_000));
    assert_eq!(hc.network_mode.as_deref(), Some("host"));
    assert_eq!(hc.auto_remove, Some(false));
    // libpod appends its own `rprivate,tmpcopyup`.
    let tmp = hc.tmpfs.unwrap_or_default().get("/tmp").cloned();
    assert!(
        tmp.as_deref()
            .is_some_and(|t| t.starts_with("rw,nosuid,nodev,noexec,size=8388608,mode=1777")),
        "{tmp:?}"
    );
    assert_eq!(
        hc.log_config.and_then(|l| l.type_).as_deref(),
        Some("none"),
        "output is read over attach; no log files"
    );
    let ulimits: Vec<(String, Option<i64>, Option<i64>)> = hc
        .ulimits
        .unwrap_or_default()
        .into_iter()
        .map(|u| (u.name.unwrap_or_default(), u.soft, u.hard))
        .collect();
    let want = rt.ulimits();
    for (name, value) in [("RLIMIT_NOFILE", want.nofile), ("RLIMIT_NPROC", want.nproc)] {
        let value = i64::try_from(value).expect("a small limit");
        assert!(
            ulimits.contains(&(name.to_string(), Some(value), Some(value))),
            "{name}={value} in {ulimits:?}"
        );
    }
    let mounts = info.mounts.expect("mounts");
    let plugin = mounts
        .iter()
        .find(|m| m.destination.as_deref() == Some("/plugin"))
        .expect("the /plugin mount");
    assert_eq!(plugin.name.as_deref(), Some("kat-test-entrypoint-inspect"));
    assert_eq!(plugin.rw, Some(false));
}

/// The capabilities agree with `podman info`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_match_the_engine() {
    let Some(rt) = runtime().await else { return };
    let caps = rt.capabilities().await.expect("capabilities");
    let info = rt.podman().info().await.expect("info");
    let host = info.host.expect("host");
    assert_eq!(caps.name, "podman");
    assert_eq!(
        Some(caps.engine_version.clone()),
        info.version.and_then(|v| v.version)
    );
    let rootless = host
        .security
        .and_then(|s| s.rootless)
        .expect("rootless flag");
    assert_eq!(caps.rootless, rootless);
    if rootless {
        assert!(caps.user_namespaces);
    }
    let controllers = host.cgroup_controllers.unwrap_or_default();
    assert_eq!(
        caps.pids_limit,
        controllers.contains(&"pids".to_string())
            && !(rootless && host.cgroup_version.as_deref() == Some("v1"))
    );
    assert!(caps.named_volumes);
    assert!(caps.host_network);

    let h = rt.host_info().await.expect("host info");
    assert!(["v1", "v2"].contains(&h.cgroup_version.as_str()), "{h:?}");
    assert!(!h.oci_runtime.is_empty(), "{h:?}");
    assert_eq!(h.pids_limit, caps.pids_limit);
}

/// Exit codes come from libpod's wait as the process left them, 0 to 255, including a shell's 127 and a
/// process killed by a signal (128 + n).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_come_from_the_wait() {
    let Some(rt) = runtime().await else { return };
    for (script, code) in [
        ("exit 0", 0),
        ("exit 42", 42),
        ("exit 255", 255),
        ("no-such-command-kat", 127),
        ("sh -c 'kill -TERM $$'; exit $?", 143),
    ] {
        let (s, task) = task_spec("podman-exit", IMAGE, &["sh", "-c", script]);
        let o = rt
            .run(s, CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"));
        assert_eq!(o.reason, EndReason::Exited, "{script}");
        assert_eq!(o.exit_code, Some(code), "{script}: {o:?}");
        assert!(container_of(&rt, task).await.is_none());
    }
}

/// Containers get the runtime's ulimits (1024 open files and processes by default, lowered to the current
/// hard limits), and configured ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ulimits_are_set_within_the_current_ones() {
    let Some(rt) = runtime().await else { return };
    let d = rt.ulimits();
    assert_eq!(d, Ulimits::default().within_current());
    assert_eq!(
        ulimit_probe(&rt).await.expect("default ulimits"),
        format!("{0} {0} {1} {1}", d.nofile, d.nproc)
    );
    let custom = rt.clone().with_ulimits(Ulimits {
        nofile: 512,
        nproc: 300,
    });
    assert_eq!(
        ulimit_probe(&custom).await.expect("custom ulimits"),
        "512 512 300 300"
    );
}

/// An absurd request is lowered to this process's hard limits. Where the service's own limits are lower
/// still (as for the sandboxed service here: 32768 processes against our 96365), the OCI runtime refuses
/// them: the run then fails with a non-retryable error saying so, and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ulimits_the_service_cannot_grant_are_a_clear_error() {
    let Some(rt) = runtime().await else { return };
    let absurd = rt.clone().with_ulimits(Ulimits {
        nofile: 1 << 40,
        nproc: 1 << 40,
    });
    let lowered = absurd.ulimits();
    assert!(
        lowered.nofile < 1 << 40 && lowered.nproc < 1 << 40,
        "{lowered:?}"
    );
    match ulimit_probe(&absurd).await {
        Ok(out) => assert_eq!(
            out,
            format!("{0} {0} {1} {1}", lowered.nofile, lowered.nproc)
        ),
        Err(e) => {
            let s = e.to_string();
            assert!(!e.is_retryable(), "{s}");
            assert!(s.contains("with_ulimits"), "{s}");
            assert!(s.contains("rlimit"), "{s}");
            eprintln!("the service refused {lowered:?}, as expected here: {s}");
        }
    }
}

/// Run `ulimit` in a container: soft and hard open files, soft and hard processes.
async fn ulimit_probe(rt: &PodmanRuntime) -> kat_core::Result<String> {
    let probe = [
        "sh",
        "-c",
        "echo $(ulimit -Sn) $(ulimit -Hn) $(ulimit -Su) $(ulimit -Hu)",
    ];
    let (s, task) = task_spec("podman-ulimits", IMAGE, &probe);
    let r = rt.run(s, CancellationToken::new()).await;
    assert!(container_of(rt, task).await.is_none(), "left behind");
    let o = r?;
    assert!(o.success(), "{o:?}");
    Ok(String::from_utf8_lossy(&o.stdout_tail).trim().to_string())
}

/// Preparing the entrypoint leaves no helper container behind, and labels the volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_leaves_no_helper_behind() {
    let Some(rt) = runtime().await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("entrypoint");
    std::fs::write(
        &path,
        format!("#!/bin/sh\n# {}\nexec \"$@\"\n", std::process::id()),
    )
    .expect("write shim");
    let volume = "kat-test-entrypoint-helper";
    rt.prepare_entrypoint(&EntrypointBinary { path }, volume, "kat-test-podman")
        .await
        .expect("prepare");
    let helpers = rt
        .podman()
        .containers()
        .list(
            &ContainerListOpts::builder()
                .all(true)
                .filter([ContainerListFilter::LabelKey(LABEL_HELPER.into())])
                .build(),
        )
        .await
        .expect("list");
    // Other tests may be preparing at the same moment; none of those helpers may last.
    for h in helpers {
        let id = h.id.unwrap_or_default();
        let mut gone = false;
        for _ in 0..100 {
            if !rt
                .podman()
                .containers()
                .get(&id)
                .exists()
                .await
                .expect("exists")
            {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "helper {id} left behind");
    }
    let v = rt
        .podman()
        .volumes()
        .get(volume)
        .inspect()
        .await
        .expect("volume");
    assert_eq!(
        v.labels.get(LABEL_HELPER).map(String::as_str),
        Some("entrypoint")
    );
}
