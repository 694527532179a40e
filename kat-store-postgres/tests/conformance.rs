//! kat-core's conformance suites against `PgStore` on a real PostgreSQL server
//! (`KAT_TEST_POSTGRES`, started by `scripts/postgres.sh`); each test on a database of its own.

use std::sync::Arc;

use kat_core::conformance::objects;
use kat_core::object::{Object, ObjectType};
use kat_core::org::OrgCode;
use kat_core::store::{ObjectQuery, ObjectStore};
use kat_core::task::TaskId;
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
