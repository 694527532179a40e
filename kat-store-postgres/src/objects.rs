//! [`ObjectStore`] on PostgreSQL.
//!
//! # Tables (`migrations/0001_objects.sql`)
//!
//! | table | key | what |
//! | --- | --- | --- |
//! | `kat_objects` | org, ty, key | `body` (JSONB: the object, its dates and the tasks that created and last wrote it), `fields` (JSONB: each field's filter text), the level columns `scan_level`, `declared`, `inh_ty`, `inh_key` |
//! | `kat_edges` | org, record, source, target | the level relations of DNS records, with their cap, indexed by source and by target |
//! | `kat_attribution` | org, ty, key, task | which tasks wrote an object; `seq` gives first-seen order; indexed by (org, task) |
//!
//! The level columns are authoritative: `body` holds no level, so a level change is an update of
//! four small columns, and the level graph ([`crate::levels`]) is read without decoding objects.
//!
//! # Concurrent writers
//!
//! Several katd replicas write one database. Every object write (upsert, replace, delete, a scan
//! profile, a recomputation) is one transaction that first takes a transaction-level advisory lock
//! keyed by a hash of the organization ([`org_lock`]), then reads what it merges into, then writes.
//! Writers of one organization therefore run one after another, whichever replica they are on: no
//! update is lost (the read after the lock sees every committed write, as each statement of a READ
//! COMMITTED transaction takes a new snapshot), attribution is complete, and the levels algorithm
//! sees a graph nobody else changes. Writers of different organizations run in parallel; readers
//! never wait. A transaction takes one such lock, so these locks cannot deadlock. The price: one
//! organization's writes are serialised (each is a handful of round trips, independent of the
//! batch size).
//!
//! Within a replica, writers of one organization first queue on an in-process gate
//! ([`OrgGates`]), so that at most one of them holds a pooled connection while waiting for the
//! server's lock and a burst of writes to one organization cannot take every connection readers
//! need. The gates are 64, chosen by the organization's hash: two organizations that share one
//! also take turns within a replica (not across replicas).
//!
//! A transaction that does not commit (an error, or a caller that stops waiting) detaches its
//! connection from the pool and closes it: the server rolls back and releases the lock, and no
//! half-done transaction goes back to the pool.
//!
//! # Writes
//!
//! An upsert of a batch (expanded with the objects it refers to by [`expand_batch`]) is a constant
//! number of statements: the lock, one read of the batch's existing rows (`unnest` of the keys),
//! the merge in Rust ([`merge_stored`], [`replace_stored`], as every backend does), one
//! `INSERT … SELECT FROM unnest(…) ON CONFLICT DO UPDATE` of the objects, one insert of the new
//! records' edges, one of the attribution, then the levels (usually three reads and one update,
//! see [`crate::levels`]).
//!
//! Every write brings the levels up to date in its own transaction, so they are never out of date
//! after a crash: [`ObjectStore::levels_need_recompute`] is always `false`.
//!
//! # Queries: what is pushed down
//!
//! Done by the server: the organization and type, the key restriction (`key = ANY`), equality
//! filters on an object's own fields (`fields @> ANY(…)`, answered from the GIN index on
//! `fields`), the `scan_level` and `declared` filters and the minimum scan level (on the level
//! columns), and for an ASCII search a prefilter on the key (`strpos(lower(key), …)`, checked again
//! in Rust since Rust's and the server's lowercasing differ outside ASCII). Ordered by key (the
//! default, or `id`) and without a search, the server also orders, pages and counts (`count(*)
//! OVER ()`), and [`ObjectStore::query_keys`] reads keys alone.
//!
//! Done in Rust: a search that is not ASCII (every object of the type is read), and ordering by
//! another field (every match is read, then [`ObjectQuery::sort`] and paging).
//!
//! [`ObjectStore::count_matching`] on a field of the type's own is one statement for all values,
//! each count stopping at `at_most` (`LIMIT`); on a level filter it is the trait's default.
//! [`ObjectStore::finding_rules`] reads the rules' part of each finding out of its JSONB
//! (`body #> '{object,Finding,…}'`), never decoding a finding whole.

use std::collections::HashMap;

use async_trait::async_trait;
use kat_core::clock::Timestamp;
use kat_core::levels::{self, Changes, Relation};
use kat_core::memory::{expand_batch, in_request_order, merge_stored, replace_stored};
use kat_core::object::{NaturalKey, Object, ObjectType, ScanProfile};
use kat_core::org::OrgCode;
use kat_core::store::{FindingRules, LEVEL_FILTERS, ObjectQuery, ObjectStore, Page, StoredObject};
use kat_core::task::{ObjectRef, TaskId};
use kat_core::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_postgres::Row;
use tokio_postgres::types::{Json, ToSql};

use crate::levels::{LevelSet, level_column, node_at, stored_key, stored_ref};
use crate::{PResult, PgStore, PgStoreError};

/// The advisory lock of an organization's object writes: FNV-1a (64 bits) of a fixed prefix and
/// the organization's code, the same in every build and replica.
pub(crate) fn org_lock(org: &OrgCode) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"kat-objects\0".iter().chain(org.as_str().as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// How many in-process gates object writes are spread over.
const GATES: usize = 64;

/// In-process gates in front of the organizations' advisory locks: a write passes its
/// organization's gate (one of [`GATES`], by the lock's hash) before it takes a connection, so
/// that writers of one busy organization queue here, at most one of them per replica holding a
/// connection while it waits for the server's lock, instead of emptying the pool that readers
/// need.
#[derive(Debug)]
pub(crate) struct OrgGates(Vec<tokio::sync::Mutex<()>>);

impl Default for OrgGates {
    fn default() -> Self {
        OrgGates((0..GATES).map(|_| tokio::sync::Mutex::new(())).collect())
    }
}

impl OrgGates {
    async fn pass(&self, org: &OrgCode) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let n = self.0.len().max(1) as u64;
        let i = u64::from_ne_bytes(org_lock(org).to_ne_bytes()) % n;
        let gate = self.0.get(usize::try_from(i).unwrap_or(0))?;
        Some(gate.lock().await)
    }
}

/// A transaction holding an organization's lock, on a connection of its own.
///
/// Dropped without [`Tx::commit`] or [`Tx::rollback`] (an error, a cancelled caller), it takes the
/// connection out of the pool and closes it: the server then rolls back and releases the lock.
struct Tx<'a> {
    conn: Option<deadpool_postgres::Object>,
    /// The organization's in-process gate, released after the connection.
    _gate: Option<tokio::sync::MutexGuard<'a, ()>>,
}

impl<'a> Tx<'a> {
    /// Begin, and take `org`'s lock.
    async fn begin(store: &'a PgStore, org: &OrgCode) -> PResult<Tx<'a>> {
        let gate = store.gates.pass(org).await;
        let tx = Tx {
            conn: Some(store.conn().await?),
            _gate: gate,
        };
        tx.c()?.batch_execute("BEGIN").await?;
        let c = tx.c()?;
        c.execute(
            &c.prepare_cached("SELECT pg_advisory_xact_lock($1)").await?,
            &[&org_lock(org)],
        )
        .await?;
        Ok(tx)
    }

    fn c(&self) -> PResult<&crate::Client> {
        self.conn
            .as_deref()
            .ok_or_else(|| PgStoreError::Worker("the transaction's connection is gone".into()))
    }

    async fn end(mut self, sql: &str) -> PResult<()> {
        self.c()?.batch_execute(sql).await?;
        // Back to the pool, outside any transaction.
        drop(self.conn.take());
        Ok(())
    }

    async fn commit(self) -> PResult<()> {
        self.end("COMMIT").await
    }

    async fn rollback(self) -> PResult<()> {
        self.end("ROLLBACK").await
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            tracing::debug!("closing the connection of an unfinished transaction");
            drop(deadpool_postgres::Object::take(c));
        }
    }
}

/// What `body` holds (a [`StoredObject`] without what the row's columns say).
#[derive(Deserialize)]
struct Body {
    object: Object,
    created_at: Timestamp,
    last_seen: Timestamp,
    created_by: Option<TaskId>,
    last_seen_by: Option<TaskId>,
}

/// [`Body`], borrowed for writing.
#[derive(Debug, Serialize)]
struct BodyRef<'a> {
    object: &'a Object,
    created_at: Timestamp,
    last_seen: Timestamp,
    created_by: Option<TaskId>,
    last_seen_by: Option<TaskId>,
}

impl<'a> BodyRef<'a> {
    fn of(s: &'a StoredObject) -> Self {
        BodyRef {
            object: &s.object,
            created_at: s.created_at,
            last_seen: s.last_seen,
            created_by: s.created_by,
            last_seen_by: s.last_seen_by,
        }
    }
}

/// The columns a [`StoredObject`] is read from, in [`decode`]'s order.
const COLUMNS: &str = "key, body, scan_level, declared, inh_ty, inh_key";

/// A stored object from a row of [`COLUMNS`] starting at `at`.
fn decode(org: &OrgCode, row: &Row, at: usize) -> PResult<StoredObject> {
    let key = stored_key(row.try_get(at)?);
    let Json(body): Json<Body> = row
        .try_get(at + 1)
        .map_err(|e| PgStoreError::decode("object", e))?;
    let node = node_at(row, at + 2)?;
    let (scan, inherited_from) = match node {
        Some(n) => (Some(n.profile()), n.inherited_from),
        None => (None, None),
    };
    Ok(StoredObject {
        org: org.clone(),
        key,
        object: body.object,
        scan,
        inherited_from,
        created_at: body.created_at,
        last_seen: body.last_seen,
        created_by: body.created_by,
        last_seen_by: body.last_seen_by,
    })
}

/// The `fields` column: every field of the type but the level ones (columns of their own), as
/// its filter text.
fn fields_json(s: &StoredObject) -> Value {
    let mut m = Map::new();
    for f in s.object_type().fields() {
        if LEVEL_FILTERS.contains(f) {
            continue;
        }
        if let Some(v) = s.field(f) {
            m.insert((*f).to_string(), Value::String(v.filter_text()));
        }
    }
    Value::Object(m)
}

fn not_found(key: &NaturalKey) -> Error {
    Error::not_found("object", key.as_str())
}

/// Read the existing rows of `keys` (type, key) in the transaction.
async fn existing(
    c: &crate::Client,
    org: &OrgCode,
    tys: &[&str],
    keys: &[&str],
) -> PResult<HashMap<(ObjectType, NaturalKey), StoredObject>> {
    let stmt = c
        .prepare_cached(
            "SELECT o.ty, o.key, o.body, o.scan_level, o.declared, o.inh_ty, o.inh_key \
             FROM unnest($2::text[], $3::text[]) AS t(ty, key) \
             CROSS JOIN LATERAL (SELECT * FROM kat_objects o \
                 WHERE o.org = $1 AND o.ty = t.ty AND o.key = t.key OFFSET 0) o",
        )
        .await?;
    let rows = c.query(&stmt, &[&org.as_str(), &tys, &keys]).await?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let ty = crate::levels::stored_type(row.try_get(0)?)?;
        let s = decode(org, &row, 1)?;
        out.insert((ty, s.key.clone()), s);
    }
    Ok(out)
}

/// Write the objects (insert, or update body and fields: the level columns of an existing row are
/// the levels algorithm's).
async fn write_objects(c: &crate::Client, org: &OrgCode, objects: &[StoredObject]) -> PResult<()> {
    let n = objects.len();
    let (mut tys, mut keys, mut bodies, mut fields, mut lvls, mut decl) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for s in objects {
        tys.push(s.object_type().as_str());
        keys.push(s.key.as_str());
        bodies.push(Json(BodyRef::of(s)));
        fields.push(fields_json(s));
        lvls.push(level_column(s.scan.and_then(|p| p.level)));
        decl.push(s.scan.map(|p| p.declared));
    }
    let stmt = c
        .prepare_cached(
            "INSERT INTO kat_objects (org, ty, key, body, fields, scan_level, declared) \
             SELECT $1, t.ty, t.key, t.body, t.fields, t.lvl, t.decl \
             FROM unnest($2::text[], $3::text[], $4::jsonb[], $5::jsonb[], $6::int2[], $7::bool[]) \
                 AS t(ty, key, body, fields, lvl, decl) \
             ON CONFLICT (org, ty, key) DO UPDATE SET body = EXCLUDED.body, fields = EXCLUDED.fields",
        )
        .await?;
    c.execute(
        &stmt,
        &[&org.as_str(), &tys, &keys, &bodies, &fields, &lvls, &decl],
    )
    .await?;
    Ok(())
}

/// Insert the edges of new records.
async fn write_edges(
    c: &crate::Client,
    org: &OrgCode,
    edges: &[(ObjectRef, Relation)],
) -> PResult<()> {
    if edges.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&(ObjectRef, Relation)) -> &str| edges.iter().map(f).collect::<Vec<&str>>();
    let caps: Vec<Option<i16>> = edges.iter().map(|(_, r)| level_column(r.cap)).collect();
    let stmt = c
        .prepare_cached(
            "INSERT INTO kat_edges (org, rec_ty, rec_key, src_ty, src_key, dst_ty, dst_key, cap) \
             SELECT $1, t.* FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                 $7::text[], $8::int2[]) AS t \
             ON CONFLICT DO NOTHING",
        )
        .await?;
    c.execute(
        &stmt,
        &[
            &org.as_str(),
            &col(|(r, _)| r.object_type.as_str()),
            &col(|(r, _)| r.key.as_str()),
            &col(|(_, e)| e.source.object_type.as_str()),
            &col(|(_, e)| e.source.key.as_str()),
            &col(|(_, e)| e.target.object_type.as_str()),
            &col(|(_, e)| e.target.key.as_str()),
            &caps,
        ],
    )
    .await?;
    Ok(())
}

/// Attribute objects to a task (those it wrote before keep their first-seen order).
async fn write_attribution(
    c: &crate::Client,
    org: &OrgCode,
    task: TaskId,
    objects: &[&StoredObject],
) -> PResult<()> {
    if objects.is_empty() {
        return Ok(());
    }
    let tys: Vec<&str> = objects.iter().map(|s| s.object_type().as_str()).collect();
    let keys: Vec<&str> = objects.iter().map(|s| s.key.as_str()).collect();
    let stmt = c
        .prepare_cached(
            "INSERT INTO kat_attribution (org, ty, key, task) \
             SELECT $1, t.ty, t.key, $4 FROM unnest($2::text[], $3::text[]) AS t(ty, key) \
             ON CONFLICT DO NOTHING",
        )
        .await?;
    c.execute(&stmt, &[&org.as_str(), &tys, &keys, &task.0])
        .await?;
    Ok(())
}

/// Give the objects of a write the levels the algorithm set.
fn apply_levels(objects: &mut [StoredObject], set: &LevelSet) {
    if set.is_empty() {
        return;
    }
    for s in objects {
        if s.scan.is_none() {
            continue;
        }
        let r = ObjectRef {
            object_type: s.object_type(),
            key: s.key.clone(),
        };
        if let Some((level, from)) = set.get(&r) {
            s.scan = Some(ScanProfile {
                level: *level,
                declared: false,
            });
            s.inherited_from = from.clone();
        }
    }
}

impl PgStore {
    /// Upsert `objects`; with `replace`, the first requested object replaces its stored version
    /// (which must exist, else nothing is written) instead of merging into it.
    async fn write_objects(
        &self,
        org: &OrgCode,
        objects: Vec<Object>,
        by: Option<TaskId>,
        replace: bool,
    ) -> PResult<Option<Vec<StoredObject>>> {
        let batch = expand_batch(objects);
        if batch.objects.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let target = replace.then(|| batch.requested.first().copied()).flatten();
        let now = Timestamp::now();
        let tx = Tx::begin(self, org).await?;
        let c = tx.c()?;
        let (tys, keys): (Vec<&str>, Vec<&str>) = batch
            .objects
            .iter()
            .map(|(k, o)| (o.object_type().as_str(), k.as_str()))
            .unzip();
        let mut found = existing(c, org, &tys, &keys).await?;
        drop((tys, keys));
        if let Some((key, o)) = target.and_then(|i| batch.objects.get(i))
            && !found.contains_key(&(o.object_type(), key.clone()))
        {
            tx.rollback().await?;
            return Ok(None);
        }
        let mut stored = Vec::with_capacity(batch.objects.len());
        let mut changes = Changes::default();
        let mut edges = Vec::new();
        // Objects the task did not last write: the ones whose attribution may be new.
        let mut attribute = Vec::new();
        for (i, (key, o)) in batch.objects.into_iter().enumerate() {
            let ty = o.object_type();
            let old = found.remove(&(ty, key.clone()));
            if old.is_none() {
                let here = ObjectRef {
                    object_type: ty,
                    key: key.clone(),
                };
                for rel in levels::relations(&o) {
                    edges.push((here.clone(), rel.clone()));
                    changes.added.push(rel);
                }
                if ty.has_scan_level() {
                    changes.nodes.push(here);
                }
            }
            let last_writer = old.as_ref().and_then(|s| s.last_seen_by);
            attribute.push(by.is_some() && (old.is_none() || last_writer != by));
            stored.push(match old {
                Some(s) if target == Some(i) => replace_stored(s, o, by, now),
                old => merge_stored(old, org, key, o, by, now),
            });
        }
        write_objects(c, org, &stored).await?;
        write_edges(c, org, &edges).await?;
        if let Some(t) = by {
            let new: Vec<&StoredObject> = stored
                .iter()
                .zip(&attribute)
                .filter_map(|(s, a)| a.then_some(s))
                .collect();
            write_attribution(c, org, t, &new).await?;
        }
        let set = crate::levels::update(c, org, &changes).await?;
        apply_levels(&mut stored, &set);
        tx.commit().await?;
        in_request_order(&batch.requested, stored.into_iter().map(Some).collect())
            .map(Some)
            .map_err(|i| {
                PgStoreError::Worker(format!("upserted object number {i} went missing").into())
            })
    }
}

/// A query's SQL and parameters, built up.
struct Sql {
    text: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Sql {
    fn new(text: &str) -> Self {
        Sql {
            text: text.to_string(),
            params: Vec::new(),
        }
    }

    /// A parameter's placeholder.
    fn param(&mut self, v: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(v));
        format!("${}", self.params.len())
    }

    fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| &**p as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The part of a search the server checks: an ASCII search, lowercased (`None` for none or
/// another search, which Rust checks alone).
fn ascii_search(q: &ObjectQuery) -> Option<String> {
    q.search
        .as_ref()
        .filter(|s| s.is_ascii())
        .map(|s| s.to_ascii_lowercase())
}

/// Whether the server answers `q` exactly, ordered and paged: ordered by key and no search.
fn server_pages(q: &ObjectQuery) -> bool {
    q.search.is_none() && q.ordering.as_ref().is_none_or(|o| o.field == "id")
}

/// `FROM … WHERE …` of a query: everything it pushes down.
fn where_clause(sql: &mut Sql, q: &ObjectQuery) {
    let org = sql.param(q.org.as_str().to_string());
    let ty = sql.param(q.object_type.as_str().to_string());
    sql.push(&format!(
        " FROM kat_objects WHERE org = {org} AND ty = {ty}"
    ));
    if let Some(keys) = &q.keys {
        let keys: Vec<String> = keys.iter().map(|k| k.as_str().to_string()).collect();
        let p = sql.param(keys);
        sql.push(&format!(" AND key = ANY({p})"));
    }
    if let Some(min) = q.min_scan_level {
        let p = sql.param(i16::from(min.get()));
        sql.push(&format!(" AND scan_level >= {p}"));
    }
    for (field, values) in &q.filters {
        match field.as_str() {
            "scan_level" | "declared" => {
                let p = sql.param(values.clone());
                sql.push(&format!(
                    " AND coalesce({field}::text, 'null') = ANY({p}::text[])"
                ));
            }
            f => {
                let wanted: Vec<Value> = values
                    .iter()
                    .map(|v| {
                        let mut m = Map::new();
                        m.insert(f.to_string(), Value::String(v.clone()));
                        Value::Object(m)
                    })
                    .collect();
                let p = sql.param(wanted);
                sql.push(&format!(" AND fields @> ANY({p}::jsonb[])"));
            }
        }
    }
    if let Some(s) = ascii_search(q) {
        // The two characters outside ASCII whose lowercase (in Rust) holds ASCII letters: the
        // Kelvin sign and the capital I with a dot. `lower` in the "C" collation is ASCII's.
        let p = sql.param(s);
        sql.push(&format!(
            " AND strpos(lower(translate(key, 'K\u{130}', 'ki')), {p}) > 0"
        ));
    }
}

/// `ORDER BY`, `LIMIT` and `OFFSET` of a query the server pages.
fn order_and_page(sql: &mut Sql, q: &ObjectQuery) {
    let descending = q.ordering.as_ref().is_some_and(|o| o.descending);
    sql.push(if descending {
        " ORDER BY key DESC"
    } else {
        " ORDER BY key"
    });
    if q.limit > 0 {
        let p = sql.param(i64::try_from(q.limit).unwrap_or(i64::MAX));
        sql.push(&format!(" LIMIT {p}"));
    }
    if q.offset > 0 {
        let p = sql.param(i64::try_from(q.offset).unwrap_or(i64::MAX));
        sql.push(&format!(" OFFSET {p}"));
    }
}

fn page<T>(items: Vec<T>, offset: usize, limit: usize) -> Vec<T> {
    let limit = if limit == 0 { usize::MAX } else { limit };
    items.into_iter().skip(offset).take(limit).collect()
}

impl PgStore {
    async fn query_objects(&self, q: &ObjectQuery) -> PResult<Page<StoredObject>> {
        let c = self.conn().await?;
        if server_pages(q) {
            let mut sql = Sql::new(&format!("SELECT {COLUMNS}, count(*) OVER ()"));
            where_clause(&mut sql, q);
            order_and_page(&mut sql, q);
            let rows = c
                .query(&c.prepare_cached(&sql.text).await?, &sql.refs())
                .await?;
            let mut count = match rows.first() {
                Some(r) => u64::try_from(r.try_get::<_, i64>(6)?).unwrap_or(0),
                None => 0,
            };
            if rows.is_empty() && q.offset > 0 {
                // Past the end: the window counted nothing.
                let mut sql = Sql::new("SELECT count(*)");
                where_clause(&mut sql, q);
                let n: i64 = c.query_one(&sql.text, &sql.refs()).await?.try_get(0)?;
                count = u64::try_from(n).unwrap_or(0);
            }
            let items = rows
                .iter()
                .map(|r| decode(&q.org, r, 0))
                .collect::<PResult<Vec<_>>>()?;
            return Ok(Page { count, items });
        }
        let mut sql = Sql::new(&format!("SELECT {COLUMNS}"));
        where_clause(&mut sql, q);
        let rows = c
            .query(&c.prepare_cached(&sql.text).await?, &sql.refs())
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            let s = decode(&q.org, r, 0)?;
            if q.matches(&s) {
                items.push(s);
            }
        }
        drop(rows);
        q.sort(&mut items);
        Ok(Page {
            count: items.len() as u64,
            items: page(items, q.offset, q.limit),
        })
    }

    async fn delete_objects(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        keys: &[NaturalKey],
    ) -> PResult<u64> {
        let tx = Tx::begin(self, org).await?;
        let c = tx.c()?;
        let keys: Vec<&str> = keys.iter().map(NaturalKey::as_str).collect();
        let gone = c
            .query(
                "DELETE FROM kat_objects WHERE org = $1 AND ty = $2 AND key = ANY($3) RETURNING key",
                &[&org.as_str(), &ty.as_str(), &keys],
            )
            .await?;
        if gone.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        let gone: Vec<String> = gone
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        let mut changes = Changes::default();
        for row in c
            .query(
                "DELETE FROM kat_edges WHERE org = $1 AND rec_ty = $2 AND rec_key = ANY($3) \
                 RETURNING src_ty, src_key, dst_ty, dst_key, cap",
                &[&org.as_str(), &ty.as_str(), &gone],
            )
            .await?
        {
            changes.removed.push(Relation {
                source: stored_ref(row.try_get(0)?, row.try_get(1)?)?,
                target: stored_ref(row.try_get(2)?, row.try_get(3)?)?,
                cap: crate::levels::stored_level(row.try_get(4)?)?,
            });
        }
        c.execute(
            "DELETE FROM kat_attribution WHERE org = $1 AND ty = $2 AND key = ANY($3)",
            &[&org.as_str(), &ty.as_str(), &gone],
        )
        .await?;
        let n = gone.len() as u64;
        if ty.has_scan_level() {
            changes.nodes = gone
                .into_iter()
                .map(|k| ObjectRef {
                    object_type: ty,
                    key: stored_key(k),
                })
                .collect();
        }
        crate::levels::update(c, org, &changes).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn set_profile(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        key: &NaturalKey,
        profile: ScanProfile,
    ) -> PResult<Option<StoredObject>> {
        let p = if profile.declared {
            profile
        } else {
            ScanProfile::default()
        };
        let tx = Tx::begin(self, org).await?;
        let c = tx.c()?;
        let n = c
            .execute(
                "UPDATE kat_objects SET scan_level = $4, declared = $5, inh_ty = NULL, \
                 inh_key = NULL WHERE org = $1 AND ty = $2 AND key = $3",
                &[
                    &org.as_str(),
                    &ty.as_str(),
                    &key.as_str(),
                    &level_column(p.level),
                    &p.declared,
                ],
            )
            .await?;
        if n == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let changes = Changes {
            nodes: vec![ObjectRef {
                object_type: ty,
                key: key.clone(),
            }],
            ..Changes::default()
        };
        crate::levels::update(c, org, &changes).await?;
        let row = c
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM kat_objects WHERE org = $1 AND ty = $2 AND key = $3"
                ),
                &[&org.as_str(), &ty.as_str(), &key.as_str()],
            )
            .await?;
        let s = row.map(|r| decode(org, &r, 0)).transpose()?;
        tx.commit().await?;
        Ok(s)
    }

    /// [`ObjectStore::count_matching`] for a field of the type's own: one statement for every
    /// value, each count stopping at `at_most`.
    async fn count_own_field(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        field: &str,
        values: &[String],
        at_most: usize,
    ) -> PResult<Vec<usize>> {
        let c = self.conn().await?;
        let wanted: Vec<Value> = values
            .iter()
            .map(|v| {
                let mut m = Map::new();
                m.insert(field.to_string(), Value::String(v.clone()));
                Value::Object(m)
            })
            .collect();
        let limit = i64::try_from(at_most).unwrap_or(i64::MAX);
        let rows = c
            .query(
                "SELECT (SELECT count(*) FROM (SELECT 1 FROM kat_objects \
                     WHERE org = $1 AND ty = $2 AND fields @> u.w LIMIT $4) AS m) \
                 FROM unnest($3::jsonb[]) WITH ORDINALITY AS u(w, i) ORDER BY u.i",
                &[&org.as_str(), &ty.as_str(), &wanted, &limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get(0)?;
                Ok(usize::try_from(n).unwrap_or(0).min(at_most))
            })
            .collect()
    }

    /// [`ObjectStore::finding_rules`]: the rules' part of each finding read out of its JSONB,
    /// never decoding a finding whole.
    async fn finding_rules_of(
        &self,
        org: &OrgCode,
        finding_types: &[String],
    ) -> PResult<Vec<FindingRules>> {
        let c = self.conn().await?;
        let wanted: Vec<Value> = finding_types
            .iter()
            .map(|v| {
                let mut m = Map::new();
                m.insert("finding_type".to_string(), Value::String(v.clone()));
                Value::Object(m)
            })
            .collect();
        let rows = c
            .query(
                "SELECT key, body #> '{object,Finding,source_rules}', \
                     body #> '{object,Finding,rule_only}' \
                 FROM kat_objects WHERE org = $1 AND ty = $2 AND fields @> ANY($3::jsonb[]) \
                 ORDER BY key",
                &[&org.as_str(), &ObjectType::Finding.as_str(), &wanted],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let rules: Option<Value> = r.try_get(1)?;
                let only: Option<Value> = r.try_get(2)?;
                let source_rules = match rules {
                    None | Some(Value::Null) => Vec::new(),
                    Some(v) => {
                        serde_json::from_value(v).map_err(|e| PgStoreError::decode("finding", e))?
                    }
                };
                let rule_only = match only {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => b,
                    Some(v) => {
                        return Err(PgStoreError::decode("finding", format!("rule_only {v}")));
                    }
                };
                Ok(FindingRules {
                    key: stored_key(r.try_get(0)?),
                    source_rules,
                    rule_only,
                })
            })
            .collect()
    }

    async fn recompute(&self, org: Option<&OrgCode>) -> PResult<u64> {
        let orgs: Vec<OrgCode> = match org {
            Some(o) => vec![o.clone()],
            None => {
                let c = self.conn().await?;
                let rows = c
                    .query("SELECT DISTINCT org FROM kat_objects ORDER BY org", &[])
                    .await?;
                rows.iter()
                    .map(|r| {
                        let s: &str = r.try_get(0)?;
                        OrgCode::new(s)
                            .map_err(|e| PgStoreError::decode("organization", e.to_string()))
                    })
                    .collect::<PResult<_>>()?
            }
        };
        let mut changed = 0;
        for org in &orgs {
            let tx = Tx::begin(self, org).await?;
            changed += crate::levels::recompute(tx.c()?, org).await?;
            tx.commit().await?;
        }
        Ok(changed)
    }
}

#[async_trait]
impl ObjectStore for PgStore {
    async fn upsert(
        &self,
        org: &OrgCode,
        objects: Vec<Object>,
        by: Option<TaskId>,
    ) -> Result<Vec<StoredObject>> {
        self.write_objects(org, objects, by, false)
            .await?
            .ok_or_else(|| PgStoreError::Worker("an upsert found no target".into()).into())
    }

    async fn replace(
        &self,
        org: &OrgCode,
        object: Object,
        by: Option<TaskId>,
    ) -> Result<StoredObject> {
        let key = object.natural_key();
        self.write_objects(org, vec![object], by, true)
            .await?
            .ok_or_else(|| not_found(&key))?
            .pop()
            .ok_or_else(|| PgStoreError::Worker("a replace returned nothing".into()).into())
    }

    async fn get(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        key: &NaturalKey,
    ) -> Result<Option<StoredObject>> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM kat_objects WHERE org = $1 AND ty = $2 AND key = $3"
                ),
                &[&org.as_str(), &ty.as_str(), &key.as_str()],
            )
            .await
            .map_err(PgStoreError::from)?;
        Ok(row.map(|r| decode(org, &r, 0)).transpose()?)
    }

    async fn query_valid(&self, query: &ObjectQuery) -> Result<Page<StoredObject>> {
        Ok(self.query_objects(query).await?)
    }

    async fn query_keys_valid(&self, q: &ObjectQuery) -> Result<Vec<NaturalKey>> {
        if !server_pages(q) {
            return Ok(self
                .query_objects(q)
                .await?
                .items
                .into_iter()
                .map(|o| o.key)
                .collect());
        }
        let c = self.conn().await?;
        let mut sql = Sql::new("SELECT key");
        where_clause(&mut sql, q);
        order_and_page(&mut sql, q);
        let rows = c
            .query(&sql.text, &sql.refs())
            .await
            .map_err(PgStoreError::from)?;
        rows.iter()
            .map(|r| Ok(stored_key(r.try_get(0).map_err(PgStoreError::from)?)))
            .collect()
    }

    async fn count_matching(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        field: &str,
        values: &[String],
        at_most: usize,
    ) -> Result<Vec<usize>> {
        if ty.fields().contains(&field) && !LEVEL_FILTERS.contains(&field) {
            return Ok(self
                .count_own_field(org, ty, field, values, at_most)
                .await?);
        }
        // The level filters, and the errors of an unknown field: as the trait's default.
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            let mut q = ObjectQuery::new(org.clone(), ty);
            q.filters.push((field.to_string(), vec![v.clone()]));
            q.limit = at_most.max(1);
            out.push(self.query_keys(&q).await?.len().min(at_most));
        }
        Ok(out)
    }

    async fn finding_rules(
        &self,
        org: &OrgCode,
        finding_types: &[String],
    ) -> Result<Vec<FindingRules>> {
        if finding_types.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.finding_rules_of(org, finding_types).await?)
    }

    async fn delete(&self, org: &OrgCode, ty: ObjectType, keys: &[NaturalKey]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        Ok(self.delete_objects(org, ty, keys).await?)
    }

    async fn set_scan_profile_valid(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        key: &NaturalKey,
        profile: ScanProfile,
    ) -> Result<StoredObject> {
        self.set_profile(org, ty, key, profile)
            .await?
            .ok_or_else(|| not_found(key))
    }

    async fn tasks_of(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        key: &NaturalKey,
    ) -> Result<Vec<TaskId>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT task FROM kat_attribution WHERE org = $1 AND ty = $2 AND key = $3 \
                 ORDER BY seq",
                &[&org.as_str(), &ty.as_str(), &key.as_str()],
            )
            .await
            .map_err(PgStoreError::from)?;
        rows.iter()
            .map(|r| Ok(TaskId(r.try_get(0).map_err(PgStoreError::from)?)))
            .collect()
    }

    async fn objects_of(&self, org: &OrgCode, task: TaskId) -> Result<Vec<ObjectRef>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT ty, key FROM kat_attribution WHERE org = $1 AND task = $2",
                &[&org.as_str(), &task.0],
            )
            .await
            .map_err(PgStoreError::from)?;
        let mut out = rows
            .iter()
            .map(|r| {
                stored_ref(
                    r.try_get(0).map_err(PgStoreError::from)?,
                    r.try_get(1).map_err(PgStoreError::from)?,
                )
            })
            .collect::<PResult<Vec<_>>>()?;
        out.sort();
        Ok(out)
    }

    async fn recompute_levels(&self, org: Option<&OrgCode>) -> Result<u64> {
        Ok(self.recompute(org).await?)
    }

    async fn levels_need_recompute(&self) -> Result<bool> {
        // Every write updates the levels in its own transaction: never out of date.
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_per_organization() {
        let a = OrgCode::new("acme").expect("org");
        let b = OrgCode::new("acme2").expect("org");
        assert_eq!(org_lock(&a), org_lock(&a.clone()));
        assert_ne!(org_lock(&a), org_lock(&b));
    }
}
