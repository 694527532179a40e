//! Golden files for every parser and normalizer: nmap XML -> objects and findings (no result, one,
//! many, and real nmap output), DNS answers -> objects, certificates -> findings. Every object a
//! normalizer produces is also validated by kat-core, the API's own validation.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use kat_core::object::{Object, ObjectType};
use kat_plugins::dns::{Answer, Outcome, Query, RecordData, build_payload};
use kat_plugins::names::Subject;
use kat_plugins::nmap;
use kat_plugins::tls::{analyze_chain, root_store};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
    date_time_ymd,
};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use serde_json::{Map, Value, json};

use crate::common::{assert_golden, golden_dir};

/// Every object of a payload passes kat-core's validation (what the API would do with it).
fn validate_payload(payload: &Map<String, Value>) {
    for (ty, items) in payload {
        let t: ObjectType = ty.parse().unwrap();
        for item in items.as_array().unwrap() {
            Object::from_json(t, item).unwrap_or_else(|e| panic!("{ty} {item}: {e}"));
        }
    }
}

fn nmap_case(name: &str) -> Value {
    let xml =
        std::fs::read_to_string(golden_dir().join("nmap").join(format!("{name}.xml"))).unwrap();
    let scan = nmap::parse(&xml).unwrap();
    let plan = nmap::normalize(&scan, &BTreeMap::new());
    validate_payload(&plan.payload);
    assert!(plan.stale_ports.is_empty() && plan.stale_findings.is_empty());
    json!({
        "scanner": scan.scanner,
        "scanned": scan.scanned.iter().map(|(p, r)| (p.nmap().to_string(), json!(r))).collect::<Map<_, _>>(),
        "hosts": scan.hosts.iter().map(|h| json!({
            "address": h.address.to_string(),
            "up": h.up,
            "open": h.ports.iter().filter(|p| p.state == "open").map(|p| format!("{}/{}", p.port, p.protocol.nmap())).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "payload": plan.payload,
        "warnings": scan.warnings,
    })
}

#[test]
fn nmap_golden_files() {
    let mut names: Vec<String> = std::fs::read_dir(golden_dir().join("nmap"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "xml").then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    for required in ["empty", "one", "many", "real-nmap-127.0.0.1"] {
        assert!(
            names.iter().any(|n| n == required),
            "tests/golden/nmap/{required}.xml is missing"
        );
    }
    for name in &names {
        assert_golden(&format!("nmap/{name}.expected.json"), &nmap_case(name));
    }
}

#[test]
fn nmap_golden_semantics() {
    // No result: a real nmap run with every port closed.
    let empty = nmap_case("empty");
    assert_eq!(
        empty["payload"],
        json!({"ipaddress": [{"network": "internet", "address": "127.0.0.1"}]})
    );
    // One result.
    let one = nmap_case("one");
    assert_eq!(one["payload"]["ipport"].as_array().unwrap().len(), 1);
    assert_eq!(
        one["payload"]["finding"][0]["finding_type"],
        "KAT-OPEN-DATABASE-PORT"
    );
    assert_eq!(
        one["payload"]["finding"][0]["address"],
        "internet|192.0.2.10"
    );
    assert_eq!(
        one["payload"]["software"][0],
        json!({"name": "MySQL", "version": "8.0.36-0ubuntu0.22.04.1", "cpe": "cpe:/a:mysql:mysql:8.0.36-0ubuntu0.22.04.1"})
    );
    // Many: every rule, TLS tunnels, UDP, IPv6 canonicalised, the duplicate 443 once, SCTP and port 0
    // skipped with a warning, the down host and the MAC-only host handled.
    let many = nmap_case("many");
    let p = &many["payload"];
    let codes: Vec<(String, String)> = p["finding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["finding_type"].as_str().unwrap().into(),
                f["address"].as_str().unwrap().into(),
            )
        })
        .collect();
    for want in [
        ("KAT-OPEN-DATABASE-PORT", "internet|192.0.2.1"),
        ("KAT-OPEN-SYSADMIN-PORT", "internet|192.0.2.1"),
        ("KAT-REMOTE-DESKTOP-PORT", "internet|192.0.2.1"),
        ("KAT-UNCOMMON-OPEN-PORT", "internet|192.0.2.1"),
        ("KAT-OPEN-DATABASE-PORT", "internet|192.0.2.5"),
        ("KAT-UNCOMMON-OPEN-PORT", "internet|192.0.2.5"),
        ("KAT-OPEN-DATABASE-PORT", "internet|2001:db8::7"),
    ] {
        assert!(
            codes.contains(&(want.0.into(), want.1.into())),
            "{want:?} missing from {codes:?}"
        );
    }
    assert_eq!(codes.len(), 7, "{codes:?}");
    let ports: Vec<String> = p["ipport"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            format!(
                "{}|{}|{}",
                x["address"].as_str().unwrap(),
                x["protocol"].as_str().unwrap(),
                x["port"]
            )
        })
        .collect();
    assert_eq!(ports.iter().filter(|x| x.ends_with("|TCP|443")).count(), 1);
    assert!(ports.contains(&"internet|192.0.2.1|UDP|53".to_string()));
    assert!(
        !ports.iter().any(|x| x.contains("|161"))
            || ports.contains(&"internet|192.0.2.5|UDP|161".to_string())
    );
    assert!(
        !ports.contains(&"internet|192.0.2.1|UDP|161".to_string()),
        "open|filtered is not open"
    );
    assert!(
        !ports.iter().any(|x| x.ends_with("|TCP|23")),
        "filtered is not open"
    );
    let tls443 = p["ipport"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["port"] == 443)
        .unwrap();
    assert_eq!(tls443["tls"], true);
    assert_eq!(
        many["warnings"].as_array().unwrap().len(),
        3,
        "{}",
        many["warnings"]
    );
    // Real nmap output of 127.0.0.1 (ssh, http, mysql, postgresql open).
    let real = nmap_case("real-nmap-127.0.0.1");
    assert_eq!(
        real["hosts"][0]["open"],
        json!(["22/tcp", "80/tcp", "3306/tcp", "5432/tcp"])
    );
    assert_eq!(
        real["scanned"]["tcp"],
        json!([[1, 1024], [3306, 3306], [5432, 5432]])
    );
    let codes: Vec<&str> = real["payload"]["finding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["finding_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        vec!["KAT-OPEN-DATABASE-PORT", "KAT-OPEN-SYSADMIN-PORT"]
    );
    let sv = nmap_case("real-nmap-sV-127.0.0.1");
    assert_eq!(sv["payload"]["software"][0]["name"], "OpenSSH");
}

fn a(owner: &str, ttl: u32, data: RecordData) -> Answer {
    Answer {
        owner: owner.into(),
        ttl,
        data,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn dns_case(hostname: &str, results: &[(Query, Outcome)]) -> Value {
    let p = build_payload(hostname, results);
    validate_payload(&p.body);
    json!({"objects": p.body, "skipped": p.skipped})
}

#[test]
fn dns_golden_files() {
    // No result: the name exists but has no records of any asked type (and _dmarc is NXDOMAIN).
    let none: Vec<(Query, Outcome)> = Query::all(true)
        .into_iter()
        .map(|q| {
            (
                q,
                if q == Query::Dmarc {
                    Outcome::NxDomain
                } else {
                    Outcome::NoData
                },
            )
        })
        .collect();
    let v = dns_case("empty.example", &none);
    assert_eq!(
        v["objects"],
        json!({"hostname": [{"network": "internet", "name": "empty.example"}]})
    );
    assert_golden("dns/none.expected.json", &v);

    // One result: a single A record.
    let one = vec![
        (
            Query::A,
            Outcome::Records(vec![a(
                "one.example.",
                300,
                RecordData::Address(ip("192.0.2.1")),
            )]),
        ),
        (Query::Aaaa, Outcome::NoData),
        (Query::Mx, Outcome::Failed("SERVFAIL".into())),
    ];
    let v = dns_case("one.example", &one);
    assert_eq!(
        v["objects"]["dnsarecord"],
        json!([{"hostname": "internet|one.example", "ip_address": "internet|192.0.2.1", "ttl": 300}])
    );
    assert_golden("dns/one.expected.json", &v);

    // Many: a CNAME chain (the target gets the addresses), MX with an upper-case target and a null
    // MX, NS, multi-string TXT, _dmarc, CAA (one with a tag the API does not store), SRV, an
    // IPv4-mapped AAAA, a record with an invalid owner, duplicates across answers.
    let many = vec![
        (
            Query::A,
            Outcome::Records(vec![
                a(
                    "WWW.Example.COM.",
                    60,
                    RecordData::Cname("Web.Example.COM.".into()),
                ),
                a(
                    "web.example.com.",
                    60,
                    RecordData::Address(ip("192.0.2.10")),
                ),
                a(
                    "web.example.com.",
                    60,
                    RecordData::Address(ip("192.0.2.11")),
                ),
            ]),
        ),
        (
            Query::Aaaa,
            Outcome::Records(vec![
                a(
                    "www.example.com.",
                    60,
                    RecordData::Cname("web.example.com.".into()),
                ),
                a(
                    "web.example.com.",
                    60,
                    RecordData::Address(ip("2001:db8::10")),
                ),
                a(
                    "web.example.com.",
                    60,
                    RecordData::Address(ip("::ffff:192.0.2.99")),
                ),
            ]),
        ),
        (
            Query::Cname,
            Outcome::Records(vec![a(
                "www.example.com.",
                60,
                RecordData::Cname("web.example.com.".into()),
            )]),
        ),
        (
            Query::Mx,
            Outcome::Records(vec![
                a(
                    "www.example.com.",
                    3600,
                    RecordData::Cname("web.example.com.".into()),
                ),
                a(
                    "web.example.com.",
                    3600,
                    RecordData::Mx(10, "MAIL.Example.COM.".into()),
                ),
                a("web.example.com.", 3600, RecordData::Mx(0, ".".into())),
                a(
                    "web.example.com.",
                    3600,
                    RecordData::Mx(20, "bad_name.example.com.".into()),
                ),
            ]),
        ),
        (
            Query::Ns,
            Outcome::Records(vec![
                a(
                    "www.example.com.",
                    86400,
                    RecordData::Cname("web.example.com.".into()),
                ),
                a(
                    "web.example.com.",
                    86400,
                    RecordData::Ns("NS1.Example.NET.".into()),
                ),
            ]),
        ),
        (
            Query::Txt,
            Outcome::Records(vec![
                a(
                    "www.example.com.",
                    300,
                    RecordData::Cname("web.example.com.".into()),
                ),
                a(
                    "web.example.com.",
                    300,
                    RecordData::Txt(vec![
                        b"v=spf1 ".to_vec(),
                        b"include:_spf.example.net -all".to_vec(),
                    ]),
                ),
                a(
                    "web.example.com.",
                    300,
                    RecordData::Txt(vec![b"pipe|and/slash 100%".to_vec()]),
                ),
                a(
                    "web.example.com.",
                    300,
                    RecordData::Txt(vec![b"bad\x01control".to_vec()]),
                ),
            ]),
        ),
        (
            Query::Dmarc,
            Outcome::Records(vec![
                a(
                    "_dmarc.www.example.com.",
                    300,
                    RecordData::Cname("_dmarc.provider.example.".into()),
                ),
                a(
                    "_dmarc.provider.example.",
                    300,
                    RecordData::Txt(vec![b"v=DMARC1; p=reject".to_vec()]),
                ),
            ]),
        ),
        (
            Query::Caa,
            Outcome::Records(vec![
                a(
                    "www.example.com.",
                    300,
                    RecordData::Cname("web.example.com.".into()),
                ),
                a(
                    "web.example.com.",
                    300,
                    RecordData::Caa(0, "issue".into(), b"letsencrypt.org".to_vec()),
                ),
                a(
                    "web.example.com.",
                    300,
                    RecordData::Caa(128, "tbs".into(), b"x".to_vec()),
                ),
            ]),
        ),
        (
            Query::Srv("_sip", "_tls"),
            Outcome::Records(vec![a(
                "_sip._tls.www.example.com.",
                600,
                RecordData::Srv(10, 5, 5061, "sip.example.com.".into()),
            )]),
        ),
        (Query::Srv("_xmpp-client", "_tcp"), Outcome::NxDomain),
        (
            Query::A,
            Outcome::Records(vec![a(
                "_bad.example.com.",
                60,
                RecordData::Address(ip("192.0.2.50")),
            )]),
        ),
    ];
    let v = dns_case("www.example.com", &many);
    let o = &v["objects"];
    assert_eq!(
        o["dnscnamerecord"].as_array().unwrap().len(),
        1,
        "the CNAME appears once: {o}"
    );
    assert_eq!(
        o["dnsmxrecord"],
        json!([
            {"hostname": "internet|web.example.com", "preference": 10, "mail_server": "internet|mail.example.com", "ttl": 3600},
            {"hostname": "internet|web.example.com", "preference": 0, "ttl": 3600},
        ])
    );
    assert_eq!(
        o["dnsnsrecord"][0]["name_server"],
        "internet|ns1.example.net"
    );
    assert_eq!(o["dnstxtrecord"].as_array().unwrap().len(), 3);
    assert!(
        o["dnstxtrecord"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["prefix"] == "_dmarc" && t["hostname"] == "internet|www.example.com")
    );
    assert!(
        o["dnstxtrecord"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["value"] == "v=spf1 include:_spf.example.net -all")
    );
    assert_eq!(o["dnssrvrecord"][0]["service"], "_sip");
    assert_eq!(
        v["skipped"].as_array().unwrap().len(),
        5,
        "{}",
        v["skipped"]
    );
    assert_golden("dns/many.expected.json", &v);
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2040, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

fn leaf_params(names: &[&str], from: (i32, u8, u8), to: (i32, u8, u8)) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    for n in names {
        p.subject_alt_names.push(match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*n).try_into().unwrap()),
        });
    }
    p.distinguished_name.push(DnType::CommonName, names[0]);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = date_time_ymd(from.0, from.1, from.2);
    p.not_after = date_time_ymd(to.0, to.1, to.2);
    p
}

fn signed(
    ca: &Ca,
    names: &[&str],
    from: (i32, u8, u8),
    to: (i32, u8, u8),
) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    leaf_params(names, from, to)
        .signed_by(&key, &ca.cert, &ca.key)
        .unwrap()
        .der()
        .clone()
}

fn self_signed(names: &[&str], from: (i32, u8, u8), to: (i32, u8, u8)) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    leaf_params(names, from, to)
        .self_signed(&key)
        .unwrap()
        .der()
        .clone()
}

fn roots_with(ca: &Ca) -> Arc<RootCertStore> {
    let mut r = root_store(None).unwrap();
    r.add(ca.cert.der().clone()).unwrap();
    Arc::new(r)
}

/// A name, the chain the server sends, the subject connected to, the roots, the expected codes.
type CertCase = (
    &'static str,
    Vec<CertificateDer<'static>>,
    Subject,
    Arc<RootCertStore>,
    Vec<&'static str>,
);

#[test]
fn tls_certificate_golden_file() {
    let now = date_time_ymd(2026, 6, 1).unix_timestamp();
    let test_ca = ca("kat test CA");
    let other_ca = ca("kat other CA");
    let trusted = roots_with(&test_ca);
    let mozilla = Arc::new(root_store(None).unwrap());
    let host = Subject::Hostname("localhost".into());
    let valid = ((2026, 1, 1), (2027, 1, 1));
    // An intermediate CA signed by the test CA.
    let mut ipar = CertificateParams::new(Vec::<String>::new()).unwrap();
    ipar.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ipar.distinguished_name
        .push(DnType::CommonName, "kat intermediate CA");
    ipar.not_before = date_time_ymd(2020, 1, 1);
    ipar.not_after = date_time_ymd(2040, 1, 1);
    let ikey = KeyPair::generate().unwrap();
    let icert = ipar.signed_by(&ikey, &test_ca.cert, &test_ca.key).unwrap();
    let intermediate = Ca {
        cert: icert,
        key: ikey,
    };
    let via_intermediate = signed(&intermediate, &["localhost"], valid.0, valid.1);

    let cases: Vec<CertCase> = vec![
        (
            "self-signed",
            vec![self_signed(&["localhost"], valid.0, valid.1)],
            host.clone(),
            trusted.clone(),
            vec!["KAT-SELF-SIGNED"],
        ),
        (
            "ca-signed-trusted",
            vec![signed(&test_ca, &["localhost"], valid.0, valid.1)],
            host.clone(),
            trusted.clone(),
            vec![],
        ),
        (
            "ca-signed-unknown-ca",
            vec![signed(&other_ca, &["localhost"], valid.0, valid.1)],
            host.clone(),
            trusted.clone(),
            vec!["KAT-CERTIFICATE-UNTRUSTED"],
        ),
        (
            "ca-signed-mozilla-roots",
            vec![signed(&test_ca, &["localhost"], valid.0, valid.1)],
            host.clone(),
            mozilla.clone(),
            vec!["KAT-CERTIFICATE-UNTRUSTED"],
        ),
        (
            "expired",
            vec![signed(&test_ca, &["localhost"], (2025, 1, 1), (2026, 5, 1))],
            host.clone(),
            trusted.clone(),
            vec!["KAT-CERTIFICATE-EXPIRED"],
        ),
        (
            "expiring-in-10-days",
            vec![signed(
                &test_ca,
                &["localhost"],
                (2025, 6, 1),
                (2026, 6, 11),
            )],
            host.clone(),
            trusted.clone(),
            vec!["KAT-CERTIFICATE-EXPIRING-SOON"],
        ),
        (
            "expiring-in-40-days",
            vec![signed(
                &test_ca,
                &["localhost"],
                (2025, 6, 1),
                (2026, 7, 11),
            )],
            host.clone(),
            trusted.clone(),
            vec![],
        ),
        (
            "wrong-name",
            vec![signed(&test_ca, &["other.test"], valid.0, valid.1)],
            host.clone(),
            trusted.clone(),
            vec!["KAT-CERTIFICATE-HOSTNAME-MISMATCH"],
        ),
        (
            "wildcard-name",
            vec![signed(&test_ca, &["*.example.test"], valid.0, valid.1)],
            Subject::Hostname("www.example.test".into()),
            trusted.clone(),
            vec![],
        ),
        (
            "expired-self-signed-wrong-name",
            vec![self_signed(&["other.test"], (2020, 1, 1), (2021, 1, 1))],
            host.clone(),
            trusted.clone(),
            vec![
                "KAT-CERTIFICATE-EXPIRED",
                "KAT-SELF-SIGNED",
                "KAT-CERTIFICATE-HOSTNAME-MISMATCH",
            ],
        ),
        (
            "ip-address",
            vec![signed(&test_ca, &["127.0.0.1"], valid.0, valid.1)],
            Subject::Address(ip("127.0.0.1")),
            trusted.clone(),
            vec![],
        ),
        (
            "intermediate-sent",
            vec![via_intermediate.clone(), intermediate.cert.der().clone()],
            host.clone(),
            trusted.clone(),
            vec![],
        ),
        (
            "intermediate-missing",
            vec![via_intermediate],
            host.clone(),
            trusted.clone(),
            vec!["KAT-CERTIFICATE-UNTRUSTED"],
        ),
    ];
    let mut golden = Map::new();
    for (name, chain, subject, roots, want) in cases {
        let r = analyze_chain(&chain, &subject, now, roots).unwrap();
        let codes: Vec<&str> = r.findings.iter().map(|f| f.code).collect();
        assert_eq!(codes, want, "case {name}: {r:#?}");
        golden.insert(
            name.to_string(),
            json!(
                r.findings
                    .iter()
                    .map(|f| json!({"finding_type": f.code, "finding": f.to_json()}))
                    .collect::<Vec<_>>()
            ),
        );
        for f in &r.findings {
            Object::from_json(ObjectType::Finding, &f.to_json()).unwrap();
        }
    }
    assert_golden("tls/certificates.expected.json", &Value::Object(golden));
    assert!(analyze_chain(&[], &host, now, mozilla).is_err());
}
