//! The [`TaskStore`](kat_core::store::TaskStore) traits on the `state` tree: [`TaskQueue`],
//! [`ScheduleStore`], [`OrgStore`], [`PluginCatalog`], [`RevocationList`] and [`ReplicaRegistry`],
//! one `impl` each (the rules' state is in `rules.rs`).
//!
//! Leases: a claim, a renewal, a leased write and a recovery each read and write under the state
//! writer lock in one batch, so no two claimers get one task and each expired lease is recovered
//! once; a recovery's revocations are in the same batch as the task.
//!
//! Key layout (`id` components are 16 uuid bytes; `~` marks a component stored inverted so that an
//! ascending scan is newest first; times are order-preserving `i64` milliseconds or seconds):
//!
//! | key | value | what |
//! | --- | --- | --- |
//! | `T` id | JSON [`Task`] | a task |
//! | `O` org ~created_at ~id | task id | tasks of an organization, newest first |
//! | `G` ~created_at ~id | task id | all tasks, newest first |
//! | `C` schedule | the schedule's claims (key, `i64` ms), one record | when a schedule last claimed each target |
//! | `L` schedule key | `i64` ms | the same, one entry per target, as databases wrote it before `C`; folded into `C` by the schedule's next claim |
//! | `S` id | JSON [`Schedule`] | a schedule |
//! | `D` next_run_at id | empty | enabled schedules by due time, so finding the due ones costs what is due |
//! | `E` id | JSON [`ObjectSet`] | an object set |
//! | `N` `S` or `E` | `u64` | the last integer id given to a schedule (`S`) or an object set (`E`) |
//! | `R` code | JSON [`Organization`] | an organization |
//! | `P` plugin_id | JSON [`PluginRecord`] | a plugin record |
//! | `J` jti | `i64` exp | a revoked token |
//! | `X` exp jti | empty | revoked tokens by expiry, so purging costs what expired |
//! | `Q` created_at id | empty | queued tasks, oldest first: what claims read |
//! | `U` id | empty | running tasks: what lease recovery reads |
//! | `N` `Q` | `u64` 1 | the `Q` and `U` indexes are complete (built when a database written before them opens) |
//! | `H` replica id | JSON [`ReplicaInfo`] | a replica's last heartbeat |

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use kat_core::clock::Timestamp;
use kat_core::object::NaturalKey;
use kat_core::org::{OrgCode, Organization};
use kat_core::plugin::PluginRecord;
use kat_core::replica::ReplicaInfo;
use kat_core::schedule::{ObjectSet, ObjectSetId, Schedule, ScheduleId};
use kat_core::store::{
    Claimed, OrgStore, Page, PluginCatalog, ReplicaRegistry, RevocationList, ScheduleStore,
    TaskQuery, TaskQueue, wrong_state,
};
use kat_core::task::{Lease, Task, TaskId, TaskPatch, TaskState};
use kat_core::{Error, Result};
use sled::IVec;

use crate::error::{SResult, SledStoreError};
use crate::keys::{Key, i64_from_ord, i64_ord, take_id, take_u64};
use crate::{Inner, SledStore, from_json, lock, to_json};

const T_TASK: u8 = b'T';
const T_TASK_BY_ORG: u8 = b'O';
const T_TASK_ALL: u8 = b'G';
const T_CLAIM: u8 = b'L';
const T_CLAIMS: u8 = b'C';
const T_SCHEDULE: u8 = b'S';
const T_DUE: u8 = b'D';
const T_SET: u8 = b'E';
const T_ORGANIZATION: u8 = b'R';
const T_PLUGIN: u8 = b'P';
const T_REVOKED: u8 = b'J';
const T_EXPIRY: u8 = b'X';
const T_PLUGIN_OVERRIDE: u8 = b'V';
const T_NUMBER: u8 = b'N';
const T_QUEUED: u8 = b'Q';
const T_RUNNING: u8 = b'U';
const T_REPLICA: u8 = b'H';

/// The marker saying the `Q` and `U` indexes are complete.
const STATE_INDEX_MARK: [u8; 2] = [T_NUMBER, T_QUEUED];

fn queued_key(t: &Task) -> Vec<u8> {
    Key::new(T_QUEUED)
        .i64(t.created_at.as_millis())
        .id(t.id.0.as_bytes())
        .into_vec()
}

fn running_key(id: TaskId) -> Vec<u8> {
    Key::new(T_RUNNING).id(id.0.as_bytes()).into_vec()
}

fn replica_key(id: &str) -> Vec<u8> {
    Key::new(T_REPLICA).str(id).into_vec()
}

/// Write `new` (or delete `old` when `new` is `None`) into `batch` with its state indexes (`Q`,
/// `U`); the other indexes never change after creation and are the caller's.
fn put_task(batch: &mut sled::Batch, old: Option<&Task>, new: Option<&Task>) -> SResult<()> {
    if let Some(o) = old {
        match o.state {
            TaskState::Queued => batch.remove(queued_key(o)),
            TaskState::Running => batch.remove(running_key(o.id)),
            _ => {}
        }
    }
    match new {
        Some(n) => {
            match n.state {
                TaskState::Queued => batch.insert(queued_key(n), IVec::default()),
                TaskState::Running => batch.insert(running_key(n.id), IVec::default()),
                _ => {}
            }
            batch.insert(task_key(n.id).into_vec(), to_json("task", n)?);
        }
        None => {
            if let Some(o) = old {
                batch.remove(task_key(o.id).into_vec());
            }
        }
    }
    Ok(())
}

/// Build the queued and running indexes (`Q`, `U`) of a database written before them, once. Run
/// when the store opens; a no-op once the marker is there.
pub(crate) fn index_task_states(state: &sled::Tree) -> SResult<usize> {
    if state.contains_key(STATE_INDEX_MARK)? {
        return Ok(0);
    }
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for e in state.scan_prefix([T_TASK]) {
        let (_, v) = e?;
        let t: Task = from_json("task", &v)?;
        match t.state {
            TaskState::Queued => batch.insert(queued_key(&t), IVec::default()),
            TaskState::Running => batch.insert(running_key(t.id), IVec::default()),
            _ => continue,
        }
        n += 1;
    }
    batch.insert(STATE_INDEX_MARK.to_vec(), 1u64.to_be_bytes().to_vec());
    state.apply_batch(batch)?;
    Ok(n)
}

/// Check the queued and running indexes against the tasks: every queued task has its `Q` entry and
/// every running one its `U` entry, and every entry names a task in that state.
pub(crate) fn verify_task_states(
    inner: &Inner,
    r: &mut crate::objects::VerifyReport,
) -> SResult<()> {
    let state = &inner.state;
    let mut want = BTreeSet::new();
    for e in state.scan_prefix([T_TASK]) {
        let (_, v) = e?;
        let t: Task = from_json("task", &v)?;
        r.tasks += 1;
        match t.state {
            TaskState::Queued => {
                want.insert(queued_key(&t));
            }
            TaskState::Running => {
                want.insert(running_key(t.id));
            }
            _ => {}
        }
        if t.state != TaskState::Running && t.lease.is_some() {
            r.problem(format!("task {} is {} but has a lease", t.id, t.state));
        }
    }
    let mut have = BTreeSet::new();
    for tag in [T_QUEUED, T_RUNNING] {
        for e in state.scan_prefix([tag]) {
            have.insert(e?.0.to_vec());
        }
    }
    for k in want.difference(&have) {
        r.problem(format!("task state index entry missing: {k:?}"));
    }
    for k in have.difference(&want) {
        r.problem(format!(
            "task state index entry names no task in that state: {k:?}"
        ));
    }
    Ok(())
}

/// The task a `Q` or `U` index entry names.
fn indexed_task(state: &sled::Tree, id: &[u8]) -> SResult<Task> {
    let (id, _) =
        take_id(id).ok_or_else(|| SledStoreError::decode("task state index", "not a task id"))?;
    get_json::<Task>(
        state,
        "task",
        task_key(TaskId(uuid::Uuid::from_bytes(id))).as_slice(),
    )?
    .ok_or_else(|| SledStoreError::decode("task state index", "names a missing task"))
}

/// The key of the counter of integer ids of the records tagged `tag` (`T_SCHEDULE` or `T_SET`).
fn number_key(tag: u8) -> [u8; 2] {
    [T_NUMBER, tag]
}

/// The integer id a record tagged `tag` keeps or gets: `wanted` when set, else the one stored under
/// `old`, else the next from the counter (written into `batch`, so it moves with the record). Callers
/// hold `state_lock`.
fn number_for(
    state: &sled::Tree,
    batch: &mut sled::Batch,
    tag: u8,
    wanted: u64,
    old: Option<u64>,
) -> SResult<u64> {
    let last = match state.get(number_key(tag))? {
        Some(v) => take_u64(&v).map(|(n, _)| n).unwrap_or(0),
        None => 0,
    };
    let n = match (wanted, old) {
        (0, Some(o)) if o > 0 => o,
        (0, _) => last + 1,
        (w, _) => w,
    };
    if n > last {
        batch.insert(number_key(tag).to_vec(), n.to_be_bytes().to_vec());
    }
    Ok(n)
}

/// Give every schedule and object set stored without an integer id (before ids were numbered) the
/// next one, in key order. Run when the store opens; a no-op once every record has one.
pub(crate) fn number_unnumbered(state: &sled::Tree) -> SResult<usize> {
    let mut changed = 0;
    for tag in [T_SCHEDULE, T_SET] {
        let mut batch = sled::Batch::default();
        let mut last = match state.get(number_key(tag))? {
            Some(v) => take_u64(&v).map(|(n, _)| n).unwrap_or(0),
            None => 0,
        };
        for e in state.scan_prefix([tag]) {
            let (k, v) = e?;
            let mut record: serde_json::Value = from_json("record", &v)?;
            let has = record
                .get("number")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            last = last.max(has);
            if has == 0
                && let Some(m) = record.as_object_mut()
            {
                last += 1;
                m.insert("number".into(), last.into());
                batch.insert(k, to_json("record", &record)?);
                changed += 1;
            }
        }
        batch.insert(number_key(tag).to_vec(), last.to_be_bytes().to_vec());
        state.apply_batch(batch)?;
    }
    Ok(changed)
}

/// What every authenticated request reads, kept in memory beside the `state` tree: the
/// organizations (`R`) and the revoked token ids (`J`). Loaded when the store opens and changed by
/// the same calls that write those entries, under the state writer lock, right after their batch is
/// applied; the database is this process's alone (sled's lock), so the copy never goes stale, and a
/// read costs a hash lookup instead of a database read on the blocking pool.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    orgs: RwLock<HashMap<OrgCode, Organization>>,
    revoked: RwLock<HashSet<String>>,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Memo {
    /// Read the organizations and revoked token ids from the `state` tree.
    pub(crate) fn load(state: &sled::Tree) -> SResult<Memo> {
        let orgs: Vec<Organization> = scan_json(state, "organization", T_ORGANIZATION)?;
        let mut revoked = HashSet::new();
        for entry in state.scan_prefix([T_REVOKED]) {
            let (k, _) = entry?;
            let (jti, _) = crate::keys::take_str(&k[1..])
                .ok_or_else(|| SledStoreError::decode("revoked token key", "malformed"))?;
            revoked.insert(jti);
        }
        Ok(Memo {
            orgs: RwLock::new(orgs.into_iter().map(|o| (o.code.clone(), o)).collect()),
            revoked: RwLock::new(revoked),
        })
    }
}

/// One schedule's claims, in one record: `C` schedule id → for each target, its key's length (`u32`,
/// big-endian), the key, and when it was last claimed (`i64` ms, big-endian).
fn claims_key(schedule: ScheduleId) -> Key {
    Key::new(T_CLAIMS).id(schedule.0.as_bytes())
}

fn encode_claims(claims: &HashMap<Vec<u8>, i64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(claims.keys().map(|k| k.len() + 12).sum());
    for (k, t) in claims {
        // Natural keys are far shorter than 4 GiB.
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&t.to_be_bytes());
    }
    out
}

fn decode_claims(mut bytes: &[u8]) -> SResult<Vec<(&[u8], i64)>> {
    let bad = || SledStoreError::decode("schedule claims", "malformed record");
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_be_bytes(*len) as usize;
        let key = rest.get(..len).ok_or_else(bad)?;
        let (t, rest) = rest[len..].split_first_chunk::<8>().ok_or_else(bad)?;
        out.push((key, i64::from_be_bytes(*t)));
        bytes = rest;
    }
    Ok(out)
}

fn task_key(id: TaskId) -> Key {
    Key::new(T_TASK).id(id.0.as_bytes())
}

fn task_index_keys(t: &Task) -> [Vec<u8>; 2] {
    let ms = t.created_at.as_millis();
    let id = t.id.0.as_bytes();
    [
        Key::new(T_TASK_BY_ORG)
            .str(t.org.as_str())
            .i64_desc(ms)
            .id_desc(id)
            .into_vec(),
        Key::new(T_TASK_ALL).i64_desc(ms).id_desc(id).into_vec(),
    ]
}

fn schedule_key(id: ScheduleId) -> Key {
    Key::new(T_SCHEDULE).id(id.0.as_bytes())
}

fn due_key(s: &Schedule) -> Key {
    Key::new(T_DUE)
        .i64(s.next_run_at.as_millis())
        .id(s.id.0.as_bytes())
}

fn set_key(id: ObjectSetId) -> Key {
    Key::new(T_SET).id(id.0.as_bytes())
}

fn org_key(code: &OrgCode) -> Key {
    Key::new(T_ORGANIZATION).str(code.as_str())
}

fn plugin_key(id: &str) -> Key {
    Key::new(T_PLUGIN).str(id)
}

fn override_prefix(org: &OrgCode) -> Key {
    Key::new(T_PLUGIN_OVERRIDE).str(org.as_str())
}

/// An organization's override of a plugin's enabled flag, as stored (the key repeats both).
#[derive(serde::Serialize, serde::Deserialize)]
struct Override {
    plugin_id: String,
    enabled: bool,
}

fn revoked_key(jti: &str) -> Key {
    Key::new(T_REVOKED).str(jti)
}

fn expiry_key(exp: i64, jti: &str) -> Key {
    Key::new(T_EXPIRY).i64(exp).str(jti)
}

fn i64_value(what: &'static str, v: &[u8]) -> SResult<i64> {
    match take_u64(v) {
        Some((n, [])) => Ok(i64_from_ord(n)),
        _ => Err(SledStoreError::decode(what, "not an i64")),
    }
}

fn i64_bytes(v: i64) -> [u8; 8] {
    i64_ord(v).to_be_bytes()
}

fn get_json<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    what: &'static str,
    key: &[u8],
) -> SResult<Option<T>> {
    tree.get(key)?.map(|v| from_json(what, &v)).transpose()
}

fn scan_json<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    what: &'static str,
    tag: u8,
) -> SResult<Vec<T>> {
    tree.scan_prefix([tag])
        .map(|e| {
            let (_, v) = e?;
            from_json(what, &v)
        })
        .collect()
}

enum Transition {
    Done(Box<Task>),
    Missing,
    WrongState(TaskState),
}

fn list_tasks_blocking(inner: &Inner, q: &TaskQuery) -> SResult<Page<Task>> {
    let prefix = match &q.org {
        Some(o) => Key::new(T_TASK_BY_ORG).str(o.as_str()),
        None => Key::new(T_TASK_ALL),
    }
    .into_vec();
    // Only the organization (or nothing) narrows the query: count index entries, load the page.
    let index_only = q.states.is_none() && q.plugin_id.is_none() && q.schedule.is_none();
    let limit = if q.limit == 0 { usize::MAX } else { q.limit };
    let mut count = 0u64;
    let mut items = Vec::new();
    for entry in inner.state.scan_prefix(&prefix) {
        let (_, v) = entry?;
        let in_page = count >= q.offset as u64 && items.len() < limit;
        if index_only && !in_page {
            count += 1;
            continue;
        }
        let (id, _) =
            take_id(&v).ok_or_else(|| SledStoreError::decode("task index", "not a task id"))?;
        let Some(t) = get_json::<Task>(
            &inner.state,
            "task",
            task_key(TaskId(uuid::Uuid::from_bytes(id))).as_slice(),
        )?
        else {
            return Err(SledStoreError::decode(
                "task index",
                "names a task that does not exist",
            ));
        };
        if !q.matches(&t) {
            continue;
        }
        if in_page {
            items.push(t);
        }
        count += 1;
    }
    Ok(Page { count, items })
}

#[async_trait]
impl TaskQueue for SledStore {
    async fn create_tasks(&self, tasks: Vec<Task>) -> Result<()> {
        if tasks.is_empty() {
            return Ok(());
        }
        let conflict = self
            .blocking(move |inner| {
                let _writer = lock(&inner.state_lock);
                let mut seen = BTreeSet::new();
                let mut batch = sled::Batch::default();
                for t in &tasks {
                    let k = task_key(t.id);
                    if !seen.insert(t.id) || inner.state.contains_key(k.as_slice())? {
                        return Ok(Some(t.id));
                    }
                    put_task(&mut batch, None, Some(t))?;
                    for ik in task_index_keys(t) {
                        batch.insert(ik, &t.id.0.as_bytes()[..]);
                    }
                }
                inner.state.apply_batch(batch)?;
                Ok(None)
            })
            .await?;
        if let Some(id) = conflict {
            return Err(Error::Conflict(format!("task {id} exists")));
        }
        self.written().await?;
        Ok(())
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<Task>> {
        Ok(self
            .blocking(move |inner| get_json(&inner.state, "task", task_key(id).as_slice()))
            .await?)
    }

    async fn delete_org_tasks(&self, org: &OrgCode) -> Result<u64> {
        let prefix = Key::new(T_TASK_BY_ORG).str(org.as_str()).into_vec();
        let n = self
            .blocking(move |inner| {
                let _writer = lock(&inner.state_lock);
                let mut batch = sled::Batch::default();
                let mut n = 0u64;
                for entry in inner.state.scan_prefix(&prefix) {
                    let (k, v) = entry?;
                    let (id, _) = take_id(&v)
                        .ok_or_else(|| SledStoreError::decode("task index", "not a task id"))?;
                    let id = TaskId(uuid::Uuid::from_bytes(id));
                    if let Some(t) =
                        get_json::<Task>(&inner.state, "task", task_key(id).as_slice())?
                    {
                        for ik in task_index_keys(&t) {
                            batch.remove(ik);
                        }
                        put_task(&mut batch, Some(&t), None)?;
                    }
                    batch.remove(k);
                    batch.remove(task_key(id).into_vec());
                    n += 1;
                }
                if n > 0 {
                    inner.state.apply_batch(batch)?;
                }
                Ok(n)
            })
            .await?;
        if n > 0 {
            self.written().await?;
        }
        Ok(n)
    }

    async fn transition_task(
        &self,
        id: TaskId,
        from: &[TaskState],
        patch: TaskPatch,
    ) -> Result<Task> {
        let from_states = from.to_vec();
        let outcome = self
            .blocking(move |inner| {
                let k = task_key(id).into_vec();
                let _writer = lock(&inner.state_lock);
                let Some(mut t) = get_json::<Task>(&inner.state, "task", &k)? else {
                    return Ok(Transition::Missing);
                };
                if !from_states.contains(&t.state) {
                    return Ok(Transition::WrongState(t.state));
                }
                let old = t.clone();
                patch.apply(&mut t);
                // The patch never changes the organization or creation time, so only the state
                // indexes move.
                let mut batch = sled::Batch::default();
                put_task(&mut batch, Some(&old), Some(&t))?;
                inner.state.apply_batch(batch)?;
                Ok(Transition::Done(Box::new(t)))
            })
            .await?;
        match outcome {
            Transition::Done(t) => {
                self.written().await?;
                Ok(*t)
            }
            Transition::Missing => Err(Error::not_found("task", id.to_string())),
            Transition::WrongState(s) => Err(wrong_state(id, s, from)),
        }
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<Page<Task>> {
        let q = query.clone();
        Ok(self
            .blocking(move |inner| list_tasks_blocking(inner, &q))
            .await?)
    }

    async fn claim_targets(
        &self,
        schedule: ScheduleId,
        since: Timestamp,
        now: Timestamp,
        targets: Vec<NaturalKey>,
    ) -> Result<Vec<NaturalKey>> {
        Ok(self
            .claim_targets_oldest(schedule, since, now, targets)
            .await?
            .fresh)
    }

    async fn claim_targets_oldest(
        &self,
        schedule: ScheduleId,
        since: Timestamp,
        now: Timestamp,
        targets: Vec<NaturalKey>,
    ) -> Result<Claimed> {
        if targets.is_empty() {
            return Ok(Claimed::default());
        }
        let (out, oldest) = self
            .blocking(move |inner| {
                let _writer = lock(&inner.state_lock);
                let bk = claims_key(schedule).into_vec();
                let blob = inner.state.get(&bk)?;
                let mut batch = sled::Batch::default();
                // The schedule's claims: its one record, or (a database written before claims
                // were kept together) its `L` entries, folded into the record and removed here.
                let mut claims: HashMap<Vec<u8>, i64> = match &blob {
                    Some(b) => decode_claims(b)?
                        .into_iter()
                        .map(|(k, t)| (k.to_vec(), t))
                        .collect(),
                    None => {
                        let prefix = Key::new(T_CLAIM).id(schedule.0.as_bytes()).into_vec();
                        let mut old = HashMap::new();
                        for entry in inner.state.scan_prefix(&prefix) {
                            let (k, v) = entry?;
                            let (key, _) = crate::keys::take_str(&k[prefix.len()..])
                                .ok_or_else(|| SledStoreError::decode("claim key", "malformed"))?;
                            old.insert(key.into_bytes(), i64_value("claim", &v)?);
                            batch.remove(k);
                        }
                        old
                    }
                };
                let (since, now) = (since.as_millis(), now.as_millis());
                let mut out = Vec::new();
                let mut oldest = i64::MAX;
                for k in targets {
                    let last = claims
                        .entry(k.as_str().as_bytes().to_vec())
                        .or_insert(i64::MIN);
                    if *last < since {
                        *last = now;
                        out.push(k);
                    }
                    oldest = oldest.min(*last);
                }
                if !out.is_empty() {
                    // Claims from before this window block nothing any more: dropped, so that the
                    // record stays the size of the set.
                    claims.retain(|_, t| *t >= since);
                    batch.insert(bk, encode_claims(&claims));
                    inner.state.apply_batch(batch)?;
                }
                Ok((out, oldest))
            })
            .await?;
        if !out.is_empty() {
            self.written().await?;
        }
        Ok(Claimed::new(out, Some(Timestamp::from_millis(oldest))))
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
        let worker = worker.to_string();
        let out = self
            .blocking(move |inner| {
                let _writer = lock(&inner.state_lock);
                let mut batch = sled::Batch::default();
                let mut out = Vec::new();
                for entry in inner.state.scan_prefix([T_QUEUED]) {
                    if out.len() >= limit {
                        break;
                    }
                    let (k, _) = entry?;
                    // The id is the key's last 16 bytes (after the tag and the creation time).
                    let mut t = indexed_task(&inner.state, k.get(9..).unwrap_or_default())?;
                    if t.state != TaskState::Queued {
                        return Err(SledStoreError::decode(
                            "queued index",
                            "names a task that is not queued",
                        ));
                    }
                    let old = t.clone();
                    t.claim(&worker, now, until);
                    put_task(&mut batch, Some(&old), Some(&t))?;
                    out.push(t);
                }
                if !out.is_empty() {
                    inner.state.apply_batch(batch)?;
                }
                Ok(out)
            })
            .await?;
        if !out.is_empty() {
            self.written().await?;
        }
        Ok(out)
    }

    async fn renew_lease(
        &self,
        id: TaskId,
        worker: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Task> {
        let worker = worker.to_string();
        self.leased_write(id, move |t| {
            t.check_lease(&worker, now)?;
            t.lease = Some(Lease { worker, until });
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
        let worker = worker.to_string();
        self.leased_write(id, move |t| {
            t.check_lease(&worker, now)?;
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
        let requeue = requeue.to_vec();
        let owner = owner.map(str::to_string);
        let out = self
            .blocking(move |inner| {
                let _writer = lock(&inner.state_lock);
                let mut batch = sled::Batch::default();
                let mut out = Vec::new();
                let mut revoked = Vec::new();
                for entry in inner.state.scan_prefix([T_RUNNING]) {
                    if out.len() >= limit {
                        break;
                    }
                    let (k, _) = entry?;
                    let mut t = indexed_task(&inner.state, k.get(1..).unwrap_or_default())?;
                    let Some(why) = t.lease_loss(now, owner.as_deref()) else {
                        continue;
                    };
                    let old = t.clone();
                    if let Some(tok) = t.recover(now, &requeue, why) {
                        let rk = revoked_key(&tok.jti).into_vec();
                        if let Some(v) = inner.state.get(&rk)? {
                            batch.remove(
                                expiry_key(i64_value("revocation", &v)?, &tok.jti).into_vec(),
                            );
                        }
                        batch.insert(rk, &i64_bytes(tok.exp)[..]);
                        batch.insert(expiry_key(tok.exp, &tok.jti).into_vec(), IVec::default());
                        revoked.push(tok.jti);
                    }
                    put_task(&mut batch, Some(&old), Some(&t))?;
                    out.push(t);
                }
                if !out.is_empty() {
                    inner.state.apply_batch(batch)?;
                    let mut memo = write(&inner.memo.revoked);
                    memo.extend(revoked);
                }
                Ok(out)
            })
            .await?;
        if !out.is_empty() {
            self.written().await?;
        }
        Ok(out)
    }
}

impl SledStore {
    /// Read a task, let `change` check and change it, and write it back with its state indexes,
    /// under the state writer lock. [`Error::NotFound`] when there is no such task; `change`'s
    /// error (nothing written) when it refuses.
    async fn leased_write(
        &self,
        id: TaskId,
        change: impl FnOnce(&mut Task) -> Result<()> + Send + 'static,
    ) -> Result<Task> {
        let outcome = self
            .blocking(move |inner| {
                let k = task_key(id).into_vec();
                let _writer = lock(&inner.state_lock);
                let Some(mut t) = get_json::<Task>(&inner.state, "task", &k)? else {
                    return Ok(None);
                };
                let old = t.clone();
                if let Err(e) = change(&mut t) {
                    return Ok(Some(Err(e)));
                }
                let mut batch = sled::Batch::default();
                put_task(&mut batch, Some(&old), Some(&t))?;
                inner.state.apply_batch(batch)?;
                Ok(Some(Ok(t)))
            })
            .await?;
        match outcome {
            None => Err(Error::not_found("task", id.to_string())),
            Some(Err(e)) => Err(e),
            Some(Ok(t)) => {
                self.written().await?;
                Ok(t)
            }
        }
    }
}

#[async_trait]
impl ReplicaRegistry for SledStore {
    async fn heartbeat(&self, info: ReplicaInfo) -> Result<()> {
        Ok(self
            .set_state_entry(replica_key(&info.id), "replica", Some(info))
            .await?)
    }

    async fn list_replicas(&self) -> Result<Vec<ReplicaInfo>> {
        Ok(self.state_entries(vec![T_REPLICA], "replica").await?)
    }

    async fn purge_replicas(&self, before: Timestamp) -> Result<u64> {
        let n = self
            .blocking(move |inner| {
                let _writer = lock(&inner.state_lock);
                let mut batch = sled::Batch::default();
                let mut n = 0u64;
                for entry in inner.state.scan_prefix([T_REPLICA]) {
                    let (k, v) = entry?;
                    let r: ReplicaInfo = from_json("replica", &v)?;
                    if r.last_seen < before {
                        batch.remove(k);
                        n += 1;
                    }
                }
                if n > 0 {
                    inner.state.apply_batch(batch)?;
                }
                Ok(n)
            })
            .await?;
        if n > 0 {
            self.written().await?;
        }
        Ok(n)
    }
}

#[async_trait]
impl ScheduleStore for SledStore {
    async fn put_schedule(&self, mut schedule: Schedule) -> Result<Schedule> {
        let schedule = self
            .blocking(move |inner| {
                let k = schedule_key(schedule.id).into_vec();
                let _writer = lock(&inner.state_lock);
                let mut batch = sled::Batch::default();
                let old = get_json::<Schedule>(&inner.state, "schedule", &k)?;
                if let Some(old) = &old {
                    batch.remove(due_key(old).into_vec());
                }
                schedule.number = number_for(
                    &inner.state,
                    &mut batch,
                    T_SCHEDULE,
                    schedule.number,
                    old.map(|o| o.number),
                )?;
                if schedule.enabled {
                    batch.insert(due_key(&schedule).into_vec(), IVec::default());
                }
                batch.insert(k, to_json("schedule", &schedule)?);
                inner.state.apply_batch(batch)?;
                Ok(schedule)
            })
            .await?;
        self.written().await?;
        Ok(schedule)
    }

    async fn get_schedule(&self, id: ScheduleId) -> Result<Option<Schedule>> {
        Ok(self
            .blocking(move |inner| get_json(&inner.state, "schedule", schedule_key(id).as_slice()))
            .await?)
    }

    async fn delete_schedule(&self, id: ScheduleId) -> Result<bool> {
        let existed = self
            .blocking(move |inner| {
                let k = schedule_key(id).into_vec();
                let _writer = lock(&inner.state_lock);
                let Some(old) = get_json::<Schedule>(&inner.state, "schedule", &k)? else {
                    return Ok(false);
                };
                let mut batch = sled::Batch::default();
                batch.remove(due_key(&old).into_vec());
                batch.remove(claims_key(id).into_vec());
                batch.remove(k);
                inner.state.apply_batch(batch)?;
                Ok(true)
            })
            .await?;
        if existed {
            self.written().await?;
        }
        Ok(existed)
    }

    async fn list_schedules(&self, org: Option<&OrgCode>) -> Result<Vec<Schedule>> {
        let org = org.cloned();
        Ok(self
            .blocking(move |inner| {
                let all: Vec<Schedule> = scan_json(&inner.state, "schedule", T_SCHEDULE)?;
                Ok(all
                    .into_iter()
                    .filter(|s| org.is_none() || s.org == org)
                    .collect())
            })
            .await?)
    }

    async fn due_schedules(&self, now: Timestamp, limit: usize) -> Result<Vec<Schedule>> {
        Ok(self
            .blocking(move |inner| {
                let prefix = [T_DUE];
                let mut out = Vec::new();
                for entry in inner.state.scan_prefix(prefix) {
                    if out.len() >= limit {
                        break;
                    }
                    let (k, _) = entry?;
                    let bad = || SledStoreError::decode("due index", "malformed key");
                    let (at, rest) = take_u64(&k[1..]).ok_or_else(bad)?;
                    if i64_from_ord(at) > now.as_millis() {
                        break;
                    }
                    let (id, _) = take_id(rest).ok_or_else(bad)?;
                    let sk = schedule_key(ScheduleId(uuid::Uuid::from_bytes(id)));
                    match get_json::<Schedule>(&inner.state, "schedule", sk.as_slice())? {
                        Some(s) if s.enabled => out.push(s),
                        _ => {
                            return Err(SledStoreError::decode(
                                "due index",
                                "names a schedule that is missing or disabled",
                            ));
                        }
                    }
                }
                Ok(out)
            })
            .await?)
    }

    async fn put_object_set(&self, mut set: ObjectSet) -> Result<ObjectSet> {
        let set = self
            .blocking(move |inner| {
                let k = set_key(set.id).into_vec();
                let _writer = lock(&inner.state_lock);
                let mut batch = sled::Batch::default();
                let old = get_json::<ObjectSet>(&inner.state, "object set", &k)?;
                set.number = number_for(
                    &inner.state,
                    &mut batch,
                    T_SET,
                    set.number,
                    old.map(|o| o.number),
                )?;
                batch.insert(k, to_json("object set", &set)?);
                inner.state.apply_batch(batch)?;
                Ok(set)
            })
            .await?;
        self.written().await?;
        Ok(set)
    }

    async fn get_object_set(&self, id: ObjectSetId) -> Result<Option<ObjectSet>> {
        Ok(self
            .blocking(move |inner| get_json(&inner.state, "object set", set_key(id).as_slice()))
            .await?)
    }

    async fn delete_object_set(&self, id: ObjectSetId) -> Result<bool> {
        let existed = self
            .blocking(move |inner| Ok(inner.state.remove(set_key(id).into_vec())?.is_some()))
            .await?;
        if existed {
            self.written().await?;
        }
        Ok(existed)
    }

    async fn list_object_sets(&self, org: Option<&OrgCode>) -> Result<Vec<ObjectSet>> {
        let org = org.cloned();
        Ok(self
            .blocking(move |inner| {
                let all: Vec<ObjectSet> = scan_json(&inner.state, "object set", T_SET)?;
                Ok(all
                    .into_iter()
                    .filter(|s| org.as_ref().is_none_or(|o| *o == s.org))
                    .collect())
            })
            .await?)
    }
}

#[async_trait]
impl OrgStore for SledStore {
    async fn put_organization(&self, org: Organization) -> Result<()> {
        self.blocking(move |inner| {
            let _writer = lock(&inner.state_lock);
            inner.state.insert(
                org_key(&org.code).into_vec(),
                to_json("organization", &org)?,
            )?;
            write(&inner.memo.orgs).insert(org.code.clone(), org);
            Ok(())
        })
        .await?;
        self.written().await?;
        Ok(())
    }

    async fn get_organization(&self, code: &OrgCode) -> Result<Option<Organization>> {
        Ok(read(&self.inner.memo.orgs).get(code).cloned())
    }

    async fn list_organizations(&self) -> Result<Vec<Organization>> {
        let mut all: Vec<Organization> = read(&self.inner.memo.orgs).values().cloned().collect();
        all.sort_by(|a, b| a.code.cmp(&b.code));
        Ok(all)
    }

    async fn delete_organization(&self, code: &OrgCode) -> Result<bool> {
        let k = org_key(code).into_vec();
        let code = code.clone();
        let existed = self
            .blocking(move |inner| {
                let _writer = lock(&inner.state_lock);
                let existed = inner.state.remove(k)?.is_some();
                write(&inner.memo.orgs).remove(&code);
                Ok(existed)
            })
            .await?;
        if existed {
            self.written().await?;
        }
        Ok(existed)
    }
}

#[async_trait]
impl PluginCatalog for SledStore {
    async fn put_plugins(&self, records: Vec<PluginRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.blocking(move |inner| {
            let mut batch = sled::Batch::default();
            for r in &records {
                batch.insert(
                    plugin_key(&r.def.plugin_id).into_vec(),
                    to_json("plugin record", r)?,
                );
            }
            inner.state.apply_batch(batch)?;
            Ok(())
        })
        .await?;
        self.written().await?;
        Ok(())
    }

    // The catalogue is read on every stored file (chaining) and task start: a point read or a
    // scan of a few dozen cached records, cheaper on the calling thread than a trip to the
    // blocking pool (as the object reads).
    async fn get_plugin(&self, plugin_id: &str) -> Result<Option<PluginRecord>> {
        let k = plugin_key(plugin_id).into_vec();
        Ok(get_json(&self.inner.state, "plugin record", &k)?)
    }

    async fn list_plugins(&self) -> Result<Vec<PluginRecord>> {
        Ok(scan_json(&self.inner.state, "plugin record", T_PLUGIN)?)
    }

    async fn set_plugin_override(
        &self,
        org: &OrgCode,
        plugin_id: &str,
        enabled: Option<bool>,
    ) -> Result<()> {
        let k = override_prefix(org).str(plugin_id).into_vec();
        let value = enabled.map(|enabled| Override {
            plugin_id: plugin_id.to_string(),
            enabled,
        });
        Ok(self.set_state_entry(k, "plugin override", value).await?)
    }

    async fn plugin_overrides(&self, org: &OrgCode) -> Result<BTreeMap<String, bool>> {
        let all: Vec<Override> = self
            .state_entries(override_prefix(org).into_vec(), "plugin override")
            .await?;
        Ok(all.into_iter().map(|o| (o.plugin_id, o.enabled)).collect())
    }
}

#[async_trait]
impl RevocationList for SledStore {
    async fn revoke_token(&self, jti: &str, exp: i64) -> Result<()> {
        let jti = jti.to_string();
        self.blocking(move |inner| {
            let k = revoked_key(&jti).into_vec();
            let _writer = lock(&inner.state_lock);
            let mut batch = sled::Batch::default();
            if let Some(v) = inner.state.get(&k)? {
                batch.remove(expiry_key(i64_value("revocation", &v)?, &jti).into_vec());
            }
            batch.insert(k, &i64_bytes(exp)[..]);
            batch.insert(expiry_key(exp, &jti).into_vec(), IVec::default());
            inner.state.apply_batch(batch)?;
            write(&inner.memo.revoked).insert(jti);
            Ok(())
        })
        .await?;
        self.written().await?;
        Ok(())
    }

    async fn is_token_revoked(&self, jti: &str) -> Result<bool> {
        Ok(read(&self.inner.memo.revoked).contains(jti))
    }

    async fn purge_revoked(&self, now: i64) -> Result<u64> {
        let n = self
            .blocking(move |inner| {
                let _writer = lock(&inner.state_lock);
                let mut batch = sled::Batch::default();
                let mut gone = Vec::new();
                for entry in inner.state.scan_prefix([T_EXPIRY]) {
                    let (k, _) = entry?;
                    let bad = || SledStoreError::decode("revocation expiry key", "malformed");
                    let (exp, rest) = take_u64(&k[1..]).ok_or_else(bad)?;
                    if i64_from_ord(exp) >= now {
                        break;
                    }
                    let (jti, _) = crate::keys::take_str(rest).ok_or_else(bad)?;
                    batch.remove(revoked_key(&jti).into_vec());
                    batch.remove(k);
                    gone.push(jti);
                }
                if !gone.is_empty() {
                    inner.state.apply_batch(batch)?;
                    let mut revoked = write(&inner.memo.revoked);
                    for jti in &gone {
                        revoked.remove(jti);
                    }
                }
                Ok(gone.len() as u64)
            })
            .await?;
        if n > 0 {
            self.written().await?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SledOptions;
    use kat_core::task::TaskInput;

    /// A database written before leases has no `Q`/`U` entries and no marker: opening it builds
    /// them, so its queued tasks are claimed and its running ones recovered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_from_before_leases_gets_its_state_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let org = OrgCode::new("acme").unwrap();
        let queued = Task::queued(org.clone(), "dns", TaskInput::default());
        let running = Task::queued(org.clone(), "dns", TaskInput::default());
        {
            let store = SledStore::open(dir.path(), SledOptions::default()).unwrap();
            store
                .create_tasks(vec![queued.clone(), running.clone()])
                .await
                .unwrap();
            store
                .transition_task(
                    running.id,
                    &[TaskState::Queued],
                    TaskPatch::to(TaskState::Running),
                )
                .await
                .unwrap();
            // As an older version left it.
            let state = &store.inner.state;
            for tag in [T_QUEUED, T_RUNNING] {
                for e in state.scan_prefix([tag]) {
                    state.remove(e.unwrap().0).unwrap();
                }
            }
            state.remove(STATE_INDEX_MARK).unwrap();
            store.flush().await.unwrap();
        }
        let store = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        let now = Timestamp::now();
        let got = store
            .claim_tasks("w", 10, now, now.plus_secs(30))
            .await
            .unwrap();
        assert_eq!(got.iter().map(|t| t.id).collect::<Vec<_>>(), [queued.id]);
        let got = store.recover_expired(now, &[], None, 10).await.unwrap();
        assert_eq!(got.iter().map(|t| t.id).collect::<Vec<_>>(), [running.id]);
        assert_eq!(got[0].state, TaskState::Failed);
    }
}
