//! Engine logic over the in-memory stores: queueing, gates, batching, scheduling, chaining,
//! cancellation of queued tasks and restart recovery. Running containers is covered end to end against
//! the real Docker engine in the workspace's `tests/`; here no worker is started, so the runtime and the
//! token authority below are never asked to run anything (they fail loudly if they are).

use std::collections::HashSet;

use serde_json::json;

use super::*;
use crate::memory::{MemoryFileStore, MemoryObjectStore, MemoryTaskStore};
use crate::object::{Object, ScanLevel, ScanProfile};
use crate::org::Organization;
use crate::runtime::{Capabilities, ManagedContainer, Outcome};
use crate::schedule::{Interval, ObjectSetId, ScheduleId};
use crate::store::{OrgStore, PluginCatalog, ScheduleStore, TaskQueue};

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
  {"plugin_id": "on-error", "scan_level": 0, "consumes": ["file:error"], "oci_image": "i", "oci_arguments": ["parse", "{file}"]},
  {"plugin_id": "download", "scan_level": 0, "oci_image": "i", "oci_arguments": ["fetch"], "idempotent": true}
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
        .put_organization(Organization {
            code: org.clone(),
            name: "Acme".into(),
        })
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
        lock(&f.engine.inner.queue).len(),
        1,
        "handed to the dispatcher"
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
        assert!(lock(&f.engine.inner.queue).is_empty(), "nothing dispatched");
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
    let set = ObjectSet {
        id: ObjectSetId::new(),
        name: "All hostnames".into(),
        description: String::new(),
        org: f.org.clone(),
        object_type: ObjectType::Hostname,
        all: true,
        filters: vec![],
        keys: vec![],
    };
    f.tasks.put_object_set(set.clone()).await.unwrap();
    let s = Schedule {
        id: ScheduleId::new(),
        org: Some(f.org.clone()),
        plugin_id: plugin.into(),
        object_set: Some(set.id),
        interval: Interval::from_secs(interval).unwrap(),
        enabled: true,
        next_run_at: Timestamp::from_secs(0),
        last_run_at: None,
        created_at: Timestamp::from_secs(0),
    };
    f.tasks.put_schedule(s.clone()).await.unwrap();
    s.id
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
        org: None,
        plugin_id: "download".into(),
        object_set: None,
        interval: Interval::from_secs(3600).unwrap(),
        enabled: true,
        next_run_at: Timestamp::from_secs(0),
        last_run_at: None,
        created_at: Timestamp::from_secs(0),
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

async fn nmap_file(f: &Fixture, producer: Option<TaskId>, ty: &str) -> FileMeta {
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
    // A file a person uploaded (no producing task) passes.
    let manual = nmap_file(&f, None, "nmap").await;
    assert_eq!(f.engine.file_stored(&manual).await.unwrap().len(), 1);
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
