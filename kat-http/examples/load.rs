//! Load test of the API: a server process on the sled store and this process as the client.
//!
//! ```text
//! cargo run --release -p kat-http --example load -- [--connections 16] [--seconds 10] [--batch 100]
//!     [--store sled|memory|null|bare] [--durability flush|periodic] [--rate OBJECTS_PER_SECOND]
//!     [--warmup SECONDS] [--write-seconds SECONDS]
//! ```
//!
//! The parent starts a copy of itself as the server (`load serve ...`, a separate process with its own
//! runtime), then drives it over `--connections` keep-alive HTTP/1.1 connections on 127.0.0.1 with real
//! JWTs (HS256, verified and checked against the revocation list on every request):
//! 1. writes: `POST /api/v1/objects/` with `--batch` new hostnames per request, each connection sending
//!    its next request as soon as the last one is answered; with `--rate`, instead, on a fixed
//!    schedule that offers that many objects per second in all, and each latency counts from the
//!    request's scheduled time (a late answer delays the next request, and that wait counts too: no
//!    coordinated omission);
//! 2. reads: `GET /api/v1/objects/hostname/<key>/` of hostnames written in phase 1.
//!
//! `--write-seconds` shortens phase 1 (default: `--seconds`). `--store bare` is the anchor for the
//! reads: the server process is a minimal hyper server (the same HTTP/1.1 settings, keep-alive, no
//! routing, no authentication, no store) answering every request with a fixed JSON body the size of
//! an object; phase 1 is skipped, and the reads measure what hyper and this client cost alone.
//!
//! Writes run `--warmup` seconds (default 1) before they are measured: a new database's first
//! batches grow sled's files and the allocator's arenas. It prints requests/s, objects/s and latency
//! percentiles for each phase.

#![allow(clippy::unwrap_used)]

// As in katd: glibc's malloc halves sled's write throughput here (docs/store-sled.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use kat_core::clock::Timestamp;
use kat_core::memory::{MemoryFileStore, MemoryObjectStore, MemoryTaskStore};
use kat_core::org::OrgCode;
use kat_core::store::{FileStore, ObjectStore, TaskStore};
use kat_core::task::TaskId;
use kat_core::token::{Claims, TokenAuthority};
use kat_http::{Api, ApiConfig, JwtAuthority};

struct Args {
    connections: usize,
    seconds: u64,
    batch: usize,
    store: String,
    durability: String,
    rate: Option<f64>,
    warmup: f64,
    write_seconds: Option<u64>,
}

fn parse_args(args: &[String]) -> Args {
    let mut a = Args {
        connections: 16,
        seconds: 10,
        batch: 100,
        store: "sled".into(),
        durability: "flush".into(),
        rate: None,
        warmup: 1.0,
        write_seconds: None,
    };
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--connections" => a.connections = v.parse().unwrap(),
            "--seconds" => a.seconds = v.parse().unwrap(),
            "--batch" => a.batch = v.parse().unwrap(),
            "--store" => a.store = v,
            "--durability" => a.durability = v,
            "--rate" => a.rate = Some(v.parse().unwrap()),
            "--warmup" => a.warmup = v.parse().unwrap(),
            "--write-seconds" => a.write_seconds = Some(v.parse().unwrap()),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn main() {
    // As in katd: huge-page faults inside sled's writes were the write p99 (docs/store-sled.md).
    kat_store_sled::disable_transparent_huge_pages().unwrap();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        serve(&args[1..]);
    } else {
        client(parse_args(&args));
    }
}

/// The server process: `serve <dir> <store> <durability>`; prints `LISTENING <addr>`, stops when
/// stdin closes.
fn serve(args: &[String]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    if args[1] == "bare" {
        rt.block_on(serve_bare());
        return;
    }
    rt.block_on(async {
        let dir = std::path::PathBuf::from(&args[0]);
        let (objects, files, tasks): (
            Arc<dyn ObjectStore>,
            Arc<dyn FileStore>,
            Arc<dyn TaskStore>,
        ) = if args[1] == "null" {
            (
                Arc::new(NullObjects),
                Arc::new(MemoryFileStore::default()),
                Arc::new(MemoryTaskStore::default()),
            )
        } else if args[1] == "memory" {
            (
                Arc::new(MemoryObjectStore::default()),
                Arc::new(MemoryFileStore::default()),
                Arc::new(MemoryTaskStore::default()),
            )
        } else {
            let mut opts = kat_store_sled::SledOptions::default();
            if args[2] == "periodic" {
                opts.durability = kat_store_sled::Durability::Periodic(Duration::from_millis(500));
            }
            let s = Arc::new(kat_store_sled::SledStore::open(&dir, opts).unwrap());
            (s.clone(), s.clone(), s)
        };
        // The load's organization must exist: the API refuses tokens of unknown organizations.
        tasks
            .put_organization(kat_core::org::Organization::new(
                OrgCode::new("load").unwrap(),
                "Load",
            ))
            .await
            .unwrap();
        let tokens = Arc::new(JwtAuthority::from_env(tasks.clone()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let api = Api::new(
            objects,
            files,
            tasks,
            tokens,
            None,
            ApiConfig::new(format!("http://{addr}")),
        );
        println!("LISTENING {addr}");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            let _ = tx.send(());
        });
        let stop = async {
            let _ = rx.await;
        };
        api.serve(listener, stop).await.unwrap();
    });
}

/// What the bare server answers: the size and shape of an object's JSON.
const BARE_BODY: &[u8] = br#"{"object_type":"hostname","id":"internet|h1-1-c0.load.example","network":"internet","name":"h1-1-c0.load.example","scan_level":null,"declared":false,"created_at":"2026-01-01T00:00:00Z","last_seen":"2026-01-01T00:00:00Z"}"#;

/// The anchor: hyper alone, with the API's connection settings, answering a fixed body; stops when
/// stdin closes.
async fn serve_bare() {
    use hyper::server::conn::http1 as server;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("LISTENING {}", listener.local_addr().unwrap());
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req| async {
                let mut r = http::Response::new(Full::new(Bytes::from_static(BARE_BODY)));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Ok::<_, std::convert::Infallible>(r)
            });
            let _ = server::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// An object store that stores nothing (answers as if every object were new): isolates the cost of
/// the HTTP layer (hyper, JWT, JSON, validation, permissions, responses) from the store's.
#[derive(Debug)]
struct NullObjects;

#[async_trait::async_trait]
impl ObjectStore for NullObjects {
    async fn upsert(
        &self,
        org: &OrgCode,
        objects: Vec<kat_core::object::Object>,
        by: Option<TaskId>,
    ) -> kat_core::Result<Vec<kat_core::store::StoredObject>> {
        let now = Timestamp::now();
        Ok(objects
            .into_iter()
            .map(|o| kat_core::memory::merge_stored(None, org, o.natural_key(), o, by, now))
            .collect())
    }
    async fn replace(
        &self,
        org: &OrgCode,
        object: kat_core::object::Object,
        by: Option<TaskId>,
    ) -> kat_core::Result<kat_core::store::StoredObject> {
        let key = object.natural_key();
        Ok(kat_core::memory::merge_stored(
            None,
            org,
            key,
            object,
            by,
            Timestamp::now(),
        ))
    }
    async fn get(
        &self,
        org: &OrgCode,
        _ty: kat_core::object::ObjectType,
        key: &kat_core::object::NaturalKey,
    ) -> kat_core::Result<Option<kat_core::store::StoredObject>> {
        let parts = key.parts();
        let o = kat_core::object::Object::from_json(
            kat_core::object::ObjectType::Hostname,
            &serde_json::json!({"network": parts[0], "name": parts.get(1).cloned().unwrap_or_default()}),
        )?;
        Ok(Some(kat_core::memory::merge_stored(
            None,
            org,
            key.clone(),
            o,
            None,
            Timestamp::now(),
        )))
    }
    async fn query_valid(
        &self,
        _q: &kat_core::store::ObjectQuery,
    ) -> kat_core::Result<kat_core::store::Page<kat_core::store::StoredObject>> {
        Ok(kat_core::store::Page {
            count: 0,
            items: vec![],
        })
    }
    async fn delete(
        &self,
        _org: &OrgCode,
        _ty: kat_core::object::ObjectType,
        _keys: &[kat_core::object::NaturalKey],
    ) -> kat_core::Result<u64> {
        Ok(0)
    }
    async fn set_scan_profile_valid(
        &self,
        _org: &OrgCode,
        _ty: kat_core::object::ObjectType,
        key: &kat_core::object::NaturalKey,
        _p: kat_core::object::ScanProfile,
    ) -> kat_core::Result<kat_core::store::StoredObject> {
        Err(kat_core::Error::not_found("object", key.as_str()))
    }
    async fn tasks_of(
        &self,
        _org: &OrgCode,
        _ty: kat_core::object::ObjectType,
        _key: &kat_core::object::NaturalKey,
    ) -> kat_core::Result<Vec<TaskId>> {
        Ok(vec![])
    }
    async fn objects_of(
        &self,
        _org: &OrgCode,
        _task: TaskId,
    ) -> kat_core::Result<Vec<kat_core::task::ObjectRef>> {
        Ok(vec![])
    }
    async fn recompute_levels(&self, _org: Option<&OrgCode>) -> kat_core::Result<u64> {
        Ok(0)
    }
    async fn levels_need_recompute(&self) -> kat_core::Result<bool> {
        Ok(false)
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

fn report(name: &str, lat: &mut [u32], elapsed: Duration, per_request: usize, errors: u64) {
    lat.sort_unstable();
    let n = lat.len();
    let rps = n as f64 / elapsed.as_secs_f64();
    println!(
        "{name}: {n} requests in {:.1} s, {errors} errors: {rps:.0} requests/s{}; latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        elapsed.as_secs_f64(),
        if per_request > 1 {
            format!(", {:.0} objects/s", rps * per_request as f64)
        } else {
            String::new()
        },
        percentile(lat, 0.5),
        percentile(lat, 0.9),
        percentile(lat, 0.99),
        percentile(lat, 0.999),
        percentile(lat, 1.0),
    );
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: &str) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn send(sender: &mut Sender, req: http::Request<Full<Bytes>>) -> (u16, Bytes) {
    sender.ready().await.unwrap();
    let r = sender.send_request(req).await.unwrap();
    let status = r.status().as_u16();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

fn client(args: Args) {
    let secret: String = (0..48)
        .map(|i| char::from(b'a' + ((uuid::Uuid::new_v4().as_u128() >> (i % 100)) % 26) as u8))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "serve",
            dir.path().to_str().unwrap(),
            &args.store,
            &args.durability,
        ])
        .env("KAT_JWT_SECRET", &secret)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line.trim().strip_prefix("LISTENING ").unwrap().to_string();
    println!(
        "server pid {} on {addr}: store {} (durability {}), {} connections, {} s per phase, {} hostnames per write{}",
        child.id(),
        args.store,
        args.durability,
        args.connections,
        args.seconds,
        args.batch,
        match args.rate {
            Some(r) => format!(", writes offered at {r:.0} objects/s"),
            None => String::new(),
        }
    );
    // The client runs on one thread, leaving the other core to the server.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let minter = JwtAuthority::hs256(secret.as_bytes(), Arc::new(MemoryTaskStore::default())).unwrap();
        let perms = kat_core::permission::Permissions::from_json(
            &serde_json::json!({"objects.add_hostname": {}, "objects.view_hostname": {}}),
            "load",
        )
        .unwrap();
        let now = Timestamp::now();
        let token = minter
            .mint(&Claims::for_task(
                TaskId::new(),
                OrgCode::new("load").unwrap(),
                "load",
                perms,
                now,
                now.plus_secs(3600),
            ))
            .unwrap();
        let auth = Arc::new(format!("Token {token}"));
        let addr = Arc::new(addr);

        // Phase 1: bulk writes, measured after the warm-up (none against the bare server).
        let bare = args.store == "bare";
        let start = Instant::now();
        let measured_from = start + Duration::from_secs_f64(if bare { 0.0 } else { args.warmup });
        let write_seconds = if bare { 0 } else { args.write_seconds.unwrap_or(args.seconds) };
        let deadline = measured_from + Duration::from_secs(write_seconds);
        let mut workers = Vec::new();
        // With --rate: each connection's requests are `interval` apart, the connections staggered.
        let interval = args
            .rate
            .map(|r| Duration::from_secs_f64(args.connections as f64 * args.batch as f64 / r));
        for c in 0..args.connections {
            let (auth, addr, batch) = (auth.clone(), addr.clone(), args.batch);
            let mut next =
                interval.map(|i| tokio::time::Instant::from_std(start) + i * c as u32 / args.connections as u32);
            workers.push(tokio::spawn(async move {
                let mut sender = connect(&addr).await;
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    if let Some(at) = next {
                        tokio::time::sleep_until(at).await;
                    }
                    let names: Vec<serde_json::Value> = (0..batch)
                        .map(|i| serde_json::json!({"network": "internet", "name": format!("h{i}-{seq}-c{c}.load.example")}))
                        .collect();
                    let body = serde_json::to_vec(&serde_json::json!({ "hostname": names })).unwrap();
                    let req = http::Request::builder()
                        .method("POST")
                        .uri(format!("http://{addr}/api/v1/objects/"))
                        .header("host", addr.as_str())
                        .header("authorization", auth.as_str())
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body)))
                        .unwrap();
                    let t = next.map_or_else(Instant::now, |at| at.into_std());
                    let (status, _) = send(&mut sender, req).await;
                    if t >= measured_from {
                        lat.push(t.elapsed().as_micros() as u32);
                        if status != 201 {
                            errors += 1;
                        }
                    }
                    seq += 1;
                    if let (Some(at), Some(i)) = (next.as_mut(), interval) {
                        *at += i;
                    }
                }
                (lat, errors, seq)
            }));
        }
        let mut lat = Vec::new();
        let mut errors = 0;
        let mut seqs = Vec::new();
        for w in workers {
            let (l, e, s) = w.await.unwrap();
            lat.extend(l);
            errors += e;
            seqs.push(s);
        }
        if !bare {
            report(
                "writes (POST /objects/)",
                &mut lat,
                measured_from.elapsed(),
                args.batch,
                errors,
            );
        }

        // Phase 2: authenticated detail reads of written hostnames.
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let start = Instant::now();
        let seqs = Arc::new(seqs);
        let mut workers = Vec::new();
        for c in 0..args.connections {
            let (auth, addr, seqs, batch) = (auth.clone(), addr.clone(), seqs.clone(), args.batch);
            workers.push(tokio::spawn(async move {
                let mut sender = connect(&addr).await;
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut n = 0u64;
                let written = seqs[c].max(1);
                while Instant::now() < deadline {
                    let key = format!("internet%7Ch{}-{}-c{c}.load.example", n as usize % batch, (n / batch as u64) % written);
                    let req = http::Request::builder()
                        .uri(format!("http://{addr}/api/v1/objects/hostname/{key}/"))
                        .header("host", addr.as_str())
                        .header("authorization", auth.as_str())
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let t = Instant::now();
                    let (status, _) = send(&mut sender, req).await;
                    lat.push(t.elapsed().as_micros() as u32);
                    if status != 200 {
                        errors += 1;
                    }
                    n += 1;
                }
                (lat, errors)
            }));
        }
        let mut lat = Vec::new();
        let mut errors = 0;
        for w in workers {
            let (l, e) = w.await.unwrap();
            lat.extend(l);
            errors += e;
        }
        let name = if bare {
            "reads (bare hyper, fixed body)"
        } else {
            "reads (GET /objects/hostname/<key>/)"
        };
        report(name, &mut lat, start.elapsed(), 1, errors);
    });
    drop(child.stdin.take());
    let _ = child.wait();
}
