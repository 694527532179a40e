//! kat-core's conformance suites against `SledStore` on a real database in a temporary directory, and,
//! in the same test run, against the in-memory reference backends.
//!
//! Every test here holds `SERIAL`: the large-file case measures the whole process's resident memory,
//! so nothing else may run beside it.

use std::sync::Arc;

use kat_core::conformance::{files, objects, tasks};
use kat_core::memory::{MemoryFileStore, MemoryObjectStore, MemoryTaskStore};
use kat_store_sled::{Durability, SledOptions, SledStore};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn open(dir: &tempfile::TempDir) -> SledStore {
    SledStore::open(dir.path(), SledOptions::default()).expect("open a fresh store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_objects_conformance() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    objects::run_all(Arc::new(store.clone()))
        .await
        .expect("object suite");
    // After everything the suite wrote, merged, replaced and deleted, the indexes and attribution
    // agree with the objects.
    let report = store.verify().await.expect("verify");
    assert!(report.is_consistent(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_objects_conformance_periodic_durability() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(
        dir.path(),
        SledOptions {
            durability: Durability::Periodic(std::time::Duration::from_millis(50)),
            ..SledOptions::default()
        },
    )
    .expect("open");
    objects::run_all(Arc::new(store))
        .await
        .expect("object suite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_tasks_conformance() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    tasks::run_all(Arc::new(store.clone()))
        .await
        .expect("task suite");
    // After every claim, renewal, leased write and recovery, the queued and running indexes agree
    // with the tasks.
    let report = store.verify().await.expect("verify");
    assert!(report.is_consistent(), "{report:?}");
    assert!(report.tasks > 200, "{report:?}");
}

/// The whole file suite with a 1 GiB file that must go in and out within 64 MiB of memory growth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_files_conformance_1gib_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(&dir));
    // First on the fresh store (the cold case, reported), then the whole suite, which repeats it.
    let growth = files::large_file_streams(&*store, 1 << 30, Some(64 << 20))
        .await
        .expect("large file");
    eprintln!(
        "RSS growth moving a 1 GiB file through SledStore: {} KiB",
        growth / 1024
    );
    files::run_all(store.clone(), 1 << 30, Some(64 << 20))
        .await
        .expect("file suite");
    // The 1 GiB blob was deleted by the suite: no contents may remain but the small files'.
    let mut big = Vec::new();
    for entry in walk(&dir.path().join("files")) {
        if std::fs::metadata(&entry).map(|m| m.len()).unwrap_or(0) > 1 << 20 {
            big.push(entry);
        }
    }
    assert!(big.is_empty(), "deleted contents remain: {big:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_objects_conformance() {
    let _serial = SERIAL.lock().await;
    objects::run_all(Arc::new(MemoryObjectStore::default()))
        .await
        .expect("object suite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_tasks_conformance() {
    let _serial = SERIAL.lock().await;
    tasks::run_all(Arc::new(MemoryTaskStore::default()))
        .await
        .expect("task suite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_files_conformance() {
    let _serial = SERIAL.lock().await;
    files::run_all(Arc::new(MemoryFileStore::default()), 8 << 20, None)
        .await
        .expect("file suite");
}
