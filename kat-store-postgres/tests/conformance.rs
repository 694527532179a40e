//! kat-core's conformance suites against `PgStore` on a real PostgreSQL server
//! (`KAT_TEST_POSTGRES`, started by `scripts/postgres.sh`); each test on a database of its own.

use kat_store_postgres::testing::{TestDatabase, server};

/// Replicas starting together: the schema is applied once, and a second connect changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_is_applied_once_when_replicas_start_together() {
    let Some(base) = server() else { return };
    let db = TestDatabase::create(&base)
        .await
        .expect("create a database");
    let (a, b, c) = tokio::join!(db.store(), db.store(), db.store());
    let (a, _b, _c) = (a.expect("a"), b.expect("b"), c.expect("c"));
    let v = a.schema_version().await.expect("version");
    assert!(v >= 3, "schema version {v}");
    let again = db.store().await.expect("connect again");
    assert_eq!(again.schema_version().await.expect("version"), v);
    drop((a, again));
    db.drop_database().await.expect("drop");
}
