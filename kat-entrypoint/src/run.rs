//! The run: download inputs, run each command with its output spooled, upload per the protocol.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use kat_protocol::exit;
use nix::sys::signal::Signal;

use crate::config::{Config, Output};
use crate::http::Url;
use crate::log::log;
use crate::placeholder;
use crate::progress::{Progress, Running};
use crate::supervise::{self, Spawned, Supervisor};
use crate::transfer::{BUF_SIZE, Client, TransferError};

/// How long stdout/stderr may stay open after the command exited (held by processes it left behind) before its
/// process group is killed.
const LINGER: Duration = Duration::from_secs(5);

/// Stack size of the helper threads (their buffers live on the heap).
const STACK: usize = 256 * 1024;

/// A failure that ends the run at once.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Fatal {
    /// An input file could not be downloaded (exit 122).
    #[error("cannot download file {id}: {source}")]
    Download {
        /// The file id.
        id: String,
        /// Why.
        source: TransferError,
    },
    /// The commands file (`KAT_COMMANDS_FILE`) is not a list of commands (exit 121).
    #[error("{0}")]
    Commands(#[source] crate::config::ConfigError),
    /// A local file or process operation failed (exit 120).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: io::Error,
    },
}

impl Fatal {
    /// The process exit code for this failure.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Fatal::Download {
                source: TransferError::Local(_),
                ..
            } => exit::IO,
            Fatal::Download { .. } => exit::DOWNLOAD,
            Fatal::Io { .. } => exit::IO,
            Fatal::Commands(_) => exit::CONFIG,
        }
    }
}

fn io_context(context: impl Into<String>) -> impl FnOnce(io::Error) -> Fatal {
    let context = context.into();
    move |source| Fatal::Io { context, source }
}

/// The run's private directory under the spool directory, removed when dropped.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Creates `<spool>/kat-entrypoint.<pid>.<n>/`, and the spool directory itself if missing (a `FROM scratch`
    /// image has no `/tmp`).
    fn create(spool: &Path) -> Result<WorkDir, Fatal> {
        let spool = std::path::absolute(spool).map_err(io_context("KAT_SPOOL_DIR"))?;
        fs::create_dir_all(&spool).map_err(io_context(format!(
            "cannot create the spool directory {} (set KAT_SPOOL_DIR to a writable directory)",
            spool.display()
        )))?;
        for n in 0..1000 {
            let path = spool.join(format!("kat-entrypoint.{}.{n}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(WorkDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Fatal::Io {
                        context: format!("cannot create a work directory in {}", spool.display()),
                        source: e,
                    });
                }
            }
        }
        Err(Fatal::Io {
            context: format!("cannot create a work directory in {}", spool.display()),
            source: io::Error::from(io::ErrorKind::AlreadyExists),
        })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// What the commands added up to.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// Some upload failed for good.
    pub(crate) upload_failed: bool,
    /// Some command exceeded the output limit.
    pub(crate) limit_exceeded: bool,
    /// Commands were skipped because of this signal.
    pub(crate) stopped: Option<(Signal, usize)>,
    /// Exit code of the first command that failed (or 126/127 if it could not be started).
    pub(crate) first_failure: Option<i32>,
}

impl Summary {
    /// The entrypoint's exit code: upload failure, then skipped commands, then output limit, then the first
    /// failing command's code, else 0.
    pub(crate) fn exit_code(&self) -> i32 {
        if self.upload_failed {
            exit::UPLOAD
        } else if let Some((sig, _)) = self.stopped {
            exit::SIGNAL_BASE + sig as i32
        } else if self.limit_exceeded {
            exit::OUTPUT_LIMIT
        } else {
            self.first_failure.unwrap_or(0)
        }
    }

    fn failed(&mut self, code: i32) {
        self.first_failure.get_or_insert(code);
    }
}

/// One output to upload.
struct UploadJob {
    /// `command i/n`, for the log.
    label: String,
    file: File,
    /// The spool file, removed once uploaded.
    path: PathBuf,
    len: u64,
    filename: &'static str,
    file_type: String,
}

/// Uploads outputs on a thread of its own, so that the next command runs while the last one's
/// output is on its way (with `KAT_COMMANDS`, one upload per command). At most [`UPLOAD_QUEUE`]
/// outputs wait on disk. Dropping it waits for every queued upload.
///
/// One thread, on purpose: the API numbers files in the order they arrive, and a task's files in
/// command order are how a reader tells which output belongs to which target. Two uploaders were
/// measured faster (mode 3, 50 commands) but let a later output overtake an earlier one.
struct Uploader {
    queue: Option<mpsc::SyncSender<UploadJob>>,
    thread: Option<std::thread::JoinHandle<bool>>,
}

/// The upload thread: take jobs in order until the queue closes; `true` when every upload
/// succeeded. `quiet` (several commands): a successful upload is not logged on its own; one line
/// at the end counts them all. Failures and retries are logged either way.
fn upload_jobs(client: &Client, url: &Url, jobs: &mpsc::Receiver<UploadJob>, quiet: bool) -> bool {
    let mut all_ok = true;
    // Outputs uploaded, their bytes, and the time spent uploading them.
    let mut uploaded = (0usize, 0u64, Duration::ZERO);
    for UploadJob {
        label,
        mut file,
        path,
        len,
        filename,
        file_type,
    } in jobs
    {
        let what = format!("{label}: upload of {filename}");
        match client.upload(url, &mut file, len, filename, &file_type, &what) {
            Ok(done) => {
                uploaded = (uploaded.0 + 1, uploaded.1 + len, uploaded.2 + done.elapsed);
                let secs = done.elapsed.as_secs_f64();
                if !quiet {
                    log!(
                        "{label}: uploaded {filename} ({len} bytes, type={file_type}) -> {} in {secs:.2} s ({:.1} MB/s)",
                        done.status,
                        len as f64 / 1e6 / secs.max(1e-6)
                    );
                }
            }
            Err(e) => {
                log!("{label}: upload of {filename} ({len} bytes) failed: {e}");
                all_ok = false;
            }
        }
        drop(file);
        let _ = fs::remove_file(&path);
    }
    let (files, bytes, spent) = uploaded;
    if quiet && files > 0 {
        log!(
            "uploaded {files} output{} ({bytes} bytes) in {:.2} s",
            if files == 1 { "" } else { "s" },
            spent.as_secs_f64()
        );
    }
    all_ok
}

/// Outputs waiting for the uploader before the next command has to wait.
const UPLOAD_QUEUE: usize = 2;

impl Uploader {
    /// `quiet`: see [`upload_jobs`].
    fn start(client: Client, url: Url, quiet: bool) -> Result<Uploader, Fatal> {
        let (queue, jobs) = mpsc::sync_channel::<UploadJob>(UPLOAD_QUEUE);
        let thread = std::thread::Builder::new()
            .name("upload".to_owned())
            .stack_size(STACK)
            .spawn(move || upload_jobs(&client, &url, &jobs, quiet))
            .map_err(io_context("cannot start the upload thread".to_owned()))?;
        Ok(Uploader {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queue an upload; waits while [`UPLOAD_QUEUE`] are already waiting. `false` if the uploader
    /// is gone (it never stops early, so only after a panic).
    fn send(&self, job: UploadJob) -> bool {
        self.queue.as_ref().is_some_and(|q| q.send(job).is_ok())
    }

    /// Wait for every queued upload; `true` when all succeeded.
    fn finish(mut self) -> bool {
        self.join()
    }

    fn join(&mut self) -> bool {
        drop(self.queue.take());
        self.thread.take().is_none_or(|t| t.join().unwrap_or(false))
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.join();
    }
}

/// The configured run.
pub(crate) struct Runner {
    config: Config,
    supervisor: Arc<Supervisor>,
    client: Option<Client>,
}

/// Why spooling a stream stopped early.
#[derive(Debug)]
enum SpoolError {
    Limit,
    Io(io::Error),
}

/// A helper thread's result.
enum Done {
    Stdin(io::Result<(u64, bool)>),
    Stdout(File, Result<u64, SpoolError>),
    Stderr(File, Result<u64, SpoolError>),
}

fn quote(argv: &[OsString]) -> String {
    const MAX: usize = 400;
    let text = argv
        .iter()
        .map(|a| format!("{:?}", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    if text.chars().count() > MAX {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}...")
    } else {
        text
    }
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), Fatal> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(STACK)
        .spawn(f)
        .map(|_| ())
        .map_err(io_context(format!("cannot start the {name} thread")))
}

/// Copies `pipe` into `file` until EOF; past `limit` bytes (or on a write error) kills the command.
fn spool(
    pipe: &mut dyn Read,
    file: &mut File,
    limit: u64,
    supervisor: &Supervisor,
) -> Result<u64, SpoolError> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total = 0u64;
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                supervisor.signal_command(Signal::SIGKILL);
                return Err(SpoolError::Io(e));
            }
        };
        if total + n as u64 > limit {
            supervisor.signal_command(Signal::SIGKILL);
            return Err(SpoolError::Limit);
        }
        if let Err(e) = file.write_all(&buf[..n]) {
            supervisor.signal_command(Signal::SIGKILL);
            return Err(SpoolError::Io(e));
        }
        total += n as u64;
    }
}

/// Streams `path` into the command's stdin and closes it. `Ok((bytes, true))` if the command closed its stdin
/// before the end (not an error).
fn feed(path: &Path, stdin: ChildStdin) -> io::Result<(u64, bool)> {
    let mut file = File::open(path)?;
    let mut stdin = stdin;
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok((total, false)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        match stdin.write_all(&buf[..n]) {
            Ok(()) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok((total, true)),
            Err(e) => return Err(e),
        }
    }
}

impl Runner {
    /// A runner for `config`, forwarding signals through `supervisor`.
    pub(crate) fn new(config: Config, supervisor: Arc<Supervisor>) -> Runner {
        let client = config.token.as_deref().map(Client::new);
        Runner {
            config,
            supervisor,
            client,
        }
    }

    fn client(&self) -> Result<&Client, Fatal> {
        // Config validation guarantees a token whenever a request is made.
        self.client.as_ref().ok_or_else(|| Fatal::Io {
            context: "internal error".into(),
            source: io::Error::other("no token for an API request"),
        })
    }

    fn api(&self) -> Result<&Url, Fatal> {
        self.config.api.as_ref().ok_or_else(|| Fatal::Io {
            context: "internal error".into(),
            source: io::Error::other("no OPENKAT_API for a download"),
        })
    }

    /// Runs everything; returns the exit code.
    pub(crate) fn run(&self) -> Result<i32, Fatal> {
        // Pass-through mode without inputs needs no disk at all (read-only root, no /tmp).
        let needs_disk = self.config.commands_file.is_some()
            || self.config.in_file.is_some()
            || matches!(self.config.output, Output::Upload(_))
            || !placeholder::file_ids(self.config.commands.iter().flatten().map(|a| a.as_bytes()))
                .is_empty();
        let work = if needs_disk {
            Some(WorkDir::create(&self.config.spool_dir)?)
        } else {
            None
        };
        let work_path = work.as_ref().map(|w| w.path.clone()).unwrap_or_default();
        let loaded;
        let commands: &[Vec<OsString>] = match &self.config.commands_file {
            None => &self.config.commands,
            Some(id) => {
                loaded = self.load_commands(id, &work_path.join("commands.json"))?;
                &loaded
            }
        };
        let total = commands.len();
        log!(
            "plugin {}{}: {} command{}, {}",
            self.config.plugin_id.as_deref().unwrap_or("-"),
            self.config
                .task_id
                .as_deref()
                .map(|t| format!(", task {t}"))
                .unwrap_or_default(),
            total,
            if total == 1 { "" } else { "s" },
            match &self.config.output {
                Output::Upload(url) => format!("uploading to {url}"),
                Output::PassThrough => "pass-through (UPLOAD_URL=/dev/null, no upload)".into(),
            }
        );
        if self.config.ignored_argv > 0 {
            log!(
                "{} is set: ignoring the {} argv elements",
                if self.config.commands_file.is_some() {
                    "KAT_COMMANDS_FILE"
                } else {
                    "KAT_COMMANDS"
                },
                self.config.ignored_argv
            );
        }
        // Inputs first: nothing runs unless every input is here.
        let ids = placeholder::file_ids(commands.iter().flatten().map(|a| a.as_bytes()));
        let mut paths: HashMap<String, PathBuf> = HashMap::new();
        if !ids.is_empty() {
            let dir = work_path.join("files");
            debug_assert!(work.is_some(), "inputs need the work directory");
            fs::create_dir(&dir).map_err(io_context(format!("cannot create {}", dir.display())))?;
            for id in ids {
                let path = dir.join(&id);
                self.download(&id, &path)?;
                paths.insert(id, path);
            }
        }
        let stdin_path = match &self.config.in_file {
            Some(id) => Some(match paths.get(id) {
                Some(path) => path.clone(),
                None => {
                    let path = work_path.join("stdin");
                    self.download(id, &path)?;
                    path
                }
            }),
            None => None,
        };

        // Declared after `work`, so dropped (every upload finished) before the work directory goes.
        let uploader = match &self.config.output {
            Output::Upload(url) => Some(Uploader::start(
                self.client()?.clone(),
                url.clone(),
                total > 1,
            )?),
            Output::PassThrough => None,
        };
        // With several commands uploading, one line per quick command (see `progress`). In
        // pass-through mode a command's output follows its `running` line, which says whose it is.
        let progress = if total > 1 && uploader.is_some() {
            Some(Progress::start(STACK).map_err(io_context("cannot start the progress thread"))?)
        } else {
            None
        };
        let mut summary = Summary::default();
        for (index, argv) in commands.iter().enumerate() {
            let label = format!("command {}/{total}", index + 1);
            let argv: Vec<OsString> = argv
                .iter()
                .map(|a| OsString::from_vec(placeholder::substitute(a.as_bytes(), &paths)))
                .collect();
            let started = self.run_one(
                &label,
                &argv,
                stdin_path.as_deref(),
                &work_path,
                index,
                uploader.as_ref(),
                progress.as_ref(),
                &mut summary,
            )?;
            let skipped = total - index - usize::from(started);
            if let Some(sig) = self.supervisor.received()
                && skipped > 0
            {
                log!("{} received: skipping {skipped} command(s)", sig.as_str());
                summary.stopped = Some((sig, skipped));
                break;
            }
        }
        if let Some(uploader) = uploader
            && !uploader.finish()
        {
            summary.upload_failed = true;
        }
        drop(work);
        Ok(summary.exit_code())
    }

    /// Downloads the commands file to `dest` and parses it (at most
    /// [`COMMANDS_FILE_LIMIT`](kat_protocol::env::COMMANDS_FILE_LIMIT) bytes).
    fn load_commands(&self, id: &str, dest: &Path) -> Result<Vec<Vec<OsString>>, Fatal> {
        self.download(id, dest)?;
        let size = fs::metadata(dest)
            .map_err(io_context(format!("cannot stat {}", dest.display())))?
            .len();
        if size > kat_protocol::env::COMMANDS_FILE_LIMIT {
            return Err(Fatal::Commands(crate::config::ConfigError::Invalid {
                name: kat_protocol::env::COMMANDS_FILE,
                problem: format!(
                    "names a file of {size} bytes, more than the {} a commands file may have",
                    kat_protocol::env::COMMANDS_FILE_LIMIT
                ),
            }));
        }
        let text = fs::read_to_string(dest)
            .map_err(io_context(format!("cannot read {}", dest.display())))?;
        let _ = fs::remove_file(dest);
        crate::config::parse_commands_of(kat_protocol::env::COMMANDS_FILE, &text)
            .map_err(Fatal::Commands)
    }

    fn download(&self, id: &str, dest: &Path) -> Result<(), Fatal> {
        let url = self.api()?.join(&format!("/file/{id}/download/"));
        let start = Instant::now();
        let bytes = self
            .client()?
            .download(&url, dest, &format!("download of file {id}"))
            .map_err(|source| Fatal::Download {
                id: id.to_owned(),
                source,
            })?;
        log!(
            "downloaded file {id} ({bytes} bytes) in {:.2} s -> {}",
            start.elapsed().as_secs_f64(),
            dest.display()
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn run_one(
        &self,
        label: &str,
        argv: &[OsString],
        stdin_path: Option<&Path>,
        work: &Path,
        index: usize,
        uploader: Option<&Uploader>,
        progress: Option<&Progress>,
        summary: &mut Summary,
    ) -> Result<bool, Fatal> {
        let upload = uploader.is_some();
        let (mut command, rest) = match argv.split_first() {
            Some((program, rest)) => (Command::new(program), rest),
            None => return Ok(false),
        };
        command.args(rest);
        command.stdin(if stdin_path.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        if upload {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            command.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        }
        // Each command's own spool files: the last one's may still be uploading.
        let out_path = work.join(format!("stdout.{index}"));
        let err_path = work.join(format!("stderr.{index}"));
        let (out_file, err_file) = if upload {
            let open = |path: &Path| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(path)
                    .map_err(io_context(format!(
                        "cannot create spool file {}",
                        path.display()
                    )))
            };
            (Some(open(&out_path)?), Some(open(&err_path)?))
        } else {
            (None, None)
        };

        let shown = quote(argv);
        let watch = match progress {
            None => {
                log!("{label}: running {shown}");
                None
            }
            Some(p) => Some(p.running(format!(
                "{label}: running {shown} (started {} s ago)",
                crate::progress::SLOW.as_secs()
            ))),
        };
        let started = Instant::now();
        let mut child = match self.supervisor.spawn(&mut command) {
            Ok(Spawned::Child(child)) => child,
            Ok(Spawned::Stopped(sig)) => {
                log!("{label}: not started ({} received)", sig.as_str());
                return Ok(false);
            }
            Err(e) => {
                let code = if e.kind() == io::ErrorKind::NotFound {
                    exit::NOT_FOUND
                } else {
                    exit::NOT_EXECUTABLE
                };
                let what = if code == exit::NOT_FOUND {
                    "command not found"
                } else {
                    "command not executable"
                };
                // Named whole when its start was not logged (several commands).
                let named = if watch.is_none_or(Running::end) {
                    format!("{:?}", argv[0].to_string_lossy())
                } else {
                    shown
                };
                log!("{label}: {what}: {named}: {e} (exit {code})");
                summary.failed(code);
                return Ok(true);
            }
        };
        let group = child.id();

        let (tx, rx) = mpsc::channel::<Done>();
        let limit = self.config.output_limit;
        let helpers = (|| -> Result<usize, Fatal> {
            let mut started = 0;
            if let (Some(path), Some(stdin)) = (stdin_path, child.stdin.take()) {
                let tx = tx.clone();
                let path = path.to_owned();
                spawn_thread("stdin", move || {
                    let _ = tx.send(Done::Stdin(feed(&path, stdin)));
                })?;
                started += 1;
            }
            if let (Some(mut pipe), Some(mut file)) = (child.stdout.take(), out_file) {
                let tx = tx.clone();
                let supervisor = Arc::clone(&self.supervisor);
                spawn_thread("stdout", move || {
                    let result = spool(&mut pipe, &mut file, limit, &supervisor);
                    drop(pipe);
                    let _ = tx.send(Done::Stdout(file, result));
                })?;
                started += 1;
            }
            if let (Some(mut pipe), Some(mut file)) = (child.stderr.take(), err_file) {
                let tx = tx.clone();
                let supervisor = Arc::clone(&self.supervisor);
                spawn_thread("stderr", move || {
                    let result = spool(&mut pipe, &mut file, limit, &supervisor);
                    drop(pipe);
                    let _ = tx.send(Done::Stderr(file, result));
                })?;
                started += 1;
            }
            Ok(started)
        })();
        drop(tx);
        let mut pending = match helpers {
            Ok(n) => n,
            Err(fatal) => {
                // Never leave the command running unattended.
                self.supervisor.signal_command(Signal::SIGKILL);
                let _ = self.supervisor.wait(&mut child);
                return Err(fatal);
            }
        };

        let status = self
            .supervisor
            .wait(&mut child)
            .map_err(io_context(format!("{label}: waiting for the command")))?;
        // Every later line of this command starts with `head`, which names the command when its
        // start was not logged (several commands, a quick one; a single command's was, before it
        // started).
        let head = if watch.is_none_or(Running::end) {
            format!("{label}:")
        } else {
            format!("{label}: {shown}")
        };
        let code = status
            .code()
            .or_else(|| status.signal().map(|sig| exit::SIGNAL_BASE + sig))
            .unwrap_or(exit::IO);

        // Collect the helpers. Output ends at EOF, which processes left behind by the command can delay.
        let mut stdin_result = None;
        let mut stdout = None;
        let mut stderr = None;
        let mut deadline = Instant::now() + LINGER;
        let mut killed = false;
        while pending > 0 {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(done) => {
                    pending -= 1;
                    match done {
                        Done::Stdin(r) => stdin_result = Some(r),
                        Done::Stdout(f, r) => stdout = Some((f, r)),
                        Done::Stderr(f, r) => stderr = Some((f, r)),
                    }
                }
                Err(RecvTimeoutError::Timeout) if !killed => {
                    log!(
                        "{head} exited {code} but processes it left behind keep its pipes open: killing process group {group}"
                    );
                    supervise::kill_group(group);
                    killed = true;
                    deadline = Instant::now() + LINGER;
                }
                Err(RecvTimeoutError::Timeout) => {
                    let only_stdin = !upload || (stdout.is_some() && stderr.is_some());
                    if only_stdin {
                        log!(
                            "{head} abandoning the stdin writer (stdin held open by an escaped process)"
                        );
                        break;
                    }
                    deadline = Instant::now() + LINGER;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }

        let out_len = stdout.as_ref().map_or(Ok(0), |(_, r)| match r {
            Ok(n) => Ok(*n),
            Err(SpoolError::Limit) => Err("stdout"),
            Err(SpoolError::Io(_)) => Ok(0),
        });
        let err_len = stderr.as_ref().map_or(Ok(0), |(_, r)| match r {
            Ok(n) => Ok(*n),
            Err(SpoolError::Limit) => Err("stderr"),
            Err(SpoolError::Io(_)) => Ok(0),
        });
        for (name, result) in [("stdout", &stdout), ("stderr", &stderr)] {
            if let Some((_, Err(SpoolError::Io(e)))) = result {
                return Err(Fatal::Io {
                    context: format!("{label}: spooling {name}"),
                    source: io::Error::new(e.kind(), e.to_string()),
                });
            }
        }
        match stdin_result {
            Some(Ok((bytes, true))) => log!("{head} closed its stdin after {bytes} bytes"),
            Some(Err(e)) => {
                return Err(Fatal::Io {
                    context: format!("{label}: streaming IN_FILE to stdin"),
                    source: e,
                });
            }
            _ => {}
        }
        let elapsed = started.elapsed().as_secs_f64();
        let (out_len, err_len) = match (out_len, err_len) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(stream), _) | (_, Err(stream)) => {
                log!(
                    "{head} {stream} exceeded KAT_OUTPUT_LIMIT ({} bytes): command killed (exit {code}) after {elapsed:.2} s, nothing uploaded",
                    self.config.output_limit
                );
                summary.limit_exceeded = true;
                return Ok(true);
            }
        };
        let ended = if upload {
            format!(
                "{head} exited {code} after {elapsed:.2} s (stdout {out_len} bytes, stderr {err_len} bytes)"
            )
        } else {
            format!("{head} exited {code} after {elapsed:.2} s")
        };
        if code != 0 {
            summary.failed(code);
        }
        let Some(uploader) = uploader else {
            log!("{ended}");
            return Ok(true);
        };
        // stdout goes up after a success, stderr after a failure; the other spool file goes now.
        let (file, len, filename, file_type, path, other) = if code == 0 {
            (
                stdout.map(|(f, _)| f),
                out_len,
                "stdout",
                self.config.plugin_id.as_deref().unwrap_or_default(),
                out_path,
                err_path,
            )
        } else {
            (
                stderr.map(|(f, _)| f),
                err_len,
                "stderr",
                kat_protocol::ERROR_FILE_TYPE,
                err_path,
                out_path,
            )
        };
        let _ = fs::remove_file(&other);
        let file = match file {
            Some(file) if len > 0 => file,
            _ => {
                // On the end's line with several commands, a line of its own with one.
                let none = format!("no {filename}, nothing to upload");
                if progress.is_some() {
                    log!("{ended}; {none}");
                } else {
                    log!("{ended}");
                    log!("{label}: {none}");
                }
                let _ = fs::remove_file(&path);
                return Ok(true);
            }
        };
        log!("{ended}");
        let job = UploadJob {
            label: label.to_owned(),
            file,
            path,
            len,
            filename,
            file_type: file_type.to_owned(),
        };
        if !uploader.send(job) {
            log!("{label}: the upload thread is gone: {filename} not uploaded");
            summary.upload_failed = true;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_precedence() {
        let mut s = Summary::default();
        assert_eq!(s.exit_code(), 0);
        s.failed(3);
        s.failed(1);
        assert_eq!(s.exit_code(), 3);
        s.limit_exceeded = true;
        assert_eq!(s.exit_code(), exit::OUTPUT_LIMIT);
        s.stopped = Some((Signal::SIGTERM, 2));
        assert_eq!(s.exit_code(), 143);
        s.upload_failed = true;
        assert_eq!(s.exit_code(), exit::UPLOAD);
    }

    #[test]
    fn spool_enforces_the_limit() {
        let supervisor = Supervisor::default();
        let mut file = tempfile::tempfile().expect("tempfile");
        let mut data: &[u8] = &[7u8; 100];
        assert_eq!(
            spool(&mut data, &mut file, 100, &supervisor).expect("fits"),
            100
        );
        let mut data: &[u8] = &[7u8; 101];
        assert!(matches!(
            spool(&mut data, &mut file, 100, &supervisor),
            Err(SpoolError::Limit)
        ));
    }

    #[test]
    fn long_commands_are_shortened_in_logs() {
        let argv = vec![OsString::from("sh"), OsString::from("x".repeat(1000))];
        let text = quote(&argv);
        assert!(text.len() < 420 && text.ends_with("..."), "{text}");
        assert_eq!(quote(&[OsString::from("a b")]), "\"a b\"");
    }
}
