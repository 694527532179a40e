//! # kat-entrypoint
//!
//! The static binary mounted read-only into every kat-rs plugin container as its entrypoint
//! (`/plugin/entrypoint`). The container's command (argv) is the plugin's command. The full contract the engine
//! is held to is `docs/entrypoint-protocol.md`; in short:
//!
//! 1. Read and validate the environment (`OPENKAT_API`, `OPENKAT_TOKEN`, `PLUGIN_ID`, `OPENKAT_TASK_ID`,
//!    `IN_FILE`, `UPLOAD_URL`, `KAT_COMMANDS`, `KAT_COMMANDS_FILE`, `KAT_OUTPUT_LIMIT`, `KAT_SPOOL_DIR`); any
//!    problem exits 121. With `KAT_COMMANDS_FILE`, download that file first and read the commands from it.
//! 2. Download every `{file/<digits>}` referenced anywhere in any argument (each id once, from
//!    `GET {OPENKAT_API}/file/<id>/download/` with `Authorization: Token <jwt>`) and replace each occurrence by
//!    the local path, plus the `IN_FILE` file. Any failure exits 122 before a command starts.
//! 3. Run the command (or each of the `KAT_COMMANDS`, one after another) without a shell, in its own process
//!    group, forwarding SIGTERM and SIGINT to it. `IN_FILE` is streamed to its stdin while stdout and stderr are
//!    read concurrently and spooled to files with fixed-size buffers (memory stays bounded whatever the size).
//! 4. Exit 0 with output: upload stdout as multipart (`type` = `PLUGIN_ID`, part `file` named `stdout`). Non-zero
//!    exit with stderr: upload stderr (`type=error`, named `stderr`). Uploads are streamed with a computed
//!    `Content-Length` and retried with bounded backoff; a final failure exits 123.
//! 5. Exit with the command's code (128+N when killed by signal N), or one of the entrypoint's own codes
//!    ([`kat_protocol::exit`]).
//!
//! `UPLOAD_URL=/dev/null` is pass-through mode: the command writes to our stdout and stderr, nothing is uploaded.
//! Logs are one line per event on stderr, prefixed `kat-entrypoint: `, and never contain the token.
//!
//! The variable names and exit codes are the crate `kat-protocol`'s, the contract in code that the engine
//! links too. Besides it the crate depends on no workspace crate and uses no async runtime: std threads and a
//! small HTTP/1.1 client keep the static binary small.

#![forbid(unsafe_code)]

mod config;
mod http;
mod log;
mod placeholder;
mod progress;
mod run;
mod supervise;
mod transfer;

use std::ffi::OsString;

use kat_protocol::{env, exit};

use crate::config::Config;
use crate::log::log;
use crate::run::Runner;
use crate::supervise::Supervisor;

/// Peak resident memory of this process, from `/proc/self/status` (`VmHWM`).
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.trim_start_matches("VmHWM:").trim().to_owned())
}

fn entrypoint() -> i32 {
    // Before any other thread exists: the signal mask is inherited by the threads started later.
    let supervisor = match Supervisor::install() {
        Ok(supervisor) => supervisor,
        Err(e) => {
            log!("cannot set up signal forwarding: {e}");
            return exit::IO;
        }
    };
    // Before any log line that could possibly contain it.
    if let Some(token) = std::env::var_os(env::TOKEN).and_then(|t| t.into_string().ok()) {
        log::set_secret(&token);
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let config = match Config::from_parts(args, |name| std::env::var_os(name)) {
        Ok(config) => config,
        Err(e) => {
            log!("configuration error: {e} (exit {})", exit::CONFIG);
            return exit::CONFIG;
        }
    };
    let code = match Runner::new(config, supervisor).run() {
        Ok(code) => code,
        Err(fatal) => {
            let code = fatal.exit_code();
            log!("{fatal} (exit {code})");
            return code;
        }
    };
    log!(
        "done: exit {code}{}",
        peak_rss()
            .map(|p| format!(" (peak RSS {p})"))
            .unwrap_or_default()
    );
    code
}

fn main() {
    std::process::exit(entrypoint());
}
