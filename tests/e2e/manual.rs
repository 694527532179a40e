//! The plugin examples of OpenKAT's manual (`plugins/manual-examples.json`, copied from the manual
//! unchanged) load and run end to end: the real engine on Docker, the API over loopback, real tokens.
//!
//! No registry is reachable, so the examples' images (`ghcr.io/minvws/openkat/plugins:0.1.0`,
//! `instrumentisto/nmap`, `projectdiscovery/nuclei`, `your-registry/scanner:latest`) are played by one
//! local stand-in, `kat-manual:latest` (`scripts/manual-images.sh`): busybox-shell tools and example
//! scripts that emit output of the tools' shape and call the API as the manual's Python examples do. The
//! stand-in keeps its own name so that it never replaces the original-shaped images other tests build
//! under those names; a runtime wrapper below maps each example's image name onto it (and records
//! which names were asked for), and changes nothing else of the container.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kat::core::engine::{Engine, EngineConfig};
use kat::core::memory::{MemoryFileStore, MemoryObjectStore, MemoryTaskStore};
use kat::core::object::{Object, ObjectType, ScanLevel, ScanProfile};
use kat::core::org::{OrgCode, Organization};
use kat::core::plugin::PluginDef;
use kat::core::runtime::{
    Capabilities, ContainerRuntime, ContainerSpec, EntrypointBinary, EntrypointMount,
    ManagedContainer, NetworkMode, Outcome,
};
use kat::core::store::{ObjectStore, OrgStore, PluginCatalog};
use kat::core::task::{TaskId, TaskState};
use kat::http::{Api, ApiConfig, JwtAuthority};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::harness::{VOLUME, in_ci, ready};

const STAND_IN: &str = "kat-manual:latest";

/// The images the manual's examples name, all played by [`STAND_IN`].
const MANUAL_IMAGES: [&str; 4] = [
    "ghcr.io/minvws/openkat/plugins:0.1.0",
    "instrumentisto/nmap",
    "projectdiscovery/nuclei",
    "your-registry/scanner:latest",
];

/// Docker, with the manual's image names mapped onto the stand-in.
#[derive(Debug)]
struct StandIn {
    inner: Arc<dyn ContainerRuntime>,
    asked: Mutex<BTreeSet<String>>,
}

impl StandIn {
    fn map(&self, image: &str) -> String {
        assert!(
            MANUAL_IMAGES.contains(&image),
            "an image the manual does not name: {image}"
        );
        self.asked.lock().expect("lock").insert(image.to_string());
        STAND_IN.to_string()
    }
}

#[async_trait]
impl ContainerRuntime for StandIn {
    async fn capabilities(&self) -> kat::core::Result<Capabilities> {
        self.inner.capabilities().await
    }
    async fn prepare_entrypoint(
        &self,
        binary: &EntrypointBinary,
        volume: &str,
        deployment: &str,
    ) -> kat::core::Result<EntrypointMount> {
        self.inner
            .prepare_entrypoint(binary, volume, deployment)
            .await
    }
    async fn ensure_image(&self, image: &str, timeout: Duration) -> kat::core::Result<()> {
        let mapped = self.map(image);
        self.inner.ensure_image(&mapped, timeout).await
    }
    async fn run(
        &self,
        mut spec: ContainerSpec,
        cancel: CancellationToken,
    ) -> kat::core::Result<Outcome> {
        spec.image = self.map(&spec.image);
        self.inner.run(spec, cancel).await
    }
    async fn list_managed(&self) -> kat::core::Result<Vec<ManagedContainer>> {
        self.inner.list_managed().await
    }
    async fn reap_orphans(
        &self,
        deployment: &str,
        live: &HashSet<TaskId>,
    ) -> kat::core::Result<Vec<String>> {
        self.inner.reap_orphans(deployment, live).await
    }
}

/// One deployment on memory stores with the given plugins: the engine on the stand-in runtime and the
/// API on a loopback port.
struct Manual {
    engine: Engine,
    objects: Arc<MemoryObjectStore>,
    runtime: Arc<StandIn>,
    api: String,
    token: String,
    http: reqwest::Client,
    stop: CancellationToken,
    org: OrgCode,
}

impl Manual {
    async fn start(defs: Vec<PluginDef>, name: &str) -> Option<Manual> {
        let bin = ready().await?;
        let engine = crate::harness::runtime().await.expect("engine");
        if !crate::harness::image_present(STAND_IN) {
            let msg = format!("the image {STAND_IN} is missing; run scripts/manual-images.sh");
            assert!(!in_ci(), "{msg}");
            eprintln!("SKIPPED (not in CI): {msg}");
            return None;
        }
        let runtime = Arc::new(StandIn {
            inner: engine,
            asked: Mutex::new(BTreeSet::new()),
        });
        let objects = Arc::new(MemoryObjectStore::default());
        let files = Arc::new(MemoryFileStore::default());
        let tasks = Arc::new(MemoryTaskStore::default());
        let org = OrgCode::new("acme").expect("org");
        tasks
            .put_organization(Organization::new(org.clone(), "Acme"))
            .await
            .expect("org");
        let (writes, _) = kat::core::plugin::sync(&[], &defs, true);
        tasks.put_plugins(writes).await.expect("plugins");
        let tokens = Arc::new(
            JwtAuthority::hs256(b"manual-secret-manual-secret-manual!", tasks.clone())
                .expect("authority"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        let addr = listener.local_addr().expect("addr");
        let engine = Engine::builder()
            .objects(objects.clone())
            .files(files.clone())
            .tasks(tasks.clone())
            .runtime(runtime.clone())
            .tokens(tokens.clone())
            .config(EngineConfig {
                api_url: format!("http://{addr}/api/v1"),
                entrypoint_volume: VOLUME.into(),
                entrypoint_binary: Some(EntrypointBinary { path: bin }),
                network: NetworkMode::Host,
                concurrency: 2,
                tick_interval: Duration::from_secs(3600),
                plugin_timeout: Duration::from_secs(60),
                deployment: format!("kat-manual-{name}-{}", std::process::id()),
                reap_at_start: true,
                ..EngineConfig::default()
            })
            .build()
            .expect("engine");
        let api = Api::new(
            objects.clone(),
            files.clone(),
            tasks.clone(),
            tokens.clone(),
            Some(Arc::new(engine.clone())),
            ApiConfig::new(format!("http://{addr}")),
        );
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(api.serve(listener, async move { stopped.cancelled().await }));
        engine.start().await.expect("engine starts");
        let token = kat::http::mint_operator_token(
            tokens.as_ref(),
            "operator",
            org.clone(),
            kat::http::all_permissions(),
            Duration::from_secs(3600),
        )
        .expect("token");
        Some(Manual {
            engine,
            objects,
            runtime,
            api: format!("http://{addr}/api/v1"),
            token,
            http: reqwest::Client::new(),
            stop,
            org,
        })
    }

    /// Store an object with a declared scan level (`None`: no level, for types without one).
    async fn declare(&self, ty: ObjectType, v: Value, level: Option<u8>) {
        let o = Object::from_json(ty, &v).expect("object");
        self.objects
            .upsert(&self.org, vec![o.clone()], None)
            .await
            .expect("upsert");
        if let Some(l) = level {
            self.objects
                .set_scan_profile(
                    &self.org,
                    ty,
                    &o.natural_key(),
                    ScanProfile::declared(ScanLevel::new(l).expect("level")),
                )
                .await
                .expect("level");
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self
            .http
            .request(method.clone(), format!("{}{path}", self.api))
            .header("Authorization", format!("Token {}", self.token));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.expect("json");
        assert!(status < 300, "{method} {path}: {status} {v}");
        v
    }

    /// Run `plugin` on `input` through the API and wait for every task it made; returns them.
    async fn run(&self, plugin: &str, input: &[&str]) -> Vec<Value> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/tasks/",
                Some(json!({"type": "plugin", "data": {"plugin_id": plugin, "input_data": input}})),
            )
            .await;
        let items = match v {
            Value::Array(items) => items,
            one => vec![one],
        };
        let mut out = Vec::new();
        for t in items {
            let id: TaskId = t["id"].as_str().expect("id").parse().expect("task id");
            out.push(self.wait(id).await);
        }
        out
    }

    async fn wait(&self, id: TaskId) -> Value {
        let t = self
            .engine
            .wait_for(id, Duration::from_secs(90))
            .await
            .expect("task ends");
        assert_eq!(t.state, TaskState::Completed, "task {id}: {t:?}");
        self.call(reqwest::Method::GET, &format!("/tasks/{id}/"), None)
            .await
    }

    /// Every task of a plugin, once each has ended.
    async fn tasks_of(&self, plugin: &str) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let v = self
                .call(
                    reqwest::Method::GET,
                    &format!("/tasks/?plugin_id={plugin}&limit=1000"),
                    None,
                )
                .await;
            let items = v["results"].as_array().cloned().unwrap_or_default();
            if !items.is_empty()
                && items
                    .iter()
                    .all(|t| !matches!(t["state"].as_str(), Some("queued" | "running")))
            {
                return items;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{plugin}: no ended task: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The contents of the files of type `file_type` (a plugin's output), oldest first.
    async fn outputs(&self, file_type: &str) -> Vec<String> {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/file/?type={file_type}&limit=1000&ordering=id"),
                None,
            )
            .await;
        let mut out = Vec::new();
        for f in v["results"].as_array().cloned().unwrap_or_default() {
            let url = f["file"].as_str().expect("file url");
            let text = self
                .http
                .get(url)
                .header("Authorization", format!("Token {}", self.token))
                .send()
                .await
                .expect("download")
                .text()
                .await
                .expect("text");
            out.push(text);
        }
        out
    }

    async fn keys(&self, ty: &str) -> Vec<String> {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/objects/{ty}/?limit=1000&ordering=id"),
                None,
            )
            .await;
        v["results"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|o| o["id"].as_str().expect("id").to_string())
            .collect()
    }

    fn images_asked(&self) -> BTreeSet<String> {
        self.runtime.asked.lock().expect("lock").clone()
    }

    async fn stop(self) {
        self.engine.shutdown(Duration::from_secs(20)).await;
        self.stop.cancel();
    }
}

/// The manual's examples, each as written (a definition or a list of them) under its section's title.
fn examples() -> Vec<(String, Value)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/plugins/manual-examples.json");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    doc["examples"]
        .as_array()
        .expect("examples")
        .iter()
        .map(|e| {
            (
                e["section"].as_str().expect("section").to_string(),
                e["definition"].clone(),
            )
        })
        .collect()
}

/// Load one example unchanged: a definition or a list of them, as a plugin file holds them.
fn load(section: &str, def: &Value) -> kat::core::Result<Vec<PluginDef>> {
    let list = match def {
        Value::Array(_) => def.clone(),
        one => Value::Array(vec![one.clone()]),
    };
    PluginDef::parse_file(&list.to_string(), &format!("manual: {section}"))
}

#[test]
fn every_example_loads_except_the_fragment_without_an_image() {
    let all = examples();
    assert_eq!(all.len(), 10, "the manual has ten plugin examples");
    for (section, def) in &all {
        let r = load(section, def);
        if section == "Batch Processing" {
            // A fragment showing batch_size: without oci_image it cannot run, and is refused by name.
            let e = r.expect_err("no image").to_string();
            assert!(e.contains("oci_image") && e.contains("rpki"), "{e}");
            continue;
        }
        let defs = r.unwrap_or_else(|e| panic!("{section}: {e}"));
        for d in &defs {
            assert!(
                MANUAL_IMAGES.contains(&d.oci_image.as_str()),
                "{}",
                d.oci_image
            );
        }
    }
}

fn defs_of(section: &str) -> Vec<PluginDef> {
    let (s, def) = examples()
        .into_iter()
        .find(|(s, _)| s == section)
        .unwrap_or_else(|| panic!("no example {section}"));
    load(&s, &def).expect("loads")
}

const HOST: &str = "shop.example";
const IP: &str = "192.0.2.10";

/// A hostname and an address at level 2 (the examples need at most 2), and a URL on the hostname.
async fn inventory(m: &Manual) {
    m.declare(ObjectType::Hostname, json!({"name": HOST}), Some(2))
        .await;
    m.declare(ObjectType::IpAddress, json!({"address": IP}), Some(2))
        .await;
    m.declare(
        ObjectType::Url,
        json!({"url": format!("https://{HOST}/login")}),
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dns_example_runs_and_stores_an_address() {
    let Some(m) = Manual::start(defs_of("Plugin Definition"), "dns").await else {
        return;
    };
    inventory(&m).await;
    m.run("dns", &[HOST]).await;
    assert_eq!(
        m.outputs("dns").await,
        vec![format!(
            "{{\"hostname\": \"{HOST}\", \"A\": [\"192.0.2.53\"]}}\n"
        )]
    );
    assert!(
        m.keys("ipaddress")
            .await
            .contains(&"internet|192.0.2.53".to_string())
    );
    assert_eq!(
        m.images_asked(),
        BTreeSet::from(["ghcr.io/minvws/openkat/plugins:0.1.0".to_string()])
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scanner_examples_run_on_an_address() {
    for (section, plugin) in [
        ("Scanner Plugins", "nmap"),
        ("How It Works", "nmap-scanner"),
    ] {
        let Some(m) = Manual::start(defs_of(section), plugin).await else {
            return;
        };
        inventory(&m).await;
        m.run(plugin, &[IP]).await;
        let out = m.outputs(plugin).await;
        assert_eq!(out.len(), 1, "{section}");
        assert!(
            out[0].contains(&format!("<address addr=\"{IP}\""))
                && out[0].contains("portid=\"443\""),
            "{section}: {}",
            out[0]
        );
        assert_eq!(
            m.images_asked(),
            BTreeSet::from(["instrumentisto/nmap".to_string()])
        );
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scanner_and_normalizer_pair_chains_and_stores_ports() {
    let Some(m) = Manual::start(defs_of("Scanner + Normalizer Pattern"), "pair").await else {
        return;
    };
    inventory(&m).await;
    m.run("nmap", &[IP]).await;
    // The nmap file chains to parse-nmap (file:nmap), whose objects.add_ipservice (an alias of
    // objects.add_ipport) lets it store the ports.
    let norms = m.tasks_of("parse-nmap").await;
    assert_eq!(norms.len(), 1);
    assert_eq!(norms[0]["state"], "completed", "{}", norms[0]);
    assert_eq!(
        m.keys("ipport").await,
        vec![
            format!("internet|{IP}|TCP|443"),
            format!("internet|{IP}|TCP|80")
        ]
    );
    let out = m.outputs("parse-nmap").await;
    assert_eq!(out.len(), 1);
    assert!(out[0].contains("\"service\": \"https\""), "{}", out[0]);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_normalizer_example_reads_its_file_but_stores_nothing_without_permissions() {
    let mut defs = defs_of("Normalizer Plugins");
    // Its producer: the manual's nmap scanner example.
    defs.extend(defs_of("Scanner Plugins"));
    let Some(m) = Manual::start(defs, "normalizer").await else {
        return;
    };
    inventory(&m).await;
    m.run("nmap", &[IP]).await;
    let norms = m.tasks_of("parse-nmap").await;
    assert_eq!(norms.len(), 1);
    assert_eq!(norms[0]["state"], "completed", "{}", norms[0]);
    // It read the file (a task may read its input files) and parsed it...
    let out = m.outputs("parse-nmap").await;
    assert_eq!(out.len(), 1);
    assert!(
        out[0].contains(&format!("\"address\": \"{IP}\"")),
        "{}",
        out[0]
    );
    // ...but declares no permissions, so its write was refused: nothing stored (as in the original).
    assert!(m.keys("ipport").await.is_empty());
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hostname_examples_run() {
    for (section, plugin, image, expect) in [
        (
            "Creating a New Plugin",
            "my-plugin",
            "ghcr.io/minvws/openkat/plugins:0.1.0",
            format!("{{\"hostname\": \"{HOST}\", \"checked\": true}}\n"),
        ),
        (
            "Using External OCI Images",
            "custom-scanner",
            "your-registry/scanner:latest",
            format!("scan {HOST}: 0 issues\n"),
        ),
        (
            "Example: Complete Plugin",
            "ssl-checker",
            "ghcr.io/minvws/openkat/plugins:0.1.0",
            format!("{{\"hostname\": \"{HOST}\", \"days_remaining\": 12}}\n"),
        ),
    ] {
        let Some(m) = Manual::start(defs_of(section), plugin).await else {
            return;
        };
        inventory(&m).await;
        m.run(plugin, &[HOST]).await;
        assert_eq!(m.outputs(plugin).await, vec![expect], "{section}");
        assert_eq!(m.images_asked(), BTreeSet::from([image.to_string()]));
        if plugin == "ssl-checker" {
            // The finding posted with "object": "internet|<host>".
            assert_eq!(
                m.keys("finding").await,
                vec![format!("SSL_EXPIRY_WARNING|internet|{HOST}")]
            );
        }
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nuclei_example_runs_on_a_url_at_its_hosts_level() {
    let Some(m) = Manual::start(defs_of("Example: Using Nuclei"), "nuclei").await else {
        return;
    };
    inventory(&m).await;
    let url = format!("https://{HOST}/login");
    m.run("nuclei", &[&url]).await;
    let out = m.outputs("nuclei").await;
    assert_eq!(out.len(), 1);
    let line: Value = serde_json::from_str(out[0].trim()).expect("a JSON line");
    assert_eq!(line["matched-at"], url.as_str());
    // A URL whose host has no scan level is refused, before any container.
    m.declare(
        ObjectType::Url,
        json!({"url": "http://nolevel.example/"}),
        None,
    )
    .await;
    let r = m
        .http
        .post(format!("{}/tasks/", m.api))
        .header("Authorization", format!("Token {}", m.token))
        .json(&json!({"type": "plugin", "data": {"plugin_id": "nuclei", "input_data": "http://nolevel.example/"}}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 403);
    let counts: BTreeMap<String, usize> =
        m.tasks_of("nuclei")
            .await
            .iter()
            .fold(BTreeMap::new(), |mut acc, t| {
                *acc.entry(t["state"].as_str().unwrap_or("?").to_string())
                    .or_default() += 1;
                acc
            });
    assert_eq!(counts, BTreeMap::from([("completed".to_string(), 1)]));
    m.stop().await;
}
