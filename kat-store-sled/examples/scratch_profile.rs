use kat_core::object::{Object, ObjectType};
use kat_core::store::ObjectStore;
use kat_store_sled::*;
use std::time::{Duration, Instant};
fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let periodic = std::env::args().nth(1).is_some();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = if periodic {
            SledOptions {
                durability: Durability::Periodic(Duration::from_secs(1)),
                ..Default::default()
            }
        } else {
            SledOptions::default()
        };
        let store = SledStore::open(dir.path(), opts).unwrap();
        let org = kat_core::org::OrgCode::new("bench").unwrap();
        let batches: Vec<Vec<Object>> = (0..100)
            .map(|b| {
                (0..1000)
                    .map(|i| {
                        Object::from_json(
                            ObjectType::Hostname,
                            &serde_json::json!({"name": format!("h{i}.b{b}.bulk.example")}),
                        )
                        .unwrap()
                    })
                    .collect()
            })
            .collect();
        let task = kat_core::task::TaskId::new();
        let start = Instant::now();
        for b in batches {
            store
                .upsert(
                    &org,
                    b,
                    if std::env::var("NOTASK").is_ok() {
                        None
                    } else {
                        Some(task)
                    },
                )
                .await
                .unwrap();
        }
        let el = start.elapsed();
        println!(
            "{:.2}s = {:.0} obj/s",
            el.as_secs_f64(),
            100000.0 / el.as_secs_f64()
        );
    });
}
