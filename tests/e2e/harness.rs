//! A whole deployment per test: sled in a temp dir, a real container engine (Docker, or Podman with
//! `KAT_E2E_RUNTIME=podman`), the API on a loopback port, plugin containers on the host network pointing
//! at 127.0.0.1, and a real operator token.
//!
//! Tests reach the engine only through this module ([`engine`], [`runtime`], [`engine_cli`],
//! [`Kat::containers_of`]), so every test runs unchanged on both engines.

use std::path::PathBuf;
use std::sync::Arc;

use std::time::Duration;

use kat::core::engine::EngineConfig;
use kat::core::org::{OrgCode, Organization};
use kat::core::runtime::{ContainerRuntime, EntrypointBinary, NetworkMode};
use kat::core::task::TaskId;
use kat::deploy::{DeployConfig, Deployment, RuntimeChoice};
use serde_json::{Value, json};

pub(crate) const IMAGE: &str = "kat-busybox:latest";

/// The entrypoint volume these tests use (not the default one an operator's katd uses).
pub(crate) const VOLUME: &str = "kat-e2e-entrypoint";

static START: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The engine the tests run on: `KAT_E2E_RUNTIME` (`docker`, the default, or `podman`; what
/// `katd serve --runtime` takes). `scripts/test.sh` runs the suite once on each.
pub(crate) fn engine() -> RuntimeChoice {
    match std::env::var("KAT_E2E_RUNTIME") {
        Err(_) => RuntimeChoice::Docker,
        Ok(v) if v.trim().is_empty() => RuntimeChoice::Docker,
        Ok(v) => v
            .parse()
            .unwrap_or_else(|e| panic!("KAT_E2E_RUNTIME={v:?}: {e}")),
    }
}

/// The engine's command-line client (`docker` or `podman`), for what only the CLI shows (events).
/// Podman's finds the service's configuration through `CONTAINERS_CONF`, as `scripts/engines.sh` sets it.
pub(crate) fn engine_cli() -> std::process::Command {
    std::process::Command::new(engine().name())
}

/// A connection of our own to the engine the tests run on.
pub(crate) async fn runtime() -> Result<Arc<dyn ContainerRuntime>, String> {
    match engine() {
        RuntimeChoice::Podman => kat::runtime_podman::PodmanRuntime::connect()
            .await
            .map(|rt| Arc::new(rt) as Arc<dyn ContainerRuntime>)
            .map_err(|e| format!("Podman is not reachable: {e}")),
        _ => kat::runtime_docker::DockerRuntime::connect()
            .await
            .map(|rt| Arc::new(rt) as Arc<dyn ContainerRuntime>)
            .map_err(|e| format!("Docker is not reachable: {e}")),
    }
}

/// Whether the engine the tests run on holds `image` (asked through its command-line client).
pub(crate) fn image_present(image: &str) -> bool {
    engine_cli()
        .args(["image", "inspect", image])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why the engine cannot run the tests' image, if it cannot.
async fn engine_problem() -> Option<String> {
    match engine() {
        RuntimeChoice::Podman => match kat::runtime_podman::PodmanRuntime::connect().await {
            Err(e) => Some(format!("Podman is not reachable: {e}")),
            Ok(rt) => match rt.podman().images().get(IMAGE).exists().await {
                Ok(true) => None,
                Ok(false) => Some(format!("the image {IMAGE} is not in Podman's store")),
                Err(e) => Some(format!("cannot look for the image {IMAGE} in Podman: {e}")),
            },
        },
        _ => match kat::runtime_docker::DockerRuntime::connect().await {
            Err(e) => Some(format!("Docker is not reachable: {e}")),
            Ok(rt) => match rt.docker().inspect_image(IMAGE).await {
                Err(_) => Some(format!("the image {IMAGE} is missing from Docker")),
                Ok(_) => None,
            },
        },
    }
}

/// Whether the engine, the image and the entrypoint are there; in CI their absence is a failure.
pub(crate) async fn ready() -> Option<PathBuf> {
    let why = engine_problem().await;
    let bin = std::env::var("KAT_ENTRYPOINT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/x86_64-unknown-linux-gnu/entrypoint/kat-entrypoint")
        });
    let why = why.or_else(|| {
        (!bin.is_file()).then(|| format!("the static entrypoint {} is missing", bin.display()))
    });
    match why {
        None => Some(bin),
        Some(why) => {
            let msg = format!(
                "{why}; run scripts/engines.sh all, scripts/test-images.sh and scripts/build-entrypoint.sh (scripts/test.sh does all)"
            );
            if in_ci() {
                panic!("{msg}");
            }
            eprintln!("SKIPPED (not in CI): {msg}");
            None
        }
    }
}

pub(crate) struct Kat {
    pub(crate) d: Deployment,
    pub(crate) org: OrgCode,
    pub(crate) token: String,
    pub(crate) http: reqwest::Client,
    /// Kept so the deployment's files live as long as it does.
    _dir: tempfile::TempDir,
}

/// Start a deployment with these plugin definitions (a JSON list).
pub(crate) async fn start(plugins: Value) -> Option<Kat> {
    start_with(plugins, |_| {}).await
}

pub(crate) async fn start_with(
    plugins: Value,
    tweak: impl FnOnce(&mut DeployConfig),
) -> Option<Kat> {
    let bin = ready().await?;
    let dir = tempfile::tempdir().expect("temp dir");
    let pfile = dir.path().join("plugins.json");
    std::fs::write(&pfile, plugins.to_string()).expect("write plugins");
    let org = OrgCode::new("acme").expect("org");
    let mut cfg = DeployConfig::new(
        dir.path().join("data"),
        "127.0.0.1:0".parse().expect("addr"),
        b"e2e-secret-e2e-secret-e2e-secret-!".to_vec(),
    );
    cfg.engine = EngineConfig {
        api_url: String::new(),
        entrypoint_volume: VOLUME.into(),
        entrypoint_binary: Some(EntrypointBinary { path: bin }),
        network: NetworkMode::Host,
        concurrency: 4,
        tick_interval: Duration::from_secs(3600),
        plugin_timeout: Duration::from_secs(60),
        // Tests run deployments side by side on one engine, each with the deployment name of
        // its own data directory: each reaps at start, and only its own containers.
        deployment: kat::deploy::deployment_name(&dir.path().join("data")),
        reap_at_start: true,
        ..EngineConfig::default()
    };
    cfg.runtime = engine();
    cfg.plugin_files = vec![pfile];
    cfg.organizations = vec![Organization::new(org.clone(), "Acme")];
    tweak(&mut cfg);
    let d = {
        let _one_at_a_time = START.lock().await;
        Deployment::start(cfg).await.expect("deployment starts")
    };
    // Schedules run with the rights of the token that created them and stop when it expires; tests
    // tick schedules days ahead, so the token outlives those ticks.
    let token = d
        .operator_token(&org, Duration::from_secs(30 * 24 * 3600))
        .expect("token");
    Some(Kat {
        d,
        org,
        token,
        http: reqwest::Client::new(),
        _dir: dir,
    })
}

impl Kat {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.d.api_url())
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, self.url(path))
            .header("Authorization", format!("Token {}", self.token));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Upload a file as the operator (`query` is the query string, e.g. `?scan_level=2`).
    pub(crate) async fn upload(&self, query: &str, file_type: &str, data: &str) -> (u16, Value) {
        let form = reqwest::multipart::Form::new()
            .text("type", file_type.to_string())
            .part(
                "file",
                reqwest::multipart::Part::text(data.to_string()).file_name("upload"),
            );
        let resp = self
            .http
            .post(self.url(&format!("/file/{query}")))
            .header("Authorization", format!("Token {}", self.token))
            .multipart(form)
            .send()
            .await
            .expect("upload");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Declare objects with a scan level (None: no level).
    pub(crate) async fn declare(&self, ty: &str, values: &[&str], level: Option<u8>) {
        let field = if ty == "hostname" { "name" } else { "address" };
        let list: Vec<Value> = values.iter().map(|v| json!({ field: v })).collect();
        let (s, out) = self
            .post(&format!("/objects/{ty}/"), Value::Array(list))
            .await;
        assert_eq!(s, 201, "{out}");
        if let Some(l) = level {
            for o in out.as_array().expect("list") {
                let id = o["id"].as_str().expect("id");
                let (s, v) = self
                    .call(
                        reqwest::Method::PATCH,
                        &format!("/objects/{ty}/{}/", encode(id)),
                        Some(json!({"scan_level": l})),
                    )
                    .await;
                assert_eq!(s, 200, "{v}");
            }
        }
    }

    /// Queue a plugin through the API; returns the created tasks' ids.
    pub(crate) async fn submit(&self, plugin: &str, input: &[&str]) -> Vec<TaskId> {
        let (s, v) = self
            .post(
                "/tasks/",
                json!({"type": "plugin", "data": {"plugin_id": plugin, "input_data": input}}),
            )
            .await;
        assert_eq!(s, 201, "submit {plugin}: {v}");
        let items = match v {
            Value::Array(items) => items,
            one => vec![one],
        };
        items
            .iter()
            .map(|t| t["id"].as_str().expect("id").parse().expect("task id"))
            .collect()
    }

    pub(crate) async fn wait(&self, id: TaskId) -> Value {
        self.d
            .engine()
            .wait_for(id, Duration::from_secs(90))
            .await
            .expect("task ends");
        self.get(&format!("/tasks/{id}/")).await
    }

    /// As [`Kat::wait`], for tasks that take minutes (a real scan on a loaded machine).
    pub(crate) async fn wait_long(&self, id: TaskId) -> Value {
        self.d
            .engine()
            .wait_for(id, Duration::from_secs(360))
            .await
            .expect("task ends");
        self.get(&format!("/tasks/{id}/")).await
    }

    pub(crate) async fn wait_state(&self, id: TaskId, state: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let t = self.get(&format!("/tasks/{id}/")).await;
            if t["state"] == state {
                return t;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {id} never reached {state}: {t}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every task of a plugin.
    pub(crate) async fn tasks_of(&self, plugin: &str) -> Vec<Value> {
        let v = self
            .get(&format!("/tasks/?plugin_id={plugin}&limit=1000"))
            .await;
        v["results"].as_array().cloned().unwrap_or_default()
    }

    /// The files a task produced, oldest first.
    pub(crate) async fn files_of(&self, task: TaskId) -> Vec<Value> {
        let v = self.get("/file/?limit=1000&ordering=id").await;
        v["results"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f["task_id"] == task.to_string())
            .collect()
    }

    pub(crate) async fn content(&self, file: &Value) -> String {
        let url = file["file"].as_str().expect("download url");
        let resp = self
            .http
            .get(url)
            .header("Authorization", format!("Token {}", self.token))
            .send()
            .await
            .expect("download");
        assert_eq!(resp.status().as_u16(), 200);
        resp.text().await.expect("text")
    }

    /// Containers of ours for a task that still exist.
    pub(crate) async fn containers_of(&self, task: TaskId) -> usize {
        let rt = runtime().await.expect("the engine");
        rt.list_managed()
            .await
            .expect("list")
            .iter()
            .filter(|c| c.task == Some(task))
            .count()
    }

    /// Wait until a running task's container exists (up to 20 s); returns how many it has.
    pub(crate) async fn wait_container(&self, task: TaskId) -> usize {
        self.wait_state(task, "running").await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.containers_of(task).await == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.containers_of(task).await
    }
}

pub(crate) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A plugin definition on the busybox image.
pub(crate) fn plugin(id: &str, level: u8, consumes: Value, args: Value) -> Value {
    json!({"plugin_id": id, "scan_level": level, "consumes": consumes, "oci_image": IMAGE, "oci_arguments": args})
}

/// A shell snippet that sends `data` (JSON) to an API path with the task's token, with busybox wget.
pub(crate) fn post_json(path: &str, data: &str) -> String {
    format!(
        "wget -q -O - --header 'Content-Type: application/json' --header \"Authorization: Token $OPENKAT_TOKEN\" --post-data \"{data}\" \"$OPENKAT_API{path}\""
    )
}
