//! Tasks (through the engine's TaskControl), schedules, object sets, plugins and the schema.

use serde_json::{Value, json};

use kat_core::plugin::{PluginDef, sync};

use crate::common::*;

async fn load_plugins(s: &Server) {
    let defs = PluginDef::parse_file(
        r#"[
        {"plugin_id": "dns", "name": "DNS", "scan_level": 1, "consumes": ["type:hostname"],
         "oci_image": "kat-plugins:latest", "oci_arguments": ["dns", "{hostname}"], "recurrences": "PT12H"},
        {"plugin_id": "nmap", "name": "Nmap", "oci_image": "kat-plugins:latest"}
    ]"#,
        "plugins.json",
    )
    .unwrap();
    let (writes, _) = sync(&[], &defs, true);
    s.tasks.put_plugins(writes).await.unwrap();
}

#[tokio::test]
async fn tasks_without_an_engine_are_503() {
    let s = start(Options {
        with_control: false,
        ..Options::default()
    })
    .await;
    load_plugins(&s).await;
    let t = s.token("acme", all());
    let r = s
        .post("/api/v1/tasks/", &t, json!({"type": "plugin", "data": {"plugin_id": "dns", "input_data": "internet|example.com"}}))
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "unavailable");
    assert_eq!(r.json()["type"], "server_error");
    // Bad input is still a 400 first.
    let r = s
        .post("/api/v1/tasks/", &t, json!({"type": "report", "data": {}}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(s.get("/api/v1/tasks/", &t).await.json()["count"], 0);
    s.stop().await;
}

#[tokio::test]
async fn submit_list_get_and_cancel() {
    let s = start(Options::default()).await;
    load_plugins(&s).await;
    let t = s.token("acme", all());
    let r = s
        .post("/api/v1/tasks/", &t, json!({"type": "plugin", "data": {"plugin_id": "dns", "input_data": "internet|example.com"}}))
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let task = r.json();
    assert_eq!(task["status"], "queued");
    assert_eq!(task["organization"], "acme");
    assert_eq!(
        task["data"],
        json!({"plugin_id": "dns", "input_data": ["internet|example.com"]})
    );
    let id = task["id"].as_str().unwrap().to_string();
    assert_eq!(
        s.calls(),
        vec!["submit acme dns [\"internet|example.com\"]".to_string()]
    );
    // A list of strings, null, and a list of requests.
    let r = s
        .post("/api/v1/tasks/", &t, json!({"data": {"plugin_id": "dns", "input_data": ["internet|a.example", "internet|b.example"]}}))
        .await;
    assert_eq!(r.status, 201);
    let r = s
        .post("/api/v1/tasks/", &t, json!([{"type": "plugin", "data": {"plugin_id": "nmap", "input_data": null}}, {"type": "plugin", "data": {"plugin_id": "nmap"}}]))
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    // Bad requests name the field.
    for (body, attr) in [
        (json!({"type": "plugin"}), "data"),
        (
            json!({"type": "plugin", "data": {"input_data": "x"}}),
            "data.plugin_id",
        ),
        (
            json!({"type": "plugin", "data": {"plugin_id": "dns", "input_data": 5}}),
            "data.input_data",
        ),
        (
            json!({"type": "plugin", "data": {"plugin_id": "dns", "input_data": ["a", 1]}}),
            "data.input_data[1]",
        ),
        (
            json!({"type": "plugin", "data": {"plugin_id": "dns"}, "x": 1}),
            "x",
        ),
        (
            json!([{"type": "plugin", "data": {"plugin_id": "dns"}}, {"type": "nope", "data": {"plugin_id": "dns"}}]),
            "[1].type",
        ),
        (
            json!({"type": "plugin", "data": {"plugin_id": "ghost"}}),
            "data.plugin_id",
        ),
    ] {
        let r = s.post("/api/v1/tasks/", &t, body.clone()).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.attr().as_deref(), Some(attr), "{body}");
    }
    // List, filters, detail.
    let v = s.get("/api/v1/tasks/", &t).await.json();
    assert_eq!(v["count"], 4);
    assert_eq!(
        s.get("/api/v1/tasks/?plugin_id=nmap", &t).await.json()["count"],
        2
    );
    assert_eq!(
        s.get("/api/v1/tasks/?state=queued&state=running", &t)
            .await
            .json()["count"],
        4
    );
    assert_eq!(s.get("/api/v1/tasks/?state=bogus", &t).await.status, 400);
    assert_eq!(
        s.get(&format!("/api/v1/tasks/{id}/"), &t).await.json(),
        task
    );
    assert_eq!(s.get("/api/v1/tasks/not-a-uuid/", &t).await.status, 400);
    assert_eq!(
        s.get(&format!("/api/v1/tasks/{}/", uuid::Uuid::new_v4()), &t)
            .await
            .status,
        404
    );
    // pks-scoped task lists.
    let only = s.token("acme", json!({"tasks.view_task": {"pks": [id]}}));
    let v = s.get("/api/v1/tasks/", &only).await.json();
    assert_eq!(v["count"], 1);
    assert_eq!(v["results"][0]["id"], id.as_str());
    // Cancel.
    let r = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/cancel/"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.json()["status"], "cancelled");
    assert!(s.calls().iter().any(|c| c.starts_with("cancel acme")));
    let r = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/cancel/"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, 409, "cancelling twice is a conflict");
    assert_eq!(
        s.get("/api/v1/tasks/?state=cancelled", &t).await.json()["count"],
        1
    );
    // Another organization sees none of it.
    let other = s.token("other", all());
    assert_eq!(s.get("/api/v1/tasks/", &other).await.json()["count"], 0);
    assert_eq!(
        s.get(&format!("/api/v1/tasks/{id}/"), &other).await.status,
        404
    );
    assert_eq!(
        s.call(
            "POST",
            &format!("/api/v1/tasks/{id}/cancel/"),
            Some(&other),
            None
        )
        .await
        .status,
        404
    );
    s.stop().await;
}

/// Object sets of types with scan levels filter on the effective level and on `declared`, as the
/// discovery loop's schedules do ("addresses at level 2 or more").
#[tokio::test]
async fn object_sets_filter_on_scan_levels() {
    let s = start(Options::default()).await;
    let t = s.token("acme", all());
    let r = s
        .post("/api/v1/object-sets/", &t, json!({"name": "cleared", "object_type": "ipaddress", "filters": {"scan_level": ["2", "3", "4"], "declared": ["false"]}}))
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(
        r.json()["filters"],
        json!({"scan_level": ["2", "3", "4"], "declared": ["false"]})
    );
    let r = s
        .post(
            "/api/v1/object-sets/",
            &t,
            json!({"name": "bad", "object_type": "hostname", "filters": {"level": ["2"]}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.attr().as_deref(), Some("filters.level"));
    assert!(
        r.json().to_string().contains("scan_level"),
        "the error lists the level filters: {}",
        r.json()
    );
}

#[tokio::test]
async fn object_sets_and_schedules() {
    let s = start(Options::default()).await;
    load_plugins(&s).await;
    let t = s.token("acme", all());
    let r = s
        .post("/api/v1/object-sets/", &t, json!({"name": "web", "object_type": "ipport", "filters": {"port": [80, "443"]}, "keys": ["internet|192.0.2.1|TCP|8080"]}))
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let set = r.json();
    assert_eq!(set["filters"], json!({"port": ["80", "443"]}));
    let set_id = set["id"].to_string();
    for (body, status, attr) in [
        (
            json!({"name": "web", "object_type": "hostname"}),
            409,
            "name",
        ),
        (
            json!({"name": "x", "object_type": "frob"}),
            400,
            "object_type",
        ),
        (
            json!({"name": "x", "object_type": "ipport", "filters": {"colour": ["red"]}}),
            400,
            "filters.colour",
        ),
        (
            json!({"name": "x", "object_type": "ipport", "filters": {"scan_level": ["2"]}}),
            400,
            "filters.scan_level",
        ),
        (
            json!({"name": "x", "object_type": "hostname", "keys": ["internet|-bad"]}),
            400,
            "keys[0]",
        ),
        (json!({"object_type": "hostname"}), 400, "name"),
        (
            json!({"name": "x", "object_type": "hostname", "query": "x"}),
            400,
            "query",
        ),
    ] {
        let r = s.post("/api/v1/object-sets/", &t, body.clone()).await;
        assert_eq!(r.status, status, "{body}");
        assert_eq!(r.attr().as_deref(), Some(attr), "{body}");
    }
    assert_eq!(s.get("/api/v1/object-sets/", &t).await.json()["count"], 1);
    let r = s
        .patch(
            &format!("/api/v1/object-sets/{set_id}/"),
            &t,
            json!({"all": true}),
        )
        .await;
    assert_eq!(r.json()["all"], true);

    // Schedules.
    let r = s
        .post("/api/v1/schedules/", &t, json!({"plugin_id": "dns", "object_set_id": set_id, "interval": "PT24H", "enabled": true}))
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let sched = r.json();
    assert_eq!(sched["interval"], "PT24H");
    assert_eq!(sched["organization"], "acme");
    let sid = sched["id"].to_string();
    // The plugin's recurrence is the default interval.
    let r = s
        .post("/api/v1/schedules/", &t, json!({"plugin_id": "dns"}))
        .await;
    assert_eq!(r.json()["interval"], "PT12H");
    let foreign = s.token("other", all());
    let foreign_set = s
        .post(
            "/api/v1/object-sets/",
            &foreign,
            json!({"name": "theirs", "object_type": "hostname", "all": true}),
        )
        .await
        .json();
    for (body, attr) in [
        (json!({"plugin_id": "ghost"}), "plugin_id"),
        (json!({"plugin_id": "dns", "interval": "P1M"}), "interval"),
        (json!({"plugin_id": "dns", "interval": "daily"}), "interval"),
        (
            json!({"plugin_id": "dns", "object_set_id": foreign_set["id"]}),
            "object_set_id",
        ),
        (
            json!({"plugin_id": "dns", "object_set_id": "nope"}),
            "object_set_id",
        ),
        (json!({"plugin_id": "dns", "enabled": "yes"}), "enabled"),
        (json!({"interval": "PT1H"}), "plugin_id"),
    ] {
        let r = s.post("/api/v1/schedules/", &t, body.clone()).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.attr().as_deref(), Some(attr), "{body}");
    }
    let r = s
        .patch(
            &format!("/api/v1/schedules/{sid}/"),
            &t,
            json!({"enabled": false, "interval": "PT30M"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (r.json()["enabled"].clone(), r.json()["interval"].clone()),
        (json!(false), json!("PT30M"))
    );
    assert_eq!(
        s.get("/api/v1/schedules/?enabled=false", &t).await.json()["count"],
        1
    );
    assert_eq!(
        s.get("/api/v1/schedules/", &foreign).await.json()["count"],
        0
    );
    assert_eq!(
        s.get(&format!("/api/v1/schedules/{sid}/"), &foreign)
            .await
            .status,
        404
    );
    // An object set in use cannot be deleted.
    assert_eq!(
        s.delete(&format!("/api/v1/object-sets/{set_id}/"), &t)
            .await
            .status,
        409
    );
    assert_eq!(
        s.delete(&format!("/api/v1/schedules/{sid}/"), &t)
            .await
            .status,
        204
    );
    assert_eq!(
        s.get(&format!("/api/v1/schedules/{sid}/"), &t).await.status,
        404
    );
    assert_eq!(
        s.delete(&format!("/api/v1/object-sets/{set_id}/"), &t)
            .await
            .status,
        204
    );
    s.stop().await;
}

#[tokio::test]
async fn plugins_and_schema() {
    let s = start(Options::default()).await;
    load_plugins(&s).await;
    let t = s.token("acme", all());
    let v = s.get("/api/v1/plugins/", &t).await.json();
    assert_eq!(v["count"], 2);
    assert_eq!(v["results"][0]["plugin_id"], "dns");
    assert_eq!(v["results"][0]["enabled"], true);
    let r = s
        .call("POST", "/api/v1/plugins/dns/disable/", Some(&t), None)
        .await;
    assert_eq!(r.json()["enabled"], false);
    // The organization's override; the catalogue's default (every other organization's) stays.
    assert!(s.tasks.get_plugin("dns").await.unwrap().unwrap().enabled);
    assert_eq!(
        s.tasks
            .plugin_overrides(&org("acme"))
            .await
            .unwrap()
            .get("dns"),
        Some(&false)
    );
    assert_eq!(
        s.get("/api/v1/plugins/?enabled=true", &t).await.json()["count"],
        1
    );
    assert_eq!(
        s.call("POST", "/api/v1/plugins/dns/enable/", Some(&t), None)
            .await
            .json()["enabled"],
        true
    );
    assert_eq!(
        s.get("/api/v1/plugins/dns/", &t).await.json()["oci_image"],
        "kat-plugins:latest"
    );
    assert_eq!(s.get("/api/v1/plugins/ghost/", &t).await.status, 404);
    let viewer = s.token("acme", json!({"plugins.view_plugin": {"pks": ["nmap"]}}));
    assert_eq!(s.get("/api/v1/plugins/", &viewer).await.json()["count"], 1);
    assert_eq!(
        s.call("POST", "/api/v1/plugins/nmap/disable/", Some(&viewer), None)
            .await
            .status,
        403
    );

    // The schema is OpenAPI 3 JSON and lists the routes.
    let r = s.get("/api/v1/schema/", &t).await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    for p in [
        "/api/v1/objects/",
        "/api/v1/objects/{type}/",
        "/api/v1/objects/{type}/{key}/",
        "/api/v1/objects/hostname/{key}/dnsrecord/",
        "/api/v1/file/",
        "/api/v1/file/{id}/download/",
        "/api/v1/tasks/",
        "/api/v1/tasks/{id}/cancel/",
        "/api/v1/schedules/",
        "/api/v1/object-sets/",
        "/api/v1/plugins/{id}/enable/",
        "/api/v1/organizations/",
    ] {
        assert!(paths.iter().any(|x| *x == p), "{p} missing from the schema");
    }
    assert_eq!(
        s.call("GET", "/api/v1/schema/", None, None).await.status,
        401
    );
    let _ = Value::Null;
    s.stop().await;
}

#[tokio::test]
async fn schedules_and_object_sets_have_integer_ids_and_the_manuals_example_works() {
    let s = start(Options::default()).await;
    load_plugins(&s).await;
    let t = s.token("acme", all());
    let set = s
        .post(
            "/api/v1/object-sets/",
            &t,
            json!({"name": "all", "object_type": "hostname", "all": true}),
        )
        .await
        .json();
    let set_id = set["id"].as_u64().expect("an integer id");
    let set_uuid = set["uuid"].as_str().expect("the uuid").to_string();
    // The manual's request, as written (with this set's id).
    let r = s
        .post(
            "/api/v1/schedules/",
            &t,
            json!({"plugin_id": "dns", "object_set_id": set_id, "interval": "PT24H", "enabled": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let sched = r.json();
    let sid = sched["id"].as_u64().expect("an integer id");
    assert_eq!(sched["object_set_id"], json!(set_id));
    assert!(sched["uuid"].is_string());
    // A second schedule gets the next id; both forms of id find each record.
    let r = s
        .post(
            "/api/v1/schedules/",
            &t,
            json!({"plugin_id": "dns", "object_set_id": set_uuid}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(r.json()["object_set_id"], json!(set_id));
    assert!(r.json()["id"].as_u64().unwrap() > sid);
    for path in [
        format!("/api/v1/schedules/{sid}/"),
        format!("/api/v1/schedules/{}/", sched["uuid"].as_str().unwrap()),
    ] {
        let r = s.get(&path, &t).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json()["id"], json!(sid));
    }
    for path in [
        format!("/api/v1/object-sets/{set_id}/"),
        format!("/api/v1/object-sets/{set_uuid}/"),
    ] {
        assert_eq!(s.get(&path, &t).await.json()["id"], json!(set_id), "{path}");
    }
    // Bad ids: 400 naming the field; unknown ones 404 (paths) or 400 (fields).
    for bad in [
        json!(0),
        json!(-1),
        json!(1.5),
        json!(true),
        json!("abc"),
        json!("12a"),
        json!("99999999999999999999999"),
        json!(987_654),
        json!([1]),
    ] {
        let r = s
            .post(
                "/api/v1/schedules/",
                &t,
                json!({"plugin_id": "dns", "object_set_id": bad}),
            )
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.json());
        assert_eq!(r.attr().as_deref(), Some("object_set_id"), "{bad}");
    }
    for (path, status) in [
        ("/api/v1/schedules/0/", 400),
        ("/api/v1/schedules/abc/", 400),
        ("/api/v1/schedules/987654/", 404),
        ("/api/v1/object-sets/0/", 400),
        ("/api/v1/object-sets/987654/", 404),
    ] {
        assert_eq!(s.get(path, &t).await.status, status, "{path}");
    }
    // Another organization's ids are not found, whatever their form.
    let foreign = s.token("other", all());
    assert_eq!(
        s.get(&format!("/api/v1/schedules/{sid}/"), &foreign)
            .await
            .status,
        404
    );
    assert_eq!(
        s.get(&format!("/api/v1/object-sets/{set_id}/"), &foreign)
            .await
            .status,
        404
    );
    // A pks scope admits a record by either form of its id.
    let scoped = s.token(
        "acme",
        json!({"tasks.view_schedule": {"pks": [sid.to_string()]}}),
    );
    assert_eq!(
        s.get(&format!("/api/v1/schedules/{sid}/"), &scoped)
            .await
            .status,
        200
    );
    assert_eq!(
        s.get("/api/v1/schedules/", &scoped).await.json()["count"],
        1
    );
    assert_eq!(
        s.get(&format!("/api/v1/schedules/{}/", sid + 1), &scoped)
            .await
            .status,
        403
    );
}

/// A task token's refused calls (403) are counted on its running task with the first reason, shown
/// in the task's JSON; a 400 is not a refusal, and a task that is not running records none.
#[tokio::test]
async fn refused_calls_of_a_task_are_counted_on_it() {
    for backend in [Backend::Memory, Backend::Sled] {
        let s = start(Options {
            backend,
            ..Options::default()
        })
        .await;
        let (t, id) = s.token_with_task("acme", json!({"files.add_file": {}}));
        let mut task = kat_core::task::Task::queued(
            org("acme"),
            "test-plugin",
            kat_core::task::TaskInput::default(),
        );
        task.id = id;
        s.tasks.create_tasks(vec![task]).await.unwrap();
        s.tasks
            .transition_task(
                id,
                &[kat_core::task::TaskState::Queued],
                kat_core::task::TaskPatch::to(kat_core::task::TaskState::Running),
            )
            .await
            .unwrap();
        for _ in 0..2 {
            let r = s
                .post("/api/v1/objects/", &t, hostnames(&["example.com"]))
                .await;
            assert_eq!(r.status, 403, "{}", r.json());
        }
        // Bad input is the caller's mistake, not a refusal.
        let r = s.post("/api/v1/objects/", &t, json!([1])).await;
        assert_eq!(r.status, 400, "{}", r.json());
        let op = s.operator("acme", all());
        let got = s.get(&format!("/api/v1/tasks/{id}/"), &op).await.json();
        assert_eq!(got["refused_calls"], 2, "{got}");
        let first = got["first_refusal"].as_str().unwrap_or_default();
        assert!(
            first.starts_with("POST /api/v1/objects/: 403 ") && first.contains("add_hostname"),
            "{first}"
        );
        assert_eq!(got["state"], "running");

        // A token whose task is not running (queued here) changes nothing.
        let (t2, id2) = s.token_with_task("acme", json!({"files.add_file": {}}));
        let mut queued = kat_core::task::Task::queued(
            org("acme"),
            "test-plugin",
            kat_core::task::TaskInput::default(),
        );
        queued.id = id2;
        s.tasks.create_tasks(vec![queued]).await.unwrap();
        let r = s
            .post("/api/v1/objects/", &t2, hostnames(&["example.com"]))
            .await;
        assert_eq!(r.status, 403);
        let got = s.get(&format!("/api/v1/tasks/{id2}/"), &op).await.json();
        assert_eq!(got["refused_calls"], 0, "{got}");
        assert_eq!(got["first_refusal"], Value::Null);
        s.stop().await;
    }
}

/// A running task shows the worker that holds it and until when; a queued one shows neither.
#[tokio::test]
async fn a_running_task_shows_its_worker_and_lease() {
    for backend in [Backend::Memory, Backend::Sled] {
        let s = start(Options {
            backend,
            ..Options::default()
        })
        .await;
        let queued = kat_core::task::Task::queued(
            org("acme"),
            "test-plugin",
            kat_core::task::TaskInput::default(),
        );
        let mut running = queued.clone();
        running.id = kat_core::task::TaskId::new();
        running.created_at = kat_core::clock::Timestamp::from_millis(1);
        s.tasks
            .create_tasks(vec![queued.clone(), running.clone()])
            .await
            .unwrap();
        let now = kat_core::clock::Timestamp::now();
        let until = now.plus_secs(30);
        let got = s
            .tasks
            .claim_tasks("worker-7", 1, now, until)
            .await
            .unwrap();
        assert_eq!(got[0].id, running.id, "the oldest");
        let op = s.operator("acme", all());
        let got = s
            .get(&format!("/api/v1/tasks/{}/", running.id), &op)
            .await
            .json();
        assert_eq!(got["state"], "running");
        assert_eq!(got["worker"], "worker-7", "{got}");
        assert_eq!(got["lease_until"], until.to_string(), "{got}");
        let got = s
            .get(&format!("/api/v1/tasks/{}/", queued.id), &op)
            .await
            .json();
        assert_eq!(
            (&got["worker"], &got["lease_until"]),
            (&Value::Null, &Value::Null),
            "{got}"
        );
        s.stop().await;
    }
}
