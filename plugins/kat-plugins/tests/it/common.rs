//! The harness: the real binary, the real API (kat-http on the sled store) with real task tokens
//! minted from the plugins' own declarations in plugins/plugins.json, a recording fake API for error
//! paths, and golden-file helpers. Everything listens on loopback only.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use kat_core::clock::Timestamp;
use kat_core::object::{Object, ObjectType};
use kat_core::org::OrgCode;
use kat_core::plan::{PlanInput, Target, plan};
use kat_core::plugin::PluginDef;
use kat_core::store::{FileId, FileStore, NewFile, ObjectQuery, ObjectStore};
use kat_core::task::TaskId;
use kat_core::token::{Claims, TokenAuthority};
use kat_http::{Api, ApiConfig, JwtAuthority};

pub const ORG: &str = "acme";

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `plugins/`.
pub fn plugins_dir() -> PathBuf {
    manifest_dir().join("..")
}

pub fn golden_dir() -> PathBuf {
    manifest_dir().join("tests/golden")
}

/// Compare `actual` with the golden file `name` (under tests/golden), or write it when
/// `KAT_UPDATE_GOLDEN=1`.
pub fn assert_golden(name: &str, actual: &Value) {
    let path = golden_dir().join(name);
    let text = format!("{}\n", serde_json::to_string_pretty(actual).unwrap());
    if std::env::var("KAT_UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} missing ({e}); run with KAT_UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    let want: Value = serde_json::from_str(&want).unwrap();
    assert_eq!(
        &want,
        actual,
        "golden file {} differs; actual:\n{text}",
        path.display()
    );
}

pub fn catalogue() -> Vec<PluginDef> {
    PluginDef::load_files(&[
        plugins_dir().join("plugins.json"),
        plugins_dir().join("examples.json"),
    ])
    .expect("plugins.json and examples.json load")
}

pub fn plugin(id: &str) -> PluginDef {
    catalogue()
        .into_iter()
        .find(|p| p.plugin_id == id)
        .unwrap_or_else(|| panic!("plugin {id} not in plugins.json"))
}

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "the plugin failed: {self:#?}");
        self
    }
}

/// Run `kat-plugins args...` with only `env` (and PATH) in its environment.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kat-plugins"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run kat-plugins");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The real API on 127.0.0.1 with a sled store in a temporary directory.
pub struct RealApi {
    pub base: String,
    pub objects: Arc<dyn ObjectStore>,
    pub files: Arc<dyn FileStore>,
    auth: Arc<JwtAuthority>,
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl RealApi {
    pub fn start() -> RealApi {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            kat_store_sled::SledStore::open(dir.path(), kat_store_sled::SledOptions::default())
                .unwrap(),
        );
        // The API refuses tokens of organizations that do not exist.
        rt.block_on(kat_core::store::OrgStore::put_organization(
            store.as_ref(),
            kat_core::org::Organization::new(OrgCode::new(ORG).unwrap(), ORG),
        ))
        .unwrap();
        let auth = Arc::new(
            JwtAuthority::hs256(b"kat-plugins-tests-secret-0123456789abcdef", store.clone())
                .unwrap(),
        );
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let api = Api::new(
            store.clone(),
            store.clone(),
            store.clone(),
            auth.clone(),
            None,
            ApiConfig::new(format!("http://{addr}")),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(api.serve(listener, async {
            let _ = stopped.await;
        }));
        RealApi {
            base: format!("http://{addr}/api/v1"),
            objects: store.clone(),
            files: store,
            auth,
            rt,
            stop: Some(stop),
            _dir: dir,
        }
    }

    /// A task token for `plugin_id` over `input`, with exactly the permissions a real task gets:
    /// the plan's (files.add_file, its input files) plus the plugin's declared ones.
    pub fn task_token(&self, plugin_id: &str, input: PlanInput) -> String {
        let def = plugin(plugin_id);
        let p = plan(&def, &input).expect("plan");
        let perms = p.permissions(&def, &[]);
        let now = Timestamp::now();
        let claims = Claims::for_task(
            TaskId::new(),
            OrgCode::new(ORG).unwrap(),
            plugin_id,
            perms,
            now,
            now.plus_secs(600),
        );
        self.auth.mint(&claims).unwrap()
    }

    /// A token for a hostname/IP target plugin.
    pub fn target_token(&self, plugin_id: &str, target: &str) -> String {
        self.task_token(plugin_id, PlanInput::Objects(vec![Target::value(target)]))
    }

    pub fn env<'a>(&'a self, token: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("OPENKAT_API", self.base.as_str()),
            ("OPENKAT_TOKEN", token),
        ]
    }

    pub fn put_file(&self, file_type: &str, content: Vec<u8>) -> FileId {
        let files = self.files.clone();
        let new = NewFile {
            org: OrgCode::new(ORG).unwrap(),
            file_type: file_type.into(),
            name: "stdout".into(),
            task: None,
            scan_level: kat_core::object::ScanLevel::new(4).ok(),
            level_from: kat_core::store::LevelSource::Operator,
        };
        self.rt
            .block_on(async move {
                files
                    .put(
                        new,
                        Box::pin(futures::stream::once(async move {
                            Ok::<_, std::io::Error>(Bytes::from(content))
                        })),
                    )
                    .await
            })
            .unwrap()
            .id
    }

    /// Every stored object of a type, as the API shows it (with `id`).
    pub fn all(&self, ty: ObjectType) -> Vec<Value> {
        let mut q = ObjectQuery::new(OrgCode::new(ORG).unwrap(), ty);
        q.limit = 10_000;
        let objects = self.objects.clone();
        let page = self
            .rt
            .block_on(async move { objects.query(&q).await })
            .unwrap();
        page.items
            .iter()
            .map(|o| Value::Object(o.to_json()))
            .collect()
    }

    pub fn keys(&self, ty: ObjectType) -> BTreeSet<String> {
        self.all(ty)
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn get(&self, ty: ObjectType, key: &str) -> Option<Value> {
        self.all(ty).into_iter().find(|v| v["id"] == key)
    }

    /// Store objects directly (earlier state that a plugin run should update).
    pub fn seed(&self, items: &[(ObjectType, Value)]) {
        let objs: Vec<Object> = items
            .iter()
            .map(|(t, v)| Object::from_json(*t, v).unwrap())
            .collect();
        let objects = self.objects.clone();
        self.rt
            .block_on(async move {
                objects
                    .upsert(&OrgCode::new(ORG).unwrap(), objs, None)
                    .await
            })
            .unwrap();
    }
}

impl Drop for RealApi {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// One request the fake API received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub authorization: Option<String>,
    pub body: String,
}

type Handler = dyn Fn(&Recorded, usize) -> (u16, String) + Send + Sync;

/// A tiny HTTP/1.1 server on 127.0.0.1 that records every request and answers with `handler(request,
/// index)`.
pub struct FakeApi {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeApi {
    pub fn start(
        handler: impl Fn(&Recorded, usize) -> (u16, String) + Send + Sync + 'static,
    ) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let reqs = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let reqs = reqs.clone();
                let handler = handler.clone();
                std::thread::spawn(move || serve_one(conn, &reqs, &*handler));
            }
        });
        FakeApi { addr, requests }
    }

    pub fn base(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_one(conn: TcpStream, reqs: &Mutex<Vec<Recorded>>, handler: &Handler) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut len = 0usize;
        let mut auth = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if k.eq_ignore_ascii_case("authorization") {
                    auth = Some(v.trim().to_string());
                }
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let rec = Recorded {
            method,
            target,
            authorization: auth,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        let index = {
            let mut g = reqs.lock().unwrap();
            g.push(rec.clone());
            g.len() - 1
        };
        let (status, body) = handler(&rec, index);
        let resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if conn.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Whether the test must fail rather than skip when a tool is missing.
pub fn strict() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Make `tool` available (Debian package `package`), installing it with the plugin's test-tools
/// script when missing. Returns false (after saying why) when it cannot be had and the run is not
/// strict; panics when strict.
pub fn ensure_tool(tool: &str) -> bool {
    // One installation at a time: concurrent apt-get runs fight over dpkg's lock.
    static INSTALL: Mutex<()> = Mutex::new(());
    let _guard = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let have = || {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if have() {
        return true;
    }
    let script = manifest_dir().join("scripts/test-tools.sh");
    let status = Command::new("bash").arg(&script).status();
    if have() {
        return true;
    }
    let msg = format!(
        "{tool} is missing and {} could not install it ({status:?})",
        script.display()
    );
    if strict() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

pub fn value_set(v: &Value, key: &str) -> BTreeSet<String> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

pub fn dump(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn j(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

pub fn empty() -> Value {
    json!({})
}

/// A listener on `addr` that accepts connections until dropped, sending `greeting` (if any) to each,
/// answering a request that starts with `HEAD ` or `GET ` with `http_response` (if any), then closing.
pub struct Listener {
    pub port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    addr: SocketAddr,
}

impl Listener {
    pub fn start(
        addr: &str,
        greeting: Option<&'static [u8]>,
        http_response: Option<&'static [u8]>,
    ) -> std::io::Result<Listener> {
        let l = TcpListener::bind(addr)?;
        let local = l.local_addr()?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if s.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(mut c) = conn else { continue };
                std::thread::spawn(move || {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                    if let Some(g) = greeting {
                        let _ = c.write_all(g);
                    }
                    if let Some(resp) = http_response {
                        let mut buf = [0u8; 1024];
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match c.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = c.write_all(resp);
                    } else {
                        // Hold the connection a little, like a server waiting for its client.
                        let mut buf = [0u8; 64];
                        let _ = c.set_read_timeout(Some(Duration::from_millis(1500)));
                        let _ = c.read(&mut buf);
                    }
                });
            }
        });
        Ok(Listener {
            port: local.port(),
            stop,
            addr: local,
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and closes the socket.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TLS 1.2/1.3 server (rustls) on 127.0.0.1 that answers every request with an HTTP 200, carrying
/// `Strict-Transport-Security: <hsts>` when given. Failed handshakes (probes) are ignored.
pub fn tls_server(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    hsts: Option<&str>,
) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hsts = hsts.map(str::to_string);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut sock) = conn else { continue };
            let config = config.clone();
            let hsts = hsts.clone();
            std::thread::spawn(move || {
                let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
                let Ok(mut conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::Stream::new(&mut conn, &mut sock);
                let mut buf = [0u8; 2048];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let extra = hsts
                    .map(|h| format!("Strict-Transport-Security: {h}\r\n"))
                    .unwrap_or_default();
                let _ = tls.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n{extra}\r\nok"
                    )
                    .as_bytes(),
                );
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    port
}

/// A certificate authority for tests.
pub struct TestCa {
    pub cert: rcgen::Certificate,
    pub key: rcgen::KeyPair,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// A leaf for `names`, valid from `from` to `to` (Unix times), signed by this CA (or self-signed).
    pub fn leaf(
        &self,
        names: &[&str],
        from: i64,
        to: i64,
        self_signed: bool,
    ) -> (
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = if self_signed {
            p.self_signed(&key).unwrap()
        } else {
            p.signed_by(&key, &self.cert, &self.key).unwrap()
        };
        (
            cert.der().clone(),
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub const DAY: i64 = 86_400;
