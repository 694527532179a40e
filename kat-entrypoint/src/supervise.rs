//! The running command and the signals forwarded to it.
//!
//! SIGTERM and SIGINT get a handler (through `signal-hook`, which writes to a self-pipe that one thread reads), so
//! no `unsafe` code is needed here and the signals reach us even when we are PID 1 in a container (the kernel drops
//! only default-action signals to PID 1). The signal mask is never touched: `std::process::Command` does not reset
//! it in the child, so blocking the signals here (for `sigwait`) would leave them blocked in the command. Handled
//! signals are reset to their default action by `exec`, so the command starts with default dispositions.
//!
//! Each command runs in its own process group; a forwarded signal goes to that group, so a shell's children get
//! it too. The group id is registered under a mutex at spawn and cleared before the child is reaped, so a signal
//! can never reach a recycled pid.

use std::io;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use signal_hook::iterator::Signals;

use crate::log::log;

/// The signals forwarded to the command.
const FORWARDED: [Signal; 2] = [Signal::SIGTERM, Signal::SIGINT];

#[derive(Debug, Default)]
struct State {
    /// The last forwarded signal received, if any.
    received: Option<Signal>,
    /// The process group of the running command.
    group: Option<Pid>,
}

/// Tracks the running command and forwards signals to it.
#[derive(Debug, Default)]
pub(crate) struct Supervisor {
    state: Mutex<State>,
}

/// A spawned command, or why none was spawned.
pub(crate) enum Spawned {
    /// Running; wait for it with [`Supervisor::wait`].
    Child(Child),
    /// A forwarded signal arrived earlier: no new command is started.
    Stopped(Signal),
}

impl Supervisor {
    /// Installs the handlers for the forwarded signals and starts the forwarding thread.
    pub(crate) fn install() -> io::Result<Arc<Supervisor>> {
        let mut signals = Signals::new(FORWARDED.map(|sig| sig as i32))?;
        let supervisor = Arc::new(Supervisor::default());
        let forwarder = Arc::clone(&supervisor);
        std::thread::Builder::new()
            .name("signals".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                for raw in signals.forever() {
                    if let Ok(sig) = Signal::try_from(raw) {
                        forwarder.forward(sig);
                    }
                }
            })?;
        Ok(supervisor)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn forward(&self, sig: Signal) {
        let mut state = self.lock();
        state.received = Some(sig);
        match state.group {
            Some(group) => {
                let result = killpg(group, sig);
                log!(
                    "received {}, forwarded to the command (process group {group}){}",
                    sig.as_str(),
                    result.err().map(|e| format!(": {e}")).unwrap_or_default()
                );
            }
            None => log!(
                "received {}, no command running: none will be started",
                sig.as_str()
            ),
        }
    }

    /// The forwarded signal received, if any.
    pub(crate) fn received(&self) -> Option<Signal> {
        self.lock().received
    }

    /// Spawns `command` in a new process group and registers it, unless a forwarded signal arrived already.
    pub(crate) fn spawn(&self, command: &mut Command) -> io::Result<Spawned> {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        let mut state = self.lock();
        if let Some(sig) = state.received {
            return Ok(Spawned::Stopped(sig));
        }
        let child = command.spawn()?;
        state.group = i32::try_from(child.id()).ok().map(Pid::from_raw);
        Ok(Spawned::Child(child))
    }

    /// Sends `sig` to the running command's process group, if one is running.
    pub(crate) fn signal_command(&self, sig: Signal) {
        if let Some(group) = self.lock().group {
            let _ = killpg(group, sig);
        }
    }

    /// Waits for `child` to exit, unregisters it, then reaps it.
    pub(crate) fn wait(&self, child: &mut Child) -> io::Result<ExitStatus> {
        if let Ok(pid) = i32::try_from(child.id()) {
            // Wait without reaping, so the pid stays ours until it is unregistered.
            loop {
                match waitid(
                    Id::Pid(Pid::from_raw(pid)),
                    WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
                ) {
                    Ok(_) => break,
                    Err(Errno::EINTR) => {}
                    Err(e) => {
                        log!("waitid failed ({e}); reaping directly");
                        break;
                    }
                }
            }
        }
        self.lock().group = None;
        let status = child.wait();
        reap_orphans();
        status
    }
}

/// Reaps exited processes that were re-parented to us (when we are PID 1 in a container, orphans of the command
/// become our children). Only called while no command is registered, so it cannot reap the command itself.
fn reap_orphans() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Sends SIGKILL to a process group that is no longer registered (processes the command left behind).
pub(crate) fn kill_group(group: u32) -> bool {
    match i32::try_from(group) {
        Ok(group) => killpg(Pid::from_raw(group), Signal::SIGKILL).is_ok(),
        Err(_) => false,
    }
}
