//! The discovery loop on the real engine: one declared hostname, schedules for `dns` and a port scan
//! over object sets filtered by scan level. What `dns` finds inherits a level and is scanned at the
//! next tick, in the same interval, without anyone declaring it; a name server is capped at level 1
//! and never port-scanned; the business rules turn the inventory into findings; lowering the
//! declared hostname makes the inherited levels decay and the scans stop.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, NS};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use kat::core::clock::Timestamp;
use serde_json::{Value, json};

use crate::harness::{self, encode};

/// The zone: `shop.test` has an address and a name server; the name server has an address.
fn zone(name: &str, qtype: RecordType) -> Option<Vec<RData>> {
    let ns = || Name::from_str("ns1.dns-host.test.").expect("name");
    match (name, qtype) {
        ("shop.test.", RecordType::A) => Some(vec![RData::A(A::new(127, 0, 0, 51))]),
        ("shop.test.", RecordType::NS) => Some(vec![RData::NS(NS(ns()))]),
        ("ns1.dns-host.test.", RecordType::A) => Some(vec![RData::A(A::new(127, 0, 0, 52))]),
        ("shop.test.", _) | ("ns1.dns-host.test.", _) => Some(Vec::new()),
        _ => None,
    }
}

/// Serve the zone on 127.0.0.1 (UDP) until the process ends.
fn dns_server() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind dns");
    let addr = sock.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::new();
            r.set_id(q.id())
                .set_message_type(MessageType::Response)
                .set_op_code(q.op_code())
                .set_recursion_desired(q.recursion_desired())
                .set_recursion_available(true)
                .set_authoritative(true);
            if let Some(query) = q.queries().first() {
                r.add_query(query.clone());
                let name = query.name().to_ascii().to_ascii_lowercase();
                match zone(&name, query.query_type()) {
                    Some(rdatas) => {
                        for d in rdatas {
                            r.add_answer(Record::from_rdata(query.name().clone(), 300, d));
                        }
                    }
                    None => {
                        r.set_response_code(ResponseCode::NXDomain);
                    }
                }
            }
            if let Ok(bytes) = r.to_vec() {
                let _ = sock.send_to(&bytes, from);
            }
        }
    });
    addr
}

/// A listener on the first database port the port rules report that is free on `ip`.
fn database_listener(ip: &str) -> (TcpListener, u16) {
    for port in [3306u16, 5432, 1433, 1434, 3050] {
        if let Ok(l) = TcpListener::bind((ip, port)) {
            return (l, port);
        }
    }
    panic!("no database port free on {ip}");
}

/// The shipped `dns`, `portscan` and `parse-nmap` definitions, with `dns` asking the test's server.
fn plugins(ns: SocketAddr) -> Value {
    let shipped: Vec<Value> =
        serde_json::from_str(include_str!("../../plugins/plugins.json")).expect("plugins.json");
    shipped
        .into_iter()
        .filter(|p| {
            ["dns", "portscan", "parse-nmap"].contains(&p["plugin_id"].as_str().unwrap_or(""))
        })
        .map(|mut p| {
            if p["plugin_id"] == "dns" {
                let args = p["oci_arguments"].as_array_mut().expect("args");
                args.extend([
                    json!("--nameserver"),
                    json!(ns.to_string()),
                    json!("--no-srv"),
                ]);
            }
            p
        })
        .collect()
}

async fn object(k: &harness::Kat, ty: &str, id: &str) -> Value {
    k.get(&format!("/objects/{ty}/{}/", encode(id))).await
}

/// Tick at `at` and wait for every task that exists to end; returns how many tasks the tick made.
async fn tick_and_settle(k: &harness::Kat, at: Timestamp) -> usize {
    let report = k.d.engine().tick(at).await.expect("tick");
    settle(k).await;
    report.tasks
}

/// Wait until no task is queued or running (chained tasks included).
async fn settle(k: &harness::Kat) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let v = k.get("/tasks/?state=queued&state=running&limit=1").await;
        if v["count"] == 0 {
            // A finished task's upload may still chain: look twice.
            tokio::time::sleep(Duration::from_millis(300)).await;
            if k.get("/tasks/?state=queued&state=running&limit=1").await["count"] == 0 {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tasks did not settle: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The targets every task of a plugin was given.
async fn targets_of(k: &harness::Kat, plugin: &str) -> Vec<String> {
    let mut out = Vec::new();
    for t in k.tasks_of(plugin).await {
        assert_eq!(t["state"], "completed", "{plugin} task: {t}");
        match &t["data"]["input_data"] {
            Value::Array(a) => out.extend(a.iter().filter_map(|v| v.as_str()).map(String::from)),
            Value::String(s) => out.push(s.clone()),
            _ => {}
        }
    }
    out.sort();
    out
}

fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The findings of a subject (`hostname` or `address` field = its key) with their `source_rules`.
async fn findings_about(k: &harness::Kat, field: &str, key: &str) -> Vec<(String, Vec<String>)> {
    let v = k.get("/objects/finding/?limit=1000").await;
    let mut out: Vec<(String, Vec<String>)> = v["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f[field] == key)
        .map(|f| {
            let rules = f["source_rules"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            (f["finding_type"].as_str().unwrap_or("").to_string(), rules)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_declared_hostname_grows_into_a_scanned_surface_within_its_clearance() {
    let ns = dns_server();
    let (_db, db_port) = database_listener("127.0.0.51");
    let Some(k) = harness::start_with(plugins(ns), |cfg| {
        cfg.rules_file = Some(repo_file("plugins/business_rules.json"));
        cfg.finding_types = Some(repo_file("plugins/finding_types.json"));
    })
    .await
    else {
        return;
    };
    // Only the hostname is declared.
    k.declare("hostname", &["shop.test"], Some(2)).await;

    // dns over hostnames with a level; the port scan over addresses at level 2 or more.
    let (s, hosts) = k
        .post(
            "/object-sets/",
            json!({"name": "hosts with a level", "object_type": "hostname",
                   "filters": {"scan_level": ["1", "2", "3", "4"]}}),
        )
        .await;
    assert_eq!(s, 201, "{hosts}");
    let (s, addrs) = k
        .post(
            "/object-sets/",
            json!({"name": "addresses at level 2+", "object_type": "ipaddress",
                   "filters": {"scan_level": ["2", "3", "4"]}}),
        )
        .await;
    assert_eq!(s, 201, "{addrs}");
    for (plugin, set) in [("dns", &hosts), ("portscan", &addrs)] {
        let (s, v) = k
            .post(
                "/schedules/",
                json!({"plugin_id": plugin, "object_set_id": set["id"], "interval": "PT1H", "enabled": true}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let t0 = Timestamp::now();
    let hour = 3_600;

    // Tick 1: dns on the declared hostname; nothing else has a level yet.
    assert_eq!(tick_and_settle(&k, t0.plus_secs(1)).await, 1);
    assert_eq!(targets_of(&k, "dns").await, vec!["internet|shop.test"]);
    assert!(k.tasks_of("portscan").await.is_empty());
    // What dns found inherited a level, and says from where.
    let ip = object(&k, "ipaddress", "internet|127.0.0.51").await;
    assert_eq!(ip["scan_level"], 2, "{ip}");
    assert_eq!(ip["declared"], false, "{ip}");
    assert_eq!(
        ip["inherited_from"],
        json!({"object_type": "hostname", "id": "internet|shop.test"}),
        "{ip}"
    );
    let nameserver = object(&k, "hostname", "internet|ns1.dns-host.test").await;
    assert_eq!(
        nameserver["scan_level"], 1,
        "a name server gets at most 1: {nameserver}"
    );
    assert_eq!(nameserver["declared"], false);

    // Tick 2, a second later in the same interval: dns's write makes the schedules that are not due
    // catch up on their new targets: the inherited address is port-scanned (and the scan chains
    // to parse-nmap), the name server is looked up at its level 1.
    let caught_up = k.d.engine().tick(t0.plus_secs(2)).await.expect("tick");
    assert!(
        caught_up.caught_up >= 2 && caught_up.tasks >= 2,
        "{caught_up:?}"
    );
    settle(&k).await;
    assert_eq!(
        targets_of(&k, "portscan").await,
        vec!["internet|127.0.0.51"]
    );
    // The next interval: every due schedule runs again over its whole set.
    tick_and_settle(&k, t0.plus_secs(hour + 2)).await;
    assert_eq!(
        targets_of(&k, "portscan").await,
        vec!["internet|127.0.0.51"; 2]
    );
    assert!(
        targets_of(&k, "dns")
            .await
            .contains(&"internet|ns1.dns-host.test".to_string())
    );
    assert!(
        !k.tasks_of("parse-nmap").await.is_empty(),
        "the scan chained"
    );
    let ns_ip = object(&k, "ipaddress", "internet|127.0.0.52").await;
    assert_eq!(ns_ip["scan_level"], 1, "{ns_ip}");
    assert_eq!(
        ns_ip["inherited_from"],
        json!({"object_type": "hostname", "id": "internet|ns1.dns-host.test"})
    );
    let port = k
        .get(&format!(
            "/objects/ipport/?address={}&port={db_port}",
            encode("internet|127.0.0.51")
        ))
        .await;
    assert_eq!(port["count"], 1, "the scan found the database port: {port}");

    // Tick 3: the address at level 1 is never port-scanned.
    tick_and_settle(&k, t0.plus_secs(2 * hour + 3)).await;
    let scanned = targets_of(&k, "portscan").await;
    assert_eq!(
        scanned,
        vec!["internet|127.0.0.51"; 3],
        "127.0.0.52 stays below the port scan's level"
    );

    // The business rules turned the inventory into findings, each saying which rule holds it.
    let host_findings = findings_about(&k, "hostname", "internet|shop.test").await;
    assert!(
        host_findings.contains(&("KAT-NO-SPF".to_string(), vec!["missing_spf".to_string()])),
        "{host_findings:?}"
    );
    let ip_findings = findings_about(&k, "address", "internet|127.0.0.51").await;
    assert!(
        ip_findings
            .iter()
            .any(|(code, rules)| code == "KAT-OPEN-DATABASE-PORT"
                && rules.contains(&"open_database_port".to_string())),
        "{ip_findings:?}"
    );

    // Lowering the declared hostname to 0: the inherited levels decay with it, and the scans stop.
    let (s, v) = k
        .call(
            reqwest::Method::PATCH,
            &format!("/objects/hostname/{}/", encode("internet|shop.test")),
            Some(json!({"scan_level": 0})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    for (ty, id) in [
        ("ipaddress", "internet|127.0.0.51"),
        ("hostname", "internet|ns1.dns-host.test"),
        ("ipaddress", "internet|127.0.0.52"),
    ] {
        let o = object(&k, ty, id).await;
        assert_eq!(o["scan_level"], 0, "{id} decays: {o}");
    }
    let portscans = k.tasks_of("portscan").await.len();
    let dns_runs = k.tasks_of("dns").await.len();
    assert_eq!(tick_and_settle(&k, t0.plus_secs(3 * hour + 4)).await, 0);
    assert_eq!(k.tasks_of("portscan").await.len(), portscans);
    assert_eq!(k.tasks_of("dns").await.len(), dns_runs);
}
