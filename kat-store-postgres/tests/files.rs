//! kat-core's file suite against `PgStore`, with a 1 GiB file that must go in and out within
//! 64 MiB of this process's memory growth. Alone in its test binary: the suite measures the whole
//! process's resident memory, so nothing else may run beside it.

use std::sync::Arc;

use kat_core::conformance::files;
use kat_store_postgres::testing::{TestDatabase, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_files_conformance_1gib_bounded_memory() {
    let Some(base) = server() else { return };
    let db = TestDatabase::create(&base)
        .await
        .expect("create a database");
    let store = Arc::new(db.store().await.expect("connect"));
    // First on the fresh store (the cold case, reported), then the whole suite, which repeats it.
    let started = std::time::Instant::now();
    let growth = files::large_file_streams(&*store, 1 << 30, Some(64 << 20))
        .await
        .expect("large file");
    eprintln!(
        "RSS growth moving a 1 GiB file through PgStore: {} KiB ({:?})",
        growth / 1024,
        started.elapsed()
    );
    let started = std::time::Instant::now();
    files::run_all(store.clone(), 1 << 30, Some(64 << 20))
        .await
        .expect("file suite");
    eprintln!("file suite with a 1 GiB file: {:?}", started.elapsed());
    drop(store);
    // The 1 GiB file was deleted by the suite: its chunks went with it, and no upload left a
    // pending content behind.
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let task = tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT (SELECT coalesce(sum(length(data)), 0) FROM file_chunks)::bigint, \
                    (SELECT count(*) FROM file_contents WHERE sha256 IS NULL), \
                    (SELECT count(*) FROM file_contents c WHERE refs <> \
                        (SELECT count(*) FROM files f WHERE f.content = c.id))",
            &[],
        )
        .await
        .expect("count");
    let (bytes, pending, miscounted): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert!(bytes < 1 << 20, "{bytes} bytes of chunks remain");
    assert_eq!((pending, miscounted), (0, 0));
    drop(client);
    let _ = task.await;
    db.drop_database().await.expect("drop");
}
