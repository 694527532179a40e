//! `/business-rules/` and the rules' findings kept up to date by object writes, over real HTTP on
//! the real engine and both stores.

use serde_json::{Value, json};

use crate::common::*;

async fn rules_server(backend: Backend) -> Server {
    start(Options {
        backend,
        engine: true,
        rules: true,
        ..Options::default()
    })
    .await
}

/// The findings of an organization: key -> source_rules.
async fn findings(s: &Server, token: &str) -> Vec<(String, Value)> {
    let r = s.get("/api/v1/objects/finding/?limit=1000", token).await;
    assert_eq!(r.status, 200, "{}", r.json());
    r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_string(),
                f["source_rules"].clone(),
            )
        })
        .collect()
}

const DB: &str = "KAT-OPEN-DATABASE-PORT||internet|192.0.2.7";

#[tokio::test]
async fn rule_findings_exist_when_the_write_is_answered_and_go_with_the_deletion() {
    for backend in [Backend::Memory, Backend::Sled] {
        let s = rules_server(backend).await;
        let t = s.token("acme", all());
        let r = s
            .post(
                "/api/v1/objects/",
                &t,
                json!({"ipport": [{"address": "192.0.2.7", "protocol": "TCP", "port": 5432, "software": ["PostgreSQL|16"]}],
                       "software": [{"name": "PostgreSQL", "version": "16"}]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        let f = findings(&s, &t).await;
        assert!(
            f.contains(&(DB.to_string(), json!(["open_database_port"]))),
            "{f:?}"
        );
        assert!(
            !f.iter()
                .any(|(k, _)| k == "KAT-EXPOSED-SOFTWARE||internet|192.0.2.7"),
            "\"PostgreSQL\" does not contain \"pgsql\": {f:?}"
        );
        let port = "internet%7C192.0.2.7%7CTCP%7C5432";
        let r = s
            .delete(&format!("/api/v1/objects/ipport/{port}/"), &t)
            .await;
        assert_eq!(r.status, 204);
        let f = findings(&s, &t).await;
        assert!(
            !f.iter().any(|(k, _)| k == DB),
            "retracted with the port: {f:?}"
        );
        // Another organization's objects are not this one's findings.
        let other = s.token("other", all());
        assert!(findings(&s, &other).await.is_empty());
        s.stop().await;
    }
}

#[tokio::test]
async fn list_enable_disable_and_run_per_organization() {
    let s = rules_server(Backend::Sled).await;
    let t = s.token("acme", all());
    let o = s.token("other", all());
    let body = json!({"ipport": [{"address": "192.0.2.7", "protocol": "TCP", "port": 3306}]});
    for tok in [&t, &o] {
        assert_eq!(
            s.post("/api/v1/objects/", tok, body.clone()).await.status,
            201
        );
    }
    let r = s.get("/api/v1/business-rules/", &t).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["count"], 19);
    let db = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "open_database_port")
        .unwrap()
        .clone();
    assert_eq!(db["enabled"], true);
    assert_eq!(db["finding_type"], "KAT-OPEN-DATABASE-PORT");
    assert_eq!(db["object_type"], "ipaddress");
    assert!(db["condition"]["has"].is_object());

    let r = s
        .post(
            "/api/v1/business-rules/open_database_port/disable/",
            &t,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["enabled"], false);
    assert_eq!(r.json()["pass"]["deleted"], 1);
    assert!(!findings(&s, &t).await.iter().any(|(k, _)| k == DB));
    assert!(
        findings(&s, &o).await.iter().any(|(k, _)| k == DB),
        "the other organization keeps it"
    );
    let r = s.get("/api/v1/business-rules/?enabled=false", &t).await;
    assert_eq!(r.json()["count"], 1);
    assert_eq!(
        s.get("/api/v1/business-rules/open_database_port/", &o)
            .await
            .json()["enabled"],
        true
    );
    let r = s
        .post(
            "/api/v1/business-rules/open_database_port/enable/",
            &t,
            json!({}),
        )
        .await;
    assert_eq!(r.json()["pass"]["created"], 1);
    assert!(findings(&s, &t).await.iter().any(|(k, _)| k == DB));

    let r = s.post("/api/v1/business-rule-runs/", &t, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["created"], 0);
    assert_eq!(r.json()["subjects"], 1);
    s.stop().await;
}

#[tokio::test]
async fn bad_requests_get_the_standard_error_shape() {
    let s = rules_server(Backend::Memory).await;
    let t = s.token("acme", all());
    let viewer = s.token("acme", json!({"plugins.view_businessrule": {}}));
    let nobody = s.token("acme", json!({"plugins.view_plugin": {}}));

    let r = s.get("/api/v1/business-rules/", &nobody).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "permission_denied");
    assert!(
        r.json()["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("plugins.view_businessrule")
    );
    assert_eq!(s.get("/api/v1/business-rules/", &viewer).await.status, 200);
    for path in [
        "/api/v1/business-rules/missing_spf/disable/",
        "/api/v1/business-rule-runs/",
    ] {
        let r = s.post(path, &viewer, json!({})).await;
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.error_code(), "permission_denied");
    }
    let r = s.get("/api/v1/business-rules/?enabled=maybe", &t).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.attr().as_deref(), Some("enabled"));
    let r = s.get("/api/v1/business-rules/?colour=red", &t).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.attr().as_deref(), Some("colour"));
    for r in [
        s.get("/api/v1/business-rules/nope/", &t).await,
        s.post("/api/v1/business-rules/nope/enable/", &t, json!({}))
            .await,
    ] {
        assert_eq!(r.status, 404);
        assert_eq!(r.error_code(), "not_found");
    }
    let r = s.delete("/api/v1/business-rules/missing_spf/", &t).await;
    assert_eq!(r.status, 405);
    assert!(r.headers.get("allow").is_some());
    let r = s
        .post("/api/v1/business-rule-runs/?org=x", &t, json!({}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.attr().as_deref(), Some("org"));
    let scoped = s.token(
        "acme",
        json!({"plugins.view_businessrule": {"pks": ["missing_spf"]}}),
    );
    assert_eq!(
        s.get("/api/v1/business-rules/missing_spf/", &scoped)
            .await
            .status,
        200
    );
    assert_eq!(
        s.get("/api/v1/business-rules/missing_caa/", &scoped)
            .await
            .status,
        403
    );
    assert_eq!(
        s.get("/api/v1/business-rules/", &scoped).await.json()["count"],
        1
    );
    s.stop().await;
}
