//! SledStore benchmarks (criterion, `cargo bench -p kat-store-sled`):
//!
//! - `bulk_upsert/100k_hostnames_flush_each_write`: 100,000 new hostnames in 100 bulk upserts of
//!   1,000, each acknowledged only once on disk (`Durability::FlushEachWrite`), attributed to a task.
//!   Criterion reports objects/s as the throughput.
//! - `lookup_by_name/{10k,1M}`: a query by the `name` filter (the API's `?name=`) in a store holding
//!   10,000 and 1,000,000 hostnames: the time must not grow with the number of objects.
//!
//! `KAT_SLED_BENCH_BIG` overrides the large dataset's size (default 1,000,000) and
//! `KAT_SLED_BENCH_CACHE_MB` the lookup stores' sled cache (default 1024 MiB, which holds the 1M
//! dataset; with less, lookups that miss the cache read pages back from disk).

use std::time::{Duration, Instant};

// As in katd: glibc's malloc halves sled's write throughput on this machine (docs/store-sled.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use kat_core::object::{Object, ObjectType};
use kat_core::org::OrgCode;
use kat_core::store::{ObjectQuery, ObjectStore};
use kat_core::task::TaskId;
use kat_store_sled::{Durability, SledOptions, SledStore};

const BATCH: usize = 1_000;

fn org() -> OrgCode {
    OrgCode::new("bench").expect("org")
}

fn host(name: &str) -> Object {
    Object::from_json(ObjectType::Hostname, &serde_json::json!({ "name": name })).expect("hostname")
}

/// The runtime for a group, in a process set up as katd sets itself up (no transparent huge pages).
fn runtime() -> tokio::runtime::Runtime {
    kat_store_sled::disable_transparent_huge_pages().expect("turn off transparent huge pages");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn bulk_upsert(c: &mut Criterion) {
    let rt = runtime();
    const N: usize = 100_000;
    // The objects are made before timing: validation is not the store's cost.
    let batches: Vec<Vec<Object>> = (0..N / BATCH)
        .map(|b| {
            (0..BATCH)
                .map(|i| host(&format!("h{i}.b{b}.bulk.example")))
                .collect()
        })
        .collect();
    let mut g = c.benchmark_group("bulk_upsert");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("100k_hostnames_flush_each_write", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let batches = batches.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let store = SledStore::open(dir.path(), SledOptions::default()).expect("open");
                    let task = TaskId::new();
                    let work = batches.clone();
                    let start = Instant::now();
                    for batch in work {
                        store
                            .upsert(&org(), batch, Some(task))
                            .await
                            .expect("upsert");
                    }
                    let took = start.elapsed();
                    total += took;
                    eprintln!(
                        "bulk upsert: {N} hostnames in {:.2} s = {:.0} objects/s",
                        took.as_secs_f64(),
                        N as f64 / took.as_secs_f64()
                    );
                }
                total
            }
        });
    });
    g.finish();
}

/// A store holding `n` hostnames (`h{i}.example`), built in bulk upserts of 1,000.
async fn dataset(dir: &std::path::Path, n: usize) -> SledStore {
    let cache_mb: u64 = std::env::var("KAT_SLED_BENCH_CACHE_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let store = SledStore::open(
        dir,
        SledOptions {
            durability: Durability::Periodic(Duration::from_secs(1)),
            cache_capacity_bytes: cache_mb << 20,
        },
    )
    .expect("open");
    let start = Instant::now();
    for b in 0..n.div_ceil(BATCH) {
        let batch: Vec<Object> = (b * BATCH..((b + 1) * BATCH).min(n))
            .map(|i| host(&format!("h{i}.example")))
            .collect();
        store.upsert(&org(), batch, None).await.expect("upsert");
    }
    store.flush().await.expect("flush");
    // Let sled's background flusher settle before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!(
        "built {n} hostnames in {:.1} s ({:.0} objects/s, periodic flush)",
        start.elapsed().as_secs_f64(),
        n as f64 / start.elapsed().as_secs_f64()
    );
    store
}

async fn lookup(store: &SledStore, n: usize, i: &mut usize) {
    // A different name each time, spread over the whole key space.
    *i = (*i + 7_919) % n;
    let q = ObjectQuery::new(org(), ObjectType::Hostname)
        .filter("name", &[format!("h{i}.example").as_str()]);
    let page = store.query(&q).await.expect("query");
    assert_eq!(page.count, 1);
}

fn lookup_by_name(c: &mut Criterion) {
    let rt = runtime();
    let big: usize = std::env::var("KAT_SLED_BENCH_BIG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let big_label = if big == 1_000_000 { "1M" } else { "big" };
    let small_dir = tempfile::tempdir().expect("tempdir");
    let big_dir = tempfile::tempdir().expect("tempdir");
    let stores = [
        (
            "10k",
            10_000usize,
            rt.block_on(dataset(small_dir.path(), 10_000)),
        ),
        (big_label, big, rt.block_on(dataset(big_dir.path(), big))),
    ];
    // Interleaved rounds, so that both sizes see the same machine load; medians per lookup.
    let mut samples: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    rt.block_on(async {
        let mut i = 0;
        for _round in 0..30 {
            for (s, (_, n, store)) in stores.iter().enumerate() {
                let start = Instant::now();
                for _ in 0..200 {
                    lookup(store, *n, &mut i).await;
                }
                samples[s].push(start.elapsed().as_secs_f64() / 200.0 * 1e6);
            }
        }
    });
    for (s, (label, n, _)) in stores.iter().enumerate() {
        let v = &mut samples[s];
        v.sort_by(f64::total_cmp);
        eprintln!(
            "lookup by name among {n} ({label}): median {:.1} us, fastest round {:.1} us (interleaved)",
            v[v.len() / 2],
            v[0]
        );
    }
    let mut g = c.benchmark_group("lookup_by_name");
    g.sample_size(50);
    g.measurement_time(Duration::from_secs(5));
    for (label, n, store) in &stores {
        let mut i: usize = 0;
        g.bench_with_input(BenchmarkId::from_parameter(label), n, |b, &n| {
            b.to_async(&rt).iter(|| {
                i = (i + 7_919) % n;
                let q = ObjectQuery::new(org(), ObjectType::Hostname)
                    .filter("name", &[format!("h{i}.example").as_str()]);
                async move {
                    let page = store.query(&q).await.expect("query");
                    assert_eq!(page.count, 1);
                    page
                }
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bulk_upsert, lookup_by_name);
criterion_main!(benches);
