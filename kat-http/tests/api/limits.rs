//! Bad input of every kind: always a 4xx in the standard shape, never a 500 or a hang.

use serde_json::json;

use kat_core::object::ObjectType;

use crate::common::*;

fn status_of(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn body_of(raw: &str) -> serde_json::Value {
    let body = raw.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

#[tokio::test]
async fn routes_methods_and_encodings() {
    let s = start(Options::default()).await;
    let t = s.token("acme", all());
    for path in [
        "/",
        "/api/v1/",
        "/api/v1/nope/",
        "/api/v1/objects/frob/",
        "/api/v2/objects/",
        "/api/v1/file/1/upload/",
    ] {
        let r = s.get(path, &t).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.error_code(), "not_found");
    }
    let r = s
        .call(
            "PUT",
            "/api/v1/objects/hostname/",
            Some(&t),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "method_not_allowed");
    assert!(r.headers["allow"].to_str().unwrap().contains("GET"));
    assert_eq!(s.get("/api/v1/objects/", &t).await.status, 405);
    // Percent-encoded non-UTF-8 in the path and the query.
    assert_eq!(
        s.get("/api/v1/objects/hostname/internet%7C%FF%FE/", &t)
            .await
            .status,
        400
    );
    let r = s.get("/api/v1/objects/hostname/?search=%C3%28", &t).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "parse_error");
    // Raw non-ASCII bytes in the request line: hyper refuses the request.
    let mut raw = b"GET /api/v1/objects/hostname/\xff\xfe/ HTTP/1.1\r\nHost: x\r\n".to_vec();
    raw.extend_from_slice(format!("Authorization: Token {t}\r\n\r\n").as_bytes());
    let resp = s.raw(&raw).await;
    assert!((400..500).contains(&status_of(&resp)), "{resp}");
    // Oversize headers: hyper's 431 before any handler runs.
    let resp = s
        .raw(
            format!(
                "GET /api/v1/objects/hostname/ HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
                "p".repeat(64 * 1024)
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(status_of(&resp), 431, "{}", &resp[..resp.len().min(100)]);
    // HEAD answers like GET without a body.
    let r = s
        .call("HEAD", "/api/v1/objects/hostname/", Some(&t), None)
        .await;
    assert_eq!(r.status, 200);
    assert!(r.bytes.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn json_bodies_bad_and_too_large() {
    let config = kat_http::ApiConfig {
        max_json_body: 64 * 1024,
        ..Default::default()
    };
    let s = start(Options {
        config,
        ..Options::default()
    })
    .await;
    let t = s.token("acme", all());
    let send = |body: Vec<u8>, ct: &'static str| {
        http::Request::builder()
            .method("POST")
            .uri(s.url("/api/v1/objects/"))
            .header("authorization", format!("Token {t}"))
            .header("content-type", ct)
            .body(full_body(body))
            .unwrap()
    };
    for (body, ct, status, code) in [
        (
            b"{\"hostname\": [".to_vec(),
            "application/json",
            400,
            "parse_error",
        ),
        (b"".to_vec(), "application/json", 400, "parse_error"),
        (
            b"{\"hostname\": [{\"name\": \"\xff.example\"}]}".to_vec(),
            "application/json",
            400,
            "parse_error",
        ),
        (
            b"{\"hostname\": []}".to_vec(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            format!("{}1{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
            "application/json",
            400,
            "parse_error",
        ),
    ] {
        let r = s.send(send(body, ct)).await;
        assert_eq!(r.status, status);
        assert_eq!(r.error_code(), code);
    }
    // Too large: declared length, and streamed (chunked) without one.
    let names: Vec<String> = (0..2000).map(|i| format!("host-{i}.example")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let big = serde_json::to_vec(&hostnames(&refs)).unwrap();
    assert!(big.len() > 64 * 1024);
    let r = s.send(send(big.clone(), "application/json")).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "too_large");
    let chunks: Vec<Result<hyper::body::Frame<bytes::Bytes>, BoxError>> = big
        .chunks(8192)
        .map(|c| Ok(hyper::body::Frame::data(bytes::Bytes::copy_from_slice(c))))
        .collect();
    use http_body_util::BodyExt;
    let streamed = http_body_util::StreamBody::new(futures::stream::iter(chunks)).boxed_unsync();
    let req = http::Request::builder()
        .method("POST")
        .uri(s.url("/api/v1/objects/"))
        .header("authorization", format!("Token {t}"))
        .header("content-type", "application/json")
        .body(streamed)
        .unwrap();
    let r = s.send(req).await;
    assert_eq!(r.status, 413);
    // A huge declared length is refused before reading (raw socket: the body never comes).
    let resp = s
        .raw(format!("POST /api/v1/objects/ HTTP/1.1\r\nHost: x\r\nAuthorization: Token {t}\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{{").as_bytes())
        .await;
    assert_eq!(status_of(&resp), 413);
    assert_eq!(body_of(&resp)["errors"][0]["code"], "too_large");
    assert_eq!(s.count("acme", ObjectType::Hostname).await, 0);
    // Just under the limit works.
    let ok: Vec<&str> = refs[..500].to_vec();
    assert_eq!(
        s.post("/api/v1/objects/", &t, hostnames(&ok)).await.status,
        201
    );
    assert_eq!(s.count("acme", ObjectType::Hostname).await, 500);
    s.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_and_stops() {
    let s = start(Options::default()).await;
    let t = s.token("acme", all());
    assert_eq!(s.get("/api/v1/objects/hostname/", &t).await.status, 200);
    let addr = s.addr;
    s.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}
