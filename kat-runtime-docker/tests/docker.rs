//! Docker-specific behaviour beyond the shared conformance suite, against the real dockerd: what the engine
//! itself records about our containers (inspect), the reported capabilities against `docker info`, names,
//! start failures and entrypoint preparation errors.
//!
//! Needs `scripts/engines.sh docker && scripts/test-images.sh` (see `tests/common`).

mod common;

use std::time::{Duration, Instant};

use bollard::query_parameters::InspectContainerOptions;
use common::{IMAGE, runtime};
use kat_core::runtime::{
    CancellationToken, ContainerRuntime, ContainerSpec, EntrypointBinary, LABEL_MANAGED,
    LABEL_TASK, NetworkMode,
};
use kat_core::task::TaskId;
use kat_runtime_docker::DockerRuntime;

fn spec(case: &str, argv: &[&str]) -> (ContainerSpec, TaskId) {
    let task = TaskId::new();
    let mut s = ContainerSpec::new(format!("kat-docker-{case}"), IMAGE, argv.iter().copied());
    s.labels.insert(LABEL_TASK.into(), task.to_string());
    s.timeout = Duration::from_secs(60);
    (s, task)
}

async fn container_of(
    rt: &DockerRuntime,
    task: TaskId,
) -> Option<kat_core::runtime::ManagedContainer> {
    rt.list_managed()
        .await
        .expect("list_managed")
        .into_iter()
        .find(|c| c.task == Some(task))
}

/// The engine records the hardened host config, our labels and the read-only entrypoint mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_the_hardened_config() {
    let Some(rt) = runtime().await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("entrypoint");
    std::fs::write(&path, "#!/bin/sh\nexec \"$@\"\n").expect("write shim");
    let mount = rt
        .prepare_entrypoint(&EntrypointBinary { path }, "kat-test-entrypoint-inspect")
        .await
        .expect("prepare");

    let (mut s, task) = spec("inspect", &["sleep", "30"]);
    s.entrypoint = Some(mount);
    s.network = NetworkMode::Host;
    s.hardening.cap_add = vec!["NET_RAW".into()];
    s.limits.pids = Some(77);
    s.limits.memory_bytes = Some(256 << 20);
    s.limits.nano_cpus = Some(500_000_000);
    s.hardening.tmpfs_bytes = 8 << 20;
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (rt, cancel) = (rt.clone(), cancel.clone());
        async move { rt.run(s, cancel).await }
    });

    let deadline = Instant::now() + Duration::from_secs(15);
    let c = loop {
        if let Some(c) = container_of(&rt, task).await
            && c.state == "running"
        {
            break c;
        }
        assert!(Instant::now() < deadline, "the container never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(c.name.starts_with("kat-docker-inspect-"), "{}", c.name);
    let info = rt
        .docker()
        .inspect_container(&c.id, None::<InspectContainerOptions>)
        .await
        .expect("inspect");
    cancel.cancel();

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

    let o = run.await.expect("join").expect("run");
    assert_eq!(o.reason, kat_core::runtime::EndReason::Cancelled);
    assert!(container_of(&rt, task).await.is_none());
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

/// Names with characters the engine rejects are made valid, and equal requested names do not collide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_and_duplicate_names_run() {
    let Some(rt) = runtime().await else { return };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (mut s, _) = spec("names", &["echo", "ok"]);
        s.name = "plugin/with spaces:ü#1".into();
        runs.push(rt.run(s, CancellationToken::new()));
    }
    for r in futures::future::join_all(runs).await {
        let o = r.expect("a run with an odd name");
        assert!(o.success(), "{o:?}");
        assert_eq!(o.stdout_tail, b"ok\n");
    }
}

/// A command the image does not have fails the run with an error naming it (from the engine's start), and
/// the created container is removed all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_failure_is_an_error_and_removes() {
    let Some(rt) = runtime().await else { return };
    let (s, task) = spec("no-such-command", &["/no/such/command"]);
    let e = rt
        .run(s, CancellationToken::new())
        .await
        .expect_err("a missing executable cannot start");
    assert!(e.to_string().contains("/no/such/command"), "{e}");
    assert!(!e.is_retryable(), "{e}");
    assert!(container_of(&rt, task).await.is_none(), "left behind");
}

/// Bad entrypoint inputs are invalid-input errors naming what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_entrypoint_rejects_bad_inputs() {
    let Some(rt) = runtime().await else { return };
    let missing = EntrypointBinary {
        path: "/nonexistent/kat-entrypoint".into(),
    };
    let e = rt
        .prepare_entrypoint(&missing, "kat-test-entrypoint-bad")
        .await
        .expect_err("no such binary");
    assert!(matches!(e, kat_core::Error::Invalid { .. }), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/kat-entrypoint"), "{e}");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("entrypoint");
    std::fs::write(&path, "x").expect("write");
    let e = rt
        .prepare_entrypoint(&EntrypointBinary { path }, "bad/volume name")
        .await
        .expect_err("bad volume name");
    assert!(matches!(e, kat_core::Error::Invalid { .. }), "{e:?}");
    assert!(e.to_string().contains("bad/volume name"), "{e}");
}

/// A run whose token is already cancelled returns `Cancelled` at once and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_before_the_run_creates_nothing() {
    let Some(rt) = runtime().await else { return };
    let (s, task) = spec("pre-cancelled", &["sleep", "30"]);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let started = Instant::now();
    let e = rt
        .run(s, cancel)
        .await
        .expect_err("cancelled before the start");
    assert!(matches!(e, kat_core::Error::Cancelled), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(container_of(&rt, task).await.is_none());
}

/// Output far beyond the tail bound on both streams at once, written fast, is drained without blocking the
/// container, and the tails are the exact ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_interleaved_output_is_drained() {
    let Some(rt) = runtime().await else { return };
    // About 8 MB on stdout and 8 MB on stderr, concurrently.
    let (mut s, task) = spec(
        "large-output",
        &[
            "sh",
            "-c",
            "(yes stdout-line | head -c 8000000; echo OUT-END) & (yes stderr-line | head -c 8000000 >&2; echo ERR-END >&2) & wait",
        ],
    );
    s.output_tail_bytes = 4096;
    let o = rt.run(s, CancellationToken::new()).await.expect("run");
    assert!(o.success(), "{:?} {:?}", o.reason, o.exit_code);
    assert_eq!(o.stdout_tail.len(), 4096);
    assert_eq!(o.stderr_tail.len(), 4096);
    assert!(o.stdout_tail.ends_with(b"OUT-END\n"));
    assert!(o.stderr_tail.ends_with(b"ERR-END\n"));
    assert!(
        !o.stdout_tail.windows(6).any(|w| w == b"stderr"),
        "streams mixed"
    );
    assert!(
        !o.stderr_tail.windows(6).any(|w| w == b"stdout"),
        "streams mixed"
    );
    assert!(container_of(&rt, task).await.is_none());
}
