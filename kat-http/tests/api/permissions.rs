//! Permission scopes on every kind of route, organization isolation, and proof that denied requests
//! read and write nothing.

use serde_json::json;

use kat_core::object::ObjectType;

use crate::common::*;

#[tokio::test]
async fn unrestricted_and_missing_permissions() {
    let s = start(Options::default()).await;
    let admin = s.token("acme", all());
    s.post("/api/v1/objects/", &admin, hostnames(&["a.example"]))
        .await;
    // The original's test_access: a {} token is 403 on files; view_file alone lists files but
    // not networks; an empty bulk POST is 201 for any token.
    let nothing = s.token("acme", json!({}));
    let r = s.get("/api/v1/file/", &nothing).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "permission_denied");
    assert_eq!(r.json()["type"], "client_error");
    let files = s.token("acme", json!({"files.view_file": {}}));
    let r = s.get("/api/v1/file/", &files).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["count"].as_u64()),
        (200, Some(0))
    );
    assert_eq!(s.get("/api/v1/objects/network/", &files).await.status, 403);
    assert_eq!(
        s.post("/api/v1/objects/", &files, json!({})).await.status,
        201
    );
    // Bulk writes need add_<type> for every key present, even an empty list.
    let hosts = s.token("acme", json!({"objects.add_hostname": {}}));
    let r = s
        .post(
            "/api/v1/objects/",
            &hosts,
            json!({"hostname": [{"name": "b.example"}], "ipaddress": []}),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(s.count("acme", ObjectType::Hostname).await, 1);
    // Every route checks its own permission.
    for (method, path) in [
        ("GET", "/api/v1/objects/hostname/"),
        ("GET", "/api/v1/objects/hostname/internet%7Ca.example/"),
        ("PATCH", "/api/v1/objects/hostname/internet%7Ca.example/"),
        ("DELETE", "/api/v1/objects/hostname/internet%7Ca.example/"),
        ("DELETE", "/api/v1/objects/hostname/?id=internet|a.example"),
        ("GET", "/api/v1/tasks/"),
        ("POST", "/api/v1/tasks/"),
        ("GET", "/api/v1/schedules/"),
        ("POST", "/api/v1/schedules/"),
        ("GET", "/api/v1/object-sets/"),
        ("POST", "/api/v1/object-sets/"),
        ("GET", "/api/v1/plugins/"),
        ("POST", "/api/v1/plugins/dns/enable/"),
        ("GET", "/api/v1/organizations/"),
        ("GET", "/api/v1/organizations/acme/"),
        ("POST", "/api/v1/file/"),
        ("GET", "/api/v1/file/1/"),
        ("GET", "/api/v1/file/1/download/"),
        ("DELETE", "/api/v1/file/1/"),
    ] {
        let body = matches!(method, "POST" | "PATCH").then(|| json!({}));
        let r = s.call(method, path, Some(&nothing), body).await;
        assert_eq!(
            r.status,
            403,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.bytes)
        );
        assert_eq!(r.error_code(), "permission_denied");
    }
    assert_eq!(s.count("acme", ObjectType::Hostname).await, 1);
    s.stop().await;
}

#[tokio::test]
async fn pks_restrict_details_lists_and_creates() {
    let s = start(Options::default()).await;
    let admin = s.token("acme", all());
    s.post(
        "/api/v1/objects/",
        &admin,
        hostnames(&["a.example", "b.example", "c.example"]),
    )
    .await;
    let t = s.token(
        "acme",
        json!({
            "objects.view_hostname": {"pks": ["internet|a.example", "internet|c.example"]},
            "objects.add_hostname": {"pks": ["internet|d.example"]},
            "objects.delete_hostname": {"pks": ["internet|a.example"]},
        }),
    );
    assert_eq!(
        s.get("/api/v1/objects/hostname/internet%7Ca.example/", &t)
            .await
            .status,
        200
    );
    let r = s
        .get("/api/v1/objects/hostname/internet%7Cb.example/", &t)
        .await;
    assert_eq!(r.status, 403);
    // Not even existence leaks: a missing key outside pks is 403 too.
    assert_eq!(
        s.get("/api/v1/objects/hostname/internet%7Czz.example/", &t)
            .await
            .status,
        403
    );
    // Lists only show pks (the original listed everything).
    let v = s.get("/api/v1/objects/hostname/", &t).await.json();
    assert_eq!(v["count"], 2);
    let ids: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["internet|a.example", "internet|c.example"]);
    let v = s
        .get("/api/v1/objects/hostname/?id=internet|b.example", &t)
        .await
        .json();
    assert_eq!(v["count"], 0);
    let v = s
        .get("/api/v1/objects/hostname/?search=b.example", &t)
        .await
        .json();
    assert_eq!(v["count"], 0);
    // Creates: only listed keys.
    let r = s
        .post(
            "/api/v1/objects/",
            &t,
            hostnames(&["d.example", "e.example"]),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        s.count("acme", ObjectType::Hostname).await,
        3,
        "all or nothing"
    );
    let r = s
        .post(
            "/api/v1/objects/hostname/",
            &t,
            json!({"name": "e.example"}),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = s
        .post(
            "/api/v1/objects/hostname/",
            &t,
            json!({"name": "d.example"}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(s.count("acme", ObjectType::Hostname).await, 4);
    // Deletes: only listed keys; a list delete with one unlisted key deletes nothing.
    let r = s
        .delete(
            "/api/v1/objects/hostname/?id=internet|a.example&id=internet|b.example",
            &t,
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(s.count("acme", ObjectType::Hostname).await, 4);
    assert_eq!(
        s.delete("/api/v1/objects/hostname/internet%7Cb.example/", &t)
            .await
            .status,
        403
    );
    assert_eq!(
        s.delete("/api/v1/objects/hostname/internet%7Ca.example/", &t)
            .await
            .status,
        204
    );
    assert_eq!(s.count("acme", ObjectType::Hostname).await, 3);
    s.stop().await;
}

#[tokio::test]
async fn search_and_limit_scopes_must_match_exactly() {
    let s = start(Options::default()).await;
    let admin = s.token("acme", all());
    s.post(
        "/api/v1/objects/",
        &admin,
        hostnames(&["ab.example", "ef.example"]),
    )
    .await;
    let t = s.token(
        "acme",
        json!({"objects.view_hostname": {"search": ["ab"], "limit": "1"}}),
    );
    let ok = s
        .get("/api/v1/objects/hostname/?search=ab&limit=1", &t)
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["count"], 1);
    for q in [
        "?search=ab&limit=2",
        "?search=ef&limit=1",
        "?search=ab",
        "?limit=1",
        "",
        "?search=AB&limit=1",
    ] {
        let r = s.get(&format!("/api/v1/objects/hostname/{q}"), &t).await;
        assert_eq!(
            r.status, 403,
            "{q}: a mismatch or a missing parameter is a 403, never a 500"
        );
        assert_eq!(r.error_code(), "permission_denied");
    }
    // search/limit restrict lists only; a detail is allowed (as in the original).
    assert_eq!(
        s.get("/api/v1/objects/hostname/internet%7Cef.example/", &t)
            .await
            .status,
        200
    );
    // Same rules on files.
    let f = s.token(
        "acme",
        json!({"files.view_file": {"search": ["bgp-download"], "limit": 1}}),
    );
    assert_eq!(
        s.get("/api/v1/file/?search=bgp-download&limit=1", &f)
            .await
            .status,
        200
    );
    assert_eq!(
        s.get("/api/v1/file/?search=bgp-download", &f).await.status,
        403
    );
    assert_eq!(
        s.get("/api/v1/file/?search=rpki&limit=1", &f).await.status,
        403
    );
    s.stop().await;
}

#[tokio::test]
async fn organizations_are_isolated() {
    let s = start(Options::default()).await;
    let a = s.token("org-a", all());
    let b = s.token("org-b", all());
    s.post("/api/v1/objects/", &a, hostnames(&["secret.example"]))
        .await;
    let up = s
        .upload(
            &a,
            "/api/v1/file/",
            &[
                ("type", None, b"test-plugin"),
                ("file", Some("stdout"), b"org a data"),
            ],
        )
        .await;
    assert_eq!(up.status, 201);
    let fid = up.json()["id"].as_u64().unwrap();
    // B sees none of A's objects or files.
    assert_eq!(
        s.get("/api/v1/objects/hostname/", &b).await.json()["count"],
        0
    );
    assert_eq!(
        s.get("/api/v1/objects/hostname/internet%7Csecret.example/", &b)
            .await
            .status,
        404
    );
    assert_eq!(s.get("/api/v1/file/", &b).await.json()["count"], 0);
    assert_eq!(s.get(&format!("/api/v1/file/{fid}/"), &b).await.status, 404);
    assert_eq!(
        s.get(&format!("/api/v1/file/{fid}/download/"), &b)
            .await
            .status,
        404
    );
    assert_eq!(
        s.delete(&format!("/api/v1/file/{fid}/"), &b).await.status,
        404
    );
    assert!(
        s.files
            .meta(kat_core::store::FileId(fid))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        s.delete("/api/v1/objects/hostname/internet%7Csecret.example/", &b)
            .await
            .status,
        404
    );
    assert_eq!(s.count("org-a", ObjectType::Hostname).await, 1);
    // B's write of the same key is B's own object.
    s.post("/api/v1/objects/", &b, hostnames(&["secret.example"]))
        .await;
    assert_eq!(s.count("org-b", ObjectType::Hostname).await, 1);
    assert_eq!(s.count("org-a", ObjectType::Hostname).await, 1);
    // Organizations: a token sees its own only.
    let v = s.get("/api/v1/organizations/", &b).await.json();
    assert_eq!(v["count"], 1);
    assert_eq!(v["results"][0]["code"], "org-b");
    assert_eq!(s.get("/api/v1/organizations/org-a/", &b).await.status, 404);
    assert_eq!(s.get("/api/v1/organizations/org-b/", &b).await.status, 200);
    s.stop().await;
}
