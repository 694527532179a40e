//! Scheduler benchmark: 100k hostnames in an object set, one schedule, batch size 50.
//! Measures the tick that creates the 2,000 tasks, and a second tick in the same interval, which must
//! create none (nothing was written: the engine knows every target is claimed without reading the
//! set), and a third after one new hostname was written (the set is read and claimed again, one
//! task); then where a tick's time goes (the store calls it makes, each timed alone on the same
//! data); then a tick with nothing due among 10,000 schedules. Real parts: sled with flush per write,
//! the engine, a real JWT authority and the Docker runtime (which the ticks never call; no container
//! runs). The allocator is katd's (mimalloc).
//!
//! `cargo bench --bench scheduler` (set KAT_BENCH_OBJECTS to change the 100,000). The figures after
//! criterion's are printed as `figure: <name> = <value> ms` lines, which `examples/bench_report.rs`
//! reads.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let mut after_write = Vec::new();
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
                        // One hostname found in the same interval (a write): the set is read
                        // and claimed again, and the new one alone gets a task.
                        let found = Object::from_json(
                            ObjectType::Hostname,
                            &serde_json::json!({"name": format!("found{}.bench.example", after_write.len())}),
                        )
                        .expect("hostname");
                        let key = s.store.upsert(&s.org, vec![found], None).await.expect("upsert")[0].key.clone();
                        s.store
                            .set_scan_profile(&s.org, ObjectType::Hostname, &key, ScanProfile::declared(ScanLevel::new(1).expect("level")))
                            .await
                            .expect("level");
                        let mut again = s.store.get_schedule(schedule.id).await.expect("get").expect("schedule");
                        again.next_run_at = now.plus_secs(120);
                        s.store.put_schedule(again).await.expect("put");
                        let t = Instant::now();
                        let report = s.engine.tick(now.plus_secs(120)).await.expect("tick");
                        after_write.push(t.elapsed());
                        assert_eq!((report.tasks, report.skipped), (1, n), "{report:?}");
                        s.store.delete(&s.org, ObjectType::Hostname, &[key]).await.expect("delete");
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
        println!(
            "figure: second tick = {:.1} ms",
            median.as_secs_f64() * 1000.0
        );
    }
    after_write.sort();
    if let Some(median) = after_write.get(after_write.len() / 2) {
        eprintln!(
            "tick after one new object in the same interval: 1 task, median {:.1} ms over {} runs",
            median.as_secs_f64() * 1000.0,
            after_write.len()
        );
        println!(
            "figure: tick after a write = {:.1} ms",
            median.as_secs_f64() * 1000.0
        );
    }
    rt.block_on(phases(&s, n));
    rt.block_on(idle_ticks(&s));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median of `runs` timings of `f`.
async fn median_of<F, Fut>(runs: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    let mut all = Vec::new();
    for _ in 0..runs {
        all.push(f().await);
    }
    all.sort();
    all[all.len() / 2]
}

/// The store calls of a first and a second tick, each timed alone: the object set's keys, the claim
/// of every target (fresh, then again in the same window), the creation of the tasks.
async fn phases(s: &Setup, n: usize) {
    use kat::core::object::NaturalKey;
    use kat::core::store::{ObjectQuery, TaskQueue};
    use kat::core::task::{ObjectRef, Task, TaskInput};
    let mut q = ObjectQuery::new(s.org.clone(), ObjectType::Hostname);
    q.min_scan_level = Some(ScanLevel::new(1).expect("level"));
    q.limit = 0;
    let keys_time = median_of(5, || async {
        let t = Instant::now();
        let keys = s.store.query_keys(&q).await.expect("keys");
        assert_eq!(keys.len(), n);
        t.elapsed()
    })
    .await;
    let decode_time = median_of(3, || async {
        let t = Instant::now();
        let page = s.store.query(&q).await.expect("query");
        assert_eq!(page.items.len(), n);
        t.elapsed()
    })
    .await;
    let keys: Vec<NaturalKey> = s
        .store
        .query_keys(&q)
        .await
        .expect("keys")
        .iter()
        .map(|k| NaturalKey::from_parts(["hostname", k.as_str()]))
        .collect();
    let now = Timestamp::now();
    let (mut fresh, mut again) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let id = ScheduleId::new();
        let t = Instant::now();
        let got = s
            .store
            .claim_targets(id, now, now, keys.clone())
            .await
            .expect("claim");
        fresh.push(t.elapsed());
        assert_eq!(got.len(), n);
        let t = Instant::now();
        let got = s
            .store
            .claim_targets(id, now, now.plus_secs(60), keys.clone())
            .await
            .expect("claim");
        again.push(t.elapsed());
        assert!(got.is_empty());
    }
    fresh.sort();
    again.sort();
    let create_time = median_of(5, || async {
        let tasks: Vec<Task> = (0..n.div_ceil(50))
            .map(|i| {
                Task::queued(
                    s.org.clone(),
                    "dns",
                    TaskInput {
                        objects: (0..50)
                            .map(|j| ObjectRef {
                                object_type: ObjectType::Hostname,
                                key: NaturalKey::from_parts([
                                    "internet",
                                    &format!("h{}.bench.example", i * 50 + j),
                                ]),
                            })
                            .collect(),
                        files: Vec::new(),
                    },
                )
            })
            .collect();
        let t = Instant::now();
        s.store.create_tasks(tasks).await.expect("create");
        t.elapsed()
    })
    .await;
    for (name, d) in [
        ("object set keys (header scan)", keys_time),
        ("object set decoded (query)", decode_time),
        ("claim, fresh", fresh[fresh.len() / 2]),
        ("claim, same window", again[again.len() / 2]),
        ("create tasks", create_time),
    ] {
        eprintln!("phase {name}: {:.1} ms", ms(d));
        println!("figure: {name} = {:.1} ms", ms(d));
    }
}

/// A tick with nothing due among 10,000 schedules.
async fn idle_ticks(s: &Setup) {
    let now = Timestamp::now();
    for i in 0..10_000 {
        let at = now.plus_secs(3_600 + i);
        s.store
            .put_schedule(Schedule {
                id: ScheduleId::new(),
                number: 0,
                org: Some(s.org.clone()),
                plugin_id: "dns".into(),
                object_set: Some(s.set),
                interval: Interval::from_secs(86_400).expect("interval"),
                enabled: true,
                next_run_at: at,
                last_run_at: None,
                created_at: now,
                owner: None,
                disabled_reason: None,
            })
            .await
            .expect("schedule");
    }
    let idle = median_of(21, || async {
        let t = Instant::now();
        let report = s.engine.tick(now).await.expect("tick");
        let d = t.elapsed();
        assert_eq!(report.schedules, 0, "{report:?}");
        d
    })
    .await;
    eprintln!(
        "tick with nothing due among 10,000 schedules: {:.3} ms",
        ms(idle)
    );
    println!("figure: idle tick = {:.3} ms", ms(idle));
}

criterion_group!(benches, bench);
criterion_main!(benches);
