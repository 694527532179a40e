//! dns against a DNS server the test runs on 127.0.0.1 (UDP, answers from a zone the test changes
//! between runs), writing into the real API with the token a real dns task gets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, CAA, CNAME, MX, NS, SRV, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use kat_core::object::ObjectType;
use serde_json::json;

use crate::common::{RealApi, run};

/// A zone: records by (lower-case FQDN, type); names that exist; (name, type) pairs that SERVFAIL.
#[derive(Default)]
struct Zone {
    records: BTreeMap<(String, RecordType), Vec<RData>>,
    servfail: BTreeSet<(String, RecordType)>,
}

impl Zone {
    fn add(&mut self, name: &str, rdata: RData) {
        self.records
            .entry((name.to_ascii_lowercase(), rdata.record_type()))
            .or_default()
            .push(rdata);
    }

    fn exists(&self, name: &str) -> bool {
        self.records.keys().any(|(n, _)| n == name)
    }

    fn answer(&self, q: &Message) -> Message {
        let mut r = Message::new();
        r.set_id(q.id())
            .set_message_type(MessageType::Response)
            .set_op_code(q.op_code())
            .set_recursion_desired(q.recursion_desired())
            .set_recursion_available(true)
            .set_authoritative(true);
        let Some(query) = q.queries().first() else {
            r.set_response_code(ResponseCode::FormErr);
            return r;
        };
        r.add_query(query.clone());
        let name = query.name().to_ascii().to_ascii_lowercase();
        let qtype = query.query_type();
        if self.servfail.contains(&(name.clone(), qtype)) {
            r.set_response_code(ResponseCode::ServFail);
            return r;
        }
        let rec =
            |n: &str, d: &RData| Record::from_rdata(Name::from_str(n).unwrap(), 300, d.clone());
        if qtype != RecordType::CNAME
            && let Some(c) = self.records.get(&(name.clone(), RecordType::CNAME))
        {
            r.add_answer(rec(&name, &c[0]));
            if let RData::CNAME(target) = &c[0] {
                let t = target.0.to_ascii().to_ascii_lowercase();
                for d in self.records.get(&(t.clone(), qtype)).into_iter().flatten() {
                    r.add_answer(rec(&t, d));
                }
            }
            return r;
        }
        match self.records.get(&(name.clone(), qtype)) {
            Some(ds) => {
                for d in ds {
                    r.add_answer(rec(&name, d));
                }
            }
            None if self.exists(&name) => {}
            None => {
                r.set_response_code(ResponseCode::NXDomain);
            }
        }
        r
    }
}

/// Serve `zone` on 127.0.0.1 (UDP) until the process ends.
fn dns_server(zone: Arc<Mutex<Zone>>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let resp = zone.lock().unwrap().answer(&q);
            if let Ok(bytes) = resp.to_vec() {
                let _ = sock.send_to(&bytes, from);
            }
        }
    });
    addr
}

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

fn zone_v1() -> Zone {
    let mut z = Zone::default();
    let n = "example.test.";
    z.add(n, RData::A(A::new(192, 0, 2, 10)));
    z.add(n, RData::A(A::new(192, 0, 2, 11)));
    z.add(n, RData::AAAA(AAAA::from_str("2001:db8::10").unwrap()));
    z.add(n, RData::MX(MX::new(10, name("MAIL.Example.TEST."))));
    z.add(n, RData::NS(NS(name("ns1.example.test."))));
    z.add(
        n,
        RData::TXT(TXT::new(vec!["v=spf1 ".into(), "-all".into()])),
    );
    z.add(n, RData::TXT(TXT::new(vec!["key|with/slash 100%".into()])));
    z.add(
        n,
        RData::CAA(CAA::new_issue(
            false,
            Some(Name::from_str("letsencrypt.org").unwrap()),
            vec![],
        )),
    );
    z.add(
        "_dmarc.example.test.",
        RData::TXT(TXT::new(vec!["v=DMARC1; p=none".into()])),
    );
    z.add(
        "_sip._tls.example.test.",
        RData::SRV(SRV::new(10, 5, 5061, name("sip.example.test."))),
    );
    z.add(
        "www.example.test.",
        RData::CNAME(CNAME(name("web.example.test."))),
    );
    z.add("web.example.test.", RData::A(A::new(192, 0, 2, 20)));
    z
}

fn keys_of(api: &RealApi, ty: ObjectType, host: &str) -> BTreeSet<String> {
    api.all(ty)
        .into_iter()
        .filter(|v| v["hostname"] == format!("internet|{host}"))
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn dns_writes_records_and_removes_stale_ones() {
    let zone = Arc::new(Mutex::new(zone_v1()));
    let ns = dns_server(zone.clone()).to_string();
    let api = RealApi::start();
    // Earlier state: an address that is gone, a TXT record of a prefix the plugin does not manage,
    // and a record of another hostname.
    api.seed(&[
        (
            ObjectType::DnsARecord,
            json!({"hostname": "internet|example.test", "ip_address": "internet|192.0.2.99"}),
        ),
        (
            ObjectType::DnsTxtRecord,
            json!({"hostname": "internet|example.test", "prefix": "_other", "value": "keep me"}),
        ),
        (
            ObjectType::DnsARecord,
            json!({"hostname": "internet|other.test", "ip_address": "internet|192.0.2.1"}),
        ),
    ]);
    let token = api.target_token("dns", "example.test");
    let r = run(
        &["dns", "example.test", "--nameserver", &ns, "--timeout", "2"],
        &api.env(&token),
    )
    .ok();
    let s = r.json();
    assert_eq!(s["removed_records"], 1, "{s}");
    assert_eq!(
        s["stale_records"],
        json!(["internet|example.test|internet|192.0.2.99"])
    );
    assert_eq!(
        keys_of(&api, ObjectType::DnsARecord, "example.test"),
        BTreeSet::from([
            "internet|example.test|internet|192.0.2.10".to_string(),
            "internet|example.test|internet|192.0.2.11".to_string(),
        ])
    );
    assert!(
        api.keys(ObjectType::DnsARecord)
            .contains("internet|other.test|internet|192.0.2.1")
    );
    assert_eq!(
        keys_of(&api, ObjectType::DnsMxRecord, "example.test"),
        BTreeSet::from(["internet|example.test|10|internet|mail.example.test".to_string()])
    );
    assert!(
        api.keys(ObjectType::Hostname)
            .contains("internet|mail.example.test")
    );
    assert!(
        api.keys(ObjectType::Hostname)
            .contains("internet|ns1.example.test")
    );
    assert_eq!(
        keys_of(&api, ObjectType::DnsTxtRecord, "example.test"),
        BTreeSet::from([
            "internet|example.test||v=spf1 -all".to_string(),
            "internet|example.test||key%7Cwith/slash 100%25".to_string(),
            "internet|example.test|_dmarc|v=DMARC1; p=none".to_string(),
            "internet|example.test|_other|keep me".to_string(),
        ])
    );
    assert_eq!(
        keys_of(&api, ObjectType::DnsCaaRecord, "example.test"),
        BTreeSet::from(["internet|example.test|0|issue|letsencrypt.org".to_string()])
    );
    assert_eq!(
        keys_of(&api, ObjectType::DnsSrvRecord, "example.test"),
        BTreeSet::from(["internet|example.test|_tls|_sip|10|5|5061".to_string()])
    );
    assert_eq!(
        keys_of(&api, ObjectType::DnsAaaaRecord, "example.test").len(),
        1
    );
    assert!(
        api.keys(ObjectType::IpAddress)
            .contains("internet|2001:db8::10")
    );
    let a = api
        .get(
            ObjectType::DnsARecord,
            "internet|example.test|internet|192.0.2.10",
        )
        .unwrap();
    assert_eq!(a["ttl"], 300);

    // The zone changes: one address and the SPF record are gone, and the MX query now fails. The gone
    // ones are removed; the MX record stays (its query gave no answer).
    {
        let mut z = zone.lock().unwrap();
        z.records
            .get_mut(&("example.test.".into(), RecordType::A))
            .unwrap()
            .pop();
        z.records.remove(&("example.test.".into(), RecordType::TXT));
        z.servfail.insert(("example.test.".into(), RecordType::MX));
    }
    let r = run(
        &["dns", "example.test", "--nameserver", &ns, "--timeout", "2"],
        &api.env(&token),
    )
    .ok();
    let s = r.json();
    assert_eq!(s["queries"]["MX"]["status"], "failed", "{s}");
    assert_eq!(s["queries"]["TXT"]["status"], "no data", "{s}");
    // The A record, the SPF record and the TXT value with '|', '/' and '%' in its key.
    assert_eq!(s["removed_records"], 3, "{s}");
    assert!(r.stderr.contains("MX"), "{}", r.stderr);
    assert_eq!(
        keys_of(&api, ObjectType::DnsARecord, "example.test"),
        BTreeSet::from(["internet|example.test|internet|192.0.2.10".to_string()])
    );
    assert_eq!(
        keys_of(&api, ObjectType::DnsMxRecord, "example.test").len(),
        1
    );
    assert_eq!(
        keys_of(&api, ObjectType::DnsTxtRecord, "example.test"),
        BTreeSet::from([
            "internet|example.test|_dmarc|v=DMARC1; p=none".to_string(),
            "internet|example.test|_other|keep me".to_string(),
        ])
    );
}

#[test]
fn dns_follows_a_cname_chain() {
    let ns = dns_server(Arc::new(Mutex::new(zone_v1()))).to_string();
    let api = RealApi::start();
    let token = api.target_token("dns", "www.example.test");
    run(
        &["dns", "WWW.example.test.", "--nameserver", &ns, "--no-srv"],
        &api.env(&token),
    )
    .ok();
    assert_eq!(
        api.keys(ObjectType::DnsCnameRecord),
        BTreeSet::from(["internet|www.example.test|internet|web.example.test".to_string()])
    );
    assert_eq!(
        api.keys(ObjectType::DnsARecord),
        BTreeSet::from(["internet|web.example.test|internet|192.0.2.20".to_string()])
    );
    assert!(
        api.keys(ObjectType::Hostname)
            .contains("internet|web.example.test")
    );
}

#[test]
fn localhost_comes_from_the_hosts_file_without_any_query() {
    // Port 9 on loopback: nothing answers there, so every name that needed a server would fail.
    let api = RealApi::start();
    let token = api.target_token("dns", "localhost");
    let r = run(
        &[
            "dns",
            "localhost",
            "--nameserver",
            "127.0.0.1:9",
            "--timeout",
            "1",
        ],
        &api.env(&token),
    )
    .ok();
    let s = r.json();
    assert_eq!(s["queries"]["A"]["status"], "answered", "{s}");
    assert!(
        api.keys(ObjectType::DnsARecord)
            .contains("internet|localhost|internet|127.0.0.1")
    );
    assert!(
        api.keys(ObjectType::DnsAaaaRecord)
            .contains("internet|localhost|internet|::1")
    );
}

#[test]
fn no_answer_at_all_fails_and_writes_nothing() {
    let api = RealApi::start();
    let token = api.target_token("dns", "example.test");
    let r = run(
        &[
            "dns",
            "example.test",
            "--nameserver",
            "127.0.0.1:9",
            "--timeout",
            "0.3",
            "--no-srv",
        ],
        &api.env(&token),
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("no DNS query about example.test was answered"),
        "{}",
        r.stderr
    );
    assert!(api.keys(ObjectType::Hostname).is_empty());
    // Bad arguments are usage errors.
    assert_eq!(run(&["dns", "not_a_host.test"], &api.env(&token)).code, 2);
    assert_eq!(
        run(
            &["dns", "a.test", "--nameserver", "dns.example:53"],
            &api.env(&token)
        )
        .code,
        2
    );
}
