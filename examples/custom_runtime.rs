//! How to implement [`ContainerRuntime`] for another engine: a runtime that runs plugin commands as
//! local processes. It isolates nothing (no image, no namespaces, no hardening), so it is for developing
//! plugins on a laptop, not for scanning; a real backend maps the same calls onto its engine (see
//! `kat-runtime-docker` and `kat-runtime-podman`) and runs `kat_core::conformance::runtime` in its tests.
//!
//! ```text
//! cargo run --example custom_runtime
//! ```

use std::collections::{BTreeMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use kat::core::runtime::{
    CancellationToken, Capabilities, ContainerRuntime, ContainerSpec, EndReason, EntrypointBinary,
    EntrypointMount, ManagedContainer, Outcome,
};
use kat::core::task::TaskId;
use kat::core::{Error, Result};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Running children by name, with their task and pid.
type Children = Arc<Mutex<BTreeMap<String, (Option<TaskId>, u32)>>>;

/// Runs each "container" as a child process of this one.
#[derive(Debug, Default, Clone)]
struct ProcessRuntime {
    /// Running children, so that they can be listed and reaped.
    running: Children,
}

/// Keep the last `max` bytes of a stream, never more.
async fn tail(mut r: impl AsyncRead + Unpin, max: usize) -> Vec<u8> {
    let mut keep = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        keep.extend_from_slice(&buf[..n]);
        if keep.len() > max {
            keep.drain(..keep.len() - max);
        }
    }
    keep
}

#[async_trait]
impl ContainerRuntime for ProcessRuntime {
    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities {
            name: "process".into(),
            engine_version: std::env::consts::OS.into(),
            rootless: true,
            user_namespaces: false,
            pids_limit: false,
            named_volumes: false,
            host_network: true,
        })
    }

    async fn prepare_entrypoint(
        &self,
        binary: &EntrypointBinary,
        volume: &str,
        _deployment: &str,
    ) -> Result<EntrypointMount> {
        // No volumes: the binary is used from where it is. Report its hash like the real backends.
        let bytes = tokio::fs::read(&binary.path).await?;
        use sha2::Digest;
        Ok(EntrypointMount {
            volume: volume.to_string(),
            sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        })
    }

    async fn run(&self, spec: ContainerSpec, cancel: CancellationToken) -> Result<Outcome> {
        let started = Instant::now();
        let (program, args) = spec
            .argv
            .split_first()
            .ok_or_else(|| Error::invalid("argv", "nothing to run"))?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .envs(&spec.env)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true) // a dropped future still ends the process
            .spawn()
            .map_err(|e| Error::invalid("argv", format!("cannot start {program:?}: {e}")))?;
        let pid = child.id().unwrap_or(0);
        let task = spec
            .labels
            .get(kat::core::runtime::LABEL_TASK)
            .and_then(|t| t.parse().ok());
        self.running
            .lock()
            .map_err(|_| Error::backend("process", "lock poisoned", false))?
            .insert(spec.name.clone(), (task, pid));
        let out = tokio::spawn(tail(
            child.stdout.take().expect("piped"),
            spec.output_tail_bytes,
        ));
        let err = tokio::spawn(tail(
            child.stderr.take().expect("piped"),
            spec.output_tail_bytes,
        ));
        let (reason, status) = tokio::select! {
            s = child.wait() => (EndReason::Exited, Some(s?)),
            () = tokio::time::sleep(spec.timeout) => { child.kill().await?; (EndReason::TimedOut, None) }
            () = cancel.cancelled() => { child.kill().await?; (EndReason::Cancelled, None) }
        };
        if let Ok(mut r) = self.running.lock() {
            r.remove(&spec.name);
        }
        let exit_code = match status {
            Some(s) => s.code().map(i64::from).or_else(|| {
                std::os::unix::process::ExitStatusExt::signal(&s).map(|sig| 128 + i64::from(sig))
            }),
            None => Some(137),
        };
        Ok(Outcome {
            reason,
            exit_code,
            stdout_tail: out.await.unwrap_or_default(),
            stderr_tail: err.await.unwrap_or_default(),
            container_id: format!("pid-{pid}"),
            elapsed: started.elapsed(),
        })
    }

    async fn list_managed(&self) -> Result<Vec<ManagedContainer>> {
        let r = self
            .running
            .lock()
            .map_err(|_| Error::backend("process", "lock poisoned", false))?;
        Ok(r.iter()
            .map(|(name, (task, pid))| ManagedContainer {
                id: format!("pid-{pid}"),
                name: name.clone(),
                task: *task,
                state: "running".into(),
                deployment: None,
            })
            .collect())
    }

    async fn reap_orphans(
        &self,
        _deployment: &str,
        _live: &HashSet<TaskId>,
    ) -> Result<Vec<String>> {
        // Children die with this process (kill_on_drop), so a new process has no orphans to reap.
        Ok(Vec::new())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let rt = ProcessRuntime::default();
    println!("{:?}", rt.capabilities().await?);
    let mut spec = ContainerSpec::new(
        "demo",
        "unused",
        [
            "sh",
            "-c",
            "echo \"hello from $WHO\"; echo oops >&2; exit 3",
        ],
    );
    spec.env.insert("WHO".into(), "a process".into());
    let outcome = rt.run(spec, CancellationToken::new()).await?;
    println!(
        "{:?}, exit {:?}, stdout {:?}, stderr {:?}",
        outcome.reason,
        outcome.exit_code,
        String::from_utf8_lossy(&outcome.stdout_tail),
        String::from_utf8_lossy(&outcome.stderr_tail)
    );
    assert_eq!(outcome.exit_code, Some(3));
    // A deadline ends a long command.
    let mut slow = ContainerSpec::new("slow", "unused", ["sleep", "30"]);
    slow.timeout = std::time::Duration::from_millis(300);
    let o = rt.run(slow, CancellationToken::new()).await?;
    println!(
        "sleep 30 with a 300 ms deadline: {:?} after {:?}",
        o.reason, o.elapsed
    );
    assert_eq!(o.reason, EndReason::TimedOut);
    Ok(())
}
