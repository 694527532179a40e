//! Slow clients: a request body that stalls or trickles is cut with a 408 and its connection closed,
//! a request head that never ends has its connection closed, and nothing of a cut upload is stored.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use kat_core::store::FileQuery;
use kat_http::ApiConfig;

use crate::common::*;

fn short_limits() -> ApiConfig {
    ApiConfig {
        header_read_timeout: Duration::from_secs(1),
        body_idle_timeout: Duration::from_secs(1),
        body_min_rate: 100,
        body_timeout: Duration::from_secs(5),
        ..ApiConfig::default()
    }
}

/// What a raw client sees: the response bytes, and whether the server closed the connection.
struct Seen {
    text: String,
    closed: bool,
}

/// Send `head`, then `body` one byte every `every` (until the server stops reading), reading what the
/// server answers, for at most `budget`.
async fn trickle(
    s: &Server,
    head: String,
    body: Vec<u8>,
    every: Duration,
    budget: Duration,
) -> Seen {
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for b in body {
            tokio::time::sleep(every).await;
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
        }
        // Keep the connection open: the client never finishes on its own.
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(wr);
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + budget;
    let closed = loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    writer.abort();
    Seen {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

fn assert_cut(seen: &Seen, what: &str) {
    assert!(
        seen.text.starts_with("HTTP/1.1 408"),
        "{what}: {:?}",
        seen.text
    );
    assert!(
        seen.text.to_ascii_lowercase().contains("connection: close"),
        "{what}: {:?}",
        seen.text
    );
    let body = seen.text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).expect("a JSON error body");
    assert_eq!(v["type"], "client_error", "{what}: {v}");
    assert_eq!(v["errors"][0]["code"], "request_timeout", "{what}: {v}");
    assert!(seen.closed, "{what}: the connection is closed");
}

#[tokio::test]
async fn a_trickling_upload_is_cut_and_stores_nothing() {
    let s = start(Options {
        config: short_limits(),
        ..Options::default()
    })
    .await;
    let t = s.token("acme", all());
    let b = "slow-boundary";
    let mut body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\ntest-plugin\r\n--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"stdout\"\r\n\r\n"
    )
    .into_bytes();
    body.resize(1000, b'x');
    let head = format!(
        "POST /api/v1/file/ HTTP/1.1\r\nHost: test\r\nAuthorization: Token {t}\r\nContent-Type: multipart/form-data; boundary={b}\r\nContent-Length: 1000\r\n\r\n"
    );
    // The multipart head arrives at once; the file's data one byte every 300 ms (~3 bytes per second).
    let split = body.len() - 900;
    let (first, rest) = body.split_at(split);
    let head = format!("{head}{}", String::from_utf8_lossy(first));
    let started = Instant::now();
    let seen = trickle(
        &s,
        head,
        rest.to_vec(),
        Duration::from_millis(300),
        Duration::from_secs(30),
    )
    .await;
    assert_cut(&seen, "a trickling upload");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "cut within the bound, not held open"
    );
    let stored = s.files.query(&FileQuery::new(org("acme"))).await.unwrap();
    assert_eq!(stored.count, 0, "nothing of a cut upload is stored");
    assert!(!s.calls().iter().any(|c| c.starts_with("file_stored")));
    s.stop().await;
}

#[tokio::test]
async fn a_stalled_json_body_is_cut() {
    let s = start(Options {
        config: short_limits(),
        ..Options::default()
    })
    .await;
    let t = s.token("acme", all());
    // Content-Length 1000, 10 bytes sent, then nothing.
    let head = format!(
        "POST /api/v1/objects/ HTTP/1.1\r\nHost: test\r\nAuthorization: Token {t}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"hostnam"
    );
    let seen = trickle(
        &s,
        head,
        Vec::new(),
        Duration::ZERO,
        Duration::from_secs(30),
    )
    .await;
    assert_cut(&seen, "a stalled JSON body");
    s.stop().await;
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_closed() {
    let s = start(Options {
        config: short_limits(),
        ..Options::default()
    })
    .await;
    let seen = trickle(
        &s,
        "GET /api/v1/objects/ HTTP/1.1\r\nHost: te".to_string(),
        b"st\r\nX-Slow: 1".to_vec(),
        Duration::from_millis(300),
        Duration::from_secs(30),
    )
    .await;
    assert!(seen.closed, "the connection is closed: {:?}", seen.text);
    s.stop().await;
}

#[tokio::test]
async fn a_body_at_a_steady_pace_is_not_cut() {
    let s = start(Options {
        config: short_limits(),
        ..Options::default()
    })
    .await;
    let t = s.token("acme", all());
    // 200 bytes in 20 chunks, one every 100 ms: 100 bytes a second, under the idle timeout.
    let body = format!(
        "{{\"hostname\": [{{\"network\": \"internet\", \"name\": \"{}.{}.example\"}}]}}",
        "a".repeat(60),
        "b".repeat(60)
    );
    let head = format!(
        "POST /api/v1/objects/ HTTP/1.1\r\nHost: test\r\nAuthorization: Token {t}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.as_bytes().chunks(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        wr.write_all(chunk).await.unwrap();
    }
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), rd.read_to_string(&mut out))
        .await
        .expect("answered")
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    s.stop().await;
}
