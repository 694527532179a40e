//! Fresh databases for tests and benchmarks on a real server (feature `testing`).
//!
//! The server is named by `KAT_TEST_POSTGRES` (a URL whose role may create databases);
//! `scripts/postgres.sh` starts one and prints that variable. Each test gets a database of its own,
//! so tests run in parallel without seeing each other's rows.

use std::str::FromStr;

use crate::{PgOptions, PgStore, PgStoreError};

/// The variable naming the test server.
pub const ENV: &str = "KAT_TEST_POSTGRES";

/// A database created for one test.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    /// Its name.
    pub name: String,
    base: String,
}

/// The test server's URL, or `None` after [`kat_core::conformance::runtime::unavailable`]-style
/// handling: panics when `CI` is set and `KAT_TEST_POSTGRES` is not, else prints why the test is
/// skipped.
///
/// # Panics
/// In CI without `KAT_TEST_POSTGRES`.
pub fn server() -> Option<String> {
    match std::env::var(ENV) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let what = format!("no PostgreSQL server: {ENV} is not set");
            let setup = "run eval \"$(scripts/postgres.sh)\" first";
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                panic!("{what}; {setup}");
            }
            eprintln!("SKIPPED (no CI): {what}; {setup}");
            None
        }
    }
}

/// `base` with its database name replaced by `name`.
fn with_dbname(base: &str, name: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let head = match head.rsplit_once('/') {
        Some((prefix, _))
            if prefix.contains("://") && prefix.len() > prefix.find("://").map_or(0, |i| i + 2) =>
        {
            prefix
        }
        _ => head,
    };
    match query {
        Some(q) => format!("{head}/{name}?{q}"),
        None => format!("{head}/{name}"),
    }
}

impl TestDatabase {
    /// Create an empty database on the server at `base`.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub async fn create(base: &str) -> Result<TestDatabase, PgStoreError> {
        let name = format!("kat_test_{}", uuid::Uuid::new_v4().simple());
        admin(base, &format!("CREATE DATABASE {name}")).await?;
        Ok(TestDatabase {
            url: with_dbname(base, &name),
            name,
            base: base.to_string(),
        })
    }

    /// A store on this database.
    ///
    /// # Errors
    /// As [`PgStore::connect`].
    pub async fn store(&self) -> Result<PgStore, PgStoreError> {
        PgStore::connect(&self.url, PgOptions::default()).await
    }

    /// Drop the database (every connection to it is closed first).
    ///
    /// `WITH (FORCE)` fails for a role that may not signal an autovacuum worker busy in the
    /// database (the tests' role is no superuser; after a test that wrote and deleted much, this is
    /// common). A plain `DROP DATABASE` ends autovacuum workers itself: it is tried then, again
    /// for up to 30 s while the database is still in use.
    ///
    /// # Errors
    /// When the server refuses.
    pub async fn drop_database(self) -> Result<(), PgStoreError> {
        use tokio_postgres::error::SqlState;
        let forced = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let plain = format!("DROP DATABASE IF EXISTS {}", self.name);
        let mut tries = 0;
        loop {
            let r = match admin(&self.base, &forced).await {
                Err(e) if e.sqlstate() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                    admin(&self.base, &plain).await
                }
                r => r,
            };
            match r {
                Err(e)
                    if tries < 300
                        && e.sqlstate().is_some_and(|s| {
                            *s == SqlState::INSUFFICIENT_PRIVILEGE || *s == SqlState::OBJECT_IN_USE
                        }) =>
                {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                r => return r,
            }
        }
    }
}

async fn admin(base: &str, sql: &str) -> Result<(), PgStoreError> {
    let config = tokio_postgres::Config::from_str(base).map_err(PgStoreError::Config)?;
    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    let r = client.batch_execute(sql).await;
    drop(client);
    let _ = task.await;
    Ok(r?)
}

#[cfg(test)]
mod tests {
    use super::with_dbname;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            with_dbname("postgres://kat@127.0.0.1:5/kat", "x"),
            "postgres://kat@127.0.0.1:5/x"
        );
        assert_eq!(
            with_dbname("postgres://kat@127.0.0.1:5/kat?sslmode=disable", "x"),
            "postgres://kat@127.0.0.1:5/x?sslmode=disable"
        );
        assert_eq!(with_dbname("postgres://kat@h", "x"), "postgres://kat@h/x");
    }
}
