//! The scheduler's memo of object sets it enumerated and claimed in full: a schedule that runs
//! again in the same interval over a set in which nothing changed does not enumerate it again, and
//! any write, an edit of the set or the window passing the oldest claim makes it enumerate again.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::store::{FindingRules, Page, StoredObject};

/// The memory object store, counting the enumerations of object sets and, with `marks` off,
/// hiding its change marks (as a store shared by several processes does).
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryObjectStore,
    enumerations: AtomicUsize,
    no_marks: bool,
}

#[async_trait]
impl ObjectStore for Counting {
    async fn upsert(
        &self,
        org: &OrgCode,
        objects: Vec<Object>,
        by: Option<TaskId>,
    ) -> Result<Vec<StoredObject>> {
        self.inner.upsert(org, objects, by).await
    }
    async fn replace(&self, org: &OrgCode, o: Object, by: Option<TaskId>) -> Result<StoredObject> {
        self.inner.replace(org, o, by).await
    }
    async fn get(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        key: &NaturalKey,
    ) -> Result<Option<StoredObject>> {
        self.inner.get(org, ty, key).await
    }
    async fn query_valid(&self, q: &ObjectQuery) -> Result<Page<StoredObject>> {
        self.inner.query_valid(q).await
    }
    async fn query_keys_valid(&self, q: &ObjectQuery) -> Result<Vec<NaturalKey>> {
        self.enumerations.fetch_add(1, Ordering::SeqCst);
        self.inner.query_keys_valid(q).await
    }
    async fn finding_rules(&self, org: &OrgCode, types: &[String]) -> Result<Vec<FindingRules>> {
        self.inner.finding_rules(org, types).await
    }
    async fn delete(&self, org: &OrgCode, ty: ObjectType, keys: &[NaturalKey]) -> Result<u64> {
        self.inner.delete(org, ty, keys).await
    }
    async fn set_scan_profile_valid(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        key: &NaturalKey,
        profile: ScanProfile,
    ) -> Result<StoredObject> {
        self.inner
            .set_scan_profile_valid(org, ty, key, profile)
            .await
    }
    async fn tasks_of(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        key: &NaturalKey,
    ) -> Result<Vec<TaskId>> {
        self.inner.tasks_of(org, ty, key).await
    }
    async fn objects_of(&self, org: &OrgCode, task: TaskId) -> Result<Vec<ObjectRef>> {
        self.inner.objects_of(org, task).await
    }
    async fn recompute_levels(&self, org: Option<&OrgCode>) -> Result<u64> {
        self.inner.recompute_levels(org).await
    }
    async fn levels_need_recompute(&self) -> Result<bool> {
        self.inner.levels_need_recompute().await
    }
    fn change_mark(&self, org: &OrgCode) -> Option<u64> {
        if self.no_marks {
            None
        } else {
            self.inner.change_mark(org)
        }
    }
}

struct Setup {
    engine: Engine,
    objects: Arc<Counting>,
    tasks: Arc<MemoryTaskStore>,
    org: OrgCode,
}

impl Setup {
    async fn new(no_marks: bool) -> Setup {
        let objects = Arc::new(Counting {
            no_marks,
            ..Counting::default()
        });
        let tasks = Arc::new(MemoryTaskStore::default());
        let engine = Engine::builder()
            .objects(objects.clone())
            .files(Arc::new(MemoryFileStore::default()))
            .tasks(tasks.clone())
            .runtime(Arc::new(NotStarted))
            .tokens(Arc::new(NotStarted))
            .build()
            .unwrap();
        let defs = PluginDef::parse_file(PLUGINS, "test.json").unwrap();
        tasks
            .put_plugins(crate::plugin::sync(&[], &defs, true).0)
            .await
            .unwrap();
        let org = OrgCode::new("acme").unwrap();
        tasks
            .put_organization(Organization::new(org.clone(), "Acme"))
            .await
            .unwrap();
        Setup {
            engine,
            objects,
            tasks,
            org,
        }
    }

    async fn host(&self, name: &str, level: u8) {
        let o = Object::from_json(ObjectType::Hostname, &json!({ "name": name })).unwrap();
        self.objects
            .upsert(&self.org, vec![o.clone()], None)
            .await
            .unwrap();
        self.objects
            .set_scan_profile(
                &self.org,
                ObjectType::Hostname,
                &o.natural_key(),
                ScanProfile::declared(ScanLevel::new(level).unwrap()),
            )
            .await
            .unwrap();
    }

    /// A daily schedule of `dns` over every hostname, and its set.
    async fn schedule(&self) -> (ScheduleId, ObjectSet) {
        all_hostnames_schedule(&self.tasks, &self.org, "dns", 86_400).await
    }

    /// Make the schedule due at `at` (as an operator moving its next run does).
    async fn due(&self, id: ScheduleId, at: Timestamp) {
        let mut s = self.tasks.get_schedule(id).await.unwrap().unwrap();
        s.next_run_at = at;
        self.tasks.put_schedule(s).await.unwrap();
    }

    async fn all_tasks(&self) -> Vec<Task> {
        let q = TaskQuery {
            limit: 0,
            ..TaskQuery::default()
        };
        self.tasks.list_tasks(&q).await.unwrap().items
    }

    async fn task_ids(&self) -> HashSet<TaskId> {
        self.all_tasks().await.into_iter().map(|t| t.id).collect()
    }

    /// The tasks not in `before`.
    async fn new_tasks(&self, before: &HashSet<TaskId>) -> Vec<Task> {
        self.all_tasks()
            .await
            .into_iter()
            .filter(|t| !before.contains(&t.id))
            .collect()
    }

    fn enumerations(&self) -> usize {
        self.objects.enumerations.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn an_unchanged_set_is_not_enumerated_again_in_the_same_interval() {
    let s = Setup::new(false).await;
    for h in ["a.example", "b.example", "c.example"] {
        s.host(h, 1).await;
    }
    let (sid, mut set) = s.schedule().await;
    let t0 = Timestamp::from_secs(1_800_000_000);
    let r = s.engine.tick(t0).await.unwrap();
    assert_eq!((r.tasks, r.skipped, s.enumerations()), (1, 0, 1));

    // Due again in the same interval, nothing written: every target counts as skipped, and the
    // set is not read.
    s.due(sid, t0.plus_secs(60)).await;
    let r = s.engine.tick(t0.plus_secs(60)).await.unwrap();
    assert_eq!((r.schedules, r.tasks, r.skipped), (1, 0, 3));
    assert_eq!(s.enumerations(), 1, "the memo answered");

    // A write: the set is read again and the new hostname alone gets a task.
    s.host("late.example", 1).await;
    s.due(sid, t0.plus_secs(120)).await;
    let before = s.task_ids().await;
    let r = s.engine.tick(t0.plus_secs(120)).await.unwrap();
    assert_eq!((r.tasks, r.skipped, s.enumerations()), (1, 3, 2));
    let late = s.new_tasks(&before).await;
    assert_eq!(late.len(), 1);
    assert_eq!(
        late[0].input.objects[0].key.as_str(),
        "internet|late.example"
    );

    // An edit of the set (here a filter that leaves one hostname) is a different set.
    s.due(sid, t0.plus_secs(180)).await;
    assert_eq!(s.engine.tick(t0.plus_secs(180)).await.unwrap().skipped, 4);
    assert_eq!(s.enumerations(), 2);
    set.all = false;
    set.filters = vec![("name".into(), vec!["a.example".into()])];
    s.tasks.put_object_set(set).await.unwrap();
    s.due(sid, t0.plus_secs(240)).await;
    let r = s.engine.tick(t0.plus_secs(240)).await.unwrap();
    assert_eq!((r.tasks, r.skipped, s.enumerations()), (0, 1, 3));
}

/// The claims of one set can be of different ages (a target found mid-interval is claimed later
/// than the others): the memo lasts only until the window passes the oldest, when those targets
/// are due again although nothing was written.
#[tokio::test]
async fn the_memo_ends_when_the_window_passes_the_oldest_claim() {
    let s = Setup::new(false).await;
    for h in ["a.example", "b.example", "c.example"] {
        s.host(h, 1).await;
    }
    let (sid, _) = s.schedule().await;
    let t0 = Timestamp::from_secs(1_800_000_000);
    assert_eq!(s.engine.tick(t0).await.unwrap().tasks, 1);
    // Found an hour later and claimed then.
    s.host("late.example", 1).await;
    s.due(sid, t0.plus_secs(3600)).await;
    let r = s.engine.tick(t0.plus_secs(3600)).await.unwrap();
    assert_eq!((r.tasks, r.skipped), (1, 3));
    // One interval after the first claims, before the late one's: the first three are due again
    // (nothing was written in between), the late one is not.
    s.due(sid, t0.plus_secs(86_400 + 5)).await;
    let before = s.task_ids().await;
    let r = s.engine.tick(t0.plus_secs(86_400 + 5)).await.unwrap();
    assert_eq!((r.schedules, r.tasks, r.skipped), (1, 1, 1), "{r:?}");
    let newest = s.new_tasks(&before).await;
    assert_eq!(newest.len(), 1);
    let mut keys: Vec<&str> = newest[0]
        .input
        .objects
        .iter()
        .map(|o| o.key.as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "internet|a.example",
            "internet|b.example",
            "internet|c.example"
        ]
    );
}

/// Without change marks (a store that other processes write to), every run reads the set.
#[tokio::test]
async fn a_store_without_change_marks_is_enumerated_every_time() {
    let s = Setup::new(true).await;
    s.host("a.example", 1).await;
    let (sid, _) = s.schedule().await;
    let t0 = Timestamp::from_secs(1_800_000_000);
    assert_eq!(s.engine.tick(t0).await.unwrap().tasks, 1);
    s.due(sid, t0.plus_secs(60)).await;
    let r = s.engine.tick(t0.plus_secs(60)).await.unwrap();
    assert_eq!((r.tasks, r.skipped, s.enumerations()), (0, 1, 2));
}
