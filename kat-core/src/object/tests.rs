use super::*;
use proptest::prelude::*;
use serde_json::json;

fn obj(ty: ObjectType, v: Value) -> Object {
    Object::from_json(ty, &v).unwrap_or_else(|e| panic!("{ty} {v}: {e}"))
}

fn err(ty: ObjectType, v: Value) -> String {
    Object::from_json(ty, &v)
        .expect_err("should be refused")
        .to_string()
}

#[test]
fn type_names_round_trip() {
    for t in ObjectType::ALL {
        assert_eq!(t.as_str().parse::<ObjectType>().unwrap(), t);
        let j = serde_json::to_value(t).unwrap();
        assert_eq!(j, json!(t.as_str()));
    }
    assert_eq!(
        "HostName".parse::<ObjectType>().unwrap(),
        ObjectType::Hostname
    );
    let e = "ipservice".parse::<ObjectType>().unwrap_err().to_string();
    assert!(e.contains("ipservice") && e.contains("hostname"), "{e}");
}

#[test]
fn natural_keys_match_the_original() {
    let cases = [
        (ObjectType::Network, json!({"name": "Internet"}), "internet"),
        (
            ObjectType::Hostname,
            json!({"network": "internet", "name": "Test.com."}),
            "internet|test.com",
        ),
        (
            ObjectType::IpAddress,
            json!({"network": "internet", "address": "127.0.0.1"}),
            "internet|127.0.0.1",
        ),
        (
            ObjectType::IpAddress,
            json!({"network": "internet", "address": "2001:DB8::1"}),
            "internet|2001:db8::1",
        ),
        (
            ObjectType::IpPort,
            json!({"address": "1.2.3.4", "protocol": "tcp", "port": 80}),
            "internet|1.2.3.4|TCP|80",
        ),
        (
            ObjectType::DnsAaaaRecord,
            json!({"hostname": "internet|test.com", "ip_address": "internet|2001:ab8:d0cb::"}),
            "internet|test.com|internet|2001:ab8:d0cb::",
        ),
        (
            ObjectType::DnsTxtRecord,
            json!({"hostname": "internet|test.com", "value": "v=spf1"}),
            "internet|test.com||v=spf1",
        ),
        (
            ObjectType::DnsTxtRecord,
            json!({"hostname": "internet|test.com", "prefix": "_dmarc", "value": "v=DMARC1"}),
            "internet|test.com|_dmarc|v=DMARC1",
        ),
        (
            ObjectType::DnsMxRecord,
            json!({"hostname": "internet|a.nl", "preference": 10, "mail_server": "internet|MX.a.nl"}),
            "internet|a.nl|10|internet|mx.a.nl",
        ),
        (
            ObjectType::DnsCaaRecord,
            json!({"hostname": "internet|a.nl", "flags": 0, "tag": "issue", "value": "letsencrypt.org"}),
            "internet|a.nl|0|issue|letsencrypt.org",
        ),
        (
            ObjectType::DnsSrvRecord,
            json!({"hostname": "internet|a.nl", "proto": "_tcp", "service": "_SIP", "priority": 1, "weight": 2, "port": 5060}),
            "internet|a.nl|_tcp|_sip|1|2|5060",
        ),
        (
            ObjectType::DnsCnameRecord,
            json!({"hostname": "internet|www.a.nl", "target": "internet|a.nl"}),
            "internet|www.a.nl|internet|a.nl",
        ),
        (
            ObjectType::DnsNsRecord,
            json!({"hostname": "internet|a.nl", "name_server": "ns1.a.nl"}),
            "internet|a.nl|internet|ns1.a.nl",
        ),
        (
            ObjectType::DnsPtrRecord,
            json!({"hostname": "internet|a.nl", "ip_address": "192.0.2.7"}),
            "internet|a.nl|internet|192.0.2.7",
        ),
        (ObjectType::Software, json!({"name": "openssh"}), "openssh"),
        (
            ObjectType::Software,
            json!({"name": "nginx", "version": "1.2"}),
            "nginx|1.2",
        ),
        (
            ObjectType::FindingType,
            json!({"code": "KAT-NO-SPF"}),
            "KAT-NO-SPF",
        ),
        (
            ObjectType::Finding,
            json!({"finding_type": "KAT-NO-DNSSEC", "hostname": "internet|example.com"}),
            "KAT-NO-DNSSEC|internet|example.com",
        ),
        (
            ObjectType::Finding,
            json!({"finding_type_code": "KAT-NO-RPKI", "ipaddress": "1.2.3.4"}),
            "KAT-NO-RPKI||internet|1.2.3.4",
        ),
    ];
    for (ty, v, key) in cases {
        let o = obj(ty, v.clone());
        assert_eq!(o.object_type(), ty, "{v}");
        assert_eq!(o.natural_key().as_str(), key, "{v}");
        // Every key is accepted by its type's key parser.
        ty.parse_key(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    }
}

#[test]
fn values_with_pipes_and_slashes_round_trip_through_keys() {
    let o = obj(
        ObjectType::DnsTxtRecord,
        json!({"hostname": "internet|x.com", "prefix": "sel._domainkey", "value": "k=rsa; p=MI/+G|x|"}),
    );
    let key = o.natural_key();
    assert_eq!(
        key.as_str(),
        "internet|x.com|sel._domainkey|k=rsa; p=MI/+G%7Cx%7C"
    );
    assert_eq!(key.parts().last().unwrap(), "k=rsa; p=MI/+G|x|");
    // The original's strip("|") would have eaten the trailing pipe.
    let json = o.to_json();
    assert_eq!(json["value"], json!("k=rsa; p=MI/+G|x|"));
    let again = Object::from_json(ObjectType::DnsTxtRecord, &Value::Object(json)).unwrap();
    assert_eq!(again, o);
}

/// One object of every type as JSON (two MX records: one of them the null MX).
pub(crate) fn samples() -> Vec<(ObjectType, Value)> {
    vec![
        (ObjectType::Network, json!({"name": "internet"})),
        (ObjectType::Hostname, json!({"name": "a.com"})),
        (ObjectType::IpAddress, json!({"address": "::1"})),
        (
            ObjectType::IpPort,
            json!({"address": "internet|10.0.0.1", "protocol": "UDP", "port": 53, "tls": false, "service": "domain", "software": [{"name": "bind", "version": "9"}]}),
        ),
        (
            ObjectType::Software,
            json!({"name": "nginx", "version": "1", "cpe": "cpe:/a:nginx"}),
        ),
        (
            ObjectType::FindingType,
            json!({"code": "KAT-X", "name": "X", "risk": "high"}),
        ),
        (
            ObjectType::Finding,
            json!({"finding_type": "KAT-X", "hostname": "a.com", "description": "d"}),
        ),
        (
            ObjectType::DnsARecord,
            json!({"hostname": "a.com", "ip_address": "1.1.1.1", "ttl": 60}),
        ),
        (
            ObjectType::DnsAaaaRecord,
            json!({"hostname": "a.com", "ip_address": "::2"}),
        ),
        (
            ObjectType::DnsPtrRecord,
            json!({"hostname": "a.com", "ip_address": "1.1.1.1"}),
        ),
        (
            ObjectType::DnsCnameRecord,
            json!({"hostname": "a.com", "target": "b.com"}),
        ),
        (
            ObjectType::DnsMxRecord,
            json!({"hostname": "a.com", "preference": 5, "mail_server": "mx.a.com"}),
        ),
        (
            ObjectType::DnsMxRecord,
            json!({"hostname": "a.com", "preference": 0, "mail_server": "."}),
        ),
        (
            ObjectType::DnsNsRecord,
            json!({"hostname": "a.com", "name_server": "ns.a.com"}),
        ),
        (
            ObjectType::DnsTxtRecord,
            json!({"hostname": "a.com", "value": "hello world"}),
        ),
        (
            ObjectType::DnsCaaRecord,
            json!({"hostname": "a.com", "flags": 128, "tag": "ISSUEWILD", "value": ";"}),
        ),
        (
            ObjectType::DnsSrvRecord,
            json!({"hostname": "a.com", "proto": "_udp", "service": "_x", "priority": 0, "weight": 0, "port": 0}),
        ),
        (
            ObjectType::Url,
            json!({"network": "internet", "url": "HTTPS://A.com:443/x?y#z"}),
        ),
    ]
}

/// [`samples`], parsed.
pub(crate) fn sample_objects() -> Vec<Object> {
    samples().into_iter().map(|(ty, v)| obj(ty, v)).collect()
}

#[test]
fn to_json_round_trips_for_every_type() {
    let samples = samples();
    assert_eq!(samples.len(), ObjectType::ALL.len() + 1);
    for (ty, v) in samples {
        let o = obj(ty, v);
        let mut j = o.to_json();
        j.insert("id".into(), json!(o.natural_key().as_str()));
        j.insert("scan_level".into(), json!(2));
        let again = Object::from_json(ty, &Value::Object(j)).unwrap();
        assert_eq!(again, o, "{ty}");
        for f in ty.fields() {
            assert!(o.field(f).is_some(), "{ty} lacks field {f}");
        }
        assert!(o.field("no_such_field").is_none());
    }
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (
            ObjectType::Hostname,
            json!({"network": "internet"}),
            "name",
            "required",
        ),
        (
            ObjectType::Hostname,
            json!({"name": "bad_host.com"}),
            "name",
            "'_'",
        ),
        (
            ObjectType::Hostname,
            json!({"name": 42}),
            "name",
            "a number",
        ),
        (
            ObjectType::Hostname,
            json!({"name": "a.com", "colour": "red"}),
            "colour",
            "unknown",
        ),
        (
            ObjectType::IpAddress,
            json!({"address": "300.1.1.1"}),
            "address",
            "IP address",
        ),
        (
            ObjectType::IpPort,
            json!({"address": "1.1.1.1", "port": 0}),
            "port",
            "1 to 65535",
        ),
        (
            ObjectType::IpPort,
            json!({"address": "1.1.1.1", "port": 70000}),
            "port",
            "1 to 65535",
        ),
        (
            ObjectType::IpPort,
            json!({"address": "1.1.1.1", "port": "x"}),
            "port",
            "whole number",
        ),
        (
            ObjectType::IpPort,
            json!({"address": "1.1.1.1", "port": 80, "protocol": "SCTP"}),
            "protocol",
            "TCP or UDP",
        ),
        (
            ObjectType::IpPort,
            json!({"address": "1.1.1.1", "port": 80, "tls": "yes"}),
            "tls",
            "true or false",
        ),
        (
            ObjectType::IpPort,
            json!({"address": "1.1.1.1", "port": 80, "software": [3]}),
            "software[0]",
            "software",
        ),
        (
            ObjectType::DnsARecord,
            json!({"hostname": "a.com", "ip_address": "::1"}),
            "ip_address",
            "IPv4",
        ),
        (
            ObjectType::DnsAaaaRecord,
            json!({"hostname": "a.com", "ip_address": "1.1.1.1"}),
            "ip_address",
            "IPv6",
        ),
        (
            ObjectType::DnsARecord,
            json!({"hostname": "a..com", "ip_address": "1.1.1.1"}),
            "hostname",
            "empty label",
        ),
        (
            ObjectType::DnsARecord,
            json!({"hostname": "a.com", "ip_address": "1.1.1.1", "ttl": -1}),
            "ttl",
            "whole number",
        ),
        (
            ObjectType::DnsCaaRecord,
            json!({"hostname": "a.com", "tag": "issuer", "value": "x"}),
            "tag",
            "unknown CAA tag",
        ),
        (
            ObjectType::DnsCaaRecord,
            json!({"hostname": "a.com", "flags": 256, "tag": "issue", "value": "x"}),
            "flags",
            "0 to 255",
        ),
        (
            ObjectType::DnsTxtRecord,
            json!({"hostname": "a.com", "value": "a\u{0}b"}),
            "value",
            "control",
        ),
        (
            ObjectType::Finding,
            json!({"finding_type": "KAT-X"}),
            "",
            "hostname or an address",
        ),
        (
            ObjectType::Finding,
            json!({"finding_type": "BAD CODE", "hostname": "a.com"}),
            "finding_type",
            "BAD CODE",
        ),
        (
            ObjectType::FindingType,
            json!({"code": "K", "risk": "severe"}),
            "risk",
            "severe",
        ),
        (
            ObjectType::Software,
            json!({"name": ""}),
            "name",
            "needs a name",
        ),
        (ObjectType::Network, json!(["internet"]), "", "an array"),
        (
            ObjectType::Hostname,
            json!({"name": "a.com", "id": "internet|b.com"}),
            "id",
            "does not match",
        ),
    ];
    for (ty, v, at, needle) in cases {
        let e = Object::from_json(ty, &v).expect_err(&v.to_string());
        let Error::Invalid { at: got, message } = &e else {
            panic!("{e}")
        };
        assert_eq!(got, at, "{ty} {v}: {e}");
        assert!(message.contains(needle), "{ty} {v}: {message}");
    }
}

#[test]
fn null_optional_fields_are_absent() {
    let o = obj(
        ObjectType::IpPort,
        json!({"address": "1.1.1.1", "port": 22, "tls": null, "service": null}),
    );
    let Object::IpPort(p) = o else { panic!() };
    assert_eq!(p.protocol, Protocol::Tcp);
    assert_eq!(p.tls, None);
    assert!(err(ObjectType::Hostname, json!({"name": null})).contains("required"));
}

#[test]
fn numbers_as_strings_are_accepted() {
    let o = obj(
        ObjectType::IpPort,
        json!({"address": "1.1.1.1", "port": "443"}),
    );
    assert_eq!(o.natural_key().as_str(), "internet|1.1.1.1|TCP|443");
}

#[test]
fn merge_keeps_known_attributes() {
    let mut a = obj(
        ObjectType::IpPort,
        json!({"address": "1.1.1.1", "port": 22, "service": "ssh", "software": ["openssh"]}),
    );
    let b = obj(
        ObjectType::IpPort,
        json!({"address": "1.1.1.1", "port": 22, "tls": false, "software": ["openssh", "dropbear"]}),
    );
    a.merge_from(b);
    let Object::IpPort(p) = &a else { panic!() };
    assert_eq!(p.service.as_deref(), Some("ssh"));
    assert_eq!(p.tls, Some(false));
    assert_eq!(p.software.len(), 2);

    let mut r = obj(
        ObjectType::DnsARecord,
        json!({"hostname": "a.com", "ip_address": "1.1.1.1", "ttl": 60}),
    );
    r.merge_from(obj(
        ObjectType::DnsARecord,
        json!({"hostname": "a.com", "ip_address": "1.1.1.1"}),
    ));
    assert_eq!(r.field("ttl"), Some(FieldValue::Int(60)));
    r.merge_from(obj(
        ObjectType::DnsARecord,
        json!({"hostname": "a.com", "ip_address": "1.1.1.1", "ttl": 5}),
    ));
    assert_eq!(r.field("ttl"), Some(FieldValue::Int(5)));
}

#[test]
fn references_of_records_and_findings() {
    let r = obj(
        ObjectType::DnsMxRecord,
        json!({"hostname": "a.com", "mail_server": "mx.a.com"}),
    );
    let refs: Vec<String> = r
        .references()
        .iter()
        .map(|o| o.natural_key().into_string())
        .collect();
    assert_eq!(refs, vec!["internet|a.com", "internet|mx.a.com"]);
    let f = obj(
        ObjectType::Finding,
        json!({"finding_type": "KAT-X", "address": "1.1.1.1"}),
    );
    let types: Vec<ObjectType> = f.references().iter().map(Object::object_type).collect();
    assert_eq!(types, vec![ObjectType::FindingType, ObjectType::IpAddress]);
    let h = obj(
        ObjectType::Hostname,
        json!({"name": "a.com", "network": "lab"}),
    );
    assert_eq!(h.references()[0].natural_key().as_str(), "lab");
}

#[test]
fn parse_key_checks_shape() {
    assert!(
        ObjectType::IpPort
            .parse_key("internet|1.1.1.1|TCP|80")
            .is_ok()
    );
    let e = ObjectType::IpPort
        .parse_key("internet|1.1.1.1|TCP|0")
        .unwrap_err()
        .to_string();
    assert!(e.contains("port"), "{e}");
    let e = ObjectType::Hostname
        .parse_key("internet|a.com|x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected 2"), "{e}");
    assert!(ObjectType::FindingType.parse_key("a b").is_err());
    assert!(ObjectType::Network.parse_key("").is_err());
}

#[test]
fn target_values() {
    assert_eq!(
        obj(ObjectType::Hostname, json!({"name": "A.com"}))
            .target_value()
            .as_deref(),
        Some("a.com")
    );
    assert_eq!(
        obj(ObjectType::IpAddress, json!({"address": "::1"}))
            .target_value()
            .as_deref(),
        Some("::1")
    );
    assert_eq!(
        obj(ObjectType::Network, json!({"name": "x"})).target_value(),
        None
    );
}

#[test]
fn field_values_sort_sensibly() {
    use std::cmp::Ordering::*;
    assert_eq!(
        FieldValue::Int(80).cmp_for_sort(&FieldValue::Int(443)),
        Less
    );
    assert_eq!(FieldValue::Null.cmp_for_sort(&FieldValue::Int(1)), Less);
    assert_eq!(
        FieldValue::Text("b".into()).cmp_for_sort(&FieldValue::Text("a".into())),
        Greater
    );
    assert_eq!(FieldValue::Bool(true).filter_text(), "true");
}

proptest! {
    #[test]
    fn txt_values_always_round_trip(value in "[^\\p{Cc}]{0,200}", prefix in "[a-z_.]{0,20}") {
        let o = Object::from_json(ObjectType::DnsTxtRecord, &json!({"hostname": "a.com", "prefix": prefix, "value": value})).unwrap();
        let parts = o.natural_key().parts();
        prop_assert_eq!(parts.len(), 4);
        prop_assert_eq!(&parts[2], &prefix);
        prop_assert_eq!(&parts[3], &value);
        prop_assert!(ObjectType::DnsTxtRecord.parse_key(o.natural_key().as_str()).is_ok());
    }

    #[test]
    fn from_json_never_panics(v in arb_json(3)) {
        for t in ObjectType::ALL {
            let _ = Object::from_json(t, &v);
        }
    }
}

fn arb_json(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        "[a-z0-9.|:_-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("name".to_string()),
                    Just("address".to_string()),
                    Just("hostname".to_string()),
                    Just("port".to_string()),
                    Just("ip_address".to_string()),
                    Just("value".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn urls() {
    let u = obj(
        ObjectType::Url,
        json!({"url": "https://Example.com./login#x"}),
    );
    assert_eq!(
        u.natural_key().as_str(),
        "internet|https://example.com/login"
    );
    assert_eq!(
        u.target_value().as_deref(),
        Some("https://example.com/login")
    );
    assert_eq!(
        u.references(),
        vec![Object::Hostname(
            HostnameRef::new("internet", "example.com").unwrap()
        )]
    );
    let ip = obj(
        ObjectType::Url,
        json!({"network": "lab", "url": "http://192.0.2.1:8080/"}),
    );
    assert_eq!(
        ip.references(),
        vec![Object::IpAddress(IpRef::new("lab", "192.0.2.1").unwrap())]
    );
    // A '|' in a URL is escaped in the key and round-trips.
    let p = obj(ObjectType::Url, json!({"url": "https://a.com/x|y"}));
    assert_eq!(p.natural_key().as_str(), "internet|https://a.com/x%7Cy");
    assert_eq!(
        ObjectType::Url.parse_key(p.natural_key().as_str()).unwrap(),
        p.natural_key()
    );
    assert_eq!(
        ObjectType::Url
            .parse_key("internet|HTTPS://A.COM/x%7Cy")
            .unwrap()
            .as_str(),
        "internet|https://a.com/x%7Cy"
    );
    for (v, field) in [
        (json!({"url": "ftp://a.com/"}), "url"),
        (json!({"url": "https://u:p@a.com/"}), "url"),
        (json!({"url": "https://bad_host/"}), "url"),
        (json!({"url": 7}), "url"),
        (json!({}), "url"),
        (
            json!({"url": "https://a.com/", "network": "a b"}),
            "network",
        ),
        (json!({"url": "https://a.com/", "host": "a.com"}), "host"),
    ] {
        match Object::from_json(ObjectType::Url, &v).expect_err("refused") {
            Error::Invalid { at, .. } => assert_eq!(at, field, "{v}"),
            e => panic!("{v}: {e}"),
        }
    }
    assert!(ObjectType::Url.parse_key("internet").is_err());
    assert!(
        ObjectType::Url
            .parse_key("internet|gopher://a.com/")
            .is_err()
    );
}

#[test]
fn findings_name_their_subject_with_object() {
    let f = obj(
        ObjectType::Finding,
        json!({"finding_type": "SSL_EXPIRY_WARNING", "object": "internet|Example.com", "description": "soon"}),
    );
    assert_eq!(
        f.natural_key().as_str(),
        "SSL_EXPIRY_WARNING|internet|example.com"
    );
    let f = obj(
        ObjectType::Finding,
        json!({"finding_type": "KAT-NO-RPKI", "object": "internet|192.0.2.1"}),
    );
    assert_eq!(f.natural_key().as_str(), "KAT-NO-RPKI||internet|192.0.2.1");
    let f = obj(
        ObjectType::Finding,
        json!({"finding_type": "X", "object": "a.example"}),
    );
    assert_eq!(f.natural_key().as_str(), "X|internet|a.example");
    for (v, field) in [
        (
            json!({"finding_type": "X", "object": "internet|a.example", "hostname": "a.example"}),
            "object",
        ),
        (
            json!({"finding_type": "X", "object": "internet|192.0.2.1", "address": "192.0.2.1"}),
            "object",
        ),
        (
            json!({"finding_type": "X", "object": "internet|192.0.2.1|TCP|443"}),
            "object",
        ),
        (
            json!({"finding_type": "X", "object": "internet|-bad"}),
            "object",
        ),
        (json!({"finding_type": "X", "object": 7}), "object"),
        (json!({"finding_type": "X", "object": ""}), "object"),
    ] {
        match Object::from_json(ObjectType::Finding, &v).expect_err("refused") {
            Error::Invalid { at, .. } => assert_eq!(at, field, "{v}"),
            e => panic!("{v}: {e}"),
        }
    }
}

#[test]
fn dns_records_tolerate_the_original_plugins_value() {
    // As the original's dns plugin posts them: every record with its text form as `value`.
    for (ty, v) in [
        (
            ObjectType::DnsARecord,
            json!({"hostname": "internet|a.com", "ip_address": "internet|192.0.2.1", "value": "192.0.2.1", "ttl": 60}),
        ),
        (
            ObjectType::DnsAaaaRecord,
            json!({"hostname": "internet|a.com", "ip_address": "internet|2001:db8::1", "value": "2001:db8::1", "ttl": 60}),
        ),
        (
            ObjectType::DnsMxRecord,
            json!({"hostname": "internet|a.com", "mail_server": "internet|mx.a.com", "preference": 10, "value": "10 mx.a.com.", "ttl": 60}),
        ),
        (
            ObjectType::DnsNsRecord,
            json!({"hostname": "internet|a.com", "name_server": "internet|ns.a.com", "value": "ns.a.com.", "ttl": 60}),
        ),
        (
            ObjectType::DnsCnameRecord,
            json!({"hostname": "internet|www.a.com", "target": "internet|a.com", "value": "a.com.", "ttl": 60}),
        ),
        (
            ObjectType::DnsPtrRecord,
            json!({"hostname": "internet|a.com", "ip_address": "internet|192.0.2.1", "value": "a.com."}),
        ),
        (
            ObjectType::DnsSrvRecord,
            json!({"hostname": "a.com", "proto": "_tcp", "service": "_sip", "priority": 0, "weight": 0, "port": 5060, "value": "0 0 5060 sip.a.com."}),
        ),
    ] {
        let o = obj(ty, v.clone());
        assert!(
            !o.to_json().contains_key("value"),
            "{ty}: the tolerated value is not stored"
        );
    }
    // TXT and CAA keep their value as a field.
    let t = obj(
        ObjectType::DnsTxtRecord,
        json!({"hostname": "a.com", "value": "v=spf1 -all", "ttl": 60}),
    );
    assert_eq!(t.to_json()["value"], "v=spf1 -all");
    // Still validated as text; and other unknown fields stay errors, on records and elsewhere.
    for (ty, v, field) in [
        (
            ObjectType::DnsARecord,
            json!({"hostname": "a.com", "ip_address": "192.0.2.1", "value": 7}),
            "value",
        ),
        (
            ObjectType::DnsARecord,
            json!({"hostname": "a.com", "ip_address": "192.0.2.1", "value": "x\u{0}"}),
            "value",
        ),
        (
            ObjectType::DnsARecord,
            json!({"hostname": "a.com", "ip_address": "192.0.2.1", "colour": "red"}),
            "colour",
        ),
        (
            ObjectType::Hostname,
            json!({"name": "a.com", "value": "x"}),
            "value",
        ),
        (
            ObjectType::IpAddress,
            json!({"address": "192.0.2.1", "value": "x"}),
            "value",
        ),
    ] {
        match Object::from_json(ty, &v).expect_err("refused") {
            Error::Invalid { at, .. } => assert_eq!(at, field, "{v}"),
            e => panic!("{v}: {e}"),
        }
    }
}
