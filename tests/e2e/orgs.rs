//! Organizations on a real deployment: one organization disabling a plugin leaves another able to
//! run it; a deleted organization's tokens are refused.

use std::time::Duration;

use serde_json::json;

use kat::core::org::OrgCode;

use crate::harness::{plugin, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_organization_disabling_a_plugin_leaves_another_able_to_run_it() {
    let Some(k) = start(json!([plugin(
        "hello",
        0,
        json!([]),
        json!(["echo", "hello"])
    )]))
    .await
    else {
        return;
    };
    let (s, v) = k
        .post("/organizations/", json!({"code": "beta", "name": "Beta"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let beta_token =
        k.d.operator_token(&OrgCode::new("beta").unwrap(), Duration::from_secs(600))
            .unwrap();
    let beta = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let mut r = k
            .http
            .request(method, k.url(path))
            .header("Authorization", format!("Token {beta_token}"));
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let resp = r.send().await.expect("request");
            let status = resp.status().as_u16();
            (
                status,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };

    // acme disables hello: acme may no longer run it.
    let (s, v) = k.post("/plugins/hello/disable/", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = k
        .post(
            "/tasks/",
            json!({"type": "plugin", "data": {"plugin_id": "hello", "input_data": []}}),
        )
        .await;
    assert_eq!(s, 409, "{v}");

    // beta still sees it enabled and runs it to completion.
    let (s, v) = beta(reqwest::Method::GET, "/plugins/hello/", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["enabled"], true, "{v}");
    let (s, v) = beta(
        reqwest::Method::POST,
        "/tasks/",
        Some(json!({"type": "plugin", "data": {"plugin_id": "hello", "input_data": []}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().expect("id").parse().expect("task id");
    k.d.engine()
        .wait_for(id, Duration::from_secs(90))
        .await
        .expect("task ends");
    let (s, t) = beta(reqwest::Method::GET, &format!("/tasks/{id}/"), None).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(t["organization"], "beta", "{t}");

    // Deleting beta refuses its tokens and leaves acme's alone.
    let (s, _) = k
        .call(reqwest::Method::DELETE, "/organizations/beta/", None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = beta(reqwest::Method::GET, "/tasks/", None).await;
    assert_eq!(s, 401);
    assert!(k.tasks_of("hello").await.is_empty(), "acme never ran hello");
    let (s, _) = k.call(reqwest::Method::GET, "/tasks/", None).await;
    assert_eq!(s, 200);
}
