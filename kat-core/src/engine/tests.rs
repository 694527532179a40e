//! Engine logic over the in-memory stores: queueing, gates, batching, scheduling, chaining,
//! cancellation of queued tasks and restart recovery. Running containers is covered end to end against
//! the real Docker engine in the workspace's `tests/`; here no worker is started, so the runtime and the
//! token authority below are never asked to run anything (they fail loudly if they are).

use std::collections::HashSet;

use serde_json::json;

use super::*;
use crate::control::{Submitter, SubmitterToken};
use crate::memory::{MemoryFileStore, MemoryObjectStore, MemoryTaskStore};
use crate::object::{Object, ScanLevel, ScanProfile};
use crate::org::Organization;
use crate::permission::Permissions;
use crate::runtime::{Capabilities, ManagedContainer, Outcome};
use crate::schedule::{Interval, ObjectSetId, ScheduleId};
use crate::store::{OrgStore, PluginCatalog, RevocationList, ScheduleStore, TaskQueue};

impl Engine {
    /// What the worker does with one queued task, without the loop: claim the oldest queued task
    /// (the tests queue one at a time, so `id`) and run it; nothing when none is queued.
    async fn run_task(&self, id: TaskId) -> Result<()> {
        for t in self.claim(1).await? {
            assert_eq!(t.id, id, "the oldest queued task");
            self.run_claimed(t).await?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct NotStarted;

#[async_trait]
impl ContainerRuntime for NotStarted {
    async fn capabilities(&self) -> Result<Capabilities> {
        Err(Error::backend("test", "no runtime in these tests", false))
    }
    async fn prepare_entrypoint(
        &self,
        _: &EntrypointBinary,
        _: &str,
        _: &str,
    ) -> Result<EntrypointMount> {
        Err(Error::backend("test", "no runtime in these tests", false))
    }
    async fn run(&self, _: ContainerSpec, _: CancellationToken) -> Result<Outcome> {
        Err(Error::backend("test", "no runtime in these tests", false))
    }
    async fn list_managed(&self) -> Result<Vec<ManagedContainer>> {
        Ok(vec![])
    }
    async fn reap_orphans(&self, _: &str, _: &HashSet<TaskId>) -> Result<Vec<String>> {
        Ok(vec![])
    }
}

#[async_trait]
impl TokenAuthority for NotStarted {
    fn mint(&self, _: &Claims) -> Result<String> {
        Err(Error::backend("test", "no tokens in these tests", false))
    }
    async fn verify(&self, _: &str) -> Result<Claims> {
        Err(Error::Unauthenticated("no tokens in these tests".into()))
    }
    async fn revoke(&self, _: &str, _: i64) -> Result<()> {
        Ok(())
    }
}

struct Fixture {
    engine: Engine,
    objects: Arc<MemoryObjectStore>,
    files: Arc<MemoryFileStore>,
    tasks: Arc<MemoryTaskStore>,
    org: OrgCode,
}

const PLUGINS: &str = r#"[
  {"plugin_id": "dns", "scan_level": 1, "consumes": ["type:hostname"], "oci_image": "i", "oci_arguments": ["dig", "{hostname}"]},
  {"plugin_id": "nmap", "scan_level": 2, "oci_image": "i", "oci_arguments": ["nmap", "{ipaddress}"], "batch_size": 0},
  {"plugin_id": "stdin", "scan_level": 0, "consumes": ["type:hostname", "type:ipaddress"], "oci_image": "i", "oci_arguments": ["cat"], "batch_size": 3},
  {"plugin_id": "parse-nmap", "scan_level": 2, "consumes": ["file:nmap"], "oci_image": "i", "oci_arguments": ["parse", "{file}"]},
  {"plugin_id": "parse-nmap-off", "scan_level": 0, "consumes": ["file:nmap"], "oci_image": "i", "oci_arguments": ["parse", "{file}"]},
  {"plugin_id": "parse-deep", "scan_level": 3, "consumes": ["file:parse-nmap"], "oci_image": "i", "oci_arguments": ["deep", "{file}"]},
  {"plugin_id": "parse-shallow", "scan_level": 1, "consumes": ["file:parse-nmap"], "oci_image": "i", "oci_arguments": ["shallow", "{file}"]},
  {"plugin_id": "parse-batch", "scan_level": 2, "consumes": ["file:batch"], "oci_image": "i", "oci_arguments": ["parse", "{file}"], "batch_size": 2},
  {"plugin_id": "parse-batch-stdin", "scan_level": 2, "consumes": ["file:batch"], "oci_image": "i", "oci_arguments": ["parse"], "batch_size": 2},
  {"plugin_id": "on-error", "scan_level": 0, "consumes": ["file:error"], "oci_image": "i", "oci_arguments": ["parse", "{file}"]},
  {"plugin_id": "nuclei", "scan_level": 2, "consumes": ["type:url"], "oci_image": "i", "oci_arguments": ["nuclei", "-u", "{url}", "-json"], "batch_size": 0},
  {"plugin_id": "download", "scan_level": 0, "oci_image": "i", "oci_arguments": ["fetch"], "idempotent": true},
  {"plugin_id": "writer", "scan_level": 1, "consumes": ["type:hostname"], "oci_image": "i", "oci_arguments": ["w", "{hostname}"],
   "permissions": {"objects.add_hostname": {}, "objects.delete_hostname": {"pks": ["internet|a.example"]}}}
]"#;

async fn fixture() -> Fixture {
    let objects = Arc::new(MemoryObjectStore::default());
    let files = Arc::new(MemoryFileStore::default());
    let tasks = Arc::new(MemoryTaskStore::default());
    let engine = Engine::builder()
        .objects(objects.clone())
        .files(files.clone())
        .tasks(tasks.clone())
        .runtime(Arc::new(NotStarted))
        .tokens(Arc::new(NotStarted))
        .build()
        .unwrap();
    let defs = PluginDef::parse_file(PLUGINS, "test.json").unwrap();
    let (mut writes, _) = crate::plugin::sync(&[], &defs, true);
    for w in &mut writes {
        if w.def.plugin_id == "parse-nmap-off" {
            w.enabled = false;
        }
    }
    tasks.put_plugins(writes).await.unwrap();
    let org = OrgCode::new("acme").unwrap();
    tasks
        .put_organization(Organization::new(org.clone(), "Acme"))
        .await
        .unwrap();
    Fixture {
        engine,
        objects,
        files,
        tasks,
        org,
    }
}

impl Fixture {
    async fn host(&self, name: &str, level: Option<u8>) {
        self.declare(ObjectType::Hostname, json!({ "name": name }), level)
            .await;
    }

    async fn ip(&self, addr: &str, level: Option<u8>) {
        self.declare(ObjectType::IpAddress, json!({ "address": addr }), level)
            .await;
    }

    /// Store an object and, when given, declare its scan level.
    async fn declare(&self, ty: ObjectType, v: serde_json::Value, level: Option<u8>) {
        let o = Object::from_json(ty, &v).unwrap();
        self.objects
            .upsert(&self.org, vec![o.clone()], None)
            .await
            .unwrap();
        if let Some(l) = level {
            self.objects
                .set_scan_profile(
                    &self.org,
                    ty,
                    &o.natural_key(),
                    ScanProfile::declared(ScanLevel::new(l).unwrap()),
                )
                .await
                .unwrap();
        }
    }

    async fn submit_one(&self, plugin: &str, input: &[&str]) -> Task {
        self.engine
            .submit(self.req(plugin, input))
            .await
            .unwrap()
            .remove(0)
    }

    async fn refused(&self, plugin: &str, input: &[&str]) -> Error {
        self.engine
            .submit(self.req(plugin, input))
            .await
            .expect_err("the request should be refused")
    }

    fn req(&self, plugin: &str, input: &[&str]) -> TaskRequest {
        TaskRequest {
            org: self.org.clone(),
            plugin_id: plugin.into(),
            input: input.iter().map(|s| s.to_string()).collect(),
            submitter: Submitter::operator("test"),
        }
    }

    async fn all_tasks(&self) -> Vec<Task> {
        self.tasks
            .list_tasks(&TaskQuery::default())
            .await
            .unwrap()
            .items
    }
}

#[tokio::test]
async fn submit_resolves_keys_and_bare_values_and_queues() {
    let f = fixture().await;
    f.host("a.example", Some(1)).await;
    f.host("b.example", Some(3)).await;
    let tasks = f
        .engine
        .submit(f.req("dns", &["internet|a.example", "B.example."]))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1);
    let keys: Vec<&str> = tasks[0]
        .input
        .objects
        .iter()
        .map(|r| r.key.as_str())
        .collect();
    assert_eq!(keys, vec!["internet|a.example", "internet|b.example"]);
    assert_eq!(tasks[0].state, TaskState::Queued);
    assert_eq!(
        f.engine
            .task_store()
            .get_task(tasks[0].id)
            .await
            .unwrap()
            .unwrap()
            .state,
        TaskState::Queued
    );
    assert_eq!(
        f.engine.claim(10).await.unwrap().len(),
        1,
        "a worker claims it from the store"
    );
}

#[tokio::test]
async fn manual_tasks_are_gated_by_scan_level() {
    let f = fixture().await;
    f.host("none.example", None).await;
    f.host("zero.example", Some(0)).await;
    f.ip("192.0.2.1", Some(1)).await;
    let e = f.refused("dns", &["none.example"]).await;
    assert!(matches!(e, Error::PermissionDenied(_)), "{e}");
    assert!(e.to_string().contains("no scan level"), "{e}");
    let e = f.refused("dns", &["zero.example"]).await.to_string();
    assert!(
        e.contains("needs scan level L1") && e.contains("scan level L0"),
        "{e}"
    );
    let e = f.refused("nmap", &["192.0.2.1"]).await.to_string();
    assert!(e.contains("L2"), "{e}");
    assert!(
        f.all_tasks().await.is_empty(),
        "a refused request queues nothing"
    );
}

#[tokio::test]
async fn unknown_disabled_and_missing_things_are_refused() {
    let f = fixture().await;
    let e = f.refused("nope", &[]).await;
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let e = f.refused("parse-nmap-off", &["1"]).await;
    assert!(e.to_string().contains("disabled"), "{e}");
    let e = f.refused("dns", &["missing.example"]).await.to_string();
    assert!(
        e.contains("internet|missing.example") && e.contains("declare it first"),
        "{e}"
    );
    let e = f.refused("dns", &["not a hostname!"]).await.to_string();
    assert!(e.contains("not a hostname"), "{e}");
    let e = f.refused("dns", &[]).await.to_string();
    assert!(e.contains("needs a target") || e.contains("none"), "{e}");
    let e = f.refused("parse-nmap", &["999"]).await;
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(f.all_tasks().await.is_empty());
}

#[tokio::test]
async fn a_list_of_requests_is_all_or_nothing() {
    let f = fixture().await;
    f.host("a.example", Some(1)).await;
    f.host("zero.example", Some(0)).await;
    // The second names an unknown plugin, the third a target below the plugin's level: nothing runs.
    for bad in [
        vec![f.req("dns", &["a.example"]), f.req("nope", &[])],
        vec![
            f.req("download", &[]),
            f.req("dns", &["a.example"]),
            f.req("dns", &["zero.example"]),
        ],
        vec![f.req("dns", &["a.example"]), f.req("dns", &["missing!"])],
    ] {
        f.engine.submit_all(bad).await.expect_err("refused");
        assert!(f.all_tasks().await.is_empty(), "nothing is queued");
        assert!(
            f.engine.claim(10).await.unwrap().is_empty(),
            "nothing to claim"
        );
    }
    let e = f
        .engine
        .submit_all(vec![
            f.req("download", &[]),
            f.req("dns", &["not a hostname!"]),
        ])
        .await
        .expect_err("refused");
    assert!(
        e.to_string().contains("not a hostname!"),
        "the refusal names what is wrong: {e}"
    );
    let tasks = f
        .engine
        .submit_all(vec![f.req("dns", &["a.example"]), f.req("download", &[])])
        .await
        .expect("a good list");
    assert_eq!(tasks.len(), 2);
    assert_eq!(f.all_tasks().await.len(), 2);
}

#[tokio::test]
async fn manual_input_is_batched() {
    let f = fixture().await;
    let mut names = Vec::new();
    for i in 0..7 {
        let n = format!("h{i}.example");
        f.host(&n, Some(0)).await;
        names.push(n);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let tasks = f.engine.submit(f.req("stdin", &refs)).await.unwrap();
    assert_eq!(
        tasks
            .iter()
            .map(|t| t.input.objects.len())
            .collect::<Vec<_>>(),
        vec![3, 3, 1]
    );
    // A standalone plugin with no input: one task.
    let tasks = f.engine.submit(f.req("download", &[])).await.unwrap();
    assert_eq!(tasks.len(), 1);
    assert!(tasks[0].input.is_empty());
}

async fn schedule_over_all_hostnames(f: &Fixture, plugin: &str, interval: u64) -> ScheduleId {
    all_hostnames_schedule(&f.tasks, &f.org, plugin, interval)
        .await
        .0
}

/// A schedule of `plugin` every `interval` seconds over a new set of every hostname of `org`, due
/// at once; its id and the set.
async fn all_hostnames_schedule(
    tasks: &MemoryTaskStore,
    org: &OrgCode,
    plugin: &str,
    interval: u64,
) -> (ScheduleId, ObjectSet) {
    let set = ObjectSet {
        id: ObjectSetId::new(),
        number: 0,
        name: "All hostnames".into(),
        description: String::new(),
        org: org.clone(),
        object_type: ObjectType::Hostname,
        all: true,
        filters: vec![],
        keys: vec![],
    };
    tasks.put_object_set(set.clone()).await.unwrap();
    let s = Schedule {
        id: ScheduleId::new(),
        number: 0,
        org: Some(org.clone()),
        plugin_id: plugin.into(),
        object_set: Some(set.id),
        interval: Interval::from_secs(interval).unwrap(),
        enabled: true,
        next_run_at: Timestamp::from_secs(0),
        last_run_at: None,
        created_at: Timestamp::from_secs(0),
        owner: None,
        disabled_reason: None,
    };
    tasks.put_schedule(s.clone()).await.unwrap();
    (s.id, set)
}

/// What is written through the API in the middle of an interval (a plugin's findings, a new level)
/// is scanned at the next tick by a catch-up pass of the schedules that are not due; what was
/// already scheduled in the interval is not scheduled again, and a tick after no writes runs
/// nothing.
#[tokio::test]
async fn a_write_makes_the_next_tick_catch_up_on_new_targets() {
    let f = fixture().await;
    f.host("first.example", Some(1)).await;
    let sid = schedule_over_all_hostnames(&f, "dns", 86_400).await;
    let t0 = Timestamp::from_secs(1_800_000_000);
    let r = f.engine.tick(t0).await.unwrap();
    assert_eq!((r.schedules, r.tasks, r.caught_up), (1, 1, 0));
    let next = f
        .tasks
        .get_schedule(sid)
        .await
        .unwrap()
        .unwrap()
        .next_run_at;
    // A hostname written through the API (the route tells the engine) mid-interval.
    f.host("found.example", Some(1)).await;
    let found = Object::from_json(ObjectType::Hostname, &json!({"name": "found.example"})).unwrap();
    f.engine.objects_written(&f.org, &[found]).await.unwrap();
    let r = f.engine.tick(t0.plus_secs(60)).await.unwrap();
    assert_eq!(
        (r.schedules, r.caught_up, r.tasks, r.skipped),
        (0, 1, 1, 1),
        "only the new hostname gets a task"
    );
    let newest = f.all_tasks().await;
    assert!(newest.iter().any(|t| {
        t.input
            .objects
            .iter()
            .any(|o| o.key.as_str() == "internet|found.example")
    }),);
    assert_eq!(
        f.tasks
            .get_schedule(sid)
            .await
            .unwrap()
            .unwrap()
            .next_run_at,
        next,
        "a catch-up pass does not move the schedule's next run"
    );
    // No write since: nothing to catch up on.
    let r = f.engine.tick(t0.plus_secs(120)).await.unwrap();
    assert_eq!((r.caught_up, r.tasks), (0, 0));
    // A write of nothing new: the pass runs and schedules nothing twice.
    let again = Object::from_json(ObjectType::Hostname, &json!({"name": "first.example"})).unwrap();
    f.engine.objects_written(&f.org, &[again]).await.unwrap();
    let r = f.engine.tick(t0.plus_secs(180)).await.unwrap();
    assert_eq!((r.caught_up, r.tasks, r.skipped), (1, 0, 2));
    // Another organization's writes leave this organization's schedule alone.
    let other = OrgCode::new("other-org").unwrap();
    f.engine.objects_written(&other, &[]).await.unwrap();
    let r = f.engine.tick(t0.plus_secs(240)).await.unwrap();
    assert_eq!(r.caught_up, 0, "an empty write marks nothing");
    let h = Object::from_json(ObjectType::Hostname, &json!({"name": "x.example"})).unwrap();
    f.engine.objects_written(&other, &[h]).await.unwrap();
    let r = f.engine.tick(t0.plus_secs(300)).await.unwrap();
    assert_eq!(r.caught_up, 0, "{r:?}");
}

#[tokio::test]
async fn schedules_gate_batch_and_dedup_within_an_interval() {
    let f = fixture().await;
    // 120 eligible hostnames, 5 without a level, 5 at level 0 (dns needs 1).
    for i in 0..120 {
        f.host(&format!("ok{i}.example"), Some(1)).await;
    }
    for i in 0..5 {
        f.host(&format!("none{i}.example"), None).await;
        f.host(&format!("zero{i}.example"), Some(0)).await;
    }
    let sid = schedule_over_all_hostnames(&f, "dns", 86_400).await;
    let t0 = Timestamp::from_secs(1_800_000_000);
    let r = f.engine.tick(t0).await.unwrap();
    assert_eq!(
        (r.schedules, r.tasks),
        (1, 3),
        "120 targets, batch 50: 3 tasks"
    );
    let tasks = f.all_tasks().await;
    let mut sizes: Vec<usize> = tasks.iter().map(|t| t.input.objects.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![20, 50, 50]);
    assert!(tasks.iter().all(|t| t.schedule == Some(sid)));
    let all: HashSet<String> = tasks
        .iter()
        .flat_map(|t| t.input.objects.iter().map(|r| r.key.to_string()))
        .collect();
    assert_eq!(all.len(), 120);
    assert!(
        all.iter().all(|k| k.contains("|ok")),
        "only objects at the plugin's scan level"
    );
    // The schedule is due again one interval later, not before.
    let s = f.tasks.get_schedule(sid).await.unwrap().unwrap();
    assert_eq!(s.next_run_at, t0.plus_secs(86_400));
    assert_eq!(f.engine.tick(t0.plus_secs(60)).await.unwrap().schedules, 0);
    // Forced due again within the same interval (say an operator moved it): dedup creates nothing.
    let mut early = s.clone();
    early.next_run_at = t0.plus_secs(60);
    f.tasks.put_schedule(early).await.unwrap();
    let r = f.engine.tick(t0.plus_secs(60)).await.unwrap();
    assert_eq!((r.schedules, r.tasks, r.skipped), (1, 0, 120));
    // A new object in the same interval is picked up alone.
    f.host("late.example", Some(2)).await;
    let mut again = f.tasks.get_schedule(sid).await.unwrap().unwrap();
    again.next_run_at = t0.plus_secs(120);
    f.tasks.put_schedule(again).await.unwrap();
    assert_eq!(f.engine.tick(t0.plus_secs(120)).await.unwrap().tasks, 1);
    // The next interval schedules everything again.
    let r = f.engine.tick(t0.plus_secs(86_400 + 120)).await.unwrap();
    assert_eq!(r.tasks, 3);
}

#[tokio::test]
async fn disabled_schedules_and_plugins_create_nothing() {
    let f = fixture().await;
    f.host("a.example", Some(4)).await;
    let sid = schedule_over_all_hostnames(&f, "dns", 3600).await;
    let mut s = f.tasks.get_schedule(sid).await.unwrap().unwrap();
    s.enabled = false;
    f.tasks.put_schedule(s).await.unwrap();
    assert_eq!(
        f.engine.tick(Timestamp::from_secs(10)).await.unwrap().tasks,
        0
    );
    let mut rec = f.tasks.get_plugin("dns").await.unwrap().unwrap();
    rec.enabled = false;
    f.tasks.put_plugins(vec![rec]).await.unwrap();
    let mut s = f.tasks.get_schedule(sid).await.unwrap().unwrap();
    s.enabled = true;
    f.tasks.put_schedule(s).await.unwrap();
    assert_eq!(
        f.engine.tick(Timestamp::from_secs(20)).await.unwrap().tasks,
        0
    );
}

#[tokio::test]
async fn standalone_schedules_run_once_per_interval() {
    let f = fixture().await;
    let s = Schedule {
        id: ScheduleId::new(),
        number: 0,
        org: None,
        plugin_id: "download".into(),
        object_set: None,
        interval: Interval::from_secs(3600).unwrap(),
        enabled: true,
        next_run_at: Timestamp::from_secs(0),
        last_run_at: None,
        created_at: Timestamp::from_secs(0),
        owner: None,
        disabled_reason: None,
    };
    f.tasks.put_schedule(s.clone()).await.unwrap();
    assert_eq!(
        f.engine
            .tick(Timestamp::from_secs(1000))
            .await
            .unwrap()
            .tasks,
        1,
        "a global schedule: one task per organization"
    );
    let mut s2 = s.clone();
    s2.next_run_at = Timestamp::from_secs(0);
    f.tasks.put_schedule(s2).await.unwrap();
    assert_eq!(
        f.engine
            .tick(Timestamp::from_secs(1500))
            .await
            .unwrap()
            .tasks,
        0
    );
}

/// A file as the API stores it: a task's output carries the level of the task's inputs
/// ([`crate::chain::level_of_output`]); a person's upload carries level 2, as if stated.
async fn nmap_file(f: &Fixture, producer: Option<TaskId>, ty: &str) -> FileMeta {
    let (scan_level, level_from) = match producer {
        Some(id) => {
            let t = f.tasks.get_task(id).await.unwrap().unwrap();
            crate::chain::level_of_output(&*f.objects, &*f.files, &*f.tasks, &t)
                .await
                .unwrap()
        }
        None => (ScanLevel::new(2).ok(), crate::store::LevelSource::Operator),
    };
    put_file(f, producer, ty, scan_level, level_from).await
}

async fn put_file(
    f: &Fixture,
    producer: Option<TaskId>,
    ty: &str,
    scan_level: Option<ScanLevel>,
    level_from: crate::store::LevelSource,
) -> FileMeta {
    let body: crate::store::ByteStream = Box::pin(futures::stream::iter(vec![Ok(
        Bytes::from_static(b"<nmaprun/>"),
    )]));
    f.files
        .put(
            NewFile {
                org: f.org.clone(),
                file_type: ty.into(),
                name: "stdout".into(),
                task: producer,
                scan_level,
                level_from,
            },
            body,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn files_chain_to_enabled_consumers_only_and_never_for_errors() {
    let f = fixture().await;
    f.ip("192.0.2.1", Some(2)).await;
    let producer = f.submit_one("nmap", &["192.0.2.1"]).await;
    let file = nmap_file(&f, Some(producer.id), "nmap").await;
    let chained = f.engine.file_stored(&file).await.unwrap();
    assert_eq!(chained.len(), 1, "parse-nmap-off is disabled");
    assert_eq!(chained[0].plugin_id, "parse-nmap");
    assert_eq!(chained[0].input.files, vec![file.id]);
    assert_eq!(chained[0].source_file, Some(file.id));
    assert_eq!(chained[0].org, f.org);
    let err = nmap_file(&f, Some(producer.id), "error").await;
    assert!(
        f.engine.file_stored(&err).await.unwrap().is_empty(),
        "error files never chain, even to a consumer of file:error"
    );
    let other = nmap_file(&f, None, "masscan").await;
    assert!(f.engine.file_stored(&other).await.unwrap().is_empty());
}

#[tokio::test]
async fn file_triggered_tasks_are_gated_by_the_producers_objects() {
    let f = fixture().await;
    f.ip("192.0.2.1", Some(2)).await;
    let producer = f.submit_one("nmap", &["192.0.2.1"]).await;
    // The address's level is lowered after the scan: parse-nmap (level 2) must not run on its output.
    f.objects
        .set_scan_profile(
            &f.org,
            ObjectType::IpAddress,
            &"internet|192.0.2.1".parse().unwrap(),
            ScanProfile::declared(ScanLevel::new(1).unwrap()),
        )
        .await
        .unwrap();
    let file = nmap_file(&f, Some(producer.id), "nmap").await;
    assert!(
        f.engine.file_stored(&file).await.unwrap().is_empty(),
        "gated on the file-triggered path too"
    );
    let e = f
        .engine
        .submit(f.req("parse-nmap", &[&file.id.to_string()]))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::PermissionDenied(_)),
        "and on the manual path: {e}"
    );
    // A file a person uploaded (no producing task) passes at the level they stated.
    let manual = nmap_file(&f, None, "nmap").await;
    assert_eq!(f.engine.file_stored(&manual).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_file_carries_the_level_its_chain_started_from_across_every_hop() {
    let f = fixture().await;
    f.ip("192.0.2.1", Some(2)).await;
    let scan = f.submit_one("nmap", &["192.0.2.1"]).await;
    let first = nmap_file(&f, Some(scan.id), "nmap").await;
    assert_eq!(
        (first.scan_level, first.level_from),
        (ScanLevel::new(2).ok(), crate::store::LevelSource::Objects)
    );
    let parse = f.engine.file_stored(&first).await.unwrap();
    assert_eq!(parse.len(), 1);
    assert_eq!(parse[0].plugin_id, "parse-nmap");
    // The normalizer ran on a file, not on objects: its output carries the file's level.
    let second = nmap_file(&f, Some(parse[0].id), "parse-nmap").await;
    assert_eq!(
        (second.scan_level, second.level_from),
        (ScanLevel::new(2).ok(), crate::store::LevelSource::Files)
    );
    let chained: Vec<String> = f
        .engine
        .file_stored(&second)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.plugin_id)
        .collect();
    assert_eq!(
        chained,
        vec!["parse-shallow".to_string()],
        "a level-2 chain cannot start a level-3 consumer two hops later"
    );
    let e = f
        .engine
        .submit(f.req("parse-deep", &[&second.id.to_string()]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::PermissionDenied(m) if m.contains("needs scan level L3") && m.contains("carries L2")),
        "manual submit names the levels: {e}"
    );
}

#[tokio::test]
async fn output_of_a_task_without_inputs_carries_level_0_and_unrecorded_files_are_judged_safely() {
    let f = fixture().await;
    let standalone = f.submit_one("download", &[]).await;
    let out = nmap_file(&f, Some(standalone.id), "nmap").await;
    assert_eq!(
        (out.scan_level, out.level_from),
        (ScanLevel::new(0).ok(), crate::store::LevelSource::NoInputs)
    );
    assert!(
        f.engine.file_stored(&out).await.unwrap().is_empty(),
        "parse-nmap (level 2) does not run on a standalone plugin's output"
    );
    // Records stored before files carried a level: a person's upload carries none ...
    let old = put_file(
        &f,
        None,
        "nmap",
        None,
        crate::store::LevelSource::Unrecorded,
    )
    .await;
    assert!(f.engine.file_stored(&old).await.unwrap().is_empty());
    // ... and a task's output the level of its producer's inputs.
    f.ip("192.0.2.9", Some(2)).await;
    let scan = f.submit_one("nmap", &["192.0.2.9"]).await;
    let old = put_file(
        &f,
        Some(scan.id),
        "nmap",
        None,
        crate::store::LevelSource::Unrecorded,
    )
    .await;
    assert_eq!(f.engine.file_stored(&old).await.unwrap().len(), 1);
    // No scan level on the file: nothing runs on it.
    let none = put_file(&f, None, "nmap", None, crate::store::LevelSource::Objects).await;
    let e = f
        .engine
        .submit(f.req("parse-nmap", &[&none.id.to_string()]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::PermissionDenied(m) if m.contains("carries no scan level")),
        "{e}"
    );
}

/// A runtime whose image pull takes `pull` and that records the container's deadline; a token
/// authority that records the claims it mints.
#[derive(Debug)]
struct SlowPull {
    pull: Duration,
    minted: Mutex<Vec<Claims>>,
    deadlines: Mutex<Vec<Timestamp>>,
    pulled: Mutex<HashSet<String>>,
}

impl SlowPull {
    async fn pull_once(&self, image: &str) {
        if !lock(&self.pulled).contains(image) {
            tokio::time::sleep(self.pull).await;
            lock(&self.pulled).insert(image.to_string());
        }
    }
}

#[async_trait]
impl ContainerRuntime for SlowPull {
    async fn capabilities(&self) -> Result<Capabilities> {
        Err(Error::backend("test", "not asked", false))
    }
    async fn prepare_entrypoint(
        &self,
        _: &EntrypointBinary,
        _: &str,
        _: &str,
    ) -> Result<EntrypointMount> {
        Err(Error::backend("test", "not asked", false))
    }
    async fn ensure_image(&self, image: &str, _: Duration) -> Result<()> {
        self.pull_once(image).await;
        Ok(())
    }
    async fn run(&self, spec: ContainerSpec, _: CancellationToken) -> Result<Outcome> {
        // Like an engine: a missing image is pulled before the create; the deadline starts after it.
        self.pull_once(&spec.image).await;
        let deadline = Timestamp::now().plus_secs(spec.timeout.as_secs() as i64);
        lock(&self.deadlines).push(deadline);
        Ok(exited_zero())
    }
    async fn list_managed(&self) -> Result<Vec<ManagedContainer>> {
        Ok(vec![])
    }
    async fn reap_orphans(&self, _: &str, _: &HashSet<TaskId>) -> Result<Vec<String>> {
        Ok(vec![])
    }
}

#[async_trait]
impl TokenAuthority for SlowPull {
    fn mint(&self, c: &Claims) -> Result<String> {
        lock(&self.minted).push(c.clone());
        Ok("token".into())
    }
    async fn verify(&self, _: &str) -> Result<Claims> {
        Err(Error::Unauthenticated("not asked".into()))
    }
    async fn revoke(&self, _: &str, _: i64) -> Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_token_outlives_the_container_however_slow_the_pull() {
    let f = fixture().await;
    let slow = Arc::new(SlowPull {
        pull: Duration::from_millis(2500),
        minted: Mutex::new(Vec::new()),
        deadlines: Mutex::new(Vec::new()),
        pulled: Mutex::new(HashSet::new()),
    });
    let engine = Engine::builder()
        .objects(f.objects.clone())
        .files(f.files.clone())
        .tasks(f.tasks.clone())
        .runtime(slow.clone())
        .tokens(slow.clone())
        .config(EngineConfig {
            plugin_timeout: Duration::from_secs(1),
            ..EngineConfig::default()
        })
        .build()
        .unwrap();
    let t = engine.submit(f.req("download", &[])).await.unwrap()[0].clone();
    engine.run_task(t.id).await.unwrap();
    let got = f.tasks.get_task(t.id).await.unwrap().unwrap();
    assert_eq!(got.state, TaskState::Completed, "{:?}", got.reason);
    let minted = lock(&slow.minted).clone();
    let deadlines = lock(&slow.deadlines).clone();
    assert_eq!((minted.len(), deadlines.len()), (1, 1));
    // Without the grace (meant for the last upload after a kill), the token still covers the
    // container's whole life: the pull happened before the token was minted.
    assert!(
        minted[0].exp - crate::token::GRACE_SECS >= deadlines[0].as_secs(),
        "token expires at {} (+{} grace) but the container may run until {}",
        minted[0].exp - crate::token::GRACE_SECS,
        crate::token::GRACE_SECS,
        deadlines[0].as_secs()
    );
}

#[tokio::test]
async fn cancelling_a_queued_task_means_it_never_starts() {
    let f = fixture().await;
    let t = f.submit_one("download", &[]).await;
    let c = f.engine.cancel(&f.org, t.id).await.unwrap();
    assert_eq!(c.state, TaskState::Cancelled);
    // The worker's claim (queued -> running) now fails, so run_task does nothing.
    f.engine.run_task(t.id).await.unwrap();
    let got = f.tasks.get_task(t.id).await.unwrap().unwrap();
    assert_eq!((got.state, got.attempts), (TaskState::Cancelled, 0));
    let e = f.engine.cancel(&f.org, t.id).await.unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    let other = OrgCode::new("other").unwrap();
    let e = f.engine.cancel(&other, t.id).await.unwrap_err();
    assert!(
        matches!(e, Error::NotFound { .. }),
        "another organization cannot see it: {e}"
    );
}

#[tokio::test]
async fn a_runtime_error_fails_the_task_with_its_reason() {
    let f = fixture().await;
    let t = f.submit_one("download", &[]).await;
    f.engine.run_task(t.id).await.unwrap();
    let got = f.tasks.get_task(t.id).await.unwrap().unwrap();
    assert_eq!(got.state, TaskState::Failed);
    assert!(got.reason.unwrap().contains("no tokens in these tests"));
    assert!(got.ended_at.is_some());
    assert!(lock(&f.engine.inner.running).is_empty());
}

#[tokio::test]
async fn recovery_fails_or_requeues_tasks_left_running() {
    let f = fixture().await;
    f.host("a.example", Some(1)).await;
    let a = f.submit_one("dns", &["a.example"]).await;
    let b = f.submit_one("download", &[]).await;
    let c = f.submit_one("download", &[]).await;
    for t in [&a, &b] {
        f.tasks
            .transition_task(
                t.id,
                &[TaskState::Queued],
                TaskPatch::to(TaskState::Running),
            )
            .await
            .unwrap();
    }
    // A new engine process over the same stores.
    let engine = Engine::builder()
        .objects(f.objects.clone())
        .files(f.files.clone())
        .tasks(f.tasks.clone())
        .runtime(Arc::new(NotStarted))
        .tokens(Arc::new(NotStarted))
        .build()
        .unwrap();
    let rec = engine.recover().await.unwrap();
    assert_eq!(rec.failed, vec![a.id]);
    assert_eq!(rec.requeued, vec![b.id], "download is idempotent");
    assert_eq!(
        rec.queued, 2,
        "the requeued task and the one that was still queued"
    );
    let a2 = f.tasks.get_task(a.id).await.unwrap().unwrap();
    assert_eq!(a2.state, TaskState::Failed);
    assert!(a2.reason.unwrap().contains("restarted"));
    assert_eq!(
        f.tasks.get_task(b.id).await.unwrap().unwrap().state,
        TaskState::Queued
    );
    assert_eq!(
        f.tasks.get_task(c.id).await.unwrap().unwrap().state,
        TaskState::Queued
    );
    let running = TaskQuery {
        states: Some(vec![TaskState::Running]),
        ..TaskQuery::default()
    };
    assert_eq!(
        f.tasks.list_tasks(&running).await.unwrap().count,
        0,
        "no task is left running"
    );
}

/// A token authority that only records revocations.
#[derive(Debug, Default)]
struct RecordsRevocations(std::sync::Mutex<Vec<(String, i64)>>);

#[async_trait]
impl TokenAuthority for RecordsRevocations {
    fn mint(&self, _: &Claims) -> Result<String> {
        Err(Error::backend("test", "no tokens in these tests", false))
    }
    async fn verify(&self, _: &str) -> Result<Claims> {
        Err(Error::Unauthenticated("no tokens in these tests".into()))
    }
    async fn revoke(&self, jti: &str, exp: i64) -> Result<()> {
        self.0.lock().unwrap().push((jti.to_string(), exp));
        Ok(())
    }
}

#[tokio::test]
async fn recovery_revokes_the_tokens_of_interrupted_tasks() {
    let f = fixture().await;
    f.host("a.example", Some(1)).await;
    let failed = f.submit_one("dns", &["a.example"]).await;
    let requeued = f.submit_one("download", &[]).await;
    let tokenless = f.submit_one("download", &[]).await;
    for (t, jti) in [
        (&failed, Some("jti-a")),
        (&requeued, Some("jti-b")),
        (&tokenless, None),
    ] {
        let mut p = TaskPatch::to(TaskState::Running);
        p.token = jti.map(|j| TaskToken {
            jti: j.into(),
            exp: 4_000_000_000,
        });
        f.tasks
            .transition_task(t.id, &[TaskState::Queued], p)
            .await
            .unwrap();
    }
    let stored = f.tasks.get_task(failed.id).await.unwrap().unwrap();
    assert_eq!(stored.token.as_ref().map(|t| t.jti.as_str()), Some("jti-a"));
    let tokens = Arc::new(RecordsRevocations::default());
    let engine = Engine::builder()
        .objects(f.objects.clone())
        .files(f.files.clone())
        .tasks(f.tasks.clone())
        .runtime(Arc::new(NotStarted))
        .tokens(tokens.clone())
        .build()
        .unwrap();
    let rec = engine.recover().await.unwrap();
    assert_eq!(rec.failed, vec![failed.id]);
    assert_eq!(rec.requeued.len(), 2);
    assert_eq!(rec.revoked, 2);
    let mut revoked = tokens.0.lock().unwrap().clone();
    revoked.sort();
    assert_eq!(
        revoked,
        vec![
            ("jti-a".to_string(), 4_000_000_000),
            ("jti-b".to_string(), 4_000_000_000)
        ],
        "the failed task's token and the requeued task's old token"
    );
}

#[tokio::test]
async fn disabling_a_plugin_is_per_organization() {
    let f = fixture().await;
    let beta = OrgCode::new("beta").unwrap();
    f.tasks
        .put_organization(Organization::new(beta.clone(), "Beta"))
        .await
        .unwrap();
    f.tasks
        .set_plugin_override(&f.org, "download", Some(false))
        .await
        .unwrap();
    let e = f.refused("download", &[]).await;
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    assert!(e.to_string().contains("acme"), "{e}");
    let t = f
        .engine
        .submit(TaskRequest {
            org: beta.clone(),
            plugin_id: "download".into(),
            input: vec![],
            submitter: Submitter::operator("test"),
        })
        .await
        .expect("beta keeps the catalogue's default");
    assert_eq!(t[0].org, beta);
    // A global schedule runs for the organizations that have the plugin enabled only.
    let s = Schedule {
        id: ScheduleId::new(),
        number: 0,
        org: None,
        plugin_id: "download".into(),
        object_set: None,
        interval: Interval::from_secs(3600).unwrap(),
        enabled: true,
        next_run_at: Timestamp::from_secs(0),
        last_run_at: None,
        created_at: Timestamp::from_secs(0),
        owner: None,
        disabled_reason: None,
    };
    f.tasks.put_schedule(s.clone()).await.unwrap();
    f.engine.tick(Timestamp::from_secs(1000)).await.unwrap();
    let made: Vec<OrgCode> = f
        .all_tasks()
        .await
        .into_iter()
        .filter(|t| t.schedule == Some(s.id))
        .map(|t| t.org)
        .collect();
    assert_eq!(made, vec![beta.clone()]);
    // An organization may enable a plugin the catalogue disables; the others still may not use it.
    f.tasks
        .set_plugin_override(&beta, "parse-nmap-off", Some(true))
        .await
        .unwrap();
    assert!(
        f.engine
            .enabled_plugin(&beta, "parse-nmap-off")
            .await
            .is_ok()
    );
    assert!(
        f.engine
            .enabled_plugin(&f.org, "parse-nmap-off")
            .await
            .is_err()
    );
}

#[test]
fn exit_reasons_name_entrypoint_codes() {
    assert!(exit_reason(Some(123)).contains("upload"));
    assert!(exit_reason(Some(127)).contains("not found"));
    assert!(exit_reason(Some(137)).contains("signal 9"));
    assert_eq!(exit_reason(Some(2)), "exit 2");
    assert!(exit_reason(None).contains("without"));
}

#[test]
fn config_reads_the_seed_variables() {
    let c = EngineConfig::default();
    assert_eq!(c.entrypoint_volume, "plugin-entrypoint");
    assert_eq!(c.plugin_timeout, Duration::from_secs(900));
    assert_eq!(c.network, NetworkMode::Bridge);
    assert_eq!(c.default_batch_size, 50);
    let vars: std::collections::HashMap<&str, &str> = [
        ("ENTRYPOINT_VOLUME", "ep2"),
        ("OPENKAT_HOST", "http://127.0.0.1:8123/"),
        ("DOCKER_NETWORK", "host"),
        ("PLUGIN_TIMEOUT", "0.5"),
    ]
    .into();
    let c = EngineConfig::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap();
    assert_eq!(c.entrypoint_volume, "ep2");
    assert_eq!(c.api_url, "http://127.0.0.1:8123/api/v1");
    assert_eq!(c.network, NetworkMode::Host);
    assert_eq!(c.plugin_timeout, Duration::from_secs(30));
    let e = EngineConfig::from_lookup(|k| (k == "PLUGIN_TIMEOUT").then(|| "soon".to_string()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("PLUGIN_TIMEOUT"), "{e}");
}

#[test]
fn a_bad_plugin_timeout_is_an_error_naming_the_variable_and_the_value() {
    for bad in [
        "1e300", "-1", "NaN", "nan", "inf", "abc", "0", "0.0", "1e-300", "10081",
    ] {
        let e = EngineConfig::from_lookup(|k| (k == "PLUGIN_TIMEOUT").then(|| bad.to_string()))
            .expect_err(bad);
        assert!(
            matches!(e, Error::Invalid { ref at, .. } if at == "PLUGIN_TIMEOUT"),
            "{bad}: {e}"
        );
        let m = e.to_string();
        assert!(m.contains(&format!("PLUGIN_TIMEOUT={bad:?}")), "{bad}: {m}");
    }
    let c = EngineConfig::from_lookup(|k| (k == "PLUGIN_TIMEOUT").then(|| "10080".to_string()))
        .expect("seven days");
    assert_eq!(c.plugin_timeout, Duration::from_secs(7 * 86_400));
}

#[test]
fn the_deployment_name_comes_from_kat_deployment_and_is_checked() {
    assert_eq!(EngineConfig::default().deployment, "default");
    let c = EngineConfig::from_lookup(|k| (k == "KAT_DEPLOYMENT").then(|| "blue-1".to_string()))
        .unwrap();
    assert_eq!(c.deployment, "blue-1");
    for bad in ["has space", "x/y", &"a".repeat(65)] {
        let e = EngineConfig::from_lookup(|k| (k == "KAT_DEPLOYMENT").then(|| bad.to_string()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("KAT_DEPLOYMENT"), "{bad:?}: {e}");
    }
    let built = Engine::builder()
        .objects(Arc::new(MemoryObjectStore::default()))
        .files(Arc::new(MemoryFileStore::default()))
        .tasks(Arc::new(MemoryTaskStore::default()))
        .runtime(Arc::new(NotStarted))
        .tokens(Arc::new(NotStarted))
        .config(EngineConfig {
            deployment: String::new(),
            ..EngineConfig::default()
        })
        .build();
    assert!(
        matches!(built, Err(Error::Invalid { ref at, .. }) if at == "deployment"),
        "{built:?}"
    );
}

/// Records the deployment it is asked to reap.
#[derive(Debug, Default)]
struct Reaper(std::sync::Mutex<Vec<String>>);

#[async_trait]
impl ContainerRuntime for Reaper {
    async fn capabilities(&self) -> Result<Capabilities> {
        NotStarted.capabilities().await
    }
    async fn prepare_entrypoint(
        &self,
        b: &EntrypointBinary,
        v: &str,
        d: &str,
    ) -> Result<EntrypointMount> {
        NotStarted.prepare_entrypoint(b, v, d).await
    }
    async fn run(&self, s: ContainerSpec, c: CancellationToken) -> Result<Outcome> {
        NotStarted.run(s, c).await
    }
    async fn list_managed(&self) -> Result<Vec<ManagedContainer>> {
        Ok(vec![])
    }
    async fn reap_orphans(&self, deployment: &str, _: &HashSet<TaskId>) -> Result<Vec<String>> {
        self.0.lock().unwrap().push(deployment.to_string());
        Ok(vec![format!("reaped-in-{deployment}")])
    }
}

#[tokio::test]
async fn recovery_reaps_only_the_engines_own_deployment() {
    let reaper = Arc::new(Reaper::default());
    let engine = Engine::builder()
        .objects(Arc::new(MemoryObjectStore::default()))
        .files(Arc::new(MemoryFileStore::default()))
        .tasks(Arc::new(MemoryTaskStore::default()))
        .runtime(reaper.clone())
        .tokens(Arc::new(NotStarted))
        .config(EngineConfig {
            deployment: "green".into(),
            ..EngineConfig::default()
        })
        .build()
        .unwrap();
    let rec = engine.recover().await.unwrap();
    assert_eq!(*reaper.0.lock().unwrap(), ["green"]);
    assert_eq!(rec.reaped, ["reaped-in-green"]);
}

/// Runs nothing, but records every spec it is asked to run and says it exited 0.
#[derive(Debug, Default)]
struct Recorder(std::sync::Mutex<Vec<ContainerSpec>>);

#[async_trait]
impl ContainerRuntime for Recorder {
    async fn capabilities(&self) -> Result<Capabilities> {
        NotStarted.capabilities().await
    }
    async fn prepare_entrypoint(
        &self,
        b: &EntrypointBinary,
        v: &str,
        d: &str,
    ) -> Result<EntrypointMount> {
        NotStarted.prepare_entrypoint(b, v, d).await
    }
    async fn run(&self, s: ContainerSpec, _: CancellationToken) -> Result<Outcome> {
        self.0.lock().unwrap().push(s);
        Ok(exited_zero())
    }
    async fn list_managed(&self) -> Result<Vec<ManagedContainer>> {
        Ok(vec![])
    }
    async fn reap_orphans(&self, _: &str, _: &HashSet<TaskId>) -> Result<Vec<String>> {
        Ok(vec![])
    }
}

/// Mints a fixed token.
#[derive(Debug)]
struct Minter;

#[async_trait]
impl TokenAuthority for Minter {
    fn mint(&self, _: &Claims) -> Result<String> {
        Ok("token".into())
    }
    async fn verify(&self, _: &str) -> Result<Claims> {
        Err(Error::Unauthenticated("not here".into()))
    }
    async fn revoke(&self, _: &str, _: i64) -> Result<()> {
        Ok(())
    }
}

const PRIVILEGED: &str = r#"[
  {"plugin_id": "as-root", "scan_level": 0, "oci_image": "i", "oci_arguments": ["id", "-u"], "user": "0:0"},
  {"plugin_id": "admin", "scan_level": 0, "oci_image": "i", "oci_arguments": ["mount"], "cap_add": ["SYS_ADMIN"]},
  {"plugin_id": "plain", "scan_level": 0, "oci_image": "i", "oci_arguments": ["true"]},
  {"plugin_id": "cache", "scan_level": 0, "oci_image": "i", "oci_arguments": ["true"], "writable_paths": ["/var/cache/x"]}
]"#;

/// An engine over a catalogue synced under a policy granting everything in [`PRIVILEGED`], itself
/// holding `policy`.
async fn privileged(policy: Policy) -> (Engine, Arc<MemoryTaskStore>, Arc<Recorder>) {
    let tasks = Arc::new(MemoryTaskStore::default());
    let runtime = Arc::new(Recorder::default());
    let engine = Engine::builder()
        .objects(Arc::new(MemoryObjectStore::default()))
        .files(Arc::new(MemoryFileStore::default()))
        .tasks(tasks.clone())
        .runtime(runtime.clone())
        .tokens(Arc::new(Minter))
        .config(EngineConfig {
            use_entrypoint: false,
            ..EngineConfig::default()
        })
        .policy(policy)
        .build()
        .unwrap();
    let loose = Policy::parse(
        r#"{"plugins": {"as-root": {"user": "0:0"}, "admin": {"cap_add": ["SYS_ADMIN"]},
            "cache": {"writable_paths": ["/var/cache"]}}}"#,
        "loose.json",
    )
    .unwrap();
    let defs = PluginDef::parse_file(PRIVILEGED, "privileged.json").unwrap();
    let (writes, report) = crate::plugin::sync_with_policy(&[], &defs, true, &loose);
    assert!(report.refused.is_empty());
    tasks.put_plugins(writes).await.unwrap();
    (engine, tasks, runtime)
}

fn org() -> OrgCode {
    OrgCode::new("acme").unwrap()
}

#[tokio::test]
async fn the_engines_policy_refuses_privileges_at_submit_even_when_the_catalogue_allowed_them() {
    let (engine, _, runtime) = privileged(Policy::default()).await;
    for (plugin, field) in [
        ("as-root", "user: asks for \"0:0\""),
        ("admin", "cap_add"),
        ("cache", "writable_paths"),
    ] {
        let e = engine
            .submit(TaskRequest {
                org: org(),
                plugin_id: plugin.into(),
                input: vec![],
                submitter: Submitter::operator("test"),
            })
            .await
            .expect_err("refused");
        assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
        assert!(
            e.to_string()
                .contains(&format!("plugin \"{plugin}\": {field}")),
            "{e}"
        );
    }
    // The others run as before.
    let t = engine
        .submit(TaskRequest {
            org: org(),
            plugin_id: "plain".into(),
            input: vec![],
            submitter: Submitter::operator("test"),
        })
        .await
        .unwrap();
    assert_eq!(t.len(), 1);
    assert!(runtime.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_task_whose_plugin_the_policy_refuses_fails_before_its_container_is_created() {
    let (engine, tasks, runtime) = privileged(Policy::default()).await;
    // Queued while the policy allowed it (here: straight into the store), run under a tighter one.
    let t = Task::queued(org(), "as-root", TaskInput::default());
    tasks.create_tasks(vec![t.clone()]).await.unwrap();
    engine.run_task(t.id).await.unwrap();
    let got = tasks.get_task(t.id).await.unwrap().unwrap();
    assert_eq!(got.state, TaskState::Failed);
    let reason = got.reason.unwrap();
    assert!(
        reason.contains("plugin \"as-root\": user: asks for \"0:0\"")
            && reason.contains("only the default user"),
        "{reason}"
    );
    assert!(runtime.0.lock().unwrap().is_empty(), "no container");
}

#[tokio::test]
async fn a_granted_plugin_runs_with_what_it_asked_for_and_nothing_else() {
    let policy = Policy::parse(
        r#"{"plugins": {"as-root": {"user": "0:0"}, "admin": {"cap_add": ["SYS_ADMIN"]},
            "cache": {"writable_paths": ["/var/cache/x"]}}}"#,
        "policy.json",
    )
    .unwrap();
    let (engine, tasks, runtime) = privileged(policy).await;
    for plugin in ["as-root", "admin", "plain", "cache"] {
        let t = engine
            .submit(TaskRequest {
                org: org(),
                plugin_id: plugin.into(),
                input: vec![],
                submitter: Submitter::operator("test"),
            })
            .await
            .unwrap()
            .remove(0);
        engine.run_task(t.id).await.unwrap();
        let got = tasks.get_task(t.id).await.unwrap().unwrap();
        assert_eq!(got.state, TaskState::Completed, "{plugin}: {got:?}");
    }
    let specs = runtime.0.lock().unwrap();
    let h: Vec<_> = specs.iter().map(|s| &s.hardening).collect();
    assert_eq!(h[0].user.as_deref(), Some("0:0"));
    assert!(h[0].cap_add.is_empty());
    assert_eq!(h[1].user.as_deref(), Some(crate::runtime::DEFAULT_USER));
    assert_eq!(h[1].cap_add, ["SYS_ADMIN"]);
    assert_eq!(h[2], &Hardening::default());
    assert_eq!(h[3].writable_paths, ["/var/cache/x"]);
    assert_eq!(h[3].user.as_deref(), Some(crate::runtime::DEFAULT_USER));
    for h in h {
        assert!(h.read_only_rootfs && h.no_new_privileges);
    }
}

fn user(perms: serde_json::Value, jti: &str, expires_at: i64) -> Submitter {
    Submitter {
        subject: "user:alice".into(),
        permissions: Permissions::from_json(&perms, "test").unwrap(),
        token: Some(SubmitterToken {
            jti: jti.into(),
            expires_at: Timestamp::from_secs(expires_at),
        }),
    }
}

#[tokio::test]
async fn a_submitter_needs_every_permission_the_plugin_declares() {
    let f = fixture().await;
    f.host("a.example", Some(1)).await;
    // Holding tasks.add_task (the route's permission) is not enough: the plugin's own are missing.
    let mut r = f.req("writer", &["a.example"]);
    r.submitter = user(json!({"tasks.add_task": {}}), "j1", i64::MAX);
    let e = f.engine.submit(r).await.unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    assert!(
        m.contains("plugin writer") && m.contains("user:alice"),
        "{m}"
    );
    assert!(
        m.contains("objects.add_hostname {}")
            && m.contains(r#"objects.delete_hostname {"pks":["internet|a.example"]}"#),
        "{m}"
    );
    // A narrower scope does not cover an unrestricted declaration; only the missing one is named.
    let mut r = f.req("writer", &["a.example"]);
    r.submitter = user(
        json!({"objects.add_hostname": {"pks": ["internet|a.example"]}, "objects.delete_hostname": {}}),
        "j1",
        i64::MAX,
    );
    let m = f.engine.submit(r).await.unwrap_err().to_string();
    assert!(m.contains("objects.add_hostname {}"), "{m}");
    assert!(!m.contains("delete_hostname"), "{m}");
    assert!(f.all_tasks().await.is_empty(), "nothing is queued");
    // Holding them (wider scopes included) queues the task.
    let mut r = f.req("writer", &["a.example"]);
    r.submitter = user(
        json!({"objects.add_hostname": {}, "objects.delete_hostname": {"pks": ["internet|a.example", "internet|b.example"]}}),
        "j1",
        i64::MAX,
    );
    assert_eq!(f.engine.submit(r).await.unwrap().len(), 1);
    // A plugin that declares nothing needs nothing more.
    let mut r = f.req("dns", &["a.example"]);
    r.submitter = user(json!({}), "j1", i64::MAX);
    assert_eq!(f.engine.submit(r).await.unwrap().len(), 1);
}

async fn owned_schedule(f: &Fixture, owner: Submitter) -> ScheduleId {
    let sid = schedule_over_all_hostnames(f, "writer", 3600).await;
    let mut s = f.tasks.get_schedule(sid).await.unwrap().unwrap();
    s.owner = Some(owner);
    f.tasks.put_schedule(s).await.unwrap();
    sid
}

#[tokio::test]
async fn a_schedule_runs_with_its_owners_rights_and_stops_when_they_are_gone() {
    let f = fixture().await;
    f.host("a.example", Some(1)).await;
    let rights = json!({"objects.add_hostname": {}, "objects.delete_hostname": {}});
    let t0 = 1_800_000_000;
    // A live owner: the schedule runs.
    let live = owned_schedule(&f, user(rights.clone(), "live", t0 + 86_400)).await;
    // Revoked: disabled with the reason, nothing created.
    let revoked = owned_schedule(&f, user(rights.clone(), "revoked", t0 + 86_400)).await;
    f.tasks.revoke_token("revoked", t0 + 86_400).await.unwrap();
    // Expired.
    let expired = owned_schedule(&f, user(rights.clone(), "old", t0 - 1)).await;
    // No longer covering the plugin's permissions (say the plugin's definition grew).
    let short = owned_schedule(
        &f,
        user(json!({"objects.add_hostname": {}}), "short", t0 + 86_400),
    )
    .await;
    let r = f.engine.tick(Timestamp::from_secs(t0)).await.unwrap();
    assert_eq!((r.schedules, r.tasks, r.disabled), (4, 1, 3), "{r:?}");
    let tasks = f.all_tasks().await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].schedule, Some(live));
    for (sid, needle) in [
        (revoked, "was revoked"),
        (expired, "expired"),
        (short, "objects.delete_hostname"),
    ] {
        let s = f.tasks.get_schedule(sid).await.unwrap().unwrap();
        assert!(!s.enabled, "{sid}");
        let reason = s.disabled_reason.unwrap_or_default();
        assert!(reason.contains(needle), "{sid}: {reason}");
    }
    let s = f.tasks.get_schedule(live).await.unwrap().unwrap();
    assert!(s.enabled && s.disabled_reason.is_none());
    // The live owner's token is revoked later: the next tick stops that schedule too.
    f.tasks.revoke_token("live", t0 + 86_400).await.unwrap();
    let r = f
        .engine
        .tick(Timestamp::from_secs(t0 + 3600))
        .await
        .unwrap();
    assert_eq!((r.tasks, r.disabled), (0, 1));
    assert_eq!(f.all_tasks().await.len(), 1);
}

/// What the test runtimes answer for a container that ran: it exited 0 without output.
fn exited_zero() -> Outcome {
    Outcome {
        reason: EndReason::Exited,
        exit_code: Some(0),
        stdout_tail: Vec::new(),
        stderr_tail: Vec::new(),
        container_id: "c".into(),
        elapsed: Duration::ZERO,
    }
}

#[tokio::test]
async fn a_url_is_scanned_at_its_hosts_level() {
    let f = fixture().await;
    f.host("high.example", Some(2)).await;
    f.host("low.example", Some(1)).await;
    f.ip("192.0.2.7", Some(3)).await;
    for u in [
        "https://high.example/login",
        "https://low.example/",
        "http://192.0.2.7:8080/",
    ] {
        f.declare(ObjectType::Url, json!({ "url": u }), None).await;
    }
    // A URL written while its host was unknown (the host deleted since): never scanned.
    f.declare(
        ObjectType::Url,
        json!({ "url": "https://gone.example/" }),
        None,
    )
    .await;
    f.objects
        .delete(
            &f.org,
            ObjectType::Hostname,
            &[NaturalKey::from_parts(["internet", "gone.example"])],
        )
        .await
        .unwrap();

    // Manual tasks: a bare URL (default network, canonicalised) or a key; the gate reads the host.
    let t = f
        .submit_one(
            "nuclei",
            &[
                "HTTPS://High.Example/login",
                "internet|http://192.0.2.7:8080",
            ],
        )
        .await;
    let keys: Vec<&str> = t.input.objects.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "internet|https://high.example/login",
            "internet|http://192.0.2.7:8080/"
        ]
    );
    assert!(
        t.input
            .objects
            .iter()
            .all(|r| r.object_type == ObjectType::Url)
    );
    let e = f.refused("nuclei", &["https://low.example/"]).await;
    assert!(matches!(e, Error::PermissionDenied(_)), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("needs scan level L2") && e.contains("L1") && e.contains("host"),
        "{e}"
    );
    let e = f.refused("nuclei", &["https://gone.example/"]).await;
    assert!(matches!(e, Error::PermissionDenied(_)), "{e}");
    assert!(e.to_string().contains("internet|gone.example"), "{e}");
    let e = f.refused("nuclei", &["https://unknown.example/"]).await;
    assert!(matches!(e, Error::NotFound { .. }), "{e}");

    // Raising the host's level raises the URL's.
    f.host("low.example", Some(2)).await;
    f.submit_one("nuclei", &["https://low.example/"]).await;

    // A schedule over every URL picks those whose host allows the plugin.
    f.host("low.example", Some(1)).await;
    let set = ObjectSet {
        id: ObjectSetId::new(),
        number: 0,
        name: "All URLs".into(),
        description: String::new(),
        org: f.org.clone(),
        object_type: ObjectType::Url,
        all: true,
        filters: vec![],
        keys: vec![NaturalKey::from_parts(["internet", "https://low.example/"])],
    };
    let objs = f
        .engine
        .objects_of_set(
            &f.org,
            &set,
            &f.engine.enabled_plugin(&f.org, "nuclei").await.unwrap(),
        )
        .await
        .unwrap();
    let mut keys: Vec<String> = objs.iter().map(|r| r.key.to_string()).collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "internet|http://192.0.2.7:8080/",
            "internet|https://high.example/login"
        ]
    );

    // The output of a URL task carries the host's level along a chain.
    let (level, _) =
        crate::chain::level_of_output(f.objects.as_ref(), f.files.as_ref(), f.tasks.as_ref(), &t)
            .await
            .unwrap();
    assert_eq!(level, Some(ScanLevel::new(2).unwrap()));
}

/// Stands in for a plugin whose API calls the API refuses: while "running" it records two refusals
/// on its task through the task store (what kat-http does on a 403), then exits 0.
#[derive(Debug)]
struct RefusedWrites(Arc<MemoryTaskStore>);

#[async_trait]
impl ContainerRuntime for RefusedWrites {
    async fn capabilities(&self) -> Result<Capabilities> {
        NotStarted.capabilities().await
    }
    async fn prepare_entrypoint(
        &self,
        b: &EntrypointBinary,
        v: &str,
        d: &str,
    ) -> Result<EntrypointMount> {
        NotStarted.prepare_entrypoint(b, v, d).await
    }
    async fn run(&self, s: ContainerSpec, _: CancellationToken) -> Result<Outcome> {
        let id: TaskId = s.labels[LABEL_TASK].parse()?;
        for why in ["POST /api/v1/objects/: 403 no objects.add_ipport", "later"] {
            self.0
                .transition_task(id, &[TaskState::Running], TaskPatch::refused_call(why))
                .await?;
        }
        Ok(exited_zero())
    }
    async fn list_managed(&self) -> Result<Vec<ManagedContainer>> {
        Ok(vec![])
    }
    async fn reap_orphans(&self, _: &str, _: &HashSet<TaskId>) -> Result<Vec<String>> {
        Ok(vec![])
    }
}

#[tokio::test]
async fn a_task_whose_calls_were_refused_says_so_when_it_ends() {
    let tasks = Arc::new(MemoryTaskStore::default());
    let engine = Engine::builder()
        .objects(Arc::new(MemoryObjectStore::default()))
        .files(Arc::new(MemoryFileStore::default()))
        .tasks(tasks.clone())
        .runtime(Arc::new(RefusedWrites(tasks.clone())))
        .tokens(Arc::new(Minter))
        .config(EngineConfig {
            use_entrypoint: false,
            ..EngineConfig::default()
        })
        .build()
        .unwrap();
    let defs = PluginDef::parse_file(PRIVILEGED, "privileged.json").unwrap();
    let (writes, _) = crate::plugin::sync(&[], &defs, true);
    tasks.put_plugins(writes).await.unwrap();
    let t = engine
        .submit(TaskRequest {
            org: org(),
            plugin_id: "plain".into(),
            input: vec![],
            submitter: Submitter::operator("test"),
        })
        .await
        .unwrap()
        .remove(0);
    engine.run_task(t.id).await.unwrap();
    let got = tasks.get_task(t.id).await.unwrap().unwrap();
    // Still `completed` (the original's clients read that), but not a clean success.
    assert_eq!(got.state, TaskState::Completed);
    assert_eq!(got.refused_calls, 2);
    assert_eq!(
        got.reason.as_deref(),
        Some(
            "mode 2 (standalone) finished; 2 API calls refused (first: POST /api/v1/objects/: 403 no objects.add_ipport)"
        )
    );
}

/// Mints a fixed token and keeps the claims it was asked to sign.
#[derive(Debug, Default)]
struct ClaimsKept(std::sync::Mutex<Vec<Claims>>);

#[async_trait]
impl TokenAuthority for ClaimsKept {
    fn mint(&self, c: &Claims) -> Result<String> {
        self.0.lock().unwrap().push(c.clone());
        Ok("token".into())
    }
    async fn verify(&self, _: &str) -> Result<Claims> {
        Err(Error::Unauthenticated("not here".into()))
    }
    async fn revoke(&self, _: &str, _: i64) -> Result<()> {
        Ok(())
    }
}

/// A plugin written for OpenKAT asks for nothing; the operator's grant gives it its user,
/// capabilities, writable paths and extra API permissions (never `objects.can_set_scan_level`),
/// and a submitter who holds none of those still runs it. Without the grant it runs hardened.
#[tokio::test]
async fn a_grant_gives_a_plugin_that_asks_for_nothing_what_it_needs() {
    let policy = Policy::parse(
        r#"{"plugins": {"plain": {"user": "0:0", "cap_add": ["NET_RAW"], "writable_paths": ["/var/cache/x"],
            "extra_permissions": {"objects.add_ipport": {}, "objects.add_ipaddress": {"pks": ["internet|127.0.0.1"]}}}}}"#,
        "policy.json",
    )
    .unwrap();
    for granted in [true, false] {
        let tasks = Arc::new(MemoryTaskStore::default());
        let runtime = Arc::new(Recorder::default());
        let tokens = Arc::new(ClaimsKept::default());
        let engine = Engine::builder()
            .objects(Arc::new(MemoryObjectStore::default()))
            .files(Arc::new(MemoryFileStore::default()))
            .tasks(tasks.clone())
            .runtime(runtime.clone())
            .tokens(tokens.clone())
            .config(EngineConfig {
                use_entrypoint: false,
                ..EngineConfig::default()
            })
            .policy(if granted {
                policy.clone()
            } else {
                Policy::default()
            })
            .build()
            .unwrap();
        let defs = PluginDef::parse_file(PRIVILEGED, "privileged.json").unwrap();
        let (writes, _) = crate::plugin::sync(&[], &defs, true);
        tasks.put_plugins(writes).await.unwrap();
        // A submitter holding no object permission at all.
        let t = engine
            .submit(TaskRequest {
                org: org(),
                plugin_id: "plain".into(),
                input: vec![],
                submitter: user(json!({"tasks.add_task": {}}), "j-plain", i64::MAX),
            })
            .await
            .unwrap()
            .remove(0);
        engine.run_task(t.id).await.unwrap();
        let got = tasks.get_task(t.id).await.unwrap().unwrap();
        assert_eq!(got.state, TaskState::Completed, "{got:?}");
        let h = runtime.0.lock().unwrap()[0].hardening.clone();
        let claims = tokens.0.lock().unwrap()[0].clone();
        let ipport = crate::permission::PermissionName::new(
            crate::permission::Action::Add,
            crate::permission::Resource::Object(ObjectType::IpPort),
        );
        if granted {
            assert_eq!(h.user.as_deref(), Some("0:0"));
            assert_eq!(h.cap_add, ["NET_RAW"]);
            assert_eq!(h.writable_paths, ["/var/cache/x"]);
            assert!(
                h.read_only_rootfs && h.no_new_privileges,
                "the rest stays hardened"
            );
            assert!(claims.permissions.has(&ipport), "{:?}", claims.permissions);
            assert!(
                !claims
                    .permissions
                    .has(&crate::permission::PermissionName::SET_SCAN_LEVEL)
            );
        } else {
            assert_eq!(h, Hardening::default());
            assert!(!claims.permissions.has(&ipport));
        }
    }
}

/// RFD 0009 example 1: files for a `{file}` normalizer arriving while its task for the organization is
/// still queued join that task, up to the plugin's batch size; each file passes its own scan-level gate
/// first; a stdin normalizer keeps one file per task; a task a worker took gains no file.
#[tokio::test]
async fn files_join_a_queued_normalizer_task_up_to_its_batch_size() {
    let f = fixture().await;
    f.ip("192.0.2.1", Some(2)).await;
    let producer = f.submit_one("nmap", &["192.0.2.1"]).await;
    let mut files = Vec::new();
    for _ in 0..3 {
        let file = nmap_file(&f, Some(producer.id), "batch").await;
        f.engine.file_stored(&file).await.unwrap();
        files.push(file.id);
    }
    // One below the consumer's level: refused by the gate, joins nothing.
    let low = put_file(
        &f,
        None,
        "batch",
        ScanLevel::new(1).ok(),
        crate::store::LevelSource::Operator,
    )
    .await;
    f.engine.file_stored(&low).await.unwrap();
    let of = |plugin: &str, all: &[Task]| -> Vec<Vec<FileId>> {
        let mut v: Vec<(Timestamp, Vec<FileId>)> = all
            .iter()
            .filter(|t| t.plugin_id == plugin)
            .map(|t| (t.created_at, t.input.files.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, f)| f).collect()
    };
    let all = f.all_tasks().await;
    assert_eq!(
        of("parse-batch", &all),
        vec![vec![files[0], files[1]], vec![files[2]]]
    );
    assert_eq!(
        of("parse-batch-stdin", &all),
        files.iter().map(|f| vec![*f]).collect::<Vec<_>>(),
        "a file on stdin is one per task"
    );
    // The open task is taken by a worker: the next file gets a task of its own.
    let open = all
        .iter()
        .find(|t| t.plugin_id == "parse-batch" && t.input.files == vec![files[2]])
        .unwrap();
    f.tasks
        .transition_task(
            open.id,
            &[TaskState::Queued],
            TaskPatch::to(TaskState::Running),
        )
        .await
        .unwrap();
    let next = nmap_file(&f, Some(producer.id), "batch").await;
    let chained = f.engine.file_stored(&next).await.unwrap();
    let mine: Vec<&Task> = chained
        .iter()
        .filter(|t| t.plugin_id == "parse-batch")
        .collect();
    assert_eq!(mine.len(), 1);
    assert_ne!(mine[0].id, open.id);
    assert_eq!(mine[0].input.files, vec![next.id]);
    let running = f.tasks.get_task(open.id).await.unwrap().unwrap();
    assert_eq!(
        running.input.files,
        vec![files[2]],
        "a started task gains no file"
    );
    // A batch plans as mode 5, one command per file.
    let p = plan::plan(
        &f.tasks
            .get_plugin("parse-batch")
            .await
            .unwrap()
            .unwrap()
            .def,
        &PlanInput::Files(vec![files[0], files[1]]),
    )
    .unwrap();
    assert_eq!(p.commands.len(), 2);
    assert_eq!(p.commands[1], ["parse".to_string(), files[1].to_string()]);
    // Several files submitted by hand are batched the same way.
    let ids: Vec<String> = files.iter().map(|f| f.to_string()).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let tasks = f.engine.submit(f.req("parse-batch", &refs)).await.unwrap();
    assert_eq!(
        tasks
            .iter()
            .map(|t| t.input.files.len())
            .collect::<Vec<_>>(),
        [2, 1]
    );
    let tasks = f
        .engine
        .submit(f.req("parse-batch-stdin", &refs))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 3, "one file per stdin task");
}

/// Reads, while "running", the commands file a spec names, as the entrypoint would.
#[derive(Debug)]
struct ReadsCommands {
    files: Arc<MemoryFileStore>,
    seen: std::sync::Mutex<Vec<(ContainerSpec, Option<String>)>>,
}

#[async_trait]
impl ContainerRuntime for ReadsCommands {
    async fn capabilities(&self) -> Result<Capabilities> {
        NotStarted.capabilities().await
    }
    async fn prepare_entrypoint(
        &self,
        b: &EntrypointBinary,
        v: &str,
        d: &str,
    ) -> Result<EntrypointMount> {
        NotStarted.prepare_entrypoint(b, v, d).await
    }
    async fn run(&self, s: ContainerSpec, _: CancellationToken) -> Result<Outcome> {
        use futures::TryStreamExt as _;
        let content = match s.env.get(protocol_env::COMMANDS_FILE) {
            Some(id) => {
                let chunks: Vec<Bytes> = self.files.open(id.parse()?).await?.try_collect().await?;
                Some(String::from_utf8(chunks.concat()).unwrap())
            }
            None => None,
        };
        self.seen.lock().unwrap().push((s, content));
        Ok(exited_zero())
    }
    async fn list_managed(&self) -> Result<Vec<ManagedContainer>> {
        Ok(vec![])
    }
    async fn reap_orphans(&self, _: &str, _: &HashSet<TaskId>) -> Result<Vec<String>> {
        Ok(vec![])
    }
}

/// Mode 3 with more commands than one environment string holds: they travel in a temporary file
/// (`KAT_COMMANDS_FILE`) the task's token may read, deleted when the task ends; a short list stays
/// in `KAT_COMMANDS`.
#[tokio::test]
async fn many_commands_travel_in_a_temporary_file_the_token_may_read() {
    let tasks = Arc::new(MemoryTaskStore::default());
    let files = Arc::new(MemoryFileStore::default());
    let runtime = Arc::new(ReadsCommands {
        files: files.clone(),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let tokens = Arc::new(ClaimsKept::default());
    let engine = Engine::builder()
        .objects(Arc::new(MemoryObjectStore::default()))
        .files(files.clone())
        .tasks(tasks.clone())
        .runtime(runtime.clone())
        .tokens(tokens.clone())
        .config(EngineConfig {
            use_entrypoint: false,
            ..EngineConfig::default()
        })
        .build()
        .unwrap();
    let defs = PluginDef::parse_file(
        r#"[{"plugin_id": "echo", "scan_level": 0, "oci_image": "i", "oci_arguments": ["echo", "{hostname}"], "batch_size": 0}]"#,
        "p.json",
    )
    .unwrap();
    let (writes, _) = crate::plugin::sync(&[], &defs, true);
    tasks.put_plugins(writes).await.unwrap();
    for n in [3, 10_000] {
        let objects = (0..n)
            .map(|i| ObjectRef {
                object_type: ObjectType::Hostname,
                key: HostnameRef::parse(&format!("h{i}.example")).unwrap().key(),
            })
            .collect();
        let t = Task::queued(
            org(),
            "echo",
            TaskInput {
                objects,
                files: Vec::new(),
            },
        );
        tasks.create_tasks(vec![t.clone()]).await.unwrap();
        engine.run_task(t.id).await.unwrap();
        let got = tasks.get_task(t.id).await.unwrap().unwrap();
        assert_eq!(got.state, TaskState::Completed, "{got:?}");
        let (spec, content) = runtime.seen.lock().unwrap().pop().unwrap();
        let claims = tokens.0.lock().unwrap().pop().unwrap();
        if n == 3 {
            assert!(spec.env.contains_key(protocol_env::COMMANDS));
            assert!(!spec.env.contains_key(protocol_env::COMMANDS_FILE));
            continue;
        }
        assert!(
            !spec.env.contains_key(protocol_env::COMMANDS),
            "too long for the environment"
        );
        let id = spec.env[protocol_env::COMMANDS_FILE].clone();
        let commands: Vec<Vec<String>> = serde_json::from_str(&content.unwrap()).unwrap();
        assert_eq!(commands.len(), 10_000);
        assert_eq!(commands[9_999], ["echo", "h9999.example"]);
        let view = crate::permission::PermissionName::new(
            crate::permission::Action::View,
            crate::permission::Resource::File,
        );
        assert!(
            claims
                .permissions
                .check(&view, &crate::permission::Access::Object(&id))
                .allowed(),
            "the token reads its commands file"
        );
        assert!(
            files.meta(id.parse().unwrap()).await.unwrap().is_none(),
            "deleted when the task ended"
        );
    }
}

mod leases;
mod set_memo;
