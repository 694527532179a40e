//! The in-memory reference backends pass the conformance suites.

use std::sync::Arc;

use kat_core::conformance;
use kat_core::memory::{MemoryFileStore, MemoryObjectStore, MemoryTaskStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_object_store() {
    conformance::objects::run_all(Arc::new(MemoryObjectStore::default()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_task_store() {
    conformance::tasks::run_all(Arc::new(MemoryTaskStore::default()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_file_store() {
    // The memory store holds contents in memory by design, so no memory bound is asserted; the
    // streaming backends pass a bound.
    conformance::files::run_all(Arc::new(MemoryFileStore::default()), 64 << 20, None)
        .await
        .unwrap();
}
