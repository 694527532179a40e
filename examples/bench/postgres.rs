//! Section 11 of the benchmark report: several replicas on PostgreSQL.
//!
//! - Sustained no-op tasks per second through 1, 2 and 3 worker replicas (`katd serve --role worker`, each
//!   its own process at concurrency 4) and one API + scheduler replica, on one fresh database and the one
//!   Docker engine of this machine; tasks submitted through the API as one request of 100 tasks at a time,
//!   timed from the first task's `created_at` to the last task's `ended_at` as the database records them.
//! - API ingest into PostgreSQL (the same `POST /objects/` load as section 3 on sled) beside a raw `COPY`
//!   of the same rows (organization, type, natural key, JSON body, primary key) into a plain table, one
//!   `COPY` and one commit per batch, as each request is one commit.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::SinkExt;
use kat::core::clock::Timestamp;
use kat::core::org::{OrgCode, Organization};
use kat::deploy::{DeployConfig, Deployment, StoreChoice};
use kat_store_postgres::testing::TestDatabase;
use serde_json::{Value, json};

use super::{Stats, api_ingest, fmt_ms, met, stats};

const SECRET: &str = "bench-secret-bench-secret-bench-secret!!";
const VOLUME: &str = "kat-bench-replicas-entrypoint";
/// Containers each worker replica runs at once.
const WORKER_CONCURRENCY: usize = 4;

/// What section 11 needs from the rest of the report.
pub(crate) struct Inputs<'a> {
    /// The release `katd` binary.
    pub(crate) katd: &'a Path,
    /// The static entrypoint.
    pub(crate) entrypoint: &'a Path,
    /// The PostgreSQL server (`postgres://…`) on which fresh databases are created.
    pub(crate) server: &'a str,
    /// No-op tasks per replica count.
    pub(crate) tasks: usize,
    /// Section 3's figure, when it was measured in this run: API ingest into sled, objects/s.
    pub(crate) sled_api_rate: Option<f64>,
    /// Section 3's load: objects in all, per request, connections.
    pub(crate) ingest: (usize, usize, usize),
}

/// Kills its processes when dropped (also on a panic).
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn katd(i: &Inputs<'_>, db: &str, plugins: &Path, data: &Path) -> Command {
    let mut c = Command::new(i.katd);
    c.arg("serve")
        .arg("--data")
        .arg(data)
        .arg("--plugins")
        .arg(plugins)
        .arg("--entrypoint")
        .arg(i.entrypoint)
        .env("KAT_STORE", db)
        .env("KAT_JWT_SECRET", SECRET)
        .env("ENTRYPOINT_VOLUME", VOLUME)
        .env("KAT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    c
}

async fn wait_up(port: u16, token_file: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(token) = std::fs::read_to_string(token_file)
            && !token.trim().is_empty()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            return token.trim().to_string();
        }
        assert!(Instant::now() < deadline, "the API replica did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every task of the organization.
async fn tasks(http: &reqwest::Client, api: &str, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let page: Value = http
            .get(format!("{api}/tasks/?limit=1000&offset={}", out.len()))
            .header("Authorization", format!("Token {token}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = page["results"].as_array().cloned().unwrap_or_default();
        let n = items.len();
        out.extend(items);
        if n < 1000 {
            return out;
        }
    }
}

async fn submit(http: &reqwest::Client, api: &str, token: &str, n: usize) {
    let mut left = n;
    while left > 0 {
        let k = left.min(100);
        let requests: Vec<Value> = (0..k)
            .map(|_| json!({"type": "plugin", "data": {"plugin_id": "noop"}}))
            .collect();
        let r = http
            .post(format!("{api}/tasks/"))
            .header("Authorization", format!("Token {token}"))
            .json(&requests)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "submit: {}", r.status());
        left -= k;
    }
}

/// Wait until `n` tasks exist and none is queued or running; returns them.
async fn wait_ended(http: &reqwest::Client, api: &str, token: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let all = tasks(http, api, token).await;
        let open = all
            .iter()
            .filter(|t| matches!(t["state"].as_str(), Some("queued" | "running")))
            .count();
        if all.len() >= n && open == 0 {
            return all;
        }
        assert!(Instant::now() < deadline, "{open} tasks still open");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn at(t: &Value, field: &str) -> i64 {
    t[field]
        .as_str()
        .and_then(Timestamp::parse_rfc3339)
        .unwrap_or_else(|| panic!("{field} of {t}"))
        .as_millis()
}

/// One API + scheduler replica and `workers` worker replicas on a fresh database: no-op tasks per second
/// over `n` tasks submitted at once (after one warm-up task), and the tasks' median duration in ms.
async fn replicas_throughput(i: &Inputs<'_>, plugins: &Path, workers: usize) -> (f64, Stats) {
    let db = TestDatabase::create(i.server)
        .await
        .expect("a fresh database");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let token_file = dir.path().join("token");
    let mut procs = Processes(Vec::new());
    procs.0.push(
        katd(i, &db.url, plugins, &dir.path().join("api"))
            .args([
                "--role",
                "api,scheduler",
                "--worker-id",
                "api",
                "--org",
                "bench",
            ])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--token-out")
            .arg(&token_file)
            .spawn()
            .expect("katd starts"),
    );
    let token = wait_up(port, &token_file).await;
    let api = format!("http://127.0.0.1:{port}/api/v1");
    for w in 1..=workers {
        procs.0.push(
            katd(i, &db.url, plugins, &dir.path().join(format!("w{w}")))
                .args(["--role", "worker", "--worker-id", &format!("w{w}")])
                .args(["--concurrency", &WORKER_CONCURRENCY.to_string()])
                .args(["--listen", "127.0.0.1:0"])
                .arg("--api-url")
                .arg(&api)
                .spawn()
                .expect("a worker starts"),
        );
    }
    let http = reqwest::Client::new();
    submit(&http, &api, &token, 1).await; // warm-up: every worker up, the image's layers cached
    wait_ended(&http, &api, &token, 1).await;
    submit(&http, &api, &token, i.tasks).await;
    let all = wait_ended(&http, &api, &token, i.tasks + 1).await;
    let mut measured: Vec<&Value> = all.iter().collect();
    measured.sort_by_key(|t| at(t, "created_at"));
    let measured = &measured[1..]; // the warm-up task was created first
    for t in measured {
        assert_eq!(t["state"], "completed", "{t}");
    }
    let first = measured.iter().map(|t| at(t, "created_at")).min().unwrap();
    let last = measured.iter().map(|t| at(t, "ended_at")).max().unwrap();
    let durations = measured
        .iter()
        .map(|t| (at(t, "ended_at") - at(t, "started_at")) as f64)
        .collect();
    drop(procs);
    db.drop_database().await.expect("drop the database");
    (
        measured.len() as f64 * 1000.0 / (last - first).max(1) as f64,
        stats(durations),
    )
}

/// API ingest into PostgreSQL: a deployment in this process on a fresh database, the same load as
/// section 3.
async fn pg_api_ingest(i: &Inputs<'_>) -> (f64, Stats) {
    let db = TestDatabase::create(i.server)
        .await
        .expect("a fresh database");
    let dir = tempfile::tempdir().unwrap();
    let org = OrgCode::new("bench").unwrap();
    let mut cfg = DeployConfig::new(
        dir.path().join("data"),
        "127.0.0.1:0".parse().unwrap(),
        SECRET.as_bytes().to_vec(),
    );
    cfg.store = StoreChoice::Postgres(db.url.clone());
    cfg.organizations = vec![Organization::new(org.clone(), "Bench")];
    cfg.engine.entrypoint_volume = VOLUME.into();
    cfg.engine.reap_at_start = false;
    let d = Deployment::start(cfg)
        .await
        .expect("deployment on PostgreSQL");
    let (total, batch, conns) = i.ingest;
    let (rate, lat) = api_ingest(&d, &org, 0, total, batch, conns).await;
    d.shutdown().await;
    db.drop_database().await.expect("drop the database");
    (rate, stats(lat))
}

/// Where [`raw_copy`] writes the rows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CopyInto {
    /// A plain table: organization, type, key and JSON body under a primary key.
    Plain,
    /// The store's own `kat_objects` (its migrations applied): the same columns and the
    /// searchable fields, under its primary key and the GIN index of those fields.
    StoreTable,
}

/// The same rows as a raw `COPY`: one `COPY` and one commit per batch, `conns` connections side
/// by side as the API load has. Objects per second.
async fn raw_copy(i: &Inputs<'_>, into: CopyInto) -> f64 {
    let db = TestDatabase::create(i.server)
        .await
        .expect("a fresh database");
    let (total, batch, conns) = i.ingest;
    let mut clients = Vec::new();
    for _ in 0..conns {
        let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        clients.push(client);
    }
    let copy = match into {
        CopyInto::Plain => {
            clients[0]
                .batch_execute(
                    "CREATE TABLE raw_objects (org text COLLATE \"C\" NOT NULL, ty text COLLATE \"C\" NOT NULL, \
                     key text COLLATE \"C\" NOT NULL, body jsonb NOT NULL, PRIMARY KEY (org, ty, key))",
                )
                .await
                .expect("create the table");
            "COPY raw_objects FROM STDIN"
        }
        CopyInto::StoreTable => {
            drop(
                kat_store_postgres::PgStore::connect(&db.url, Default::default())
                    .await
                    .expect("the store's schema"),
            );
            "COPY kat_objects (org, ty, key, body, fields) FROM STDIN"
        }
    };
    // The rows, as COPY's text format: what the API's 1,000-hostname bodies become (a hostname's
    // searchable fields are its name and network).
    let bodies: Vec<bytes::Bytes> = (0..total / batch)
        .map(|b| {
            let mut s = String::new();
            for n in 0..batch {
                let name = format!("i{}.api.example", b * batch + n);
                let body = json!({"name": name, "network": "internet"});
                s.push_str(&format!("bench\thostname\tinternet|{name}\t{body}"));
                if into == CopyInto::StoreTable {
                    s.push_str(&format!("\t{body}"));
                }
                s.push('\n');
            }
            bytes::Bytes::from(s)
        })
        .collect();
    let bodies = std::sync::Arc::new(bodies);
    let start = Instant::now();
    let mut handles = Vec::new();
    for (c, mut client) in clients.into_iter().enumerate() {
        let bodies = bodies.clone();
        handles.push(tokio::spawn(async move {
            for body in bodies.iter().skip(c).step_by(conns) {
                let tx = client.transaction().await.unwrap();
                let sink = tx.copy_in::<_, bytes::Bytes>(copy).await.unwrap();
                futures::pin_mut!(sink);
                sink.send(body.clone()).await.unwrap();
                let rows = sink.finish().await.unwrap();
                assert_eq!(rows as usize, batch);
                tx.commit().await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    db.drop_database().await.expect("drop the database");
    rate
}

/// Section 11, as Markdown.
pub(crate) async fn section(i: Inputs<'_>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins.json");
    let noop = json!({"plugin_id": "noop", "scan_level": 0, "oci_image": super::IMAGE, "oci_arguments": ["true"]});
    std::fs::write(&plugins, json!([noop]).to_string()).unwrap();
    let mut rows = Vec::new();
    for workers in 1..=3 {
        eprintln!("   {} no-op tasks on {workers} worker replica(s)", i.tasks);
        rows.push((workers, replicas_throughput(&i, &plugins, workers).await));
    }
    eprintln!("   API ingest into PostgreSQL and a raw COPY");
    let (pg_rate, pg_lat) = pg_api_ingest(&i).await;
    let copy_rate = raw_copy(&i, CopyInto::Plain).await;
    let table_rate = raw_copy(&i, CopyInto::StoreTable).await;
    let (total, batch, conns) = i.ingest;
    let version = super::sh(&format!("psql '{}' -Atc 'SHOW server_version'", i.server));
    let mut md = String::from("## 11. Several replicas on PostgreSQL\n\n");
    md.push_str(&format!("PostgreSQL {version} on this machine (`scripts/postgres.sh`: default settings, `synchronous_commit` on, data on the same disk), a fresh database for each measurement.\n\n"));
    md.push_str(&format!("**Sustained task throughput by worker replicas.** One `katd serve --role api,scheduler` and 1, 2 or 3 `katd serve --role worker` processes (each at concurrency {WORKER_CONCURRENCY}, its own worker id) on one database and the one Docker engine; {} no-op tasks (`true` in `{}`) submitted through the API in requests of 100, timed from the first task's `created_at` to the last task's `ended_at` as the database records them (one warm-up task first, not counted). Every worker claims with `FOR UPDATE SKIP LOCKED` and renews leases while its containers run.\n\n| worker replicas | containers at once | tasks/s | task duration median (min, max) |\n|---|---|---|---|\n", i.tasks, super::IMAGE));
    for (w, (rate, dur)) in &rows {
        md.push_str(&format!(
            "| {w} | {} | **{rate:.1}** | {} |\n",
            w * WORKER_CONCURRENCY,
            fmt_ms(dur)
        ));
    }
    md.push_str("\nAll replicas and the one engine share this machine's cores: a second worker adds slots, not capacity, so these figures show what coordination through the database costs, not how far more machines would go (section 6 has one process on sled at the same parallelism).\n\n");
    let ratio = pg_rate / copy_rate;
    md.push_str(&format!("**API ingest into PostgreSQL.** The load of section 3 ({total} new hostnames, {batch} per authenticated `POST /objects/`, {conns} connections, each 201 meaning committed) on a deployment whose store is PostgreSQL, beside two raw `COPY`s of the same rows ({conns} connections, one `COPY` and one commit per {batch} rows): into a plain table (organization, type, natural key, JSON body, primary key), and into the store's own table (`kat_objects` with the store's migrations: the same columns and the searchable fields, under its primary key and the GIN index of those fields, which queries by field need). The second is what writing these rows costs PostgreSQL here before any of the API's work. The API's write is more again: its attribution, the organization's lock and its scan levels, all in one transaction, and the organization's lock makes the four connections' writes of one organization take turns (the levels of its graph stay consistent), where `COPY`'s four run side by side. Where the time goes: docs/scale-out.md, \"Performance\".\n\n| | objects/s |\n|---|---|\n| API `POST /objects/` on PostgreSQL | **{pg_rate:.0}**; request latency median {:.0} ms, max {:.0} ms |\n| raw `COPY` into a plain table | {copy_rate:.0} |\n| raw `COPY` into the store's table (its primary key and GIN index) | {table_rate:.0} ({:.2}x the plain table) |\n| API on PostgreSQL / raw `COPY` into a plain table | **{ratio:.2}x** (target: at least 0.5x: {}) |\n| API on PostgreSQL / raw `COPY` into the store's table | {:.2}x |\n{}\n", pg_lat.median, pg_lat.max, table_rate / copy_rate, met(ratio >= 0.5), pg_rate / table_rate, i.sled_api_rate.map_or(String::new(), |r| format!("| API on sled (section 3) | {r:.0} |\n"))));
    md
}
