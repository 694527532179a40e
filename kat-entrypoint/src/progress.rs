//! With several commands (`KAT_COMMANDS`), a command's start is logged only once it has run for
//! [`SLOW`]: a quick command gets one line, when it ends, and a slow one also says what it runs while
//! it runs. Every log line is a write the container engine carries to the task's log (through its
//! shim and daemon); fifty quick commands of a mode 3 task with three lines each cost a tenth of the
//! task's time on a two-core machine.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::log::log;

/// How long a command runs before its "running" line is logged.
pub(crate) const SLOW: Duration = Duration::from_secs(1);

/// The command being watched.
struct Current {
    /// The line to log once it is slow.
    line: String,
    /// When it started.
    since: Instant,
    /// Whether `line` was logged.
    logged: bool,
}

/// What the watching thread and the commands share, under one mutex.
#[derive(Default)]
struct State {
    /// The running command, if one is watched.
    current: Option<Current>,
    /// Set when [`Progress`] is dropped: the thread ends.
    stop: bool,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.0.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A thread that logs a command's "running" line once it has run for [`SLOW`]. Dropping it stops
/// the thread.
pub(crate) struct Progress {
    shared: Shared,
    thread: Option<JoinHandle<()>>,
}

/// A command started through [`Progress::running`]; dropping it without [`Running::end`] also
/// ends the watch.
pub(crate) struct Running<'a> {
    /// `None` once ended.
    progress: Option<&'a Progress>,
}

impl Progress {
    /// Starts the watching thread.
    pub(crate) fn start(stack: usize) -> std::io::Result<Progress> {
        let shared: Shared = Arc::default();
        let watched = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("progress".to_owned())
            .stack_size(stack)
            .spawn(move || watch(&watched))?;
        Ok(Progress {
            shared,
            thread: Some(thread),
        })
    }

    /// A command starts; `line` is logged if it still runs after [`SLOW`].
    pub(crate) fn running(&self, line: String) -> Running<'_> {
        lock(&self.shared).current = Some(Current {
            line,
            since: Instant::now(),
            logged: false,
        });
        self.shared.1.notify_all();
        Running {
            progress: Some(self),
        }
    }

    fn clear(&self) -> bool {
        lock(&self.shared).current.take().is_some_and(|c| c.logged)
    }
}

impl Running<'_> {
    /// The command ended: `true` when its "running" line was logged. After this returns, that
    /// line can no longer be logged.
    pub(crate) fn end(mut self) -> bool {
        self.progress.take().is_some_and(Progress::clear)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(progress) = self.progress.take() {
            progress.clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        lock(&self.shared).stop = true;
        self.shared.1.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The watching thread: waits until the current command has run for [`SLOW`], then logs its line
/// once. It logs while it holds the lock, and [`Progress::clear`] takes the lock to end a watch,
/// so a line is never logged for a command that has ended.
fn watch(shared: &Shared) {
    let mut state = lock(shared);
    loop {
        if state.stop {
            return;
        }
        let due = state
            .current
            .as_ref()
            .filter(|c| !c.logged)
            .map(|c| c.since + SLOW);
        state = match due {
            None => shared.1.wait(state).unwrap_or_else(PoisonError::into_inner),
            Some(due) => {
                let now = Instant::now();
                if now >= due {
                    if let Some(current) = state.current.as_mut() {
                        log!("{}", current.line);
                        current.logged = true;
                    }
                    state
                } else {
                    shared
                        .1
                        .wait_timeout(state, due - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_command_is_logged_a_quick_one_not() {
        let progress = Progress::start(256 * 1024).expect("thread");
        let quick = progress.running("quick".into());
        assert!(!quick.end(), "a quick command's start is not logged");
        let slow = progress.running("slow".into());
        std::thread::sleep(SLOW + Duration::from_millis(300));
        assert!(slow.end(), "a slow command's start is logged");
        // A watch dropped without end() is over too: the next command starts its own.
        drop(progress.running("dropped".into()));
        assert!(lock(&progress.shared).current.is_none());
        let next = progress.running("next".into());
        assert!(!next.end());
    }
}
