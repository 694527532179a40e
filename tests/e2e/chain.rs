//! Normalizer chaining: a scanner's output triggers a normalizer that posts objects with its own
//! token; the objects are attributed to the normalizer's task. Scan levels gate every path: a file
//! carries the level of the objects its chain started from across every hop, a task uploads only
//! files of its own type, and an operator's upload states its level.

use serde_json::json;

use crate::harness::{plugin, post_json, start};

fn normalizer(id: &str, level: u8, consumes: &str, post_type: &str) -> serde_json::Value {
    let fetch = "host=$(wget -q -O - --header \"Authorization: Token $OPENKAT_TOKEN\" \"$OPENKAT_API/file/{file}/download/\")";
    let body = format!("{{\\\"{post_type}\\\": [{{\\\"name\\\": \\\"www.$host\\\"}}]}}");
    let mut p = plugin(
        id,
        level,
        json!([format!("file:{consumes}")]),
        json!([
            "sh",
            "-c",
            format!("{fetch} && {}", post_json("/objects/", &body))
        ]),
    );
    p["permissions"] = json!({"objects.add_hostname": {}});
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanner_output_triggers_a_normalizer_that_posts_objects_with_its_token() {
    let Some(k) = start(json!([
        plugin(
            "scan",
            1,
            json!(["type:hostname"]),
            json!(["sh", "-c", "printf %s {hostname}"])
        ),
        normalizer("norm", 1, "scan", "hostname"),
    ]))
    .await
    else {
        return;
    };
    k.declare("hostname", &["a.example"], Some(1)).await;
    let scan = k.submit("scan", &["a.example"]).await[0];
    assert_eq!(k.wait(scan).await["state"], "completed");
    let norms = k.tasks_of("norm").await;
    assert_eq!(norms.len(), 1, "the scanner's file queued the normalizer");
    let norm_id = norms[0]["id"].as_str().unwrap().parse().unwrap();
    let t = k.wait(norm_id).await;
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(t["source_file"], k.files_of(scan).await[0]["id"]);
    // The object exists and is attributed to the normalizer's task, from its token.
    let org = k.org.clone();
    let key = "internet|www.a.example".parse().unwrap();
    let stored = kat::core::store::ObjectStore::get(
        k.d.objects().as_ref(),
        &org,
        kat::core::object::ObjectType::Hostname,
        &key,
    )
    .await
    .unwrap()
    .expect("the normalizer's hostname");
    assert_eq!(stored.created_by, Some(norm_id));
    let tasks = kat::core::store::ObjectStore::tasks_of(
        k.d.objects().as_ref(),
        &org,
        kat::core::object::ObjectType::Hostname,
        &key,
    )
    .await
    .unwrap();
    assert_eq!(tasks, vec![norm_id]);
    // The normalizer's own output (the API's answer) is a file of its type, which chains nothing.
    assert_eq!(k.files_of(norm_id).await[0]["type"], "norm");
    assert_eq!(k.tasks_of("norm").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normalizer_writing_a_type_it_may_not_gets_403_and_fails() {
    // Allowed to add hostnames only, but posts an IP address.
    let mut bad = plugin(
        "bad-norm",
        0,
        json!(["file:scan"]),
        json!([
            "sh",
            "-c",
            post_json(
                "/objects/",
                "{\\\"ipaddress\\\": [{\\\"address\\\": \\\"192.0.2.77\\\"}]}"
            )
        ]),
    );
    bad["permissions"] = json!({"objects.add_hostname": {}});
    let Some(k) = start(json!([
        plugin(
            "scan",
            0,
            json!(["type:hostname"]),
            json!(["sh", "-c", "printf %s {hostname}"])
        ),
        bad
    ]))
    .await
    else {
        return;
    };
    k.declare("hostname", &["a.example"], Some(0)).await;
    let scan = k.submit("scan", &["a.example"]).await[0];
    k.wait(scan).await;
    let norms = k.tasks_of("bad-norm").await;
    assert_eq!(norms.len(), 1);
    let t = k
        .wait(norms[0]["id"].as_str().unwrap().parse().unwrap())
        .await;
    assert_eq!(t["state"], "failed", "{t}");
    let id = t["id"].as_str().unwrap().parse().unwrap();
    let files = k.files_of(id).await;
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        files[0]["type"], "error",
        "its stderr is stored as an error file"
    );
    let stderr = k.content(&files[0]).await;
    assert!(
        stderr.contains("403"),
        "the 403 shows in its stderr: {stderr}"
    );
    let ips = k.get("/objects/ipaddress/").await;
    assert_eq!(ips["count"], 0, "nothing was written: {ips}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_below_the_objects_scan_level_is_refused_on_every_path() {
    let Some(k) = start(json!([
        plugin(
            "scan",
            1,
            json!(["type:hostname"]),
            json!(["sh", "-c", "printf %s {hostname}"])
        ),
        plugin(
            "deep",
            3,
            json!(["type:hostname"]),
            json!(["echo", "{hostname}"])
        ),
        normalizer("norm3", 3, "scan", "hostname"),
    ]))
    .await
    else {
        return;
    };
    k.declare("hostname", &["low.example"], Some(1)).await;
    k.declare("hostname", &["unset.example"], None).await;
    // Manual: refused with a reason.
    for target in ["low.example", "unset.example"] {
        let (s, v) = k
            .post(
                "/tasks/",
                json!({"type": "plugin", "data": {"plugin_id": "deep", "input_data": target}}),
            )
            .await;
        assert_eq!(s, 403, "{v}");
        assert!(v.to_string().contains("scan level"), "{v}");
    }
    // Schedule over all hostnames: nothing is created for objects below level 3.
    let (s, set) = k
        .post(
            "/object-sets/",
            json!({"name": "all hosts", "object_type": "hostname", "all": true}),
        )
        .await;
    assert_eq!(s, 201, "{set}");
    let (s, sched) = k
        .post("/schedules/", json!({"plugin_id": "deep", "object_set_id": set["id"], "interval": "PT24H", "enabled": true}))
        .await;
    assert_eq!(s, 201, "{sched}");
    let report =
        k.d.engine()
            .tick(kat::core::clock::Timestamp::now().plus_secs(1))
            .await
            .unwrap();
    assert_eq!(report.tasks, 0, "{report:?}");
    // File-triggered: the scanner (level 1) runs, its output would chain to a level-3 normalizer.
    let scan = k.submit("scan", &["low.example"]).await[0];
    assert_eq!(k.wait(scan).await["state"], "completed");
    assert!(
        k.tasks_of("norm3").await.is_empty(),
        "no chained task below the scan level"
    );
    assert!(k.tasks_of("deep").await.is_empty());
    // Raising the level lets the schedule through.
    let (s, _) = k
        .call(
            reqwest::Method::PATCH,
            "/objects/hostname/internet%7Clow.example/",
            Some(json!({"scan_level": 3})),
        )
        .await;
    assert_eq!(s, 200);
    let report =
        k.d.engine()
            .tick(kat::core::clock::Timestamp::now().plus_secs(90_000))
            .await
            .unwrap();
    assert_eq!(report.tasks, 1, "{report:?}");
    // It ends before the test does: a container still being created when the deployment is
    // dropped would outlive this process.
    let deep = k.tasks_of("deep").await;
    assert_eq!(deep.len(), 1);
    let id = deep[0]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("task id");
    assert_eq!(k.wait(id).await["state"], "completed");
}

/// A plugin that prints the file it was given: its output (of its own type) is the next hop.
fn relay(id: &str, level: u8, consumes: &str) -> serde_json::Value {
    plugin(
        id,
        level,
        json!([format!("file:{consumes}")]),
        json!([
            "sh",
            "-c",
            "wget -q -O - --header \"Authorization: Token $OPENKAT_TOKEN\" \"$OPENKAT_API/file/{file}/download/\""
        ]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_uploading_a_file_of_another_plugins_type_gets_403_and_nothing_chains() {
    // The forger posts a multipart upload of type "scan" (another plugin's) with its own token.
    let body = r#"--xx\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nscan\r\n--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\nforged.example\r\n--xx--\r\n"#;
    let forge = format!(
        "printf \"{body}\" > /tmp/body && wget -q -O - --header 'Content-Type: multipart/form-data; boundary=xx' --header \"Authorization: Token $OPENKAT_TOKEN\" --post-file /tmp/body \"$OPENKAT_API/file/\""
    );
    let Some(k) = start(json!([
        plugin(
            "forger",
            0,
            json!(["type:hostname"]),
            json!(["sh", "-c", forge])
        ),
        plugin(
            "scan",
            0,
            json!(["type:hostname"]),
            json!(["sh", "-c", "printf %s {hostname}"])
        ),
        relay("consumer", 0, "scan"),
    ]))
    .await
    else {
        return;
    };
    k.declare("hostname", &["a.example"], Some(4)).await;
    let forger = k.submit("forger", &["a.example"]).await[0];
    let t = k.wait(forger).await;
    assert_eq!(t["state"], "failed", "wget fails on the 403: {t}");
    let files = k.files_of(forger).await;
    assert_eq!(files.len(), 1, "only its stderr: {files:?}");
    assert_eq!(files[0]["type"], "error");
    let stderr = k.content(&files[0]).await;
    assert!(stderr.contains("403"), "{stderr}");
    let scans = k.get("/file/?type=scan").await;
    assert_eq!(scans["count"], 0, "nothing stored: {scans}");
    assert!(
        k.tasks_of("consumer").await.is_empty(),
        "nothing chained from a forged file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_level_1_chain_cannot_start_a_level_3_consumer_two_hops_later() {
    let Some(k) = start(json!([
        plugin(
            "scan",
            1,
            json!(["type:hostname"]),
            json!(["sh", "-c", "printf %s {hostname}"])
        ),
        relay("norm", 1, "scan"),
        relay("shallow", 1, "norm"),
        relay("deep", 3, "norm"),
    ]))
    .await
    else {
        return;
    };
    k.declare("hostname", &["low.example"], Some(1)).await;
    let scan = k.submit("scan", &["low.example"]).await[0];
    assert_eq!(k.wait(scan).await["state"], "completed");
    let first = &k.files_of(scan).await[0];
    assert_eq!(
        (&first["scan_level"], &first["scan_level_from"]),
        (&json!(1), &json!("objects")),
        "{first}"
    );
    let norms = k.tasks_of("norm").await;
    assert_eq!(norms.len(), 1);
    let norm = norms[0]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(k.wait(norm).await["state"], "completed");
    let second = &k.files_of(norm).await[0];
    assert_eq!(second["type"], "norm");
    assert_eq!(
        (&second["scan_level"], &second["scan_level_from"]),
        (&json!(1), &json!("files")),
        "the level of the chain's objects, one hop on: {second}"
    );
    // The level-1 consumer of the second hop runs; the level-3 one is never queued.
    let shallow = k.tasks_of("shallow").await;
    assert_eq!(shallow.len(), 1);
    let shallow = shallow[0]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(k.wait(shallow).await["state"], "completed");
    assert!(
        k.tasks_of("deep").await.is_empty(),
        "a level-1 chain cannot start a level-3 consumer"
    );
    // Nor by hand.
    let (s, v) = k
        .post(
            "/tasks/",
            json!({"type": "plugin", "data": {"plugin_id": "deep", "input_data": [second["id"].to_string()]}}),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    let msg = v.to_string();
    assert!(
        msg.contains("needs scan level L3") && msg.contains("carries L1"),
        "{msg}"
    );
    assert!(k.tasks_of("deep").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_upload_states_its_level_and_starts_consumers_up_to_it() {
    let Some(k) = start(json!([
        relay("level2", 2, "manual"),
        relay("level3", 3, "manual"),
    ]))
    .await
    else {
        return;
    };
    // Without a level: 400 naming it, nothing stored, nothing queued.
    let (s, v) = k.upload("", "manual", "data").await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["errors"][0]["attr"], "scan_level", "{v}");
    let (s, v) = k.upload("?scan_level=9", "manual", "data").await;
    assert_eq!(
        (s, &v["errors"][0]["attr"]),
        (400, &json!("scan_level")),
        "{v}"
    );
    assert_eq!(k.get("/file/").await["count"], 0);
    assert!(k.tasks_of("level2").await.is_empty());
    // With level 2: the level-2 consumer runs, the level-3 one does not.
    let (s, f) = k.upload("?scan_level=2", "manual", "data").await;
    assert_eq!(s, 201, "{f}");
    assert_eq!(
        (&f["scan_level"], &f["scan_level_from"]),
        (&json!(2), &json!("operator"))
    );
    let l2 = k.tasks_of("level2").await;
    assert_eq!(l2.len(), 1);
    let l2 = l2[0]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(k.wait(l2).await["state"], "completed");
    assert!(k.tasks_of("level3").await.is_empty());
}

/// RFD 0009 example 1 on the real engine: files stored while the normalizer's task is still queued
/// (here: the only worker is busy) join that task, up to its batch size, and one container runs one
/// command per file; a file above nobody's level joins nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_arriving_while_the_normalizer_waits_share_one_task() {
    let mut consumer = plugin(
        "echo-files",
        1,
        json!(["file:batch"]),
        json!(["echo", "file", "{file}"]),
    );
    consumer["batch_size"] = json!(3);
    let blocker = plugin("blocker", 0, json!([]), json!(["sleep", "4"]));
    let Some(k) = crate::harness::start_with(json!([consumer, blocker]), |cfg| {
        cfg.engine.concurrency = 1;
    })
    .await
    else {
        return;
    };
    let busy = k.submit("blocker", &[]).await[0];
    k.wait_state(busy, "running").await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let (s, f) = k
            .upload("?scan_level=1", "batch", &format!("file {i}"))
            .await;
        assert_eq!(s, 201, "{f}");
        ids.push(f["id"].as_u64().expect("file id"));
    }
    // Level 0: below the consumer's level 1, refused by its gate.
    let (s, _) = k.upload("?scan_level=0", "batch", "low").await;
    assert_eq!(s, 201);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let tasks = loop {
        let tasks = k.tasks_of("echo-files").await;
        if tasks.len() == 2 && tasks.iter().all(|t| t["state"] == "completed") {
            break tasks;
        }
        assert!(tokio::time::Instant::now() < deadline, "{tasks:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let mut inputs: Vec<Vec<u64>> = tasks
        .iter()
        .map(|t| {
            t["input"]["files"]
                .as_array()
                .expect("files")
                .iter()
                .map(|f| f.as_u64().expect("id"))
                .collect()
        })
        .collect();
    inputs.sort();
    assert_eq!(inputs, vec![ids[..3].to_vec(), vec![ids[3]]]);
    let three = tasks
        .iter()
        .find(|t| t["input"]["files"].as_array().map(Vec::len) == Some(3))
        .expect("the batch");
    assert!(
        three["reason"].as_str().unwrap_or("").contains("mode 5"),
        "{three}"
    );
    let id = three["id"].as_str().expect("id").parse().expect("task id");
    let mut outputs = Vec::new();
    for f in k.files_of(id).await {
        outputs.push(k.content(&f).await);
    }
    let want: Vec<String> = ids[..3].iter().map(|i| format!("file {i}\n")).collect();
    assert_eq!(outputs, want, "one command per file, in order");
}
