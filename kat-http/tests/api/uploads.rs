//! `POST /file/` is all or nothing: a body that goes wrong anywhere, even after a complete file part,
//! is a 400 that leaves no metadata, no blob and no chained task. Bodies are written byte by byte over a
//! raw TCP connection, so every malformed shape reaches the server exactly as written.

use std::path::Path;
use std::sync::Arc;

use kat_core::store::{FileQuery, FileStore};
use kat_store_sled::{SledOptions, SledStore};

use crate::common::*;

const B: &str = "kat-raw-boundary";

fn type_part(t: &str) -> String {
    format!("--{B}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\n{t}\r\n")
}

fn file_part(name: &str, data: &str) -> String {
    format!(
        "--{B}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n{data}\r\n"
    )
}

fn field_part(name: &str, value: &str) -> String {
    format!("--{B}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
}

fn close() -> String {
    format!("--{B}--\r\n")
}

/// A whole request with an exact `Content-Length`.
fn request(token: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /api/v1/file/ HTTP/1.1\r\nHost: test\r\nAuthorization: Token {token}\r\nContent-Type: multipart/form-data; boundary={B}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn status_of(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn json_of(raw: &str) -> serde_json::Value {
    let body = raw.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The bodies that start well (`type`, then a whole file part) and then go wrong.
fn bad_bodies() -> Vec<(&'static str, String)> {
    let head = format!(
        "{}{}",
        type_part("test-plugin"),
        file_part("stdout", "KEPT?")
    );
    vec![
        (
            "an unknown field",
            format!("{head}{}{}", field_part("extra", "1"), close()),
        ),
        (
            "a second file",
            format!("{head}{}{}", file_part("other", "2"), close()),
        ),
        (
            "a second type",
            format!("{head}{}{}", type_part("nmap"), close()),
        ),
        ("a body that ends after a boundary", format!("{head}--{B}")),
        (
            "a body that ends after a boundary line",
            format!("{head}--{B}\r\n"),
        ),
        (
            "truncated part headers",
            format!("{head}--{B}\r\nContent-Disposition: form-da"),
        ),
        (
            "a body that ends inside the file",
            format!(
                "{}--{B}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\nKEPT?",
                type_part("test-plugin")
            ),
        ),
        (
            "the file first, then an unknown field",
            format!(
                "{}{}{}{}",
                file_part("stdout", "KEPT?"),
                type_part("test-plugin"),
                field_part("extra", "1"),
                close()
            ),
        ),
        (
            "the file first, then a body that ends after a boundary",
            format!(
                "{}{}--{B}",
                file_part("stdout", "KEPT?"),
                type_part("test-plugin")
            ),
        ),
    ]
}

async fn rejected_uploads_keep_nothing_on(files: Arc<dyn FileStore>, blobs: Option<&Path>) {
    let s = start(Options {
        files: Some(files),
        ..Options::default()
    })
    .await;
    let t = s.token("acme", all());
    let list = |s: &Server| {
        let files = s.files.clone();
        async move {
            files
                .query(&FileQuery::new(org("acme")))
                .await
                .unwrap()
                .count
        }
    };
    let blobs_before = blobs.map(files_under);
    for (what, body) in bad_bodies() {
        let raw = s.raw(&request(&t, &body)).await;
        assert_eq!(status_of(&raw), 400, "{what}: {raw}");
        let v = json_of(&raw);
        assert!(v["errors"][0]["detail"].is_string(), "{what}: {raw}");
        assert_eq!(list(&s).await, 0, "{what}: nothing is stored");
        let api = s.get("/api/v1/file/", &t).await;
        assert_eq!(api.json()["count"], 0, "{what}: the list is unchanged");
        assert!(
            !s.calls().iter().any(|c| c.starts_with("file_stored")),
            "{what}: nothing is chained: {:?}",
            s.calls()
        );
        if let (Some(dir), Some(before)) = (blobs, &blobs_before) {
            assert_eq!(&files_under(dir), before, "{what}: no blob is left");
        }
    }
    // The same file in a good body is stored once and chained once; no retry stored it before.
    let good = format!(
        "{}{}{}",
        type_part("test-plugin"),
        file_part("stdout", "KEPT?"),
        close()
    );
    let raw = s.raw(&request(&t, &good)).await;
    assert_eq!(status_of(&raw), 201, "{raw}");
    assert_eq!(list(&s).await, 1);
    let chained: Vec<String> = s
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("file_stored"))
        .collect();
    assert_eq!(chained.len(), 1, "{chained:?}");
    s.stop().await;
}

#[tokio::test]
async fn a_rejected_upload_keeps_nothing_in_sled() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), SledOptions::default()).unwrap();
    let blobs = dir.path().join("files");
    rejected_uploads_keep_nothing_on(Arc::new(store), Some(&blobs)).await;
}

#[tokio::test]
async fn a_rejected_upload_keeps_nothing_in_memory() {
    rejected_uploads_keep_nothing_on(Arc::new(kat_core::memory::MemoryFileStore::default()), None)
        .await;
}

#[tokio::test]
async fn dot_names_are_replaced_like_other_unsafe_names() {
    let s = start(Options::default()).await;
    let t = s.token("acme", all());
    for (sent, stored) in [
        (".", "file"),
        ("..", "file"),
        ("a/..", "file"),
        ("..\\\\..", "file"),
        ("../../etc/passwd", "passwd"),
        ("...", "..."),
    ] {
        let body = format!(
            "{}{}{}",
            type_part("test-plugin"),
            file_part(sent, "x"),
            close()
        );
        let raw = s.raw(&request(&t, &body)).await;
        assert_eq!(status_of(&raw), 201, "{sent}: {raw}");
        assert_eq!(json_of(&raw)["name"], stored, "{sent}");
    }
    s.stop().await;
}

#[tokio::test]
async fn spooled_uploads_live_in_the_spool_dir_and_leftovers_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    // What a process killed during a spooled upload leaves, next to a file that is not ours.
    std::fs::write(spool.join("kat-upload-1d6f0c9e"), b"half an upload").unwrap();
    std::fs::write(spool.join("keep.txt"), b"not a spooled upload").unwrap();
    let s = start(Options {
        config: kat_http::ApiConfig {
            spool_dir: Some(spool.clone()),
            ..kat_http::ApiConfig::default()
        },
        ..Options::default()
    })
    .await;
    let t = s.token("acme", all());
    // Serving means start-up is over.
    assert_eq!(s.get("/api/v1/file/", &t).await.status, 200);
    let names = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&spool), vec!["keep.txt".to_string()]);
    // A spooled upload (type after the file) that fails leaves nothing in the spool, nor does one
    // that succeeds.
    let bad = format!(
        "{}{}{}",
        file_part("stdout", "spooled"),
        field_part("extra", "1"),
        close()
    );
    assert_eq!(status_of(&s.raw(&request(&t, &bad)).await), 400);
    let good = format!(
        "{}{}{}",
        file_part("stdout", "spooled"),
        type_part("test-plugin"),
        close()
    );
    assert_eq!(status_of(&s.raw(&request(&t, &good)).await), 201);
    assert_eq!(names(&spool), vec!["keep.txt".to_string()]);
    s.stop().await;
}
