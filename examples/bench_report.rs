//! The benchmark report (`scripts/bench` runs this): one run on one machine, written as Markdown.
//!
//! 1. A no-op task end to end (submitted through the engine, container run through the entrypoint,
//!    final state recorded) next to `docker run --rm` of the same image, interleaved.
//! 2. Mode 3 with 50 targets in one task next to one single-target task (and 50 single-target tasks).
//! 3. API bulk ingest (authenticated `POST /objects/` of 1,000 hostnames per request) next to the sled
//!    store's own upsert and a raw sled batch insert of the same records.
//! 4. The entrypoint uploading 1 GiB of stdout to the API: throughput and its peak RSS.
//! 5. Authenticated requests/s and p99, from `kat-http`'s load tool (its output file is passed in).
//! 6. The discovery loop's scan levels on sled: 100,000 hostnames with A records, NS records and
//!    ports; a full recomputation, and the levels part of a 1,000-object plugin upload.
//!
//! ```text
//! bench_report --entrypoint PATH --out docs/bench-report.md [--load-output FILE] [--rounds 15]
//! bench_report --only levels --out FILE     # section 6 alone (no engine needed)
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

// sled allocates on every write; glibc's malloc halves its throughput here (docs/store-sled.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kat::core::engine::EngineConfig;
use kat::core::object::{Object, ObjectType};
use kat::core::org::{OrgCode, Organization};
use kat::core::runtime::{EntrypointBinary, NetworkMode};
use kat::core::store::ObjectStore;
use kat::core::task::{Task, TaskId};
use kat::deploy::{DeployConfig, Deployment};
use kat::protocol::env;
use kat::store_sled::{SledOptions, SledStore};
use serde_json::json;

struct Stats {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(f64::total_cmp);
    Stats {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
        n: v.len(),
    }
}

fn fmt_ms(s: &Stats) -> String {
    format!(
        "{:.0} ms (min {:.0}, max {:.0}, n={})",
        s.median, s.min, s.max, s.n
    )
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn task_ms(t: &Task) -> f64 {
    (t.ended_at.expect("ended").as_millis() - t.created_at.as_millis()) as f64
}

async fn run_plugin(d: &Deployment, org: &OrgCode, plugin: &str, input: Vec<String>) -> Vec<Task> {
    use kat::core::control::{Submitter, TaskControl, TaskRequest};
    let tasks = d
        .engine()
        .submit(TaskRequest {
            org: org.clone(),
            plugin_id: plugin.into(),
            input,
            // The benchmark is an operator tool calling the engine directly: full rights.
            submitter: Submitter::operator("bench_report"),
        })
        .await
        .expect("submit");
    let mut out = Vec::new();
    for t in tasks {
        let done = d
            .engine()
            .wait_for(t.id, Duration::from_secs(600))
            .await
            .expect("ends");
        assert_eq!(done.state.as_str(), "completed", "{done:?}");
        out.push(done);
    }
    out
}

/// An object from its JSON form.
fn object(ty: ObjectType, v: serde_json::Value) -> Object {
    Object::from_json(ty, &v).expect("valid object")
}

/// Section 6: scan levels at 100,000 hostnames on sled.
async fn levels_section() -> String {
    use kat::core::object::{ScanLevel, ScanProfile};
    const HOSTS: usize = 100_000;
    const GROUP: usize = 10; // hostnames per shared address
    const NAME_SERVERS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(
        dir.path(),
        SledOptions {
            durability: kat::store_sled::Durability::Periodic(Duration::from_secs(1)),
            ..SledOptions::default()
        },
    )
    .unwrap();
    let org = OrgCode::new("levels").unwrap();
    let host = |i: usize| format!("h{i}.z{}.example", i / GROUP);
    let ip = |g: usize| format!("198.18.{}.{}", g / 256, g % 256);
    // The declared roots first: the first hostname of every group, at level 2.
    let roots: Vec<Object> = (0..HOSTS / GROUP)
        .map(|g| object(ObjectType::Hostname, json!({"name": host(g * GROUP)})))
        .collect();
    for chunk in roots.chunks(5_000) {
        store.upsert(&org, chunk.to_vec(), None).await.unwrap();
    }
    for g in 0..HOSTS / GROUP {
        store
            .set_scan_profile(
                &org,
                ObjectType::Hostname,
                &kat::core::object::NaturalKey::parse(&format!("internet|{}", host(g * GROUP)))
                    .unwrap(),
                ScanProfile::declared(ScanLevel::new(2).unwrap()),
            )
            .await
            .unwrap();
    }
    // Then every hostname's A record (ten share an address), NS record, and three ports per address.
    let started = Instant::now();
    let mut objects = Vec::new();
    for i in 0..HOSTS {
        let g = i / GROUP;
        objects.push(object(
            ObjectType::DnsARecord,
            json!({"hostname": host(i), "ip_address": ip(g)}),
        ));
        objects.push(object(
            ObjectType::DnsNsRecord,
            json!({"hostname": host(i), "name_server": format!("ns{}.bench.example", i % NAME_SERVERS)}),
        ));
        if i % GROUP == 0 {
            for port in [22, 80, 443] {
                objects.push(object(
                    ObjectType::IpPort,
                    json!({"address": ip(g), "protocol": "TCP", "port": port}),
                ));
            }
        }
        if objects.len() >= 2_000 {
            store
                .upsert(&org, std::mem::take(&mut objects), None)
                .await
                .unwrap();
        }
    }
    store.upsert(&org, objects, None).await.unwrap();
    store.flush().await.unwrap();
    let ingest = started.elapsed().as_secs_f64();
    let (writes, ingest_levels) = store.levels_work();
    let stored: u64 = {
        let mut n = 0;
        for ty in ObjectType::ALL {
            n += store
                .query(&kat::core::store::ObjectQuery::new(org.clone(), ty))
                .await
                .unwrap()
                .count;
        }
        n
    };
    let mut inherited = kat::core::store::ObjectQuery::new(org.clone(), ObjectType::Hostname);
    inherited
        .filters
        .push(("declared".into(), vec!["false".into()]));
    inherited.min_scan_level = Some(ScanLevel::new(2).unwrap());
    let inherited = store.query(&inherited).await.unwrap().count;
    // Full recomputations of the consistent store.
    let mut full = Vec::new();
    let mut changed = 0;
    for _ in 0..3 {
        let t = Instant::now();
        changed += store.recompute_levels(Some(&org)).await.unwrap();
        full.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let full = stats(full);
    // Plugin uploads of 1,000 objects: 250 new hostnames, each with an A record to an address that
    // has a level, an NS record and a new port on the address.
    let mut upload = Vec::new();
    let mut upload_levels = Vec::new();
    for round in 0..20 {
        let mut batch = Vec::new();
        for k in 0..250 {
            let name = format!("new{k}.r{round}.example");
            let g = (round * 250 + k) % (HOSTS / GROUP);
            batch.push(object(ObjectType::Hostname, json!({"name": name})));
            batch.push(object(
                ObjectType::DnsARecord,
                json!({"hostname": name, "ip_address": ip(g)}),
            ));
            batch.push(object(
                ObjectType::DnsNsRecord,
                json!({"hostname": name, "name_server": "ns0.bench.example"}),
            ));
            batch.push(object(
                ObjectType::IpPort,
                json!({"address": ip(g), "protocol": "TCP", "port": 8000 + round * 250 + k}),
            ));
        }
        let (_, before) = store.levels_work();
        let t = Instant::now();
        let out = store
            .upsert(&org, batch, Some(TaskId::new()))
            .await
            .unwrap();
        upload.push(t.elapsed().as_secs_f64() * 1000.0);
        let (_, after) = store.levels_work();
        upload_levels.push((after - before).as_secs_f64() * 1000.0);
        assert_eq!(out.len(), 1_000);
        assert_eq!(
            out[0].scan.and_then(|p| p.level),
            Some(ScanLevel::new(2).unwrap()),
            "the new hostname inherited its address's level in the upload itself"
        );
    }
    let (upload, upload_levels) = (stats(upload), stats(upload_levels));
    assert_eq!(
        store.recompute_levels(Some(&org)).await.unwrap(),
        0,
        "the uploads' incremental updates were complete"
    );
    let fmt = |s: &Stats| {
        format!(
            "{:.2} ms (min {:.2}, max {:.2}, n={})",
            s.median, s.min, s.max, s.n
        )
    };
    let mut md = String::new();
    md.push_str(
        "## 6. The discovery loop: scan levels

",
    );
    md.push_str(&format!(
        "On the sled store (one process, flushed in the background): {HOSTS} hostnames in groups of {GROUP} that share an IP address, the first of each group declared at level 2; every hostname has an A record and an NS record (to one of {NAME_SERVERS} name servers), every address ports 22, 80 and 443: {stored} objects in all. Every other hostname inherits level 2 through its address ({inherited} do), the addresses inherit 2, the name servers 1. Ingest with the levels kept up to date by every write took {ingest:.1} s ({writes} writes spent {:.2} s of it on levels).

",
        ingest_levels.as_secs_f64()
    ));
    md.push_str(&format!(
        "| | time |
|---|---|
| full recomputation of the organization (read every level and edge, settle, write what changed: {changed} changed) | **{}** (target: under 2 s) |
| a plugin's 1,000-object upload (250 new hostnames with A and NS records and a port), `SledStore::upsert` | {} |
| of which bringing the levels up to date (`SledStore::levels_work`) | **{}** (target: well under 10 ms) |

",
        fmt_ms(&full),
        fmt(&upload),
        fmt(&upload_levels),
    ));
    md.push_str("The original recomputes every scan level of every organization every 60 s (`recalculate_scan_levels` on Celery beat, raise-only), so an address a plugin finds waits up to a minute for a level and a lowered level never comes down; here the upload that creates the relation sets the level before it returns, decreases included, and the full recomputation is for after a migration (`katd levels --recompute`).

");
    md
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    kat::store_sled::disable_transparent_huge_pages().expect("turn off transparent huge pages");
    if arg("--only").as_deref() == Some("levels") {
        let out = PathBuf::from(arg("--out").unwrap_or_else(|| "bench-levels.md".into()));
        eprintln!("6/6 scan levels at 100,000 hostnames");
        let md = levels_section().await;
        std::fs::write(&out, &md).unwrap();
        print!("{md}");
        return;
    }
    let entrypoint = PathBuf::from(arg("--entrypoint").expect("--entrypoint PATH"));
    let out = PathBuf::from(arg("--out").unwrap_or_else(|| "docs/bench-report.md".into()));
    let rounds: usize = arg("--rounds").and_then(|v| v.parse().ok()).unwrap_or(15);
    let load_output = arg("--load-output").and_then(|p| std::fs::read_to_string(p).ok());
    let mut md = String::new();
    let machine = format!(
        "{} cores ({}), {} memory, kernel {}, {}, {}",
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs"),
        sh("free -h | awk '/Mem:/ {print $2}'"),
        sh("uname -r"),
        sh("docker version --format 'Docker {{.Server.Version}}'"),
        sh("rustc --version"),
    );
    md.push_str(&format!("# kat-rs benchmark report\n\nOne run of `scripts/bench` on one machine: {machine}.\nDate: {}. Release build. Everything talks over loopback.\n\n", kat::core::clock::Timestamp::now()));

    // ---- deployment ----
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins.json");
    let mut one = json!({"plugin_id": "echo-one", "scan_level": 0, "consumes": ["type:hostname"], "oci_image": "kat-busybox:latest", "oci_arguments": ["echo", "{hostname}"], "batch_size": 1});
    let multi = json!({"plugin_id": "echo-multi", "scan_level": 0, "consumes": ["type:hostname"], "oci_image": "kat-busybox:latest", "oci_arguments": ["echo", "{hostname}"], "batch_size": 50});
    let noop = json!({"plugin_id": "noop", "scan_level": 0, "oci_image": "kat-busybox:latest", "oci_arguments": ["true"]});
    one["description"] = json!("one target per task");
    std::fs::write(&plugins, json!([one, multi, noop]).to_string()).unwrap();
    let org = OrgCode::new("bench").unwrap();
    let mut cfg = DeployConfig::new(
        dir.path().join("data"),
        "127.0.0.1:0".parse().unwrap(),
        b"bench-secret-bench-secret-bench-secret".to_vec(),
    );
    cfg.engine = EngineConfig {
        api_url: String::new(),
        entrypoint_volume: "kat-bench-entrypoint".into(),
        entrypoint_binary: Some(EntrypointBinary {
            path: entrypoint.clone(),
        }),
        network: NetworkMode::Host,
        concurrency: 1,
        reap_at_start: false,
        ..EngineConfig::default()
    };
    cfg.plugin_files = vec![plugins];
    cfg.organizations = vec![Organization::new(org.clone(), "Bench")];
    let d = Deployment::start(cfg).await.expect("deployment");
    let hosts: Vec<String> = (0..50).map(|i| format!("h{i}.bench.example")).collect();
    let objs: Vec<Object> = hosts
        .iter()
        .map(|h| Object::from_json(ObjectType::Hostname, &json!({"name": h})).unwrap())
        .collect();
    let stored = d.objects().upsert(&org, objs, None).await.unwrap();
    for s in stored {
        d.objects()
            .set_scan_profile(
                &org,
                ObjectType::Hostname,
                &s.key,
                kat::core::object::ScanProfile::declared(
                    kat::core::object::ScanLevel::new(1).unwrap(),
                ),
            )
            .await
            .unwrap();
    }

    // ---- 1. no-op task vs docker run --rm ----
    eprintln!("1/6 no-op task vs docker run --rm ({rounds} rounds, interleaved)");
    run_plugin(&d, &org, "noop", vec![]).await; // warm-up
    let mut ours = Vec::new();
    let mut docker = Vec::new();
    for _ in 0..rounds {
        let t = run_plugin(&d, &org, "noop", vec![]).await;
        ours.push(task_ms(&t[0]));
        let start = Instant::now();
        let st = Command::new("docker")
            .args(["run", "--rm", "kat-busybox:latest", "true"])
            .status()
            .unwrap();
        assert!(st.success());
        docker.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let (ours, docker) = (stats(ours), stats(docker));
    let ratio = ours.median / docker.median;
    md.push_str("## 1. A no-op task end to end vs `docker run --rm`\n\n");
    md.push_str("Our figure is a task's `created_at` to `ended_at` as the engine records them: queueing, planning, minting its token, creating the hardened container with the entrypoint volume, running `true` through the entrypoint, collecting the outcome, removing the container and recording the final state. The other is the wall time of `docker run --rm kat-busybox:latest true`. The two alternate, one after the other.\n\n");
    md.push_str(&format!("| | median (min, max) |\n|---|---|\n| kat-rs no-op task | {} |\n| `docker run --rm` | {} |\n| ratio | **{ratio:.2}x** (target: under 1.1x) |\n\n", fmt_ms(&ours), fmt_ms(&docker)));

    // ---- 2. mode 3 with 50 targets vs single-target tasks ----
    eprintln!("2/6 mode 3 with 50 targets vs single-target tasks");
    let mut m3 = Vec::new();
    let mut single = Vec::new();
    let mut fifty = Vec::new();
    let r2 = rounds.clamp(3, 7);
    for _ in 0..r2 {
        let t = run_plugin(&d, &org, "echo-multi", hosts.clone()).await;
        assert_eq!(t.len(), 1);
        m3.push(task_ms(&t[0]));
        let t = run_plugin(&d, &org, "echo-one", vec![hosts[0].clone()]).await;
        single.push(task_ms(&t[0]));
    }
    for _ in 0..2 {
        let start = Instant::now();
        let ts = run_plugin(&d, &org, "echo-one", hosts.clone()).await;
        assert_eq!(ts.len(), 50);
        fifty.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let (m3, single, fifty) = (stats(m3), stats(single), stats(fifty));
    md.push_str("## 2. Mode 3: 50 targets in one container vs one target\n\n");
    md.push_str("`echo {hostname}` over 50 hostnames as ONE task (mode 3: the entrypoint runs the 50 commands in one container and uploads 50 files), next to one single-target task, and next to the original's way: 50 single-target tasks, one container each (concurrency 1, as the original's per-target loop).\n\n");
    md.push_str(&format!(
        "| | median (min, max) |\n|---|---|\n| one task, 50 targets (mode 3, 50 output files) | {} |\n| one task, 1 target | {} |\n| 50 single-target tasks | {} |\n| mode 3 / one target | **{:.2}x** (target: under 2x) |\n| 50 tasks / mode 3 | {:.1}x |\n\n",
        fmt_ms(&m3),
        fmt_ms(&single),
        fmt_ms(&fifty),
        m3.median / single.median,
        fifty.median / m3.median
    ));

    // ---- 3. ingest ----
    eprintln!("3/6 API bulk ingest vs sled");
    let total = 100_000usize;
    let batch = 1000usize;
    let token = d.operator_token(&org, Duration::from_secs(3600)).unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/objects/", d.api_url());
    let bodies: Vec<String> = (0..total / batch)
        .map(|b| {
            let list: Vec<serde_json::Value> = (0..batch)
                .map(|i| json!({"name": format!("i{}.api.example", b * batch + i)}))
                .collect();
            json!({ "hostname": list }).to_string()
        })
        .collect();
    let start = Instant::now();
    let conns = 4;
    let mut handles = Vec::new();
    let bodies = Arc::new(bodies);
    for c in 0..conns {
        let (http, url, token, bodies) = (http.clone(), url.clone(), token.clone(), bodies.clone());
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for body in bodies.iter().skip(c).step_by(conns) {
                let t = Instant::now();
                let r = http
                    .post(&url)
                    .header("Authorization", format!("Token {token}"))
                    .header("Content-Type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 201);
                let _ = r.bytes().await;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await.unwrap());
    }
    let api_secs = start.elapsed().as_secs_f64();
    let api_rate = total as f64 / api_secs;
    let lat = stats(lat);
    // The same records through the store directly, and as a raw sled batch insert.
    let sdir = tempfile::tempdir().unwrap();
    let store = SledStore::open(sdir.path(), SledOptions::default()).unwrap();
    let records: Vec<Vec<Object>> = (0..total / batch)
        .map(|b| {
            (0..batch)
                .map(|i| {
                    Object::from_json(
                        ObjectType::Hostname,
                        &json!({"name": format!("i{}.api.example", b * batch + i)}),
                    )
                    .unwrap()
                })
                .collect()
        })
        .collect();
    let start = Instant::now();
    for r in &records {
        store
            .upsert(&org, r.clone(), Some(TaskId::new()))
            .await
            .unwrap();
    }
    let store_rate = total as f64 / start.elapsed().as_secs_f64();
    let rdir = tempfile::tempdir().unwrap();
    let db = sled::open(rdir.path()).unwrap();
    let start = Instant::now();
    for r in &records {
        let mut b = sled::Batch::default();
        for o in r {
            b.insert(
                o.natural_key().as_str().as_bytes(),
                serde_json::to_vec(&o.to_json()).unwrap(),
            );
        }
        db.apply_batch(b).unwrap();
        db.flush().unwrap();
    }
    let raw_rate = total as f64 / start.elapsed().as_secs_f64();
    md.push_str("## 3. Bulk ingest\n\n");
    md.push_str(&format!("{total} hostnames in requests of {batch}: through the API (authenticated `POST /objects/`, {conns} connections from this process, each 201 meaning on disk), through the sled store's `upsert` directly (indexes, attribution, flush per batch), and as a raw sled batch insert of the same records (key and JSON value only, flush per batch).\n\n"));
    md.push_str(&format!(
        "| | objects/s |\n|---|---|\n| API `POST /objects/` | **{api_rate:.0}** (target: at least 100,000); request latency median {:.0} ms, max {:.0} ms |\n| `SledStore::upsert` | {store_rate:.0} |\n| raw sled `apply_batch` + flush | {raw_rate:.0} |\n| API / raw sled | {:.2}x |\n\n",
        lat.median,
        lat.max,
        api_rate / raw_rate
    ));

    // ---- 4. entrypoint 1 GiB ----
    eprintln!("4/6 entrypoint: 1 GiB of stdout");
    let task_token = d.operator_token(&org, Duration::from_secs(3600)).unwrap();
    let start = Instant::now();
    let o = Command::new(&entrypoint)
        .args(["head", "-c", "1073741824", "/dev/zero"])
        .env(env::API, d.api_url())
        .env(env::TOKEN, &task_token)
        .env(env::PLUGIN_ID, "big")
        .env(env::SPOOL_DIR, dir.path())
        .output()
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{log}");
    let rss_kb: Option<u64> = log
        .lines()
        .rev()
        .find_map(|l| l.split("peak RSS ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    md.push_str("## 4. The entrypoint: 1 GiB of stdout\n\n");
    md.push_str(&format!(
        "The static entrypoint runs `head -c 1073741824 /dev/zero`, spools the output, then uploads it as a multipart file to the API (sled store, sha256 computed while streaming to disk). Wall time covers the command and the upload.\n\n| | |\n|---|---|\n| wall time | {secs:.1} s ({:.0} MiB/s end to end) |\n| entrypoint peak RSS | **{} KiB** (target: under 16 MiB) |\n\n",
        1024.0 / secs,
        rss_kb.map_or("?".into(), |k| k.to_string())
    ));

    // ---- 5. load tool ----
    md.push_str("## 5. Authenticated object writes and reads\n\n");
    match load_output {
        Some(text) => {
            md.push_str("From `cargo run --release -p kat-http --example load` (server in its own process on the sled store with a flush per request, client in another, real HS256 tokens verified and checked against the revocation list on every request, 1 s of warm-up writes not counted; target: at least 25,000 authenticated object writes/s with p99 under 10 ms). Closed loop: each connection sends its next request when the last is answered (as oha does). Open loop: requests on a fixed schedule, each latency counted from its scheduled time, so a stall counts for every request it delays:\n\n```text\n");
            md.push_str(text.trim());
            md.push_str("\n```\n\n");
        }
        None => md.push_str("(not run: pass --load-output)\n\n"),
    }
    d.shutdown().await;

    // ---- 6. scan levels ----
    eprintln!("6/6 scan levels at 100,000 hostnames");
    md.push_str(&levels_section().await);
    std::fs::write(&out, &md).unwrap();
    eprintln!("wrote {}", out.display());
    print!("{md}");
}
