//! A large upload and download through the API on the sled store, in bounded memory: the upload is
//! generated chunk by chunk by the client, streamed through the multipart reader into the store, and
//! the download is hashed as it arrives. The process's RSS is sampled throughout.
//!
//! Size: 256 MiB by default; set `KAT_HTTP_BIG_UPLOAD_MIB=1024` for the 1 GiB run.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::{Digest, Sha256};

use common::*;

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

const CHUNK: usize = 1 << 20;

/// Chunk `i` of the test file: a fixed pseudo-random block stamped with its index.
fn chunk(block: &Bytes, i: u64) -> Bytes {
    let mut b = BytesMut::from(&block[..]);
    b[..8].copy_from_slice(&i.to_le_bytes());
    b.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_and_download_in_bounded_memory() {
    let mib: u64 = std::env::var("KAT_HTTP_BIG_UPLOAD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let s = start(Options {
        backend: Backend::Sled,
        ..Options::default()
    })
    .await;
    let t = s.token(
        "acme",
        serde_json::json!({"files.add_file": {}, "files.view_file": {}}),
    );
    // A pseudo-random block (xorshift), so that the content is not trivially compressible.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let block: Bytes = (0..CHUNK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into();
    let mut expected = Sha256::new();
    for i in 0..mib {
        expected.update(chunk(&block, i));
    }
    let expected = hex::encode(expected.finalize());

    // Warm up (allocator arenas, connection pool), then take the baseline.
    let r = s
        .upload(
            &t,
            "/api/v1/file/",
            &[
                ("type", None, b"test-plugin"),
                ("file", Some("w"), &block[..]),
            ],
        )
        .await;
    assert_eq!(r.status, 201);
    let baseline = rss_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };

    let boundary = "big-upload-boundary-3f9a";
    let head = Bytes::from(format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\ntest-plugin\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"stdout\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    ));
    let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
    let len = head.len() as u64 + mib * CHUNK as u64 + tail.len() as u64;
    let blk = block.clone();
    let frames = futures::stream::iter(std::iter::once(head))
        .chain(futures::stream::iter(0..mib).map(move |i| chunk(&blk, i)))
        .chain(futures::stream::iter(std::iter::once(tail)))
        .map(|b| Ok::<_, BoxError>(Frame::data(b)));
    let req = http::Request::builder()
        .method("POST")
        .uri(s.url("/api/v1/file/"))
        .header("authorization", format!("Token {t}"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("content-length", len.to_string())
        .body(StreamBody::new(frames).boxed_unsync())
        .unwrap();
    let started = std::time::Instant::now();
    let r = s.send(req).await;
    let up = started.elapsed();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.bytes));
    let meta = r.json();
    assert_eq!(meta["size"], mib * CHUNK as u64);
    assert_eq!(meta["sha256"], expected.as_str());

    // Download through the metadata's URL, hashing as it streams.
    let url = meta["file"].as_str().unwrap().to_string();
    let req = http::Request::builder()
        .uri(url)
        .header("authorization", format!("Token {t}"))
        .body(full_body(Bytes::new()))
        .unwrap();
    let started = std::time::Instant::now();
    let resp = s.client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            n += d.len() as u64;
            h.update(&d);
        }
    }
    let down = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(n, mib * CHUNK as u64);
    assert_eq!(hex::encode(h.finalize()), expected, "byte-exact download");
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!(
        "{mib} MiB: upload {up:?}, download {down:?}, RSS growth {} MiB",
        growth >> 20
    );
    assert!(
        growth < 96 << 20,
        "RSS grew by {} MiB moving {mib} MiB: the upload or download is not streamed",
        growth >> 20
    );
    s.stop().await;
}
