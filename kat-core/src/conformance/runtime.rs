//! The [`ContainerRuntime`] conformance suite: what every runtime must do against a real engine.
//!
//! Each function takes the runtime as a trait object and a [`RuntimeFixture`], runs real containers, and
//! panics with a message saying what went wrong when the runtime misbehaves. They are engine-agnostic: the
//! Docker and the Podman runtimes run the very same functions. [`run_all`] runs every case in sequence and then
//! checks that none of the containers the suite created is left behind.
//!
//! The fixture's image must be a busybox image (`sh`, `printf`, `seq`, `grep`, `sleep`, `touch`, `stat`,
//! `id`, `cat`, `awk`), such as the `kat-busybox:latest` that `scripts/test-images.sh` builds.
//!
//! ```no_run
//! use kat_core::conformance::runtime::{self, RuntimeFixture};
//! # async fn demo(rt: &dyn kat_core::runtime::ContainerRuntime) {
//! let fx = RuntimeFixture {
//!     image: "kat-busybox:latest".into(),
//!     entrypoint: None,
//!     volume: "kat-conformance-entrypoint".into(),
//! };
//! runtime::run_all(rt, &fx).await;
//! # }
//! ```
//!
//! The cases are safe to run concurrently with each other and with other users of the same engine: every
//! container carries a fresh task id, "left behind" is checked per task, each entrypoint case uses its own
//! volume (`<volume>-ro`, `<volume>-idem`, and `<volume>` itself for the real entrypoint), and the reaping
//! case counts every other managed container it finds as live.
//!
//! A runtime crate's `tests/conformance.rs` gets one test per case from
//! [`runtime_conformance_tests!`](crate::runtime_conformance_tests); when the engine is missing the tests
//! fail in CI and are skipped loudly elsewhere ([`unavailable`]).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kat_protocol::env;

use crate::Error;
use crate::runtime::{
    CancellationToken, ContainerRuntime, ContainerSpec, EndReason, EntrypointBinary,
    EntrypointMount, LABEL_DEPLOYMENT, LABEL_ORG, LABEL_PLUGIN, LABEL_TASK, ManagedContainer,
    Outcome,
};
use crate::task::TaskId;

/// What the suite needs besides the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeFixture {
    /// A busybox image present on the engine (see the module docs).
    pub image: String,
    /// A static `kat-entrypoint` build; without it [`entrypoint_pass_through`] is skipped (loudly).
    pub entrypoint: Option<EntrypointBinary>,
    /// The entrypoint volume name; the suite also uses `<volume>-ro` and `<volume>-idem`.
    pub volume: String,
}

impl RuntimeFixture {
    /// A fixture without an entrypoint binary.
    ///
    /// ```
    /// use kat_core::conformance::runtime::RuntimeFixture;
    /// let fx = RuntimeFixture::new("kat-busybox:latest", "kat-conformance-entrypoint");
    /// assert!(fx.entrypoint.is_none());
    /// ```
    pub fn new(image: impl Into<String>, volume: impl Into<String>) -> Self {
        RuntimeFixture {
            image: image.into(),
            entrypoint: None,
            volume: volume.into(),
        }
    }

    /// The same fixture with a static entrypoint binary.
    ///
    /// ```
    /// use kat_core::conformance::runtime::RuntimeFixture;
    /// use kat_core::runtime::EntrypointBinary;
    /// let fx = RuntimeFixture::new("kat-busybox:latest", "v")
    ///     .with_entrypoint(EntrypointBinary { path: "/tmp/kat-entrypoint".into() });
    /// assert!(fx.entrypoint.is_some());
    /// ```
    pub fn with_entrypoint(mut self, binary: EntrypointBinary) -> Self {
        self.entrypoint = Some(binary);
        self
    }
}

/// Whether `CI` is set (to anything but the empty string).
///
/// ```
/// let _ = kat_core::conformance::runtime::in_ci();
/// ```
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// A test's engine, image or binary is missing: panic when `CI` is set, else print why the test is skipped.
/// `setup` says what to run first.
///
/// ```
/// # if !kat_core::conformance::runtime::in_ci() {
/// kat_core::conformance::runtime::unavailable("no engine", "run scripts/engines.sh first");
/// # }
/// ```
///
/// # Panics
/// When `CI` is set.
pub fn unavailable(what: &str, setup: &str) {
    if in_ci() {
        panic!("{what}; {setup}");
    }
    eprintln!("SKIPPED (no CI): {what}; {setup}");
}

/// One `#[tokio::test]` per case of this module, plus the real entrypoint case and
/// `run_all`, for a runtime crate's `tests/conformance.rs`.
///
/// - `$runtime`: an `async fn() -> Option<R>` giving the runtime on the real engine (with the test image
///   present), or `None` after [`unavailable`] (skip outside CI);
/// - `$fixture`: a `fn() -> RuntimeFixture` (kat-runtime-engine's `testing::fixture` builds one with the
///   static entrypoint when it is built); the entrypoint case requires its binary and calls [`unavailable`]
///   when it is missing.
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
///     /// The runtime on the real engine, or `None` after `unavailable` (skip outside CI).
///     pub async fn runtime() -> Option<super::MyRuntime> {
///         Some(super::MyRuntime)
///     }
///     pub fn fixture() -> kat_core::conformance::runtime::RuntimeFixture {
///         kat_core::conformance::runtime::RuntimeFixture::new(IMAGE, "kat-test-entrypoint")
///     }
/// }
/// // tests/conformance.rs:
/// kat_core::runtime_conformance_tests!(common::runtime, common::fixture);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! runtime_conformance_tests {
    ($runtime:path, $fixture:path) => {
        $crate::runtime_conformance_tests!(@cases $runtime, $fixture;
            capabilities_are_reported,
            echo_and_exit_codes,
            stdout_stderr_and_bounded_tails,
            env_and_argv_round_trip,
            entrypoint_volume_read_only,
            prepare_entrypoint_idempotent,
            deadline_kills,
            cancellation_kills,
            missing_image_fails_fast,
            hardening_from_inside,
            reap_orphans_removes_only_orphans,
            dropped_future_still_removes,
            run_all,
        );

        /// The real static kat-entrypoint runs from the read-only volume in pass-through mode.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn entrypoint_pass_through() {
            let Some(rt) = $runtime().await else { return };
            let fx = $fixture();
            if fx.entrypoint.is_none() {
                $crate::conformance::runtime::unavailable(
                    "the static kat-entrypoint is not built",
                    "run scripts/build-entrypoint.sh (or set KAT_ENTRYPOINT_BIN)",
                );
                return;
            }
            $crate::conformance::runtime::entrypoint_pass_through(&rt, &fx).await;
        }
    };
    (@cases $runtime:path, $fixture:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(rt) = $runtime().await else { return };
                $crate::conformance::runtime::$case(&rt, &$fixture()).await;
            }
        )*
    };
}

/// How long a container may take to disappear after its run ended, was cancelled or was abandoned.
/// The deployment the suite prepares entrypoints for: one no deployment reaps.
const CONFORMANCE_DEPLOYMENT: &str = "kat-conformance";

const GONE_WITHIN: Duration = Duration::from_secs(10);
/// Slack on every timing assertion, for slow CI machines.
const SLACK: Duration = Duration::from_secs(8);

/// The tasks a group of cases created containers for.
#[derive(Debug, Default)]
struct Tracker {
    tasks: Mutex<Vec<TaskId>>,
}

impl Tracker {
    /// A spec for `case` running `argv` in the fixture's image, labelled with a fresh task id.
    fn spec(&self, fx: &RuntimeFixture, case: &str, argv: &[&str]) -> (ContainerSpec, TaskId) {
        let task = TaskId::new();
        self.tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(task);
        let mut spec = ContainerSpec::new(
            format!("kat-conformance-{case}"),
            fx.image.clone(),
            argv.iter().copied(),
        );
        spec.labels.insert(LABEL_TASK.into(), task.to_string());
        spec.labels
            .insert(LABEL_PLUGIN.into(), format!("conformance-{case}"));
        spec.labels.insert(LABEL_ORG.into(), "conformance".into());
        spec.timeout = Duration::from_secs(60);
        (spec, task)
    }

    /// Panic unless none of the tracked tasks has a container left.
    async fn assert_all_gone(&self, rt: &dyn ContainerRuntime, what: &str) {
        let tasks: HashSet<TaskId> = self
            .tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .copied()
            .collect();
        let deadline = Instant::now() + GONE_WITHIN;
        loop {
            let left: Vec<ManagedContainer> = list(rt)
                .await
                .into_iter()
                .filter(|c| c.task.is_some_and(|t| tasks.contains(&t)))
                .collect();
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: containers left behind {GONE_WITHIN:?} after the runs ended: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn list(rt: &dyn ContainerRuntime) -> Vec<ManagedContainer> {
    rt.list_managed()
        .await
        .unwrap_or_else(|e| panic!("list_managed failed: {e}"))
}

/// The managed container of `task`, if listed.
async fn container_of(rt: &dyn ContainerRuntime, task: TaskId) -> Option<ManagedContainer> {
    list(rt).await.into_iter().find(|c| c.task == Some(task))
}

/// Panic unless `task`'s container is gone within [`GONE_WITHIN`].
async fn assert_gone(rt: &dyn ContainerRuntime, task: TaskId, case: &str) {
    let deadline = Instant::now() + GONE_WITHIN;
    while let Some(c) = container_of(rt, task).await {
        assert!(
            Instant::now() < deadline,
            "{case}: the container of task {task} is still there {GONE_WITHIN:?} later: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until `task`'s container is listed as running; panics after `within`.
async fn wait_running(
    rt: &dyn ContainerRuntime,
    task: TaskId,
    case: &str,
    within: Duration,
) -> ManagedContainer {
    let deadline = Instant::now() + within;
    loop {
        if let Some(c) = container_of(rt, task).await
            && c.state == "running"
        {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{case}: the container of task {task} was not listed as running within {within:?} \
             (list_managed must list running containers with their task label)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run `spec` to completion, panicking on an error.
async fn run(rt: &dyn ContainerRuntime, spec: ContainerSpec, case: &str) -> Outcome {
    let image = spec.image.clone();
    rt.run(spec, CancellationToken::new())
        .await
        .unwrap_or_else(|e| {
            panic!("{case}: run failed: {e} (is the image {image:?} present on the engine?)")
        })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Panic unless the outcome is an exit with `code`.
fn assert_exit(o: &Outcome, code: i64, case: &str) {
    assert!(
        o.reason == EndReason::Exited && o.exit_code == Some(code),
        "{case}: expected an exit with code {code}, got {:?} with code {:?}; stdout {:?}, stderr {:?}",
        o.reason,
        o.exit_code,
        text(&o.stdout_tail),
        text(&o.stderr_tail)
    );
    assert!(
        !o.container_id.is_empty(),
        "{case}: the outcome has no container id"
    );
}

/// A temporary executable file holding `content`.
fn temp_binary(content: &[u8]) -> (tempfile::TempDir, EntrypointBinary) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("entrypoint");
    std::fs::write(&path, content).expect("writing a temporary entrypoint");
    (dir, EntrypointBinary { path })
}

/// The sha256 of a file, hex.
fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).expect("reading the binary");
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A shell script entrypoint that runs its arguments unchanged; `tag` makes its content distinct.
fn shim(tag: &str) -> Vec<u8> {
    format!("#!/bin/sh\n# kat conformance shim {tag}\nexec \"$@\"\n").into_bytes()
}

async fn prepare(
    rt: &dyn ContainerRuntime,
    binary: &EntrypointBinary,
    volume: &str,
    case: &str,
) -> EntrypointMount {
    rt.prepare_entrypoint(binary, volume, CONFORMANCE_DEPLOYMENT)
        .await
        .unwrap_or_else(|e| panic!("{case}: prepare_entrypoint({volume:?}) failed: {e}"))
}

// ------------------------------------------------------------------------------------------------------------
// The cases.

/// `echo` reaches stdout; exit codes 0, 1, 2 and 137 (a process killed by SIGKILL) are reported as they are;
/// the container is gone afterwards.
pub async fn echo_and_exit_codes(rt: &dyn ContainerRuntime, fx: &RuntimeFixture) {
    let t = Tracker::default();
    echo_and_exit_codes_in(rt, fx, &t).await;
    t.assert_all_gone(rt, "echo_and_exit_codes").await;
}

async fn echo_and_exit_codes_in(rt: &dyn ContainerRuntime, fx: &RuntimeFixture, t: &Tracker) {
    let case = "echo_and_exit_codes";
    let (spec, task) = t.spec(fx, "echo", &["echo", "hello"]);
    let o = run(rt, spec, case).await;
    assert_exit(&o, 0, case);
    assert!(o.success(), "{case}: exit 0 must be a success");
    assert_eq!(text(&o.stdout_tail), "hello\n", "{case}: stdout");
    assert_eq!(text(&o.stderr_tail), "", "{case}: stderr");
    assert_gone(rt, task, case).await;

    // `kill -9 $$` in the container's first process would do nothing: PID 1 of a PID namespace ignores
    // SIGKILL sent from inside it. A child shell kills itself, and the first one exits with its status.
    for (script, code) in [
        ("exit 1", 1),
        ("exit 2", 2),
        ("sh -c 'kill -9 $$'; exit $?", 137),
    ] {
        let (spec, task) = t.spec(fx, "exit", &["sh", "-c", script]);
        let o = run(rt, spec, case).await;
        assert_exit(&o, code, &format!("{case} ({script})"));
        assert!(!o.success(), "{case}: exit {code} must not be a success");
        assert_gone(rt, task, case).await;
    }
}

/// stdout and stderr are kept apart, byte-exact, and each tail holds exactly the last `output_tail_bytes`
/// of its stream when the container writes far more.
pub async fn stdout_stderr_and_bounded_tails(rt: &dyn ContainerRuntime, fx: &RuntimeFixture) {
    let t = Tracker::default();
    stdout_stderr_and_bounded_tails_in(rt, fx, &t).await;
    t.assert_all_gone(rt, "stdout_stderr_and_bounded_tails")
        .await;
}

async fn stdout_stderr_and_bounded_tails_in(
    rt: &dyn ContainerRuntime,
    fx: &RuntimeFixture,
    t: &Tracker,
) {
    let case = "stdout_stderr_and_bounded_tails";
    let (spec, _) = t.spec(
        fx,
        "streams",
        &["sh", "-c", "echo out; echo err >&2; echo out2"],
    );
    let o = run(rt, spec, case).await;
    assert_exit(&o, 0, case);
    assert_eq!(text(&o.stdout_tail), "out\nout2\n", "{case}: stdout");
    assert_eq!(text(&o.stderr_tail), "err\n", "{case}: stderr");

    // About 110 KB on each stream, far beyond the bound.
    let bound = 1000;
    let (mut spec, task) = t.spec(
        fx,
        "tails",
        &[
            "sh",
            "-c",
            "seq 1 20000; printf END-OUT; seq 20001 40000 >&2; printf END-ERR >&2",
        ],
    );
    spec.output_tail_bytes = bound;
    let o = run(rt, spec, case).await;
    assert_exit(&o, 0, case);
    let whole = |from: u32, to: u32, end: &str| {
        let mut s: String = (from..=to).map(|i| format!("{i}\n")).collect();
        s.push_str(end);
        s.into_bytes()
    };
    let out = whole(1, 20000, "END-OUT");
    let err = whole(20001, 40000, "END-ERR");
    assert_eq!(
        o.stdout_tail.len(),
        bound,
        "{case}: the stdout tail must hold exactly output_tail_bytes"
    );
    assert_eq!(o.stderr_tail.len(), bound, "{case}: the stderr tail length");
    assert_eq!(
        text(&o.stdout_tail),
        text(&out[out.len() - bound..]),
        "{case}: the stdout tail must be the last {bound} bytes of stdout"
    );
    assert_eq!(
        text(&o.stderr_tail),
        text(&err[err.len() - bound..]),
        "{case}: the stderr tail must be the last {bound} bytes of stderr"
    );
    assert_gone(rt, task, case).await;
}

/// Arguments and environment values with spaces, quotes, shell syntax, newlines and unicode reach the process
/// unchanged (no shell in between).
pub async fn env_and_argv_round_trip(rt: &dyn ContainerRuntime, fx: &RuntimeFixture) {
    let t = Tracker::default();
    env_and_argv_round_trip_in(rt, fx, &t).await;
    t.assert_all_gone(rt, "env_and_argv_round_trip").await;
}

const AWKWARD: &[&str] = &[
    "a b",
    "it's",
    "\"double\"",
    "ünïcødé ✓ 日本",
    "",
    "$HOME",
    "*",
    "back\\slash",
    "new\nline",
    "--flag=x",
    "{hostname}",
    "tab\there",
    "a=b=c",
    ";echo pwned",
];

fn nul_joined(values: &[&str]) -> String {
    values.iter().map(|v| format!("{v}\0")).collect()
}

async fn env_and_argv_round_trip_in(rt: &dyn ContainerRuntime, fx: &RuntimeFixture, t: &Tracker) {
    let case = "env_and_argv_round_trip";
    let mut argv = vec!["printf", "%s\\0"];
    argv.extend_from_slice(AWKWARD);
    let (spec, _) = t.spec(fx, "argv", &argv);
    let o = run(rt, spec, case).await;
    assert_exit(&o, 0, case);
    assert_eq!(
        text(&o.stdout_tail),
        nul_joined(AWKWARD),
        "{case}: argv must arrive unchanged"
    );

    let names: Vec<String> = (0..AWKWARD.len()).map(|i| format!("KAT_V{i}")).collect();
    let script = format!(
        "printf '%s\\0' {}",
        names
            .iter()
            .map(|n| format!("\"${n}\""))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (mut spec, task) = t.spec(fx, "env", &["sh", "-c", &script]);
    spec.env = names
        .iter()
        .zip(AWKWARD)
        .map(|(n, v)| (n.clone(), v.to_string()))
        .collect::<BTreeMap<_, _>>();
    let o = run(rt, spec, case).await;
    assert_exit(&o, 0, case);
    assert_eq!(
        text(&o.stdout_tail),
        nul_joined(AWKWARD),
        "{case}: environment values must arrive unchanged"
    );
    assert_gone(rt, task, case).await;
}

/// The entrypoint volume is mounted read-only at `/plugin` and its entrypoint runs: even root in the container
/// cannot write there. Uses the volume `<volume>-ro` and a shell-script entrypoint.
pub async fn entrypoint_volume_read_only(rt: &dyn ContainerRuntime, fx: &RuntimeFixture) {
    let t = Tracker::default();
    entrypoint_volume_read_only_in(rt, fx, &t).await;
    t.assert_all_gone(rt, "entrypoint_volume_read_only").await;
}

async fn entrypoint_volume_read_only_in(
    rt: &dyn ContainerRuntime,
    fx: &RuntimeFixture,
    t: &Tracker,
) {
    let case = "entrypoint_volume_read_only";
    let volume = format!("{}-ro", fx.volume);
    let (_dir, bin) = temp_binary(&shim("read-only"));
    let mount = prepare(rt, &bin, &volume, case).await;
    assert_eq!(mount.volume, volume, "{case}: the mount names the volume");
    let script = "if touch /plugin/kat-probe 2>/dev/null; then echo plugin=rw; else echo plugin=ro; fi; \
                  if touch /plugin/entrypoint 2>/dev/null; then echo entrypoint=rw; else echo entrypoint=ro; fi; \
                  awk '$2 == \"/plugin\" { split($4, o, \",\"); print \"mount=\" o[1] }' /proc/mounts; \
                  head -n 2 /plugin/entrypoint | tail -n 1";
    let (mut spec, task) = t.spec(fx, "ro", &["sh", "-c", script]);
    spec.entrypoint = Some(mount);
    // Root (without capabilities, but owning the volume's files): only the mount itself can stop the writes.
    spec.hardening.user = Some("0:0".into());
    let o = run(rt, spec, case).await;
    assert_exit(&o, 0, case);
    let out = text(&o.stdout_tail);
    assert!(
        out.contains("plugin=ro\n") && out.contains("entrypoint=ro\n"),
        "{case}: /plugin must not be writable, got {out:?}"
    );
    assert!(
        out.contains("mount=ro\n"),
        "{case}: /plugin must be mounted read-only (ro in /proc/mounts), got {out:?}"
    );
    assert!(
        out.contains("# kat conformance shim read-only"),
        "{case}: the entrypoint in the volume must be the prepared one, got {out:?}"
    );
    assert_gone(rt, task, case).await;
}

/// `prepare_entrypoint` is idempotent (same binary: same sha256, no error) and replaces a different binary;
/// containers see the current one. Uses the volume `<volume>-idem`.
pub async fn prepare_entrypoint_idempotent(rt: &dyn ContainerRuntime, fx: &RuntimeFixture) {
    let t = Tracker::default();
    prepare_entrypoint_idempotent_in(rt, fx, &t).await;
    t.assert_all_gone(rt, "prepare_entrypoint_idempotent").await;
}

async fn prepare_entrypoint_idempotent_in(
    rt: &dyn ContainerRuntime,
    fx: &RuntimeFixture,
    t: &Tracker,
) {
    let case = "prepare_entrypoint_idempotent";
    let volume = format!("{}-idem", fx.volume);
    let (_a_dir, a) = temp_binary(&shim("A"));
    let (_b_dir, b) = temp_binary(&shim("B"));
    let sha_a = sha256_file(&a.path);
    let sha_b = sha256_file(&b.path);

    let seen = |mount: EntrypointMount, label: &'static str| {
        let (mut spec, _) = t.spec(fx, "idem", &["cat", "/plugin/entrypoint"]);
        spec.entrypoint = Some(mount);
        async move {
            let o = run(rt, spec, case).await;
            assert_exit(&o, 0, &format!("{case} ({label})"));
            o.stdout_tail
        }
    };

    let m1 = prepare(rt, &a, &volume, case).await;
    assert_eq!(
        m1.sha256, sha_a,
        "{case}: the mount's sha256 is the binary's"
    );
    assert_eq!(m1.volume, volume);
    let m2 = prepare(rt, &a, &volume, case).await;
    assert_eq!(
        m1, m2,
        "{case}: preparing the same binary again must give the same mount"
    );
    assert_eq!(
        seen(m2, "A").await,
        shim("A"),
        "{case}: containers must see binary A"
    );

    let m3 = prepare(rt, &b, &volume, case).await;
    assert_eq!(
        m3.sha256, sha_b,
        "{case}: a different binary must replace the first"
    );
    assert_eq!(
        seen(m3.clone(), "B").await,
        shim("B"),
        "{case}: containers must see binary B"
    );
    let m4 = prepare(rt, &b, &volume, case).await;
    assert_eq!(m3, m4, "{case}: and preparing it again changes nothing");
}

/// The fixture's real `kat-entrypoint`, prepared into `<volume>`, runs from the read-only volume in pass-through
/// mode (`UPLOAD_URL=/dev/null`): the command's stdout, stderr and exit code come through. Skipped, loudly,
/// when the fixture has no entrypoint binary.
pub async fn entrypoint_pass_through(rt: &dyn ContainerRuntime, fx: &RuntimeFixture) {
    let t = Tracker::default();
    entrypoint_pass_through_in(rt, fx, &t).await;
    t.assert_all_gone(rt, "entrypoint_pass_through").await;
}

async fn entrypoint_pass_through_in(rt: &dyn ContainerRuntime, fx: &RuntimeFixture, t: &Tracker) {
    let case = "entrypoint_pass_through";
    let Some(bin) = &fx.entrypoint else {
        eprintln!("{case}: SKIPPED: the fixture has no kat-entrypoint binary");
        return;
    };
    let mount = prepare(rt, bin, &fx.volume, case).await;
    assert_eq!(
        mount.sha256,
        sha256_file(&bin.path),
        "{case}: sha256 of the binary"
    );

    let (mut spec, _) = t.spec(fx, "entrypoint", &["echo", "through the entrypoint"]);
    spec.entrypoint = Some(mount.clone());
    spec.env
        .insert(env::UPLOAD_URL.into(), env::PASS_THROUGH.into());
    spec.env.insert(env::PLUGIN_ID.into(), "conformance".into());
    let o = run(rt, spec, case).await;
    assert_exit(&o, 0, case);
    assert_eq!(
        text(&o.stdout_tail),
        "through the entrypoint\n",
        "{case}: stdout"
    );

    let (mut spec, task) = t.spec(
        fx,
        "entrypoint",
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    spec.entrypoint = Some(mount);
    spec.env
        .insert(env::UPLOAD_URL.into(), env::PASS_THROUGH.into());
    spec.env.insert(env::PLUGIN_ID.into(), "conformance".into());
    let o = run(rt, spec, case).await;
    assert_exit(
        &o,
        3,
        &format!("{case}: the entrypoint must exit with the command's code"),
    );
    assert_eq!(text(&o.stdout_tail), "out\n", "{case}: stdout");
    assert!(
        text(&o.stderr_tail).contains("err\n"),
        "{case}: the command's stderr must come through, got {:?}",
        text(&o.stderr_tail)
    );
    assert_gone(rt, task, case).await;
}

/// A container running past its timeout is killed promptly, reported as [`EndReason::TimedOut`], and removed.
pub async fn deadline_kills(rt: &dyn ContainerRuntime, fx: &RuntimeFixture) {
    let t = Tracker::default();
    deadline_kills_in(rt, fx, &t).await;
    t.assert_all_gone(rt, "deadline_kills").await;
}

async fn deadline_kills_in(rt: &dyn ContainerRuntime, fx: &RuntimeFixture, t: &Tracker) {
    let case = "deadline_kills";
    let timeout = Duration::from_secs(2);
    let (mut spec, task) = t.spec(fx, "deadline", &["sleep", "30"]);
    spec.timeout = timeout;
    let started = Instant::now();
    let o = run(rt, spec, case).await;
    let took = started.elapsed();
    assert_eq!(
        o.reason,
        EndReason::TimedOut,
        "{case}: reason, outcome {o:?}"
    );
    assert!(!o.success());
    assert!(
        took >= timeout,
        "{case}: killed before its timeout, after {took:?}"
    );
    assert!(
        took < timeout + SLACK,
        "{case}: a 2 s timeout took {took:?} to end the run"
    );
    assert_gone(rt, task, case).await;
}

/// Cancelling the token kills the container promptly; the outcome is [`EndReason::Cancelled`] and the
/// container is removed.
pub async fn cancellation_kills(rt: &dyn ContainerRuntime, fx: &RuntimeFixture) {
    let t = Tracker::default();
    cancellation_kills_in(rt, fx, &t).await;
    t.assert_all_gone(rt, "cancellation_kills").await;
}

async fn cancellation_kills_in(rt: &dyn ContainerRuntime, fx: &RuntimeFixture, t: &Tracker) {
    let case = "cancellation_kills";
    let (spec, task) = t.spec(fx, "cancel", &["sleep", "30"]);
    let cancel = CancellationToken::new();
    let canceller = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            cancel.cancel();
        })
    };
    let started = Instant::now();
    let o = rt.run(spec, cancel).await.unwrap_or_else(|e| {
        panic!("{case}: a cancelled run must still return its outcome, got {e}")
    });
    let took = started.elapsed();
    canceller.abort();
    assert_eq!(
        o.reason,
        EndReason::Cancelled,
        "{case}: reason, outcome {o:?}"
    );
    assert!(!o.success());
    assert!(
        took >= Duration::from_secs(1),
        "{case}: ended before the cancel, after {took:?}"
    );
    assert!(
        took < Duration::from_secs(1) + SLACK,
        "{case}: cancelling took {took:?} to end the run"
    );
    assert_gone(rt, task, case).await;
}

/// An image that is neither local nor pullable fails the run quickly with a non-retryable error that names
/// the image, and leaves nothing behind. (The image names a registry on 127.0.0.1:1, so the pull attempt never
/// leaves the machine.)
pub async fn missing_image_fails_fast(rt: &dyn ContainerRuntime, fx: &RuntimeFixture) {
    let t = Tracker::default();
    missing_image_fails_fast_in(rt, fx, &t).await;
    t.assert_all_gone(rt, "missing_image_fails_fast").await;
}

async fn missing_image_fails_fast_in(rt: &dyn ContainerRuntime, fx: &RuntimeFixture, t: &Tracker) {
    let case = "missing_image_fails_fast";
    let image = format!(
        "127.0.0.1:1/kat-conformance-missing:{}",
        uuid::Uuid::new_v4().simple()
    );
    let (mut spec, task) = t.spec(fx, "missing", &["true"]);
    spec.image = image.clone();
    let started = Instant::now();
    let r = rt.run(spec, CancellationToken::new()).await;
    let took = started.elapsed();
    let e: Error = match r {
        Ok(o) => panic!("{case}: a run of a missing image must fail, got {o:?}"),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert!(
        msg.contains(&image),
        "{case}: the error must name the image, got {msg:?}"
    );
    assert!(
        !e.is_retryable(),
        "{case}: a missing image is not retryable: {msg}"
    );
    assert!(took < SLACK + SLACK, "{case}: failing took {took:?}");
    assert!(
        container_of(rt, task).await.is_none(),
        "{case}: a container was left behind"
    );
    // ensure_image: a present image is there; a missing one fails the same way (or, for a runtime
    // that pulls inside `run` only, is left to `run`).
    rt.ensure_image(&fx.image, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{case}: ensure_image of the present image {}: {e}",
                fx.image
            )
        });
    if let Err(e) = rt.ensure_image(&image, Duration::from_secs(60)).await {
        let msg = e.to_string();
        assert!(
            msg.contains(&image) && !e.is_retryable(),
            "{case}: ensure_image must name the missing image, not retryable: {msg}"
        );
    }
}

/// The hardened defaults, seen from inside: no effective or bounding capabilities, `NoNewPrivs`, uid and gid
/// 65534, a read-only root filesystem (even for root) with a writable sticky `/tmp`, and the pids limit in effect; an added
/// capability is present for root.
pub async fn hardening_from_inside(rt: &dyn ContainerRuntime, fx: &RuntimeFixture) {
    let t = Tracker::default();
    hardening_from_inside_in(rt, fx, &t).await;
    t.assert_all_gone(rt, "hardening_from_inside").await;
}

/// `key=value` and `Key:\tvalue` lines of `out`.
fn fields(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| {
            l.split_once('=')
                .or_else(|| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

async fn hardening_from_inside_in(rt: &dyn ContainerRuntime, fx: &RuntimeFixture, t: &Tracker) {
    let case = "hardening_from_inside";
    let caps = rt
        .capabilities()
        .await
        .unwrap_or_else(|e| panic!("{case}: capabilities failed: {e}"));
    let pids = 48u32;
    let script = "grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status; \
                  echo uid=$(id -u); echo gid=$(id -g); \
                  awk '$2 == \"/\" { split($4, o, \",\"); m = o[1] } END { print \"rootmount=\" m }' /proc/mounts; \
                  if touch /tmp/kat-probe 2>/dev/null; then echo tmp=rw; else echo tmp=ro; fi; \
                  echo tmpmode=$(stat -c %a /tmp); \
                  for f in /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max; do \
                    if [ -r $f ]; then echo pidsmax=$(cat $f); break; fi; done";
    let (mut spec, _) = t.spec(fx, "hardening", &["sh", "-c", script]);
    spec.limits.pids = Some(pids);
    let o = run(rt, spec, case).await;
    assert_exit(&o, 0, case);
    let out = text(&o.stdout_tail);
    let f = fields(&out);
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("<missing>");
    assert_eq!(
        get("CapEff"),
        "0000000000000000",
        "{case}: effective capabilities, output {out:?}"
    );
    assert_eq!(
        get("CapBnd"),
        "0000000000000000",
        "{case}: bounding capabilities, output {out:?}"
    );
    assert_eq!(
        get("NoNewPrivs"),
        "1",
        "{case}: no-new-privileges, output {out:?}"
    );
    assert_eq!(get("uid"), "65534", "{case}: default uid, output {out:?}");
    assert_eq!(get("gid"), "65534", "{case}: default gid, output {out:?}");
    assert_eq!(
        get("rootmount"),
        "ro",
        "{case}: the root filesystem must be mounted read-only, output {out:?}"
    );
    assert_eq!(
        get("tmp"),
        "rw",
        "{case}: /tmp must be writable, output {out:?}"
    );
    assert_eq!(
        get("tmpmode"),
        "1777",
        "{case}: /tmp's mode, output {out:?}"
    );

    if !caps.pids_limit {
        eprintln!(
            "{case}: SKIPPED the pids limit check: the runtime reports no pids limit support"
        );
    } else if let Some(max) = f.get("pidsmax") {
        assert_eq!(
            max,
            &pids.to_string(),
            "{case}: pids.max in the container's cgroup"
        );
    } else {
        // No cgroup file to read: show the limit by forking past it.
        let (mut spec, _) = t.spec(
            fx,
            "pids",
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 64 ]; do sleep 30 & echo spawned; i=$((i+1)); done; echo all-spawned",
            ],
        );
        spec.limits.pids = Some(16);
        spec.timeout = Duration::from_secs(30);
        let o = run(rt, spec, case).await;
        let out = text(&o.stdout_tail);
        let spawned = out.lines().filter(|l| *l == "spawned").count();
        assert!(
            !out.contains("all-spawned") && spawned < 16,
            "{case}: 64 processes were started under a pids limit of 16 ({spawned} reported)"
        );
    }

    // An added capability is there for root (and only that one); even root cannot write to the root
    // filesystem.
    let (mut spec, task) = t.spec(
        fx,
        "cap-add",
        &[
            "sh",
            "-c",
            "grep -E '^(CapEff|CapBnd):' /proc/self/status; \
             if touch /kat-rootfs-probe 2>/dev/null; then echo rootfs=rw; else echo rootfs=ro; fi",
        ],
    );
    spec.hardening.user = Some("0:0".into());
    spec.hardening.cap_add = vec!["NET_RAW".into()];
    let o = run(rt, spec, case).await;
    assert_exit(&o, 0, case);
    let out = text(&o.stdout_tail);
    let f = fields(&out);
    let net_raw = "0000000000002000";
    assert_eq!(
        f.get("CapEff").map(String::as_str),
        Some(net_raw),
        "{case}: cap_add NET_RAW, output {out:?}"
    );
    assert_eq!(
        f.get("CapBnd").map(String::as_str),
        Some(net_raw),
        "{case}: cap_add NET_RAW, output {out:?}"
    );
    assert_eq!(
        f.get("rootfs").map(String::as_str),
        Some("ro"),
        "{case}: root must not be able to write to the root filesystem, output {out:?}"
    );
    assert_gone(rt, task, case).await;

    // A writable path is an empty tmpfs the default user can write to; the rest of the root stays
    // read-only.
    let (mut spec, task) = t.spec(
        fx,
        "writable",
        &[
            "sh",
            "-c",
            "ls -A /var/cache/kat; echo kept > /var/cache/kat/x && echo cache=$(cat /var/cache/kat/x); \
             if touch /var/cache/kat-sibling 2>/dev/null; then echo rootfs=rw; else echo rootfs=ro; fi",
        ],
    );
    spec.hardening.writable_paths = vec!["/var/cache/kat".into()];
    let o = run(rt, spec, case).await;
    assert_exit(&o, 0, case);
    let out = text(&o.stdout_tail);
    let f = fields(&out);
    assert_eq!(
        f.get("cache").map(String::as_str),
        Some("kept"),
        "{case}: writable path, output {out:?}"
    );
    assert!(
        out.starts_with("cache="),
        "{case}: the tmpfs starts empty, output {out:?}"
    );
    assert_eq!(
        f.get("rootfs").map(String::as_str),
        Some("ro"),
        "{case}: only the writable path is writable, output {out:?}"
    );
    assert_gone(rt, task, case).await;
}

/// `reap_orphans` removes the deployment's managed containers whose task is not live (or whose task label
/// does not parse), keeps the live ones and every other deployment's, and the runs of the removed
/// containers end.
///
/// The case's containers carry a deployment name of their own, so other users of the engine are left
/// alone; one container carries a second name and must survive although its task is not live. The
/// container without a task is found by name: the runtime's container name must contain the spec's `name`
/// (a suffix that makes it unique is fine).
pub async fn reap_orphans_removes_only_orphans(rt: &dyn ContainerRuntime, fx: &RuntimeFixture) {
    let t = Tracker::default();
    reap_orphans_in(rt, fx, &t).await;
    t.assert_all_gone(rt, "reap_orphans_removes_only_orphans")
        .await;
}

async fn reap_orphans_in(rt: &dyn ContainerRuntime, fx: &RuntimeFixture, t: &Tracker) {
    let case = "reap_orphans";
    let run_id = uuid::Uuid::new_v4().simple();
    let mine = format!("conformance-{run_id}");
    let other = format!("conformance-other-{run_id}");
    let in_deployment = |(mut spec, task): (ContainerSpec, TaskId), d: &str| {
        spec.labels.insert(LABEL_DEPLOYMENT.into(), d.to_string());
        (spec, task)
    };
    let (orphan_spec, orphan) = in_deployment(t.spec(fx, "reap-orphan", &["sleep", "60"]), &mine);
    let (live_spec, live) = in_deployment(t.spec(fx, "reap-live", &["sleep", "60"]), &mine);
    let (mut garbage_spec, _) = in_deployment(t.spec(fx, "reap-garbage", &["sleep", "60"]), &mine);
    let (foreign_spec, foreign) =
        in_deployment(t.spec(fx, "reap-foreign", &["sleep", "60"]), &other);
    let garbage_label = format!("not-a-task-{run_id}");
    garbage_spec
        .labels
        .insert(LABEL_TASK.into(), garbage_label.clone());

    let live_cancel = CancellationToken::new();
    let foreign_cancel = CancellationToken::new();
    let garbage_name = garbage_spec.name.clone();
    let (orphan_run, live_run, garbage_run, foreign_run) = (
        rt.run(orphan_spec, CancellationToken::new()),
        rt.run(live_spec, live_cancel.clone()),
        rt.run(garbage_spec, CancellationToken::new()),
        rt.run(foreign_spec, foreign_cancel.clone()),
    );
    let checks = async {
        let orphan_c = wait_running(rt, orphan, case, SLACK).await;
        let live_c = wait_running(rt, live, case, SLACK).await;
        let foreign_c = wait_running(rt, foreign, case, SLACK).await;
        assert_eq!(
            foreign_c.deployment.as_deref(),
            Some(other.as_str()),
            "{case}: list_managed must report the {LABEL_DEPLOYMENT} label"
        );
        // The garbage container has no task; find it by name.
        let deadline = Instant::now() + SLACK;
        let garbage_c = loop {
            if let Some(c) = list(rt).await.into_iter().find(|c| {
                c.task.is_none() && c.name.contains(&garbage_name) && c.state == "running"
            }) {
                break c;
            }
            assert!(
                Instant::now() < deadline,
                "{case}: the container labelled {LABEL_TASK}={garbage_label} never showed as running with a name \
                 containing {garbage_name:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };

        let removed = rt
            .reap_orphans(&mine, &HashSet::from([live]))
            .await
            .unwrap_or_else(|e| panic!("{case}: reap_orphans failed: {e}"));
        assert!(
            removed.contains(&orphan_c.id),
            "{case}: the orphan {} was not reaped (removed: {removed:?})",
            orphan_c.id
        );
        assert!(
            removed.contains(&garbage_c.id),
            "{case}: the container with an unparsable task label was not reaped (removed: {removed:?})"
        );
        assert!(
            !removed.contains(&live_c.id),
            "{case}: the live container was reaped"
        );
        assert!(
            !removed.contains(&foreign_c.id),
            "{case}: another deployment's container was reaped"
        );
        assert!(
            container_of(rt, orphan).await.is_none(),
            "{case}: the orphan is still listed"
        );
        for (what, task) in [("live", live), ("other deployment's", foreign)] {
            let still = container_of(rt, task).await;
            assert!(
                still.as_ref().is_some_and(|c| c.state == "running"),
                "{case}: the {what} container must keep running, got {still:?}"
            );
        }
    };

    let orphan_run = async {
        let started = Instant::now();
        let r = orphan_run.await;
        (r, started.elapsed())
    };
    let garbage_run = async {
        let started = Instant::now();
        let r = garbage_run.await;
        (r, started.elapsed())
    };
    let live_run = async {
        let r = live_run.await;
        r.unwrap_or_else(|e| panic!("{case}: the live run failed: {e}"))
    };
    let foreign_run = async {
        let r = foreign_run.await;
        r.unwrap_or_else(|e| panic!("{case}: the other deployment's run failed: {e}"))
    };
    let ((), (orphan_r, orphan_took), (garbage_r, garbage_took), live_o, foreign_o) = tokio::join!(
        async {
            checks.await;
            live_cancel.cancel();
            foreign_cancel.cancel();
        },
        orphan_run,
        garbage_run,
        live_run,
        foreign_run
    );
    // A reaped container's run ends (with an outcome or an error: either is acceptable), well before its
    // `sleep 60` would have.
    for (what, took, r) in [
        ("orphan", orphan_took, orphan_r.map(|o| o.reason)),
        ("garbage", garbage_took, garbage_r.map(|o| o.reason)),
    ] {
        assert!(
            took < Duration::from_secs(40),
            "{case}: the {what} run went on for {took:?} after its container was reaped ({r:?})"
        );
    }
    assert_eq!(
        live_o.reason,
        EndReason::Cancelled,
        "{case}: the live container ran until it was cancelled"
    );
    assert_eq!(
        foreign_o.reason,
        EndReason::Cancelled,
        "{case}: the other deployment's container ran until it was cancelled"
    );
    assert_gone(rt, live, case).await;
    assert_gone(rt, foreign, case).await;
}

/// A caller that drops its `run` future mid-run (a timeout around it, a panic, a dropped task) still gets the
/// container killed and removed within a few seconds.
pub async fn dropped_future_still_removes(rt: &dyn ContainerRuntime, fx: &RuntimeFixture) {
    let t = Tracker::default();
    dropped_future_in(rt, fx, &t).await;
    t.assert_all_gone(rt, "dropped_future_still_removes").await;
}

async fn dropped_future_in(rt: &dyn ContainerRuntime, fx: &RuntimeFixture, t: &Tracker) {
    let case = "dropped_future_still_removes";
    let (spec, task) = t.spec(fx, "dropped", &["sleep", "60"]);
    {
        let fut = rt.run(spec, CancellationToken::new());
        tokio::pin!(fut);
        let deadline = Instant::now() + SLACK;
        // Drive the run until its container is up, then drop the future.
        loop {
            tokio::select! {
                r = &mut fut => panic!("{case}: a `sleep 60` run ended early: {r:?}"),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            if container_of(rt, task)
                .await
                .is_some_and(|c| c.state == "running")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{case}: the container never showed as running"
            );
        }
    }
    let dropped = Instant::now();
    assert_gone(rt, task, case).await;
    let took = dropped.elapsed();
    assert!(
        took < GONE_WITHIN,
        "{case}: removal after the drop took {took:?}"
    );
}

/// `capabilities` answers with a name and a version, and says named volumes work (the entrypoint needs them).
pub async fn capabilities_are_reported(rt: &dyn ContainerRuntime, _fx: &RuntimeFixture) {
    let case = "capabilities_are_reported";
    let caps = rt
        .capabilities()
        .await
        .unwrap_or_else(|e| panic!("{case}: capabilities failed: {e}"));
    assert!(!caps.name.is_empty(), "{case}: empty runtime name");
    assert!(
        !caps.engine_version.is_empty(),
        "{case}: empty engine version"
    );
    assert!(
        caps.named_volumes,
        "{case}: the entrypoint needs named volumes"
    );
}

/// Every case in sequence, then a check that none of the containers they created is left.
pub async fn run_all(rt: &dyn ContainerRuntime, fx: &RuntimeFixture) {
    let t = Tracker::default();
    capabilities_are_reported(rt, fx).await;
    echo_and_exit_codes_in(rt, fx, &t).await;
    stdout_stderr_and_bounded_tails_in(rt, fx, &t).await;
    env_and_argv_round_trip_in(rt, fx, &t).await;
    entrypoint_volume_read_only_in(rt, fx, &t).await;
    prepare_entrypoint_idempotent_in(rt, fx, &t).await;
    entrypoint_pass_through_in(rt, fx, &t).await;
    deadline_kills_in(rt, fx, &t).await;
    cancellation_kills_in(rt, fx, &t).await;
    missing_image_fails_fast_in(rt, fx, &t).await;
    hardening_from_inside_in(rt, fx, &t).await;
    reap_orphans_in(rt, fx, &t).await;
    dropped_future_in(rt, fx, &t).await;
    t.assert_all_gone(rt, "run_all").await;
}
