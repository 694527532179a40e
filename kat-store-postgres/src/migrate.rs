//! The embedded schema and how it is applied.

use crate::{PResult, PgStore, PgStoreError};

/// The migrations, in order: version, name, SQL. Never edit one that was released: add another.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "objects", include_str!("../migrations/0001_objects.sql")),
    (2, "files", include_str!("../migrations/0002_files.sql")),
    (3, "tasks", include_str!("../migrations/0003_tasks.sql")),
    (4, "written", include_str!("../migrations/0004_written.sql")),
];

/// The advisory lock held while migrating (any number: the same in every build).
const MIGRATION_LOCK: i64 = 0x6b61_7473_6368_656d; // "katschem"

/// The newest version this build knows.
pub(crate) fn newest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// The database's version (0 for an empty database).
pub(crate) async fn current(c: &tokio_postgres::Client) -> PResult<i32> {
    let exists: bool = c
        .query_one("SELECT to_regclass('kat_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = c
        .query_one("SELECT max(version) FROM kat_schema", &[])
        .await?
        .get(0);
    Ok(v.unwrap_or(0))
}

/// Apply what is missing, in one transaction under an advisory lock, so that replicas starting
/// together migrate once.
pub(crate) async fn apply(store: &PgStore) -> PResult<()> {
    let mut c = store.conn().await?;
    let tx = c.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS kat_schema (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM kat_schema", &[])
        .await?
        .get(0);
    if found > newest() {
        return Err(PgStoreError::SchemaTooNew {
            found,
            known: newest(),
        });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        tracing::info!(version, name, "applying a schema migration");
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO kat_schema (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
