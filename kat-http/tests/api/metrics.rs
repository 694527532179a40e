//! `GET /metrics`: the OpenMetrics text, requests counted by route pattern, no token needed, no
//! organization or object in it.

use serde_json::json;

use crate::common::*;

/// The value of the sample line starting with `prefix` (name and labels), if any.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_show_the_queue() {
    let s = start(Options::default()).await;
    let t = s.token("victim", all());
    let r = s
        .post(
            "/api/v1/objects/",
            &t,
            json!({"hostname": [{"name": "private.example.com"}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.bytes));
    for _ in 0..3 {
        assert_eq!(s.get("/api/v1/objects/hostname/", &t).await.status, 200);
    }
    assert_eq!(s.get("/api/v1/nope/", &t).await.status, 404);

    // No token: metrics are for the operator's scraper; they name no organization or object.
    let m = s.call("GET", "/metrics", None, None).await;
    assert_eq!(m.status, 200);
    let ct = m.headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = String::from_utf8(m.bytes.to_vec()).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"kat_http_requests_total{route="/api/v1/objects/{type}/",method="GET",status="200"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"kat_http_requests_total{route="/api/v1/objects/",method="POST",status="201"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"kat_http_requests_total{route="unmatched",method="GET",status="404"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("kat_http_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert_eq!(sample(&text, "kat_tasks_queued "), Some(0.0), "{text}");
    for secret in ["victim", "private.example.com", &t] {
        assert!(!text.contains(secret), "{secret} leaked into /metrics");
    }

    // Only GET and HEAD.
    let r = s.call("POST", "/metrics", None, None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "method_not_allowed");
    s.stop().await;
}
