//! SledStore beyond the conformance suites: reopening, format versions, locking, index upkeep and the
//! key encoding's edge cases, each on a real database in a temporary directory.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kat_core::Error;
use kat_core::clock::Timestamp;
use kat_core::conformance::files::read_all;
use kat_core::object::{NaturalKey, Object, ObjectType, ScanLevel, ScanProfile};
use kat_core::org::{OrgCode, Organization};
use kat_core::plugin::PluginDef;
use kat_core::schedule::{Interval, ObjectSet, ObjectSetId, Schedule, ScheduleId};
use kat_core::store::{
    ByteStream, FileQuery, FileStore, LevelSource, NewFile, ObjectQuery, ObjectStore, Ordering,
    OrgStore, PluginCatalog, RevocationList, ScheduleStore, TaskQuery, TaskQueue,
};
use kat_core::task::{Task, TaskId, TaskInput, TaskPatch, TaskState};
use kat_store_sled::{Durability, FORMAT_VERSION, SledOptions, SledStore};
use serde_json::json;

fn org(s: &str) -> OrgCode {
    OrgCode::new(s).expect("org")
}

fn host(name: &str) -> Object {
    Object::from_json(ObjectType::Hostname, &json!({ "name": name })).expect("hostname")
}

fn key(s: &str) -> NaturalKey {
    NaturalKey::parse(s).expect("key")
}

fn body(data: &'static [u8]) -> ByteStream {
    Box::pin(futures::stream::iter(vec![Ok(Bytes::from_static(data))]))
}

fn open(dir: &std::path::Path) -> SledStore {
    SledStore::open(dir, SledOptions::default()).expect("open")
}

fn by_name(o: &OrgCode, name: &str) -> ObjectQuery {
    ObjectQuery::new(o.clone(), ObjectType::Hostname).filter("name", &[name])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = org("reopen");
    let t1 = TaskId::new();
    let t2 = TaskId::new();
    let task = Task::queued(o.clone(), "dns", TaskInput::default());
    let due = Schedule {
        id: ScheduleId::new(),
        number: 1,
        org: Some(o.clone()),
        plugin_id: "dns".into(),
        object_set: None,
        interval: Interval::from_secs(3600).expect("interval"),
        enabled: true,
        next_run_at: Timestamp::from_secs(100),
        last_run_at: None,
        created_at: Timestamp::from_secs(0),
        owner: None,
        disabled_reason: None,
    };
    let set = ObjectSet {
        id: ObjectSetId::new(),
        number: 1,
        name: "all".into(),
        description: String::new(),
        org: o.clone(),
        object_type: ObjectType::Hostname,
        all: true,
        filters: vec![],
        keys: vec![],
    };
    let file_id;
    {
        let s = open(dir.path());
        s.upsert(&o, vec![host("a.example"), host("b.example")], Some(t1))
            .await
            .expect("upsert");
        s.upsert(&o, vec![host("a.example")], Some(t2))
            .await
            .expect("upsert");
        s.set_scan_profile(
            &o,
            ObjectType::Hostname,
            &key("internet|a.example"),
            ScanProfile::declared(ScanLevel::new(3).expect("level")),
        )
        .await
        .expect("scan profile");
        file_id = FileStore::put(
            &s,
            NewFile {
                org: o.clone(),
                file_type: "dns".into(),
                name: "stdout".into(),
                task: Some(t1),
                scan_level: Some(ScanLevel::new(3).expect("level")),
                level_from: LevelSource::Objects,
            },
            body(b"file contents"),
        )
        .await
        .expect("put")
        .id;
        s.create_tasks(vec![task.clone()]).await.expect("task");
        s.transition_task(
            task.id,
            &[TaskState::Queued],
            TaskPatch::to(TaskState::Running),
        )
        .await
        .expect("transition");
        s.put_schedule(due.clone()).await.expect("schedule");
        s.put_object_set(set.clone()).await.expect("set");
        s.put_organization(Organization::new(o.clone(), "Reopen"))
            .await
            .expect("org");
        let defs = PluginDef::parse_file(
            r#"[{"plugin_id": "dns", "oci_image": "img", "oci_arguments": ["dig", "{hostname}"]}]"#,
            "t.json",
        )
        .expect("plugins");
        let (writes, _) = kat_core::plugin::sync(&[], &defs, true);
        s.put_plugins(writes).await.expect("plugins");
        s.revoke_token("jti-1", 5_000).await.expect("revoke");
        s.claim_targets(
            due.id,
            Timestamp::from_secs(0),
            Timestamp::from_secs(10),
            vec![key("internet|a.example")],
        )
        .await
        .expect("claim");
    }
    // The first handle is gone: sled's lock is released and a new one reads what is on disk.
    let s = open(dir.path());
    let a = s
        .get(&o, ObjectType::Hostname, &key("internet|a.example"))
        .await
        .expect("get")
        .expect("a is there");
    assert_eq!(a.created_by, Some(t1));
    assert_eq!(a.last_seen_by, Some(t2));
    assert_eq!(a.scan.and_then(|p| p.level).map(ScanLevel::get), Some(3));
    assert_eq!(
        ObjectStore::query(&s, &by_name(&o, "b.example"))
            .await
            .expect("query")
            .count,
        1,
        "the name index survived"
    );
    assert_eq!(
        s.tasks_of(&o, ObjectType::Hostname, &key("internet|a.example"))
            .await
            .expect("tasks_of"),
        vec![t1, t2]
    );
    assert_eq!(s.objects_of(&o, t1).await.expect("objects_of").len(), 3);
    assert_eq!(read_all(&s, file_id).await.expect("file"), b"file contents");
    let mut fq = FileQuery::new(o.clone());
    fq.task = Some(t1);
    assert_eq!(FileStore::query(&s, &fq).await.expect("files").count, 1);
    let t = s.get_task(task.id).await.expect("get").expect("task");
    assert_eq!(t.state, TaskState::Running);
    let listed = s
        .list_tasks(&TaskQuery {
            org: Some(o.clone()),
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.count, 1);
    let due_now = s
        .due_schedules(Timestamp::from_secs(1_000), 10)
        .await
        .expect("due");
    assert_eq!(
        due_now.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![due.id]
    );
    assert_eq!(s.get_object_set(set.id).await.expect("set"), Some(set));
    assert!(s.get_organization(&o).await.expect("org").is_some());
    assert!(s.get_plugin("dns").await.expect("plugin").is_some());
    assert!(s.is_token_revoked("jti-1").await.expect("revoked"));
    assert!(
        s.claim_targets(
            due.id,
            Timestamp::from_secs(0),
            Timestamp::from_secs(20),
            vec![key("internet|a.example")],
        )
        .await
        .expect("claim")
        .is_empty(),
        "claims survived"
    );
    assert_eq!(s.purge_revoked(10_000).await.expect("purge"), 1);
    assert!(!s.is_token_revoked("jti-1").await.expect("purged"));
    let report = s.verify().await.expect("verify");
    assert!(report.is_consistent(), "{:?}", report.problems);
    assert_eq!((report.objects, report.files), (3, 1));
    // Organizations and revocations are read from memory: what a reopen loads agrees with what
    // was written and deleted before it, and a claim of many targets (one scan) with a claim of few.
    s.revoke_token("jti-2", 20_000).await.expect("revoke");
    assert!(s.delete_organization(&o).await.expect("delete"));
    let many: Vec<NaturalKey> = (0..1000)
        .map(|i| key(&format!("internet|m{i}.example")))
        .collect();
    assert_eq!(
        s.claim_targets(
            due.id,
            Timestamp::from_secs(0),
            Timestamp::from_secs(30),
            many.clone()
        )
        .await
        .expect("claim")
        .len(),
        1000
    );
    drop(s);
    let s = open(dir.path());
    assert!(s.is_token_revoked("jti-2").await.expect("revoked"));
    assert!(!s.is_token_revoked("jti-1").await.expect("purged"));
    assert!(s.get_organization(&o).await.expect("org").is_none());
    assert!(s.list_organizations().await.expect("orgs").is_empty());
    let mut again = many;
    again.push(key("internet|a.example"));
    again.push(key("internet|new.example"));
    assert_eq!(
        s.claim_targets(
            due.id,
            Timestamp::from_secs(0),
            Timestamp::from_secs(40),
            again
        )
        .await
        .expect("claim"),
        vec![key("internet|new.example")],
        "claims of both sizes survived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_durability_keeps_flushed_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = org("periodic");
    let opts = SledOptions {
        durability: Durability::Periodic(Duration::from_secs(3600)),
        ..SledOptions::default()
    };
    {
        let s = SledStore::open(dir.path(), opts.clone()).expect("open");
        s.upsert(&o, vec![host("p.example")], None)
            .await
            .expect("upsert");
        s.flush().await.expect("flush");
    }
    let s = SledStore::open(dir.path(), opts).expect("reopen");
    assert_eq!(
        ObjectStore::query(&s, &by_name(&o, "p.example"))
            .await
            .expect("q")
            .count,
        1
    );
}

/// Raw sled on the store's database, waiting out a just-dropped handle's lock as `SledStore::open`
/// does.
fn raw_sled(dir: &std::path::Path) -> sled::Db {
    for _ in 0..100 {
        match sled::open(dir.join("db")) {
            Ok(db) => return db,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    sled::open(dir.join("db")).expect("raw sled")
}

fn corrupt_message(r: Result<SledStore, Error>) -> String {
    match r {
        Err(Error::Corrupt { message, .. }) => message,
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, the store opened"),
    }
}

fn set_raw_version(dir: &std::path::Path, value: Option<&[u8]>) {
    let db = raw_sled(dir);
    let meta = db.open_tree("kat_meta").expect("meta");
    match value {
        Some(v) => meta.insert("format_version", v).map(|_| ()),
        None => meta.remove("format_version").map(|_| ()),
    }
    .expect("write");
    db.flush().expect("flush");
}

#[test]
fn format_version_mismatch_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()));
    // A newer format.
    set_raw_version(dir.path(), Some(b"99"));
    let m = corrupt_message(SledStore::open(dir.path(), SledOptions::default()));
    assert!(
        m.contains("99") && m.contains(&FORMAT_VERSION.to_string()),
        "{m}"
    );
    assert!(m.contains("newer"), "{m}");
    // An older one with no migration.
    set_raw_version(dir.path(), Some(b"0"));
    let m = corrupt_message(SledStore::open(dir.path(), SledOptions::default()));
    assert!(m.contains("format version 0") && m.contains("older"), "{m}");
    // Garbage.
    set_raw_version(dir.path(), Some(b"v-one"));
    let m = corrupt_message(SledStore::open(dir.path(), SledOptions::default()));
    assert!(m.contains("v-one"), "{m}");
    // Data without any version is not guessed at.
    set_raw_version(dir.path(), None);
    let m = corrupt_message(SledStore::open(dir.path(), SledOptions::default()));
    assert!(m.contains("no format version"), "{m}");
    // The right version opens again.
    set_raw_version(dir.path(), Some(FORMAT_VERSION.to_string().as_bytes()));
    SledStore::open(dir.path(), SledOptions::default()).expect("open");
}

/// The key encoding of one text component (the crate's `keys` module; no NUL bytes here).
fn component(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.extend_from_slice(&[0, 1]);
    v
}

/// A database that format version 1 wrote (JSON records holding org and key, `name` and `address`
/// index entries) is migrated when opened and answers exactly as before; the migration is idempotent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_is_migrated_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = org("v-one");
    let t = TaskId::new();
    // 1,500 hostnames: more than one migration batch.
    let mut batch: Vec<Object> = (0..1_500)
        .map(|i| host(&format!("h{i}.v1.example")))
        .collect();
    batch.push(
        Object::from_json(
            ObjectType::IpAddress,
            &json!({"network": "lab", "address": "192.0.2.44"}),
        )
        .expect("address"),
    );
    let written = {
        let s = open(dir.path());
        s.upsert(&o, batch, Some(t)).await.expect("upsert")
    };
    // Rewrite every record as version 1 stored it and add its index entries.
    let written_by_key: std::collections::HashMap<String, &kat_core::store::StoredObject> = written
        .iter()
        .map(|s| (s.key.as_str().to_string(), s))
        .collect();
    {
        let db = raw_sled(dir.path());
        let tree = db.open_tree("objects").expect("tree");
        let mut rewritten = 0;
        let keys: Vec<sled::IVec> = tree
            .scan_prefix(b"o")
            .map(|e| e.expect("entry").0)
            .collect();
        for k in keys {
            let parts: Vec<&[u8]> = k[1..].split(|b| *b == 0).collect();
            let text = |i: usize| {
                String::from_utf8(
                    parts[i]
                        .strip_prefix(&[1u8][..])
                        .unwrap_or(parts[i])
                        .to_vec(),
                )
                .expect("utf-8")
            };
            let (ty, nk) = (text(1), text(2));
            let Some(stored) = written_by_key.get(&nk) else {
                continue;
            };
            let v1 = json!({"o": serde_json::to_value(stored).expect("json"), "t": [t]});
            tree.insert(&k, serde_json::to_vec(&v1).expect("json"))
                .expect("insert");
            let field = match ty.parse::<ObjectType>().expect("type") {
                ObjectType::Hostname => "name",
                ObjectType::IpAddress => "address",
                _ => continue,
            };
            let value = nk.split('|').nth(1).expect("second part").to_string();
            let mut ik = b"i".to_vec();
            for c in [o.as_str(), ty.as_str(), field] {
                ik.extend(component(c));
            }
            ik.push(1);
            ik.extend(component(&value));
            ik.extend(component(&nk));
            tree.insert(ik, &[][..]).expect("index");
            rewritten += 1;
        }
        assert_eq!(
            rewritten, 1_501,
            "every hostname and the address was rewritten"
        );
        db.open_tree("kat_meta")
            .expect("meta")
            .insert("format_version", &b"1"[..])
            .expect("version");
        db.flush().expect("flush");
    }
    for _round in 0..2 {
        let s = SledStore::open(dir.path(), SledOptions::default()).expect("open");
        let report = s.verify().await.expect("verify");
        assert!(report.is_consistent(), "{:?}", report.problems);
        assert_eq!(
            report.index_entries, 0,
            "the v1 name/address entries are gone"
        );
        assert_eq!(
            report.objects, 1_503,
            "1,500 hostnames, an address, two networks"
        );
        for w in &written {
            let got = s
                .get(&o, w.object_type(), &w.key)
                .await
                .expect("get")
                .expect("still there");
            assert_eq!(&got, w);
        }
        let q =
            ObjectQuery::new(o.clone(), ObjectType::Hostname).filter("name", &["h7.v1.example"]);
        assert_eq!(ObjectStore::query(&s, &q).await.expect("query").count, 1);
        let q =
            ObjectQuery::new(o.clone(), ObjectType::IpAddress).filter("address", &["192.0.2.44"]);
        assert_eq!(ObjectStore::query(&s, &q).await.expect("query").count, 1);
        assert_eq!(
            s.tasks_of(&o, ObjectType::Hostname, &key("internet|h7.v1.example"))
                .await
                .expect("tasks"),
            vec![t]
        );
        assert_eq!(s.objects_of(&o, t).await.expect("objects").len(), 1_503);
    }
    let db = raw_sled(dir.path());
    let v = db
        .open_tree("kat_meta")
        .expect("meta")
        .get("format_version")
        .expect("read")
        .expect("a version");
    assert_eq!(&v[..], FORMAT_VERSION.to_string().as_bytes());
}

/// A database that format version 2 wrote (no edges, no inherited levels) is migrated when opened:
/// the edges of its DNS records are written and the store asks for a full recomputation, which
/// gives the inherited levels; the next open does not ask again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_database_gets_its_edges_and_a_recomputation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = org("v-two");
    let a = Object::from_json(
        ObjectType::DnsARecord,
        &json!({"hostname": "example.com", "ip_address": "192.0.2.80"}),
    )
    .expect("record");
    let ip_key = key("internet|192.0.2.80");
    let ip_before = {
        let s = open(dir.path());
        s.upsert(&o, vec![host("example.com"), a], None)
            .await
            .expect("upsert");
        s.set_scan_profile(
            &o,
            ObjectType::Hostname,
            &key("internet|example.com"),
            ScanProfile::declared(ScanLevel::new(2).expect("level")),
        )
        .await
        .expect("declare");
        let mut ip = s
            .get(&o, ObjectType::IpAddress, &ip_key)
            .await
            .expect("get")
            .expect("ip");
        assert_eq!(ip.scan.and_then(|p| p.level), ScanLevel::new(2).ok());
        // As version 2 stored it: no inherited level.
        ip.scan = Some(ScanProfile::default());
        ip.inherited_from = None;
        ip
    };
    {
        let db = raw_sled(dir.path());
        let tree = db.open_tree("objects").expect("tree");
        let mut edges = 0;
        for entry in tree.iter() {
            let (k, _) = entry.expect("entry");
            if k[0] == b'e' || k[0] == b'r' {
                tree.remove(&k).expect("remove");
                edges += 1;
            }
        }
        assert_eq!(edges, 4, "an A record's two edges, each stored both ways");
        let mut pk = b"o".to_vec();
        for c in [o.as_str(), "ipaddress", ip_key.as_str()] {
            pk.extend(component(c));
        }
        // Version 1's JSON form still decodes; it stands in for a version 2 record here.
        let v1 = json!({"o": serde_json::to_value(&ip_before).expect("json")});
        assert!(
            tree.get(&pk).expect("get").is_some(),
            "the key layout is as assumed"
        );
        tree.insert(&pk, serde_json::to_vec(&v1).expect("json"))
            .expect("insert");
        db.open_tree("kat_meta")
            .expect("meta")
            .insert("format_version", &b"2"[..])
            .expect("version");
        db.flush().expect("flush");
    }
    {
        let s = SledStore::open(dir.path(), SledOptions::default()).expect("open");
        let report = s.verify().await.expect("verify");
        assert!(report.is_consistent(), "{:?}", report.problems);
        assert_eq!(report.edges, 2, "the A record's edges are back");
        assert!(s.levels_need_recompute().await.expect("ask"));
        let got = s
            .get(&o, ObjectType::IpAddress, &ip_key)
            .await
            .expect("get");
        assert_eq!(got.and_then(|g| g.scan).and_then(|p| p.level), None);
        assert_eq!(s.recompute_levels(None).await.expect("recompute"), 1);
        assert!(!s.levels_need_recompute().await.expect("ask"));
        let got = s
            .get(&o, ObjectType::IpAddress, &ip_key)
            .await
            .expect("get")
            .expect("ip");
        assert_eq!(got.scan.and_then(|p| p.level), ScanLevel::new(2).ok());
        assert_eq!(
            got.inherited_from.map(|r| r.key.to_string()).as_deref(),
            Some("internet|example.com")
        );
    }
    let s = SledStore::open(dir.path(), SledOptions::default()).expect("open again");
    assert!(!s.levels_need_recompute().await.expect("ask"));
    assert_eq!(s.recompute_levels(None).await.expect("recompute"), 0);
}

/// A file record written before files carried a scan level (no `scan_level`, no `level_from`) reads
/// as carrying none, `unrecorded`, in its metadata and in queries; the new fields are kept for new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_record_without_a_scan_level_reads_as_unrecorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = org("old-files");
    let (old_id, new_id) = {
        let s = open(dir.path());
        let mut ids = Vec::new();
        for level in [1, 2] {
            let m = FileStore::put(
                &s,
                NewFile {
                    org: o.clone(),
                    file_type: "dns".into(),
                    name: "stdout".into(),
                    task: Some(TaskId::new()),
                    scan_level: Some(ScanLevel::new(level).expect("level")),
                    level_from: LevelSource::Objects,
                },
                body(b"contents"),
            )
            .await
            .expect("put");
            ids.push(m.id);
        }
        (ids[0], ids[1])
    };
    {
        // Rewrite the first record as it was stored before the fields existed.
        let db = raw_sled(dir.path());
        let files = db.open_tree("files").expect("files tree");
        let mut rewritten = 0;
        for kv in files.scan_prefix([b'm']) {
            let (k, v) = kv.expect("read");
            let mut rec: serde_json::Value = serde_json::from_slice(&v).expect("json");
            if rec["id"] != json!(old_id.0) {
                continue;
            }
            let map = rec.as_object_mut().expect("object");
            assert!(map.remove("scan_level").is_some() && map.remove("level_from").is_some());
            files
                .insert(k, serde_json::to_vec(&rec).expect("json"))
                .expect("write");
            rewritten += 1;
        }
        assert_eq!(rewritten, 1);
        db.flush().expect("flush");
    }
    let s = open(dir.path());
    let old = FileStore::meta(&s, old_id)
        .await
        .expect("meta")
        .expect("old file");
    assert_eq!(
        (old.scan_level, old.level_from),
        (None, LevelSource::Unrecorded)
    );
    assert_eq!(old.file_type, "dns");
    let new = FileStore::meta(&s, new_id)
        .await
        .expect("meta")
        .expect("new file");
    assert_eq!(
        (new.scan_level, new.level_from),
        (
            Some(ScanLevel::new(2).expect("level")),
            LevelSource::Objects
        )
    );
    let page = FileStore::query(&s, &FileQuery::new(o))
        .await
        .expect("query");
    assert_eq!(page.count, 2);
    assert_eq!(page.items[0].level_from, LevelSource::Unrecorded);
    let report = s.verify().await.expect("verify");
    assert!(report.is_consistent(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_dropped_a_moment_ago_reopens_at_once() {
    // sled's background threads release the lock shortly after the last handle is dropped; open
    // waits for that instead of failing (this failed now and then before it did).
    let dir = tempfile::tempdir().expect("tempdir");
    let o = org("drop-reopen");
    for i in 0..30 {
        let s = SledStore::open(dir.path(), SledOptions::default())
            .unwrap_or_else(|e| panic!("open number {i}: {e}"));
        for b in 0..4 {
            let batch = (0..100)
                .map(|n| host(&format!("h{n}.b{b}.r{i}.example")))
                .collect();
            s.upsert(&o, batch, Some(TaskId::new()))
                .await
                .expect("upsert");
        }
        let found = ObjectStore::query(&s, &ObjectQuery::new(o.clone(), ObjectType::Hostname))
            .await
            .expect("query");
        assert_eq!(
            found.count,
            (i + 1) * 400,
            "open number {i} sees every earlier write"
        );
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = open(dir.path());
    match SledStore::open(dir.path(), SledOptions::default()) {
        Err(e @ Error::Unavailable { .. }) => assert!(e.to_string().contains("locked"), "{e}"),
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("two handles on one database"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_follow_merges_and_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let o = org("idx");
    let rec = |ttl: Option<u32>| {
        let mut v = json!({"hostname": "www.idx.example", "ip_address": "192.0.2.7"});
        if let Some(t) = ttl {
            v["ttl"] = json!(t);
        }
        Object::from_json(ObjectType::DnsARecord, &v).expect("record")
    };
    let ttl_q = |t: &str| ObjectQuery::new(o.clone(), ObjectType::DnsARecord).filter("ttl", &[t]);
    s.upsert(&o, vec![rec(None)], None).await.expect("upsert");
    assert_eq!(
        ObjectStore::query(&s, &ttl_q("null"))
            .await
            .expect("q")
            .count,
        1
    );
    s.upsert(&o, vec![rec(Some(300))], None)
        .await
        .expect("upsert");
    assert_eq!(
        ObjectStore::query(&s, &ttl_q("null"))
            .await
            .expect("q")
            .count,
        0,
        "old entry gone"
    );
    assert_eq!(
        ObjectStore::query(&s, &ttl_q("300"))
            .await
            .expect("q")
            .count,
        1
    );
    let t = TaskId::new();
    s.upsert(&o, vec![rec(Some(60))], Some(t))
        .await
        .expect("upsert");
    assert_eq!(
        ObjectStore::query(&s, &ttl_q("300"))
            .await
            .expect("q")
            .count,
        0
    );
    assert_eq!(
        ObjectStore::query(&s, &ttl_q("60")).await.expect("q").count,
        1
    );
    let before = s.verify().await.expect("verify");
    assert!(before.is_consistent(), "{:?}", before.problems);
    assert!(before.index_entries > 0, "the record's fields are indexed");
    let k = rec(None).natural_key();
    assert_eq!(
        ObjectStore::delete(&s, &o, ObjectType::DnsARecord, &[k.clone(), k.clone()])
            .await
            .expect("del"),
        1
    );
    assert_eq!(
        ObjectStore::query(&s, &ttl_q("60")).await.expect("q").count,
        0
    );
    assert!(
        s.tasks_of(&o, ObjectType::DnsARecord, &k)
            .await
            .expect("tasks")
            .is_empty(),
        "attribution goes with the object"
    );
    assert!(
        !s.objects_of(&o, t)
            .await
            .expect("objects_of")
            .iter()
            .any(|r| r.object_type == ObjectType::DnsARecord),
        "and the task's side of it"
    );
    let report = s.verify().await.expect("verify");
    assert!(report.is_consistent(), "{:?}", report.problems);
    assert_eq!(
        report.index_entries, 0,
        "the record's entries went with it; its hostname and network need none"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_values_round_trip_and_filter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let o = org("awkward");
    // A long TXT value is indexed by hash; its filter still finds exactly it.
    let long = format!("v=spf1 {}", "include:x.example ".repeat(3_000));
    let other = format!("{long}!");
    let txt = |v: &str| {
        Object::from_json(
            ObjectType::DnsTxtRecord,
            &json!({"hostname": "t.example", "prefix": "a|b", "value": v}),
        )
        .expect("txt")
    };
    let stored = s
        .upsert(&o, vec![txt(&long), txt(&other)], None)
        .await
        .expect("upsert");
    assert!(
        stored[0].key.as_str().len() > 4096,
        "a key longer than NaturalKey::parse allows"
    );
    let q = ObjectQuery::new(o.clone(), ObjectType::DnsTxtRecord).filter("value", &[long.as_str()]);
    let got = ObjectStore::query(&s, &q).await.expect("query");
    assert_eq!(got.count, 1);
    assert_eq!(got.items[0].object, txt(&long));
    // `|` inside a part cannot be confused with a separator.
    let q = ObjectQuery::new(o.clone(), ObjectType::DnsTxtRecord).filter("prefix", &["a|b"]);
    assert_eq!(ObjectStore::query(&s, &q).await.expect("query").count, 2);
    let q = ObjectQuery::new(o.clone(), ObjectType::DnsTxtRecord).filter("prefix", &["a"]);
    assert_eq!(ObjectStore::query(&s, &q).await.expect("query").count, 0);
    let t = TaskId::new();
    s.upsert(&o, vec![txt(&long)], Some(t))
        .await
        .expect("upsert");
    assert!(
        s.objects_of(&o, t)
            .await
            .expect("objects_of")
            .iter()
            .any(|r| r.key == stored[0].key)
    );
    // Organizations whose codes are prefixes of each other stay apart.
    s.upsert(&org("ab"), vec![host("x.example")], None)
        .await
        .expect("upsert");
    s.upsert(&org("abc"), vec![host("y.example")], None)
        .await
        .expect("upsert");
    let all = ObjectQuery::new(org("ab"), ObjectType::Hostname);
    let page = ObjectStore::query(&s, &all).await.expect("query");
    assert_eq!(page.count, 1);
    assert_eq!(page.items[0].key.as_str(), "internet|x.example");
    assert!(s.verify().await.expect("verify").is_consistent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_page_and_order_like_the_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let m = Arc::new(kat_core::memory::MemoryObjectStore::default());
    let o = org("paging");
    let mut batch = Vec::new();
    for i in 0..60u16 {
        let ip = format!("192.0.2.{}", i % 7);
        batch.push(
            Object::from_json(
                ObjectType::IpPort,
                &json!({"address": ip, "protocol": if i % 3 == 0 { "UDP" } else { "TCP" }, "port": 1000 + i * 37 % 50}),
            )
            .expect("port"),
        );
    }
    s.upsert(&o, batch.clone(), None)
        .await
        .expect("sled upsert");
    m.upsert(&o, batch, None).await.expect("memory upsert");
    let mut queries = Vec::new();
    for ordering in [None, Some("id"), Some("-id"), Some("port"), Some("-port")] {
        for (offset, limit) in [(0, 100), (5, 10), (50, 0), (200, 5)] {
            let mut q = ObjectQuery::new(o.clone(), ObjectType::IpPort);
            q.ordering = ordering.map(Ordering::parse);
            q.offset = offset;
            q.limit = limit;
            queries.push(q.clone());
            queries.push(q.clone().filter("protocol", &["TCP"]));
            queries.push(
                q.clone()
                    .filter("protocol", &["UDP", "TCP"])
                    .filter("address", &["internet|192.0.2.3", "internet|192.0.2.4"]),
            );
            let mut sq = q.clone();
            sq.search = Some("192.0.2.5|tcp".into());
            queries.push(sq);
            let mut kq = q.clone();
            kq.keys = Some(vec![
                key("internet|192.0.2.1|TCP|1037"),
                key("internet|192.0.2.0|UDP|1000"),
                key("internet|192.0.2.0|UDP|9"),
            ]);
            queries.push(kq);
        }
    }
    for q in queries {
        let a = ObjectStore::query(&s, &q).await.expect("sled query");
        let b = m.query(&q).await.expect("memory query");
        let keys = |p: &kat_core::store::Page<kat_core::store::StoredObject>| {
            p.items
                .iter()
                .map(|x| x.key.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!((a.count, keys(&a)), (b.count, keys(&b)), "{q:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribution_beyond_the_inline_list_keeps_first_seen_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let o = org("many-tasks");
    let k = key("internet|hot.example");
    let tasks: Vec<TaskId> = (0..7).map(|_| TaskId::new()).collect();
    for t in &tasks {
        s.upsert(&o, vec![host("hot.example")], Some(*t))
            .await
            .expect("upsert");
        // Seeing it again changes nothing.
        s.upsert(&o, vec![host("hot.example")], Some(*t))
            .await
            .expect("upsert");
    }
    s.upsert(&o, vec![host("hot.example")], Some(tasks[1]))
        .await
        .expect("upsert");
    s.upsert(&o, vec![host("hot.example")], Some(tasks[5]))
        .await
        .expect("upsert");
    assert_eq!(
        s.tasks_of(&o, ObjectType::Hostname, &k)
            .await
            .expect("tasks_of"),
        tasks
    );
    for t in &tasks {
        let of = s.objects_of(&o, *t).await.expect("objects_of");
        assert!(of.iter().any(|r| r.key == k), "{t} wrote it");
    }
    let report = s.verify().await.expect("verify");
    assert!(report.is_consistent(), "{:?}", report.problems);
    assert_eq!(
        report.attributions,
        7 + 7,
        "seven on the hostname, seven on its network"
    );
    // Deleted, then written again by one of them: only that one is attributed now.
    assert_eq!(
        ObjectStore::delete(&s, &o, ObjectType::Hostname, std::slice::from_ref(&k))
            .await
            .expect("delete"),
        1
    );
    assert!(
        s.objects_of(&o, tasks[6])
            .await
            .expect("objects_of")
            .iter()
            .all(|r| r.key != k)
    );
    s.upsert(&o, vec![host("hot.example")], Some(tasks[6]))
        .await
        .expect("upsert");
    assert_eq!(
        s.tasks_of(&o, ObjectType::Hostname, &k)
            .await
            .expect("tasks_of"),
        vec![tasks[6]]
    );
    assert!(
        s.objects_of(&o, tasks[0])
            .await
            .expect("objects_of")
            .iter()
            .all(|r| r.key != k)
    );
    assert!(
        s.objects_of(&o, tasks[6])
            .await
            .expect("objects_of")
            .iter()
            .any(|r| r.key == k)
    );
    let report = s.verify().await.expect("verify");
    assert!(report.is_consistent(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bulk_writes_are_refused_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let o = org("limit");
    s.set_max_batch_objects(10);
    assert_eq!(s.max_batch_objects(), 10);
    // Ten hostnames plus their network are eleven objects.
    let batch: Vec<Object> = (0..10).map(|i| host(&format!("l{i}.example"))).collect();
    match s.upsert(&o, batch.clone(), None).await {
        Err(Error::LimitExceeded(m)) => assert!(m.contains("11") && m.contains("10"), "{m}"),
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    let all = ObjectQuery::new(o.clone(), ObjectType::Hostname);
    assert_eq!(
        ObjectStore::query(&s, &all).await.expect("q").count,
        0,
        "nothing stored"
    );
    s.set_max_batch_objects(11);
    assert_eq!(s.upsert(&o, batch, None).await.expect("upsert").len(), 10);
}

/// Filters on key-leading fields (answered from the primary key order, not an index) agree with the
/// reference store, including values that are prefixes of other values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_leading_filters_agree_with_the_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let m = kat_core::memory::MemoryObjectStore::default();
    let o = org("leading");
    let mk = |ty: ObjectType, v: serde_json::Value| Object::from_json(ty, &v).expect("object");
    let mut batch = Vec::new();
    for h in ["a.example", "a.example.org", "ab.example", "b.example"] {
        batch.push(mk(
            ObjectType::DnsARecord,
            json!({"hostname": h, "ip_address": "192.0.2.1"}),
        ));
        batch.push(mk(
            ObjectType::DnsTxtRecord,
            json!({"hostname": h, "prefix": "p", "value": "v"}),
        ));
        batch.push(mk(
            ObjectType::Finding,
            json!({"finding_type": "KAT-X", "hostname": h}),
        ));
    }
    for (net, name) in [
        ("internet", "x.example"),
        ("intern", "x.example"),
        ("a-b", "y.example"),
    ] {
        batch.push(mk(
            ObjectType::Hostname,
            json!({"network": net, "name": name}),
        ));
    }
    for (name, version) in [
        ("nginx", Some("1.2")),
        ("nginx", None),
        ("nginx-extra", Some("1")),
    ] {
        let mut v = json!({"name": name});
        if let Some(ver) = version {
            v["version"] = json!(ver);
        }
        batch.push(mk(ObjectType::Software, v));
    }
    batch.push(mk(
        ObjectType::Finding,
        json!({"finding_type": "KAT-XY", "address": "192.0.2.1"}),
    ));
    s.upsert(&o, batch.clone(), None).await.expect("sled");
    m.upsert(&o, batch, None).await.expect("memory");
    let q = |ty, f: &str, v: &[&str]| ObjectQuery::new(o.clone(), ty).filter(f, v);
    let queries = vec![
        q(ObjectType::DnsARecord, "hostname", &["internet|a.example"]),
        q(
            ObjectType::DnsARecord,
            "hostname",
            &["internet|a.example", "internet|b.example"],
        ),
        q(
            ObjectType::DnsTxtRecord,
            "hostname",
            &["internet|ab.example"],
        ),
        q(ObjectType::DnsTxtRecord, "hostname", &["internet|a"]),
        q(ObjectType::Finding, "finding_type", &["KAT-X"]),
        q(ObjectType::Finding, "finding_type", &["KAT-XY"]),
        q(ObjectType::Finding, "hostname", &["internet|a.example"]),
        q(ObjectType::Hostname, "network", &["intern"]),
        q(ObjectType::Hostname, "network", &["a-b"]),
        q(ObjectType::Hostname, "network", &["internet"]).filter("name", &["x.example"]),
        q(ObjectType::Network, "name", &["a-b", "internet"]),
        q(ObjectType::Software, "name", &["ng|inx"]),
        q(ObjectType::Software, "name", &["ng"]),
        q(ObjectType::Software, "name", &["nginx"]),
        q(ObjectType::Software, "name", &["nginx"]).filter("version", &["null"]),
        q(ObjectType::IpPort, "address", &["internet|192.0.2.1"]),
        q(ObjectType::FindingType, "code", &["KAT-X"]),
        // Types the organization has no object of (a write's answer looks up all nine record
        // types of its hostnames), and an organization with no objects at all.
        q(
            ObjectType::DnsAaaaRecord,
            "hostname",
            &["internet|a.example"],
        ),
        q(ObjectType::DnsMxRecord, "hostname", &["internet|a.example"]),
        ObjectQuery::new(o.clone(), ObjectType::DnsCnameRecord),
        ObjectQuery::new(org("leading-empty"), ObjectType::DnsARecord)
            .filter("hostname", &["internet|a.example"]),
        ObjectQuery::new(org("leading-empty"), ObjectType::Hostname),
    ];
    for q in queries {
        let a = ObjectStore::query(&s, &q).await.expect("sled query");
        let b = m.query(&q).await.expect("memory query");
        let keys = |p: &kat_core::store::Page<kat_core::store::StoredObject>| {
            p.items
                .iter()
                .map(|x| x.key.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!((a.count, keys(&a)), (b.count, keys(&b)), "{q:?}");
        let (ka, kb) = (
            ObjectStore::query_keys(&s, &q).await.expect("sled keys"),
            m.query_keys(&q).await.expect("memory keys"),
        );
        assert_eq!(ka, kb, "{q:?}");
    }
    // Counts by a key-leading field (what business rules ask), also of a type the organization has
    // none of, and in organizations whose codes begin one another's.
    let hosts: Vec<String> = [
        "internet|a.example",
        "internet|b.example",
        "internet|c.example",
    ]
    .map(String::from)
    .to_vec();
    for (o, ty) in [
        (o.clone(), ObjectType::DnsARecord),
        (o.clone(), ObjectType::DnsAaaaRecord),
        (org("lead"), ObjectType::DnsARecord),
        (org("leading-empty"), ObjectType::DnsTxtRecord),
    ] {
        let a = s
            .count_matching(&o, ty, "hostname", &hosts, 5)
            .await
            .expect("sled count");
        let b = m
            .count_matching(&o, ty, "hostname", &hosts, 5)
            .await
            .expect("memory count");
        assert_eq!(a, b, "{o} {ty}");
    }
    let a = s
        .count_matching(&o, ObjectType::DnsARecord, "hostname", &hosts, 5)
        .await
        .expect("sled count");
    assert_eq!(
        a,
        vec![1, 1, 0],
        "the organization's own A records are counted"
    );
}

/// Upserts read before they take the writer lock; writers that overlap in time on the same objects
/// must still never lose each other's attribution (each re-reads what another changed under it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_upserts_lose_no_attribution() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Arc::new(open(dir.path()));
    let o = org("overlap");
    let writers = 6;
    let names: Vec<String> = (0..400).map(|i| format!("h{i}.overlap.example")).collect();
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let t = TaskId::new();
        tasks.push(t);
        let (s, o, names) = (s.clone(), o.clone(), names.clone());
        handles.push(tokio::spawn(async move {
            for _round in 0..3 {
                let batch: Vec<Object> = names.iter().map(|n| host(n)).collect();
                s.upsert(&o, batch, Some(t)).await.expect("upsert");
            }
        }));
    }
    for h in handles {
        h.await.expect("writer");
    }
    for n in names.iter().step_by(37) {
        let mut got = s
            .tasks_of(&o, ObjectType::Hostname, &key(&format!("internet|{n}")))
            .await
            .expect("tasks");
        got.sort();
        let mut want = tasks.clone();
        want.sort();
        assert_eq!(got, want, "{n} lost a writer");
    }
    for t in &tasks {
        assert_eq!(s.objects_of(&o, *t).await.expect("objects").len(), 401);
    }
    let report = s.verify().await.expect("verify");
    assert!(report.is_consistent(), "{:?}", report.problems);
}

/// Many writers at once, each waiting for its own flush (the API's load): every write completes. With
/// sled's `flush_async`, as many concurrent flushes as sled's pool has threads waited for a log write
/// queued behind them on that pool, and the store hung for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_flushed_writes_all_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let o = org("concurrent");
    for round in 0..5 {
        let writers: Vec<_> = (0..64)
            .map(|i| {
                let store = store.clone();
                let o = o.clone();
                tokio::spawn(async move {
                    store
                        .upsert(&o, vec![host(&format!("w{round}-{i}.example.com"))], None)
                        .await
                })
            })
            .collect();
        let all =
            tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(writers))
                .await
                .unwrap_or_else(|_| panic!("round {round}: concurrent flushed writes hung"));
        for w in all {
            w.expect("writer task").expect("upsert");
        }
    }
    let page = ObjectStore::query(&store, &ObjectQuery::new(o.clone(), ObjectType::Hostname))
        .await
        .expect("query");
    assert_eq!(page.count, 5 * 64);
}

#[tokio::test]
async fn schedules_and_sets_stored_without_an_integer_id_get_one_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = org("old-ids");
    let set = |name: &str| ObjectSet {
        id: ObjectSetId::new(),
        number: 0,
        name: name.into(),
        description: String::new(),
        org: o.clone(),
        object_type: ObjectType::Hostname,
        all: true,
        filters: vec![],
        keys: vec![],
    };
    let (a, b, sched) = {
        let s = open(dir.path());
        let a = s.put_object_set(set("a")).await.expect("put");
        let b = s.put_object_set(set("b")).await.expect("put");
        let sched = s
            .put_schedule(Schedule {
                id: ScheduleId::new(),
                number: 0,
                org: Some(o.clone()),
                plugin_id: "dns".into(),
                object_set: Some(a.id),
                interval: Interval::from_secs(60).expect("interval"),
                enabled: true,
                next_run_at: Timestamp::from_secs(0),
                last_run_at: None,
                created_at: Timestamp::from_secs(0),
                owner: None,
                disabled_reason: None,
            })
            .await
            .expect("put");
        assert_eq!((a.number, b.number, sched.number), (1, 2, 1));
        (a, b, sched)
    };
    {
        // Rewrite the records as they were stored before integer ids, and drop the counters.
        let db = raw_sled(dir.path());
        let state = db.open_tree("state").expect("state tree");
        let mut rewritten = 0;
        for tag in [b'E', b'S'] {
            for kv in state.scan_prefix([tag]) {
                let (k, v) = kv.expect("read");
                let mut rec: serde_json::Value = serde_json::from_slice(&v).expect("json");
                assert!(
                    rec.as_object_mut()
                        .expect("object")
                        .remove("number")
                        .is_some()
                );
                state
                    .insert(k, serde_json::to_vec(&rec).expect("json"))
                    .expect("write");
                rewritten += 1;
            }
            state.remove([b'N', tag]).expect("remove counter");
        }
        assert_eq!(rewritten, 3);
        db.flush().expect("flush");
    }
    let s = open(dir.path());
    let mut numbers = vec![
        s.get_object_set(a.id)
            .await
            .expect("get")
            .expect("a")
            .number,
        s.get_object_set(b.id)
            .await
            .expect("get")
            .expect("b")
            .number,
    ];
    numbers.sort_unstable();
    assert_eq!(numbers, vec![1, 2], "numbered on open");
    assert_eq!(
        s.get_schedule(sched.id)
            .await
            .expect("get")
            .expect("s")
            .number,
        1
    );
    // New ones continue after them.
    assert_eq!(s.put_object_set(set("c")).await.expect("put").number, 3);
    let report = s.verify().await.expect("verify");
    assert!(report.is_consistent(), "{:?}", report.problems);
}

/// Claims written one entry per target (`L` schedule key → `i64` ms, before a schedule's claims were
/// one record) still count: the schedule's next claim folds them into its record and removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_target_claims_of_an_older_database_still_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()));
    let schedule = ScheduleId::new();
    let at = Timestamp::from_secs(1_000);
    {
        let db = raw_sled(dir.path());
        let state = db.open_tree("state").expect("state");
        for name in ["old-a.example", "old-b.example"] {
            let mut k = vec![b'L'];
            k.extend_from_slice(schedule.0.as_bytes());
            k.extend(component(&format!("internet|{name}")));
            let ms = (at.as_millis() as u64) ^ (1 << 63);
            state.insert(k, &ms.to_be_bytes()[..]).expect("insert");
        }
        db.flush().expect("flush");
    }
    let s = open(dir.path());
    let targets = vec![
        key("internet|old-a.example"),
        key("internet|new.example"),
        key("internet|old-b.example"),
    ];
    let got = s
        .claim_targets(schedule, at, at.plus_secs(60), targets.clone())
        .await
        .expect("claim");
    assert_eq!(
        got,
        vec![key("internet|new.example")],
        "the old claims hold in their window"
    );
    let got = s
        .claim_targets(schedule, at, at.plus_secs(61), targets.clone())
        .await
        .expect("claim");
    assert!(got.is_empty(), "and stay after being folded: {got:?}");
    drop(s);
    let db = raw_sled(dir.path());
    let state = db.open_tree("state").expect("state");
    let mut prefix = vec![b'L'];
    prefix.extend_from_slice(schedule.0.as_bytes());
    assert_eq!(
        state.scan_prefix(prefix).count(),
        0,
        "the per-target entries are gone"
    );
    drop(state);
    drop(db);
    let s = open(dir.path());
    let later = at.plus_secs(86_400);
    assert_eq!(
        s.claim_targets(schedule, later, later, targets.clone())
            .await
            .expect("claim"),
        targets,
        "the next window hands out everything"
    );
}

/// A new file of type `raw` named `name`, carrying level 1.
fn raw_file(o: &OrgCode, name: &str) -> NewFile {
    NewFile {
        org: o.clone(),
        file_type: "raw".into(),
        name: name.into(),
        task: None,
        scan_level: Some(ScanLevel::new(1).expect("level")),
        level_from: LevelSource::Objects,
    }
}

/// Uploads on both sides of the size below which a file is received in memory and written in one
/// go: each reads back whole, and one that fails after that size (streamed to a temporary file by
/// then) or before it leaves no temporary file and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_streamed_uploads_and_their_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let o = org("sizes");
    let new = |name: &str| raw_file(&o, name);
    let tmp = dir.path().join("files").join("tmp");
    assert!(tmp.is_dir(), "uploads are spooled in {}", tmp.display());
    let leftovers = || std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
    for size in [0usize, 1, 256 * 1024, 256 * 1024 + 1, 3 * 1024 * 1024 + 17] {
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        // In chunks of 64 KiB, as a request body arrives.
        let chunks: Vec<std::io::Result<Bytes>> = data
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let meta = store
            .put(
                new(&format!("f{size}")),
                Box::pin(futures::stream::iter(chunks)),
            )
            .await
            .expect("put");
        assert_eq!(meta.size, size as u64);
        assert_eq!(
            read_all(&store, meta.id).await.expect("read"),
            data,
            "{size} bytes"
        );
    }
    assert_eq!(leftovers(), 0);
    for before_error in [10 * 1024usize, 1024 * 1024] {
        let mut chunks: Vec<std::io::Result<Bytes>> = vec![0u8; before_error]
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        chunks.push(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )));
        let before = FileStore::query(&store, &FileQuery::new(o.clone()))
            .await
            .expect("list")
            .count;
        assert!(
            store
                .put(new("broken"), Box::pin(futures::stream::iter(chunks)))
                .await
                .is_err()
        );
        assert_eq!(leftovers(), 0, "{before_error} bytes before the error");
        assert_eq!(
            FileStore::query(&store, &FileQuery::new(o.clone()))
                .await
                .expect("list")
                .count,
            before,
            "a failed upload stores nothing"
        );
    }
}

/// Identical contents are stored once and counted: a second file of them writes no new blob,
/// deleting one leaves the other readable, deleting the last removes the contents, and the same
/// contents uploaded after that are stored afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_contents_are_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let o = org("dedup");
    let new = |name: &str| raw_file(&o, name);
    let blobs = || {
        let mut n = 0;
        for d in std::fs::read_dir(dir.path().join("files")).expect("files dir") {
            let d = d.expect("entry").path();
            if d.is_dir() && d.file_name().is_some_and(|n| n != "tmp") {
                n += std::fs::read_dir(&d).expect("blob dir").count();
            }
        }
        n
    };
    let a = store
        .put(new("a"), body(b"same output\n"))
        .await
        .expect("a");
    let b = store
        .put(new("b"), body(b"same output\n"))
        .await
        .expect("b");
    assert_ne!(a.id, b.id);
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(blobs(), 1, "one copy of the contents");
    assert!(FileStore::delete(&store, a.id).await.expect("delete a"));
    assert_eq!(read_all(&store, b.id).await.expect("b"), b"same output\n");
    assert_eq!(blobs(), 1);
    assert!(FileStore::delete(&store, b.id).await.expect("delete b"));
    assert_eq!(blobs(), 0, "the last file took its contents");
    let c = store
        .put(new("c"), body(b"same output\n"))
        .await
        .expect("c");
    assert_eq!(read_all(&store, c.id).await.expect("c"), b"same output\n");
    assert_eq!(blobs(), 1);
    let report = store.verify().await.expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_work_counts_each_upsert_and_its_phases() {
    let o = org("work");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    assert_eq!(store.upsert_work(), Default::default());
    let batch: Vec<Object> = (0..500)
        .map(|i| host(&format!("h{i}.work.example")))
        .collect();
    store
        .upsert(&o, batch, Some(TaskId::new()))
        .await
        .expect("upsert");
    let first = store.upsert_work();
    // 500 hostnames and the network they name.
    assert_eq!((first.upserts, first.objects), (1, 501));
    assert!(first.applying > Duration::ZERO, "{first:?}");
    assert!(first.merging > Duration::ZERO, "{first:?}");
    // A flush per write (the default) is waited for and counted.
    assert!(first.flushing > Duration::ZERO, "{first:?}");
    assert_eq!(
        first.serial(),
        first.merging + first.preparing + first.applying
    );
    assert_eq!(
        first.total(),
        first.expanding + first.serial() + first.flushing
    );
    store
        .replace(&o, host("h1.work.example"), None)
        .await
        .expect("replace");
    let spent = store.upsert_work().since(&first);
    assert_eq!((spent.upserts, spent.objects), (1, 2));
    // A batch over the limit writes nothing and counts no upsert.
    store.set_max_batch_objects(10);
    let before = store.upsert_work();
    let big: Vec<Object> = (0..20)
        .map(|i| host(&format!("x{i}.work.example")))
        .collect();
    assert!(store.upsert(&o, big, None).await.is_err());
    assert_eq!(store.upsert_work(), before);
    assert_eq!(before.upserts, 2);

    // Periodic durability waits for no flush, and counts none.
    let dir = tempfile::tempdir().expect("tempdir");
    let periodic = SledStore::open(
        dir.path(),
        SledOptions {
            durability: Durability::Periodic(Duration::from_secs(1)),
            ..SledOptions::default()
        },
    )
    .expect("open");
    periodic
        .upsert(&o, vec![host("a.work.example")], None)
        .await
        .expect("upsert");
    let w = periodic.upsert_work();
    assert_eq!((w.upserts, w.flushing), (1, Duration::ZERO));
}
