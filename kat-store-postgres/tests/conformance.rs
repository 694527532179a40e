//! kat-core's conformance suites against `PgStore` on a real PostgreSQL server
//! (`KAT_TEST_POSTGRES`, started by `scripts/postgres.sh`); each test on a database of its own.

use std::sync::Arc;

use kat_core::clock::Timestamp;
use kat_core::conformance::{objects, tasks};
use kat_core::object::{NaturalKey, Object, ObjectType};
use kat_core::org::OrgCode;
use kat_core::schedule::ScheduleId;
use kat_core::store::{ObjectQuery, ObjectStore, TaskQuery, TaskQueue};
use kat_core::task::{Task, TaskId, TaskInput, TaskPatch, TaskState};
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

/// kat-core's whole `ObjectStore` suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_objects_conformance() {
    let Some(base) = server() else { return };
    let db = TestDatabase::create(&base)
        .await
        .expect("create a database");
    let store = db.store().await.expect("connect");
    objects::run_all(Arc::new(store))
        .await
        .expect("the object store conformance suite");
    db.drop_database().await.expect("drop");
}

fn a_record(i: usize, ip: usize) -> Object {
    Object::from_json(
        ObjectType::DnsARecord,
        &serde_json::json!({
            "hostname": format!("h{i}.replicas.example"),
            "ip_address": format!("10.0.{}.{}", ip / 250, ip % 250 + 1),
        }),
    )
    .expect("an A record")
}

/// Two stores (two pools, like two katd replicas) upsert overlapping batches into one organization
/// at the same time: every object is there once, every task's attribution is complete, and the
/// levels the writes left are those a full recomputation gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_objects_replicas_write_concurrently() {
    let Some(base) = server() else { return };
    let db = TestDatabase::create(&base)
        .await
        .expect("create a database");
    let replicas: [Arc<dyn ObjectStore>; 2] = [
        Arc::new(db.store().await.expect("connect a")),
        Arc::new(db.store().await.expect("connect b")),
    ];
    let org = OrgCode::new("replicas").expect("org");
    // A declared level that the records spread: h0 is declared at 2 before the writers start.
    let first = replicas[0]
        .upsert(&org, vec![a_record(0, 0)], None)
        .await
        .expect("first record");
    drop(first);
    replicas[0]
        .set_scan_profile(
            &org,
            ObjectType::Hostname,
            &"internet|h0.replicas.example".parse().expect("key"),
            kat_core::object::ScanProfile::declared(
                kat_core::object::ScanLevel::new(2).expect("level"),
            ),
        )
        .await
        .expect("declare");
    let tasks: Vec<TaskId> = (0..20).map(|_| TaskId::new()).collect();
    let mut handles = Vec::new();
    for (n, t) in tasks.iter().copied().enumerate() {
        let store = replicas[n % 2].clone();
        let org = org.clone();
        handles.push(tokio::spawn(async move {
            // 200 hostnames per task, overlapping: task n covers n*50 .. n*50+200, and the
            // addresses are shared between hostnames, which links the tasks' graphs.
            let batch: Vec<Object> = (n * 50..n * 50 + 200).map(|i| a_record(i, i / 3)).collect();
            store.upsert(&org, batch, Some(t)).await.map(|s| s.len())
        }));
    }
    for h in handles {
        assert_eq!(h.await.expect("join").expect("upsert"), 200);
    }
    let hostnames = 19 * 50 + 200;
    let count = |ty| {
        let store = replicas[1].clone();
        let org = org.clone();
        async move {
            let mut q = ObjectQuery::new(org, ty);
            q.limit = 0;
            store.query(&q).await.expect("query")
        }
    };
    let hosts = count(ObjectType::Hostname).await;
    assert_eq!(hosts.count, hostnames as u64);
    assert_eq!(hosts.items.len(), hostnames);
    assert_eq!(count(ObjectType::DnsARecord).await.count, hostnames as u64);
    for (n, t) in tasks.iter().enumerate() {
        let of = replicas[0].objects_of(&org, *t).await.expect("objects_of");
        let records = of
            .iter()
            .filter(|r| r.object_type == ObjectType::DnsARecord)
            .count();
        assert_eq!(records, 200, "task {n}'s attribution");
    }
    // h100 was written by tasks 0, 1 and 2.
    let tasks_of = replicas[1]
        .tasks_of(
            &org,
            ObjectType::Hostname,
            &"internet|h100.replicas.example".parse().expect("key"),
        )
        .await
        .expect("tasks_of");
    let mut want = vec![tasks[0], tasks[1], tasks[2]];
    let mut got = tasks_of.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    // Some levels spread from h0 (its address is shared with h1 and h2).
    let levelled = hosts
        .items
        .iter()
        .filter(|s| s.scan.is_some_and(|p| p.level.is_some()))
        .count();
    assert!(levelled >= 3, "{levelled} hostnames have a level");
    assert_eq!(
        replicas[0]
            .recompute_levels(Some(&org))
            .await
            .expect("recompute"),
        0,
        "the incremental levels were complete"
    );
    assert!(!replicas[1].levels_need_recompute().await.expect("flag"));
    drop(replicas);
    db.drop_database().await.expect("drop");
}

/// A write whose caller stops waiting (a timeout, a dropped request) leaves nothing half-done:
/// its connection is closed instead of going back to the pool inside a transaction, the server
/// rolls back and releases the organization's lock, and the next write goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_objects_cancelled_write_releases_the_organization() {
    use std::time::Duration;
    let Some(base) = server() else { return };
    let db = TestDatabase::create(&base)
        .await
        .expect("create a database");
    let store = db.store().await.expect("connect");
    let org = OrgCode::new("cancelled").expect("org");
    let big: Vec<Object> = (0..5000).map(|i| a_record(i, i)).collect();
    let first = tokio::time::timeout(
        Duration::from_millis(30),
        store.upsert(&org, big, Some(TaskId::new())),
    )
    .await;
    let finished = matches!(first, Ok(Ok(_)));
    eprintln!("the first write finished in time: {finished}");
    let again = tokio::time::timeout(
        Duration::from_secs(20),
        store.upsert(&org, vec![a_record(9999, 9999)], None),
    )
    .await
    .expect("the organization is not left locked")
    .expect("upsert");
    assert_eq!(again.len(), 1);
    let mut q = ObjectQuery::new(org.clone(), ObjectType::Hostname);
    q.limit = 1;
    let n = store.query(&q).await.expect("query").count;
    // All of the big batch or none of it (its COMMIT may have reached the server before the
    // caller gave up).
    assert!(n == 1 || n == 5001, "{n} hostnames (finished: {finished})");
    if finished {
        assert_eq!(n, 5001);
    }
    assert_eq!(store.recompute_levels(None).await.expect("recompute"), 0);
    drop(store);
    db.drop_database().await.expect("drop");
}

fn cname(from: usize, to: usize) -> Object {
    Object::from_json(
        ObjectType::DnsCnameRecord,
        &serde_json::json!({
            "hostname": format!("c{from}.chain.example"),
            "target": format!("c{to}.chain.example"),
        }),
    )
    .expect("a CNAME record")
}

async fn level_of(store: &dyn ObjectStore, org: &OrgCode, i: usize) -> Option<u8> {
    let key = format!("internet|c{i}.chain.example").parse().expect("key");
    store
        .get(org, ObjectType::Hostname, &key)
        .await
        .expect("get")
        .expect("the hostname is there")
        .scan
        .and_then(|p| p.level)
        .map(|l| l.get())
}

/// Levels that reach far: a chain of 120 CNAME records written in shuffled batches, a level
/// declared at its head and raised, a link deleted and written again. Each change reaches the
/// whole chain (many rounds of the cached graph), and a full recomputation agrees every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_objects_levels_reach_along_a_long_chain() {
    use kat_core::object::{ScanLevel, ScanProfile};
    let Some(base) = server() else { return };
    let db = TestDatabase::create(&base)
        .await
        .expect("create a database");
    let store = db.store().await.expect("connect");
    let org = OrgCode::new("chain").expect("org");
    let n = 120;
    // Links written out of order, in batches of 7.
    let mut order: Vec<usize> = (0..n).map(|i| (i * 37) % n).collect();
    order.dedup();
    for chunk in order.chunks(7) {
        let batch = chunk.iter().map(|&i| cname(i, i + 1)).collect();
        store.upsert(&org, batch, None).await.expect("upsert");
    }
    let head: kat_core::object::NaturalKey = "internet|c0.chain.example".parse().expect("key");
    let declare = |l: u8| {
        let store = store.clone();
        let org = org.clone();
        let head = head.clone();
        async move {
            store
                .set_scan_profile(
                    &org,
                    ObjectType::Hostname,
                    &head,
                    ScanProfile::declared(ScanLevel::new(l).expect("level")),
                )
                .await
                .expect("declare")
        }
    };
    declare(2).await;
    assert_eq!(level_of(&store, &org, n).await, Some(2));
    assert_eq!(
        store.recompute_levels(Some(&org)).await.expect("recompute"),
        0
    );
    declare(3).await;
    assert_eq!(level_of(&store, &org, n).await, Some(3));
    assert_eq!(level_of(&store, &org, n / 2).await, Some(3));
    assert_eq!(
        store.recompute_levels(Some(&org)).await.expect("recompute"),
        0
    );
    // Cut the chain in the middle: everything after the cut loses its level.
    let cut = cname(60, 61);
    assert_eq!(
        store
            .delete(&org, ObjectType::DnsCnameRecord, &[cut.natural_key()])
            .await
            .expect("delete"),
        1
    );
    assert_eq!(level_of(&store, &org, 60).await, Some(3));
    assert_eq!(level_of(&store, &org, 61).await, None);
    assert_eq!(level_of(&store, &org, n).await, None);
    assert_eq!(
        store.recompute_levels(Some(&org)).await.expect("recompute"),
        0
    );
    // Mend it.
    store.upsert(&org, vec![cut], None).await.expect("upsert");
    assert_eq!(level_of(&store, &org, n).await, Some(3));
    assert_eq!(
        store.recompute_levels(Some(&org)).await.expect("recompute"),
        0
    );
    // Back to inherited at the head: nothing has a level any more.
    store
        .set_scan_profile(&org, ObjectType::Hostname, &head, ScanProfile::default())
        .await
        .expect("inherit");
    assert_eq!(level_of(&store, &org, 0).await, None);
    assert_eq!(level_of(&store, &org, n).await, None);
    assert_eq!(
        store.recompute_levels(Some(&org)).await.expect("recompute"),
        0
    );
    drop(store);
    db.drop_database().await.expect("drop");
}

/// How writes scale with the size of an organization (`cargo test -- --ignored --nocapture`):
/// 100,000 hostnames with their A records, then small writes, which must not cost in proportion
/// to the organization. With `KAT_TEST_KEEP` set, the database is kept (its name is printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: minutes in a debug build"]
async fn pg_objects_scale() {
    use std::time::Instant;
    let Some(base) = server() else { return };
    let db = TestDatabase::create(&base)
        .await
        .expect("create a database");
    eprintln!("database {}", db.name);
    let store = db.store().await.expect("connect");
    let org = OrgCode::new("scale").expect("org");
    let started = Instant::now();
    for chunk in 0..100 {
        let batch: Vec<Object> = (chunk * 1000..chunk * 1000 + 1000)
            .map(|i| a_record(i, i / 4))
            .collect();
        store
            .upsert(&org, batch, Some(TaskId::new()))
            .await
            .expect("upsert");
    }
    eprintln!(
        "100,000 A records in batches of 1,000: {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    store
        .set_scan_profile(
            &org,
            ObjectType::Hostname,
            &"internet|h0.replicas.example".parse().expect("key"),
            kat_core::object::ScanProfile::declared(
                kat_core::object::ScanLevel::new(2).expect("level"),
            ),
        )
        .await
        .expect("declare");
    eprintln!("a declared level: {:?}", started.elapsed());
    for round in 0..3 {
        let started = Instant::now();
        let batch: Vec<Object> = (0..10)
            .map(|i| a_record(200_000 + round * 10 + i, 30_000 + i))
            .collect();
        store
            .upsert(&org, batch, Some(TaskId::new()))
            .await
            .expect("upsert");
        eprintln!("10 new A records: {:?}", started.elapsed());
        let started = Instant::now();
        let batch: Vec<Object> = (0..10).map(|i| a_record(i * 7, i * 7 / 4)).collect();
        store
            .upsert(&org, batch, Some(TaskId::new()))
            .await
            .expect("upsert");
        eprintln!("10 existing A records: {:?}", started.elapsed());
    }
    let started = Instant::now();
    let q = ObjectQuery::new(org.clone(), ObjectType::Hostname)
        .filter("name", &["h777.replicas.example"]);
    assert_eq!(store.query(&q).await.expect("query").count, 1);
    eprintln!("a filter on name: {:?}", started.elapsed());
    let started = Instant::now();
    assert_eq!(
        store.recompute_levels(Some(&org)).await.expect("recompute"),
        0
    );
    eprintln!("a full recomputation: {:?}", started.elapsed());
    if std::env::var_os("KAT_TEST_KEEP").is_none() {
        db.drop_database().await.expect("drop");
    }
}

/// kat-core's whole task suite (every trait of `TaskStore`, leases and heartbeats included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_tasks_conformance() {
    let Some(base) = server() else { return };
    let db = TestDatabase::create(&base)
        .await
        .expect("create a database");
    let store = db.store().await.expect("connect");
    tasks::run_all(Arc::new(store.clone()))
        .await
        .expect("task suite");
    drop(store);
    db.drop_database().await.expect("drop");
}

/// Two replicas (two stores, two pools, one database) race to take the same 200 queued tasks:
/// each task is taken exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_take_each_queued_task_once() {
    let Some(base) = server() else { return };
    let db = TestDatabase::create(&base)
        .await
        .expect("create a database");
    let (a, b) = (
        db.store().await.expect("replica a"),
        db.store().await.expect("replica b"),
    );
    let org = OrgCode::new("race").expect("org");
    let tasks: Vec<Task> = (0..200)
        .map(|_| Task::queued(org.clone(), "dns", TaskInput::default()))
        .collect();
    let ids: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
    a.create_tasks(tasks).await.expect("create");
    let ids = Arc::new(ids);
    let mut workers = Vec::new();
    for (n, store) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        let ids = ids.clone();
        workers.push(tokio::spawn(async move {
            // Workers walk the ids from different ends, so that they meet and race.
            let order: Vec<TaskId> = if n % 2 == 0 {
                ids.iter().copied().collect()
            } else {
                ids.iter().rev().copied().collect()
            };
            let mut taken = Vec::new();
            for id in order {
                let mut p = TaskPatch::to(TaskState::Running);
                p.bump_attempts = true;
                match store.transition_task(id, &[TaskState::Queued], p).await {
                    Ok(t) => {
                        assert_eq!((t.state, t.attempts), (TaskState::Running, 1));
                        taken.push(id);
                    }
                    Err(kat_core::Error::Conflict(_)) => {}
                    Err(e) => panic!("worker {n}: {e}"),
                }
            }
            taken
        }));
    }
    let mut all = Vec::new();
    let mut per_worker = Vec::new();
    for w in workers {
        let taken = w.await.expect("worker");
        per_worker.push(taken.len());
        all.extend(taken);
    }
    eprintln!("tasks taken per worker: {per_worker:?}");
    assert_eq!(
        all.len(),
        200,
        "every Ok is a distinct task: {per_worker:?}"
    );
    let distinct: std::collections::BTreeSet<TaskId> = all.into_iter().collect();
    assert_eq!(distinct.len(), 200, "no task taken twice");
    let running = b
        .list_tasks(&TaskQuery {
            org: Some(org.clone()),
            states: Some(vec![TaskState::Running]),
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(running.count, 200);
    assert!(running.items.iter().all(|t| t.attempts == 1));
    drop((a, b));
    db.drop_database().await.expect("drop");
}

/// Two replicas claim the same targets for one schedule at once: each target is handed out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_claim_each_target_once() {
    let Some(base) = server() else { return };
    let db = TestDatabase::create(&base)
        .await
        .expect("create a database");
    let (a, b) = (
        db.store().await.expect("replica a"),
        db.store().await.expect("replica b"),
    );
    let schedule = ScheduleId::new();
    let keys: Vec<NaturalKey> = (0..2000)
        .map(|i| NaturalKey::from_parts(["internet", &format!("h{i}.example")]))
        .collect();
    let t0 = Timestamp::from_secs(1_000_000);
    let mut reversed = keys.clone();
    reversed.reverse();
    let (x, y) = tokio::join!(
        a.claim_targets(schedule, t0, t0, keys.clone()),
        b.claim_targets(schedule, t0, t0, reversed)
    );
    let (x, y) = (x.expect("a claims"), y.expect("b claims"));
    assert_eq!(x.len() + y.len(), keys.len(), "{} + {}", x.len(), y.len());
    let all: std::collections::BTreeSet<NaturalKey> = x.into_iter().chain(y).collect();
    assert_eq!(all.len(), keys.len());
    drop((a, b));
    db.drop_database().await.expect("drop");
}

/// A task's stderr tail may hold NUL characters (a container writes what it likes): the record
/// keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_records_keep_nul_characters() {
    let Some(base) = server() else { return };
    let db = TestDatabase::create(&base)
        .await
        .expect("create a database");
    let store = db.store().await.expect("connect");
    let t = Task::queued(
        OrgCode::new("nul").expect("org"),
        "dns",
        TaskInput::default(),
    );
    store.create_tasks(vec![t.clone()]).await.expect("create");
    let mut p = TaskPatch::to(TaskState::Failed);
    p.stderr_tail = Some("before\0after".into());
    let done = store
        .transition_task(t.id, &[TaskState::Queued], p)
        .await
        .expect("transition");
    assert_eq!(
        store.get_task(t.id).await.expect("get").expect("task"),
        done
    );
    assert_eq!(done.stderr_tail.as_deref(), Some("before\0after"));
    drop(store);
    db.drop_database().await.expect("drop");
}

/// Leases across replicas: workers of two replicas claim 200 queued tasks in small batches (each
/// task once), then, their leases expired, recoverers of both replicas race: each task is
/// recovered once, and requeued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_claim_and_recover_each_task_once() {
    let Some(base) = server() else { return };
    let db = TestDatabase::create(&base)
        .await
        .expect("create a database");
    let (a, b) = (
        db.store().await.expect("replica a"),
        db.store().await.expect("replica b"),
    );
    let org = OrgCode::new("leases").expect("org");
    let tasks: Vec<Task> = (0..200)
        .map(|_| Task::queued(org.clone(), "dns", TaskInput::default()))
        .collect();
    a.create_tasks(tasks).await.expect("create");
    let t0 = Timestamp::from_secs(2_000_000_000);
    let until = t0.plus_secs(30);
    let mut claimers = Vec::new();
    for (n, store) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        claimers.push(tokio::spawn(async move {
            let worker = format!("w{n}");
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_tasks(&worker, 7, t0, until)
                    .await
                    .expect("claim");
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|t| t.id));
            }
        }));
    }
    let mut claimed = Vec::new();
    for c in claimers {
        claimed.extend(c.await.expect("claimer"));
    }
    let distinct: std::collections::BTreeSet<TaskId> = claimed.iter().copied().collect();
    assert_eq!((claimed.len(), distinct.len()), (200, 200));
    let after = until.plus_secs(1);
    let requeue = vec!["dns".to_string()];
    let mut recoverers = Vec::new();
    for store in [a.clone(), b.clone(), a.clone(), b.clone()] {
        let requeue = requeue.clone();
        recoverers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .recover_expired(after, &requeue, None, 9)
                    .await
                    .expect("recover");
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|t| t.id));
            }
        }));
    }
    let mut recovered = Vec::new();
    for r in recoverers {
        recovered.extend(r.await.expect("recoverer"));
    }
    let distinct: std::collections::BTreeSet<TaskId> = recovered.iter().copied().collect();
    assert_eq!((recovered.len(), distinct.len()), (200, 200));
    let queued = b
        .list_tasks(&TaskQuery {
            org: Some(org),
            states: Some(vec![TaskState::Queued]),
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(queued.count, 200);
    assert!(
        queued
            .items
            .iter()
            .all(|t| t.attempts == 1 && t.lease.is_none())
    );
    drop((a, b));
    db.drop_database().await.expect("drop");
}

/// Same contents are stored once and outlive all but their last file; a file deleted while it is
/// read ends its stream with an error, not short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_contents_are_shared_and_collected() {
    use bytes::Bytes;
    use futures::StreamExt;
    use kat_core::store::{ByteStream, FileStore, LevelSource, NewFile};

    let Some(base) = server() else { return };
    let db = TestDatabase::create(&base)
        .await
        .expect("create a database");
    let store = db.store().await.expect("connect");
    let data: Vec<u8> = (0..3 * (1 << 20) + 123).map(|i| (i % 251) as u8).collect();
    let new = || NewFile {
        org: OrgCode::new("shared").expect("org"),
        file_type: "raw".into(),
        name: "stdout".into(),
        task: None,
        scan_level: None,
        level_from: LevelSource::Operator,
    };
    let body = |d: &[u8]| -> ByteStream {
        let pieces: Vec<std::io::Result<Bytes>> = d
            .chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(pieces))
    };
    let (x, y) = tokio::join!(store.put(new(), body(&data)), store.put(new(), body(&data)));
    let (x, y) = (x.expect("x"), y.expect("y"));
    assert_eq!(x.sha256, y.sha256);
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let conn = tokio::spawn(conn);
    let contents = |client: tokio_postgres::Client| async move {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM file_contents), (SELECT count(*) FROM file_chunks)",
                &[],
            )
            .await
            .expect("count");
        (client, (row.get::<_, i64>(0), row.get::<_, i64>(1)))
    };
    let (client, counts) = contents(client).await;
    assert_eq!(counts, (1, 4), "stored once, in four chunks");
    assert!(FileStore::delete(&store, x.id).await.expect("delete x"));
    let mut read = Vec::new();
    let mut s = store.open(y.id).await.expect("open y");
    while let Some(piece) = s.next().await {
        read.extend_from_slice(&piece.expect("piece"));
    }
    assert!(read == data, "the other file keeps the contents");
    // Deleted while read: the stream fails.
    let mut s = store.open(y.id).await.expect("open y");
    let first = s.next().await.expect("a piece").expect("read");
    assert!(!first.is_empty());
    assert!(FileStore::delete(&store, y.id).await.expect("delete y"));
    let mut failed = false;
    while let Some(piece) = s.next().await {
        if piece.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "a file deleted while it is read ends with an error");
    let (client, counts) = contents(client).await;
    assert_eq!(counts, (0, 0), "the last delete removed the contents");
    drop(client);
    let _ = conn.await;
    drop(store);
    db.drop_database().await.expect("drop");
}
