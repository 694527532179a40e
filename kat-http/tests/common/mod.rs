//! The test harness: a real server on 127.0.0.1, a real HTTP client (hyper's), real JWTs, and the
//! stores behind the server so that tests can check what was (not) written.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::type_complexity
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use kat_core::clock::Timestamp;
use kat_core::control::{TaskControl, TaskRequest};
use kat_core::memory::{MemoryFileStore, MemoryObjectStore, MemoryTaskStore};
use kat_core::object::ObjectType;
use kat_core::org::{OrgCode, Organization};
use kat_core::permission::Permissions;
use kat_core::store::{FileMeta, FileStore, ObjectStore, TaskStore};
use kat_core::task::{ObjectRef, Task, TaskId, TaskInput, TaskPatch, TaskState};
use kat_core::token::{Claims, TokenAuthority};
use kat_http::{Api, ApiConfig, JwtAuthority};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ClientBody = UnsyncBoxBody<Bytes, BoxError>;

pub const SECRET: &[u8] = b"kat-http-tests-secret-0123456789abcdef";
pub const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIIklzre5hKmsmbBk9HPtILZgqC67r1BfjKNbXPkOZbJx\n-----END PRIVATE KEY-----\n";
pub const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEATcAsiXN7K1KAm4V0ztQiAA922tl9FO1mfd9/GqNfLaM=\n-----END PUBLIC KEY-----\n";
pub const ED2_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIG4Wklh3QtznndL8YH/WObliBR3Rnj/EPNkYAiFvvc4+\n-----END PRIVATE KEY-----\n";
pub const ED2_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAPEDmeQVITj1zEWDP695SLSPvjXX2D7nc9s8h/du6nO4=\n-----END PUBLIC KEY-----\n";

/// Which stores the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// kat-core's in-memory reference stores.
    Memory,
    /// The real sled store (objects, files and tasks in one `SledStore`) in a temporary directory.
    Sled,
}

/// Which signing algorithm the server's authority uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Hs256,
    EdDsa,
}

pub struct Options {
    pub backend: Backend,
    pub alg: Alg,
    pub with_control: bool,
    pub config: ApiConfig,
    pub files: Option<Arc<dyn FileStore>>,
    /// Run kat-core's real engine behind the API (not started: tasks stay queued, ticks are called
    /// by the test) instead of the recording double.
    pub engine: bool,
    /// Give that engine the shipped business rules (`plugins/business_rules.json`).
    pub rules: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: Backend::Sled,
            alg: Alg::Hs256,
            with_control: true,
            config: ApiConfig::default(),
            files: None,
            engine: false,
            rules: false,
        }
    }
}

/// A test double for the not-yet-written engine (`kat-core`'s engine issue replaces it): it records
/// every call and writes queued tasks into the real [`TaskStore`], and cancels through it.
#[derive(Debug)]
pub struct RecordingControl {
    pub tasks: Arc<dyn TaskStore>,
    pub calls: Mutex<Vec<String>>,
}

#[async_trait]
impl TaskControl for RecordingControl {
    async fn submit(&self, r: TaskRequest) -> kat_core::Result<Vec<Task>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("submit {} {} {:?}", r.org, r.plugin_id, r.input));
        if self.tasks.get_plugin(&r.plugin_id).await?.is_none() {
            return Err(kat_core::Error::invalid(
                "data.plugin_id",
                format!("unknown plugin {:?}", r.plugin_id),
            ));
        }
        let mut input = TaskInput::default();
        for i in &r.input {
            let key = ObjectType::Hostname.parse_key(i)?;
            input.objects.push(ObjectRef {
                object_type: ObjectType::Hostname,
                key,
            });
        }
        let t = Task::queued(r.org, r.plugin_id, input);
        self.tasks.create_tasks(vec![t.clone()]).await?;
        Ok(vec![t])
    }

    async fn submit_all(&self, requests: Vec<TaskRequest>) -> kat_core::Result<Vec<Task>> {
        // All or nothing, as the engine: check every plugin before queuing any.
        for (i, r) in requests.iter().enumerate() {
            if self.tasks.get_plugin(&r.plugin_id).await?.is_none() {
                return Err(kat_core::Error::invalid(
                    format!("[{i}].data.plugin_id"),
                    format!("unknown plugin {:?}", r.plugin_id),
                ));
            }
        }
        let mut out = Vec::new();
        for r in requests {
            out.extend(self.submit(r).await?);
        }
        Ok(out)
    }

    async fn cancel(&self, org: &OrgCode, task: TaskId) -> kat_core::Result<Task> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("cancel {org} {task}"));
        let mut p = TaskPatch::to(TaskState::Cancelled);
        p.ended_at = Some(Timestamp::now());
        self.tasks
            .transition_task(task, &[TaskState::Queued, TaskState::Running], p)
            .await
    }

    async fn file_stored(&self, file: &FileMeta) -> kat_core::Result<Vec<Task>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("file_stored {} {}", file.id, file.file_type));
        Ok(vec![])
    }
}

/// A container runtime for an engine that is never started: nothing runs in these tests.
#[derive(Debug)]
pub struct NoRuntime;

#[async_trait]
impl kat_core::runtime::ContainerRuntime for NoRuntime {
    async fn capabilities(&self) -> kat_core::Result<kat_core::runtime::Capabilities> {
        Err(kat_core::Error::backend(
            "test",
            "no runtime in these tests",
            false,
        ))
    }
    async fn prepare_entrypoint(
        &self,
        _: &kat_core::runtime::EntrypointBinary,
        _: &str,
        _: &str,
    ) -> kat_core::Result<kat_core::runtime::EntrypointMount> {
        Err(kat_core::Error::backend(
            "test",
            "no runtime in these tests",
            false,
        ))
    }
    async fn run(
        &self,
        _: kat_core::runtime::ContainerSpec,
        _: tokio_util::sync::CancellationToken,
    ) -> kat_core::Result<kat_core::runtime::Outcome> {
        Err(kat_core::Error::backend(
            "test",
            "no runtime in these tests",
            false,
        ))
    }
    async fn list_managed(&self) -> kat_core::Result<Vec<kat_core::runtime::ManagedContainer>> {
        Ok(vec![])
    }
    async fn reap_orphans(
        &self,
        _: &str,
        _: &std::collections::HashSet<TaskId>,
    ) -> kat_core::Result<Vec<String>> {
        Ok(vec![])
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub base: String,
    pub objects: Arc<dyn ObjectStore>,
    pub files: Arc<dyn FileStore>,
    pub tasks: Arc<dyn TaskStore>,
    pub auth: Arc<JwtAuthority>,
    pub control: Option<Arc<RecordingControl>>,
    pub engine: Option<kat_core::engine::Engine>,
    pub client: Client<HttpConnector, ClientBody>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), kat_core::Error>>>,
    _dir: Option<tempfile::TempDir>,
}

pub fn authority(alg: Alg, tasks: Arc<dyn TaskStore>) -> JwtAuthority {
    match alg {
        Alg::Hs256 => JwtAuthority::hs256(SECRET, tasks).unwrap(),
        Alg::EdDsa => {
            JwtAuthority::ed25519(ED_PRIVATE.as_bytes(), ED_PUBLIC.as_bytes(), tasks).unwrap()
        }
    }
}

pub async fn start(opts: Options) -> Server {
    let (objects, files, tasks, dir): (
        Arc<dyn ObjectStore>,
        Arc<dyn FileStore>,
        Arc<dyn TaskStore>,
        Option<tempfile::TempDir>,
    ) = match opts.backend {
        Backend::Memory => (
            Arc::new(MemoryObjectStore::default()),
            Arc::new(MemoryFileStore::default()),
            Arc::new(MemoryTaskStore::default()),
            None,
        ),
        Backend::Sled => {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(
                kat_store_sled::SledStore::open(dir.path(), kat_store_sled::SledOptions::default())
                    .unwrap(),
            );
            (store.clone(), store.clone(), store, Some(dir))
        }
    };
    let files = opts.files.unwrap_or(files);
    // The organizations the tests use, there since the epoch (tokens of any age are theirs).
    for code in TEST_ORGS {
        let mut o = Organization::new(org(code), code);
        o.created_at = Timestamp::from_millis(0);
        tasks.put_organization(o).await.unwrap();
    }
    let auth = Arc::new(authority(opts.alg, tasks.clone()));
    let rules = opts.rules.then(|| {
        Arc::new(
            kat_core::rules::RuleSet::parse(
                include_str!("../../../plugins/business_rules.json"),
                "business_rules.json",
            )
            .unwrap(),
        )
    });
    let engine = opts.engine.then(|| {
        kat_core::engine::Engine::builder()
            .rules(rules.clone().unwrap_or_default())
            .objects(objects.clone())
            .files(files.clone())
            .tasks(tasks.clone())
            .runtime(Arc::new(NoRuntime))
            .tokens(auth.clone())
            .build()
            .unwrap()
    });
    let control = (opts.with_control && engine.is_none()).then(|| {
        Arc::new(RecordingControl {
            tasks: tasks.clone(),
            calls: Mutex::new(Vec::new()),
        })
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let mut config = opts.config;
    config.public_base_url = base.clone();
    let api = Api::new(
        objects.clone(),
        files.clone(),
        tasks.clone(),
        auth.clone(),
        match &engine {
            Some(e) => Some(Arc::new(e.clone()) as Arc<dyn TaskControl>),
            None => control.clone().map(|c| c as Arc<dyn TaskControl>),
        },
        config,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(api.serve(listener, async {
        let _ = stopped.await;
    }));
    let client = Client::builder(TokioExecutor::new()).build_http::<ClientBody>();
    Server {
        addr,
        base,
        objects,
        files,
        tasks,
        auth,
        control,
        engine,
        client,
        stop: Some(stop),
        handle: Some(handle),
        _dir: dir,
    }
}

/// The organizations every test server has.
pub const TEST_ORGS: [&str; 5] = ["acme", "org-a", "org-b", "other", "victim"];

pub fn org(s: &str) -> OrgCode {
    OrgCode::new(s).unwrap()
}

pub fn perms(v: Value) -> Permissions {
    Permissions::from_json(&v, "test").unwrap()
}

pub fn full_body(b: impl Into<Bytes>) -> ClientBody {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} {}",
                self.status,
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }

    /// Assert the standard error shape and return the first error's code.
    pub fn error_code(&self) -> String {
        let v = self.json();
        let ty = v["type"].as_str().expect("type");
        assert!(
            ["client_error", "validation_error", "server_error"].contains(&ty),
            "{v}"
        );
        let e = &v["errors"][0];
        assert!(e["detail"].is_string(), "{v}");
        assert!(e.get("attr").is_some(), "{v}");
        e["code"].as_str().expect("code").to_string()
    }

    pub fn attr(&self) -> Option<String> {
        self.json()["errors"][0]["attr"]
            .as_str()
            .map(str::to_string)
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Mint a task token for `org` with these permissions.
    pub fn token(&self, org_code: &str, permissions: Value) -> String {
        self.token_with_task(org_code, permissions).0
    }

    /// An operator's token (no task): uploads state their scan level.
    pub fn operator(&self, org_code: &str, permissions: Value) -> String {
        let c = Claims::for_user(
            "operator",
            org(org_code),
            perms(permissions),
            Timestamp::now(),
            600,
        );
        self.auth.mint(&c).unwrap()
    }

    pub fn token_with_task(&self, org_code: &str, permissions: Value) -> (String, TaskId) {
        let now = Timestamp::now();
        let task = TaskId::new();
        let c = Claims::for_task(
            task,
            org(org_code),
            "test-plugin",
            perms(permissions),
            now,
            now.plus_secs(600),
        );
        (self.auth.mint(&c).unwrap(), task)
    }

    pub async fn send(&self, req: Request<ClientBody>) -> Resp {
        let r = self.client.request(req).await.expect("request");
        let (parts, body) = r.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            bytes,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut b = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(self.url(path));
        if let Some(t) = token {
            b = b.header("authorization", format!("Token {t}"));
        }
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                full_body(serde_json::to_vec(&v).unwrap())
            }
            None => full_body(Bytes::new()),
        };
        self.send(b.body(body).unwrap()).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call("GET", path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call("POST", path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call("PATCH", path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call("DELETE", path, Some(token), None).await
    }

    /// Upload a multipart body built from `parts` (name, filename, data), in order.
    pub async fn upload(
        &self,
        token: &str,
        path: &str,
        parts: &[(&str, Option<&str>, &[u8])],
    ) -> Resp {
        let boundary = "test-boundary-7MA4YWxkTrZu0gW";
        let mut body = Vec::new();
        for (name, filename, data) in parts {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match filename {
                Some(f) => body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
                ),
                None => body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let req = Request::builder()
            .method("POST")
            .uri(self.url(path))
            .header("authorization", format!("Token {token}"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(full_body(body))
            .unwrap();
        self.send(req).await
    }

    /// Send raw bytes on a fresh connection and read until the server closes or `timeout`.
    pub async fn raw(&self, bytes: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let _ = s.write_all(bytes).await;
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    out.extend_from_slice(&buf[..n]);
                    // One response is enough when the server keeps the connection open.
                    let text = String::from_utf8_lossy(&out);
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let head = &text[..head_end];
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if out.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    pub async fn count(&self, org_code: &str, ty: ObjectType) -> u64 {
        self.objects
            .query(&kat_core::store::ObjectQuery::new(org(org_code), ty))
            .await
            .unwrap()
            .count
    }

    pub fn calls(&self) -> Vec<String> {
        self.control
            .as_ref()
            .map(|c| c.calls.lock().unwrap().clone())
            .unwrap_or_default()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }
}

/// Every permission, unrestricted, as JSON.
pub fn all() -> Value {
    kat_http::all_permissions().to_json()
}

pub fn hostnames(names: &[&str]) -> Value {
    json!({"hostname": names.iter().map(|n| json!({"network": "internet", "name": n})).collect::<Vec<_>>()})
}
