//! The [`ObjectStore`] conformance suite. Call [`run_all`] (or the single cases) from a backend's
//! tests with a fresh, empty store.

use std::sync::Arc;

use serde_json::json;

use crate::object::{FieldValue, NaturalKey, Object, ObjectType, ScanLevel, ScanProfile};
use crate::org::OrgCode;
use crate::store::{ObjectQuery, ObjectStore, Ordering};
use crate::task::TaskId;
use crate::{Error, Result};

fn org(s: &str) -> OrgCode {
    OrgCode::new(s).expect("valid org code")
}

fn obj(ty: ObjectType, v: serde_json::Value) -> Object {
    Object::from_json(ty, &v).expect("valid object")
}

fn ip(address: &str) -> Object {
    obj(
        ObjectType::IpAddress,
        json!({"network": "internet", "address": address}),
    )
}

fn host(name: &str) -> Object {
    obj(
        ObjectType::Hostname,
        json!({"network": "internet", "name": name}),
    )
}

fn port(ip: &str, p: u16) -> Object {
    obj(
        ObjectType::IpPort,
        json!({"address": ip, "protocol": "TCP", "port": p}),
    )
}

fn key(s: &str) -> NaturalKey {
    NaturalKey::parse(s).expect("valid key")
}

async fn exists(store: &dyn ObjectStore, org: &OrgCode, ty: ObjectType, k: &str) -> Result<bool> {
    Ok(store.get(org, ty, &key(k)).await?.is_some())
}

async fn count(store: &dyn ObjectStore, org: &OrgCode, ty: ObjectType) -> Result<u64> {
    Ok(store.query(&ObjectQuery::new(org.clone(), ty)).await?.count)
}

/// Writing the same object twice stores one object, keeps its creation data and updates `last_seen`.
pub async fn upsert_is_idempotent(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-idem");
    let first = store.upsert(&o, vec![host("example.com")], None).await?;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].key.as_str(), "internet|example.com");
    let again = store
        .upsert(&o, vec![host("EXAMPLE.com."), host("example.com")], None)
        .await?;
    assert_eq!(again.len(), 2, "one stored object per input object");
    assert_eq!(again[0].key, first[0].key);
    assert_eq!(
        again[0].created_at, first[0].created_at,
        "created_at is kept"
    );
    assert!(again[0].last_seen >= first[0].last_seen);
    assert_eq!(count(store, &o, ObjectType::Hostname).await?, 1);
    assert_eq!(
        count(store, &o, ObjectType::Network).await?,
        1,
        "the referenced network was created once"
    );
    Ok(())
}

/// Lookups by type and natural key, including keys whose values contain `|` and `/`.
pub async fn natural_key_lookups(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-keys");
    let txt = obj(
        ObjectType::DnsTxtRecord,
        json!({"hostname": "internet|x.com", "prefix": "s1._domainkey", "value": "k=rsa; p=MI/+G|end|"}),
    );
    let k = txt.natural_key();
    store
        .upsert(&o, vec![txt.clone(), host("a.com")], None)
        .await?;
    let got = store
        .get(&o, ObjectType::DnsTxtRecord, &k)
        .await?
        .expect("the TXT record is there");
    assert_eq!(got.object, txt);
    assert_eq!(
        got.object.field("value"),
        Some(FieldValue::Text("k=rsa; p=MI/+G|end|".into()))
    );
    assert!(exists(store, &o, ObjectType::Hostname, "internet|a.com").await?);
    assert!(!exists(store, &o, ObjectType::Hostname, "internet|b.com").await?);
    assert!(
        !exists(store, &o, ObjectType::IpAddress, "internet|a.com").await?,
        "the type is part of the identity"
    );
    assert!(
        store
            .get(
                &org("c-other"),
                ObjectType::Hostname,
                &key("internet|a.com")
            )
            .await?
            .is_none()
    );
    Ok(())
}

/// Referenced objects are created with the referring one, and attributes merge instead of vanishing.
pub async fn references_and_merging(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-refs");
    let a = obj(
        ObjectType::DnsARecord,
        json!({"hostname": "www.a.com", "ip_address": "192.0.2.1", "ttl": 300}),
    );
    store.upsert(&o, vec![a.clone()], None).await?;
    assert!(exists(store, &o, ObjectType::Hostname, "internet|www.a.com").await?);
    assert!(exists(store, &o, ObjectType::IpAddress, "internet|192.0.2.1").await?);
    assert!(exists(store, &o, ObjectType::Network, "internet").await?);
    // The same record without a TTL keeps the TTL; with one, it takes it.
    let no_ttl = obj(
        ObjectType::DnsARecord,
        json!({"hostname": "www.a.com", "ip_address": "192.0.2.1"}),
    );
    let s = store.upsert(&o, vec![no_ttl], None).await?;
    assert_eq!(s[0].object.field("ttl"), Some(FieldValue::Int(300)));
    let ttl5 = obj(
        ObjectType::DnsARecord,
        json!({"hostname": "www.a.com", "ip_address": "192.0.2.1", "ttl": 5}),
    );
    store.upsert(&o, vec![ttl5], None).await?;
    let got = store
        .get(&o, ObjectType::DnsARecord, &a.natural_key())
        .await?
        .expect("record");
    assert_eq!(got.object.field("ttl"), Some(FieldValue::Int(5)));
    assert_eq!(count(store, &o, ObjectType::DnsARecord).await?, 1);
    // A finding creates its finding type and subject.
    let f = obj(
        ObjectType::Finding,
        json!({"finding_type": "KAT-OPEN-DATABASE-PORT", "address": "192.0.2.9"}),
    );
    store.upsert(&o, vec![f], None).await?;
    assert!(exists(store, &o, ObjectType::FindingType, "KAT-OPEN-DATABASE-PORT").await?);
    assert!(exists(store, &o, ObjectType::IpAddress, "internet|192.0.2.9").await?);
    Ok(())
}

/// `replace` clears what the new version lacks and replaces lists (where `upsert` merges), keeps
/// dates, attribution and the scan profile, updates the indexes, and refuses a missing object
/// without writing anything.
pub async fn replace_clears_fields(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-replace");
    let (t1, t2) = (TaskId::new(), TaskId::new());
    let full = obj(
        ObjectType::IpPort,
        json!({"address": "192.0.2.7", "protocol": "TCP", "port": 443, "tls": true,
               "service": "https", "software": ["nginx", "openssl"]}),
    );
    let k = full.natural_key();
    let first = store.upsert(&o, vec![full], Some(t1)).await?.remove(0);
    // upsert merges: a version without the service keeps it, software lists are joined.
    let sparse = obj(
        ObjectType::IpPort,
        json!({"address": "192.0.2.7", "protocol": "TCP", "port": 443, "software": ["nginx"]}),
    );
    let merged = store
        .upsert(&o, vec![sparse.clone()], None)
        .await?
        .remove(0);
    assert_eq!(
        merged.object.field("service"),
        Some(FieldValue::Text("https".into()))
    );
    // replace: the same sparse version clears the service and tls and keeps only its software.
    let replaced = store.replace(&o, sparse, Some(t2)).await?;
    assert_eq!(
        replaced.object.field("service"),
        Some(FieldValue::Null),
        "service cleared"
    );
    assert_eq!(
        replaced.object.field("tls"),
        Some(FieldValue::Null),
        "tls cleared"
    );
    assert_eq!(
        replaced.object.to_json()["software"],
        json!(["nginx"]),
        "the list is replaced"
    );
    assert_eq!(replaced.created_at, first.created_at);
    assert_eq!(replaced.created_by, Some(t1));
    assert_eq!(replaced.last_seen_by, Some(t2));
    let got = store
        .get(&o, ObjectType::IpPort, &k)
        .await?
        .expect("the object is still there");
    assert_eq!(
        got.object, replaced.object,
        "what get returns is what replace returned"
    );
    assert_eq!(
        store.tasks_of(&o, ObjectType::IpPort, &k).await?,
        vec![t1, t2],
        "the replacing task is attributed"
    );
    assert!(
        store
            .objects_of(&o, t2)
            .await?
            .iter()
            .any(|r| r.object_type == ObjectType::IpPort && r.key == k)
    );
    // The index follows: the old service no longer matches.
    let by_service =
        |v: &str| ObjectQuery::new(o.clone(), ObjectType::IpPort).filter("service", &[v]);
    assert_eq!(store.query(&by_service("https")).await?.count, 0);
    // The scan profile is kept.
    let h = host("replace.example");
    let hk = h.natural_key();
    store.upsert(&o, vec![h.clone()], None).await?;
    let level = ScanProfile::declared(ScanLevel::new(2).expect("level"));
    store
        .set_scan_profile(&o, ObjectType::Hostname, &hk, level)
        .await?;
    let h2 = store.replace(&o, h, None).await?;
    assert_eq!(
        h2.scan,
        Some(level),
        "replace keeps the declared scan level"
    );
    // A missing object: NotFound, and nothing is written, not even what it refers to.
    let ghost = obj(
        ObjectType::IpPort,
        json!({"address": "198.51.100.77", "protocol": "TCP", "port": 22}),
    );
    match store.replace(&o, ghost.clone(), Some(t1)).await {
        Err(Error::NotFound { .. }) => {}
        other => panic!("replacing a missing object: expected NotFound, got {other:?}"),
    }
    assert!(!exists(store, &o, ObjectType::IpPort, ghost.natural_key().as_str()).await?);
    assert!(!exists(store, &o, ObjectType::IpAddress, "internet|198.51.100.77").await?);
    Ok(())
}

/// Scan profiles: new objects have none, re-writing keeps a declared one, and only networks,
/// hostnames and addresses have one.
pub async fn scan_profiles(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-scan");
    let s = store
        .upsert(&o, vec![host("a.com"), port("192.0.2.1", 80)], None)
        .await?;
    assert_eq!(s[0].scan, Some(ScanProfile::default()));
    assert_eq!(s[1].scan, None);
    let l2 = ScanProfile::declared(ScanLevel::new(2)?);
    let set = store
        .set_scan_profile(&o, ObjectType::Hostname, &key("internet|a.com"), l2)
        .await?;
    assert_eq!(set.scan, Some(l2));
    let again = store.upsert(&o, vec![host("a.com")], None).await?;
    assert_eq!(
        again[0].scan,
        Some(l2),
        "re-posting keeps the scan level (\"still intact\")"
    );
    let e = store
        .set_scan_profile(
            &o,
            ObjectType::IpPort,
            &key("internet|192.0.2.1|TCP|80"),
            l2,
        )
        .await
        .expect_err("ports have no scan level");
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    let e = store
        .set_scan_profile(&o, ObjectType::Hostname, &key("internet|missing.com"), l2)
        .await
        .expect_err("missing object");
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    // min_scan_level filters.
    store
        .upsert(&o, vec![host("b.com"), host("c.com")], None)
        .await?;
    store
        .set_scan_profile(
            &o,
            ObjectType::Hostname,
            &key("internet|c.com"),
            ScanProfile::declared(ScanLevel::new(1)?),
        )
        .await?;
    let mut q = ObjectQuery::new(o.clone(), ObjectType::Hostname);
    q.min_scan_level = Some(ScanLevel::new(1)?);
    let names: Vec<String> = store
        .query(&q)
        .await?
        .items
        .iter()
        .map(|s| s.key.to_string())
        .collect();
    assert_eq!(names, vec!["internet|a.com", "internet|c.com"]);
    q.min_scan_level = Some(ScanLevel::new(2)?);
    assert_eq!(store.query(&q).await?.count, 1);
    q.min_scan_level = Some(ScanLevel::new(0)?);
    assert_eq!(
        store.query(&q).await?.count,
        2,
        "no level means not even level 0"
    );
    Ok(())
}

/// [`ObjectStore::query_keys`] answers what [`ObjectStore::query`] would, key for key and in the same
/// order, for every shape of query (the scheduler's: every object of a type at a minimum scan
/// level); an unknown filter is refused the same way, an empty key restriction gives nothing.
pub async fn query_keys_agree_with_query(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-keys");
    let names: Vec<String> = (0..40).map(|i| format!("k{i:02}.example")).collect();
    let hosts: Vec<Object> = names.iter().map(|n| host(n)).collect();
    store.upsert(&o, hosts, None).await?;
    store.upsert(&o, vec![port("192.0.2.1", 80)], None).await?;
    // Levels 0 to 4 round the hostnames, a few left without one.
    for (i, n) in names.iter().enumerate().filter(|(i, _)| i % 7 != 3) {
        let level = ScanLevel::new((i % 5) as u8)?;
        store
            .set_scan_profile(
                &o,
                ObjectType::Hostname,
                &key(&format!("internet|{n}")),
                ScanProfile::declared(level),
            )
            .await?;
    }
    let base = ObjectQuery::new(o.clone(), ObjectType::Hostname);
    let mut queries = Vec::new();
    for min in [None, Some(0), Some(1), Some(3), Some(4)] {
        for limit in [0, 5] {
            let mut q = base.clone();
            q.min_scan_level = min.map(ScanLevel::new).transpose()?;
            q.limit = limit;
            queries.push(q);
        }
    }
    let mut q = base.clone();
    q.offset = 3;
    queries.push(q);
    let mut q = base.clone();
    q.search = Some("K1".into());
    q.limit = 0;
    queries.push(q);
    let mut q = base.clone().filter("network", &["internet"]);
    q.min_scan_level = Some(ScanLevel::new(2)?);
    q.limit = 0;
    queries.push(q);
    let mut q = base.clone();
    q.keys = Some(vec![
        key("internet|k05.example"),
        key("internet|k01.example"),
    ]);
    queries.push(q);
    let mut q = base.clone();
    q.ordering = Some(Ordering::parse("-id"));
    q.min_scan_level = Some(ScanLevel::new(1)?);
    q.limit = 0;
    queries.push(q);
    let mut q = ObjectQuery::new(o.clone(), ObjectType::IpPort);
    q.limit = 0;
    queries.push(q);
    for q in &queries {
        let want: Vec<NaturalKey> = store
            .query(q)
            .await?
            .items
            .into_iter()
            .map(|s| s.key)
            .collect();
        assert_eq!(store.query_keys(q).await?, want, "{q:?}");
    }
    let mut all = base.clone();
    all.limit = 0;
    all.min_scan_level = Some(ScanLevel::new(0)?);
    assert_eq!(
        store.query_keys(&all).await?.len(),
        names.len() - (0..names.len()).filter(|i| i % 7 == 3).count(),
        "every hostname with a level"
    );
    let mut none = base.clone();
    none.keys = Some(Vec::new());
    assert!(store.query_keys(&none).await?.is_empty());
    let bad = base.clone().filter("no_such_field", &["x"]);
    let e = store.query_keys(&bad).await.expect_err("unknown filter");
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    Ok(())
}

/// The keys a query finds, sorted.
async fn sorted_keys(store: &dyn ObjectStore, q: &ObjectQuery) -> Result<Vec<String>> {
    let mut found: Vec<String> = store
        .query(q)
        .await?
        .items
        .iter()
        .map(|s| s.key.to_string())
        .collect();
    found.sort();
    Ok(found)
}

/// Field filters (repeated values are an OR; relations by key), search, key restriction, and
/// unknown filters refused.
pub async fn filters_and_search(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-filter");
    let mut batch = Vec::new();
    for p in [22u16, 80, 443, 5432, 8080] {
        batch.push(port("192.0.2.1", p));
    }
    batch.push(port("192.0.2.2", 80));
    batch.push(obj(
        ObjectType::IpPort,
        json!({"address": "192.0.2.2", "port": 53, "protocol": "udp"}),
    ));
    store.upsert(&o, batch, None).await?;
    let q = |f: &str, v: &[&str]| ObjectQuery::new(o.clone(), ObjectType::IpPort).filter(f, v);
    assert_eq!(store.query(&q("port", &["80", "443"])).await?.count, 3);
    assert_eq!(
        store
            .query(&q("address", &["internet|192.0.2.2"]))
            .await?
            .count,
        2
    );
    assert_eq!(store.query(&q("protocol", &["UDP"])).await?.count, 1);
    assert_eq!(
        store
            .query(&q("address", &["internet|192.0.2.1"]).filter("port", &["80", "53"]))
            .await?
            .count,
        1,
        "different fields are an AND"
    );
    assert_eq!(store.query(&q("port", &["9"])).await?.count, 0);
    assert_eq!(
        store
            .query(&q("port", &["1", "80", "9999", "22", "80", "23", "8080"]))
            .await?
            .count,
        4,
        "many values, most matching nothing, one repeated"
    );
    // A relation filter with many values: names that begin other names, names between them that
    // match nothing, repeats.
    let mut records = Vec::new();
    for (name, ip) in [
        ("a.example", "192.0.2.10"),
        ("a.example", "192.0.2.11"),
        ("a.example.com", "192.0.2.12"),
        ("a.example.com.evil", "192.0.2.13"),
        ("b.example", "192.0.2.14"),
        ("c.example", "192.0.2.15"),
    ] {
        records.push(a_record(name, ip));
    }
    store.upsert(&o, records, None).await?;
    let owners =
        |v: &[&str]| ObjectQuery::new(o.clone(), ObjectType::DnsARecord).filter("hostname", v);
    assert_eq!(
        sorted_keys(
            store,
            &owners(&[
                "internet|c.example",
                "internet|a.example",
                "internet|a.example.co",
                "internet|a.example.com",
                "internet|a.exampl",
                "internet|b",
                "internet|a.example",
                "internet|zzz.example",
            ])
        )
        .await?,
        [
            "internet|a.example.com|internet|192.0.2.12",
            "internet|a.example|internet|192.0.2.10",
            "internet|a.example|internet|192.0.2.11",
            "internet|c.example|internet|192.0.2.15",
        ]
    );
    assert_eq!(
        sorted_keys(store, &owners(&["internet|a.example.com.evil"])).await?,
        ["internet|a.example.com.evil|internet|192.0.2.13"]
    );
    let e = store
        .query(&q("pk", &["x"]))
        .await
        .expect_err("unknown filter");
    assert!(e.to_string().contains("pk"), "{e}");
    assert!(matches!(e, Error::Invalid { .. }));
    let mut s = ObjectQuery::new(o.clone(), ObjectType::IpPort);
    s.search = Some("192.0.2.2|udp".into());
    assert_eq!(
        store.query(&s).await?.count,
        1,
        "search is a case-insensitive substring of the key"
    );
    let mut k = ObjectQuery::new(o.clone(), ObjectType::IpPort);
    k.keys = Some(vec![
        key("internet|192.0.2.1|TCP|22"),
        key("internet|192.0.2.1|TCP|23"),
    ]);
    assert_eq!(store.query(&k).await?.count, 1);
    k.keys = Some(vec![]);
    assert_eq!(
        store.query(&k).await?.count,
        0,
        "an empty key list matches nothing"
    );
    Ok(())
}

/// A hostname's `name` and an address's `address` filter find the objects in every network, networks
/// whose names are prefixes of one another or sort between each other's keys included.
pub async fn filters_across_networks(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-networks");
    let networks = [
        "internet",
        "inter",
        "internet2",
        "a",
        "a-b",
        "a.b",
        "a_b",
        "z",
        "0",
    ];
    let mut batch = Vec::new();
    for n in networks {
        for name in ["www.example.com", "mail.example.com"] {
            batch.push(obj(
                ObjectType::Hostname,
                json!({"network": n, "name": name}),
            ));
        }
        batch.push(obj(
            ObjectType::IpAddress,
            json!({"network": n, "address": "192.0.2.9"}),
        ));
    }
    batch.push(obj(
        ObjectType::Hostname,
        json!({"network": "internet", "name": "only.example.com"}),
    ));
    store.upsert(&o, batch, None).await?;
    let hosts =
        |f: &str, v: &[&str]| ObjectQuery::new(o.clone(), ObjectType::Hostname).filter(f, v);
    assert_eq!(
        store
            .query(&hosts("name", &["www.example.com"]))
            .await?
            .count,
        9
    );
    assert_eq!(
        store
            .query(&hosts("name", &["www.example.com", "only.example.com"]))
            .await?
            .count,
        10
    );
    assert_eq!(
        store
            .query(&hosts("name", &["www.example.com"]).filter("network", &["a-b"]))
            .await?
            .count,
        1
    );
    assert_eq!(
        store.query(&hosts("name", &["example.com"])).await?.count,
        0
    );
    assert_eq!(
        store.query(&hosts("name", &["www.example"])).await?.count,
        0
    );
    let page = store
        .query(&hosts("name", &["only.example.com"]).filter("network", &["inter"]))
        .await?;
    assert_eq!(page.count, 0, "filters on one object are an AND");
    let ips = ObjectQuery::new(o.clone(), ObjectType::IpAddress).filter("address", &["192.0.2.9"]);
    let found = store.query(&ips).await?;
    assert_eq!(found.count, 9);
    let mut nets: Vec<String> = found
        .items
        .iter()
        .map(|s| s.key.parts()[0].clone())
        .collect();
    nets.sort();
    let mut want: Vec<String> = networks.iter().map(|n| n.to_string()).collect();
    want.sort();
    assert_eq!(nets, want);
    let other =
        ObjectQuery::new(o.clone(), ObjectType::IpAddress).filter("address", &["192.0.2.10"]);
    assert_eq!(store.query(&other).await?.count, 0);
    Ok(())
}

/// Ordering (numbers as numbers), limit/offset and the total count.
pub async fn ordering_and_paging(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-order");
    let names = [
        "delta.com",
        "alpha.com",
        "echo.com",
        "charlie.com",
        "bravo.com",
    ];
    store
        .upsert(&o, names.iter().map(|n| host(n)).collect(), None)
        .await?;
    let mut q = ObjectQuery::new(o.clone(), ObjectType::Hostname);
    let all: Vec<String> = store
        .query(&q)
        .await?
        .items
        .iter()
        .map(|s| s.key.to_string())
        .collect();
    assert_eq!(
        all.first().map(String::as_str),
        Some("internet|alpha.com"),
        "by key by default"
    );
    q.ordering = Some(Ordering::parse("-name"));
    q.limit = 2;
    q.offset = 1;
    let p = store.query(&q).await?;
    assert_eq!(p.count, 5, "count is all matches, not the page");
    let got: Vec<String> = p.items.iter().map(|s| s.key.to_string()).collect();
    assert_eq!(got, vec!["internet|delta.com", "internet|charlie.com"]);
    q.offset = 10;
    assert!(store.query(&q).await?.items.is_empty());
    // Ports order numerically.
    store
        .upsert(
            &o,
            vec![
                port("192.0.2.1", 8080),
                port("192.0.2.1", 443),
                port("192.0.2.1", 80),
            ],
            None,
        )
        .await?;
    let mut pq = ObjectQuery::new(o.clone(), ObjectType::IpPort);
    pq.ordering = Some(Ordering::parse("port"));
    let ports: Vec<Option<FieldValue>> = store
        .query(&pq)
        .await?
        .items
        .iter()
        .map(|s| s.object.field("port"))
        .collect();
    assert_eq!(
        ports,
        vec![
            Some(FieldValue::Int(80)),
            Some(FieldValue::Int(443)),
            Some(FieldValue::Int(8080))
        ]
    );
    pq.ordering = Some(Ordering::parse("colour"));
    assert!(store.query(&pq).await.is_err(), "unknown ordering field");
    Ok(())
}

/// Organizations never see each other's objects.
pub async fn organizations_are_isolated(store: &dyn ObjectStore) -> Result<()> {
    let (a, b) = (org("c-iso-a"), org("c-iso-b"));
    store
        .upsert(&a, vec![host("shared.com"), host("only-a.com")], None)
        .await?;
    store.upsert(&b, vec![host("shared.com")], None).await?;
    assert_eq!(count(store, &a, ObjectType::Hostname).await?, 2);
    assert_eq!(count(store, &b, ObjectType::Hostname).await?, 1);
    assert!(!exists(store, &b, ObjectType::Hostname, "internet|only-a.com").await?);
    assert_eq!(
        store
            .delete(&b, ObjectType::Hostname, &[key("internet|only-a.com")])
            .await?,
        0
    );
    assert!(exists(store, &a, ObjectType::Hostname, "internet|only-a.com").await?);
    Ok(())
}

/// Attribution: which tasks wrote an object, and which objects a task wrote.
pub async fn attribution(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-attr");
    let (t1, t2) = (TaskId::new(), TaskId::new());
    let s = store.upsert(&o, vec![host("a.com")], Some(t1)).await?;
    assert_eq!(s[0].created_by, Some(t1));
    let s = store
        .upsert(&o, vec![host("a.com"), host("b.com")], Some(t2))
        .await?;
    assert_eq!(s[0].created_by, Some(t1), "creator is kept");
    assert_eq!(s[0].last_seen_by, Some(t2));
    let j = s[0].to_json();
    assert_eq!(
        j["created_by"],
        serde_json::json!(t1.to_string()),
        "the API shows attribution"
    );
    assert_eq!(j["last_seen_by"], serde_json::json!(t2.to_string()));
    store.upsert(&o, vec![host("a.com")], None).await?;
    assert_eq!(
        store
            .tasks_of(&o, ObjectType::Hostname, &key("internet|a.com"))
            .await?,
        vec![t1, t2]
    );
    assert_eq!(
        store
            .tasks_of(&o, ObjectType::Hostname, &key("internet|b.com"))
            .await?,
        vec![t2]
    );
    let of_t2: Vec<String> = store
        .objects_of(&o, t2)
        .await?
        .iter()
        .map(|r| format!("{}:{}", r.object_type, r.key))
        .collect();
    assert!(
        of_t2.contains(&"hostname:internet|a.com".to_string()),
        "{of_t2:?}"
    );
    assert!(
        of_t2.contains(&"hostname:internet|b.com".to_string()),
        "{of_t2:?}"
    );
    assert!(store.objects_of(&org("c-attr-other"), t2).await?.is_empty());
    // A deleted object is no longer attributed to anyone.
    assert_eq!(
        store
            .delete(&o, ObjectType::Hostname, &[key("internet|b.com")])
            .await?,
        1
    );
    assert!(
        store
            .tasks_of(&o, ObjectType::Hostname, &key("internet|b.com"))
            .await?
            .is_empty()
    );
    let of_t2: Vec<String> = store
        .objects_of(&o, t2)
        .await?
        .iter()
        .map(|r| r.key.to_string())
        .collect();
    assert!(!of_t2.contains(&"internet|b.com".to_string()), "{of_t2:?}");
    assert!(of_t2.contains(&"internet|a.com".to_string()), "{of_t2:?}");
    Ok(())
}

/// Delete by keys counts only what existed.
pub async fn delete_by_keys(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-del");
    store
        .upsert(&o, vec![host("a.com"), host("b.com"), host("c.com")], None)
        .await?;
    let n = store
        .delete(
            &o,
            ObjectType::Hostname,
            &[
                key("internet|a.com"),
                key("internet|b.com"),
                key("internet|zzz.com"),
            ],
        )
        .await?;
    assert_eq!(n, 2);
    assert_eq!(count(store, &o, ObjectType::Hostname).await?, 1);
    assert_eq!(
        store.delete(&o, ObjectType::Hostname, &[]).await?,
        0,
        "no keys deletes nothing"
    );
    assert_eq!(count(store, &o, ObjectType::Hostname).await?, 1);
    assert!(
        store
            .query(&ObjectQuery::new(o.clone(), ObjectType::Hostname).filter("name", &["a.com"]))
            .await?
            .items
            .is_empty()
    );
    Ok(())
}

/// A bulk write of 1,000 objects is visible whole.
pub async fn bulk_writes(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-bulk");
    let batch: Vec<Object> = (0..1000)
        .map(|i| host(&format!("h{i}.bulk.example")))
        .collect();
    let s = store.upsert(&o, batch, Some(TaskId::new())).await?;
    assert_eq!(s.len(), 1000);
    assert_eq!(count(store, &o, ObjectType::Hostname).await?, 1000);
    let one = store
        .query(
            &ObjectQuery::new(o.clone(), ObjectType::Hostname)
                .filter("name", &["h777.bulk.example"]),
        )
        .await?;
    assert_eq!(one.count, 1);
    Ok(())
}

/// Concurrent writers with overlapping keys: nothing is lost, nothing duplicated, every writer's
/// attribution is complete.
pub async fn concurrent_writers(store: Arc<dyn ObjectStore>) -> Result<()> {
    let o = org("c-conc");
    let writers = 8;
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let o = o.clone();
        let t = TaskId::new();
        tasks.push(t);
        handles.push(tokio::spawn(async move {
            for round in 0..20 {
                // Half of the keys are shared by all writers, half are the writer's own.
                let batch: Vec<Object> = (0..10)
                    .map(|i| {
                        if i % 2 == 0 {
                            host(&format!("shared{}-{i}.example", round % 5))
                        } else {
                            host(&format!("w{w}-r{round}-{i}.example"))
                        }
                    })
                    .collect();
                store.upsert(&o, batch, Some(t)).await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for h in handles {
        h.await
            .map_err(|e| Error::backend_source("test", e, false))??;
    }
    let expected = 5 * 5 + writers * 20 * 5;
    assert_eq!(
        count(&*store, &o, ObjectType::Hostname).await?,
        expected as u64
    );
    for t in tasks {
        let of = store.objects_of(&o, t).await?;
        let hostnames = of
            .iter()
            .filter(|r| r.object_type == ObjectType::Hostname)
            .count();
        assert_eq!(hostnames, 25 + 100, "writer attribution complete");
    }
    let shared = store
        .tasks_of(&o, ObjectType::Hostname, &key("internet|shared0-0.example"))
        .await?;
    assert_eq!(shared.len(), writers);
    Ok(())
}

/// Writers racing over the same objects keep the levels right: A records raise their addresses'
/// levels (a write that changes the records of objects it was not given) while other writers write
/// those addresses and hostnames again and declare levels; at the end every address has the level
/// its hostname gives it, and a full recomputation changes nothing.
pub async fn levels_concurrent_writers(store: Arc<dyn ObjectStore>) -> Result<()> {
    let o = org("c-lvl-conc");
    const HOSTS: usize = 40;
    let name = |i: usize| format!("h{i:02}.race.example");
    let addr = |i: usize| format!("198.51.100.{}", i + 1);
    store
        .upsert(&o, (0..HOSTS).map(|i| host(&name(i))).collect(), None)
        .await?;
    for i in (0..HOSTS).step_by(2) {
        declare(&*store, &o, &name(i), Some(2)).await?;
    }
    let mut handles = Vec::new();
    // The A records, five at a time.
    {
        let (store, o) = (store.clone(), o.clone());
        handles.push(tokio::spawn(async move {
            for chunk in (0..HOSTS).collect::<Vec<_>>().chunks(5) {
                let batch = chunk
                    .iter()
                    .map(|&i| a_record(&name(i), &addr(i)))
                    .collect();
                store.upsert(&o, batch, Some(TaskId::new())).await?;
                tokio::task::yield_now().await;
            }
            Ok::<_, Error>(())
        }));
    }
    // The addresses and hostnames again, all of them, by three writers.
    for _ in 0..3 {
        let (store, o) = (store.clone(), o.clone());
        handles.push(tokio::spawn(async move {
            for _ in 0..10 {
                let batch = (0..HOSTS)
                    .flat_map(|i| [ip(&addr(i)), host(&name(i))])
                    .collect();
                store.upsert(&o, batch, Some(TaskId::new())).await?;
            }
            Ok::<_, Error>(())
        }));
    }
    // The odd hostnames declared at 3.
    {
        let (store, o) = (store.clone(), o.clone());
        handles.push(tokio::spawn(async move {
            for i in (1..HOSTS).step_by(2) {
                declare(&*store, &o, &name(i), Some(3)).await?;
                tokio::task::yield_now().await;
            }
            Ok::<_, Error>(())
        }));
    }
    for h in handles {
        h.await
            .map_err(|e| Error::backend_source("test", e, false))??;
    }
    for i in 0..HOSTS {
        let want = if i % 2 == 0 { 2 } else { 3 };
        assert_eq!(
            level_of(&*store, &o, &addr(i)).await?,
            (Some(want), false, Some(format!("internet|{}", name(i)))),
            "the address of {} after the race",
            name(i)
        );
    }
    recomputation_agrees(&*store, &o).await
}

/// The two reads a business-rules pass uses: [`ObjectStore::count_matching`] counts the objects with
/// a field value, stopping at `at_most`, in the values' order; [`ObjectStore::finding_rules`] gives
/// the rules' part of the findings of the asked types, and nothing of other organizations.
pub async fn rule_reads(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-rule-reads");
    let ns =
        |owner: &str, server: &str| record(ObjectType::DnsNsRecord, owner, "name_server", server);
    store
        .upsert(
            &o,
            vec![
                ns("a.example", "ns1.example.net"),
                ns("b.example", "ns1.example.net"),
                ns("c.example", "ns1.example.net"),
                ns("d.example", "ns2.example.net"),
            ],
            None,
        )
        .await?;
    let values: Vec<String> = ["ns1.example.net", "ns2.example.net", "ns3.example.net"]
        .iter()
        .map(|n| format!("internet|{n}"))
        .collect();
    // What a query says, as the reference.
    let mut expected = Vec::new();
    for v in &values {
        let mut q = ObjectQuery::new(o.clone(), ObjectType::DnsNsRecord);
        q.filters.push(("name_server".into(), vec![v.clone()]));
        expected.push(store.query(&q).await?.count as usize);
    }
    assert_eq!(expected, [3, 1, 0], "the query filter on name_server");
    assert_eq!(
        store
            .count_matching(&o, ObjectType::DnsNsRecord, "name_server", &values, 2)
            .await?,
        [2, 1, 0],
        "counts stop at at_most"
    );
    assert_eq!(
        store
            .count_matching(&o, ObjectType::DnsNsRecord, "name_server", &values, 10)
            .await?,
        expected
    );
    let other = org("c-rule-reads-other");
    assert_eq!(
        store
            .count_matching(&other, ObjectType::DnsNsRecord, "name_server", &values, 10)
            .await?,
        [0, 0, 0],
        "organizations are separate"
    );

    // Findings: one asserted by rules alone, one a task wrote, one of a type not asked for.
    let finding = |code: &str, host: &str, rules: &[&str], rule_only: bool| -> Result<Object> {
        let mut f = obj(
            ObjectType::Finding,
            json!({"finding_type": code, "hostname": host}),
        );
        if let Object::Finding(ref mut inner) = f {
            inner.source_rules = rules.iter().map(|r| r.to_string()).collect();
            inner.rule_only = rule_only;
        }
        Ok(f)
    };
    store
        .upsert(
            &o,
            vec![
                finding("KAT-NO-SPF", "a.example", &["missing_spf"], true)?,
                finding("KAT-NO-CAA", "b.example", &[], false)?,
                finding("KAT-OTHER", "c.example", &["x"], true)?,
            ],
            None,
        )
        .await?;
    let mut got = store
        .finding_rules(&o, &["KAT-NO-SPF".into(), "KAT-NO-CAA".into()])
        .await?;
    got.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
    let summary: Vec<(String, Vec<String>, bool)> = got
        .into_iter()
        .map(|r| (r.key.to_string(), r.source_rules, r.rule_only))
        .collect();
    let key_of = |code: &str, host: &str| -> Result<String> {
        Ok(finding(code, host, &[], false)?.natural_key().to_string())
    };
    assert_eq!(
        summary,
        vec![
            (key_of("KAT-NO-CAA", "b.example")?, vec![], false),
            (
                key_of("KAT-NO-SPF", "a.example")?,
                vec!["missing_spf".to_string()],
                true
            ),
        ]
    );
    assert!(store.finding_rules(&o, &[]).await?.is_empty());
    assert!(
        store
            .finding_rules(&other, &["KAT-NO-SPF".into()])
            .await?
            .is_empty()
    );
    Ok(())
}

fn record(ty: ObjectType, owner: &str, field: &str, value: &str) -> Object {
    let mut v = json!({"hostname": owner, field: value});
    if ty == ObjectType::DnsMxRecord {
        v["preference"] = json!(10);
    }
    obj(ty, v)
}

fn a_record(owner: &str, ip: &str) -> Object {
    record(ObjectType::DnsARecord, owner, "ip_address", ip)
}

fn ptr_record(name: &str, ip: &str) -> Object {
    record(ObjectType::DnsPtrRecord, name, "ip_address", ip)
}

fn cname(owner: &str, target: &str) -> Object {
    record(ObjectType::DnsCnameRecord, owner, "target", target)
}

fn ty_of(k: &str) -> ObjectType {
    if k.rsplit('|')
        .next()
        .is_some_and(|last| last.parse::<std::net::IpAddr>().is_ok())
    {
        ObjectType::IpAddress
    } else {
        ObjectType::Hostname
    }
}

/// The effective level of a hostname (`name`) or address (`192.0.2.1`) in the internet network,
/// and where an inherited one comes from (the source's key).
async fn level_of(
    store: &dyn ObjectStore,
    o: &OrgCode,
    name: &str,
) -> Result<(Option<u8>, bool, Option<String>)> {
    let k = format!("internet|{name}");
    let s = store
        .get(o, ty_of(&k), &key(&k))
        .await?
        .ok_or_else(|| Error::not_found("object", k.clone()))?;
    let p = s.scan.unwrap_or_default();
    Ok((
        p.level.map(ScanLevel::get),
        p.declared,
        s.inherited_from.map(|r| r.key.to_string()),
    ))
}

async fn levels(store: &dyn ObjectStore, o: &OrgCode, names: &[&str]) -> Result<Vec<Option<u8>>> {
    let mut out = Vec::new();
    for n in names {
        out.push(level_of(store, o, n).await?.0);
    }
    Ok(out)
}

async fn declare(
    store: &dyn ObjectStore,
    o: &OrgCode,
    name: &str,
    level: Option<u8>,
) -> Result<()> {
    let k = format!("internet|{name}");
    let profile = match level {
        Some(l) => ScanProfile::declared(ScanLevel::new(l)?),
        None => ScanProfile::default(),
    };
    store
        .set_scan_profile(o, ty_of(&k), &key(&k), profile)
        .await?;
    Ok(())
}

async fn delete_one(store: &dyn ObjectStore, o: &OrgCode, r: &Object) -> Result<()> {
    assert_eq!(
        store.delete(o, r.object_type(), &[r.natural_key()]).await?,
        1
    );
    Ok(())
}

/// After the case's writes, a full recomputation changes nothing: the incremental updates were
/// complete.
async fn recomputation_agrees(store: &dyn ObjectStore, o: &OrgCode) -> Result<()> {
    assert_eq!(
        store.recompute_levels(Some(o)).await?,
        0,
        "a full recomputation of {o} found levels the writes left out of date"
    );
    Ok(())
}

/// Levels flow along a chain of A records; NS, MX and PTR give at most level 1; the API's JSON
/// shows where an inherited level comes from; queries by scan level see inherited levels.
pub async fn levels_chains_and_caps(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-lvl-chain");
    store.upsert(&o, vec![host("example.com")], None).await?;
    declare(store, &o, "example.com", Some(3)).await?;
    let written = store
        .upsert(
            &o,
            vec![
                a_record("example.com", "192.0.2.1"),
                record(
                    ObjectType::DnsNsRecord,
                    "example.com",
                    "name_server",
                    "ns1.example.net",
                ),
                record(
                    ObjectType::DnsMxRecord,
                    "example.com",
                    "mail_server",
                    "mx.example.net",
                ),
                a_record("ns1.example.net", "192.0.2.53"),
                host("192.0.2.1.example"),
            ],
            None,
        )
        .await?;
    assert_eq!(written.len(), 5);
    assert_eq!(
        level_of(store, &o, "192.0.2.1").await?,
        (Some(3), false, Some("internet|example.com".into())),
        "an address inherits its hostname's level through an A record"
    );
    assert_eq!(
        level_of(store, &o, "ns1.example.net").await?,
        (Some(1), false, Some("internet|example.com".into())),
        "a name server gets at most level 1"
    );
    assert_eq!(level_of(store, &o, "mx.example.net").await?.0, Some(1));
    assert_eq!(
        level_of(store, &o, "192.0.2.53").await?,
        (Some(1), false, Some("internet|ns1.example.net".into())),
    );
    assert_eq!(
        level_of(store, &o, "192.0.2.1.example").await?,
        (None, false, None),
        "an unrelated hostname has no level"
    );
    // The JSON an operator reads.
    let ip = store
        .get(&o, ObjectType::IpAddress, &key("internet|192.0.2.1"))
        .await?
        .ok_or_else(|| Error::not_found("object", "192.0.2.1"))?
        .to_json();
    assert_eq!(ip["scan_level"], json!(3));
    assert_eq!(ip["declared"], json!(false));
    assert_eq!(
        ip["inherited_from"],
        json!({"object_type": "hostname", "id": "internet|example.com"})
    );
    let root = store
        .get(&o, ObjectType::Hostname, &key("internet|example.com"))
        .await?
        .ok_or_else(|| Error::not_found("object", "example.com"))?
        .to_json();
    assert_eq!(root["declared"], json!(true));
    assert_eq!(root["inherited_from"], serde_json::Value::Null);
    // What an upsert returns shows the levels after it.
    let again = store
        .upsert(
            &o,
            vec![obj(ObjectType::IpAddress, json!({"address": "192.0.2.1"}))],
            None,
        )
        .await?;
    assert_eq!(
        again[0].scan.and_then(|p| p.level),
        Some(ScanLevel::new(3)?)
    );
    // Queries by scan level and the ordering by it use the effective level.
    let mut q = ObjectQuery::new(o.clone(), ObjectType::IpAddress);
    q.min_scan_level = Some(ScanLevel::new(2)?);
    let found: Vec<String> = store
        .query(&q)
        .await?
        .items
        .iter()
        .map(|s| s.key.to_string())
        .collect();
    assert_eq!(found, ["internet|192.0.2.1"]);
    let mut q = ObjectQuery::new(o.clone(), ObjectType::Hostname);
    q.min_scan_level = Some(ScanLevel::new(1)?);
    assert_eq!(store.query(&q).await?.count, 3);
    // Filters on the effective level and on declared, alone and beside a field's filter.
    let names = |q: ObjectQuery| async move {
        Ok::<_, Error>(
            store
                .query(&q)
                .await?
                .items
                .iter()
                .map(|s| s.key.to_string())
                .collect::<Vec<_>>(),
        )
    };
    let hosts = || ObjectQuery::new(o.clone(), ObjectType::Hostname);
    assert_eq!(
        names(hosts().filter("scan_level", &["1"])).await?,
        ["internet|mx.example.net", "internet|ns1.example.net"]
    );
    assert_eq!(
        names(hosts().filter("scan_level", &["null"])).await?,
        ["internet|192.0.2.1.example"]
    );
    assert_eq!(
        names(hosts().filter("declared", &["true"])).await?,
        ["internet|example.com"]
    );
    assert_eq!(
        names(
            hosts()
                .filter("scan_level", &["1", "3"])
                .filter("declared", &["false"])
        )
        .await?,
        ["internet|mx.example.net", "internet|ns1.example.net"]
    );
    assert_eq!(
        names(
            ObjectQuery::new(o.clone(), ObjectType::IpAddress)
                .filter("network", &["internet"])
                .filter("scan_level", &["3"])
        )
        .await?,
        ["internet|192.0.2.1"]
    );
    let e = store
        .query(&ObjectQuery::new(o.clone(), ObjectType::IpPort).filter("scan_level", &["1"]))
        .await
        .expect_err("ports have no scan level to filter by");
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    recomputation_agrees(store, &o).await
}

/// Cycles (an A and a PTR record between the same two objects; a loop of CNAMEs) carry what a
/// declared object gives them and nothing once it is gone.
pub async fn levels_cycles(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-lvl-cycle");
    store
        .upsert(
            &o,
            vec![
                a_record("h.example", "192.0.2.7"),
                ptr_record("h.example", "192.0.2.7"),
            ],
            None,
        )
        .await?;
    assert_eq!(
        levels(store, &o, &["h.example", "192.0.2.7"]).await?,
        [None, None]
    );
    declare(store, &o, "h.example", Some(2)).await?;
    assert_eq!(levels(store, &o, &["192.0.2.7"]).await?, [Some(2)]);
    declare(store, &o, "h.example", None).await?;
    assert_eq!(
        levels(store, &o, &["h.example", "192.0.2.7"]).await?,
        [None, None],
        "an A and PTR cycle does not hold a level up by itself"
    );
    // Declared on the address: through the A record (no cap) the hostname gets all of it.
    declare(store, &o, "192.0.2.7", Some(4)).await?;
    assert_eq!(level_of(store, &o, "h.example").await?.0, Some(4));
    // Without the A record only the PTR record (cap 1) remains.
    delete_one(store, &o, &a_record("h.example", "192.0.2.7")).await?;
    assert_eq!(
        level_of(store, &o, "h.example").await?,
        (Some(1), false, Some("internet|192.0.2.7".into()))
    );
    // A CNAME loop.
    store
        .upsert(
            &o,
            vec![
                cname("a.example", "b.example"),
                cname("b.example", "c.example"),
                cname("c.example", "a.example"),
            ],
            None,
        )
        .await?;
    let abc = ["a.example", "b.example", "c.example"];
    assert_eq!(levels(store, &o, &abc).await?, [None, None, None]);
    declare(store, &o, "b.example", Some(2)).await?;
    assert_eq!(levels(store, &o, &abc).await?, [Some(2), Some(2), Some(2)]);
    assert_eq!(
        level_of(store, &o, "c.example").await?.2.as_deref(),
        Some("internet|b.example")
    );
    assert_eq!(
        level_of(store, &o, "a.example").await?.2.as_deref(),
        Some("internet|c.example")
    );
    declare(store, &o, "b.example", Some(0)).await?;
    assert_eq!(levels(store, &o, &abc).await?, [Some(0), Some(0), Some(0)]);
    declare(store, &o, "b.example", None).await?;
    assert_eq!(levels(store, &o, &abc).await?, [None, None, None]);
    recomputation_agrees(store, &o).await
}

/// An inherited level is the maximum over its sources, and decays when a source's record is
/// deleted, the source is lowered, or the source object is deleted.
pub async fn levels_diamonds_and_decay(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-lvl-diamond");
    store
        .upsert(&o, vec![host("low.example"), host("high.example")], None)
        .await?;
    declare(store, &o, "low.example", Some(1)).await?;
    declare(store, &o, "high.example", Some(3)).await?;
    store
        .upsert(
            &o,
            vec![
                a_record("low.example", "192.0.2.9"),
                a_record("high.example", "192.0.2.9"),
            ],
            None,
        )
        .await?;
    assert_eq!(
        level_of(store, &o, "192.0.2.9").await?,
        (Some(3), false, Some("internet|high.example".into())),
        "the maximum over the sources"
    );
    // The address passes its level on to its other hostname (A records go both ways).
    assert_eq!(
        level_of(store, &o, "low.example").await?,
        (Some(1), true, None)
    );
    delete_one(store, &o, &a_record("high.example", "192.0.2.9")).await?;
    assert_eq!(
        level_of(store, &o, "192.0.2.9").await?,
        (Some(1), false, Some("internet|low.example".into())),
        "deleting the record of the stronger source decays the level"
    );
    declare(store, &o, "low.example", Some(0)).await?;
    assert_eq!(
        level_of(store, &o, "192.0.2.9").await?.0,
        Some(0),
        "lowering the source"
    );
    declare(store, &o, "low.example", Some(2)).await?;
    assert_eq!(
        level_of(store, &o, "192.0.2.9").await?.0,
        Some(2),
        "raising it again"
    );
    store
        .delete(&o, ObjectType::Hostname, &[key("internet|low.example")])
        .await?;
    assert_eq!(
        level_of(store, &o, "192.0.2.9").await?,
        (None, false, None),
        "deleting the source object"
    );
    // The record outlives its hostname: re-creating the hostname with a level gives it back.
    store.upsert(&o, vec![host("low.example")], None).await?;
    assert_eq!(level_of(store, &o, "low.example").await?.0, None);
    declare(store, &o, "low.example", Some(2)).await?;
    assert_eq!(level_of(store, &o, "192.0.2.9").await?.0, Some(2));
    recomputation_agrees(store, &o).await
}

/// Declared objects keep their level whatever their sources give, also when a stronger source
/// appears; set back to inherited, they take what their sources give.
pub async fn levels_declared_untouched(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-lvl-declared");
    store
        .upsert(&o, vec![host("strong.example"), host("weak.example")], None)
        .await?;
    declare(store, &o, "weak.example", Some(1)).await?;
    store
        .upsert(&o, vec![a_record("weak.example", "192.0.2.20")], None)
        .await?;
    declare(store, &o, "strong.example", Some(4)).await?;
    store
        .upsert(&o, vec![cname("strong.example", "weak.example")], None)
        .await?;
    assert_eq!(
        level_of(store, &o, "weak.example").await?,
        (Some(1), true, None),
        "a stronger source does not change a declared level"
    );
    assert_eq!(level_of(store, &o, "192.0.2.20").await?.0, Some(1));
    // The CNAME's target inherits, never its owner: the original's query did the reverse.
    declare(store, &o, "strong.example", Some(0)).await?;
    assert_eq!(
        level_of(store, &o, "weak.example").await?,
        (Some(1), true, None)
    );
    declare(store, &o, "strong.example", Some(4)).await?;
    declare(store, &o, "weak.example", None).await?;
    assert_eq!(
        level_of(store, &o, "weak.example").await?,
        (Some(4), false, Some("internet|strong.example".into())),
        "back to inherited"
    );
    assert_eq!(level_of(store, &o, "192.0.2.20").await?.0, Some(4));
    recomputation_agrees(store, &o).await
}

/// An object deleted while a record naming it stays comes back with the level that record gives
/// it, also among new objects that have no relation at all (a store may pass over those).
pub async fn levels_recreated_objects(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-lvl-recreated");
    store
        .upsert(&o, vec![host("keep.example"), ip("192.0.2.9")], None)
        .await?;
    declare(store, &o, "keep.example", Some(2)).await?;
    declare(store, &o, "192.0.2.9", Some(3)).await?;
    store
        .upsert(
            &o,
            vec![
                a_record("keep.example", "192.0.2.7"),
                a_record("back.example", "192.0.2.9"),
            ],
            None,
        )
        .await?;
    assert_eq!(
        levels(store, &o, &["192.0.2.7", "back.example"]).await?,
        [Some(2), Some(3)]
    );
    // Both ends the records name go; the records stay.
    assert_eq!(
        store
            .delete(&o, ObjectType::IpAddress, &[key("internet|192.0.2.7")])
            .await?,
        1
    );
    assert_eq!(
        store
            .delete(&o, ObjectType::Hostname, &[key("internet|back.example")])
            .await?,
        1
    );
    let mut batch: Vec<Object> = (0..20)
        .map(|i| host(&format!("new{i:02}.example")))
        .collect();
    batch.push(ip("192.0.2.7"));
    batch.push(host("back.example"));
    batch.push(ip("192.0.2.8"));
    store.upsert(&o, batch, None).await?;
    assert_eq!(
        level_of(store, &o, "192.0.2.7").await?,
        (Some(2), false, Some("internet|keep.example".into())),
        "an address created again inherits through the A record that stayed"
    );
    assert_eq!(
        level_of(store, &o, "back.example").await?,
        (Some(3), false, Some("internet|192.0.2.9".into())),
        "a hostname created again inherits through the A record that stayed"
    );
    assert_eq!(
        levels(store, &o, &["new00.example", "new19.example", "192.0.2.8"]).await?,
        [None, None, None]
    );
    // Alone in a write, too.
    assert_eq!(
        store
            .delete(&o, ObjectType::IpAddress, &[key("internet|192.0.2.7")])
            .await?,
        1
    );
    store.upsert(&o, vec![ip("192.0.2.7")], None).await?;
    assert_eq!(level_of(store, &o, "192.0.2.7").await?.0, Some(2));
    recomputation_agrees(store, &o).await
}

/// Organizations are separate graphs: the same records in another organization inherit nothing.
pub async fn levels_organizations_separate(store: &dyn ObjectStore) -> Result<()> {
    let (a, b) = (org("c-lvl-org-a"), org("c-lvl-org-b"));
    for o in [&a, &b] {
        store
            .upsert(o, vec![a_record("shared.example", "192.0.2.30")], None)
            .await?;
    }
    declare(store, &a, "shared.example", Some(2)).await?;
    assert_eq!(levels(store, &a, &["192.0.2.30"]).await?, [Some(2)]);
    assert_eq!(
        levels(store, &b, &["shared.example", "192.0.2.30"]).await?,
        [None, None]
    );
    recomputation_agrees(store, &a).await?;
    recomputation_agrees(store, &b).await
}

/// A full recomputation of every organization agrees with the incremental updates of everything
/// the suite wrote, and a store in a steady state needs none.
pub async fn levels_recomputation_agrees(store: &dyn ObjectStore) -> Result<()> {
    assert_eq!(store.recompute_levels(None).await?, 0);
    assert!(!store.levels_need_recompute().await?);
    Ok(())
}

/// URLs: stored by their canonical natural key (`network|url`, a `|` in the URL escaped), found by
/// key and by `network` and `url` filters in every network, and their host created as a referenced
/// object; a URL has no scan level of its own ([`crate::store::scan_of`] reads its host's).
pub async fn urls(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-urls");
    let u = |net: &str, url: &str| obj(ObjectType::Url, json!({"network": net, "url": url}));
    let stored = store
        .upsert(
            &o,
            vec![
                u("internet", "HTTPS://Example.com:443/a|b#frag"),
                u("internet", "http://192.0.2.1:8080"),
                u("lab", "https://example.com/a|b"),
            ],
            None,
        )
        .await?;
    let keys: Vec<&str> = stored.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "internet|https://example.com/a%7Cb",
            "internet|http://192.0.2.1:8080/",
            "lab|https://example.com/a%7Cb",
        ]
    );
    assert!(
        stored.iter().all(|s| s.scan.is_none()),
        "a URL has no level of its own"
    );
    assert!(
        exists(
            store,
            &o,
            ObjectType::Url,
            "internet|https://example.com/a%7Cb"
        )
        .await?
    );
    assert!(exists(store, &o, ObjectType::Hostname, "internet|example.com").await?);
    assert!(exists(store, &o, ObjectType::Hostname, "lab|example.com").await?);
    assert!(exists(store, &o, ObjectType::IpAddress, "internet|192.0.2.1").await?);
    assert_eq!(count(store, &o, ObjectType::Url).await?, 3);
    // Re-posting another spelling of the same URL stores nothing new.
    store
        .upsert(&o, vec![u("internet", "https://EXAMPLE.com./a|b")], None)
        .await?;
    assert_eq!(count(store, &o, ObjectType::Url).await?, 3);
    let by = |field: &str, values: &[&str]| {
        ObjectQuery::new(o.clone(), ObjectType::Url).filter(field, values)
    };
    let page = store
        .query(&by("url", &["https://example.com/a|b"]))
        .await?;
    assert_eq!(
        page.count, 2,
        "the url filter finds the URL in every network"
    );
    let page = store.query(&by("network", &["lab"])).await?;
    assert_eq!(page.count, 1);
    assert_eq!(page.items[0].key.as_str(), "lab|https://example.com/a%7Cb");
    // The gate's level is the host's.
    let url = store
        .get(&o, ObjectType::Url, &key("internet|http://192.0.2.1:8080/"))
        .await?
        .expect("stored");
    assert_eq!(
        crate::store::scan_of(store, &url).await?,
        Some(ScanProfile::default())
    );
    store
        .set_scan_profile(
            &o,
            ObjectType::IpAddress,
            &key("internet|192.0.2.1"),
            ScanProfile::declared(ScanLevel::new(3)?),
        )
        .await?;
    assert_eq!(
        crate::store::scan_of(store, &url).await?,
        Some(ScanProfile::declared(ScanLevel::new(3)?))
    );
    let e = store
        .set_scan_profile(
            &o,
            ObjectType::Url,
            &url.key,
            ScanProfile::declared(ScanLevel::new(1)?),
        )
        .await
        .expect_err("a URL has no scan level to set");
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    assert_eq!(
        store
            .delete(&o, ObjectType::Url, &[key("lab|https://example.com/a%7Cb")])
            .await?,
        1
    );
    assert_eq!(count(store, &o, ObjectType::Url).await?, 2);
    Ok(())
}

/// [`ObjectStore::change_mark`]: when the store gives marks, every kind of write changes its
/// organization's mark and reads leave it alone. A store without marks (`None`) must say so
/// always.
pub async fn change_marks(store: &dyn ObjectStore) -> Result<()> {
    let o = org("c-marks");
    let Some(start) = store.change_mark(&o) else {
        store.upsert(&o, vec![host("marks.example")], None).await?;
        assert_eq!(
            store.change_mark(&o),
            None,
            "a store without marks has none after writes"
        );
        return Ok(());
    };
    let written = store.upsert(&o, vec![host("marks.example")], None).await?;
    let k = written[0].key.clone();
    let after_upsert = store.change_mark(&o);
    assert_ne!(after_upsert, Some(start), "an upsert changes the mark");
    store.get(&o, ObjectType::Hostname, &k).await?;
    store
        .query(&ObjectQuery::new(o.clone(), ObjectType::Hostname))
        .await?;
    store
        .query_keys(&ObjectQuery::new(o.clone(), ObjectType::Hostname))
        .await?;
    assert_eq!(
        store.change_mark(&o),
        after_upsert,
        "reads leave the mark alone"
    );
    store
        .set_scan_profile(
            &o,
            ObjectType::Hostname,
            &k,
            ScanProfile::declared(
                ScanLevel::new(2).map_err(|e| Error::invalid("level", e.to_string()))?,
            ),
        )
        .await?;
    let after_level = store.change_mark(&o);
    assert_ne!(after_level, after_upsert, "a scan profile changes the mark");
    store.replace(&o, host("marks.example"), None).await?;
    let after_replace = store.change_mark(&o);
    assert_ne!(after_replace, after_level, "a replace changes the mark");
    assert_eq!(store.delete(&o, ObjectType::Hostname, &[k]).await?, 1);
    assert_ne!(
        store.change_mark(&o),
        after_replace,
        "a delete changes the mark"
    );
    Ok(())
}

/// Run every case against one store.
pub async fn run_all(store: Arc<dyn ObjectStore>) -> Result<()> {
    upsert_is_idempotent(&*store).await?;
    natural_key_lookups(&*store).await?;
    references_and_merging(&*store).await?;
    replace_clears_fields(&*store).await?;
    scan_profiles(&*store).await?;
    query_keys_agree_with_query(&*store).await?;
    filters_and_search(&*store).await?;
    filters_across_networks(&*store).await?;
    ordering_and_paging(&*store).await?;
    organizations_are_isolated(&*store).await?;
    attribution(&*store).await?;
    delete_by_keys(&*store).await?;
    bulk_writes(&*store).await?;
    urls(&*store).await?;
    levels_chains_and_caps(&*store).await?;
    levels_cycles(&*store).await?;
    levels_diamonds_and_decay(&*store).await?;
    levels_declared_untouched(&*store).await?;
    levels_recreated_objects(&*store).await?;
    levels_organizations_separate(&*store).await?;
    levels_recomputation_agrees(&*store).await?;
    rule_reads(&*store).await?;
    change_marks(&*store).await?;
    concurrent_writers(store.clone()).await?;
    levels_concurrent_writers(store).await?;
    Ok(())
}
