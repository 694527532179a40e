//! The five execution modes, each producing the expected files attributed to its task.

use serde_json::json;

use crate::harness::{Kat, engine_cli, plugin, start};

async fn kat() -> Option<Kat> {
    start(json!([
        plugin("echo-host", 1, json!(["type:hostname"]), json!(["echo", "{hostname}"])),
        plugin("standalone", 0, json!([]), json!(["sh", "-c", "echo standalone $PLUGIN_ID; echo to-stderr >&2"])),
        plugin("stdin-cat", 0, json!(["type:hostname", "type:ipaddress"]), json!(["cat"])),
        plugin("count", 0, json!(["file:upload"]), json!(["wc", "-c"])),
        plugin(
            "shout",
            0,
            json!(["file:upload"]),
            json!(["sh", "-c", "wget -q -O - --header \"Authorization: Token $OPENKAT_TOKEN\" \"$OPENKAT_API/file/{file}/download/\" | tr a-z A-Z"])
        ),
    ]))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode1_direct_one_target() {
    let Some(k) = kat().await else { return };
    k.declare("hostname", &["a.example"], Some(1)).await;
    let ids = k.submit("echo-host", &["a.example"]).await;
    assert_eq!(ids.len(), 1);
    let t = k.wait(ids[0]).await;
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(t["exit_code"], 0);
    assert!(t["reason"].as_str().unwrap_or("").contains("mode 1"), "{t}");
    let files = k.files_of(ids[0]).await;
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["type"], "echo-host");
    assert_eq!(k.content(&files[0]).await, "a.example\n");
    assert_eq!(k.containers_of(ids[0]).await, 0, "the container is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode2_standalone() {
    let Some(k) = kat().await else { return };
    let ids = k.submit("standalone", &[]).await;
    let t = k.wait(ids[0]).await;
    assert_eq!(t["state"], "completed", "{t}");
    let files = k.files_of(ids[0]).await;
    assert_eq!(
        files.len(),
        1,
        "stdout only: stderr of a successful run is not uploaded"
    );
    assert_eq!(k.content(&files[0]).await, "standalone standalone\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode3_sequential_targets_in_one_task_each_with_its_file() {
    let Some(k) = kat().await else { return };
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    k.declare(
        "hostname",
        &["a.example", "b.example", "c.example"],
        Some(2),
    )
    .await;
    let ids = k
        .submit(
            "echo-host",
            &["a.example", "b.example", "internet|c.example"],
        )
        .await;
    assert_eq!(ids.len(), 1, "one task (batch size 50)");
    let t = k.wait(ids[0]).await;
    assert_eq!(t["state"], "completed", "{t}");
    assert!(t["reason"].as_str().unwrap_or("").contains("mode 3"), "{t}");
    let files = k.files_of(ids[0]).await;
    let mut contents = Vec::new();
    for f in &files {
        contents.push(k.content(f).await);
    }
    // All three targets ran in ONE container (the original starts one per target). `--until` is in whole
    // seconds, so it is set past the current second (the engine's events then waits until that time).
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    let events = engine_cli()
        .args([
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until.to_string(),
            "--format",
            "{{.ID}}",
        ])
        .args([
            "--filter",
            "event=create",
            "--filter",
            &format!("label=kat.task={}", ids[0]),
        ])
        .output()
        .expect("the engine's events");
    let created = String::from_utf8_lossy(&events.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(
        created,
        1,
        "containers created for the mode-3 task since {since}: {} {}",
        String::from_utf8_lossy(&events.stdout),
        String::from_utf8_lossy(&events.stderr)
    );
    assert_eq!(
        contents,
        vec!["a.example\n", "b.example\n", "c.example\n"],
        "one output file per target, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode4_bulk_stdin_and_the_temporary_file_is_removed() {
    let Some(k) = kat().await else { return };
    k.declare("hostname", &["a.example", "b.example"], Some(0))
        .await;
    k.declare("ipaddress", &["127.0.0.1"], Some(0)).await;
    let ids = k
        .submit("stdin-cat", &["a.example", "b.example", "127.0.0.1"])
        .await;
    let t = k.wait(ids[0]).await;
    assert_eq!(t["state"], "completed", "{t}");
    let files = k.files_of(ids[0]).await;
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        k.content(&files[0]).await,
        "a.example\nb.example\n127.0.0.1",
        "targets joined by newlines, no trailing one"
    );
    let tmp = k.get("/file/?type=kat-stdin").await;
    assert_eq!(
        tmp["count"], 0,
        "the stdin file is deleted when the task ends: {tmp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode5_files_on_stdin_and_by_id() {
    let Some(k) = kat().await else { return };
    // An upload of type "upload" chains to both file consumers.
    let form = reqwest::multipart::Form::new().text("type", "upload").part(
        "file",
        reqwest::multipart::Part::bytes(b"hello kat".to_vec()).file_name("in.txt"),
    );
    let resp = k
        .http
        .post(k.url("/file/?scan_level=0"))
        .header("Authorization", format!("Token {}", k.token))
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status().as_u16(), 201);
    let meta: serde_json::Value = resp.json().await.expect("json");
    let fid = meta["id"].as_u64().expect("id");
    let count = k.tasks_of("count").await;
    let shout = k.tasks_of("shout").await;
    assert_eq!(
        (count.len(), shout.len()),
        (1, 1),
        "each consumer queued once"
    );
    for (t, want) in [(&count[0], "9\n"), (&shout[0], "HELLO KAT")] {
        assert_eq!(t["input"]["files"], json!([fid]), "{t}");
        let id = t["id"].as_str().unwrap().parse().unwrap();
        let done = k.wait(id).await;
        assert_eq!(done["state"], "completed", "{done}");
        let files = k.files_of(id).await;
        assert_eq!(files.len(), 1);
        assert_eq!(k.content(&files[0]).await.trim_start(), want);
    }
    // A manual run on the same file works too.
    let ids = k.submit("shout", &[&fid.to_string()]).await;
    assert_eq!(k.wait(ids[0]).await["state"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode5_static_file_reference_is_downloaded_by_the_entrypoint() {
    let Some(k) = kat().await else { return };
    let form = reqwest::multipart::Form::new().text("type", "data").part(
        "file",
        reqwest::multipart::Part::bytes(b"static input\n".to_vec()).file_name("x"),
    );
    let meta: serde_json::Value = k
        .http
        .post(k.url("/file/?scan_level=0"))
        .header("Authorization", format!("Token {}", k.token))
        .multipart(form)
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("json");
    let fid = meta["id"].as_u64().expect("id");
    // Add a plugin that names the file statically, then run it with no input.
    let def = kat::core::plugin::PluginDef::parse_file(
        &json!([plugin(
            "cat-static",
            0,
            json!([]),
            json!(["cat", format!("{{file/{fid}}}")])
        )])
        .to_string(),
        "test",
    )
    .expect("plugin");
    let (writes, _) = kat::core::plugin::sync(&[], &def, true);
    kat::core::store::PluginCatalog::put_plugins(k.d.tasks().as_ref(), writes)
        .await
        .expect("put");
    let ids = k.submit("cat-static", &[]).await;
    let t = k.wait(ids[0]).await;
    assert_eq!(t["state"], "completed", "{t}");
    assert!(t["reason"].as_str().unwrap_or("").contains("mode 5"), "{t}");
    assert_eq!(
        k.content(&k.files_of(ids[0]).await[0]).await,
        "static input\n"
    );
}

/// Mode 3 with 10,000 targets in one task: the commands' JSON (about 300 KiB) is more than Linux lets
/// one environment string hold, so it travels in a temporary file the entrypoint downloads
/// (`KAT_COMMANDS_FILE`). Every command appends its target to a file in the container's `/tmp`; the
/// last one counts the lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode3_with_10000_targets_gets_its_commands_from_a_file() {
    use kat::core::object::{Object, ObjectType, ScanLevel, ScanProfile};
    const N: usize = 10_000;
    let mut p = plugin(
        "count-hosts",
        0,
        json!(["type:hostname"]),
        json!([
            "sh",
            "-c",
            "echo \"$0\" >> /tmp/seen; [ \"$0\" != h9999.example ] || { n=0; while read l; do n=$((n+1)); done < /tmp/seen; echo $n; }",
            "{hostname}"
        ]),
    );
    p["batch_size"] = json!(0);
    let Some(k) = crate::harness::start_with(json!([p]), |cfg| {
        cfg.engine.plugin_timeout = std::time::Duration::from_secs(600);
    })
    .await
    else {
        return;
    };
    let names: Vec<String> = (0..N).map(|i| format!("h{i}.example")).collect();
    let objects: Vec<Object> = names
        .iter()
        .map(|n| Object::from_json(ObjectType::Hostname, &json!({ "name": n })).expect("object"))
        .collect();
    for chunk in objects.chunks(1000) {
        k.d.objects()
            .upsert(&k.org, chunk.to_vec(), None)
            .await
            .expect("upsert");
    }
    let level = ScanProfile::declared(ScanLevel::new(0).expect("level"));
    for o in &objects {
        k.d.objects()
            .set_scan_profile(&k.org, ObjectType::Hostname, &o.natural_key(), level)
            .await
            .expect("scan level");
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let ids = k.submit("count-hosts", &refs).await;
    assert_eq!(ids.len(), 1, "batch_size 0: one task");
    let t = k.wait_long(ids[0]).await;
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(t["exit_code"], 0, "{t}");
    let files = k.files_of(ids[0]).await;
    assert_eq!(files.len(), 1, "only the last command prints: {files:?}");
    assert_eq!(
        k.content(&files[0]).await,
        format!("{N}\n"),
        "every command ran"
    );
    let temp = k.get("/file/?type=kat-stdin").await;
    assert_eq!(temp["count"], 0, "the commands file is gone: {temp}");
}
