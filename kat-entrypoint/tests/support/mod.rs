//! Test harness: a small threaded HTTP/1.1 server standing in for the kat-http API, and a runner for the real
//! entrypoint binary.
//!
//! The server serves `GET /api/v1/file/<id>/download/` from memory (with `Content-Length` or chunked, or a
//! configured error status) and accepts `POST /api/v1/file/...` uploads. It parses the multipart body strictly
//! for the layout the protocol promises (field `type`, then part `file` last) and records a streaming sha256 of
//! the file part, never storing more than its first MiB.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The token the tests hand to the entrypoint. Distinctive, so that a leak is found by a plain `contains`.
pub const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.kat-test-secret-TOKEN-5f1c0ffee.sig-7a9";
pub const PLUGIN: &str = "test-plugin";

/// A downloadable file.
#[derive(Clone)]
pub struct ServedFile {
    pub content: Vec<u8>,
    pub status: u16,
    pub chunked: bool,
}

/// One upload request that reached the server, parsed.
#[derive(Clone, Debug)]
pub struct Upload {
    pub target: String,
    pub auth: Option<String>,
    pub content_length: u64,
    pub type_field: String,
    pub filename: String,
    pub part_content_type: String,
    pub len: u64,
    pub sha256: String,
    /// The first MiB of the file part.
    pub head: Vec<u8>,
    /// What the server answered.
    pub status: u16,
}

impl Upload {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }
}

#[derive(Default)]
struct State {
    files: HashMap<String, ServedFile>,
    upload_plan: VecDeque<u16>,
    upload_default: u16,
    uploads: Vec<Upload>,
    upload_attempts: usize,
    downloads: Vec<String>,
    requests: Vec<String>,
    errors: Vec<String>,
}

pub struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            upload_default: 201,
            ..State::default()
        }));
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = Arc::clone(&shared);
                thread::spawn(move || {
                    if let Err(e) = handle(stream, &state) {
                        state.lock().unwrap().errors.push(e);
                    }
                });
            }
        });
        Server { addr, state }
    }

    /// `http://127.0.0.1:<port>/api/v1`
    pub fn api(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    pub fn serve(&self, id: &str, content: &[u8], chunked: bool) {
        self.state.lock().unwrap().files.insert(
            id.to_owned(),
            ServedFile {
                content: content.to_vec(),
                status: 200,
                chunked,
            },
        );
    }

    pub fn refuse(&self, id: &str, status: u16) {
        self.state.lock().unwrap().files.insert(
            id.to_owned(),
            ServedFile {
                content: Vec::new(),
                status,
                chunked: false,
            },
        );
    }

    /// Statuses for the next uploads, in order; after them, `upload_default`.
    pub fn plan_uploads(&self, statuses: &[u16]) {
        self.state.lock().unwrap().upload_plan.extend(statuses);
    }

    pub fn set_upload_default(&self, status: u16) {
        self.state.lock().unwrap().upload_default = status;
    }

    /// Uploads that were answered with a 2xx status.
    pub fn accepted(&self) -> Vec<Upload> {
        let state = self.state.lock().unwrap();
        state
            .uploads
            .iter()
            .filter(|u| (200..300).contains(&u.status))
            .cloned()
            .collect()
    }

    pub fn upload_attempts(&self) -> usize {
        self.state.lock().unwrap().upload_attempts
    }

    pub fn downloads(&self) -> Vec<String> {
        self.state.lock().unwrap().downloads.clone()
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Protocol violations the server saw (malformed requests, bad multipart, missing token).
    pub fn errors(&self) -> Vec<String> {
        self.state.lock().unwrap().errors.clone()
    }
}

fn respond(stream: &mut TcpStream, status: u16, headers: &str, body: &[u8]) {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn read_line(reader: &mut impl BufRead) -> Result<String, String> {
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .map_err(|e| e.to_string())?;
    if !line.ends_with(b"\r\n") {
        return Err(format!(
            "line without CRLF: {:?}",
            String::from_utf8_lossy(&line)
        ));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|e| e.to_string())
}

fn handle(stream: TcpStream, state: &Mutex<State>) -> Result<(), String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut out = stream.try_clone().unwrap();
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let request_line = read_line(&mut reader)?;
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut headers = HashMap::new();
    loop {
        let line = read_line(&mut reader)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or("header without colon")?;
        headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
    }
    state
        .lock()
        .unwrap()
        .requests
        .push(format!("{method} {target}"));
    let auth = headers.get("authorization").cloned();
    if !headers.contains_key("host") {
        return Err("no Host header".into());
    }

    if method == "GET" {
        let id = target
            .strip_prefix("/api/v1/file/")
            .and_then(|rest| rest.strip_suffix("/download/"))
            .map(str::to_owned);
        let Some(id) = id else {
            respond(&mut out, 404, "", b"{\"detail\":\"no route\"}");
            return Ok(());
        };
        state.lock().unwrap().downloads.push(id.clone());
        if auth.as_deref() != Some(&format!("Token {TOKEN}")) {
            respond(&mut out, 401, "", b"{\"detail\":\"bad token\"}");
            return Err(format!("download {id} without the token"));
        }
        let file = state.lock().unwrap().files.get(&id).cloned();
        match file {
            None => respond(&mut out, 404, "", b"{\"detail\":\"Not found.\"}"),
            Some(f) if f.status != 200 => {
                // Echo the credentials the way a careless server might: the entrypoint must not log them.
                let body = format!(
                    "{{\"detail\":\"You do not have permission for file {id}\",\"auth\":\"{}\"}}",
                    auth.unwrap_or_default()
                );
                respond(
                    &mut out,
                    f.status,
                    "Content-Type: application/json\r\n",
                    body.as_bytes(),
                );
            }
            Some(f) if f.chunked => {
                let mut w = out;
                let _ = w.write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                );
                for chunk in f.content.chunks(1000) {
                    let _ = write!(w, "{:x};ext=1\r\n", chunk.len());
                    let _ = w.write_all(chunk);
                    let _ = w.write_all(b"\r\n");
                }
                let _ = w.write_all(b"0\r\nX-Trailer: yes\r\n\r\n");
            }
            Some(f) => respond(
                &mut out,
                200,
                "Content-Type: application/octet-stream\r\n",
                &f.content,
            ),
        }
        return Ok(());
    }

    if method == "POST" && target.starts_with("/api/v1/file/") {
        state.lock().unwrap().upload_attempts += 1;
        if auth.as_deref() != Some(&format!("Token {TOKEN}")) {
            respond(&mut out, 401, "", b"{\"detail\":\"bad token\"}");
            return Err("upload without the token".into());
        }
        let length: u64 = headers
            .get("content-length")
            .ok_or("upload without Content-Length")?
            .parse()
            .map_err(|_| "bad Content-Length")?;
        let boundary = headers
            .get("content-type")
            .and_then(|ct| ct.strip_prefix("multipart/form-data; boundary="))
            .ok_or("not multipart/form-data with a boundary")?
            .to_owned();
        let mut upload = parse_multipart(reader, length, &boundary)?;
        upload.target = target;
        upload.auth = auth;
        let status = {
            let mut s = state.lock().unwrap();
            let status = s.upload_plan.pop_front().unwrap_or(s.upload_default);
            upload.status = status;
            s.uploads.push(upload);
            status
        };
        respond(
            &mut out,
            status,
            "Content-Type: application/json\r\n",
            b"{\"id\":1}",
        );
        return Ok(());
    }
    respond(&mut out, 404, "", b"{}");
    Err(format!("unexpected request {method} {target}"))
}

/// Parses `--B` / `type` field / `--B` / `file` part / `--B--`, hashing the file part as it streams.
fn parse_multipart(
    reader: BufReader<TcpStream>,
    length: u64,
    boundary: &str,
) -> Result<Upload, String> {
    let mut reader = BufReader::with_capacity(256 * 1024, reader.take(length));
    let unread = |r: &BufReader<std::io::Take<BufReader<TcpStream>>>| {
        r.get_ref().limit() + r.buffer().len() as u64
    };
    let delimiter = format!("--{boundary}");
    let trailer = format!("\r\n--{boundary}--\r\n");
    if read_line(&mut reader)? != delimiter {
        return Err("body does not start with the boundary".into());
    }
    let mut type_field = None;
    loop {
        let mut disposition = String::new();
        let mut content_type = String::new();
        loop {
            let line = read_line(&mut reader)?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').ok_or("part header without colon")?;
            match name.to_ascii_lowercase().as_str() {
                "content-disposition" => disposition = value.trim().to_owned(),
                "content-type" => content_type = value.trim().to_owned(),
                other => return Err(format!("unexpected part header {other}")),
            }
        }
        if disposition == "form-data; name=\"type\"" {
            type_field = Some(read_line(&mut reader)?);
            if read_line(&mut reader)? != delimiter {
                return Err("type field not followed by the boundary".into());
            }
            continue;
        }
        let filename = disposition
            .strip_prefix("form-data; name=\"file\"; filename=\"")
            .and_then(|f| f.strip_suffix('"'))
            .ok_or_else(|| format!("unexpected part {disposition:?}"))?
            .to_owned();
        let remaining = unread(&reader);
        let len = remaining
            .checked_sub(trailer.len() as u64)
            .ok_or("body too short")?;
        let mut hasher = Sha256::new();
        let mut head = Vec::new();
        let mut part = (&mut reader).take(len);
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        loop {
            let n = part.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if head.len() < 1 << 20 {
                let take = n.min((1 << 20) - head.len());
                head.extend_from_slice(&buf[..take]);
            }
            got += n as u64;
        }
        if got != len {
            return Err(format!("file part truncated: {got} of {len}"));
        }
        let mut tail = vec![0u8; trailer.len()];
        reader.read_exact(&mut tail).map_err(|e| e.to_string())?;
        if tail != trailer.as_bytes() {
            return Err(format!(
                "bad closing delimiter {:?}",
                String::from_utf8_lossy(&tail)
            ));
        }
        return Ok(Upload {
            target: String::new(),
            auth: None,
            content_length: length,
            type_field: type_field.ok_or("no type field before the file part")?,
            filename,
            part_content_type: content_type,
            len,
            sha256: hex::encode(hasher.finalize()),
            head,
            status: 0,
        });
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The finished entrypoint run.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Highest VmHWM seen while polling `/proc/<pid>/status`, in KiB.
    pub polled_peak_kib: u64,
    pub elapsed: Duration,
}

impl Outcome {
    /// The entrypoint's own figure from its last log line (`peak RSS N kB`), in KiB.
    pub fn reported_peak_kib(&self) -> Option<u64> {
        let at = self.stderr.rfind("peak RSS ")?;
        self.stderr[at + 9..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

/// The entrypoint environment for `server`, writing its spool files to `spool`.
pub fn env_for(server: &Server, spool: &Path) -> Vec<(String, OsString)> {
    vec![
        ("OPENKAT_API".into(), server.api().into()),
        ("OPENKAT_TOKEN".into(), TOKEN.into()),
        ("PLUGIN_ID".into(), PLUGIN.into()),
        ("OPENKAT_TASK_ID".into(), "0b0e7c2a-task".into()),
        ("KAT_SPOOL_DIR".into(), spool.as_os_str().to_owned()),
    ]
}

/// A started entrypoint.
pub struct Running {
    child: Child,
    started: Instant,
    out: thread::JoinHandle<Vec<u8>>,
    err: thread::JoinHandle<Vec<u8>>,
}

pub fn start(args: &[&str], env: &[(String, OsString)]) -> Running {
    // KAT_ENTRYPOINT_BIN runs the suite against another build, e.g. the static `entrypoint` profile binary.
    let binary = std::env::var_os("KAT_ENTRYPOINT_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_kat-entrypoint").into());
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    Running {
        child,
        started: Instant::now(),
        out,
        err,
    }
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits at most `timeout` (then kills it and panics: a hang is a failure), polling its peak RSS.
    pub fn finish(mut self, timeout: Duration) -> Outcome {
        let pid = self.child.id();
        let mut peak = 0;
        let status = loop {
            if let Some(kib) = vm_hwm_kib(pid) {
                peak = peak.max(kib);
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if self.started.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = String::from_utf8_lossy(&self.err.join().unwrap()).into_owned();
                panic!("entrypoint still running after {timeout:?} (deadlock?); stderr:\n{stderr}");
            }
            thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.started.elapsed();
        let stdout = String::from_utf8_lossy(&self.out.join().unwrap()).into_owned();
        let stderr = String::from_utf8_lossy(&self.err.join().unwrap()).into_owned();
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 1000 + status.signal().unwrap_or(0));
        assert!(
            !stderr.contains(TOKEN) && !stdout.contains(TOKEN),
            "the token leaked into the entrypoint's output:\n{stderr}"
        );
        // Every stderr line is the entrypoint's own, unless the test lets the command write there.
        Outcome {
            code,
            stdout,
            stderr,
            polled_peak_kib: peak,
            elapsed,
        }
    }
}

/// Runs the entrypoint to completion (60 s at most).
pub fn run(args: &[&str], env: &[(String, OsString)]) -> Outcome {
    start(args, env).finish(Duration::from_secs(60))
}

/// Waits until `path` exists (the command got that far).
pub fn wait_for(path: &Path, timeout: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < timeout,
            "{} never appeared",
            path.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Entries left in the spool directory (the entrypoint must clean its work directory).
pub fn leftovers(spool: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}
