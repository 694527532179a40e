//! Downloads (`{file/<id>}`, `IN_FILE`) and multipart uploads, with bounded retries, in constant memory.

use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::http::{self, Body, HttpError, Timeouts, Url};
use crate::log::{log, snippet};

/// Size of every copy buffer (pipes, spool files, sockets).
pub(crate) const BUF_SIZE: usize = 64 * 1024;

/// Request timeouts: connecting, and any single read or write stalling.
const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(10),
    io: Duration::from_secs(120),
};

/// Pauses between attempts: 4 attempts in all.
const BACKOFF: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// A transfer that failed for good.
#[derive(Debug)]
pub(crate) enum TransferError {
    /// The server answered with an unexpected status.
    Status {
        /// The status code.
        status: u16,
        /// Its reason phrase.
        reason: String,
        /// A redacted excerpt of the response body.
        body: String,
        /// Attempts made.
        attempts: usize,
    },
    /// No usable response (connection refused, reset, timeout, malformed).
    Http {
        /// What went wrong on the last attempt.
        source: HttpError,
        /// Attempts made.
        attempts: usize,
    },
    /// A local file could not be written or read.
    Local(io::Error),
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::Status {
                status,
                reason,
                body,
                attempts,
            } => {
                write!(f, "HTTP {status}")?;
                if !reason.is_empty() {
                    write!(f, " {reason}")?;
                }
                write!(f, " (after {attempts} attempt{})", plural(*attempts))?;
                if !body.is_empty() {
                    write!(f, ": {body}")?;
                }
                Ok(())
            }
            TransferError::Http { source, attempts } => {
                write!(
                    f,
                    "{source} (after {attempts} attempt{})",
                    plural(*attempts)
                )
            }
            TransferError::Local(e) => write!(f, "local I/O error: {e}"),
        }
    }
}

impl std::error::Error for TransferError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TransferError::Status { .. } => None,
            TransferError::Http { source, .. } => Some(source),
            TransferError::Local(e) => Some(e),
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// One attempt's failure, before we know whether it is the last.
enum Attempt {
    Status {
        status: u16,
        reason: String,
        body: String,
    },
    Http(HttpError),
    Local(io::Error),
}

impl Attempt {
    /// Connection problems, 5xx, 408 and 429 are retried; other 4xx and local errors are not.
    fn retryable(&self) -> bool {
        match self {
            Attempt::Status { status, .. } => {
                !(400..500).contains(status) || matches!(status, 408 | 429)
            }
            Attempt::Http(_) => true,
            Attempt::Local(_) => false,
        }
    }

    fn into_error(self, attempts: usize) -> TransferError {
        match self {
            Attempt::Status {
                status,
                reason,
                body,
            } => TransferError::Status {
                status,
                reason,
                body,
                attempts,
            },
            Attempt::Http(source) => TransferError::Http { source, attempts },
            Attempt::Local(e) => TransferError::Local(e),
        }
    }

    fn describe(&self) -> String {
        match self {
            Attempt::Status { status, reason, .. } => format!("HTTP {status} {reason}"),
            Attempt::Http(e) => e.to_string(),
            Attempt::Local(e) => e.to_string(),
        }
    }
}

/// Runs `once` until it succeeds, fails with a non-retryable error, or the attempts run out.
fn with_retries<T>(
    what: &str,
    mut once: impl FnMut() -> Result<T, Attempt>,
) -> Result<T, TransferError> {
    let attempts = BACKOFF.len() + 1;
    let mut attempt = 1;
    loop {
        match once() {
            Ok(value) => return Ok(value),
            Err(failure) if attempt < attempts && failure.retryable() => {
                let pause = BACKOFF[attempt - 1];
                log!(
                    "{what}: attempt {attempt}/{attempts} failed ({}), retrying in {:.1} s",
                    failure.describe(),
                    pause.as_secs_f64()
                );
                std::thread::sleep(pause);
                attempt += 1;
            }
            Err(failure) => return Err(failure.into_error(attempt)),
        }
    }
}

/// Copies `reader` to `writer` with a fixed buffer; returns the byte count.
pub(crate) fn copy(reader: &mut dyn Read, writer: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Authenticated transfers against the API.
#[derive(Clone)]
pub(crate) struct Client {
    auth: String,
}

/// A successful upload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Uploaded {
    /// The 2xx status.
    pub(crate) status: u16,
    /// Wall time of the successful attempt.
    pub(crate) elapsed: Duration,
}

impl Client {
    /// A client sending `Authorization: Token <token>`.
    pub(crate) fn new(token: &str) -> Client {
        Client {
            auth: format!("Token {token}"),
        }
    }

    /// `GET url` into `dest` (created or truncated), streaming; only `200` is accepted. Returns the byte count.
    pub(crate) fn download(
        &self,
        url: &Url,
        dest: &Path,
        what: &str,
    ) -> Result<u64, TransferError> {
        with_retries(what, || {
            let mut response = http::send(
                "GET",
                url,
                &[("Authorization", &self.auth), ("Accept", "*/*")],
                None,
                TIMEOUTS,
            )
            .map_err(Attempt::Http)?;
            if response.status != 200 {
                return Err(Attempt::Status {
                    status: response.status,
                    reason: response.reason.clone(),
                    body: snippet(&response.read_prefix(4096)),
                });
            }
            let mut file = File::create(dest).map_err(Attempt::Local)?;
            let mut buf = vec![0u8; BUF_SIZE];
            let mut total = 0u64;
            loop {
                let n = match response.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Attempt::Http(HttpError::Receive(e))),
                };
                file.write_all(&buf[..n]).map_err(Attempt::Local)?;
                total += n as u64;
            }
            Ok(total)
        })
    }

    /// POSTs `file` (its first `len` bytes) as multipart part `file` named `filename`, with field `type`.
    pub(crate) fn upload(
        &self,
        url: &Url,
        file: &mut File,
        len: u64,
        filename: &str,
        file_type: &str,
        what: &str,
    ) -> Result<Uploaded, TransferError> {
        let form = Multipart::new(file_type, filename);
        let content_type = form.content_type();
        with_retries(what, || {
            let start = Instant::now();
            let mut body = MultipartBody {
                form: &form,
                file: &mut *file,
                len,
            };
            let mut response = http::send(
                "POST",
                url,
                &[
                    ("Authorization", &self.auth),
                    ("Content-Type", &content_type),
                    ("Accept", "application/json"),
                ],
                Some(&mut body),
                TIMEOUTS,
            )
            .map_err(Attempt::Http)?;
            let excerpt = snippet(&response.read_prefix(4096));
            if (200..300).contains(&response.status) {
                Ok(Uploaded {
                    status: response.status,
                    elapsed: start.elapsed(),
                })
            } else {
                Err(Attempt::Status {
                    status: response.status,
                    reason: response.reason.clone(),
                    body: excerpt,
                })
            }
        })
    }
}

/// The fixed parts of a `multipart/form-data` body: field `type` first (so a server knows the type before the
/// bytes arrive), then part `file`.
#[derive(Debug, Clone)]
pub(crate) struct Multipart {
    boundary: String,
    prefix: Vec<u8>,
    suffix: Vec<u8>,
}

impl Multipart {
    /// The form for a file part named `filename` and a `type` field `file_type` (no control characters).
    pub(crate) fn new(file_type: &str, filename: &str) -> Multipart {
        let boundary = format!("kat-entrypoint-{}", random_hex());
        let prefix = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\n{file_type}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        );
        let suffix = format!("\r\n--{boundary}--\r\n");
        Multipart {
            boundary,
            prefix: prefix.into_bytes(),
            suffix: suffix.into_bytes(),
        }
    }

    /// The request's `Content-Type` header.
    pub(crate) fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The body length for a file of `len` bytes.
    pub(crate) fn content_length(&self, len: u64) -> u64 {
        self.prefix.len() as u64 + len + self.suffix.len() as u64
    }
}

/// 128 random bits as hex, from the standard library's randomly keyed hasher.
fn random_hex() -> String {
    let mut out = String::with_capacity(32);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for round in 0..2u64 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(round);
        hasher.write_u128(nanos);
        hasher.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out
}

struct MultipartBody<'a> {
    form: &'a Multipart,
    file: &'a mut File,
    len: u64,
}

impl Body for MultipartBody<'_> {
    fn len(&self) -> u64 {
        self.form.content_length(self.len)
    }

    fn write_to(&mut self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&self.form.prefix)?;
        self.file.seek(SeekFrom::Start(0))?;
        let copied = copy(&mut (&mut *self.file).take(self.len), out)?;
        if copied != self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("spool file shrank: {copied} of {} bytes", self.len),
            ));
        }
        out.write_all(&self.form.suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_layout_and_length() {
        let form = Multipart::new("dns", "stdout");
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(b"hello\r\n--world").expect("write");
        let mut body = MultipartBody {
            form: &form,
            file: &mut file,
            len: 14,
        };
        let mut out = Vec::new();
        body.write_to(&mut out).expect("write");
        assert_eq!(out.len() as u64, body.len());
        let b = &form.boundary;
        let expected = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\ndns\r\n--{b}\r\n\
             Content-Disposition: form-data; name=\"file\"; filename=\"stdout\"\r\n\
             Content-Type: application/octet-stream\r\n\r\nhello\r\n--world\r\n--{b}--\r\n"
        );
        assert_eq!(String::from_utf8_lossy(&out), expected);
        assert_eq!(
            form.content_type(),
            format!("multipart/form-data; boundary={b}")
        );
    }

    #[test]
    fn boundaries_differ() {
        assert_ne!(
            Multipart::new("a", "b").boundary,
            Multipart::new("a", "b").boundary
        );
    }

    #[test]
    fn shrunk_spool_file_is_an_error() {
        let form = Multipart::new("dns", "stdout");
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(b"abc").expect("write");
        let mut body = MultipartBody {
            form: &form,
            file: &mut file,
            len: 10,
        };
        assert!(body.write_to(&mut Vec::new()).is_err());
    }

    #[test]
    fn retry_classes() {
        let status = |status| Attempt::Status {
            status,
            reason: String::new(),
            body: String::new(),
        };
        for s in [500, 502, 503, 408, 429, 302] {
            assert!(status(s).retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 413] {
            assert!(!status(s).retryable(), "{s}");
        }
        assert!(Attempt::Http(HttpError::Malformed(String::new())).retryable());
        assert!(!Attempt::Local(io::Error::other("x")).retryable());
    }
}
