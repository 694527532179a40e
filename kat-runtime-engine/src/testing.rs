//! What the engine tests and benchmarks of the runtime crates share (feature `testing`): finding the static
//! entrypoint and the conformance suite's fixture, more engine-agnostic cases beyond the suite
//! ([`runtime_extra_tests!`](crate::runtime_extra_tests): names, start failures, bad inputs, pre-cancelled
//! runs, large output), the spec the engines' unit tests translate, and the medians of interleaved benchmark
//! rounds.
//!
//! The conformance suite itself, with its one-test-per-case macro
//! ([`kat_core::runtime_conformance_tests!`]) and the CI fail-or-skip helpers ([`in_ci`], [`unavailable`],
//! re-exported here), is kat-core's (`kat_core::conformance::runtime`, feature `conformance`): it holds every
//! `ContainerRuntime` to the contract, engine or not.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::future::Future;

pub use kat_core::conformance::runtime::{in_ci, unavailable};

use kat_core::conformance::runtime::RuntimeFixture;
use kat_core::runtime::{
    CancellationToken, ContainerRuntime, ContainerSpec, EndReason, EntrypointBinary,
    EntrypointMount, LABEL_TASK, ManagedContainer, NetworkMode, Outcome,
};
use kat_core::task::TaskId;

/// The deployment these cases prepare entrypoints for: one no deployment reaps.
const TEST_DEPLOYMENT: &str = "kat-test-cases";

/// The static `kat-entrypoint`: `KAT_ENTRYPOINT_BIN`, else what `scripts/build-entrypoint.sh` builds into
/// `$CARGO_TARGET_DIR` (or `<manifest_dir>/../target`), if that file exists.
///
/// ```
/// let p = kat_runtime_engine::testing::entrypoint_binary(env!("CARGO_MANIFEST_DIR"));
/// if let Some(p) = p { assert!(p.ends_with("kat-entrypoint") || std::env::var_os("KAT_ENTRYPOINT_BIN").is_some()); }
/// ```
pub fn entrypoint_binary(manifest_dir: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KAT_ENTRYPOINT_BIN") {
        return Some(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(manifest_dir).join("../target"));
    let p = target.join("x86_64-unknown-linux-gnu/entrypoint/kat-entrypoint");
    p.is_file().then_some(p)
}

/// The conformance fixture for `image` and `volume`, with the entrypoint binary when it has been built (see
/// [`entrypoint_binary`]).
///
/// ```
/// let fx = kat_runtime_engine::testing::fixture("kat-busybox:latest", "kat-test-entrypoint", env!("CARGO_MANIFEST_DIR"));
/// assert_eq!(fx.image, "kat-busybox:latest");
/// ```
pub fn fixture(image: &str, volume: &str, manifest_dir: &str) -> RuntimeFixture {
    let fx = RuntimeFixture::new(image, volume);
    match entrypoint_binary(manifest_dir) {
        Some(path) => fx.with_entrypoint(EntrypointBinary { path }),
        None => fx,
    }
}

/// Samples of one benchmark variant, recorded from any thread; [`Samples::median`] at the end.
///
/// ```
/// use std::time::Duration;
/// let s = kat_runtime_engine::testing::Samples::default();
/// for ms in [30, 10, 20] { s.record(Duration::from_millis(ms)); }
/// assert_eq!(s.median(), Some(Duration::from_millis(20)));
/// assert_eq!(s.len(), 3);
/// ```
#[derive(Debug, Default)]
pub struct Samples(Mutex<Vec<Duration>>);

impl Samples {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Duration>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Add one sample.
    pub fn record(&self, d: Duration) {
        self.lock().push(d);
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The median (the upper one of an even count), `None` without samples.
    pub fn median(&self) -> Option<Duration> {
        let mut v = self.lock().clone();
        v.sort();
        v.get(v.len() / 2).copied()
    }

    /// The samples in the order they were recorded.
    pub fn values(&self) -> Vec<Duration> {
        self.lock().clone()
    }

    /// The median of the differences `self[i] - other[i]` of samples recorded in the same rounds, in
    /// milliseconds (what one variant costs over another, with the drift of a shared machine paired out).
    ///
    /// ```
    /// use std::time::Duration;
    /// use kat_runtime_engine::testing::Samples;
    /// let (a, b) = (Samples::default(), Samples::default());
    /// for (x, y) in [(12, 10), (30, 29), (15, 10)] {
    ///     a.record(Duration::from_millis(x));
    ///     b.record(Duration::from_millis(y));
    /// }
    /// assert_eq!(a.paired_median_difference_ms(&b), Some(2.0));
    /// ```
    pub fn paired_median_difference_ms(&self, other: &Samples) -> Option<f64> {
        let mut d: Vec<f64> = self
            .values()
            .iter()
            .zip(other.values())
            .map(|(a, b)| (a.as_secs_f64() - b.as_secs_f64()) * 1e3)
            .collect();
        d.sort_by(f64::total_cmp);
        d.get(d.len() / 2).copied()
    }

    /// The median as `12.3 ms`, or `n/a`.
    ///
    /// ```
    /// let s = kat_runtime_engine::testing::Samples::default();
    /// assert_eq!(s.median_text(), "n/a");
    /// s.record(std::time::Duration::from_micros(12_345));
    /// assert_eq!(s.median_text(), "12.3 ms");
    /// ```
    pub fn median_text(&self) -> String {
        self.median()
            .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "n/a".into())
    }
}

/// Run `rounds` rounds of every variant (`run(variant, round)`), in an order that rotates from round to round
/// so that the drift and noise of a shared machine hit all alike; each run's wall time goes into its
/// variant's [`Samples`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use kat_runtime_engine::testing::{Samples, rotate};
/// let samples = [Samples::default(), Samples::default()];
/// rotate(3, &samples, |variant, _round| async move {
///     tokio::time::sleep(std::time::Duration::from_millis(1 + variant as u64)).await;
/// })
/// .await;
/// assert_eq!((samples[0].len(), samples[1].len()), (3, 3));
/// # }
/// ```
pub async fn rotate<F, Fut>(rounds: usize, samples: &[Samples], mut run: F)
where
    F: FnMut(usize, usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let n = samples.len();
    for round in 0..rounds {
        for step in 0..n {
            let variant = (round + step) % n;
            let t = Instant::now();
            run(variant, round).await;
            samples[variant].record(t.elapsed());
        }
    }
}

/// Print `title` and the median of each labelled variant, aligned.
///
/// ```
/// use kat_runtime_engine::testing::{Samples, print_medians};
/// let s = Samples::default();
/// s.record(std::time::Duration::from_millis(5));
/// print_medians("demo", &[("variant", &s)]);
/// ```
pub fn print_medians(title: &str, rows: &[(&str, &Samples)]) {
    println!("\n{title}:");
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, samples) in rows {
        println!("  {label:<width$}  {:>9}", samples.median_text());
    }
}

/// A spec with every field set the way the engines' unit tests check their translation of it: `echo hi` in
/// `kat-busybox:latest`, `A="b c"`, the label `kat.task=x`, `NET_RAW`, host network, and the entrypoint
/// volume `plugin-entrypoint`; the rest are [`ContainerSpec::new`]'s hardened defaults.
///
/// ```
/// let s = kat_runtime_engine::testing::sample_spec();
/// assert_eq!(s.hardening.cap_add, vec!["NET_RAW".to_string()]);
/// ```
pub fn sample_spec() -> ContainerSpec {
    let mut spec = ContainerSpec::new("t", "kat-busybox:latest", ["echo", "hi"]);
    spec.env.insert("A".into(), "b c".into());
    spec.labels.insert(LABEL_TASK.into(), "x".into());
    spec.hardening.cap_add = vec!["NET_RAW".into()];
    spec.network = NetworkMode::Host;
    spec.entrypoint = Some(EntrypointMount {
        volume: "plugin-entrypoint".into(),
        sha256: "00".into(),
    });
    spec
}

/// A `sleep 30` container with every knob of the spec set, running in the background until
/// [`InspectCase::stop`], for checking what the engine records about it: the entrypoint volume `volume`
/// (prepared with a shell shim), host network, `NET_RAW`, 77 pids, 256 MiB, half a CPU, an 8 MiB `/tmp`, and
/// `KAT_VISIBLE=yes`.
#[derive(Debug)]
pub struct InspectCase {
    /// The running container.
    pub container: ManagedContainer,
    /// Its task.
    pub task: TaskId,
    cancel: CancellationToken,
    run: tokio::task::JoinHandle<kat_core::Result<Outcome>>,
}

impl InspectCase {
    /// Start it (named `kat-test-<case>-...`) and wait until it is listed as running.
    ///
    /// # Panics
    /// When the entrypoint cannot be prepared or the container never runs.
    pub async fn start<R>(rt: &R, image: &str, volume: &str, case: &str) -> Self
    where
        R: ContainerRuntime + Clone + 'static,
    {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("entrypoint");
        std::fs::write(&path, "#!/bin/sh\nexec \"$@\"\n").unwrap_or_else(|e| panic!("shim: {e}"));
        let mount = rt
            .prepare_entrypoint(&EntrypointBinary { path }, volume, TEST_DEPLOYMENT)
            .await
            .unwrap_or_else(|e| panic!("prepare: {e}"));
        let (mut s, task) = task_spec(case, image, &["sleep", "30"]);
        s.entrypoint = Some(mount);
        s.network = NetworkMode::Host;
        s.hardening.cap_add = vec!["NET_RAW".into()];
        s.limits.pids = Some(77);
        s.limits.memory_bytes = Some(256 << 20);
        s.limits.nano_cpus = Some(500_000_000);
        s.hardening.tmpfs_bytes = 8 << 20;
        s.env.insert("KAT_VISIBLE".into(), "yes".into());
        let cancel = CancellationToken::new();
        let run = tokio::spawn({
            let (rt, cancel) = (rt.clone(), cancel.clone());
            async move { rt.run(s, cancel).await }
        });
        let container = wait_running(rt, task).await;
        assert!(
            container.name.starts_with(&format!("kat-test-{case}-")),
            "{}",
            container.name
        );
        InspectCase {
            container,
            task,
            cancel,
            run,
        }
    }

    /// Cancel the run; panics unless it ends `Cancelled` and the container is gone.
    ///
    /// # Panics
    /// As said.
    pub async fn stop(self, rt: &dyn ContainerRuntime) -> Outcome {
        self.cancel.cancel();
        let o = self
            .run
            .await
            .unwrap_or_else(|e| panic!("join: {e}"))
            .unwrap_or_else(|e| panic!("run: {e}"));
        assert_eq!(o.reason, EndReason::Cancelled);
        assert!(container_of(rt, self.task).await.is_none());
        o
    }
}

/// Run `spec`, panicking unless it exits 0; the container must be gone afterwards.
async fn run_ok(rt: &dyn ContainerRuntime, spec: ContainerSpec, task: TaskId) -> Outcome {
    let o = rt
        .run(spec, CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("run: {e}"));
    assert!(o.success(), "{:?} {:?}", o.reason, o.exit_code);
    assert!(container_of(rt, task).await.is_none(), "left behind");
    o
}

/// A spec for `case` running `argv` in `image`, labelled with a fresh task id, with a 60 s timeout.
///
/// ```
/// let (spec, task) = kat_runtime_engine::testing::task_spec("echo", "kat-busybox:latest", &["echo", "hi"]);
/// assert_eq!(spec.labels.get(kat_core::runtime::LABEL_TASK), Some(&task.to_string()));
/// ```
pub fn task_spec(case: &str, image: &str, argv: &[&str]) -> (ContainerSpec, TaskId) {
    let task = TaskId::new();
    let mut s = ContainerSpec::new(format!("kat-test-{case}"), image, argv.iter().copied());
    s.labels.insert(LABEL_TASK.into(), task.to_string());
    s.timeout = Duration::from_secs(60);
    (s, task)
}

/// The managed container of `task`, if listed.
///
/// # Panics
/// When listing fails.
pub async fn container_of(rt: &dyn ContainerRuntime, task: TaskId) -> Option<ManagedContainer> {
    rt.list_managed()
        .await
        .unwrap_or_else(|e| panic!("list_managed failed: {e}"))
        .into_iter()
        .find(|c| c.task == Some(task))
}

/// Wait (at most 15 s) until `task`'s container is listed as running.
///
/// # Panics
/// When it never is.
pub async fn wait_running(rt: &dyn ContainerRuntime, task: TaskId) -> ManagedContainer {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(c) = container_of(rt, task).await
            && c.state == "running"
        {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "the container of task {task} never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Names with characters engines reject are made valid, and equal requested names do not collide.
///
/// # Panics
/// When the runtime misbehaves.
pub async fn odd_and_duplicate_names_run(rt: &dyn ContainerRuntime, image: &str) {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (mut s, _) = task_spec("names", image, &["echo", "ok"]);
        s.name = "plugin/with spaces:ü#1".into();
        runs.push(rt.run(s, CancellationToken::new()));
    }
    for r in futures::future::join_all(runs).await {
        let o = r.unwrap_or_else(|e| panic!("a run with an odd name failed: {e}"));
        assert!(o.success(), "{o:?}");
        assert_eq!(o.stdout_tail, b"ok\n");
    }
}

/// A command the image does not have fails the run with a non-retryable error naming it, and the created
/// container is removed all the same.
///
/// # Panics
/// When the runtime misbehaves.
pub async fn start_failure_is_an_error_and_removes(rt: &dyn ContainerRuntime, image: &str) {
    let (s, task) = task_spec("no-such-command", image, &["/no/such/command"]);
    let e = match rt.run(s, CancellationToken::new()).await {
        Ok(o) => panic!("a missing executable cannot start, got {o:?}"),
        Err(e) => e,
    };
    assert!(e.to_string().contains("/no/such/command"), "{e}");
    assert!(!e.is_retryable(), "{e}");
    assert!(container_of(rt, task).await.is_none(), "left behind");
}

/// A missing entrypoint binary and a bad volume name are invalid-input errors naming what is wrong.
///
/// # Panics
/// When the runtime misbehaves.
pub async fn prepare_entrypoint_rejects_bad_inputs(rt: &dyn ContainerRuntime) {
    let missing = EntrypointBinary {
        path: "/nonexistent/kat-entrypoint".into(),
    };
    let e = match rt
        .prepare_entrypoint(&missing, "kat-test-entrypoint-bad", TEST_DEPLOYMENT)
        .await
    {
        Ok(m) => panic!("no such binary, got {m:?}"),
        Err(e) => e,
    };
    assert!(matches!(e, kat_core::Error::Invalid { .. }), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/kat-entrypoint"), "{e}");

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("entrypoint");
    std::fs::write(&path, "x").unwrap_or_else(|e| panic!("write: {e}"));
    let e = match rt
        .prepare_entrypoint(
            &EntrypointBinary { path },
            "bad/volume name",
            TEST_DEPLOYMENT,
        )
        .await
    {
        Ok(m) => panic!("bad volume name, got {m:?}"),
        Err(e) => e,
    };
    assert!(matches!(e, kat_core::Error::Invalid { .. }), "{e:?}");
    assert!(e.to_string().contains("bad/volume name"), "{e}");
}

/// A run whose token is already cancelled returns `Cancelled` at once and creates nothing.
///
/// # Panics
/// When the runtime misbehaves.
pub async fn cancelled_before_the_run_creates_nothing(rt: &dyn ContainerRuntime, image: &str) {
    let (s, task) = task_spec("pre-cancelled", image, &["sleep", "30"]);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let started = Instant::now();
    match rt.run(s, cancel).await {
        Err(kat_core::Error::Cancelled) => {}
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(container_of(rt, task).await.is_none());
}

/// Output far beyond the tail bound on both streams at once (8 MB each), written fast, is drained without
/// blocking the container, and the tails are the exact ends of their streams.
///
/// # Panics
/// When the runtime misbehaves.
pub async fn large_interleaved_output_is_drained(rt: &dyn ContainerRuntime, image: &str) {
    let (mut s, task) = task_spec(
        "large-output",
        image,
        &[
            "sh",
            "-c",
            "(yes stdout-line | head -c 8000000; echo OUT-END) & \
             (yes stderr-line | head -c 8000000 >&2; echo ERR-END >&2) & wait",
        ],
    );
    s.output_tail_bytes = 4096;
    let o = run_ok(rt, s, task).await;
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
}

/// A few MB on each stream, written at the same time, arrive whole and byte-exact when the tail bound holds
/// them all: nothing is lost at the start (attach before start), in the middle, or at the exit.
///
/// # Panics
/// When the runtime misbehaves.
pub async fn whole_output_arrives(rt: &dyn ContainerRuntime, image: &str) {
    let (mut s, task) = task_spec(
        "whole-output",
        image,
        &[
            "sh",
            "-c",
            "seq 1 500000 & seq 500001 1000000 >&2 & wait; printf OUT-END; printf ERR-END >&2",
        ],
    );
    s.output_tail_bytes = 16 << 20;
    let o = run_ok(rt, s, task).await;
    let expect = |from: u32, to: u32, end: &str| {
        let mut v: String = (from..=to).map(|i| format!("{i}\n")).collect();
        v.push_str(end);
        v.into_bytes()
    };
    let (out, err) = (
        expect(1, 500_000, "OUT-END"),
        expect(500_001, 1_000_000, "ERR-END"),
    );
    assert_eq!(
        o.stdout_tail.len(),
        out.len(),
        "stdout: {} of {} bytes",
        o.stdout_tail.len(),
        out.len()
    );
    assert!(o.stdout_tail == out, "stdout differs from what was written");
    assert_eq!(
        o.stderr_tail.len(),
        err.len(),
        "stderr: {} of {} bytes",
        o.stderr_tail.len(),
        err.len()
    );
    assert!(o.stderr_tail == err, "stderr differs from what was written");
}

/// One `#[tokio::test]` per engine-agnostic case of this module, for a runtime crate's engine tests.
/// `$runtime` and `$image` as in [`kat_core::runtime_conformance_tests!`]
/// (`$image`: an expression giving the busybox image's name).
///
/// ```no_run
/// # use std::collections::HashSet;
/// # use kat_core::runtime::*;
/// # #[derive(Debug)]
/// # pub struct MyRuntime;
/// # #[async_trait::async_trait]
/// # impl ContainerRuntime for MyRuntime {
/// #     async fn capabilities(&self) -> kat_core::Result<Capabilities> { Err(kat_core::Error::Cancelled) }
/// #     async fn prepare_entrypoint(&self, _: &EntrypointBinary, _: &str, _: &str) -> kat_core::Result<EntrypointMount> { Err(kat_core::Error::Cancelled) }
/// #     async fn run(&self, _: ContainerSpec, _: CancellationToken) -> kat_core::Result<Outcome> { Err(kat_core::Error::Cancelled) }
/// #     async fn list_managed(&self) -> kat_core::Result<Vec<ManagedContainer>> { Ok(vec![]) }
/// #     async fn reap_orphans(&self, _: &str, _: &HashSet<kat_core::task::TaskId>) -> kat_core::Result<Vec<String>> { Ok(vec![]) }
/// # }
/// // tests/common/mod.rs of a runtime crate:
/// mod common {
///     pub const IMAGE: &str = "kat-busybox:latest";
///     /// The runtime on the real engine, or `None` after `kat_runtime_engine::testing::unavailable` (skip outside CI).
///     pub async fn runtime() -> Option<super::MyRuntime> {
///         Some(super::MyRuntime)
///     }
///     pub fn fixture() -> kat_core::conformance::runtime::RuntimeFixture {
///         kat_runtime_engine::testing::fixture(IMAGE, "kat-test-entrypoint", env!("CARGO_MANIFEST_DIR"))
///     }
/// }
/// // tests/<engine>.rs:
/// kat_runtime_engine::runtime_extra_tests!(common::runtime, common::IMAGE);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! runtime_extra_tests {
    ($runtime:path, $image:expr) => {
        $crate::runtime_extra_tests!(@with_image $runtime, $image;
            odd_and_duplicate_names_run,
            start_failure_is_an_error_and_removes,
            cancelled_before_the_run_creates_nothing,
            large_interleaved_output_is_drained,
            whole_output_arrives,
        );

        /// Bad entrypoint inputs are invalid-input errors naming what is wrong.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn prepare_entrypoint_rejects_bad_inputs() {
            let Some(rt) = $runtime().await else { return };
            $crate::testing::prepare_entrypoint_rejects_bad_inputs(&rt).await;
        }
    };
    (@with_image $runtime:path, $image:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(rt) = $runtime().await else { return };
                $crate::testing::$case(&rt, $image).await;
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        let s = Samples::default();
        assert!(s.is_empty());
        assert_eq!(s.median(), None);
        for ms in [4, 1, 3, 2] {
            s.record(Duration::from_millis(ms));
        }
        assert_eq!(s.median(), Some(Duration::from_millis(3)));
        assert_eq!(s.median_text(), "3.0 ms");
    }
}
