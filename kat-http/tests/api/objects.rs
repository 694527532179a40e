//! `/objects/`: bulk writes, per-type routes, filters, paging, PATCH, deletes, nested DNS deletes.

use serde_json::{Value, json};

use kat_core::object::{NaturalKey, ObjectType};

use crate::common::*;

#[tokio::test]
async fn bulk_post_shapes_idempotence_and_attribution() {
    let s = start(Options::default()).await;
    let (t, task) = s.token_with_task("acme", all());
    let r = s.post("/api/v1/objects/", &t, json!({})).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json(), json!({}));

    let body = json!({
        "hostname": [{"network": "internet", "name": "Example.com."}],
        "ipaddress": [{"network": "internet", "address": "192.0.2.1"}],
        "dnsarecord": [{"hostname": "internet|example.com", "ip_address": "internet|192.0.2.1", "ttl": 60}],
        "dnstxtrecord": [{"hostname": "internet|test.com", "value": "v=spf1"}],
    });
    let r = s.post("/api/v1/objects/", &t, body.clone()).await;
    assert_eq!(r.status, 201, "{}", r.json());
    let v = r.json();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 4);
    assert_eq!(v["hostname"][0]["id"], "internet|example.com");
    assert_eq!(v["hostname"][0]["name"], "example.com");
    assert_eq!(v["ipaddress"][0]["id"], "internet|192.0.2.1");
    assert_eq!(
        v["dnsarecord"][0]["id"],
        "internet|example.com|internet|192.0.2.1"
    );
    assert_eq!(v["dnstxtrecord"][0]["id"], "internet|test.com||v=spf1");
    // Re-posting creates no duplicates.
    let before = s.count("acme", ObjectType::Hostname).await;
    assert_eq!(s.post("/api/v1/objects/", &t, body).await.status, 201);
    assert_eq!(s.count("acme", ObjectType::Hostname).await, before);
    // Writes are attributed to the token's task.
    let written = s.objects.objects_of(&org("acme"), task).await.unwrap();
    assert!(
        written
            .iter()
            .any(|o| o.key.as_str() == "internet|example.com")
    );
    let by = s
        .objects
        .tasks_of(
            &org("acme"),
            ObjectType::Hostname,
            &NaturalKey::parse("internet|example.com").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(by, vec![task]);
    // A ?task_id= parameter is refused, and writes nothing.
    let other = kat_core::task::TaskId::new();
    let r = s
        .post(
            &format!("/api/v1/objects/?task_id={other}"),
            &t,
            hostnames(&["sneaky.example"]),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.attr().as_deref(), Some("task_id"));
    assert!(
        s.objects
            .objects_of(&org("acme"), other)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.count("acme", ObjectType::Hostname).await, before);
    s.stop().await;
}

#[tokio::test]
async fn bulk_post_is_all_or_nothing_with_field_paths() {
    let s = start(Options::default()).await;
    let t = s.token("acme", all());
    let r = s
        .post(
            "/api/v1/objects/",
            &t,
            json!({"hostname": [{"name": "a.example"}, {"name": "b.example"}, {"name": "-bad-"}]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "invalid");
    assert_eq!(r.json()["type"], "validation_error");
    assert_eq!(r.attr().as_deref(), Some("hostname[2].name"));
    assert_eq!(s.count("acme", ObjectType::Hostname).await, 0);

    let r = s
        .post(
            "/api/v1/objects/",
            &t,
            json!({"hostname": [{"name": "a.example"}], "ipservice": [{}]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.attr().as_deref(), Some("ipservice"));
    assert!(
        r.json()["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("ipservice")
    );
    assert_eq!(s.count("acme", ObjectType::Hostname).await, 0);

    for (body, attr) in [
        (json!({"hostname": {"name": "x.example"}}), "hostname"),
        (
            json!({"hostname": [{"network": "internet"}]}),
            "hostname[0].name",
        ),
        (
            json!({"ipaddress": [{"address": "999.1.1.1"}]}),
            "ipaddress[0].address",
        ),
        (
            json!({"ipport": [{"address": "192.0.2.1", "port": 70000}]}),
            "ipport[0].port",
        ),
        (
            json!({"hostname": [{"name": "a.example", "colour": "red"}]}),
            "hostname[0].colour",
        ),
        (json!({"hostname": [{"name": 5}]}), "hostname[0].name"),
    ] {
        let r = s.post("/api/v1/objects/", &t, body.clone()).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.attr().as_deref(), Some(attr), "{body}: {}", r.json());
    }
    for body in [json!([1, 2]), json!("x"), json!(null)] {
        let r = s.post("/api/v1/objects/", &t, body).await;
        assert_eq!(r.status, 400);
        r.error_code();
    }
    assert_eq!(s.count("acme", ObjectType::Hostname).await, 0);
    assert_eq!(s.count("acme", ObjectType::IpPort).await, 0);
    s.stop().await;
}

#[tokio::test]
async fn per_type_routes_filters_ordering_and_paging() {
    let s = start(Options::default()).await;
    let t = s.token("acme", all());
    // One object in, one object out; a list in, a list out.
    let r = s
        .post(
            "/api/v1/objects/ipport/",
            &t,
            json!({"address": "192.0.2.1", "protocol": "TCP", "port": 80, "service": "http"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(r.json()["id"], "internet|192.0.2.1|TCP|80");
    let ports: Vec<Value> = [443, 22, 8080]
        .iter()
        .map(|p| json!({"address": "internet|192.0.2.1", "port": p}))
        .chain([json!({"address": "192.0.2.2", "port": 80})])
        .collect();
    let r = s.post("/api/v1/objects/ipport/", &t, json!(ports)).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json().as_array().unwrap().len(), 4);
    let r = s
        .post(
            "/api/v1/objects/ipport/",
            &t,
            json!([{"address": "192.0.2.1"}]),
        )
        .await;
    assert_eq!(r.attr().as_deref(), Some("[0].port"));

    // Repeated filter values, relation by natural key.
    let r = s
        .get(
            "/api/v1/objects/ipport/?port=80&port=443&ordering=-port",
            &t,
        )
        .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["count"], 3);
    let got: Vec<i64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["port"].as_i64().unwrap())
        .collect();
    assert_eq!(got, vec![443, 80, 80]);
    let r = s
        .get("/api/v1/objects/ipport/?address=internet%7C192.0.2.2", &t)
        .await;
    assert_eq!(r.json()["count"], 1);
    let r = s
        .get(
            "/api/v1/objects/ipport/?id=internet|192.0.2.1|TCP|22&id=internet|192.0.2.1|TCP|8080",
            &t,
        )
        .await;
    assert_eq!(r.json()["count"], 2);
    let r = s.get("/api/v1/objects/ipport/?search=192.0.2.2", &t).await;
    assert_eq!(r.json()["count"], 1);
    // Unknown parameters and orderings are 400s naming them.
    for (q, attr) in [
        ("pk=internet|192.0.2.1|TCP|80", "pk"),
        ("ordering=colour", "ordering"),
        ("limit=abc", "limit"),
        ("id=not-a-port-key", "id"),
    ] {
        let r = s.get(&format!("/api/v1/objects/ipport/?{q}"), &t).await;
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.attr().as_deref(), Some(attr), "{q}");
    }

    // Paging: absolute next/previous URLs that work.
    let names: Vec<String> = (0..7).map(|i| format!("h{i}.example")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        s.post("/api/v1/objects/", &t, hostnames(&refs))
            .await
            .status,
        201
    );
    let r = s
        .get("/api/v1/objects/hostname/?limit=3&ordering=name", &t)
        .await;
    let v = r.json();
    assert_eq!(v["count"], 7);
    assert_eq!(v["previous"], Value::Null);
    assert_eq!(v["results"][0]["name"], "h0.example");
    let next = v["next"].as_str().unwrap().to_string();
    assert!(next.starts_with(&s.base), "{next}");
    assert!(
        next.contains("offset=3") && next.contains("limit=3") && next.contains("ordering=name")
    );
    let path = next.strip_prefix(&s.base).unwrap();
    let v = s.get(path, &t).await.json();
    assert_eq!(v["results"][0]["name"], "h3.example");
    let prev = v["previous"].as_str().unwrap();
    assert!(
        prev.starts_with(&s.base) && !prev.contains("offset="),
        "{prev}"
    );
    let last = s
        .get(
            "/api/v1/objects/hostname/?limit=3&offset=6&ordering=-name",
            &t,
        )
        .await
        .json();
    assert_eq!(last["next"], Value::Null);
    assert_eq!(last["results"][0]["name"], "h0.example");
    // Default page size is 100.
    let v = s.get("/api/v1/objects/hostname/", &t).await.json();
    assert_eq!(v["results"].as_array().unwrap().len(), 7);
    s.stop().await;
}

#[tokio::test]
async fn detail_patch_and_keys_with_slashes() {
    let s = start(Options::default()).await;
    let t = s.token("acme", all());
    let txt = json!({"dnstxtrecord": [{"hostname": "internet|x.com", "prefix": "s1._domainkey", "value": "k=rsa; p=MI/+G|end"}]});
    let r = s.post("/api/v1/objects/", &t, txt).await;
    let key = r.json()["dnstxtrecord"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(key.contains('/'));
    let enc =
        percent_encoding::utf8_percent_encode(&key, percent_encoding::NON_ALPHANUMERIC).to_string();
    let r = s
        .get(&format!("/api/v1/objects/dnstxtrecord/{enc}/"), &t)
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.json()["id"], key.as_str());
    assert_eq!(r.json()["value"], "k=rsa; p=MI/+G|end");

    // PATCH a scan level (declared), then back to inherited; non-key attributes; key fields refused.
    s.post("/api/v1/objects/", &t, hostnames(&["a.example"]))
        .await;
    let h = "/api/v1/objects/hostname/internet%7Ca.example/";
    let r = s.patch(h, &t, json!({"scan_level": 2})).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["scan_level"], 2);
    assert_eq!(r.json()["declared"], true);
    // Re-posting keeps the scan level.
    s.post("/api/v1/objects/", &t, hostnames(&["a.example"]))
        .await;
    assert_eq!(s.get(h, &t).await.json()["scan_level"], 2);
    let r = s.patch(h, &t, json!({"scan_level": null})).await;
    assert_eq!(r.json()["scan_level"], Value::Null);
    assert_eq!(r.json()["declared"], false);
    for (body, attr) in [
        (json!({"scan_level": 5}), "scan_level"),
        (json!({"scan_level": "2"}), "scan_level"),
        (json!({"name": "b.example"}), "name"),
        (json!({"colour": 1}), "colour"),
    ] {
        let r = s.patch(h, &t, body.clone()).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.attr().as_deref(), Some(attr), "{body}");
    }
    s.post(
        "/api/v1/objects/ipport/",
        &t,
        json!({"address": "192.0.2.9", "port": 443}),
    )
    .await;
    let p = "/api/v1/objects/ipport/internet%7C192.0.2.9%7CTCP%7C443/";
    let r = s
        .patch(p, &t, json!({"tls": true, "service": "https"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["tls"], true);
    assert_eq!(r.json()["service"], "https");
    // null clears a field (the original's PATCH semantics); fields not named keep their values.
    let r = s.patch(p, &t, json!({"service": null})).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["service"], Value::Null);
    assert_eq!(r.json()["tls"], true);
    let got = s.get(p, &t).await.json();
    assert_eq!(
        (got["service"].clone(), got["tls"].clone()),
        (Value::Null, json!(true))
    );
    let r = s.patch(p, &t, json!({"tls": null})).await;
    assert_eq!(r.json()["tls"], Value::Null);
    // A key field cannot be cleared either.
    let r = s.patch(p, &t, json!({"port": null})).await;
    assert_eq!(r.status, 400, "{}", r.json());
    let r = s.patch(p, &t, json!({"scan_level": 1})).await;
    assert_eq!(
        (r.status.as_u16(), r.attr().as_deref()),
        (400, Some("scan_level"))
    );

    // Bad keys are 400, missing objects 404.
    let r = s.get("/api/v1/objects/hostname/internet%7C-bad/", &t).await;
    assert_eq!(r.status, 400);
    let r = s
        .get("/api/v1/objects/hostname/internet%7Cnope.example/", &t)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");
    // DELETE detail.
    assert_eq!(s.delete(h, &t).await.status, 204);
    assert_eq!(s.get(h, &t).await.status, 404);
    assert_eq!(s.delete(h, &t).await.status, 404);
    s.stop().await;
}

#[tokio::test]
async fn list_delete_needs_ids_and_deletes_only_them() {
    let s = start(Options::default()).await;
    let t = s.token("acme", all());
    let ports: Vec<Value> = [80, 443, 22]
        .iter()
        .map(|p| json!({"address": "192.0.2.1", "port": p}))
        .collect();
    s.post("/api/v1/objects/", &t, json!({"ipport": ports}))
        .await;
    assert_eq!(s.count("acme", ObjectType::IpPort).await, 3);
    // The original read these as "delete every port".
    for q in [
        "",
        "?",
        "?pk=internet|192.0.2.1|TCP|80",
        "?id_in=x",
        "?search=192",
    ] {
        let r = s.delete(&format!("/api/v1/objects/ipport/{q}"), &t).await;
        assert_eq!(r.status, 400, "{q}");
        r.error_code();
        assert_eq!(s.count("acme", ObjectType::IpPort).await, 3, "{q}");
    }
    let r = s
        .delete(
            "/api/v1/objects/ipport/?id=internet|192.0.2.1|TCP|80&id=internet%7C192.0.2.1%7CTCP%7C443&id=internet|192.0.2.1|TCP|9",
            &t,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"deleted": 2}));
    assert_eq!(s.count("acme", ObjectType::IpPort).await, 1);
    s.stop().await;
}

#[tokio::test]
async fn nested_dns_record_delete() {
    let s = start(Options::default()).await;
    let t = s.token("acme", all());
    let body = json!({
        "dnsarecord": [
            {"hostname": "internet|a.example", "ip_address": "192.0.2.1"},
            {"hostname": "internet|a.example", "ip_address": "192.0.2.2"},
            {"hostname": "internet|b.example", "ip_address": "192.0.2.1"},
        ],
        "dnsaaaarecord": [{"hostname": "internet|a.example", "ip_address": "2001:db8::1"}],
        "dnstxtrecord": [{"hostname": "internet|a.example", "value": "a, b and c"}],
    });
    assert_eq!(s.post("/api/v1/objects/", &t, body).await.status, 201);
    let a1 = "internet|a.example|internet|192.0.2.1";
    let a2 = "internet|a.example|internet|192.0.2.2";
    let b1 = "internet|b.example|internet|192.0.2.1";
    let aaaa = "internet|a.example|internet|2001:db8::1";
    let txt = "internet|a.example||a, b and c";
    let base = "/api/v1/objects/hostname/internet%7Ca.example/dnsrecord/";

    let r = s.delete(base, &t).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.attr().as_deref(), Some("record_id"));
    let r = s.delete(&format!("{base}?record_id="), &t).await;
    assert_eq!(r.json(), json!({"deleted": 0}));
    let r = s
        .delete(
            &format!("{base}?record_id=internet|nope.example|internet|192.0.2.9"),
            &t,
        )
        .await;
    assert_eq!(r.json(), json!({"deleted": 0}));
    // Another hostname's record is never deleted through this hostname.
    let r = s.delete(&format!("{base}?record_id={b1}"), &t).await;
    assert_eq!(r.json(), json!({"deleted": 0}));
    assert_eq!(s.count("acme", ObjectType::DnsARecord).await, 3);

    // A token with only the A-record delete permission (the dns plugin's stale-record cleanup).
    let only_a = s.token("acme", json!({"objects.delete_dnsarecord": {}}));
    let r = s
        .delete(&format!("{base}?record_id={a1}&record_id={aaaa}"), &only_a)
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "permission_denied");
    assert_eq!(
        s.count("acme", ObjectType::DnsARecord).await,
        3,
        "nothing deleted"
    );
    assert_eq!(s.count("acme", ObjectType::DnsAaaaRecord).await, 1);
    let r = s
        .delete(&format!("{base}?record_id={a1},{a2}"), &only_a)
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json(), json!({"deleted": 2}));
    assert_eq!(s.count("acme", ObjectType::DnsARecord).await, 1);
    // No DNS delete permission at all: 403, even for nothing.
    let none = s.token("acme", json!({"objects.delete_hostname": {}}));
    let r = s.delete(&format!("{base}?record_id={aaaa}"), &none).await;
    assert_eq!(r.status, 403);
    // A key with commas is taken whole when it names a record.
    let enc = percent_encoding::utf8_percent_encode(txt, percent_encoding::NON_ALPHANUMERIC);
    let r = s
        .delete(&format!("{base}?record_id={enc}&record_id={aaaa}"), &t)
        .await;
    assert_eq!(r.json(), json!({"deleted": 2}));
    assert_eq!(s.count("acme", ObjectType::DnsTxtRecord).await, 0);
    assert_eq!(
        s.count("acme", ObjectType::DnsARecord).await,
        1,
        "b.example's record stays"
    );
    s.stop().await;
}

#[tokio::test]
async fn url_objects_have_routes_permissions_validation_and_canonical_keys() {
    let s = start(Options::default()).await;
    let t = s.token(
        "acme",
        json!({"objects.add_url": {}, "objects.view_url": {}, "objects.delete_url": {}}),
    );
    let r = s
        .post(
            "/api/v1/objects/url/",
            &t,
            json!([{"network": "internet", "url": "HTTPS://Example.com:443/login#x"}]),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(r.json()[0]["id"], "internet|https://example.com/login");
    assert_eq!(r.json()[0]["url"], "https://example.com/login");
    assert!(
        r.json()[0].get("scan_level").is_none(),
        "a URL has no level of its own"
    );
    // Its host was created, and the URL is found by key and by filter.
    assert_eq!(s.count("acme", ObjectType::Hostname).await, 1);
    let key = urlencode("internet|https://example.com/login");
    let r = s.get(&format!("/api/v1/objects/url/{key}/"), &t).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let r = s
        .get(
            &format!(
                "/api/v1/objects/url/?url={}",
                urlencode("https://example.com/login")
            ),
            &t,
        )
        .await;
    assert_eq!(r.json()["count"], 1, "{}", r.json());
    // Bad URLs are a 400 naming the field; nothing is written.
    for (bad, attr) in [
        (json!([{"url": "ftp://example.com/"}]), "[0].url"),
        (json!([{"url": "https://user:pw@example.com/"}]), "[0].url"),
        (json!([{"url": "https://exa mple.com/"}]), "[0].url"),
        (json!([{"url": "https://bad_host.example/"}]), "[0].url"),
        (json!([{"url": "/relative"}]), "[0].url"),
        (
            json!([{"url": "https://example.com/", "scan": 1}]),
            "[0].scan",
        ),
    ] {
        let r = s.post("/api/v1/objects/url/", &t, bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.json());
        assert_eq!(r.attr().as_deref(), Some(attr), "{bad}: {}", r.json());
    }
    let r = s
        .post(
            "/api/v1/objects/",
            &t,
            json!({"url": [{"url": "gopher://x.example/"}]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.attr().as_deref(), Some("url[0].url"), "{}", r.json());
    assert_eq!(s.count("acme", ObjectType::Url).await, 1);
    // A URL's scan level cannot be set: it is its host's.
    let op = s.operator("acme", all());
    let r = s
        .patch(
            &format!("/api/v1/objects/url/{key}/"),
            &op,
            json!({"scan_level": 2}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.json());
    // Without objects.add_url the write is refused.
    let other = s.token("acme", json!({"objects.add_hostname": {}}));
    let r = s
        .post(
            "/api/v1/objects/",
            &other,
            json!({"url": [{"url": "https://a.example/"}]}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.json());
    let r = s
        .delete(&format!("/api/v1/objects/url/?id={key}"), &t)
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(s.count("acme", ObjectType::Url).await, 0);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn findings_may_name_their_subject_with_object_as_the_manual_does() {
    let s = start(Options::default()).await;
    let (t, _) = s.token_with_task("acme", json!({"objects.add_finding": {}}));
    let op = s.operator("acme", all());
    assert_eq!(
        s.post("/api/v1/objects/", &op, hostnames(&["shop.example"]))
            .await
            .status,
        201
    );
    // The ssl-checker example's write, as written.
    let r = s
        .post(
            "/api/v1/objects/",
            &t,
            json!({"finding": [{
                "finding_type": "SSL_EXPIRY_WARNING",
                "object": "internet|shop.example",
                "description": "SSL certificate expires in 12 days"
            }]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let f = &r.json()["finding"][0];
    assert_eq!(f["id"], "SSL_EXPIRY_WARNING|internet|shop.example");
    assert_eq!(f["hostname"], "internet|shop.example");
    // Unknown, ambiguous and malformed subjects: 400 naming the field; nothing written.
    for (body, attr) in [
        (
            json!({"finding_type": "X", "object": "internet|nowhere.example"}),
            "finding[0].object",
        ),
        (
            json!({"finding_type": "X", "object": "internet|192.0.2.99"}),
            "finding[0].object",
        ),
        (
            json!({"finding_type": "X", "object": "internet|shop.example", "hostname": "shop.example"}),
            "finding[0].object",
        ),
        (
            json!({"finding_type": "X", "object": "internet|shop.example|TCP|443"}),
            "finding[0].object",
        ),
        (
            json!({"finding_type": "X", "object": ["internet|shop.example"]}),
            "finding[0].object",
        ),
    ] {
        let r = s
            .post("/api/v1/objects/", &t, json!({"finding": [body.clone()]}))
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.json());
        assert_eq!(r.attr().as_deref(), Some(attr), "{body}: {}", r.json());
    }
    assert_eq!(s.count("acme", ObjectType::Finding).await, 1);
    assert_eq!(
        s.count("acme", ObjectType::Hostname).await,
        1,
        "no subject was created"
    );
    // On the per-type route too, and an object written in the same request counts.
    let r = s
        .post(
            "/api/v1/objects/finding/",
            &t,
            json!({"finding_type": "X", "object": "internet|nowhere.example"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.json());
    assert_eq!(r.attr().as_deref(), Some("object"), "{}", r.json());
    let r = s
        .post(
            "/api/v1/objects/",
            &op,
            json!({
                "finding": [{"finding_type": "X", "object": "internet|new.example"}],
                "hostname": [{"name": "new.example"}]
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
}

/// Every answer with objects is canonical JSON: parsed and serialized again (a map's keys sorted,
/// no key twice) it is the same bytes, for a bulk write of several types (a hostname with its DNS
/// record), a PATCH, a single create, a list create, a list and a detail (with an inherited level).
#[tokio::test]
async fn object_answers_are_canonical_json() {
    let s = start(Options::default()).await;
    let (t, _) = s.token_with_task("acme", all());
    let canonical = |what: &str, r: &Resp| {
        assert!(r.status.is_success(), "{what}: {:?} {}", r.status, r.json());
        let raw = std::str::from_utf8(&r.bytes).expect("UTF-8");
        assert_eq!(raw, serde_json::to_string(&r.json()).unwrap(), "{what}");
    };
    let body = json!({
        "ipaddress": [{"network": "internet", "address": "192.0.2.7"}],
        "hostname": [{"name": "b.example"}, {"name": "a.example"}],
        "dnsarecord": [{"hostname": "internet|a.example", "ip_address": "internet|192.0.2.7", "ttl": 60}],
    });
    let r = s.post("/api/v1/objects/", &t, body).await;
    canonical("bulk write", &r);
    let v = r.json();
    assert_eq!(v["hostname"][1]["dns_records"][0]["ttl"], 60, "{v}");
    // A level declared on the address reaches the hostname through its A record.
    let r = s
        .patch(
            "/api/v1/objects/ipaddress/internet%7C192.0.2.7/",
            &t,
            json!({"scan_level": 2}),
        )
        .await;
    canonical("patch", &r);
    let r = s
        .post(
            "/api/v1/objects/hostname/",
            &t,
            json!({"name": "c.example"}),
        )
        .await;
    canonical("single create", &r);
    let r = s
        .post(
            "/api/v1/objects/hostname/",
            &t,
            json!([{"name": "d.example"}]),
        )
        .await;
    canonical("list create", &r);
    canonical(
        "list",
        &s.get("/api/v1/objects/hostname/?limit=2", &t).await,
    );
    let r = s
        .get("/api/v1/objects/hostname/internet%7Ca.example/", &t)
        .await;
    canonical("detail", &r);
    let v = r.json();
    assert_eq!(v["inherited_from"]["object_type"], "ipaddress", "{v}");
    assert_eq!(v["dns_records"][0]["ttl"], 60, "{v}");
}

#[tokio::test]
async fn the_original_dns_plugins_writes_and_reads_work() {
    let s = start(Options::default()).await;
    // The original's dns permissions (plugins.json): view/add/change hostname and address, and
    // add/delete/view of every record type.
    let mut perms = serde_json::Map::new();
    for p in ["view", "add", "change"] {
        perms.insert(format!("objects.{p}_hostname"), json!({}));
        perms.insert(format!("objects.{p}_ipaddress"), json!({}));
    }
    for ty in ["a", "aaaa", "caa", "cname", "mx", "ns", "ptr", "srv", "txt"] {
        for p in ["add", "delete", "view"] {
            perms.insert(format!("objects.{p}_dns{ty}record"), json!({}));
        }
    }
    let (t, _) = s.token_with_task("acme", Value::Object(perms));
    // First the hostnames and addresses ("make sure these exist"), `root` included.
    let r = s
        .post(
            "/api/v1/objects/",
            &t,
            json!({
                "hostname": [
                    {"network": "internet", "name": "example.test"},
                    {"network": "internet", "name": "mx.example.test"},
                    {"network": "internet", "name": "example.test", "root": true}
                ],
                "ipaddress": [{"network": "internet", "address": "192.0.2.10"}]
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(r.json()["hostname"][0]["dns_records"], json!([]));
    // Then the records, each with the `value` the original's API drops.
    let r = s
        .post(
            "/api/v1/objects/",
            &t,
            json!({
                "dnsarecord": [{"hostname": "internet|example.test", "value": "192.0.2.10", "ttl": 300, "ip_address": "internet|192.0.2.10"}],
                "dnsmxrecord": [{"hostname": "internet|example.test", "value": "10 mx.example.test.", "ttl": 300, "mail_server": "internet|mx.example.test", "preference": 10}],
                "dnstxtrecord": [{"hostname": "internet|example.test", "value": "v=spf1 -all", "ttl": 300}]
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert!(r.json()["dnsarecord"][0].get("value").is_none());
    // Posting the hostname again answers with its records, as the plugin reads them.
    let r = s
        .post(
            "/api/v1/objects/",
            &t,
            json!({"hostname": [{"network": "internet", "name": "example.test"}], "ipaddress": []}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let recs = r.json()["hostname"][0]["dns_records"].clone();
    let ids: Vec<(&str, &str)> = recs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["object_type"].as_str().unwrap(),
                r["id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        vec![
            ("dnsarecord", "internet|example.test|internet|192.0.2.10"),
            (
                "dnsmxrecord",
                "internet|example.test|10|internet|mx.example.test"
            ),
            ("dnstxtrecord", "internet|example.test||v=spf1 -all"),
        ]
    );
    assert_eq!(recs[0]["hostname"], "internet|example.test");
    assert_eq!(recs[0]["ttl"], 300);
    // GET of a list and of one hostname show them too; other hostnames have none.
    let r = s
        .get("/api/v1/objects/hostname/?name=example.test", &t)
        .await;
    assert_eq!(r.json()["results"][0]["dns_records"], recs);
    let r = s
        .get("/api/v1/objects/hostname/internet%7Cexample.test/", &t)
        .await;
    assert_eq!(r.json()["dns_records"], recs);
    let r = s
        .get("/api/v1/objects/hostname/?name=mx.example.test", &t)
        .await;
    assert_eq!(r.json()["results"][0]["dns_records"], json!([]));
    // A caller sees only the record types it may view.
    let narrow = s.token(
        "acme",
        json!({"objects.view_hostname": {}, "objects.view_dnstxtrecord": {}}),
    );
    let r = s
        .get("/api/v1/objects/hostname/internet%7Cexample.test/", &narrow)
        .await;
    let v = r.json();
    let only: Vec<&str> = v["dns_records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["object_type"].as_str().unwrap())
        .collect();
    assert_eq!(only, vec!["dnstxtrecord"]);
    // What a GET returns can be posted back.
    let back = s
        .get("/api/v1/objects/hostname/internet%7Cexample.test/", &t)
        .await
        .json();
    assert_eq!(
        s.post("/api/v1/objects/", &t, json!({"hostname": [back]}))
            .await
            .status,
        201
    );
    // `value` is tolerated only where the original's plugins send it.
    let r = s
        .post(
            "/api/v1/objects/",
            &t,
            json!({"ipaddress": [{"address": "192.0.2.11", "value": "192.0.2.11"}]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.attr().as_deref(), Some("ipaddress[0].value"));
    let r = s
        .post(
            "/api/v1/objects/",
            &t,
            json!({"dnsarecord": [{"hostname": "example.test", "ip_address": "192.0.2.10", "value": "x", "colour": "red"}]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.attr().as_deref(), Some("dnsarecord[0].colour"));
}

/// Inherited scan levels over the API, on both stores: a plugin's bulk upload of DNS records gives
/// the address the hostname's declared level at once, the JSON says where it comes from, a filter
/// by `scan_level` sees it, lowering the hostname lowers it, and `POST /levels/recompute/`
/// (operators only) finds nothing left to change.
#[tokio::test]
async fn inherited_levels_and_the_recompute_route() {
    for backend in [Backend::Memory, Backend::Sled] {
        let s = start(Options {
            backend,
            ..Options::default()
        })
        .await;
        let op = s.operator("acme", all());
        let r = s
            .post("/api/v1/objects/", &op, hostnames(&["example.com"]))
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        let r = s
            .patch(
                "/api/v1/objects/hostname/internet|example.com/",
                &op,
                json!({"scan_level": 2}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json());
        let (task, _) = s.token_with_task("acme", all());
        let body = json!({
            "dnsarecord": [{"hostname": "internet|example.com", "ip_address": "internet|192.0.2.1"}],
            "dnsnsrecord": [{"hostname": "internet|example.com", "name_server": "internet|ns1.example.net"}],
        });
        let r = s.post("/api/v1/objects/", &task, body).await;
        assert_eq!(r.status, 201, "{}", r.json());
        let ip = s
            .get("/api/v1/objects/ipaddress/internet|192.0.2.1/", &op)
            .await
            .json();
        assert_eq!(ip["scan_level"], 2, "{backend:?}: {ip}");
        assert_eq!(ip["declared"], false);
        assert_eq!(
            ip["inherited_from"],
            json!({"object_type": "hostname", "id": "internet|example.com"})
        );
        let ns = s
            .get("/api/v1/objects/hostname/internet|ns1.example.net/", &op)
            .await
            .json();
        assert_eq!(
            (ns["scan_level"].clone(), ns["declared"].clone()),
            (json!(1), json!(false))
        );
        let root = s
            .get("/api/v1/objects/hostname/internet|example.com/", &op)
            .await
            .json();
        assert_eq!(root["inherited_from"], Value::Null);
        // What a GET returns can be posted back (inherited_from is a response-only field).
        let r = s.post("/api/v1/objects/ipaddress/", &op, ip.clone()).await;
        assert_eq!(r.status, 201, "{}", r.json());
        // The objects a schedule's set would pick: filtering by scan level sees inherited levels.
        let r = s.get("/api/v1/objects/hostname/?scan_level=1", &op).await;
        assert_eq!(r.status, 200, "{}", r.json());
        assert_eq!(r.json()["count"], 1, "{}", r.json());
        // Lowering the declared hostname lowers what it gave.
        let r = s
            .patch(
                "/api/v1/objects/hostname/internet|example.com/",
                &op,
                json!({"scan_level": 0}),
            )
            .await;
        assert_eq!(r.status, 200);
        let ip = s
            .get("/api/v1/objects/ipaddress/internet|192.0.2.1/", &op)
            .await
            .json();
        assert_eq!(ip["scan_level"], 0);
        let ns = s
            .get("/api/v1/objects/hostname/internet|ns1.example.net/", &op)
            .await
            .json();
        assert_eq!(ns["scan_level"], 0);
        // The recompute route.
        let r = s
            .call("POST", "/api/v1/levels/recompute/", Some(&op), None)
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
        assert_eq!(r.json(), json!({"changed": 0}));
        let r = s
            .post("/api/v1/levels/recompute/?org=other", &op, json!({}))
            .await;
        assert_eq!(r.status, 400, "unknown parameters are refused");
        assert_eq!(r.attr().as_deref(), Some("org"));
        let r = s
            .call("POST", "/api/v1/levels/recompute/", Some(&task), None)
            .await;
        assert_eq!(r.status, 403, "a task token never recomputes levels");
        r.error_code();
        let viewer = s.operator("acme", json!({"objects.view_hostname": {}}));
        let r = s
            .call("POST", "/api/v1/levels/recompute/", Some(&viewer), None)
            .await;
        assert_eq!(r.status, 403);
        assert!(
            String::from_utf8_lossy(&r.bytes).contains("objects.can_set_scan_level"),
            "{}",
            String::from_utf8_lossy(&r.bytes)
        );
        let scoped = s.operator(
            "acme",
            json!({"objects.can_set_scan_level": {"pks": ["internet|example.com"]}}),
        );
        let r = s
            .call("POST", "/api/v1/levels/recompute/", Some(&scoped), None)
            .await;
        assert_eq!(
            r.status, 403,
            "a token scoped to some objects cannot recompute all"
        );
        let r = s.get("/api/v1/levels/recompute/", &op).await;
        assert_eq!(r.status, 405);
        s.stop().await;
    }
}
