//! Deadlines and cancellation: every task reaches a final state and its container is gone.

use std::time::Duration;

use serde_json::json;

use crate::harness::{plugin, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_past_its_deadline_ends_timed_out_and_is_gone() {
    let mut slow = plugin("slow", 0, json!([]), json!(["sleep", "60"]));
    slow["timeout_seconds"] = json!(2);
    let Some(k) = start(json!([slow])).await else {
        return;
    };
    let id = k.submit("slow", &[]).await[0];
    let started = std::time::Instant::now();
    let t = k.wait(id).await;
    assert_eq!(t["state"], "timed_out", "{t}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "killed at the deadline, not at the end of sleep"
    );
    assert!(
        t["reason"].as_str().unwrap_or("").contains("deadline"),
        "{t}"
    );
    assert_eq!(k.containers_of(id).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_kills_its_container_and_ends_it_cancelled() {
    let Some(k) = start(json!([plugin(
        "slow",
        0,
        json!([]),
        json!(["sleep", "60"])
    )]))
    .await
    else {
        return;
    };
    let id = k.submit("slow", &[]).await[0];
    // Give the container a moment to exist, then cancel.
    assert_eq!(k.wait_container(id).await, 1, "the task's container runs");
    let (s, v) = k.post(&format!("/tasks/{id}/cancel/"), json!({})).await;
    assert!(s == 200 || s == 202, "{s} {v}");
    let t = k.wait(id).await;
    assert_eq!(t["state"], "cancelled", "cancelled, not failed: {t}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while k.containers_of(id).await > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(k.containers_of(id).await, 0, "the container is gone");
    // Cancelling again is a conflict, not a change.
    let (s, _) = k.post(&format!("/tasks/{id}/cancel/"), json!({})).await;
    assert_eq!(s, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_fails_the_task_with_a_clear_reason() {
    let mut p = plugin("ghost", 0, json!([]), json!(["true"]));
    p["oci_image"] = json!("kat-no-such-image:never");
    let Some(k) = start(json!([p])).await else {
        return;
    };
    let id = k.submit("ghost", &[]).await[0];
    let t = k.wait(id).await;
    assert_eq!(t["state"], "failed", "{t}");
    assert!(
        t["reason"]
            .as_str()
            .unwrap_or("")
            .contains("kat-no-such-image:never"),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_starting_on_the_same_engine_leaves_another_ones_containers_alone() {
    let slow = plugin("slow", 0, json!([]), json!(["sleep", "60"]));
    let Some(first) = start(json!([slow.clone()])).await else {
        return;
    };
    let id = first.submit("slow", &[]).await[0];
    assert_eq!(
        first.wait_container(id).await,
        1,
        "the task's container runs"
    );
    // A second deployment on the same engine reaps its orphans at start: the first one's
    // running container is not one of them.
    let Some(second) = start(json!([slow])).await else {
        return;
    };
    assert!(
        second.d.recovery().reaped.is_empty(),
        "the new deployment reaped {:?}",
        second.d.recovery().reaped
    );
    assert_eq!(
        first.containers_of(id).await,
        1,
        "the first deployment's container survived the second one's start"
    );
    let t = first.get(&format!("/tasks/{id}/")).await;
    assert_eq!(t["state"], "running", "{t}");
    let (s, v) = first.post(&format!("/tasks/{id}/cancel/"), json!({})).await;
    assert!(s == 200 || s == 202, "{s} {v}");
    assert_eq!(first.wait(id).await["state"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_tasks_with_one_bad_entry_queues_nothing() {
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
    let good = json!({"type": "plugin", "data": {"plugin_id": "hello", "input_data": null}});
    for bad in [
        json!({"type": "plugin", "data": {"plugin_id": "no-such-plugin", "input_data": null}}),
        json!({"type": "plugin", "data": {"plugin_id": "hello", "input_data": ["no-such.example"]}}),
    ] {
        let (s, v) = k.post("/tasks/", json!([good.clone(), bad.clone()])).await;
        assert!((400..500).contains(&s), "{s} {v}");
        assert!(v["errors"][0]["detail"].is_string(), "{v}");
    }
    // Nothing was queued, so nothing ran, not even the good first entry.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(k.tasks_of("hello").await.is_empty());
    let (s, v) = k.post("/tasks/", json!([good.clone(), good])).await;
    assert_eq!(s, 201, "{v}");
    let queued = k.tasks_of("hello").await;
    assert_eq!(queued.len(), 2);
    // Both end before the test does: a container still being created when the deployment is
    // dropped would outlive this process.
    for t in queued {
        let id = t["id"]
            .as_str()
            .expect("task id")
            .parse()
            .expect("a task id");
        assert_eq!(k.wait(id).await["state"], "completed");
    }
}
