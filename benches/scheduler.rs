//! Scheduler benchmark (issue 8): 100k hostnames in an object set, one schedule, batch size 50.
//! Measures the tick that creates the 2,000 tasks, and a second tick in the same interval, which must
//! create none. Real parts: sled with flush per write, the engine, a real JWT authority and the Docker
//! runtime (which the ticks never call; no container runs).
//!
//! `cargo bench --bench scheduler` (set KAT_BENCH_OBJECTS to change the 100,000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use kat::core::clock::Timestamp;
use kat::core::engine::Engine;
use kat::core::object::{Object, ObjectType, ScanLevel, ScanProfile};
use kat::core::org::{OrgCode, Organization};
use kat::core::plugin::{PluginDef, sync};
use kat::core::schedule::{Interval, ObjectSet, ObjectSetId, Schedule, ScheduleId};
use kat::core::store::{ObjectStore, OrgStore, PluginCatalog, ScheduleStore, TaskStore};
use kat::store_sled::{SledOptions, SledStore};

struct Setup {
    engine: Engine,
    store: SledStore,
    set: ObjectSetId,
    org: OrgCode,
    _dir: tempfile::TempDir,
}

fn setup(rt: &tokio::runtime::Runtime, n: usize) -> Setup {
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), SledOptions::default()).expect("sled");
        let org = OrgCode::new("bench").expect("org");
        store
            .put_organization(Organization::new(org.clone(), "Bench"))
            .await
            .expect("org");
        let defs = PluginDef::parse_file(
            r#"[{"plugin_id": "dns", "scan_level": 1, "consumes": ["type:hostname"], "oci_image": "kat-busybox:latest", "oci_arguments": ["nslookup", "{hostname}"]}]"#,
            "bench",
        )
        .expect("plugin");
        store.put_plugins(sync(&[], &defs, true).0).await.expect("plugins");
        let started = Instant::now();
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let batch: Vec<Object> = chunk
                .iter()
                .map(|i| Object::from_json(ObjectType::Hostname, &serde_json::json!({"name": format!("h{i}.bench.example")})).expect("hostname"))
                .collect();
            let stored = store.upsert(&org, batch, None).await.expect("upsert");
            for s in stored {
                store
                    .set_scan_profile(&org, ObjectType::Hostname, &s.key, ScanProfile::declared(ScanLevel::new(1).expect("level")))
                    .await
                    .expect("level");
            }
        }
        eprintln!("setup: {n} hostnames with scan level 1 in {:.1} s", started.elapsed().as_secs_f64());
        let set = ObjectSet {
            id: ObjectSetId::new(),
            number: 0,
            name: "All hostnames".into(),
            description: String::new(),
            org: org.clone(),
            object_type: ObjectType::Hostname,
            all: true,
            filters: vec![],
            keys: vec![],
        };
        store.put_object_set(set.clone()).await.expect("set");
        let tasks: Arc<dyn TaskStore> = Arc::new(store.clone());
        let tokens = Arc::new(kat::http::JwtAuthority::hs256(&[9u8; 32], tasks.clone()).expect("jwt"));
        let runtime = Arc::new(kat::runtime_docker::DockerRuntime::connect().await.expect("Docker (scripts/engines.sh docker)"));
        let engine = Engine::builder()
            .objects(Arc::new(store.clone()))
            .files(Arc::new(store.clone()))
            .tasks(tasks)
            .runtime(runtime)
            .tokens(tokens)
            .build()
            .expect("engine");
        Setup {
            engine,
            store,
            set: set.id,
            org,
            _dir: dir,
        }
    })
}

fn bench(c: &mut Criterion) {
    let n: usize = std::env::var("KAT_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s = setup(&rt, n);
    let mut group = c.benchmark_group("scheduler");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(1));
    group.warm_up_time(Duration::from_millis(1));
    let expected = n.div_ceil(50);
    let mut second_ticks = Vec::new();
    group.bench_function(
        format!("first tick: {n} objects -> {expected} tasks"),
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    rt.block_on(async {
                        // A fresh schedule each time, so that nothing is deduplicated against earlier runs.
                        let now = Timestamp::now();
                        let schedule = Schedule {
                            id: ScheduleId::new(),
                            number: 0,
                            org: Some(s.org.clone()),
                            plugin_id: "dns".into(),
                            object_set: Some(s.set),
                            interval: Interval::from_secs(86_400).expect("interval"),
                            enabled: true,
                            next_run_at: now,
                            last_run_at: None,
                            created_at: now,
                            owner: None,
                            disabled_reason: None,
                        };
                        s.store
                            .put_schedule(schedule.clone())
                            .await
                            .expect("schedule");
                        let t = Instant::now();
                        let report = s.engine.tick(now).await.expect("tick");
                        total += t.elapsed();
                        assert_eq!(report.tasks, expected, "{report:?}");
                        // Due again within the same interval: dedup must create nothing.
                        let mut again = s
                            .store
                            .get_schedule(schedule.id)
                            .await
                            .expect("get")
                            .expect("schedule");
                        again.next_run_at = now.plus_secs(60);
                        s.store.put_schedule(again).await.expect("put");
                        let t = Instant::now();
                        let report = s.engine.tick(now.plus_secs(60)).await.expect("tick");
                        second_ticks.push(t.elapsed());
                        assert_eq!(report.tasks, 0, "{report:?}");
                        assert_eq!(report.skipped, n);
                        s.store.delete_schedule(schedule.id).await.expect("delete");
                    });
                }
                total
            });
        },
    );
    group.finish();
    second_ticks.sort();
    if let Some(median) = second_ticks.get(second_ticks.len() / 2) {
        eprintln!(
            "second tick in the same interval: 0 tasks, median {:.1} ms over {} runs",
            median.as_secs_f64() * 1000.0,
            second_ticks.len()
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
