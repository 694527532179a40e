//! Killing `katd` mid-task and starting it again leaves no running task, no container and no valid token
//! of the interrupted task.
//!
//! A test binary of its own: katd reaps every container of ours whose task it is not running, so this
//! must not run beside the other end-to-end tests (cargo runs test binaries one after another).

#![cfg(feature = "docker")]

mod support;

use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::json;

use support::{VOLUME, docker_ready, free_port, katd, katd_path, plugin, wait_up};

fn spawn(
    data: &std::path::Path,
    plugins: &std::path::Path,
    port: u16,
    token_out: &std::path::Path,
    entrypoint: &std::path::Path,
) -> Child {
    katd()
        .args(["serve", "--org", "acme", "--tick", "3600"])
        .arg("--data")
        .arg(data)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--plugins")
        .arg(plugins)
        .arg("--token-out")
        .arg(token_out)
        .arg("--entrypoint")
        .arg(entrypoint)
        .env("ENTRYPOINT_VOLUME", VOLUME)
        .env("KAT_JWT_SECRET", "restart-secret-restart-secret-restart!!")
        // A cache size other than the default, through the variable.
        .env("KAT_SLED_CACHE_MIB", "64")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("katd starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_katd_mid_task_and_restarting_leaves_no_running_task_and_no_container() {
    let Some(entrypoint) = docker_ready().await else {
        return;
    };
    assert!(
        katd_path().is_file(),
        "{} is built by cargo test",
        katd_path().display()
    );
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins.json");
    std::fs::write(
        &plugins,
        json!([plugin("slow", 0, json!([]), json!(["sleep", "120"]))]).to_string(),
    )
    .unwrap();
    let data = dir.path().join("data");
    let token_file = dir.path().join("token");
    let port = free_port();
    let mut first = spawn(&data, &plugins, port, &token_file, &entrypoint);
    wait_up(port, &token_file).await;
    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let created: serde_json::Value = http
        .post(format!("{api}/tasks/"))
        .header("Authorization", format!("Token {token}"))
        .json(&json!({"type": "plugin", "data": {"plugin_id": "slow", "input_data": null}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id: kat::core::task::TaskId = created["id"].as_str().expect("task id").parse().unwrap();
    let rt = kat::runtime_docker::DockerRuntime::connect().await.unwrap();
    let ours = || async {
        kat::core::runtime::ContainerRuntime::list_managed(&rt)
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.task == Some(id))
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ours().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task's container never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The task's token, as its container got it; valid while the task runs (a 403, not a 401: it
    // authenticates but may not list tasks).
    let container = kat::core::runtime::ContainerRuntime::list_managed(&rt)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.task == Some(id))
        .expect("the task's container");
    let task_token = container_env(&container.id, "OPENKAT_TOKEN");
    let probe = |token: String| {
        let http = http.clone();
        let url = format!("{api}/tasks/");
        async move {
            http.get(url)
                .header("Authorization", format!("Token {token}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        probe(task_token.clone()).await,
        403,
        "the running task's token is valid"
    );
    // SIGKILL: no clean-up runs; the container is orphaned and the task is left "running".
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(ours().await, 1, "the container outlives the killed katd");

    std::fs::remove_file(&token_file).unwrap();
    let mut second = spawn(&data, &plugins, port, &token_file, &entrypoint);
    wait_up(port, &token_file).await;
    let token = std::fs::read_to_string(&token_file).unwrap();
    let t: serde_json::Value = http
        .get(format!("{api}/tasks/{id}/"))
        .header("Authorization", format!("Token {token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["state"], "failed", "{t}");
    assert!(
        t["reason"].as_str().unwrap_or("").contains("restarted"),
        "{t}"
    );
    assert_eq!(ours().await, 0, "the orphan container was reaped at start");
    let running: serde_json::Value = http
        .get(format!("{api}/tasks/?state=running"))
        .header("Authorization", format!("Token {token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(running["count"], 0, "{running}");
    assert_eq!(
        probe(task_token).await,
        401,
        "the interrupted task's token was revoked at recovery"
    );
    second.kill().unwrap();
    second.wait().unwrap();
}

/// One variable of a container's environment, from `docker inspect`.
fn container_env(container: &str, name: &str) -> String {
    let out = std::process::Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{range .Config.Env}}{{println .}}{{end}}",
            container,
        ])
        .output()
        .expect("docker inspect runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("the container has no {name}"))
}
