//! Failures: API errors make the plugins exit non-zero with the API's message (the original's
//! scripts swallowed them), the token never appears in any output, transient errors are retried,
//! deletes always name their ids, and the token is never sent to another origin.

use serde_json::json;

use crate::common::{FakeApi, golden_dir, run};

const TOKEN: &str = "secret-token-never-printed";

fn one_xml() -> String {
    golden_dir()
        .join("nmap/one.xml")
        .to_string_lossy()
        .into_owned()
}

fn list_page() -> (u16, String) {
    (
        200,
        json!({"count": 0, "next": null, "previous": null, "results": []}).to_string(),
    )
}

#[test]
fn a_403_from_the_api_fails_the_plugin_with_its_message() {
    let api = FakeApi::start(|r, _| {
        if r.method == "GET" {
            return list_page();
        }
        (
            403,
            json!({"type": "client_error", "errors": [{"code": "permission_denied",
                "detail": format!("You do not have permission to perform this action (objects.add_ipport). {TOKEN}"), "attr": null}]})
            .to_string(),
        )
    });
    let base = api.base();
    let r = run(
        &["parse-nmap", "--file", &one_xml()],
        &[("OPENKAT_API", &base), ("OPENKAT_TOKEN", TOKEN)],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("HTTP 403 Forbidden"), "{}", r.stderr);
    assert!(r.stderr.contains("objects.add_ipport"), "{}", r.stderr);
    assert!(r.stderr.contains("POST"), "{}", r.stderr);
    assert!(
        !r.stderr.contains(TOKEN) && !r.stdout.contains(TOKEN),
        "the token leaked: {r:?}"
    );
    assert!(
        r.stdout.is_empty(),
        "no output file on failure: {}",
        r.stdout
    );
    for req in api.requests() {
        assert_eq!(
            req.authorization.as_deref(),
            Some(format!("Token {TOKEN}").as_str())
        );
    }
}

#[test]
fn a_500_fails_and_transient_errors_are_retried() {
    // A 500 on the file's metadata.
    let api = FakeApi::start(|_, _| {
        (500, "{\"type\":\"server_error\",\"errors\":[{\"code\":\"error\",\"detail\":\"boom\",\"attr\":null}]}".into())
    });
    let base = api.base();
    let r = run(
        &["parse-nmap", "17"],
        &[("OPENKAT_API", &base), ("OPENKAT_TOKEN", TOKEN)],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("HTTP 500")
            && r.stderr.contains("boom")
            && r.stderr.contains("/file/17/"),
        "{}",
        r.stderr
    );
    assert_eq!(api.requests().len(), 1, "a 500 is not retried");

    // 503 twice, then success.
    let api = FakeApi::start(|r, i| {
        if r.method == "GET" {
            list_page()
        } else if i < 2 {
            (503, String::new())
        } else {
            (201, "{}".into())
        }
    });
    let base = api.base();
    let r = run(
        &["parse-nmap", "--file", &one_xml(), "--no-cleanup"],
        &[("OPENKAT_API", &base), ("OPENKAT_TOKEN", TOKEN)],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let posts: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 3);
    let body: serde_json::Value = serde_json::from_str(&posts[2].body).unwrap();
    assert_eq!(body["ipport"][0]["port"], 3306);
    assert_eq!(body["finding"][0]["finding_type"], "KAT-OPEN-DATABASE-PORT");
}

#[test]
fn stale_ports_are_deleted_by_id_only() {
    let api = FakeApi::start(|r, _| {
        if r.method == "GET" && r.target.starts_with("/api/v1/objects/ipport/") {
            return (
                200,
                json!({"count": 2, "next": null, "previous": null, "results": [
                    {"id": "internet|192.0.2.10|TCP|22", "address": "internet|192.0.2.10", "protocol": "TCP", "port": 22},
                    {"id": "internet|192.0.2.10|TCP|3306", "address": "internet|192.0.2.10", "protocol": "TCP", "port": 3306}
                ]})
                .to_string(),
            );
        }
        if r.method == "DELETE" {
            return (200, "{\"deleted\": 1}".into());
        }
        (201, "{}".into())
    });
    let base = api.base();
    let r = run(
        &["parse-nmap", "--file", &one_xml()],
        &[("OPENKAT_API", &base), ("OPENKAT_TOKEN", TOKEN)],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let reqs = api.requests();
    let get = reqs.iter().find(|r| r.method == "GET").unwrap();
    assert!(
        get.target.contains("address=internet%7C192.0.2.10"),
        "{}",
        get.target
    );
    // 22 was not in this scan's range (3306 only): it is kept; nothing else is deleted.
    let deletes: Vec<_> = reqs.iter().filter(|r| r.method == "DELETE").collect();
    assert!(deletes.is_empty(), "{deletes:?}");
    assert!(!reqs.iter().any(|r| r.target.contains("pk=")));
}

#[test]
fn the_token_only_goes_to_the_api_origin() {
    let elsewhere = FakeApi::start(|_, _| (200, "<nmaprun/>".into()));
    let other = format!("http://{}/steal/", elsewhere.addr);
    let xml = std::fs::read_to_string(one_xml()).unwrap();
    let api = FakeApi::start(move |r, _| {
        if r.target == "/api/v1/file/5/" {
            return (
                200,
                json!({"id": 5, "file": other, "type": "nmap"}).to_string(),
            );
        }
        if r.target == "/api/v1/file/5/download/" {
            return (200, xml.clone());
        }
        if r.method == "GET" {
            return list_page();
        }
        (201, "{}".into())
    });
    let base = api.base();
    let r = run(
        &["parse-nmap", "5"],
        &[("OPENKAT_API", &base), ("OPENKAT_TOKEN", TOKEN)],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(elsewhere.requests().is_empty(), "the token went elsewhere");
    assert!(
        api.requests()
            .iter()
            .any(|r| r.target == "/api/v1/file/5/download/")
    );
    assert!(r.stderr.contains("not on the API's origin"), "{}", r.stderr);
}

#[test]
fn configuration_errors_are_usage_errors() {
    let r = run(&["parse-nmap", "5"], &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("OPENKAT_API is not set"), "{}", r.stderr);
    let r = run(
        &["tls", "localhost"],
        &[("OPENKAT_API", "http://127.0.0.1:9/api/v1")],
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("OPENKAT_TOKEN is not set"),
        "{}",
        r.stderr
    );
    let r = run(
        &["parse-nmap", "x1"],
        &[
            ("OPENKAT_API", "http://127.0.0.1:9/api/v1"),
            ("OPENKAT_TOKEN", TOKEN),
        ],
    );
    assert_eq!(r.code, 2);
    // An API that is not there: a clear failure after the retries, never the token.
    let r = run(
        &["parse-nmap", "--file", &one_xml(), "--no-cleanup"],
        &[
            ("OPENKAT_API", "http://127.0.0.1:9/api/v1"),
            ("OPENKAT_TOKEN", TOKEN),
        ],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("127.0.0.1:9") && r.stderr.contains("after 3 attempts"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(TOKEN));
}

#[test]
fn dns_fails_on_an_api_error() {
    let api = FakeApi::start(|_, _| (500, "oops".into()));
    let base = api.base();
    let r = run(
        &["dns", "localhost", "--nameserver", "127.0.0.1:9"],
        &[("OPENKAT_API", &base), ("OPENKAT_TOKEN", TOKEN)],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("HTTP 500") && r.stderr.contains("oops"),
        "{}",
        r.stderr
    );
}
