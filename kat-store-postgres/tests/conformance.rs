//! kat-core's conformance suites against `PgStore` on a real PostgreSQL server
//! (`KAT_TEST_POSTGRES`, started by `scripts/postgres.sh`); each test on a database of its own.

use std::sync::Arc;

use kat_core::clock::Timestamp;
use kat_core::conformance::tasks;
use kat_core::object::NaturalKey;
use kat_core::org::OrgCode;
use kat_core::schedule::ScheduleId;
use kat_core::store::{TaskQuery, TaskQueue};
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

/// kat-core's whole task suite (the six traits of `TaskStore`).
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
    assert!(store.delete(x.id).await.expect("delete x"));
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
    assert!(store.delete(y.id).await.expect("delete y"));
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
