//! The seven traits of [`TaskStore`](kat_core::store::TaskStore) on PostgreSQL: [`TaskQueue`],
//! [`ScheduleStore`], [`OrgStore`], [`PluginCatalog`], [`RevocationList`], [`RuleCatalog`] and
//! [`ReplicaRegistry`] (tables in `migrations/0003_tasks.sql`).
//!
//! Records are kat-core's types as JSON, beside the columns queries filter and order on. What
//! several replicas may do at once is made safe by the database:
//!
//! - [`TaskQueue::transition_task`] reads the task `FOR UPDATE`, applies the patch and writes it
//!   back in one transaction: of concurrent transitions from the same state, one wins and the
//!   others see the new state (a conflict).
//! - [`TaskQueue::claim_tasks`] locks the oldest queued tasks `FOR UPDATE SKIP LOCKED` (a partial
//!   index of the queued tasks), claims them and writes them back in one transaction: concurrent
//!   claimers, in any process, take different tasks without waiting for each other.
//!   [`TaskQueue::renew_lease`] and [`TaskQueue::finish_leased`] check the lease on the locked row.
//!   [`TaskQueue::recover_expired`] locks the running tasks whose lease ended (the lease is kept
//!   in columns too, filtered among the running tasks by the state index) `FOR UPDATE SKIP LOCKED`,
//!   recovers them and revokes their tokens in one transaction: each is recovered once.
//! - [`TaskQueue::claim_targets`] is one `INSERT ... ON CONFLICT DO UPDATE ... WHERE claimed_at <
//!   since RETURNING`: a target is handed out by one call only, whichever replica makes it. Keys are
//!   sent sorted, so concurrent calls lock their rows in the same order (no deadlocks).
//! - Schedule and object-set numbers come from a counter row per kind (`kat_counters`), updated
//!   under its row lock in the transaction that stores the record: unique, increasing and never
//!   reused, also when a record arrives with a number of its own (the counter moves past it).
//! - [`ScheduleStore::due_schedules`] reads a partial index of the enabled schedules by
//!   `next_run_at`: its cost is what is due.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use async_trait::async_trait;
use kat_core::clock::Timestamp;
use kat_core::object::{NaturalKey, ObjectType};
use kat_core::org::{OrgCode, Organization};
use kat_core::plugin::PluginRecord;
use kat_core::replica::ReplicaInfo;
use kat_core::rules::RuleCatalog;
use kat_core::schedule::{ObjectSet, ObjectSetId, Schedule, ScheduleId};
use kat_core::store::{
    OrgStore, Page, PluginCatalog, ReplicaRegistry, RevocationList, ScheduleStore, TaskQuery,
    TaskQueue, wrong_state,
};
use kat_core::task::{Lease, ObjectRef, Task, TaskId, TaskPatch, TaskState};
use kat_core::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::{PResult, PgStore, PgStoreError};

fn to_json<T: Serialize>(what: &'static str, v: &T) -> PResult<Value> {
    serde_json::to_value(v).map_err(|e| PgStoreError::encode(what, e))
}

fn from_json<T: DeserializeOwned>(what: &'static str, v: Value) -> PResult<T> {
    serde_json::from_value(v).map_err(|e| PgStoreError::decode(what, e))
}

/// The first column of every row, decoded from JSON.
fn records<T: DeserializeOwned>(
    what: &'static str,
    rows: Vec<tokio_postgres::Row>,
) -> PResult<Vec<T>> {
    rows.into_iter()
        .map(|r| from_json(what, r.try_get(0)?))
        .collect()
}

/// A count or position as the database's `bigint`.
fn db_int(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A page size as `LIMIT`'s parameter: `NULL` (no limit) for 0.
fn db_limit(limit: usize) -> Option<i64> {
    (limit > 0).then(|| db_int(limit))
}

/// A record's integer id as the database's `bigint`.
fn db_number(kind: &'static str, n: u64) -> Result<i64> {
    i64::try_from(n)
        .map_err(|_| Error::invalid("number", format!("{kind} number {n} is too large")))
}

/// The integer id a record keeps or gets ([`ScheduleStore::put_schedule`]): `wanted` when set (the
/// counter moves past it), else the one stored for `id` in `table`, else the counter's next.
async fn number_for(
    tx: &tokio_postgres::Transaction<'_>,
    counter: &str,
    table: &str,
    id: Uuid,
    wanted: i64,
) -> PResult<i64> {
    if wanted > 0 {
        tx.execute(
            "UPDATE kat_counters SET last = $2 WHERE name = $1 AND last < $2",
            &[&counter, &wanted],
        )
        .await?;
        return Ok(wanted);
    }
    let old: Option<i64> = tx
        .query_opt(
            &format!("SELECT number FROM {table} WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    if let Some(n) = old.filter(|n| *n > 0) {
        return Ok(n);
    }
    Ok(tx
        .query_one(
            "UPDATE kat_counters SET last = last + 1 WHERE name = $1 RETURNING last",
            &[&counter],
        )
        .await?
        .try_get(0)?)
}

/// What a change of one task found.
enum Changed {
    /// Changed, as now stored.
    Done(Box<Task>),
    /// There is no such task.
    Missing,
    /// The change refused the task as it is (a wrong state, a lease not held): nothing written.
    Refused(Error),
}

/// A task's lease columns.
fn lease_columns(t: &Task) -> (Option<&str>, Option<i64>) {
    match &t.lease {
        Some(l) => (Some(l.worker.as_str()), Some(l.until.as_millis())),
        None => (None, None),
    }
}

/// Write a changed task back (its state, lease and record).
async fn update_task(tx: &tokio_postgres::Transaction<'_>, t: &Task) -> PResult<()> {
    let (worker, until) = lease_columns(t);
    tx.execute(
        "UPDATE tasks SET state = $2, lease_worker = $3, lease_until = $4, record = $5 \
         WHERE id = $1",
        &[
            &t.id.0,
            &t.state.as_str(),
            &worker,
            &until,
            &to_json("task", t)?,
        ],
    )
    .await?;
    Ok(())
}

/// Write changed tasks back in one statement.
async fn update_tasks(tx: &tokio_postgres::Transaction<'_>, tasks: &[Task]) -> PResult<()> {
    if tasks.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(tasks.len());
    let mut states = Vec::with_capacity(tasks.len());
    let mut workers = Vec::with_capacity(tasks.len());
    let mut untils = Vec::with_capacity(tasks.len());
    let mut recs = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (worker, until) = lease_columns(t);
        ids.push(t.id.0);
        states.push(t.state.as_str());
        workers.push(worker);
        untils.push(until);
        recs.push(to_json("task", t)?);
    }
    tx.execute(
        "UPDATE tasks SET state = u.state, lease_worker = u.worker, lease_until = u.until, \
            record = u.record \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::json[]) \
            AS u(id, state, worker, until, record) \
         WHERE tasks.id = u.id",
        &[&ids, &states, &workers, &untils, &recs],
    )
    .await?;
    Ok(())
}

impl PgStore {
    async fn create_tasks_db(&self, tasks: &[Task]) -> PResult<()> {
        let mut ids = Vec::with_capacity(tasks.len());
        let mut orgs = Vec::with_capacity(tasks.len());
        let mut states = Vec::with_capacity(tasks.len());
        let mut plugins = Vec::with_capacity(tasks.len());
        let mut schedules = Vec::with_capacity(tasks.len());
        let mut created = Vec::with_capacity(tasks.len());
        let mut workers = Vec::with_capacity(tasks.len());
        let mut untils = Vec::with_capacity(tasks.len());
        let mut recs = Vec::with_capacity(tasks.len());
        for t in tasks {
            let (worker, until) = lease_columns(t);
            workers.push(worker);
            untils.push(until);
            ids.push(t.id.0);
            orgs.push(t.org.as_str());
            states.push(t.state.as_str());
            plugins.push(t.plugin_id.as_str());
            schedules.push(t.schedule.map(|s| s.0));
            created.push(t.created_at.as_millis());
            recs.push(to_json("task", t)?);
        }
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO tasks (id, org, state, plugin_id, schedule, created_at, record) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], \
                                  $6::bigint[], $7::json[])",
            &[&ids, &orgs, &states, &plugins, &schedules, &created, &recs],
        )
        .await?;
        Ok(())
    }

    /// Read a task under its row lock, let `change` check and change it, and write it back, in
    /// one transaction: concurrent changes of one task take turns, each seeing the last one's
    /// result.
    async fn change_task(
        &self,
        id: TaskId,
        change: impl FnOnce(&mut Task) -> Result<()> + Send,
    ) -> PResult<Changed> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "SELECT record FROM tasks WHERE id = $1 FOR UPDATE",
                &[&id.0],
            )
            .await?
        else {
            tx.rollback().await?;
            return Ok(Changed::Missing);
        };
        let mut t: Task = from_json("task", row.try_get(0)?)?;
        if let Err(e) = change(&mut t) {
            // Release the row now: a dropped transaction rolls back only when its connection
            // gets to it, and until then a claimer would skip the row as taken.
            tx.rollback().await?;
            return Ok(Changed::Refused(e));
        }
        update_task(&tx, &t).await?;
        tx.commit().await?;
        Ok(Changed::Done(Box::new(t)))
    }

    /// [`PgStore::change_task`] at the trait boundary.
    async fn change(
        &self,
        id: TaskId,
        change: impl FnOnce(&mut Task) -> Result<()> + Send,
    ) -> Result<Task> {
        match self.change_task(id, change).await? {
            Changed::Done(t) => Ok(*t),
            Changed::Missing => Err(Error::not_found("task", id.to_string())),
            Changed::Refused(e) => Err(e),
        }
    }

    async fn claim_tasks_db(
        &self,
        worker: &str,
        limit: usize,
        now: Timestamp,
        until: Timestamp,
    ) -> PResult<Vec<Task>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // Rows another claimer holds are skipped, not waited for: concurrent claimers take
        // different tasks.
        let rows = tx
            .query(
                "SELECT record FROM tasks WHERE state = 'queued' ORDER BY created_at, id \
                 LIMIT $1 FOR UPDATE SKIP LOCKED",
                &[&db_int(limit)],
            )
            .await?;
        let mut tasks: Vec<Task> = records("task", rows)?;
        for t in &mut tasks {
            t.claim(worker, now, until);
        }
        update_tasks(&tx, &tasks).await?;
        tx.commit().await?;
        if !tasks.is_empty() {
            tracing::debug!(worker, tasks = tasks.len(), "claimed tasks");
        }
        Ok(tasks)
    }

    async fn recover_expired_db(
        &self,
        now: Timestamp,
        requeue: &[String],
        owner: Option<&str>,
        limit: usize,
    ) -> PResult<Vec<Task>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // Locked rows are another recoverer's (or a renewal's): skipped, so that each task is
        // recovered once; a row that changed meanwhile is checked again as it is now.
        let rows = tx
            .query(
                "SELECT record FROM tasks WHERE state = 'running' \
                   AND (lease_until IS NULL OR lease_until < $1 OR lease_worker = $2) \
                 ORDER BY created_at, id LIMIT $3 FOR UPDATE SKIP LOCKED",
                &[&now.as_millis(), &owner, &db_int(limit)],
            )
            .await?;
        let found: Vec<Task> = records("task", rows)?;
        let mut tasks = Vec::with_capacity(found.len());
        let mut revoke = BTreeMap::new();
        for mut t in found {
            let Some(why) = t.lease_loss(now, owner) else {
                continue;
            };
            if let Some(token) = t.recover(now, requeue, why) {
                revoke.insert(token.jti, token.exp);
            }
            tasks.push(t);
        }
        update_tasks(&tx, &tasks).await?;
        if !revoke.is_empty() {
            let (jtis, exps): (Vec<String>, Vec<i64>) = revoke.into_iter().unzip();
            tx.execute(
                "INSERT INTO revoked_tokens (jti, exp) SELECT * FROM unnest($1::text[], $2::bigint[]) \
                 ON CONFLICT (jti) DO UPDATE SET exp = EXCLUDED.exp",
                &[&jtis, &exps],
            )
            .await?;
        }
        tx.commit().await?;
        if !tasks.is_empty() {
            tracing::info!(
                tasks = tasks.len(),
                "recovered running tasks whose worker is gone"
            );
        }
        Ok(tasks)
    }

    async fn list_tasks_db(&self, q: &TaskQuery) -> PResult<Page<Task>> {
        let org = q.org.as_ref().map(OrgCode::as_str);
        let states: Option<Vec<&str>> = q
            .states
            .as_ref()
            .map(|s| s.iter().map(|s| s.as_str()).collect());
        let schedule = q.schedule.map(|s| s.0);
        let filter = "($1::text IS NULL OR org = $1) AND ($2::text[] IS NULL OR state = ANY($2)) \
             AND ($3::text IS NULL OR plugin_id = $3) AND ($4::uuid IS NULL OR schedule = $4)";
        let c = self.conn().await?;
        let count: i64 = c
            .query_one(
                &format!("SELECT count(*) FROM tasks WHERE {filter}"),
                &[&org, &states, &q.plugin_id, &schedule],
            )
            .await?
            .try_get(0)?;
        let rows = c
            .query(
                &format!(
                    "SELECT record FROM tasks WHERE {filter} \
                     ORDER BY created_at DESC, id DESC LIMIT $5 OFFSET $6"
                ),
                &[
                    &org,
                    &states,
                    &q.plugin_id,
                    &schedule,
                    &db_limit(q.limit),
                    &db_int(q.offset),
                ],
            )
            .await?;
        Ok(Page {
            count: u64::try_from(count).unwrap_or(0),
            items: records("task", rows)?,
        })
    }

    async fn claim_db(
        &self,
        schedule: ScheduleId,
        since: Timestamp,
        now: Timestamp,
        targets: Vec<NaturalKey>,
    ) -> PResult<Vec<NaturalKey>> {
        // Each key once, in the order of the call.
        let mut seen = HashSet::with_capacity(targets.len());
        let targets: Vec<NaturalKey> = targets
            .into_iter()
            .filter(|k| seen.insert(k.clone()))
            .collect();
        if targets.is_empty() {
            return Ok(targets);
        }
        let mut sorted: Vec<&str> = targets.iter().map(NaturalKey::as_str).collect();
        sorted.sort_unstable();
        let c = self.conn().await?;
        let rows = c
            .query(
                "INSERT INTO schedule_claims AS c (schedule, key, claimed_at) \
                 SELECT $1, k, $3 FROM unnest($4::text[]) WITH ORDINALITY AS u(k, n) ORDER BY n \
                 ON CONFLICT (schedule, key) DO UPDATE SET claimed_at = EXCLUDED.claimed_at \
                 WHERE c.claimed_at < $2 \
                 RETURNING c.key",
                &[&schedule.0, &since.as_millis(), &now.as_millis(), &sorted],
            )
            .await?;
        let mut won = HashSet::with_capacity(rows.len());
        for r in &rows {
            won.insert(r.try_get::<_, &str>(0)?);
        }
        Ok(targets
            .iter()
            .filter(|k| won.contains(k.as_str()))
            .cloned()
            .collect())
    }

    async fn put_schedule_db(&self, mut s: Schedule, wanted: i64) -> PResult<Schedule> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = number_for(&tx, "schedule", "schedules", s.id.0, wanted).await?;
        s.number = u64::try_from(n).map_err(|e| PgStoreError::decode("schedule number", e))?;
        tx.execute(
            "INSERT INTO schedules (id, number, org, enabled, next_run_at, record) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET number = EXCLUDED.number, org = EXCLUDED.org, \
                enabled = EXCLUDED.enabled, next_run_at = EXCLUDED.next_run_at, \
                record = EXCLUDED.record",
            &[
                &s.id.0,
                &n,
                &s.org.as_ref().map(OrgCode::as_str),
                &s.enabled,
                &s.next_run_at.as_millis(),
                &to_json("schedule", &s)?,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(s)
    }

    async fn put_object_set_db(&self, mut set: ObjectSet, wanted: i64) -> PResult<ObjectSet> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = number_for(&tx, "object_set", "object_sets", set.id.0, wanted).await?;
        set.number = u64::try_from(n).map_err(|e| PgStoreError::decode("object set number", e))?;
        tx.execute(
            "INSERT INTO object_sets (id, number, org, record) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET number = EXCLUDED.number, org = EXCLUDED.org, \
                record = EXCLUDED.record",
            &[
                &set.id.0,
                &n,
                &set.org.as_str(),
                &to_json("object set", &set)?,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(set)
    }

    /// The records of `sql`'s rows (their first column).
    async fn fetch<T: DeserializeOwned>(
        &self,
        what: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> PResult<Vec<T>> {
        let c = self.conn().await?;
        records(what, c.query(sql, params).await?)
    }

    /// The record of `sql`'s row, if any.
    async fn fetch_one<T: DeserializeOwned>(
        &self,
        what: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> PResult<Option<T>> {
        let c = self.conn().await?;
        c.query_opt(sql, params)
            .await?
            .map(|r| from_json(what, r.try_get(0)?))
            .transpose()
    }

    /// How many rows `sql` changed.
    async fn exec(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> PResult<u64> {
        let c = self.conn().await?;
        Ok(c.execute(sql, params).await?)
    }

    /// `(name, enabled)` rows as a map.
    async fn flags(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> PResult<BTreeMap<String, bool>> {
        let c = self.conn().await?;
        let rows = c.query(sql, params).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn put_plugins_db(&self, records: Vec<PluginRecord>) -> PResult<()> {
        // A later record of the same plugin replaces an earlier one, as separate writes would.
        let mut by_id = BTreeMap::new();
        for r in records {
            by_id.insert(r.def.plugin_id.clone(), r);
        }
        if by_id.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(by_id.len());
        let mut recs = Vec::with_capacity(by_id.len());
        for (id, r) in &by_id {
            ids.push(id.as_str());
            recs.push(to_json("plugin record", r)?);
        }
        self.exec(
            "INSERT INTO plugins (plugin_id, record) \
             SELECT * FROM unnest($1::text[], $2::jsonb[]) \
             ON CONFLICT (plugin_id) DO UPDATE SET record = EXCLUDED.record",
            &[&ids, &recs],
        )
        .await?;
        Ok(())
    }

    async fn mark_processed_db(
        &self,
        org: &OrgCode,
        plugin_id: &str,
        objects: &[ObjectRef],
    ) -> PResult<()> {
        let types: Vec<&str> = objects.iter().map(|o| o.object_type.as_str()).collect();
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        self.exec(
            "INSERT INTO processed_objects (org, plugin_id, object_type, key) \
             SELECT $1, $2, t, k FROM unnest($3::text[], $4::text[]) AS u(t, k) \
             ON CONFLICT DO NOTHING",
            &[&org.as_str(), &plugin_id, &types, &keys],
        )
        .await?;
        Ok(())
    }

    async fn processed_db(
        &self,
        org: &OrgCode,
        plugin_id: &str,
        among: Option<&[ObjectRef]>,
    ) -> PResult<BTreeSet<ObjectRef>> {
        let c = self.conn().await?;
        let rows = match among {
            None => {
                c.query(
                    "SELECT object_type, key FROM processed_objects \
                     WHERE org = $1 AND plugin_id = $2",
                    &[&org.as_str(), &plugin_id],
                )
                .await?
            }
            Some(refs) => {
                let types: Vec<&str> = refs.iter().map(|o| o.object_type.as_str()).collect();
                let keys: Vec<&str> = refs.iter().map(|o| o.key.as_str()).collect();
                c.query(
                    "SELECT p.object_type, p.key FROM processed_objects p \
                     JOIN (SELECT DISTINCT t, k FROM unnest($3::text[], $4::text[]) AS u(t, k)) a \
                       ON p.object_type = a.t AND p.key = a.k \
                     WHERE p.org = $1 AND p.plugin_id = $2",
                    &[&org.as_str(), &plugin_id, &types, &keys],
                )
                .await?
            }
        };
        let mut out = BTreeSet::new();
        for r in rows {
            let ty: &str = r.try_get(0)?;
            let key: String = r.try_get(1)?;
            out.insert(ObjectRef {
                object_type: ty
                    .parse::<ObjectType>()
                    .map_err(|e| PgStoreError::decode("processed object type", e))?,
                key: from_json("processed object key", Value::String(key))?,
            });
        }
        Ok(out)
    }

    async fn clear_rule_state_db(&self, org: &OrgCode) -> PResult<()> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "DELETE FROM rule_overrides WHERE org = $1",
            &[&org.as_str()],
        )
        .await?;
        tx.execute(
            "DELETE FROM processed_objects WHERE org = $1",
            &[&org.as_str()],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Set (`Some`) or clear (`None`) an override row of `table` (`plugin_overrides` or
/// `rule_overrides`, whose name column is `column`).
async fn set_override(
    c: &impl GenericClient,
    table: &str,
    column: &str,
    org: &OrgCode,
    name: &str,
    enabled: Option<bool>,
) -> PResult<()> {
    match enabled {
        Some(e) => {
            c.execute(
                &format!(
                    "INSERT INTO {table} (org, {column}, enabled) VALUES ($1, $2, $3) \
                     ON CONFLICT (org, {column}) DO UPDATE SET enabled = EXCLUDED.enabled"
                ),
                &[&org.as_str(), &name, &e],
            )
            .await?;
        }
        None => {
            c.execute(
                &format!("DELETE FROM {table} WHERE org = $1 AND {column} = $2"),
                &[&org.as_str(), &name],
            )
            .await?;
        }
    }
    Ok(())
}

#[async_trait]
impl TaskQueue for PgStore {
    async fn create_tasks(&self, tasks: Vec<Task>) -> Result<()> {
        if tasks.is_empty() {
            return Ok(());
        }
        match self.create_tasks_db(&tasks).await {
            Ok(()) => Ok(()),
            Err(e) if e.sqlstate() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                Err(Error::Conflict(format!(
                    "a task of the batch exists (nothing was stored): {e}"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<Task>> {
        Ok(self
            .fetch_one("task", "SELECT record FROM tasks WHERE id = $1", &[&id.0])
            .await?)
    }

    async fn transition_task(
        &self,
        id: TaskId,
        from: &[TaskState],
        patch: TaskPatch,
    ) -> Result<Task> {
        self.change(id, |t| {
            if !from.contains(&t.state) {
                return Err(wrong_state(id, t.state, from));
            }
            patch.apply(t);
            Ok(())
        })
        .await
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<Page<Task>> {
        Ok(self.list_tasks_db(query).await?)
    }

    async fn delete_org_tasks(&self, org: &OrgCode) -> Result<u64> {
        let n = self
            .exec("DELETE FROM tasks WHERE org = $1", &[&org.as_str()])
            .await?;
        tracing::debug!(org = %org, tasks = n, "deleted an organization's tasks");
        Ok(n)
    }

    async fn claim_targets(
        &self,
        schedule: ScheduleId,
        since: Timestamp,
        now: Timestamp,
        targets: Vec<NaturalKey>,
    ) -> Result<Vec<NaturalKey>> {
        Ok(self.claim_db(schedule, since, now, targets).await?)
    }

    async fn claim_tasks(
        &self,
        worker: &str,
        limit: usize,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<Task>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        Ok(self.claim_tasks_db(worker, limit, now, until).await?)
    }

    async fn renew_lease(
        &self,
        id: TaskId,
        worker: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Task> {
        self.change(id, |t| {
            t.check_lease(worker, now)?;
            t.lease = Some(Lease {
                worker: worker.to_string(),
                until,
            });
            Ok(())
        })
        .await
    }

    async fn finish_leased(
        &self,
        id: TaskId,
        worker: &str,
        now: Timestamp,
        patch: TaskPatch,
    ) -> Result<Task> {
        self.change(id, |t| {
            t.check_lease(worker, now)?;
            patch.apply(t);
            Ok(())
        })
        .await
    }

    async fn recover_expired(
        &self,
        now: Timestamp,
        requeue: &[String],
        owner: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Task>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        Ok(self.recover_expired_db(now, requeue, owner, limit).await?)
    }
}

#[async_trait]
impl ReplicaRegistry for PgStore {
    async fn heartbeat(&self, info: ReplicaInfo) -> Result<()> {
        let rec = to_json("replica", &info)?;
        self.exec(
            "INSERT INTO replicas (id, last_seen, record) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET last_seen = EXCLUDED.last_seen, \
                record = EXCLUDED.record",
            &[&info.id, &info.last_seen.as_millis(), &rec],
        )
        .await?;
        Ok(())
    }

    async fn list_replicas(&self) -> Result<Vec<ReplicaInfo>> {
        Ok(self
            .fetch(
                "replica",
                "SELECT record FROM replicas ORDER BY id COLLATE \"C\"",
                &[],
            )
            .await?)
    }

    async fn purge_replicas(&self, before: Timestamp) -> Result<u64> {
        Ok(self
            .exec(
                "DELETE FROM replicas WHERE last_seen < $1",
                &[&before.as_millis()],
            )
            .await?)
    }
}

#[async_trait]
impl ScheduleStore for PgStore {
    async fn put_schedule(&self, schedule: Schedule) -> Result<Schedule> {
        let wanted = db_number("schedule", schedule.number)?;
        Ok(self.put_schedule_db(schedule, wanted).await?)
    }

    async fn get_schedule(&self, id: ScheduleId) -> Result<Option<Schedule>> {
        Ok(self
            .fetch_one(
                "schedule",
                "SELECT record FROM schedules WHERE id = $1",
                &[&id.0],
            )
            .await?)
    }

    async fn delete_schedule(&self, id: ScheduleId) -> Result<bool> {
        Ok(self
            .exec("DELETE FROM schedules WHERE id = $1", &[&id.0])
            .await?
            > 0)
    }

    async fn list_schedules(&self, org: Option<&OrgCode>) -> Result<Vec<Schedule>> {
        let org = org.map(OrgCode::as_str);
        Ok(self
            .fetch(
                "schedule",
                "SELECT record FROM schedules WHERE $1::text IS NULL OR org = $1 ORDER BY id",
                &[&org],
            )
            .await?)
    }

    async fn due_schedules(&self, now: Timestamp, limit: usize) -> Result<Vec<Schedule>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        Ok(self
            .fetch(
                "schedule",
                "SELECT record FROM schedules WHERE enabled AND next_run_at <= $1 \
                 ORDER BY next_run_at, id LIMIT $2",
                &[&now.as_millis(), &db_int(limit)],
            )
            .await?)
    }

    async fn put_object_set(&self, set: ObjectSet) -> Result<ObjectSet> {
        let wanted = db_number("object set", set.number)?;
        Ok(self.put_object_set_db(set, wanted).await?)
    }

    async fn get_object_set(&self, id: ObjectSetId) -> Result<Option<ObjectSet>> {
        Ok(self
            .fetch_one(
                "object set",
                "SELECT record FROM object_sets WHERE id = $1",
                &[&id.0],
            )
            .await?)
    }

    async fn delete_object_set(&self, id: ObjectSetId) -> Result<bool> {
        Ok(self
            .exec("DELETE FROM object_sets WHERE id = $1", &[&id.0])
            .await?
            > 0)
    }

    async fn list_object_sets(&self, org: Option<&OrgCode>) -> Result<Vec<ObjectSet>> {
        let org = org.map(OrgCode::as_str);
        Ok(self
            .fetch(
                "object set",
                "SELECT record FROM object_sets WHERE $1::text IS NULL OR org = $1 ORDER BY id",
                &[&org],
            )
            .await?)
    }

    async fn mark_written(&self, org: &OrgCode) -> Result<()> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO kat_written (org, mark) VALUES ($1, nextval('kat_written_seq')) \
             ON CONFLICT (org) DO UPDATE SET mark = EXCLUDED.mark",
            &[&org.as_str()],
        )
        .await
        .map_err(PgStoreError::from)?;
        Ok(())
    }

    async fn written_marks(&self) -> Result<Option<Vec<(OrgCode, i64)>>> {
        let c = self.conn().await?;
        let rows = c
            .query("SELECT org, mark FROM kat_written", &[])
            .await
            .map_err(PgStoreError::from)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let org: String = r.try_get(0).map_err(PgStoreError::from)?;
            let org = OrgCode::new(&org).map_err(|e| PgStoreError::Decode {
                what: "write mark's organization",
                source: e.to_string().into(),
            })?;
            out.push((org, r.try_get(1).map_err(PgStoreError::from)?));
        }
        Ok(Some(out))
    }
}

#[async_trait]
impl OrgStore for PgStore {
    async fn put_organization(&self, org: Organization) -> Result<()> {
        let rec = to_json("organization", &org)?;
        self.exec(
            "INSERT INTO organizations (code, record) VALUES ($1, $2) \
             ON CONFLICT (code) DO UPDATE SET record = EXCLUDED.record",
            &[&org.code.as_str(), &rec],
        )
        .await?;
        Ok(())
    }

    async fn get_organization(&self, code: &OrgCode) -> Result<Option<Organization>> {
        Ok(self
            .fetch_one(
                "organization",
                "SELECT record FROM organizations WHERE code = $1",
                &[&code.as_str()],
            )
            .await?)
    }

    async fn list_organizations(&self) -> Result<Vec<Organization>> {
        Ok(self
            .fetch(
                "organization",
                "SELECT record FROM organizations ORDER BY code COLLATE \"C\"",
                &[],
            )
            .await?)
    }

    async fn delete_organization(&self, code: &OrgCode) -> Result<bool> {
        Ok(self
            .exec(
                "DELETE FROM organizations WHERE code = $1",
                &[&code.as_str()],
            )
            .await?
            > 0)
    }
}

#[async_trait]
impl PluginCatalog for PgStore {
    async fn put_plugins(&self, records: Vec<PluginRecord>) -> Result<()> {
        Ok(self.put_plugins_db(records).await?)
    }

    async fn get_plugin(&self, plugin_id: &str) -> Result<Option<PluginRecord>> {
        Ok(self
            .fetch_one(
                "plugin record",
                "SELECT record FROM plugins WHERE plugin_id = $1",
                &[&plugin_id],
            )
            .await?)
    }

    async fn list_plugins(&self) -> Result<Vec<PluginRecord>> {
        Ok(self
            .fetch(
                "plugin record",
                "SELECT record FROM plugins ORDER BY plugin_id COLLATE \"C\"",
                &[],
            )
            .await?)
    }

    async fn set_plugin_override(
        &self,
        org: &OrgCode,
        plugin_id: &str,
        enabled: Option<bool>,
    ) -> Result<()> {
        let c = self.conn().await.map_err(Error::from)?;
        set_override(
            &**c,
            "plugin_overrides",
            "plugin_id",
            org,
            plugin_id,
            enabled,
        )
        .await?;
        Ok(())
    }

    async fn plugin_overrides(&self, org: &OrgCode) -> Result<BTreeMap<String, bool>> {
        Ok(self
            .flags(
                "SELECT plugin_id, enabled FROM plugin_overrides WHERE org = $1",
                &[&org.as_str()],
            )
            .await?)
    }

    async fn clear_plugin_overrides(&self, org: &OrgCode) -> Result<()> {
        self.exec(
            "DELETE FROM plugin_overrides WHERE org = $1",
            &[&org.as_str()],
        )
        .await?;
        Ok(())
    }
}

#[async_trait]
impl RevocationList for PgStore {
    async fn revoke_token(&self, jti: &str, exp: i64) -> Result<()> {
        self.exec(
            "INSERT INTO revoked_tokens (jti, exp) VALUES ($1, $2) \
             ON CONFLICT (jti) DO UPDATE SET exp = EXCLUDED.exp",
            &[&jti, &exp],
        )
        .await?;
        Ok(())
    }

    async fn is_token_revoked(&self, jti: &str) -> Result<bool> {
        let c = self.conn().await?;
        let row = c
            .query_opt("SELECT 1 FROM revoked_tokens WHERE jti = $1", &[&jti])
            .await
            .map_err(PgStoreError::from)?;
        Ok(row.is_some())
    }

    async fn purge_revoked(&self, now: i64) -> Result<u64> {
        Ok(self
            .exec("DELETE FROM revoked_tokens WHERE exp < $1", &[&now])
            .await?)
    }
}

#[async_trait]
impl RuleCatalog for PgStore {
    async fn set_rule_override(
        &self,
        org: &OrgCode,
        rule: &str,
        enabled: Option<bool>,
    ) -> Result<()> {
        let c = self.conn().await?;
        set_override(&**c, "rule_overrides", "rule", org, rule, enabled).await?;
        Ok(())
    }

    async fn rule_overrides(&self, org: &OrgCode) -> Result<BTreeMap<String, bool>> {
        Ok(self
            .flags(
                "SELECT rule, enabled FROM rule_overrides WHERE org = $1",
                &[&org.as_str()],
            )
            .await?)
    }

    async fn mark_processed(
        &self,
        org: &OrgCode,
        plugin_id: &str,
        objects: &[ObjectRef],
    ) -> Result<()> {
        if objects.is_empty() {
            return Ok(());
        }
        Ok(self.mark_processed_db(org, plugin_id, objects).await?)
    }

    async fn processed(
        &self,
        org: &OrgCode,
        plugin_id: &str,
        among: Option<&[ObjectRef]>,
    ) -> Result<BTreeSet<ObjectRef>> {
        if among.is_some_and(<[ObjectRef]>::is_empty) {
            return Ok(BTreeSet::new());
        }
        Ok(self.processed_db(org, plugin_id, among).await?)
    }

    async fn clear_rule_state(&self, org: &OrgCode) -> Result<()> {
        Ok(self.clear_rule_state_db(org).await?)
    }
}
