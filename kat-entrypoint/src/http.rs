//! A deliberately small HTTP/1.1 client over `std::net::TcpStream`.
//!
//! One request per connection (`Connection: close`), plain HTTP only (the API is reached over the container
//! network). Responses are framed by `Content-Length`, `Transfer-Encoding: chunked` or the end of the
//! connection; bodies are streamed through [`Read`], never collected. Every socket operation has a timeout.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Longest status line, header line or chunk-size line accepted.
const MAX_LINE: u64 = 16 * 1024;
/// Most header lines accepted in one response.
const MAX_HEADERS: usize = 200;

/// An `http://` URL, split into what a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    /// Host name or IP address (IPv6 without brackets).
    pub(crate) host: String,
    /// TCP port (80 when the URL names none).
    pub(crate) port: u16,
    /// Path and query, always starting with `/`.
    pub(crate) target: String,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UrlError {
    /// `https://`: this client speaks plain HTTP only.
    #[error(
        "https is not supported (plain http:// only; the API is reached over the container network)"
    )]
    Https,
    /// Any scheme other than `http://`, or none.
    #[error("must start with http://")]
    Scheme,
    /// Spaces or control characters.
    #[error("contains whitespace or control characters")]
    Characters,
    /// `user:password@host`.
    #[error("user information (user@host) is not supported")]
    UserInfo,
    /// Empty or malformed host.
    #[error("has no valid host")]
    Host,
    /// Port not a number in 1..=65535.
    #[error("has an invalid port")]
    Port,
    /// `#fragment`.
    #[error("must not contain a #fragment")]
    Fragment,
}

impl Url {
    /// Parses `http://host[:port][/path][?query]`; hosts may be names, IPv4 or bracketed IPv6 addresses.
    pub(crate) fn parse(input: &str) -> Result<Url, UrlError> {
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::Characters);
        }
        let Some((scheme, rest)) = input.split_once("://") else {
            return Err(UrlError::Scheme);
        };
        if scheme.eq_ignore_ascii_case("https") {
            return Err(UrlError::Https);
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(UrlError::Scheme);
        }
        if rest.contains('#') {
            return Err(UrlError::Fragment);
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or(UrlError::Host)?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(UrlError::Host);
            }
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or(UrlError::Host)?)),
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let host_ok = !host.is_empty()
            && (host.contains(':')
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')));
        if !host_ok {
            return Err(UrlError::Host);
        }
        let port = match port {
            None => 80,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or(UrlError::Port)?,
            Some(_) => return Err(UrlError::Port),
        };
        let target = if target.starts_with('/') {
            target.to_owned()
        } else {
            format!("/{target}")
        };
        Ok(Url {
            host: host.to_owned(),
            port,
            target,
        })
    }

    /// This URL with its path's trailing slashes removed and `suffix` appended (`suffix` starts with `/`).
    pub(crate) fn join(&self, suffix: &str) -> Url {
        Url {
            host: self.host.clone(),
            port: self.port,
            target: format!("{}{suffix}", self.target.trim_end_matches('/')),
        }
    }

    /// Whether the URL has a query string.
    pub(crate) fn has_query(&self) -> bool {
        self.target.contains('?')
    }

    /// The `Host` header value.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "http://{host}:{}{}", self.port, self.target)
    }
}

/// Timeouts for one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// For establishing the TCP connection (per resolved address).
    pub(crate) connect: Duration,
    /// For each read or write on the socket (a stall longer than this fails the request).
    pub(crate) io: Duration,
}

/// A request body of known length, written straight to the socket.
pub(crate) trait Body {
    /// Exact number of bytes [`Body::write_to`] writes.
    fn len(&self) -> u64;
    /// Writes the body. Called once per request (a retry builds a new request).
    fn write_to(&mut self, out: &mut dyn Write) -> io::Result<()>;
}

/// A failed exchange (no HTTP status was received).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// Name resolution failed or gave no address.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// Why.
        source: io::Error,
    },
    /// No address accepted a connection.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The last connection error.
        source: io::Error,
    },
    /// Writing the request failed and no response could be read.
    #[error("sending the request failed: {0}")]
    Send(io::Error),
    /// Reading the response head failed.
    #[error("reading the response failed: {0}")]
    Receive(io::Error),
    /// The response is not valid HTTP/1.x.
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// The status and streaming body of a response.
pub(crate) struct Response<R> {
    /// The status code.
    pub(crate) status: u16,
    /// The reason phrase (may be empty).
    pub(crate) reason: String,
    body: BodyReader<R>,
}

impl<R: BufRead> Read for Response<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.body.read(buf)
    }
}

impl<R: BufRead> Response<R> {
    /// Reads at most `max` bytes of the body, for error messages.
    pub(crate) fn read_prefix(&mut self, max: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.by_ref().take(max).read_to_end(&mut out);
        out
    }
}

/// The buffer a request is written through, in bytes.
const SEND_BUFFER: usize = 64 * 1024;

/// Sends one request (`Connection: close`) and returns the response once its head has arrived.
pub(crate) fn send(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: Option<&mut dyn Body>,
    timeouts: Timeouts,
) -> Result<Response<BufReader<TcpStream>>, HttpError> {
    let stream = connect(url, timeouts)?;
    let reader_half = stream.try_clone().map_err(HttpError::Send)?;
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kat-entrypoint/{}\r\nConnection: close\r\n",
        url.target,
        url.authority(),
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    if let Some(body) = &body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");

    // Through one buffer: a small upload (head, multipart parts and content) leaves in one write,
    // so the server reads the whole request at once instead of waking up for each piece.
    let mut writer = io::BufWriter::with_capacity(SEND_BUFFER, &stream);
    let sent = writer
        .write_all(head.as_bytes())
        .and_then(|()| match body {
            Some(body) => body.write_to(&mut writer),
            None => Ok(()),
        })
        .and_then(|()| writer.flush());
    // What could not be sent is dropped with the request, never written later.
    let _ = writer.into_parts();
    if let Err(send_error) = sent {
        // The server may have answered early (401, 413, ...) and closed: prefer its answer.
        let _ = reader_half.set_read_timeout(Some(Duration::from_secs(5)));
        return match read_response(BufReader::new(reader_half), method == "HEAD") {
            Ok(response) => Ok(response),
            Err(_) => Err(HttpError::Send(send_error)),
        };
    }
    // No write shutdown here: some servers (hyper without half_close) drop the response when they see EOF.
    read_response(
        BufReader::with_capacity(64 * 1024, reader_half),
        method == "HEAD",
    )
}

fn connect(url: &Url, timeouts: Timeouts) -> Result<TcpStream, HttpError> {
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|source| HttpError::Resolve {
            host: url.host.clone(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(HttpError::Resolve {
            host: url.host.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, "no address found"),
        });
    }
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, timeouts.connect) {
            Ok(stream) => {
                let set = stream
                    .set_read_timeout(Some(timeouts.io))
                    .and_then(|()| stream.set_write_timeout(Some(timeouts.io)));
                return match set {
                    Ok(()) => Ok(stream),
                    Err(source) => Err(HttpError::Connect {
                        addr: addr.to_string(),
                        source,
                    }),
                };
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    let (addr, source) = last.map_or_else(
        || (url.authority(), io::Error::other("no address")),
        |(a, e)| (a.to_string(), e),
    );
    Err(HttpError::Connect { addr, source })
}

/// Reads one line ending in LF (CR before it removed), at most [`MAX_LINE`] bytes. `Ok(None)` at clean EOF.
fn read_line<R: BufRead>(reader: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(if n as u64 >= MAX_LINE {
            io::Error::new(io::ErrorKind::InvalidData, "line too long")
        } else {
            io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-line")
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// Parses a response head from `reader` (skipping `1xx` interim responses) and frames its body.
pub(crate) fn read_response<R: BufRead>(
    mut reader: R,
    head_request: bool,
) -> Result<Response<R>, HttpError> {
    loop {
        let line = read_line(&mut reader)
            .map_err(HttpError::Receive)?
            .ok_or_else(|| {
                HttpError::Receive(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                ))
            })?;
        let line = String::from_utf8_lossy(&line).into_owned();
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let code = parts.next().unwrap_or_default();
        let reason = parts.next().unwrap_or_default().trim().to_owned();
        if !version.starts_with("HTTP/1.") || code.len() != 3 {
            return Err(HttpError::Malformed(format!(
                "bad status line {:?}",
                crate::log::snippet(line.as_bytes())
            )));
        }
        let status: u16 = code
            .parse()
            .ok()
            .filter(|s| (100..600).contains(s))
            .ok_or_else(|| HttpError::Malformed(format!("bad status code {code:?}")))?;

        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut other_encoding = false;
        let mut count = 0;
        loop {
            let header = read_line(&mut reader)
                .map_err(HttpError::Receive)?
                .ok_or_else(|| HttpError::Malformed("connection closed in the headers".into()))?;
            if header.is_empty() {
                break;
            }
            count += 1;
            if count > MAX_HEADERS {
                return Err(HttpError::Malformed("too many headers".into()));
            }
            let header = String::from_utf8_lossy(&header);
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| HttpError::Malformed("header line without a colon".into()))?;
            if name.is_empty() || name.starts_with([' ', '\t']) {
                return Err(HttpError::Malformed("bad header name".into()));
            }
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let n: u64 = value
                    .parse()
                    .map_err(|_| HttpError::Malformed(format!("bad Content-Length {value:?}")))?;
                if content_length.is_some_and(|old| old != n) {
                    return Err(HttpError::Malformed("conflicting Content-Length".into()));
                }
                content_length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                    // Only the final coding decides the framing.
                    chunked = coding.eq_ignore_ascii_case("chunked");
                    other_encoding = !chunked;
                }
            }
        }
        if (100..200).contains(&status) {
            if status == 101 {
                return Err(HttpError::Malformed(
                    "unexpected 101 Switching Protocols".into(),
                ));
            }
            continue;
        }
        let framing = if head_request || status == 204 || status == 304 {
            Framing::Length(0)
        } else if chunked {
            Framing::Chunked {
                remaining: 0,
                done: false,
            }
        } else if other_encoding {
            Framing::UntilClose
        } else if let Some(n) = content_length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        return Ok(Response {
            status,
            reason,
            body: BodyReader { reader, framing },
        });
    }
}

enum Framing {
    Length(u64),
    Chunked { remaining: u64, done: bool },
    UntilClose,
}

struct BodyReader<R> {
    reader: R,
    framing: Framing,
}

fn eof(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("connection closed {what}"),
    )
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl<R: BufRead> Read for BodyReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match &mut self.framing {
            Framing::UntilClose => self.reader.read(buf),
            Framing::Length(remaining) => {
                if *remaining == 0 {
                    return Ok(0);
                }
                let want = usize::try_from(*remaining).map_or(buf.len(), |r| r.min(buf.len()));
                let n = self.reader.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(eof("before the end of the body (Content-Length)"));
                }
                *remaining -= n as u64;
                Ok(n)
            }
            Framing::Chunked { remaining, done } => {
                if *done {
                    return Ok(0);
                }
                if *remaining == 0 {
                    let line =
                        read_line(&mut self.reader)?.ok_or_else(|| eof("before a chunk size"))?;
                    let line = String::from_utf8_lossy(&line);
                    let size = line.split(';').next().unwrap_or_default().trim();
                    let size = u64::from_str_radix(size, 16)
                        .map_err(|_| bad("bad chunk size in a chunked body"))?;
                    if size == 0 {
                        // Trailer fields, up to the empty line.
                        loop {
                            let line = read_line(&mut self.reader)?
                                .ok_or_else(|| eof("in the chunked trailer"))?;
                            if line.is_empty() {
                                break;
                            }
                        }
                        *done = true;
                        return Ok(0);
                    }
                    *remaining = size;
                }
                let want = usize::try_from(*remaining).map_or(buf.len(), |r| r.min(buf.len()));
                let n = self.reader.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(eof("inside a chunk"));
                }
                *remaining -= n as u64;
                if *remaining == 0 {
                    match read_line(&mut self.reader)? {
                        Some(line) if line.is_empty() => {}
                        Some(_) => return Err(bad("chunk not followed by CRLF")),
                        None => return Err(eof("after a chunk")),
                    }
                }
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(raw: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        let mut response = read_response(raw, false).map_err(io::Error::other)?;
        let mut out = Vec::new();
        response.read_to_end(&mut out)?;
        Ok((response.status, out))
    }

    #[test]
    fn parses_urls() {
        let u = Url::parse("http://127.0.0.1:8000/api/v1").expect("url");
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("127.0.0.1", 8000, "/api/v1")
        );
        assert_eq!(u.join("/file/").target, "/api/v1/file/");
        let u = Url::parse("http://openkat/api/v1/").expect("url");
        assert_eq!(
            (u.port, u.join("/file/").target.as_str()),
            (80, "/api/v1/file/")
        );
        assert_eq!(u.authority(), "openkat");
        let u = Url::parse("HTTP://[::1]:81?task_id=x").expect("url");
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("::1", 81, "/?task_id=x")
        );
        assert_eq!(u.authority(), "[::1]:81");
        assert!(u.has_query());
        let u = Url::parse("http://kat_api.local").expect("url");
        assert_eq!(u.target, "/");
    }

    #[test]
    fn refuses_bad_urls() {
        for (input, err) in [
            ("https://x/api", UrlError::Https),
            ("ftp://x/api", UrlError::Scheme),
            ("localhost:8000/api", UrlError::Scheme),
            ("", UrlError::Scheme),
            ("http://", UrlError::Host),
            ("http://:80/", UrlError::Host),
            ("http://a b/", UrlError::Characters),
            ("http://x/\n", UrlError::Characters),
            ("http://u:p@x/", UrlError::UserInfo),
            ("http://x:0/", UrlError::Port),
            ("http://x:99999/", UrlError::Port),
            ("http://x:/", UrlError::Port),
            ("http://x:8a/", UrlError::Port),
            ("http://[::1/", UrlError::Host),
            ("http://[zz]/", UrlError::Host),
            ("http://x/#f", UrlError::Fragment),
            ("http://x!y/", UrlError::Host),
        ] {
            assert_eq!(Url::parse(input), Err(err), "{input:?}");
        }
    }

    #[test]
    fn content_length_body() {
        let (status, body) =
            body_of(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhelloEXTRA").expect("ok");
        assert_eq!((status, body.as_slice()), (201, &b"hello"[..]));
    }

    #[test]
    fn short_content_length_body_is_an_error() {
        let err =
            body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello").expect_err("short");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;x=y\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-T: 1\r\n\r\nGARBAGE";
        let (_, body) = body_of(raw).expect("ok");
        assert_eq!(body, b"hello, world!!!");
    }

    #[test]
    fn chunked_body_errors() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        ] {
            assert!(body_of(raw).is_err(), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn close_delimited_and_empty_bodies() {
        let (_, body) = body_of(b"HTTP/1.0 200 OK\r\n\r\nall of it").expect("ok");
        assert_eq!(body, b"all of it");
        let (status, body) =
            body_of(b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc").expect("ok");
        assert_eq!((status, body.len()), (204, 0));
    }

    #[test]
    fn interim_responses_are_skipped() {
        let (status, body) = body_of(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\nno",
        )
        .expect("ok");
        assert_eq!((status, body.as_slice()), (500, &b"no"[..]));
    }

    #[test]
    fn malformed_heads() {
        for raw in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        ] {
            assert!(
                read_response(raw, false).is_err(),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
