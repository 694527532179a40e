//! Whose rights a task or schedule runs with, and who may change a scan level (issue #16, items 1
//! and 2): against the API over sockets with kat-core's real engine behind it.

use serde_json::{Value, json};

use kat_core::clock::Timestamp;
use kat_core::object::{Object, ObjectType, ScanLevel, ScanProfile};
use kat_core::plugin::{PluginDef, sync};
use kat_core::schedule::{ObjectSet, ObjectSetId};
use kat_core::store::TaskQuery;
use kat_core::token::{Claims, TokenAuthority};

use crate::common::*;

/// `writer` declares two object permissions; `dns` declares none.
const PLUGINS: &str = r#"[
  {"plugin_id": "writer", "name": "Writer", "scan_level": 1, "consumes": ["type:hostname"],
   "oci_image": "i:1", "oci_arguments": ["w", "{hostname}"],
   "permissions": {"objects.add_hostname": {}, "objects.delete_hostname": {}}},
  {"plugin_id": "dns", "name": "DNS", "scan_level": 1, "consumes": ["type:hostname"],
   "oci_image": "i:1", "oci_arguments": ["dns", "{hostname}"]}
]"#;

async fn engine_server(backend: Backend) -> Server {
    let s = start(Options {
        backend,
        engine: true,
        ..Options::default()
    })
    .await;
    let defs = PluginDef::parse_file(PLUGINS, "plugins.json").unwrap();
    let (writes, _) = sync(&[], &defs, true);
    s.tasks.put_plugins(writes).await.unwrap();
    s
}

async fn declare(s: &Server, name: &str, level: u8) {
    let o = Object::from_json(
        ObjectType::Hostname,
        &json!({"network": "internet", "name": name}),
    )
    .unwrap();
    s.objects
        .upsert(&org("acme"), vec![o.clone()], None)
        .await
        .unwrap();
    s.objects
        .set_scan_profile(
            &org("acme"),
            ObjectType::Hostname,
            &o.natural_key(),
            ScanProfile::declared(ScanLevel::new(level).unwrap()),
        )
        .await
        .unwrap();
}

/// An operator's token (`user:<name>`) with these permissions; also its claims (for the jti).
fn user(s: &Server, name: &str, permissions: Value) -> (String, Claims) {
    let c = Claims::for_user(
        name,
        org("acme"),
        perms(permissions),
        Timestamp::now(),
        3600,
    );
    (s.auth.mint(&c).unwrap(), c)
}

async fn queued(s: &Server) -> u64 {
    s.tasks
        .list_tasks(&TaskQuery::default())
        .await
        .unwrap()
        .count
}

fn writer_task() -> Value {
    json!({"type": "plugin", "data": {"plugin_id": "writer", "input_data": "a.example"}})
}

#[tokio::test]
async fn submitting_a_plugin_needs_every_permission_it_declares() {
    for backend in [Backend::Memory, Backend::Sled] {
        let s = engine_server(backend).await;
        declare(&s, "a.example", 1).await;

        // tasks.add_task alone no longer lends the plugin's permissions.
        let (t, _) = user(&s, "alice", json!({"tasks.add_task": {}}));
        let r = s.post("/api/v1/tasks/", &t, writer_task()).await;
        assert_eq!(r.status, 403, "{}", r.json());
        assert_eq!(r.error_code(), "permission_denied");
        let detail = r.json()["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            detail.contains("plugin writer")
                && detail.contains("user:alice")
                && detail.contains("objects.add_hostname {}")
                && detail.contains("objects.delete_hostname {}"),
            "{detail}"
        );
        assert_eq!(queued(&s).await, 0, "nothing queued");

        // A pks-scoped grant does not cover the plugin's unrestricted one: only that one is named.
        let (t, _) = user(
            &s,
            "bob",
            json!({"tasks.add_task": {}, "objects.add_hostname": {"pks": ["internet|a.example"]}, "objects.delete_hostname": {}}),
        );
        let r = s.post("/api/v1/tasks/", &t, writer_task()).await;
        assert_eq!(r.status, 403, "{}", r.json());
        let detail = r.json()["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(detail.contains("objects.add_hostname {}"), "{detail}");
        assert!(!detail.contains("delete_hostname"), "{detail}");
        assert_eq!(queued(&s).await, 0);

        // A list is refused whole when one of its plugins is not covered.
        let (t, _) = user(&s, "carol", json!({"tasks.add_task": {}}));
        let both = json!([
            {"type": "plugin", "data": {"plugin_id": "dns", "input_data": "a.example"}},
            writer_task(),
        ]);
        let r = s.post("/api/v1/tasks/", &t, both).await;
        assert_eq!(r.status, 403, "{}", r.json());
        assert_eq!(
            queued(&s).await,
            0,
            "the first request was not queued either"
        );
        // ... and that submitter may still run a plugin that declares nothing.
        let r = s
            .post(
                "/api/v1/tasks/",
                &t,
                json!({"type": "plugin", "data": {"plugin_id": "dns", "input_data": "a.example"}}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        assert_eq!(queued(&s).await, 1);

        // A submitter that holds them queues the task.
        let (t, _) = user(
            &s,
            "dave",
            json!({"tasks.add_task": {}, "objects.add_hostname": {}, "objects.delete_hostname": {}}),
        );
        let r = s.post("/api/v1/tasks/", &t, writer_task()).await;
        assert_eq!(r.status, 201, "{}", r.json());
        assert_eq!(r.json()["status"], "queued");
        assert_eq!(queued(&s).await, 2);
        s.stop().await;
    }
}

async fn all_hostnames(s: &Server) -> String {
    let set = ObjectSet {
        id: ObjectSetId::new(),
        number: 0,
        name: "All hostnames".into(),
        description: String::new(),
        org: org("acme"),
        object_type: ObjectType::Hostname,
        all: true,
        filters: vec![],
        keys: vec![],
    };
    s.tasks.put_object_set(set.clone()).await.unwrap();
    set.id.to_string()
}

#[tokio::test]
async fn schedules_run_with_their_creators_rights_and_stop_when_they_are_gone() {
    for backend in [Backend::Memory, Backend::Sled] {
        let s = engine_server(backend).await;
        declare(&s, "a.example", 1).await;
        let set = all_hostnames(&s).await;
        let body = json!({"plugin_id": "writer", "object_set_id": set, "interval": "PT1H"});

        // Without the plugin's permissions: 403 naming them, nothing stored.
        let (t, _) = user(&s, "alice", json!({"tasks.add_schedule": {}}));
        let r = s.post("/api/v1/schedules/", &t, body.clone()).await;
        assert_eq!(r.status, 403, "{}", r.json());
        assert_eq!(r.error_code(), "permission_denied");
        let detail = r.json()["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            detail.contains("objects.add_hostname") && detail.contains("objects.delete_hostname"),
            "{detail}"
        );
        assert!(
            s.tasks
                .list_schedules(Some(&org("acme")))
                .await
                .unwrap()
                .is_empty()
        );
        // Nor may a schedule of a harmless plugin be switched to it.
        let r = s
            .post(
                "/api/v1/schedules/",
                &t,
                json!({"plugin_id": "dns", "object_set_id": set, "interval": "PT1H"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        let harmless = r.json()["id"].to_string();
        let (admin, _) = user(&s, "admin", all());
        let r = s
            .call(
                "PATCH",
                &format!("/api/v1/schedules/{harmless}/"),
                Some(&user(&s, "alice", json!({"tasks.change_schedule": {}})).0),
                Some(json!({"plugin_id": "writer"})),
            )
            .await;
        assert_eq!(r.status, 403, "{}", r.json());
        let r = s
            .get(&format!("/api/v1/schedules/{harmless}/"), &admin)
            .await;
        assert_eq!(r.json()["plugin_id"], "dns", "unchanged");
        s.delete(&format!("/api/v1/schedules/{harmless}/"), &admin)
            .await;

        // Two owners who hold the rights: both schedules are created with their owner.
        let rights = json!({"tasks.add_schedule": {}, "objects.add_hostname": {}, "objects.delete_hostname": {}});
        let (bob, bob_claims) = user(&s, "bob", rights.clone());
        let (carol, _) = user(&s, "carol", rights);
        let r = s.post("/api/v1/schedules/", &bob, body.clone()).await;
        assert_eq!(r.status, 201, "{}", r.json());
        assert_eq!(r.json()["owner"], "user:bob");
        assert_eq!(r.json()["disabled_reason"], Value::Null);
        let gone = r.json()["id"].to_string();
        let r = s.post("/api/v1/schedules/", &carol, body.clone()).await;
        assert_eq!(r.status, 201, "{}", r.json());
        let live = r.json()["id"].to_string();
        let live_uuid = r.json()["uuid"].as_str().unwrap().to_string();

        // Bob's token is revoked: at the next tick his schedule creates nothing and is disabled
        // with the reason; Carol's runs.
        s.auth
            .revoke(&bob_claims.jti, bob_claims.exp)
            .await
            .unwrap();
        let engine = s.engine.clone().unwrap();
        let r = engine.tick(Timestamp::now().plus_secs(1)).await.unwrap();
        assert_eq!((r.schedules, r.tasks, r.disabled), (2, 1, 1), "{r:?}");
        let tasks = s
            .tasks
            .list_tasks(&TaskQuery::default())
            .await
            .unwrap()
            .items;
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].schedule.map(|x| x.to_string()), Some(live_uuid));
        let r = s.get(&format!("/api/v1/schedules/{gone}/"), &admin).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["enabled"], false, "{}", r.json());
        let reason = r.json()["disabled_reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            reason.contains("user:bob") && reason.contains("revoked"),
            "{reason}"
        );
        let r = s.get(&format!("/api/v1/schedules/{live}/"), &admin).await;
        assert_eq!(r.json()["enabled"], true);

        // Someone who holds the rights enables it again: it is theirs now, and the reason is gone.
        let r = s
            .patch(
                &format!("/api/v1/schedules/{gone}/"),
                &admin,
                json!({"enabled": true}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json());
        assert_eq!(r.json()["owner"], "user:admin");
        assert_eq!(r.json()["disabled_reason"], Value::Null);
        s.stop().await;
    }
}

#[tokio::test]
async fn task_tokens_cannot_change_scan_levels() {
    for backend in [Backend::Memory, Backend::Sled] {
        let s = engine_server(backend).await;
        declare(&s, "a.example", 1).await;
        let h = "/api/v1/objects/hostname/internet%7Ca.example/";
        let level = |s: &Server| {
            let objects = s.objects.clone();
            async move {
                objects
                    .get(
                        &org("acme"),
                        ObjectType::Hostname,
                        &ObjectType::Hostname
                            .parse_key("internet|a.example")
                            .unwrap(),
                    )
                    .await
                    .unwrap()
                    .unwrap()
                    .scan
                    .unwrap()
            }
        };
        // The original's dns plugin declares objects.change_hostname: its task token may change a
        // hostname's attributes but never its level, whatever the value.
        let t = s.token(
            "acme",
            json!({"objects.change_hostname": {}, "objects.add_hostname": {}, "objects.view_hostname": {}}),
        );
        for body in [
            json!({"scan_level": 4}),
            json!({"scan_level": null}),
            json!({"declared": true}),
            json!({"scan_level": 4, "root": true}),
        ] {
            let r = s.patch(h, &t, body.clone()).await;
            assert_eq!(r.status, 403, "{body}: {}", r.json());
            assert_eq!(r.error_code(), "permission_denied");
            assert!(
                r.attr()
                    .is_some_and(|a| a == "scan_level" || a == "declared")
            );
            let detail = r.json()["errors"][0]["detail"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(detail.contains("objects.can_set_scan_level"), "{detail}");
        }
        assert_eq!(
            level(&s).await,
            ScanProfile::declared(ScanLevel::new(1).unwrap()),
            "the level is unchanged"
        );

        // Writes that carry a level are refused whole, on every object route.
        let with_level = |name: &str| json!({"network": "internet", "name": name, "scan_level": 4});
        let r = s
            .post(
                "/api/v1/objects/",
                &t,
                json!({"hostname": [{"network": "internet", "name": "new.example"}, with_level("a.example")]}),
            )
            .await;
        assert_eq!(r.status, 403, "{}", r.json());
        assert_eq!(r.attr().as_deref(), Some("hostname[1].scan_level"));
        let r = s
            .post("/api/v1/objects/hostname/", &t, with_level("new.example"))
            .await;
        assert_eq!(r.status, 403, "{}", r.json());
        assert_eq!(r.attr().as_deref(), Some("scan_level"));
        let r = s
            .post(
                "/api/v1/objects/hostname/",
                &t,
                json!([{"network": "internet", "name": "new.example", "declared": true}]),
            )
            .await;
        assert_eq!(r.status, 403, "{}", r.json());
        assert_eq!(r.attr().as_deref(), Some("[0].declared"));
        assert_eq!(
            s.count("acme", ObjectType::Hostname).await,
            1,
            "nothing written"
        );
        assert_eq!(
            level(&s).await,
            ScanProfile::declared(ScanLevel::new(1).unwrap())
        );
        // An object posted back as a GET returned it without a level is fine, and the upsert keeps
        // the stored level.
        let r = s
            .post(
                "/api/v1/objects/",
                &t,
                json!({"hostname": [{"network": "internet", "name": "a.example", "scan_level": null, "declared": false}]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        assert_eq!(r.json()["hostname"][0]["scan_level"], 1);

        // Operators: holding everything else is not enough; the permission can be scoped by pk.
        let mut most = all();
        most.as_object_mut()
            .unwrap()
            .remove("objects.can_set_scan_level");
        let (op, _) = user(&s, "ops", most);
        let r = s.patch(h, &op, json!({"scan_level": 3})).await;
        assert_eq!(r.status, 403, "{}", r.json());
        let (op, _) = user(
            &s,
            "ops",
            json!({"objects.change_hostname": {}, "objects.view_hostname": {}, "objects.can_set_scan_level": {"pks": ["internet|a.example"]}}),
        );
        let r = s.patch(h, &op, json!({"scan_level": 3})).await;
        assert_eq!(r.status, 200, "{}", r.json());
        assert_eq!(r.json()["scan_level"], 3);
        declare(&s, "b.example", 1).await;
        let r = s
            .patch(
                "/api/v1/objects/hostname/internet%7Cb.example/",
                &op,
                json!({"scan_level": 3}),
            )
            .await;
        assert_eq!(r.status, 403, "{}", r.json());
        // An admin token holds it.
        let (admin, _) = user(&s, "admin", all());
        let r = s.patch(h, &admin, json!({"scan_level": 4})).await;
        assert_eq!(r.status, 200, "{}", r.json());
        assert_eq!(r.json()["scan_level"], 4);
        s.stop().await;
    }
}
