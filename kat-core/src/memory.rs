//! In-memory reference backends of [`ObjectStore`], [`FileStore`] and the seven traits of
//! [`TaskStore`](crate::store::TaskStore): the executable meaning of the traits, for tests and for
//! embedding without persistence. They pass the same conformance suites as the durable backends.
//! File contents are held in memory here.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::levels::{self, Changes, EdgeIndex, LevelGraph, NodeLevel};
use crate::object::{NaturalKey, Object, ObjectType, ScanLevel, ScanProfile};
use crate::org::{OrgCode, Organization};
use crate::plugin::PluginRecord;
use crate::schedule::{ObjectSet, ObjectSetId, Schedule, ScheduleId};
use crate::store::{
    ByteStream, FileId, FileMeta, FileQuery, FileStore, NewFile, ObjectQuery, ObjectStore,
    OrgStore, Page, PluginCatalog, ReplicaRegistry, RevocationList, ScheduleStore, StoredObject,
    TaskQuery, TaskQueue, wrong_state,
};
use crate::task::{ObjectRef, Task, TaskId, TaskPatch, TaskState};
use crate::{Error, Result};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data (every write is applied whole), so a
    // poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn page<T: Clone>(items: &[T], offset: usize, limit: usize) -> Vec<T> {
    let limit = if limit == 0 { usize::MAX } else { limit };
    items.iter().skip(offset).take(limit).cloned().collect()
}

type ObjKey = (OrgCode, ObjectType, NaturalKey);

#[derive(Debug, Default)]
struct ObjectsInner {
    objects: BTreeMap<ObjKey, StoredObject>,
    /// A B-tree, not a hash map: a hash map of a million objects rehashes all of them at once when
    /// it grows, which held the store's lock for about 0.4 s under bulk writes (docs/http-api.md).
    tasks_of: BTreeMap<ObjKey, Vec<TaskId>>,
    objects_of: HashMap<(OrgCode, TaskId), BTreeSet<ObjectRef>>,
    /// The relations of each organization's DNS records ([`crate::levels`]).
    edges: HashMap<OrgCode, EdgeIndex>,
    /// One more after every object write of any organization ([`ObjectStore::change_mark`]).
    writes: u64,
}

/// One organization's level graph over the memory store's objects and edges.
struct OrgGraph<'a> {
    org: &'a OrgCode,
    objects: &'a mut BTreeMap<ObjKey, StoredObject>,
    edges: Option<&'a EdgeIndex>,
}

impl LevelGraph for OrgGraph<'_> {
    type Error = std::convert::Infallible;

    fn node(&mut self, n: &ObjectRef) -> std::result::Result<Option<NodeLevel>, Self::Error> {
        Ok(self
            .objects
            .get(&(self.org.clone(), n.object_type, n.key.clone()))
            .and_then(|s| {
                s.scan.map(|p| NodeLevel {
                    level: p.level,
                    declared: p.declared,
                    inherited_from: s.inherited_from.clone(),
                })
            }))
    }

    fn set_inherited(
        &mut self,
        n: &ObjectRef,
        level: Option<ScanLevel>,
        from: Option<ObjectRef>,
    ) -> std::result::Result<(), Self::Error> {
        if let Some(s) = self
            .objects
            .get_mut(&(self.org.clone(), n.object_type, n.key.clone()))
        {
            s.scan = Some(ScanProfile {
                level,
                declared: false,
            });
            s.inherited_from = from;
        }
        Ok(())
    }

    fn in_edges(
        &mut self,
        n: &ObjectRef,
    ) -> std::result::Result<Vec<(ObjectRef, Option<ScanLevel>)>, Self::Error> {
        Ok(self.edges.map(|e| e.in_edges(n)).unwrap_or_default())
    }

    fn out_edges(
        &mut self,
        n: &ObjectRef,
    ) -> std::result::Result<Vec<(ObjectRef, Option<ScanLevel>)>, Self::Error> {
        Ok(self.edges.map(|e| e.out_edges(n)).unwrap_or_default())
    }
}

impl ObjectsInner {
    /// Bring `org`'s levels up to date after a write.
    fn update_levels(&mut self, org: &OrgCode, changes: &Changes) -> u64 {
        let mut g = OrgGraph {
            org,
            objects: &mut self.objects,
            edges: self.edges.get(org),
        };
        match levels::update(&mut g, changes) {
            Ok(n) => n,
            Err(never) => match never {},
        }
    }
}

/// The in-memory [`ObjectStore`].
///
/// ```
/// # tokio_test_block(async {
/// use kat_core::memory::MemoryObjectStore;
/// use kat_core::object::{Object, ObjectType};
/// use kat_core::org::OrgCode;
/// use kat_core::store::ObjectStore;
/// let store = MemoryObjectStore::default();
/// let org = OrgCode::new("acme").unwrap();
/// let h = Object::from_json(ObjectType::Hostname, &serde_json::json!({"name": "example.com"})).unwrap();
/// store.upsert(&org, vec![h.clone(), h], None).await.unwrap();
/// let got = store.get(&org, ObjectType::Hostname, &"internet|example.com".parse().unwrap()).await.unwrap();
/// assert!(got.is_some());
/// # });
/// # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Default)]
pub struct MemoryObjectStore {
    inner: Mutex<ObjectsInner>,
}

/// A bulk upsert expanded with the objects it refers to: what [`expand_batch`] returns.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ExpandedBatch {
    /// For each requested object, in request order with duplicates kept (the order `upsert`
    /// answers in), its index in `objects`.
    pub requested: Vec<usize>,
    /// Every distinct object to write with its key, referenced ones before the objects that refer
    /// to them, later sightings merged into earlier ones.
    pub objects: Vec<(NaturalKey, Object)>,
}

/// Expand a batch with the objects it refers to (referenced ones first), deduplicated by key with
/// later sightings merged into earlier ones. Shared by backends so that they agree; each natural key
/// is computed once.
///
/// ```
/// use kat_core::memory::expand_batch;
/// use kat_core::object::{Object, ObjectType};
/// let h = Object::from_json(ObjectType::Hostname, &serde_json::json!({"name": "example.com"})).unwrap();
/// let batch = expand_batch(vec![h.clone(), h]);
/// assert_eq!(batch.requested, [1, 1]);
/// let keys: Vec<&str> = batch.objects.iter().map(|(k, _)| k.as_str()).collect();
/// assert_eq!(keys, ["internet", "internet|example.com"]);
/// ```
pub fn expand_batch(objects: Vec<Object>) -> ExpandedBatch {
    type At = HashMap<(ObjectType, NaturalKey), usize>;
    struct Expand {
        out: Vec<(NaturalKey, Object)>,
        at: At,
        /// The slot of the last reference added. A reference equal to the object in that slot has
        /// its key, and merging an equal object changes nothing: it is skipped without computing
        /// its key (every hostname of a batch names the same network).
        last_ref: Option<usize>,
    }
    impl Expand {
        fn add(&mut self, o: Object) -> usize {
            for r in o.references() {
                if self
                    .last_ref
                    .and_then(|i| self.out.get(i))
                    .is_some_and(|(_, last)| *last == r)
                {
                    continue;
                }
                self.last_ref = Some(self.add(r));
            }
            match self.at.entry((o.object_type(), o.natural_key())) {
                Entry::Occupied(e) => {
                    let i = *e.get();
                    self.out[i].1.merge_from(o);
                    i
                }
                Entry::Vacant(e) => {
                    let i = self.out.len();
                    self.out.push((e.key().1.clone(), o));
                    e.insert(i);
                    i
                }
            }
        }
    }
    let mut requested = Vec::with_capacity(objects.len());
    // Most objects refer to one shared network: one slot more is the usual size.
    let mut e = Expand {
        out: Vec::with_capacity(objects.len() + 1),
        at: At::with_capacity(objects.len() + 1),
        last_ref: None,
    };
    for o in objects {
        requested.push(e.add(o));
    }
    ExpandedBatch {
        requested,
        objects: e.out,
    }
}

/// A batch's answer in request order: `requested` holds, for each requested object, its index in
/// `written` (as [`ExpandedBatch::requested`] does), and an index may come more than once. Each
/// written value is moved out at its last mention and cloned only for earlier ones. `Err` names an
/// index with nothing in `written`. Shared by backends.
///
/// ```
/// use kat_core::memory::in_request_order;
/// let written = vec![Some("network".to_string()), Some("host".to_string()), None];
/// assert_eq!(
///     in_request_order(&[1, 1, 0], written.clone()),
///     Ok(vec!["host".into(), "host".into(), "network".into()])
/// );
/// assert_eq!(in_request_order(&[0, 2], written.clone()), Err(2));
/// assert_eq!(in_request_order(&[3], written), Err(3));
/// ```
pub fn in_request_order<T: Clone>(
    requested: &[usize],
    mut written: Vec<Option<T>>,
) -> Result<Vec<T>, usize> {
    let mut mentions = vec![0u32; written.len()];
    for &i in requested {
        *mentions.get_mut(i).ok_or(i)? += 1;
    }
    requested
        .iter()
        .map(|&i| {
            let left = mentions.get_mut(i).ok_or(i)?;
            *left -= 1;
            let slot = written.get_mut(i).ok_or(i)?;
            if *left == 0 {
                slot.take()
            } else {
                slot.clone()
            }
            .ok_or(i)
        })
        .collect()
}

/// Replace what is stored with a new version of the object (see [`ObjectStore::replace`]). Shared by
/// backends.
///
/// ```
/// use kat_core::clock::Timestamp;
/// use kat_core::memory::{merge_stored, replace_stored};
/// use kat_core::object::{Object, ObjectType};
/// use kat_core::org::OrgCode;
/// let port = |v| Object::from_json(ObjectType::IpPort, &v).unwrap();
/// let full = port(serde_json::json!({"address": "192.0.2.1", "port": 443, "service": "https"}));
/// let bare = port(serde_json::json!({"address": "192.0.2.1", "port": 443}));
/// let org = OrgCode::new("acme").unwrap();
/// let stored = merge_stored(None, &org, full.natural_key(), full, None, Timestamp::now());
/// let merged = merge_stored(Some(stored.clone()), &org, bare.natural_key(), bare.clone(), None, Timestamp::now());
/// assert_eq!(merged.object.to_json()["service"], "https");
/// let replaced = replace_stored(stored, bare, None, Timestamp::now());
/// assert!(replaced.object.to_json()["service"].is_null());
/// ```
pub fn replace_stored(
    mut existing: StoredObject,
    o: Object,
    by: Option<TaskId>,
    now: Timestamp,
) -> StoredObject {
    existing.object = o;
    existing.last_seen = now;
    if by.is_some() {
        existing.last_seen_by = by;
    }
    existing
}

/// Merge a new sighting into what is stored (or make a new stored object under `key`, the
/// object's natural key). Shared by backends.
pub fn merge_stored(
    existing: Option<StoredObject>,
    org: &OrgCode,
    key: NaturalKey,
    o: Object,
    by: Option<TaskId>,
    now: Timestamp,
) -> StoredObject {
    match existing {
        Some(mut s) => {
            s.object.merge_from(o);
            s.last_seen = now;
            if by.is_some() {
                s.last_seen_by = by;
            }
            s
        }
        None => {
            let ty = o.object_type();
            StoredObject {
                org: org.clone(),
                key,
                scan: ty.has_scan_level().then(ScanProfile::default),
                inherited_from: None,
                object: o,
                created_at: now,
                last_seen: now,
                created_by: by,
                last_seen_by: by,
            }
        }
    }
}

impl MemoryObjectStore {
    /// Upsert `objects`; with `replace`, the first requested object replaces its stored version
    /// (which must exist) instead of merging into it.
    fn write(
        &self,
        org: &OrgCode,
        objects: Vec<Object>,
        by: Option<TaskId>,
        replace: bool,
    ) -> Result<Vec<StoredObject>> {
        let batch = expand_batch(objects);
        let now = Timestamp::now();
        let mut g = lock(&self.inner);
        let inner = &mut *g;
        inner.writes += 1;
        let target = replace.then(|| batch.requested.first().copied()).flatten();
        if let Some((key, o)) = target.and_then(|i| batch.objects.get(i)) {
            let k = (org.clone(), o.object_type(), key.clone());
            if !inner.objects.contains_key(&k) {
                return Err(Error::not_found("object", key.as_str()));
            }
        }
        let mut written = Vec::with_capacity(batch.objects.len());
        let mut changes = Changes::default();
        for (i, (key, o)) in batch.objects.into_iter().enumerate() {
            let k = (org.clone(), o.object_type(), key);
            let existing = inner.objects.remove(&k);
            if existing.is_none() {
                let here = ObjectRef {
                    object_type: k.1,
                    key: k.2.clone(),
                };
                let edges = inner.edges.entry(org.clone()).or_default();
                for rel in levels::relations(&o) {
                    if edges.insert(&here, &rel) {
                        changes.added.push(rel);
                    }
                }
                if k.1.has_scan_level() {
                    changes.nodes.push(here);
                }
            }
            let stored = match existing {
                Some(s) if target == Some(i) => replace_stored(s, o, by, now),
                existing => merge_stored(existing, org, k.2.clone(), o, by, now),
            };
            written.push(k.clone());
            inner.objects.insert(k.clone(), stored);
            if let Some(t) = by {
                let list = inner.tasks_of.entry(k.clone()).or_default();
                if !list.contains(&t) {
                    list.push(t);
                }
                inner
                    .objects_of
                    .entry((org.clone(), t))
                    .or_default()
                    .insert(ObjectRef {
                        object_type: k.1,
                        key: k.2.clone(),
                    });
            }
        }
        inner.update_levels(org, &changes);
        batch
            .requested
            .iter()
            .map(|&i| {
                inner.objects.get(&written[i]).cloned().ok_or_else(|| {
                    Error::backend("memory", "an upserted object went missing", false)
                })
            })
            .collect()
    }
}

#[async_trait]
impl ObjectStore for MemoryObjectStore {
    async fn upsert(
        &self,
        org: &OrgCode,
        objects: Vec<Object>,
        by: Option<TaskId>,
    ) -> Result<Vec<StoredObject>> {
        self.write(org, objects, by, false)
    }

    async fn replace(
        &self,
        org: &OrgCode,
        object: Object,
        by: Option<TaskId>,
    ) -> Result<StoredObject> {
        self.write(org, vec![object], by, true)?
            .pop()
            .ok_or_else(|| Error::backend("memory", "a replace returned nothing", false))
    }

    async fn get(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        key: &NaturalKey,
    ) -> Result<Option<StoredObject>> {
        Ok(lock(&self.inner)
            .objects
            .get(&(org.clone(), ty, key.clone()))
            .cloned())
    }

    async fn query_valid(&self, q: &ObjectQuery) -> Result<Page<StoredObject>> {
        let mut items: Vec<StoredObject> = lock(&self.inner)
            .objects
            .values()
            .filter(|o| q.matches(o))
            .cloned()
            .collect();
        q.sort(&mut items);
        Ok(Page {
            count: items.len() as u64,
            items: page(&items, q.offset, q.limit),
        })
    }

    async fn delete(&self, org: &OrgCode, ty: ObjectType, keys: &[NaturalKey]) -> Result<u64> {
        let mut g = lock(&self.inner);
        g.writes += 1;
        let mut n = 0;
        let mut changes = Changes::default();
        for k in keys {
            let full = (org.clone(), ty, k.clone());
            if let Some(gone) = g.objects.remove(&full) {
                n += 1;
                let r = ObjectRef {
                    object_type: ty,
                    key: k.clone(),
                };
                if let Some(edges) = g.edges.get_mut(org) {
                    for rel in levels::relations(&gone.object) {
                        if edges.remove(&r, &rel) {
                            changes.removed.push(rel);
                        }
                    }
                }
                if ty.has_scan_level() {
                    changes.nodes.push(r.clone());
                }
                for t in g.tasks_of.remove(&full).unwrap_or_default() {
                    if let Some(set) = g.objects_of.get_mut(&(org.clone(), t)) {
                        set.remove(&r);
                    }
                }
            }
        }
        g.update_levels(org, &changes);
        Ok(n)
    }

    async fn set_scan_profile_valid(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        key: &NaturalKey,
        profile: ScanProfile,
    ) -> Result<StoredObject> {
        let mut g = lock(&self.inner);
        g.writes += 1;
        let k = (org.clone(), ty, key.clone());
        let o = g
            .objects
            .get_mut(&k)
            .ok_or_else(|| Error::not_found("object", key.as_str()))?;
        o.scan = Some(if profile.declared {
            profile
        } else {
            ScanProfile::default()
        });
        o.inherited_from = None;
        g.update_levels(
            org,
            &Changes {
                nodes: vec![ObjectRef {
                    object_type: ty,
                    key: key.clone(),
                }],
                ..Changes::default()
            },
        );
        g.objects
            .get(&k)
            .cloned()
            .ok_or_else(|| Error::not_found("object", key.as_str()))
    }

    async fn tasks_of(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        key: &NaturalKey,
    ) -> Result<Vec<TaskId>> {
        Ok(lock(&self.inner)
            .tasks_of
            .get(&(org.clone(), ty, key.clone()))
            .cloned()
            .unwrap_or_default())
    }

    async fn objects_of(&self, org: &OrgCode, task: TaskId) -> Result<Vec<ObjectRef>> {
        Ok(lock(&self.inner)
            .objects_of
            .get(&(org.clone(), task))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn recompute_levels(&self, org: Option<&OrgCode>) -> Result<u64> {
        let mut g = lock(&self.inner);
        let inner = &mut *g;
        inner.writes += 1;
        let orgs: BTreeSet<OrgCode> = match org {
            Some(o) => BTreeSet::from([o.clone()]),
            None => inner.objects.keys().map(|k| k.0.clone()).collect(),
        };
        let mut changed = 0;
        for org in &orgs {
            let nodes: Vec<ObjectRef> = inner
                .objects
                .iter()
                .filter(|(k, s)| &k.0 == org && s.scan.is_some())
                .map(|(k, _)| ObjectRef {
                    object_type: k.1,
                    key: k.2.clone(),
                })
                .collect();
            let mut graph = OrgGraph {
                org,
                objects: &mut inner.objects,
                edges: inner.edges.get(org),
            };
            changed += match levels::recompute(&mut graph, nodes) {
                Ok(n) => n,
                Err(never) => match never {},
            };
        }
        Ok(changed)
    }

    async fn levels_need_recompute(&self) -> Result<bool> {
        // Every write updates levels under the store's lock: never interrupted half-way.
        Ok(false)
    }

    fn change_mark(&self, _org: &OrgCode) -> Option<u64> {
        // Store-wide: a write to any organization changes every organization's mark.
        Some(lock(&self.inner).writes)
    }
}

/// The in-memory [`FileStore`]; contents live in memory.
#[derive(Debug, Default)]
pub struct MemoryFileStore {
    next: AtomicU64,
    files: Mutex<BTreeMap<FileId, (FileMeta, Bytes)>>,
}

#[async_trait]
impl FileStore for MemoryFileStore {
    async fn put_valid(&self, new: NewFile, mut body: ByteStream) -> Result<FileMeta> {
        let mut buf = BytesMut::new();
        let mut hasher = Sha256::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            buf.extend_from_slice(&chunk);
        }
        let id = FileId(self.next.fetch_add(1, AtomicOrdering::SeqCst) + 1);
        let meta = FileMeta {
            id,
            org: new.org,
            file_type: new.file_type,
            name: new.name,
            size: buf.len() as u64,
            sha256: hex::encode(hasher.finalize()),
            task: new.task,
            created_at: Timestamp::now(),
            scan_level: new.scan_level,
            level_from: new.level_from,
        };
        lock(&self.files).insert(id, (meta.clone(), buf.freeze()));
        Ok(meta)
    }

    async fn meta(&self, id: FileId) -> Result<Option<FileMeta>> {
        Ok(lock(&self.files).get(&id).map(|(m, _)| m.clone()))
    }

    async fn open(&self, id: FileId) -> Result<ByteStream> {
        let data = lock(&self.files)
            .get(&id)
            .map(|(_, d)| d.clone())
            .ok_or_else(|| Error::not_found("file", id.to_string()))?;
        let chunks: Vec<std::io::Result<Bytes>> = (0..data.len())
            .step_by(64 * 1024)
            .map(|i| Ok(data.slice(i..(i + 64 * 1024).min(data.len()))))
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn query_valid(&self, q: &FileQuery) -> Result<Page<FileMeta>> {
        let mut items: Vec<FileMeta> = lock(&self.files)
            .values()
            .map(|(m, _)| m)
            .filter(|m| q.matches(m))
            .cloned()
            .collect();
        q.sort(&mut items);
        Ok(Page {
            count: items.len() as u64,
            items: page(&items, q.offset, q.limit),
        })
    }

    async fn delete(&self, id: FileId) -> Result<bool> {
        Ok(lock(&self.files).remove(&id).is_some())
    }
}

#[derive(Debug, Default)]
struct TasksInner {
    tasks: BTreeMap<TaskId, Task>,
    claims: HashMap<(ScheduleId, NaturalKey), Timestamp>,
    schedules: BTreeMap<ScheduleId, Schedule>,
    /// The enabled schedules by `next_run_at`: what [`ScheduleStore::due_schedules`] reads, so that
    /// a tick costs what is due, not the number of schedules.
    due: BTreeSet<(Timestamp, ScheduleId)>,
    sets: BTreeMap<ObjectSetId, ObjectSet>,
    /// The last integer ids given out (never reused).
    last_schedule_number: u64,
    last_set_number: u64,
    orgs: BTreeMap<OrgCode, Organization>,
    plugins: BTreeMap<String, PluginRecord>,
    overrides: BTreeMap<OrgCode, BTreeMap<String, bool>>,
    revoked: HashMap<String, i64>,
    rule_overrides: BTreeMap<OrgCode, BTreeMap<String, bool>>,
    /// Per organization and plugin: the objects a completed task of the plugin had as targets.
    processed: HashMap<(OrgCode, String), BTreeSet<ObjectRef>>,
    /// The queued tasks, oldest first: what [`TaskQueue::claim_tasks`] reads.
    queued: BTreeSet<(Timestamp, TaskId)>,
    /// The running tasks: what [`TaskQueue::recover_expired`] reads.
    running: BTreeSet<TaskId>,
    /// The replicas' heartbeats, by id.
    replicas: BTreeMap<String, crate::replica::ReplicaInfo>,
}

impl TasksInner {
    /// Store a task, keeping the state indexes.
    fn put_task(&mut self, t: Task) {
        if let Some(old) = self.tasks.get(&t.id) {
            let key = (old.created_at, old.id);
            self.queued.remove(&key);
            self.running.remove(&old.id);
        }
        self.index(&t);
        self.tasks.insert(t.id, t);
    }

    fn index(&mut self, t: &Task) {
        match t.state {
            TaskState::Queued => {
                self.queued.insert((t.created_at, t.id));
            }
            TaskState::Running => {
                self.running.insert(t.id);
            }
            _ => {}
        }
    }

    /// Apply `change` to a stored task and store it again; the changed task, or `None` when there
    /// is no such task.
    fn change<T>(
        &mut self,
        id: TaskId,
        change: impl FnOnce(&mut Task) -> Result<T>,
    ) -> Result<Option<Task>> {
        let Some(mut t) = self.tasks.get(&id).cloned() else {
            return Ok(None);
        };
        change(&mut t)?;
        self.put_task(t.clone());
        Ok(Some(t))
    }
}

/// The in-memory [`TaskStore`](crate::store::TaskStore): every one of its traits ([`TaskQueue`],
/// [`ScheduleStore`], [`OrgStore`], [`PluginCatalog`], [`RevocationList`], [`ReplicaRegistry`]) on one
/// lock, so a claim, a renewal, a leased write and a lease recovery (with its revocations) are each atomic.
#[derive(Debug, Default)]
pub struct MemoryTaskStore {
    inner: Mutex<TasksInner>,
}

#[async_trait]
impl TaskQueue for MemoryTaskStore {
    async fn create_tasks(&self, tasks: Vec<Task>) -> Result<()> {
        let mut g = lock(&self.inner);
        let mut seen = BTreeSet::new();
        for t in &tasks {
            if g.tasks.contains_key(&t.id) || !seen.insert(t.id) {
                return Err(Error::Conflict(format!("task {} exists", t.id)));
            }
        }
        for t in tasks {
            g.put_task(t);
        }
        Ok(())
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<Task>> {
        Ok(lock(&self.inner).tasks.get(&id).cloned())
    }

    async fn delete_org_tasks(&self, org: &OrgCode) -> Result<u64> {
        let mut g = lock(&self.inner);
        let before = g.tasks.len();
        g.tasks.retain(|_, t| t.org != *org);
        let TasksInner {
            tasks,
            queued,
            running,
            ..
        } = &mut *g;
        queued.retain(|(_, id)| tasks.contains_key(id));
        running.retain(|id| tasks.contains_key(id));
        Ok((before - g.tasks.len()) as u64)
    }

    async fn transition_task(
        &self,
        id: TaskId,
        from: &[TaskState],
        patch: TaskPatch,
    ) -> Result<Task> {
        lock(&self.inner)
            .change(id, |t| {
                if !from.contains(&t.state) {
                    return Err(wrong_state(id, t.state, from));
                }
                patch.apply(t);
                Ok(())
            })?
            .ok_or_else(|| Error::not_found("task", id.to_string()))
    }

    async fn list_tasks(&self, q: &TaskQuery) -> Result<Page<Task>> {
        let mut items: Vec<Task> = lock(&self.inner)
            .tasks
            .values()
            .filter(|t| q.matches(t))
            .cloned()
            .collect();
        items.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(Page {
            count: items.len() as u64,
            items: page(&items, q.offset, q.limit),
        })
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
    ) -> Result<crate::store::Claimed> {
        let mut g = lock(&self.inner);
        let mut out = Vec::new();
        let mut oldest: Option<Timestamp> = None;
        for k in targets {
            let slot = (schedule, k.clone());
            let at = match g.claims.get(&slot) {
                Some(t) if *t >= since => *t,
                _ => {
                    g.claims.insert(slot, now);
                    out.push(k);
                    now
                }
            };
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
        Ok(crate::store::Claimed::new(out, oldest))
    }

    async fn claim_tasks(
        &self,
        worker: &str,
        limit: usize,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<Task>> {
        let mut g = lock(&self.inner);
        let ids: Vec<TaskId> = g.queued.iter().take(limit).map(|(_, id)| *id).collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(t) = g.change(id, |t| {
                t.claim(worker, now, until);
                Ok(())
            })? {
                out.push(t);
            }
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
        lock(&self.inner)
            .change(id, |t| {
                t.check_lease(worker, now)?;
                t.lease = Some(crate::task::Lease {
                    worker: worker.to_string(),
                    until,
                });
                Ok(())
            })?
            .ok_or_else(|| Error::not_found("task", id.to_string()))
    }

    async fn finish_leased(
        &self,
        id: TaskId,
        worker: &str,
        now: Timestamp,
        patch: TaskPatch,
    ) -> Result<Task> {
        lock(&self.inner)
            .change(id, |t| {
                t.check_lease(worker, now)?;
                patch.apply(t);
                Ok(())
            })?
            .ok_or_else(|| Error::not_found("task", id.to_string()))
    }

    async fn recover_expired(
        &self,
        now: Timestamp,
        requeue: &[String],
        owner: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Task>> {
        let mut g = lock(&self.inner);
        let lost: Vec<(TaskId, crate::task::LeaseLoss)> = g
            .running
            .iter()
            .filter_map(|id| g.tasks.get(id))
            .filter_map(|t| t.lease_loss(now, owner).map(|why| (t.id, why)))
            .take(limit)
            .collect();
        let mut out = Vec::with_capacity(lost.len());
        for (id, why) in lost {
            let mut token = None;
            if let Some(t) = g.change(id, |t| {
                token = t.recover(now, requeue, why);
                Ok(())
            })? {
                out.push(t);
            }
            if let Some(tok) = token {
                g.revoked.insert(tok.jti, tok.exp);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl ReplicaRegistry for MemoryTaskStore {
    async fn heartbeat(&self, info: crate::replica::ReplicaInfo) -> Result<()> {
        lock(&self.inner).replicas.insert(info.id.clone(), info);
        Ok(())
    }

    async fn list_replicas(&self) -> Result<Vec<crate::replica::ReplicaInfo>> {
        Ok(lock(&self.inner).replicas.values().cloned().collect())
    }

    async fn purge_replicas(&self, before: Timestamp) -> Result<u64> {
        let mut g = lock(&self.inner);
        let n = g.replicas.len();
        g.replicas.retain(|_, r| r.last_seen >= before);
        Ok((n - g.replicas.len()) as u64)
    }
}

#[async_trait]
impl ScheduleStore for MemoryTaskStore {
    async fn put_schedule(&self, mut s: Schedule) -> Result<Schedule> {
        let mut g = lock(&self.inner);
        if s.number == 0 {
            s.number = match g.schedules.get(&s.id).map(|o| o.number) {
                Some(n) if n > 0 => n,
                _ => {
                    g.last_schedule_number += 1;
                    g.last_schedule_number
                }
            };
        }
        g.last_schedule_number = g.last_schedule_number.max(s.number);
        if s.enabled {
            g.due.insert((s.next_run_at, s.id));
        }
        if let Some(old) = g.schedules.insert(s.id, s.clone())
            && (!s.enabled || old.next_run_at != s.next_run_at)
        {
            g.due.remove(&(old.next_run_at, old.id));
        }
        Ok(s)
    }

    async fn get_schedule(&self, id: ScheduleId) -> Result<Option<Schedule>> {
        Ok(lock(&self.inner).schedules.get(&id).cloned())
    }

    async fn delete_schedule(&self, id: ScheduleId) -> Result<bool> {
        let mut g = lock(&self.inner);
        let Some(old) = g.schedules.remove(&id) else {
            return Ok(false);
        };
        g.due.remove(&(old.next_run_at, old.id));
        Ok(true)
    }

    async fn list_schedules(&self, org: Option<&OrgCode>) -> Result<Vec<Schedule>> {
        Ok(lock(&self.inner)
            .schedules
            .values()
            .filter(|s| org.is_none() || s.org.as_ref() == org)
            .cloned()
            .collect())
    }

    async fn due_schedules(&self, now: Timestamp, limit: usize) -> Result<Vec<Schedule>> {
        let g = lock(&self.inner);
        Ok(g.due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .filter_map(|(_, id)| g.schedules.get(id).cloned())
            .collect())
    }

    async fn put_object_set(&self, mut set: ObjectSet) -> Result<ObjectSet> {
        let mut g = lock(&self.inner);
        if set.number == 0 {
            set.number = match g.sets.get(&set.id).map(|o| o.number) {
                Some(n) if n > 0 => n,
                _ => {
                    g.last_set_number += 1;
                    g.last_set_number
                }
            };
        }
        g.last_set_number = g.last_set_number.max(set.number);
        g.sets.insert(set.id, set.clone());
        Ok(set)
    }

    async fn get_object_set(&self, id: ObjectSetId) -> Result<Option<ObjectSet>> {
        Ok(lock(&self.inner).sets.get(&id).cloned())
    }

    async fn delete_object_set(&self, id: ObjectSetId) -> Result<bool> {
        Ok(lock(&self.inner).sets.remove(&id).is_some())
    }

    async fn list_object_sets(&self, org: Option<&OrgCode>) -> Result<Vec<ObjectSet>> {
        Ok(lock(&self.inner)
            .sets
            .values()
            .filter(|s| org.is_none_or(|o| *o == s.org))
            .cloned()
            .collect())
    }
}

#[async_trait]
impl OrgStore for MemoryTaskStore {
    async fn put_organization(&self, org: Organization) -> Result<()> {
        lock(&self.inner).orgs.insert(org.code.clone(), org);
        Ok(())
    }

    async fn get_organization(&self, code: &OrgCode) -> Result<Option<Organization>> {
        Ok(lock(&self.inner).orgs.get(code).cloned())
    }

    async fn list_organizations(&self) -> Result<Vec<Organization>> {
        Ok(lock(&self.inner).orgs.values().cloned().collect())
    }

    async fn delete_organization(&self, code: &OrgCode) -> Result<bool> {
        Ok(lock(&self.inner).orgs.remove(code).is_some())
    }
}

#[async_trait]
impl PluginCatalog for MemoryTaskStore {
    async fn put_plugins(&self, records: Vec<PluginRecord>) -> Result<()> {
        let mut g = lock(&self.inner);
        for r in records {
            g.plugins.insert(r.def.plugin_id.clone(), r);
        }
        Ok(())
    }

    async fn get_plugin(&self, plugin_id: &str) -> Result<Option<PluginRecord>> {
        Ok(lock(&self.inner).plugins.get(plugin_id).cloned())
    }

    async fn list_plugins(&self) -> Result<Vec<PluginRecord>> {
        Ok(lock(&self.inner).plugins.values().cloned().collect())
    }

    async fn set_plugin_override(
        &self,
        org: &OrgCode,
        plugin_id: &str,
        enabled: Option<bool>,
    ) -> Result<()> {
        let mut g = lock(&self.inner);
        match enabled {
            Some(e) => {
                g.overrides
                    .entry(org.clone())
                    .or_default()
                    .insert(plugin_id.to_string(), e);
            }
            None => {
                if let Some(m) = g.overrides.get_mut(org) {
                    m.remove(plugin_id);
                    if m.is_empty() {
                        g.overrides.remove(org);
                    }
                }
            }
        }
        Ok(())
    }

    async fn plugin_overrides(&self, org: &OrgCode) -> Result<BTreeMap<String, bool>> {
        Ok(lock(&self.inner)
            .overrides
            .get(org)
            .cloned()
            .unwrap_or_default())
    }
}

#[async_trait]
impl RevocationList for MemoryTaskStore {
    async fn revoke_token(&self, jti: &str, exp: i64) -> Result<()> {
        lock(&self.inner).revoked.insert(jti.to_string(), exp);
        Ok(())
    }

    async fn is_token_revoked(&self, jti: &str) -> Result<bool> {
        Ok(lock(&self.inner).revoked.contains_key(jti))
    }

    async fn purge_revoked(&self, now: i64) -> Result<u64> {
        let mut g = lock(&self.inner);
        let before = g.revoked.len();
        g.revoked.retain(|_, exp| *exp >= now);
        Ok((before - g.revoked.len()) as u64)
    }
}

#[async_trait]
impl crate::rules::RuleCatalog for MemoryTaskStore {
    async fn set_rule_override(
        &self,
        org: &OrgCode,
        rule: &str,
        enabled: Option<bool>,
    ) -> Result<()> {
        let mut g = lock(&self.inner);
        match enabled {
            Some(e) => {
                g.rule_overrides
                    .entry(org.clone())
                    .or_default()
                    .insert(rule.to_string(), e);
            }
            None => {
                if let Some(m) = g.rule_overrides.get_mut(org) {
                    m.remove(rule);
                    if m.is_empty() {
                        g.rule_overrides.remove(org);
                    }
                }
            }
        }
        Ok(())
    }

    async fn rule_overrides(&self, org: &OrgCode) -> Result<BTreeMap<String, bool>> {
        Ok(lock(&self.inner)
            .rule_overrides
            .get(org)
            .cloned()
            .unwrap_or_default())
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
        lock(&self.inner)
            .processed
            .entry((org.clone(), plugin_id.to_string()))
            .or_default()
            .extend(objects.iter().cloned());
        Ok(())
    }

    async fn processed(
        &self,
        org: &OrgCode,
        plugin_id: &str,
        among: Option<&[ObjectRef]>,
    ) -> Result<BTreeSet<ObjectRef>> {
        let g = lock(&self.inner);
        let Some(set) = g.processed.get(&(org.clone(), plugin_id.to_string())) else {
            return Ok(BTreeSet::new());
        };
        Ok(match among {
            None => set.clone(),
            Some(refs) => refs.iter().filter(|r| set.contains(r)).cloned().collect(),
        })
    }

    async fn clear_rule_state(&self, org: &OrgCode) -> Result<()> {
        let mut g = lock(&self.inner);
        g.rule_overrides.remove(org);
        g.processed.retain(|(o, _), _| o != org);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The expansion without skipping repeated references: every reference added and merged.
    fn naive(objects: Vec<Object>) -> ExpandedBatch {
        fn add(
            o: Object,
            out: &mut Vec<(NaturalKey, Object)>,
            at: &mut HashMap<(ObjectType, NaturalKey), usize>,
        ) -> usize {
            for r in o.references() {
                add(r, out, at);
            }
            let k = (o.object_type(), o.natural_key());
            if let Some(&i) = at.get(&k) {
                out[i].1.merge_from(o);
                return i;
            }
            out.push((k.1.clone(), o));
            at.insert(k, out.len() - 1);
            out.len() - 1
        }
        let (mut out, mut at) = (Vec::new(), HashMap::new());
        let requested = objects
            .into_iter()
            .map(|o| add(o, &mut out, &mut at))
            .collect();
        ExpandedBatch {
            requested,
            objects: out,
        }
    }

    fn obj(ty: ObjectType, v: serde_json::Value) -> Object {
        Object::from_json(ty, &v).expect("valid object")
    }

    #[test]
    fn expand_batch_skips_repeated_references_without_changing_the_result() {
        let host =
            |n: &str, net: &str| obj(ObjectType::Hostname, json!({"name": n, "network": net}));
        let typed = |def: bool| {
            let mut v = json!({"code": "KAT-X"});
            if def {
                v["name"] = json!("X");
                v["risk"] = json!("high");
            }
            obj(ObjectType::FindingType, v)
        };
        let finding = |h: &str| {
            obj(
                ObjectType::Finding,
                json!({"finding_type": "KAT-X", "hostname": h, "description": h}),
            )
        };
        let port = |a: &str, p: u16, service: Option<&str>| {
            let mut v = json!({"address": a, "port": p});
            if let Some(s) = service {
                v["service"] = json!(s);
            }
            obj(ObjectType::IpPort, v)
        };
        let batches: Vec<Vec<Object>> = vec![
            // One network named by every hostname, then another, then the first again.
            (0..5)
                .map(|i| host(&format!("h{i}.example"), "internet"))
                .chain([host("a.example", "lab"), host("b.example", "lab")])
                .chain([
                    host("c.example", "internet"),
                    host("h0.example", "internet"),
                ])
                .collect(),
            // The referenced object sent itself between objects referring to it, with and
            // without its optional fields.
            vec![
                finding("a.example"),
                typed(true),
                finding("b.example"),
                typed(false),
                finding("c.example"),
                finding("a.example"),
            ],
            // Ports of one address, the address sent itself, a port repeated with more fields.
            vec![
                port("192.0.2.1", 80, None),
                port("192.0.2.1", 443, Some("https")),
                obj(ObjectType::IpAddress, json!({"address": "192.0.2.1"})),
                port("192.0.2.1", 80, Some("http")),
                port("192.0.2.2", 22, None),
                port("192.0.2.1", 8080, None),
            ],
            // URLs (a reference with a reference of its own) and the hostname they name.
            vec![
                obj(ObjectType::Url, json!({"url": "https://a.example/x"})),
                obj(ObjectType::Url, json!({"url": "https://a.example/y"})),
                host("a.example", "internet"),
                obj(ObjectType::Url, json!({"url": "https://a.example/z"})),
                obj(ObjectType::Url, json!({"url": "https://b.example/"})),
            ],
            Vec::new(),
        ];
        for batch in batches {
            let want = naive(batch.clone());
            let got = expand_batch(batch.clone());
            assert_eq!(got.requested, want.requested, "indexes for {batch:?}");
            assert_eq!(got.objects, want.objects, "objects for {batch:?}");
        }
    }
}
