//! The negative token suite over HTTP: every forged, stale, misdirected or revoked token gets a 401
//! and reads and writes nothing. Plus the kat-core token conformance suite for both algorithms.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use kat_core::clock::Timestamp;
use kat_core::memory::MemoryTaskStore;
use kat_core::object::ObjectType;
use kat_core::token::TokenAuthority;
use kat_http::JwtAuthority;

use crate::common::*;

fn claims_json(org_code: &str) -> Value {
    let now = Timestamp::now().as_secs();
    let task = uuid::Uuid::new_v4();
    json!({
        "iss": "kat", "aud": "kat-http", "sub": format!("task:{task}"), "task_id": task.to_string(),
        "org": org_code, "plugin_id": "dns", "permissions": all(),
        "iat": now, "nbf": now, "exp": now + 600, "jti": uuid::Uuid::new_v4().to_string(),
    })
}

fn hs(header: Header, claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn ed(header: Header, claims: &Value, pem: &str) -> String {
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn unsigned(header: Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
    )
}

fn with(mut c: Value, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    f(c.as_object_mut().unwrap());
    c
}

/// Each bad token: 401 on a read and on a write, and the write stored nothing.
async fn assert_refused(s: &Server, name: &str, token: &str) {
    let r = s
        .post("/api/v1/objects/", token, hostnames(&["forged.example"]))
        .await;
    assert_eq!(
        r.status,
        401,
        "{name}: write got {}",
        String::from_utf8_lossy(&r.bytes)
    );
    assert_eq!(r.error_code(), "authentication_failed", "{name}");
    let r = s.get("/api/v1/objects/hostname/", token).await;
    assert_eq!(r.status, 401, "{name}: read");
    assert!(
        !String::from_utf8_lossy(&r.bytes).contains("example"),
        "{name}: nothing read"
    );
    assert_eq!(
        s.count("victim", ObjectType::Hostname).await,
        0,
        "{name}: nothing written"
    );
}

#[tokio::test]
async fn forged_and_invalid_tokens_hs256_server() {
    let s = start(Options::default()).await;
    let now = Timestamp::now().as_secs();
    let good = claims_json("victim");
    // Sanity: the same construction with the right key works.
    let ok_token = hs(Header::new(Algorithm::HS256), &good, SECRET);
    let r = s.get("/api/v1/objects/hostname/", &ok_token).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));

    let mut kid = Header::new(Algorithm::HS256);
    kid.kid = Some("../../../../dev/null".into());
    let mut jku = Header::new(Algorithm::HS256);
    jku.jku = Some("http://127.0.0.1:1/keys".into());
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            unsigned(json!({"alg": "none", "typ": "JWT"}), &good),
        ),
        ("alg None", unsigned(json!({"alg": "None"}), &good)),
        (
            "EdDSA token to an HS256 verifier",
            ed(Header::new(Algorithm::EdDSA), &good, ED_PRIVATE),
        ),
        (
            "HS384 with the right secret",
            hs(Header::new(Algorithm::HS384), &good, SECRET),
        ),
        (
            "wrong secret",
            hs(
                Header::new(Algorithm::HS256),
                &good,
                b"another-secret-another-secret-0000",
            ),
        ),
        ("kid trick with the empty key", {
            let mut h = kid.clone();
            h.kid = Some("".into());
            hs(h, &good, b"")
        }),
        ("kid path trick", hs(kid, &good, b"")),
        ("jku header", hs(jku, &good, SECRET)),
        (
            "missing exp",
            hs(
                Header::new(Algorithm::HS256),
                &with(good.clone(), |m| {
                    m.remove("exp");
                }),
                SECRET,
            ),
        ),
        (
            "string exp",
            hs(
                Header::new(Algorithm::HS256),
                &with(good.clone(), |m| {
                    m.insert("exp".into(), json!((now + 600).to_string()));
                }),
                SECRET,
            ),
        ),
        (
            "string nbf",
            hs(
                Header::new(Algorithm::HS256),
                &with(good.clone(), |m| {
                    m.insert("nbf".into(), json!(now.to_string()));
                }),
                SECRET,
            ),
        ),
        (
            "float exp",
            hs(
                Header::new(Algorithm::HS256),
                &with(good.clone(), |m| {
                    m.insert("exp".into(), json!(now as f64 + 600.5));
                }),
                SECRET,
            ),
        ),
        (
            "expired",
            hs(
                Header::new(Algorithm::HS256),
                &with(good.clone(), |m| {
                    m.insert("exp".into(), json!(now - 60));
                    m.insert("iat".into(), json!(now - 900));
                    m.insert("nbf".into(), json!(now - 900));
                }),
                SECRET,
            ),
        ),
        (
            "not yet valid",
            hs(
                Header::new(Algorithm::HS256),
                &with(good.clone(), |m| {
                    m.insert("nbf".into(), json!(now + 600));
                }),
                SECRET,
            ),
        ),
        (
            "wrong aud",
            hs(
                Header::new(Algorithm::HS256),
                &with(good.clone(), |m| {
                    m.insert("aud".into(), json!("someone-else"));
                }),
                SECRET,
            ),
        ),
        (
            "aud list",
            hs(
                Header::new(Algorithm::HS256),
                &with(good.clone(), |m| {
                    m.insert("aud".into(), json!(["kat-http", "x"]));
                }),
                SECRET,
            ),
        ),
        (
            "wrong iss",
            hs(
                Header::new(Algorithm::HS256),
                &with(good.clone(), |m| {
                    m.insert("iss".into(), json!("evil"));
                }),
                SECRET,
            ),
        ),
        (
            "missing task_id",
            hs(
                Header::new(Algorithm::HS256),
                &with(good.clone(), |m| {
                    m.remove("task_id");
                }),
                SECRET,
            ),
        ),
        (
            "missing permissions",
            hs(
                Header::new(Algorithm::HS256),
                &with(good.clone(), |m| {
                    m.remove("permissions");
                }),
                SECRET,
            ),
        ),
        (
            "null org",
            hs(
                Header::new(Algorithm::HS256),
                &with(good.clone(), |m| {
                    m.insert("org".into(), Value::Null);
                }),
                SECRET,
            ),
        ),
        (
            "null jti",
            hs(
                Header::new(Algorithm::HS256),
                &with(good.clone(), |m| {
                    m.insert("jti".into(), Value::Null);
                }),
                SECRET,
            ),
        ),
        (
            "unknown claim",
            hs(
                Header::new(Algorithm::HS256),
                &with(good.clone(), |m| {
                    m.insert("admin".into(), json!(true));
                }),
                SECRET,
            ),
        ),
        (
            "sub of another task",
            hs(
                Header::new(Algorithm::HS256),
                &with(good.clone(), |m| {
                    m.insert(
                        "sub".into(),
                        json!(format!("task:{}", uuid::Uuid::new_v4())),
                    );
                }),
                SECRET,
            ),
        ),
        (
            "unknown permission",
            hs(
                Header::new(Algorithm::HS256),
                &with(good.clone(), |m| {
                    m.insert("permissions".into(), json!({"objects.add_everything": {}}));
                }),
                SECRET,
            ),
        ),
        (
            "20 KiB token",
            hs(
                Header::new(Algorithm::HS256),
                &with(good.clone(), |m| {
                    m.insert("plugin_id".into(), json!("x".repeat(20_000)));
                }),
                SECRET,
            ),
        ),
        ("garbage", "not-a-jwt".into()),
        ("two parts", "abc.def".into()),
    ];
    for (name, token) in &cases {
        assert_refused(&s, name, token).await;
    }

    // Revocation: valid until revoked, refused after, others unaffected.
    let c = claims_json("victim");
    let t = hs(Header::new(Algorithm::HS256), &c, SECRET);
    assert_eq!(s.get("/api/v1/objects/hostname/", &t).await.status, 200);
    s.auth
        .revoke(c["jti"].as_str().unwrap(), c["exp"].as_i64().unwrap())
        .await
        .unwrap();
    assert_refused(&s, "revoked jti", &t).await;
    assert_eq!(
        s.get("/api/v1/objects/hostname/", &ok_token).await.status,
        200
    );

    // Header problems.
    let r = s.call("GET", "/api/v1/objects/hostname/", None, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "not_authenticated");
    for header in [
        "Not a token",
        "Token",
        "Basic dXNlcjpwYXNz",
        "Token a b",
        "Bearer",
    ] {
        let req = http::Request::builder()
            .uri(s.url("/api/v1/objects/hostname/"))
            .header("authorization", header)
            .body(full_body(""))
            .unwrap();
        let r = s.send(req).await;
        assert_eq!(r.status, 401, "{header}");
        assert_eq!(r.error_code(), "authentication_failed", "{header}");
    }
    // Bearer works like Token.
    let req = http::Request::builder()
        .uri(s.url("/api/v1/objects/hostname/"))
        .header("authorization", format!("Bearer {ok_token}"))
        .body(full_body(""))
        .unwrap();
    assert_eq!(s.send(req).await.status, 200);
    // A 1 MiB token header is refused before any parsing (hyper's 431 for the head).
    let huge = format!(
        "GET /api/v1/objects/hostname/ HTTP/1.1\r\nHost: x\r\nAuthorization: Token {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let resp = s.raw(huge.as_bytes()).await;
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "{}",
        &resp[..resp.len().min(200)]
    );
    assert_eq!(s.count("victim", ObjectType::Hostname).await, 0);
    s.stop().await;
}

#[tokio::test]
async fn key_confusion_on_an_eddsa_server() {
    let s = start(Options {
        alg: Alg::EdDsa,
        ..Options::default()
    })
    .await;
    let good = claims_json("victim");
    let ok_token = ed(Header::new(Algorithm::EdDSA), &good, ED_PRIVATE);
    assert_eq!(
        s.get("/api/v1/objects/hostname/", &ok_token).await.status,
        200
    );
    let cases: Vec<(&str, String)> = vec![
        // The classic confusion: HMAC keyed with the server's public key.
        (
            "HS256 keyed with the public PEM",
            hs(Header::new(Algorithm::HS256), &good, ED_PUBLIC.as_bytes()),
        ),
        (
            "HS256 with the tests' secret",
            hs(Header::new(Algorithm::HS256), &good, SECRET),
        ),
        (
            "EdDSA with another key",
            ed(Header::new(Algorithm::EdDSA), &good, ED2_PRIVATE),
        ),
        ("alg none", unsigned(json!({"alg": "none"}), &good)),
    ];
    for (name, token) in &cases {
        assert_refused(&s, name, token).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn conformance_suite_for_both_algorithms() {
    let hs = JwtAuthority::hs256(SECRET, Arc::new(MemoryTaskStore::default())).unwrap();
    kat_core::conformance::tokens::run_all(&hs).await.unwrap();
    let ed = JwtAuthority::ed25519(
        ED_PRIVATE.as_bytes(),
        ED_PUBLIC.as_bytes(),
        Arc::new(MemoryTaskStore::default()),
    )
    .unwrap();
    kat_core::conformance::tokens::run_all(&ed).await.unwrap();
    assert_eq!(hs.algorithm(), "HS256");
    assert_eq!(ed.algorithm(), "EdDSA");
    // Construction refuses short secrets and mismatched key pairs.
    assert!(JwtAuthority::hs256(&[1u8; 31], Arc::new(MemoryTaskStore::default())).is_err());
    assert!(
        JwtAuthority::ed25519(
            ED_PRIVATE.as_bytes(),
            ED2_PUBLIC.as_bytes(),
            Arc::new(MemoryTaskStore::default())
        )
        .is_err()
    );
    assert!(
        JwtAuthority::ed25519(
            b"junk",
            ED_PUBLIC.as_bytes(),
            Arc::new(MemoryTaskStore::default())
        )
        .is_err()
    );
}

#[tokio::test]
async fn operator_tokens_work_with_curl_style_requests() {
    let s = start(Options::default()).await;
    let t = kat_http::mint_operator_token(
        s.auth.as_ref(),
        "alice",
        org("acme"),
        kat_http::all_permissions(),
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    let r = s
        .post("/api/v1/objects/", &t, hostnames(&["op.example"]))
        .await;
    assert_eq!(r.status, 201);
    // An operator's writes have no task.
    assert!(
        s.objects
            .tasks_of(
                &org("acme"),
                ObjectType::Hostname,
                &"internet|op.example".parse().unwrap()
            )
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        kat_http::mint_operator_token(
            s.auth.as_ref(),
            "",
            org("acme"),
            kat_http::all_permissions(),
            std::time::Duration::from_secs(60)
        )
        .is_err()
    );
    assert!(
        kat_http::mint_operator_token(
            s.auth.as_ref(),
            "bob",
            org("acme"),
            kat_http::all_permissions(),
            std::time::Duration::from_secs(0)
        )
        .is_err()
    );
    s.stop().await;
}

/// Verified tokens are cached, but a revoked token and a token of a deleted organization are refused
/// on the very next request however warm the cache is, on both backends: the revocation straight in
/// the store (as the engine's recovery writes it) and through the authority, the organization deleted
/// over the API and straight in the store.
#[tokio::test]
async fn a_warm_cache_never_outlives_a_revocation_or_an_organization() {
    for backend in [Backend::Memory, Backend::Sled] {
        let s = start(Options {
            backend,
            ..Options::default()
        })
        .await;
        let admin = s.operator("acme", all());
        assert_eq!(
            s.post("/api/v1/objects/", &admin, hostnames(&["warm.example"]))
                .await
                .status,
            201
        );
        let path = "/api/v1/objects/hostname/internet%7Cwarm.example/";
        let warm = |t: String, path: &'static str| {
            let s = &s;
            async move {
                for _ in 0..20 {
                    let r = s.get(path, &t).await;
                    assert_eq!(
                        r.status,
                        200,
                        "{backend:?}: warm-up {}",
                        String::from_utf8_lossy(&r.bytes)
                    );
                }
                t
            }
        };

        // Revoked in the store itself, not through the authority.
        let c = claims_json("acme");
        let t = warm(hs(Header::new(Algorithm::HS256), &c, SECRET), path).await;
        s.tasks
            .revoke_token(c["jti"].as_str().unwrap(), c["exp"].as_i64().unwrap())
            .await
            .unwrap();
        assert_eq!(
            s.get(path, &t).await.status,
            401,
            "{backend:?}: revoked in the store"
        );
        assert_refused(&s, "revoked in the store", &t).await;

        // Revoked through the authority.
        let c = claims_json("acme");
        let t = warm(hs(Header::new(Algorithm::HS256), &c, SECRET), path).await;
        s.auth
            .revoke(c["jti"].as_str().unwrap(), c["exp"].as_i64().unwrap())
            .await
            .unwrap();
        assert_eq!(s.get(path, &t).await.status, 401, "{backend:?}: revoked");
        // Another token of the same organization is unaffected.
        assert_eq!(s.get(path, &admin).await.status, 200);

        // An organization deleted over the API: its warm tokens are refused at once.
        assert_eq!(
            s.post(
                "/api/v1/organizations/",
                &admin,
                json!({"code": "gamma", "name": "Gamma"})
            )
            .await
            .status,
            201
        );
        let op = s.operator("gamma", all());
        assert_eq!(
            s.post("/api/v1/objects/", &op, hostnames(&["warm.example"]))
                .await
                .status,
            201
        );
        let op = warm(op, path).await;
        assert_eq!(
            s.delete("/api/v1/organizations/gamma/", &admin)
                .await
                .status,
            204
        );
        let r = s.get(path, &op).await;
        assert_eq!(r.status, 401, "{backend:?}: deleted over the API");
        assert_eq!(r.error_code(), "authentication_failed");
        // An organization deleted in the store itself.
        let victim = warm(s.operator("victim", all()), "/api/v1/objects/hostname/").await;
        assert!(s.tasks.delete_organization(&org("victim")).await.unwrap());
        assert_refused(&s, "organization deleted in the store", &victim).await;
        s.stop().await;
    }
}
