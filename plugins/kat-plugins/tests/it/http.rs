//! http-headers against HTTPS and HTTP servers the test runs on 127.0.0.1.

use kat_core::object::ObjectType;
use serde_json::json;

use crate::common::{DAY, Listener, RealApi, TestCa, closed_port, now, run, tls_server};

#[test]
fn hsts_present_missing_and_no_https() {
    let ca = TestCa::new("kat test CA");
    let api = RealApi::start();
    let token = api.target_token("http-headers", "localhost");
    let env = api.env(&token);
    let no_http = closed_port().to_string();

    // HTTPS without HSTS (and a self-signed certificate: accepted, this checks headers).
    let (cert, key) = ca.leaf(&["localhost"], now() - DAY, now() + DAY, true);
    let port = tls_server(vec![cert.clone()], key.clone_key(), None).to_string();
    let s = run(
        &[
            "http-headers",
            "localhost",
            "--https-port",
            &port,
            "--http-port",
            &no_http,
        ],
        &env,
    )
    .ok()
    .json();
    assert_eq!(s["https"]["result"]["status"], 200, "{s}");
    assert_eq!(
        api.keys(ObjectType::Finding)
            .into_iter()
            .collect::<Vec<_>>(),
        vec!["KAT-NO-HSTS|internet|localhost"]
    );

    // HTTPS with HSTS: the finding goes.
    let port = tls_server(
        vec![cert.clone()],
        key.clone_key(),
        Some("max-age=31536000; includeSubDomains"),
    )
    .to_string();
    let s = run(
        &[
            "http-headers",
            &format!("localhost:{port}"),
            "--http-port",
            &no_http,
        ],
        &env,
    )
    .ok()
    .json();
    assert_eq!(
        s["https"]["result"]["strict_transport_security"],
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(s["removed_findings"], 1, "{s}");
    assert!(api.keys(ObjectType::Finding).is_empty());

    // HSTS switched off with max-age=0 counts as none.
    let port = tls_server(vec![cert], key, Some("max-age=0")).to_string();
    run(
        &[
            "http-headers",
            "localhost",
            "--https-port",
            &port,
            "--http-port",
            &no_http,
        ],
        &env,
    )
    .ok();
    assert_eq!(api.keys(ObjectType::Finding).len(), 1);

    // Only plain HTTP answers: KAT-NO-HTTPS (and KAT-NO-HSTS stays: this run cannot judge it).
    let http = Listener::start(
        "127.0.0.1:0",
        None,
        Some(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    )
    .unwrap();
    let s = run(
        &[
            "http-headers",
            "localhost",
            "--https-port",
            &closed_port().to_string(),
            "--http-port",
            &http.port.to_string(),
            "--timeout",
            "3",
        ],
        &env,
    )
    .ok()
    .json();
    assert_eq!(s["http"]["result"]["status"], 200, "{s}");
    assert_eq!(
        api.keys(ObjectType::Finding)
            .into_iter()
            .collect::<Vec<_>>(),
        vec![
            "KAT-NO-HSTS|internet|localhost",
            "KAT-NO-HTTPS|internet|localhost"
        ]
    );
    let f = api
        .get(ObjectType::Finding, "KAT-NO-HTTPS|internet|localhost")
        .unwrap();
    assert_eq!(f["hostname"], json!("internet|localhost"));

    // Nothing answers: nothing to judge, exit 0, nothing removed.
    let s = run(
        &[
            "http-headers",
            "localhost",
            "--https-port",
            &closed_port().to_string(),
            "--http-port",
            &no_http,
            "--timeout",
            "2",
        ],
        &env,
    )
    .ok()
    .json();
    assert_eq!(s["findings"], json!([]));
    assert_eq!(api.keys(ObjectType::Finding).len(), 2);
}
