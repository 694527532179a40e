//! `/file/`: multipart uploads (type before, after or absent), metadata with absolute download URLs,
//! authenticated byte-exact downloads, scopes, deletes, limits.

use serde_json::json;
use sha2::{Digest, Sha256};

use kat_core::store::FileId;

use crate::common::*;
use kat_core::token::TokenAuthority;

#[tokio::test]
async fn upload_list_get_download_delete() {
    let s = start(Options::default()).await;
    let (t, task) = s.token_with_task(
        "acme",
        json!({"files.add_file": {}, "files.view_file": {}, "files.delete_file": {}}),
    );
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = s
        .upload(
            &t,
            "/api/v1/file/",
            &[
                ("type", None, b"test-plugin"),
                ("file", Some("stdout"), &data),
            ],
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.bytes));
    let m = r.json();
    let id = m["id"].as_u64().unwrap();
    assert_eq!(m["type"], "test-plugin");
    assert_eq!(m["name"], "stdout");
    assert_eq!(m["size"], data.len() as u64);
    assert_eq!(m["sha256"], hex::encode(Sha256::digest(&data)));
    assert_eq!(m["organization"], "acme");
    assert_eq!(m["task_id"], task.to_string(), "attributed from the token");
    assert!(m["created_at"].is_string());
    assert_eq!(m["file"], format!("{}/api/v1/file/{id}/download/", s.base));
    // The engine hears about it (chaining).
    assert!(
        s.calls()
            .iter()
            .any(|c| c == &format!("file_stored {id} test-plugin"))
    );

    // cat.py: GET /file/<id>/, then fetch meta["file"] with the same token.
    let meta = s.get(&format!("/api/v1/file/{id}/"), &t).await.json();
    assert_eq!(meta, m);
    let url = meta["file"]
        .as_str()
        .unwrap()
        .strip_prefix(&s.base)
        .unwrap()
        .to_string();
    let d = s.get(&url, &t).await;
    assert_eq!(d.status, 200);
    assert_eq!(d.headers["content-length"], data.len().to_string().as_str());
    assert_eq!(&d.bytes[..], &data[..], "byte-exact");
    // The download is authenticated.
    let r = s.call("GET", &url, None, None).await;
    assert_eq!(r.status, 401);
    // /files/ is an alias; lists carry the same shape.
    let v = s.get("/api/v1/files/?type=test-plugin", &t).await.json();
    assert_eq!(v["count"], 1);
    assert_eq!(v["results"][0], m);
    assert_eq!(
        s.get("/api/v1/file/?type=other", &t).await.json()["count"],
        0
    );
    assert_eq!(
        s.get(&format!("/api/v1/file/?task_id={task}"), &t)
            .await
            .json()["count"],
        1
    );
    assert_eq!(s.get("/api/v1/file/?colour=red", &t).await.status, 400);
    assert_eq!(s.get("/api/v1/file/abc/", &t).await.status, 400);
    assert_eq!(s.get("/api/v1/file/999/", &t).await.status, 404);
    // Delete.
    assert_eq!(
        s.delete(&format!("/api/v1/file/{id}/"), &t).await.status,
        204
    );
    assert_eq!(s.get(&format!("/api/v1/file/{id}/"), &t).await.status, 404);
    assert_eq!(s.get(&url, &t).await.status, 404);
    s.stop().await;
}

#[tokio::test]
async fn type_after_the_file_or_absent_and_bad_forms() {
    let s = start(Options::default()).await;
    let t = s.operator("acme", all());
    let r = s
        .upload(
            &t,
            "/api/v1/file/?scan_level=1",
            &[
                ("file", Some("out.json"), b"{\"a\":1}"),
                ("type", None, b"nmap"),
            ],
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.json()["type"], "nmap");
    assert_eq!(r.json()["size"], 7);
    let id = r.json()["id"].as_u64().unwrap();
    let d = s.get(&format!("/api/v1/file/{id}/download/"), &t).await;
    assert_eq!(&d.bytes[..], b"{\"a\":1}");
    // No type: the name's suffix, else "file".
    let r = s
        .upload(
            &t,
            "/api/v1/file/?scan_level=1",
            &[("file", Some("report.xml"), b"<x/>")],
        )
        .await;
    assert_eq!(r.json()["type"], "xml");
    let r = s
        .upload(
            &t,
            "/api/v1/file/?scan_level=1",
            &[("file", Some("stdout"), b"x")],
        )
        .await;
    assert_eq!(r.json()["type"], "file");
    // Empty files are files.
    let r = s
        .upload(
            &t,
            "/api/v1/file/?scan_level=1",
            &[("type", None, b"dns"), ("file", Some("stdout"), b"")],
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["size"].as_u64()),
        (201, Some(0))
    );
    let before = s
        .files
        .query(&kat_core::store::FileQuery::new(org("acme")))
        .await
        .unwrap()
        .count;
    // Bad forms are 400s (or 415) and store nothing.
    for (parts, status, attr) in [
        (vec![("type", None, &b"dns"[..])], 400, Some("file")),
        (
            vec![
                ("type", None, &b"bad type!"[..]),
                ("file", Some("x"), &b"1"[..]),
            ],
            400,
            Some("type"),
        ),
        (
            vec![
                ("organizations", None, &b"1"[..]),
                ("file", Some("x"), &b"1"[..]),
            ],
            400,
            Some("organizations"),
        ),
        (
            vec![
                ("file", Some("x"), &b"1"[..]),
                ("file", Some("y"), &b"2"[..]),
            ],
            400,
            Some("file"),
        ),
    ] {
        let r = s.upload(&t, "/api/v1/file/?scan_level=1", &parts).await;
        assert_eq!(r.status, status, "{parts:?}");
        assert_eq!(r.attr().as_deref(), attr, "{parts:?}");
    }
    // The task comes from the token: ?task_id= is refused.
    let r = s
        .upload(
            &t,
            &format!("/api/v1/file/?task_id={}", uuid::Uuid::new_v4()),
            &[("file", Some("x"), b"1")],
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.attr().as_deref()),
        (400, Some("task_id"))
    );
    // Not multipart, truncated multipart.
    let r = s.post("/api/v1/file/", &t, json!({"file": "x"})).await;
    assert_eq!(r.status, 415);
    r.error_code();
    let req = http::Request::builder()
        .method("POST")
        .uri(s.url("/api/v1/file/?scan_level=1"))
        .header("authorization", format!("Token {t}"))
        .header("content-type", "multipart/form-data; boundary=zz")
        .body(full_body("--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nunterminated"))
        .unwrap();
    let r = s.send(req).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "parse_error");
    let after = s
        .files
        .query(&kat_core::store::FileQuery::new(org("acme")))
        .await
        .unwrap()
        .count;
    assert_eq!(before, after);
    s.stop().await;
}

#[tokio::test]
async fn file_scopes_and_upload_limit() {
    let config = kat_http::ApiConfig {
        max_upload: 1000,
        ..Default::default()
    };
    let s = start(Options {
        config,
        ..Options::default()
    })
    .await;
    let admin = s.operator("acme", all());
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = s
            .upload(
                &admin,
                "/api/v1/file/?scan_level=1",
                &[
                    ("type", None, b"raw"),
                    ("file", Some("stdout"), format!("file {i}").as_bytes()),
                ],
            )
            .await;
        ids.push(r.json()["id"].as_u64().unwrap());
    }
    // The original let a pks token list every file; here the list is restricted too.
    let t = s.token("acme", json!({"files.view_file": {"pks": [ids[0]]}}));
    let v = s.get("/api/v1/file/", &t).await.json();
    assert_eq!(v["count"], 1);
    assert_eq!(v["results"][0]["id"], ids[0]);
    assert_eq!(
        s.get(&format!("/api/v1/file/{}/", ids[0]), &t).await.status,
        200
    );
    assert_eq!(
        s.get(&format!("/api/v1/file/{}/", ids[1]), &t).await.status,
        403
    );
    assert_eq!(
        s.get(&format!("/api/v1/file/{}/download/", ids[1]), &t)
            .await
            .status,
        403
    );
    assert_eq!(
        s.get(&format!("/api/v1/file/?id={}", ids[1]), &t)
            .await
            .json()["count"],
        0
    );
    // Uploading needs add_file; a pks-scoped add_file cannot name the new file, so it is refused.
    let r = s
        .upload(
            &t,
            "/api/v1/file/?scan_level=1",
            &[("file", Some("x"), b"1")],
        )
        .await;
    assert_eq!(r.status, 403);
    let scoped = s.token("acme", json!({"files.add_file": {"pks": ["99"]}}));
    assert_eq!(
        s.upload(&scoped, "/api/v1/file/", &[("file", Some("x"), b"1")])
            .await
            .status,
        403
    );
    // Upload limit: 413, nothing stored (streamed and spooled paths).
    let big = vec![b'x'; 1001];
    let r = s
        .upload(
            &admin,
            "/api/v1/file/?scan_level=1",
            &[("type", None, b"raw"), ("file", Some("x"), &big)],
        )
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "too_large");
    let r = s
        .upload(
            &admin,
            "/api/v1/file/?scan_level=1",
            &[("file", Some("x"), &big), ("type", None, b"raw")],
        )
        .await;
    assert_eq!(r.status, 413);
    let exact = vec![b'x'; 1000];
    assert_eq!(
        s.upload(
            &admin,
            "/api/v1/file/?scan_level=1",
            &[("type", None, b"raw"), ("file", Some("x"), &exact)]
        )
        .await
        .status,
        201
    );
    assert_eq!(
        s.files
            .query(&kat_core::store::FileQuery::new(org("acme")))
            .await
            .unwrap()
            .count,
        4
    );
    assert!(s.files.meta(FileId(ids[2])).await.unwrap().is_some());
    s.stop().await;
}

/// A FileStore wrapper that sees each chunk as the store receives it.
#[derive(Debug)]
struct Probe {
    inner: std::sync::Arc<dyn kat_core::store::FileStore>,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
    chunks: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[async_trait::async_trait]
impl kat_core::store::FileStore for Probe {
    async fn put_valid(
        &self,
        new: kat_core::store::NewFile,
        body: kat_core::store::ByteStream,
    ) -> kat_core::Result<kat_core::store::FileMeta> {
        use futures::StreamExt;
        let (received, chunks) = (self.received.clone(), self.chunks.clone());
        let body = body.inspect(move |c| {
            if let Ok(c) = c {
                received.fetch_add(c.len() as u64, std::sync::atomic::Ordering::SeqCst);
                chunks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        self.inner.put_valid(new, Box::pin(body)).await
    }
    async fn meta(&self, id: FileId) -> kat_core::Result<Option<kat_core::store::FileMeta>> {
        self.inner.meta(id).await
    }
    async fn open(&self, id: FileId) -> kat_core::Result<kat_core::store::ByteStream> {
        self.inner.open(id).await
    }
    async fn query_valid(
        &self,
        q: &kat_core::store::FileQuery,
    ) -> kat_core::Result<kat_core::store::Page<kat_core::store::FileMeta>> {
        self.inner.query_valid(q).await
    }
    async fn delete(&self, id: FileId) -> kat_core::Result<bool> {
        self.inner.delete(id).await
    }
}

/// The store receives the file while the client is still sending it: the client holds back the
/// rest of the body until the store has seen the first megabytes.
#[tokio::test]
async fn uploads_reach_the_store_while_the_client_is_still_sending() {
    use http_body_util::BodyExt;
    use std::sync::atomic::Ordering;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let chunks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let dir = tempfile::tempdir().unwrap();
    let sled = std::sync::Arc::new(
        kat_store_sled::SledStore::open(dir.path(), kat_store_sled::SledOptions::default())
            .unwrap(),
    );
    let probe = Probe {
        inner: sled,
        received: received.clone(),
        chunks: chunks.clone(),
    };
    let s = start(Options {
        files: Some(std::sync::Arc::new(probe)),
        ..Options::default()
    })
    .await;
    let t = s.operator("acme", all());
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let frames = tokio_stream_from(rx);
    let req = http::Request::builder()
        .method("POST")
        .uri(s.url("/api/v1/file/?scan_level=1"))
        .header("authorization", format!("Token {t}"))
        .header("content-type", "multipart/form-data; boundary=xx")
        .body(http_body_util::StreamBody::new(frames).boxed_unsync())
        .unwrap();
    let sender = tokio::spawn(async move {
        tx.send(bytes::Bytes::from_static(
            b"--xx\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nraw\r\n--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n",
        ))
        .await
        .unwrap();
        let mb = bytes::Bytes::from(vec![b'z'; 1 << 20]);
        for _ in 0..4 {
            tx.send(mb.clone()).await.unwrap();
        }
        // Hold the rest until the store has seen data: proof that nothing waits for the whole body.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while received.load(Ordering::SeqCst) < (2 << 20) {
            assert!(
                std::time::Instant::now() < deadline,
                "the store saw nothing while the body was incomplete"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        for _ in 0..4 {
            tx.send(mb.clone()).await.unwrap();
        }
        tx.send(bytes::Bytes::from_static(b"\r\n--xx--\r\n"))
            .await
            .unwrap();
    });
    let r = s.send(req).await;
    sender.await.unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.json()["size"], 8 << 20);
    assert!(
        chunks.load(Ordering::SeqCst) >= 8,
        "delivered in many chunks, not one buffer"
    );
    s.stop().await;
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
) -> impl futures::Stream<Item = Result<hyper::body::Frame<bytes::Bytes>, BoxError>> {
    futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    })
}

/// The same flows on kat-core's in-memory reference stores (a smoke run; the suite runs on sled).
#[tokio::test]
async fn smoke_on_memory_stores() {
    let s = start(Options {
        backend: Backend::Memory,
        ..Options::default()
    })
    .await;
    let t = s.operator("acme", all());
    assert_eq!(
        s.post("/api/v1/objects/", &t, hostnames(&["m.example"]))
            .await
            .status,
        201
    );
    assert_eq!(
        s.get("/api/v1/objects/hostname/", &t).await.json()["count"],
        1
    );
    let r = s
        .upload(
            &t,
            "/api/v1/file/?scan_level=1",
            &[("type", None, b"raw"), ("file", Some("stdout"), b"hello")],
        )
        .await;
    assert_eq!(r.status, 201);
    let url = r.json()["file"]
        .as_str()
        .unwrap()
        .strip_prefix(&s.base)
        .unwrap()
        .to_string();
    assert_eq!(&s.get(&url, &t).await.bytes[..], b"hello");
    assert_eq!(
        s.delete("/api/v1/objects/hostname/?id=internet|m.example", &t)
            .await
            .json(),
        json!({"deleted": 1})
    );
    s.stop().await;
}

/// A task uploads only files of its own plugin's type or `error`; every file carries the scan level of
/// its chain: a task's the lowest level of its input objects, an operator's the level they state.
#[tokio::test]
async fn tasks_upload_only_their_own_type_and_files_carry_a_scan_level() {
    use kat_core::object::{NaturalKey, ObjectType, ScanLevel, ScanProfile};
    use kat_core::store::FileQuery;
    use kat_core::task::{ObjectRef, Task, TaskInput};
    let s = start(Options::default()).await;
    let acme = org("acme");
    // A task of test-plugin on two hostnames at levels 1 and 3: its files carry level 1.
    let mut input = TaskInput::default();
    for (name, level) in [("low.example", 1), ("high.example", 3)] {
        let o = kat_core::object::Object::from_json(ObjectType::Hostname, &json!({"name": name}))
            .unwrap();
        s.objects
            .upsert(&acme, vec![o.clone()], None)
            .await
            .unwrap();
        s.objects
            .set_scan_profile(
                &acme,
                ObjectType::Hostname,
                &o.natural_key(),
                ScanProfile::declared(ScanLevel::new(level).unwrap()),
            )
            .await
            .unwrap();
        input.objects.push(ObjectRef {
            object_type: ObjectType::Hostname,
            key: o.natural_key(),
        });
    }
    let task = Task::queued(acme.clone(), "test-plugin", input);
    s.tasks.create_tasks(vec![task.clone()]).await.unwrap();
    let now = kat_core::clock::Timestamp::now();
    let t = s
        .auth
        .mint(&kat_core::token::Claims::for_task(
            task.id,
            acme.clone(),
            "test-plugin",
            perms(json!({"files.add_file": {}, "files.view_file": {}})),
            now,
            now.plus_secs(600),
        ))
        .unwrap();
    let count = || async {
        s.files
            .query(&FileQuery::new(org("acme")))
            .await
            .unwrap()
            .count
    };
    // Another plugin's type: 403 naming the allowed types; nothing stored, nothing chained.
    for parts in [
        vec![
            ("type", None, &b"dns"[..]),
            ("file", Some("stdout"), &b"x"[..]),
        ],
        vec![
            ("file", Some("stdout"), &b"x"[..]),
            ("type", None, &b"dns"[..]),
        ],
        vec![
            ("type", None, &b"kat-stdin"[..]),
            ("file", Some("stdout"), &b"x"[..]),
        ],
    ] {
        let r = s.upload(&t, "/api/v1/file/", &parts).await;
        assert_eq!(r.status, 403, "{parts:?}");
        let detail = r.json()["errors"][0]["detail"].to_string();
        assert!(
            detail.contains("test-plugin") && detail.contains("error")
                || detail.contains("engine's own"),
            "{detail}"
        );
    }
    assert_eq!(count().await, 0, "nothing stored");
    assert!(
        !s.calls().iter().any(|c| c.starts_with("file_stored")),
        "nothing chained"
    );
    // A task states no level.
    let r = s
        .upload(
            &t,
            "/api/v1/file/?scan_level=4",
            &[
                ("type", None, b"test-plugin"),
                ("file", Some("stdout"), b"x"),
            ],
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.attr().as_deref()),
        (400, Some("scan_level"))
    );
    // Its own type, `error`, and no type at all (its own): level 1, from its objects.
    for (parts, ty) in [
        (
            vec![
                ("type", None, &b"test-plugin"[..]),
                ("file", Some("stdout"), &b"x"[..]),
            ],
            "test-plugin",
        ),
        (
            vec![
                ("type", None, &b"error"[..]),
                ("file", Some("stderr"), &b"x"[..]),
            ],
            "error",
        ),
        (vec![("file", Some("out.xml"), &b"x"[..])], "test-plugin"),
    ] {
        let r = s.upload(&t, "/api/v1/file/", &parts).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.bytes));
        let m = r.json();
        assert_eq!(
            (
                m["type"].as_str(),
                m["scan_level"].as_u64(),
                m["scan_level_from"].as_str()
            ),
            (Some(ty), Some(1), Some("objects")),
            "{m}"
        );
    }
    // An input's level changes while the task runs: the next file carries the new lowest level
    // (each upload sees the levels as they are, whatever it remembered of the last one).
    for (level, carried) in [(0u8, 0u64), (2, 2), (4, 3)] {
        s.objects
            .set_scan_profile(
                &acme,
                ObjectType::Hostname,
                &NaturalKey::from_parts(["internet", "low.example"]),
                ScanProfile::declared(ScanLevel::new(level).unwrap()),
            )
            .await
            .unwrap();
        for _ in 0..2 {
            let r = s
                .upload(
                    &t,
                    "/api/v1/file/",
                    &[
                        ("type", None, b"test-plugin"),
                        ("file", Some("stdout"), b"x"),
                    ],
                )
                .await;
            assert_eq!(r.status, 201);
            assert_eq!(
                r.json()["scan_level"].as_u64(),
                Some(carried),
                "low at {level}"
            );
        }
    }
    // An operator states the level: required, 0 to 4.
    let op = s.operator("acme", all());
    let part = [
        ("type", None, &b"nmap"[..]),
        ("file", Some("scan.xml"), &b"<x/>"[..]),
    ];
    for (path, status) in [
        ("/api/v1/file/", 400),
        ("/api/v1/file/?scan_level=5", 400),
        ("/api/v1/file/?scan_level=high", 400),
        ("/api/v1/file/?scan_level=-1", 400),
    ] {
        let r = s.upload(&op, path, &part).await;
        assert_eq!(
            (r.status.as_u16(), r.attr().as_deref()),
            (status, Some("scan_level")),
            "{path}"
        );
    }
    let r = s.upload(&op, "/api/v1/file/?scan_level=2", &part).await;
    assert_eq!(r.status, 201);
    let m = r.json();
    assert_eq!(
        (m["scan_level"].as_u64(), m["scan_level_from"].as_str()),
        (Some(2), Some("operator"))
    );
    assert_eq!(m["task_id"], serde_json::Value::Null);
    // The engine's own types are nobody's to upload.
    let r = s
        .upload(
            &op,
            "/api/v1/file/?scan_level=2",
            &[("type", None, b"kat-stdin"), ("file", Some("stdin"), b"x")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        count().await,
        10,
        "3 + 6 of the task's, 1 of the operator's"
    );
    s.stop().await;
}
