//! Several katd replicas on one PostgreSQL database and one Docker engine: one API + scheduler replica and two
//! workers. Tasks end exactly once, also when a worker is SIGKILLed in the middle of tasks again and again; no
//! container is left behind and no acknowledged object is lost.
//!
//! A test binary of its own: its workers reap every container of their deployment whose task is not running
//! under a live lease, so it must not run beside other engine tests (cargo runs test binaries one after another).
//! Needs Docker with the test image, the static entrypoint and `KAT_TEST_POSTGRES` (scripts/test.sh provides
//! all three); fails in CI when one is missing.

#![cfg(all(feature = "docker", feature = "postgres"))]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use support::{VOLUME, docker_ready, free_port, katd, plugin, wait_up};

const SECRET: &str = "replicas-secret-replicas-secret-replicas!!";
/// Short leases, so that a killed worker's tasks are recovered within seconds.
const LEASE_SECONDS: &str = "3";
/// Tasks of the kill test: enough work (4 s each, 8 slots: 75 s) to outlast ten kills (about 30 s), so that
/// every kill finds its worker running tasks.
const TASKS: usize = 150;

/// The cluster: its database, its directory, the API replica and the workers by id.
struct Cluster {
    db: kat_store_postgres::testing::TestDatabase,
    dir: tempfile::TempDir,
    entrypoint: PathBuf,
    plugins: PathBuf,
    api_port: u16,
    api_child: Option<Child>,
    workers: BTreeMap<String, Child>,
    token: String,
    http: reqwest::Client,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.workers.values_mut().chain(self.api_child.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn base_command(
    cluster_db: &str,
    entrypoint: &Path,
    plugins: &Path,
    data: &Path,
) -> std::process::Command {
    let mut c = katd();
    c.args(["serve", "--tick", "1"])
        .arg("--data")
        .arg(data)
        .arg("--plugins")
        .arg(plugins)
        .arg("--entrypoint")
        .arg(entrypoint)
        .env("KAT_STORE", cluster_db)
        .env("KAT_JWT_SECRET", SECRET)
        .env("KAT_LEASE_SECONDS", LEASE_SECONDS)
        .env("ENTRYPOINT_VOLUME", VOLUME)
        .env("KAT_LOG", "warn,katd=info")
        .stdout(Stdio::null())
        .stderr(log_file(data));
    c
}

/// The log of the replica whose data directory is `data` (appended to across restarts), beside it.
fn log_path(data: &Path) -> PathBuf {
    data.with_extension("log")
}

fn log_file(data: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(data))
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

/// The last lines of a replica's log, for a failure message.
fn log_tail(data: &Path) -> String {
    let text = std::fs::read_to_string(log_path(data)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Cluster {
    async fn start(plugins: Value, workers: &[&str]) -> Option<Cluster> {
        let entrypoint = docker_ready().await?;
        let base = kat_store_postgres::testing::server()?;
        let db = kat_store_postgres::testing::TestDatabase::create(&base)
            .await
            .expect("a fresh database");
        let dir = tempfile::tempdir().expect("temp dir");
        let plugin_file = dir.path().join("plugins.json");
        std::fs::write(&plugin_file, plugins.to_string()).expect("write plugins");
        let api_port = free_port();
        let token_file = dir.path().join("token");
        let api_child = base_command(&db.url, &entrypoint, &plugin_file, &dir.path().join("api"))
            .args(["--role", "api,scheduler", "--org", "acme"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{api_port}"))
            .arg("--token-out")
            .arg(&token_file)
            .spawn()
            .expect("the API replica starts");
        wait_up(api_port, &token_file).await;
        let token = std::fs::read_to_string(&token_file).expect("token");
        let mut cluster = Cluster {
            db,
            dir,
            entrypoint,
            plugins: plugin_file,
            api_port,
            api_child: Some(api_child),
            workers: BTreeMap::new(),
            token,
            http: reqwest::Client::new(),
        };
        for w in workers {
            cluster.start_worker(w);
        }
        Some(cluster)
    }

    fn start_worker(&mut self, id: &str) {
        self.start_worker_calling(id, true);
    }

    /// A worker whose containers call the API replica (`api_replica`) or the worker's own listener.
    fn start_worker_calling(&mut self, id: &str, api_replica: bool) {
        let mut cmd = base_command(
            &self.db.url,
            &self.entrypoint,
            &self.plugins,
            &self.dir.path().join(id),
        );
        cmd.args(["--role", "worker", "--concurrency", "4", "--worker-id", id])
            .args(["--listen", "127.0.0.1:0"]);
        if api_replica {
            cmd.arg("--api-url")
                .arg(format!("http://127.0.0.1:{}/api/v1", self.api_port));
        }
        let child = cmd.spawn().expect("a worker starts");
        self.workers.insert(id.to_string(), child);
    }

    fn sigkill(&mut self, id: &str) {
        let mut c = self.workers.remove(id).expect("a running worker");
        c.kill().expect("SIGKILL");
        c.wait().expect("reaped");
    }

    fn api(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/api/v1{path}", self.api_port)
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(self.api(path))
            .header("Authorization", format!("Token {}", self.token))
            .send()
            .await
            .expect("GET");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.expect("JSON")
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(self.api(path))
            .header("Authorization", format!("Token {}", self.token))
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = r.status();
        let v: Value = r.json().await.expect("JSON");
        assert!(status.is_success(), "POST {path}: {status} {v}");
        v
    }

    /// Every task of the organization (all pages).
    async fn tasks(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let page = self
                .get(&format!("/tasks/?limit=1000&offset={offset}"))
                .await;
            let items = page["results"].as_array().cloned().unwrap_or_default();
            let n = items.len();
            out.extend(items);
            if n < 1000 {
                return out;
            }
            offset += n;
        }
    }

    /// Wait until every task is terminal; returns them.
    async fn wait_all_ended(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let tasks = self.tasks().await;
            let open = tasks
                .iter()
                .filter(|t| matches!(t["state"].as_str(), Some("queued" | "running")))
                .count();
            if tasks.len() >= n && open == 0 {
                return tasks;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{open} of {} tasks still open after {within:?}",
                tasks.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The containers of this cluster on Docker (its deployment label).
    async fn containers(&self) -> Vec<kat::core::runtime::ManagedContainer> {
        let rt = kat::runtime_docker::DockerRuntime::connect()
            .await
            .expect("docker");
        let deployment = kat::deploy::shared_deployment_name(&self.db.url);
        kat::core::runtime::ContainerRuntime::list_managed(&rt)
            .await
            .expect("list")
            .into_iter()
            .filter(|c| c.deployment.as_deref() == Some(deployment.as_str()))
            .collect()
    }

    async fn finish(mut self) {
        for c in self.workers.values_mut().chain(self.api_child.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.workers.clear();
        self.api_child = None;
        let db = self.db.clone();
        drop(self);
        db.drop_database().await.expect("drop the test database");
    }
}

fn hostnames(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}{i}.replicas.test"))
        .collect()
}

/// Create the hostnames and declare each at scan level 0 (plugins at level 0 may scan them).
async fn declare(c: &Cluster, names: &[String]) {
    for chunk in names.chunks(500) {
        let list: Vec<Value> = chunk.iter().map(|n| json!({"name": n})).collect();
        c.post("/objects/", json!({"hostname": list})).await;
    }
    for n in names {
        let r = c
            .http
            .patch(c.api(&format!("/objects/hostname/internet%7C{n}/")))
            .header("Authorization", format!("Token {}", c.token))
            .json(&json!({"scan_level": 0}))
            .send()
            .await
            .expect("PATCH");
        assert_eq!(r.status(), 200, "declare {n}");
    }
}

async fn submit(c: &Cluster, plugin: &str, names: &[String]) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    // One task per target: a list of requests, each with one target (a request with a list of
    // targets is one task over all of them).
    for chunk in names.chunks(100) {
        let requests: Vec<Value> = chunk
            .iter()
            .map(|n| json!({"type": "plugin", "data": {"plugin_id": plugin, "input_data": n}}))
            .collect();
        let v = c.post("/tasks/", Value::Array(requests)).await;
        let items = match v {
            Value::Array(items) => items,
            one => vec![one],
        };
        for t in items {
            ids.insert(t["id"].as_str().expect("id").to_string());
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tasks_on_two_workers_end_exactly_once() {
    let plugins = json!([plugin(
        "noop",
        0,
        json!(["type:hostname"]),
        json!(["echo", "{hostname}"])
    )]);
    let Some(c) = Cluster::start(plugins, &["w1", "w2"]).await else {
        return;
    };
    let names = hostnames("n", 200);
    declare(&c, &names).await;
    let ids = submit(&c, "noop", &names).await;
    assert_eq!(ids.len(), 200);
    let tasks = c.wait_all_ended(200, Duration::from_secs(240)).await;
    assert_eq!(tasks.len(), 200);
    for t in &tasks {
        assert_eq!(t["state"], "completed", "{t}");
        assert_eq!(t["attempts"], 1, "ran once: {t}");
    }
    let status = c.get("/replicas/").await;
    let workers: BTreeSet<&str> = status["results"]
        .as_array()
        .expect("replicas")
        .iter()
        .filter(|r| {
            r["roles"]
                .as_array()
                .is_some_and(|a| a.contains(&json!("worker")))
        })
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(workers, BTreeSet::from(["w1", "w2"]), "{status}");
    // `katd status` shows the same replicas, each with its roles, and no running task.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_katd"))
        .arg("status")
        .env("KAT_API", c.api(""))
        .env("KAT_TOKEN", c.token.trim())
        .output()
        .expect("katd status runs");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for w in ["w1", "w2"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{w} ")) && l.contains("worker")),
            "{w} in: {text}"
        );
    }
    assert!(text.lines().any(|l| l.contains("api,scheduler")), "{text}");
    assert!(text.contains("(none)"), "no running task: {text}");
    assert!(c.containers().await.is_empty(), "no container left");
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_a_worker_mid_task_ten_times() {
    // Each task sleeps, then writes a hostname of its own through the API (an acknowledged write) and
    // ends. Idempotent: a task whose worker died runs again elsewhere.
    let write = "wget -q -O - --header 'Content-Type: application/json' --header \"Authorization: Token $OPENKAT_TOKEN\" --post-data '{\"hostname\": [{\"name\": \"out.{hostname}\"}]}' \"$OPENKAT_API/objects/\"";
    let mut p = plugin(
        "work",
        0,
        json!(["type:hostname"]),
        json!(["sh", "-c", format!("sleep 4 && {write}")]),
    );
    p["idempotent"] = json!(true);
    p["permissions"] = json!({"objects.add_hostname": {}});
    let Some(mut c) = Cluster::start(json!([p]), &["w1", "w2"]).await else {
        return;
    };
    let names = hostnames("k", TASKS);
    declare(&c, &names).await;
    let ids = submit(&c, "work", &names).await;
    assert_eq!(ids.len(), TASKS);

    // Ten kills, each of a worker that is running at least one task at that moment.
    let mut interrupted: BTreeSet<String> = BTreeSet::new();
    for round in 0..10 {
        let victim = if round % 2 == 0 { "w1" } else { "w2" };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let held = loop {
            let running = c.get("/tasks/?state=running&limit=1000").await;
            let held: Vec<String> = running["results"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|t| t["worker"] == json!(victim))
                        .filter_map(|t| t["id"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if !held.is_empty() {
                break held;
            }
            if tokio::time::Instant::now() >= deadline {
                let exited = c
                    .workers
                    .get_mut(victim)
                    .map(|w| w.try_wait().ok().flatten());
                panic!(
                    "round {round}: {victim} ran no task within a minute (exited: {exited:?}); \
                     running: {running}; its log:\n{}",
                    log_tail(&c.dir.path().join(victim))
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        c.sigkill(victim);
        interrupted.extend(held);
        // Half the time the worker comes back at once (it recovers its own tasks at start); half the time
        // it stays away beyond its lease, and the other worker recovers them.
        if round % 4 >= 2 {
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
        c.start_worker(victim);
    }
    // Each of the ten kills interrupted at least one task (the loop above waits for one); a task
    // requeued by one kill may be interrupted again by the next, so there may be fewer distinct tasks.
    assert!(!interrupted.is_empty(), "{interrupted:?}");

    let tasks = c.wait_all_ended(TASKS, Duration::from_secs(300)).await;
    assert_eq!(tasks.len(), TASKS);
    let mut completed = 0;
    for t in &tasks {
        let state = t["state"].as_str().unwrap_or("");
        assert!(
            ["completed", "failed"].contains(&state),
            "a terminal state: {t}"
        );
        assert!(
            t["worker"].is_null() && t["lease_until"].is_null(),
            "no lease left on an ended task: {t}"
        );
        if state == "completed" {
            completed += 1;
        }
    }
    // Idempotent tasks are requeued, never failed, when their worker dies.
    assert_eq!(
        completed, TASKS,
        "every idempotent task completed in the end"
    );
    // Every task a kill interrupted ran again (recovered once, then completed).
    for t in &tasks {
        let id = t["id"].as_str().unwrap_or("");
        if interrupted.contains(id) {
            assert!(
                t["attempts"].as_u64().unwrap_or(0) >= 2,
                "recovered and run again: {t}"
            );
        }
    }
    // Every completed task's write is there.
    for n in &names {
        let v = c.get(&format!("/objects/hostname/?name=out.{n}")).await;
        assert_eq!(v["count"], 1, "out.{n} was written and acknowledged: {v}");
    }
    // The killed workers' containers were reaped.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = c.containers().await;
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "containers left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_worker_writes_through_its_own_listener_is_scanned_at_the_next_tick() {
    // `resolve` writes an A record for its hostname through the API of the worker that runs it (no
    // --api-url), so the scheduler replica hears of the write only through the store's write marks.
    // The address inherits the hostname's level and `probe`'s hourly schedule over addresses must
    // reach it at the next tick, not an hour later.
    let write = "wget -q -O - --header 'Content-Type: application/json' --header \"Authorization: Token $OPENKAT_TOKEN\" --post-data '{\"dnsarecord\": [{\"hostname\": \"internet|{hostname}\", \"ip_address\": \"internet|127.0.0.9\"}]}' \"$OPENKAT_API/objects/\"";
    let mut resolve = plugin(
        "resolve",
        1,
        json!(["type:hostname"]),
        json!(["sh", "-c", write]),
    );
    resolve["permissions"] = json!({"objects.add_dnsarecord": {}, "objects.add_ipaddress": {}});
    let probe = plugin(
        "probe",
        1,
        json!(["type:ipaddress"]),
        json!(["echo", "{ipaddress}"]),
    );
    let Some(mut c) = Cluster::start(json!([resolve, probe]), &[]).await else {
        return;
    };
    c.start_worker_calling("w1", false);
    c.post(
        "/objects/",
        json!({"hostname": [{"name": "grow.replicas.test"}]}),
    )
    .await;
    let r = c
        .http
        .patch(c.api("/objects/hostname/internet%7Cgrow.replicas.test/"))
        .header("Authorization", format!("Token {}", c.token))
        .json(&json!({"scan_level": 2}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 200);
    for (plugin, ty) in [("resolve", "hostname"), ("probe", "ipaddress")] {
        let set = c
            .post(
                "/object-sets/",
                json!({"name": format!("{ty} with a level"), "object_type": ty,
                       "filters": {"scan_level": ["1", "2", "3", "4"]}}),
            )
            .await;
        c.post(
            "/schedules/",
            json!({"plugin_id": plugin, "object_set_id": set["id"], "interval": "PT1H", "enabled": true}),
        )
        .await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let tasks = c.tasks().await;
        let done = |p: &str| {
            tasks
                .iter()
                .any(|t| t["plugin_id"] == p && t["state"] == "completed")
        };
        if done("resolve") && done("probe") {
            let probe = tasks
                .iter()
                .find(|t| t["plugin_id"] == "probe")
                .expect("probe");
            assert_eq!(probe["worker"], Value::Null, "ended: {probe}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "probe never ran on the address resolve found: {tasks:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let address = c.get("/objects/ipaddress/internet%7C127.0.0.9/").await;
    assert!(
        address["scan_level"].as_u64().is_some_and(|l| l >= 1),
        "inherited: {address}"
    );
    c.finish().await;
}
