//! `katd serve` on the runtime and store its flags choose, on the real engines: plugins run on Podman with
//! `--runtime podman`, and nothing is written to the data directory with `--store memory` (and the JWT
//! secret from the environment).

#![cfg(any(feature = "docker", feature = "podman"))]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use support::{VOLUME, free_port, katd, plugin, wait_up};

/// A serving katd, killed when dropped.
struct Serving {
    child: Child,
    api: String,
    token: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    #[cfg_attr(not(feature = "docker"), allow(dead_code))]
    data: PathBuf,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `katd serve` with these extra arguments, a `hello` plugin (echo) and a `slow` one (sleep).
async fn serve(entrypoint: &Path, extra: &[&str]) -> Serving {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins.json");
    std::fs::write(
        &plugins,
        json!([
            plugin("hello", 0, json!([]), json!(["echo", "hello"])),
            plugin("slow", 0, json!([]), json!(["sleep", "120"])),
        ])
        .to_string(),
    )
    .expect("write plugins");
    let data = dir.path().join("data");
    let token_file = dir.path().join("token");
    let port = free_port();
    let child = katd()
        .args(["serve", "--org", "acme", "--tick", "3600"])
        .args(extra)
        .arg("--data")
        .arg(&data)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--plugins")
        .arg(&plugins)
        .arg("--token-out")
        .arg(&token_file)
        .arg("--entrypoint")
        .arg(entrypoint)
        .env("ENTRYPOINT_VOLUME", VOLUME)
        .env("KAT_JWT_SECRET", "serve-test-secret-serve-test-secret!!")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("katd starts");
    let mut serving = Serving {
        child,
        api: format!("http://127.0.0.1:{port}/api/v1"),
        token: String::new(),
        http: reqwest::Client::new(),
        _dir: dir,
        data,
    };
    wait_up(port, &token_file).await;
    serving.token = std::fs::read_to_string(&token_file).expect("token");
    serving
}

impl Serving {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.api))
            .header("Authorization", format!("Token {}", self.token));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Queue a standalone plugin; its task's id.
    async fn submit(&self, plugin: &str) -> String {
        let (s, v) = self
            .call(
                reqwest::Method::POST,
                "/tasks/",
                Some(json!({"type": "plugin", "data": {"plugin_id": plugin, "input_data": null}})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v["id"].as_str().expect("task id").to_string()
    }

    /// The task once it has ended (up to 90 s).
    async fn ended(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let (s, t) = self
                .call(reqwest::Method::GET, &format!("/tasks/{id}/"), None)
                .await;
            assert_eq!(s, 200, "{t}");
            if !["queued", "running"].contains(&t["state"].as_str().unwrap_or("")) {
                return t;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {id} never ended: {t}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(feature = "podman")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_runtime_podman_runs_plugins_on_podman() {
    use kat::core::runtime::ContainerRuntime;
    let Some(entrypoint) = support::podman_ready().await else {
        return;
    };
    let k = serve(&entrypoint, &["--runtime", "podman"]).await;
    let (s, plugins) = k.call(reqwest::Method::GET, "/plugins/", None).await;
    assert_eq!(s, 200, "{plugins}");
    assert_eq!(plugins["count"], 2, "{plugins}");

    let hello = k.submit("hello").await;
    let t = k.ended(&hello).await;
    assert_eq!(t["state"], "completed", "{t}");

    // The container of a running task is Podman's.
    let slow = k.submit("slow").await;
    let id: kat::core::task::TaskId = slow.parse().expect("task id");
    let podman = kat::runtime_podman::PodmanRuntime::connect()
        .await
        .expect("podman");
    let ours = || async {
        podman
            .list_managed()
            .await
            .expect("list")
            .into_iter()
            .filter(|c| c.task == Some(id))
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if ours().await > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow task's container never appeared in Podman"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (s, v) = k
        .call(
            reqwest::Method::POST,
            &format!("/tasks/{slow}/cancel/"),
            None,
        )
        .await;
    assert!(s == 200 || s == 202, "cancel: {s} {v}");
    assert_eq!(k.ended(&slow).await["state"], "cancelled");
    // The cancelled task's container is removed, not only killed (and not left behind when this
    // test's katd is killed right after).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if ours().await == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cancelled task's container is still in Podman"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(feature = "docker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_store_memory_writes_nothing_to_the_data_directory() {
    let Some(entrypoint) = support::docker_ready().await else {
        return;
    };
    let k = serve(&entrypoint, &["--store", "memory"]).await;
    let hello = k.submit("hello").await;
    let t = k.ended(&hello).await;
    assert_eq!(t["state"], "completed", "{t}");
    let (s, files) = k.call(reqwest::Method::GET, "/file/", None).await;
    assert_eq!(s, 200, "{files}");
    assert_eq!(files["count"], 1, "the echo's output is stored: {files}");
    // KAT_JWT_SECRET is set, so not even jwt.secret: the directory holds nothing.
    let entries: Vec<_> = std::fs::read_dir(&k.data)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(entries.is_empty(), "{entries:?}");
}

#[cfg(feature = "docker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn katd_token_refuses_an_organization_that_does_not_exist() {
    let Some(entrypoint) = support::docker_ready().await else {
        return;
    };
    let k = serve(&entrypoint, &["--store", "memory"]).await;
    let mint = |org: &str| {
        katd()
            .args(["token", "--admin", "--org", org, "--api", &k.api])
            .env("KAT_JWT_SECRET", "serve-test-secret-serve-test-secret!!")
            .output()
            .expect("katd runs")
    };
    let out = mint("ghost");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no token is printed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no organization \"ghost\""), "{err}");
    let out = mint("acme");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let resp = k
        .http
        .get(format!("{}/organizations/acme/", k.api))
        .header("Authorization", format!("Token {token}"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    // A token minted without the check is refused by the API all the same.
    let out = katd()
        .args(["token", "--admin", "--org", "ghost", "--no-check"])
        .env("KAT_JWT_SECRET", "serve-test-secret-serve-test-secret!!")
        .output()
        .expect("katd runs");
    assert!(out.status.success());
    let ghost = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let resp = k
        .http
        .post(format!("{}/objects/", k.api))
        .header("Authorization", format!("Token {ghost}"))
        .json(&json!({"hostname": [{"network": "internet", "name": "ghost.example"}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 401);
}

/// `katd levels --recompute` against a serving katd: levels inherited by the API's writes are
/// complete (0 changed), and a token without `objects.can_set_scan_level` is refused.
#[cfg(feature = "docker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn katd_levels_recompute_over_the_api() {
    let Some(entrypoint) = support::docker_ready().await else {
        return;
    };
    let k = serve(&entrypoint, &["--store", "memory"]).await;
    let (s, v) = k
        .call(
            reqwest::Method::POST,
            "/objects/",
            Some(json!({
                "hostname": [{"network": "internet", "name": "example.com"}],
                "dnsarecord": [{"hostname": "internet|example.com", "ip_address": "internet|192.0.2.1"}],
            })),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = k
        .call(
            reqwest::Method::PATCH,
            "/objects/hostname/internet|example.com/",
            Some(json!({"scan_level": 2})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, ip) = k
        .call(
            reqwest::Method::GET,
            "/objects/ipaddress/internet|192.0.2.1/",
            None,
        )
        .await;
    assert_eq!(ip["scan_level"], 2, "{ip}");
    let levels = |token: &str| {
        katd()
            .args(["levels", "--recompute", "--api", &k.api, "--token", token])
            .output()
            .expect("katd runs")
    };
    let out = levels(&k.token);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "recomputed the inherited scan levels: 0 object(s) changed"
    );
    let viewer = katd()
        .args(["token", "--org", "acme", "--no-check", "--permissions"])
        .arg(r#"{"objects.view_hostname": {}}"#)
        .env("KAT_JWT_SECRET", "serve-test-secret-serve-test-secret!!")
        .output()
        .expect("katd runs");
    assert!(viewer.status.success());
    let viewer = String::from_utf8_lossy(&viewer.stdout).trim().to_string();
    let out = levels(&viewer);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("objects.can_set_scan_level"), "{err}");
    // Without --recompute there is nothing to do: clap refuses it.
    let out = katd()
        .args(["levels", "--api", &k.api, "--token", &k.token])
        .output()
        .expect("katd runs");
    assert_eq!(out.status.code(), Some(2));
}
