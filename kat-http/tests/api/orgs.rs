//! Organizations over the API: tokens of organizations that do not exist (or no longer exist) are
//! refused; organizations are created and deleted with `openkat.add_organization` and
//! `openkat.delete_organization`; deleting one deletes its data and leaves the others alone;
//! enabling and disabling a plugin is per organization.

use std::time::Duration;

use serde_json::json;

use kat_core::object::ObjectType;
use kat_core::plugin::{PluginDef, sync};
use kat_core::store::{FileQuery, TaskQuery};

use crate::common::*;

fn operator(s: &Server, org_code: &str, permissions: serde_json::Value) -> String {
    kat_http::mint_operator_token(
        s.auth.as_ref(),
        "admin",
        org(org_code),
        perms(permissions),
        Duration::from_secs(600),
    )
    .unwrap()
}

async fn load_plugins(s: &Server) {
    let defs = PluginDef::parse_file(
        r#"[{"plugin_id": "dns", "name": "DNS", "consumes": ["type:hostname"],
             "oci_image": "kat-plugins:latest", "oci_arguments": ["dns", "{hostname}"]}]"#,
        "plugins.json",
    )
    .unwrap();
    s.tasks.put_plugins(sync(&[], &defs, true).0).await.unwrap();
}

#[tokio::test]
async fn a_token_for_an_organization_that_does_not_exist_is_refused() {
    let s = start(Options::default()).await;
    for t in [s.token("ghost", all()), operator(&s, "ghost", all())] {
        let r = s
            .post("/api/v1/objects/", &t, hostnames(&["ghost.example"]))
            .await;
        assert_eq!(r.status, 401, "{}", r.json());
        assert_eq!(r.error_code(), "authentication_failed");
        assert!(
            r.json()["errors"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("organization does not exist")
        );
        assert_eq!(s.get("/api/v1/objects/hostname/", &t).await.status, 401);
    }
    assert_eq!(s.count("ghost", ObjectType::Hostname).await, 0);
    s.stop().await;
}

#[tokio::test]
async fn organizations_are_created_with_the_permission_only() {
    let s = start(Options::default()).await;
    let admin = operator(&s, "acme", all());
    let body = json!({"code": "beta", "name": "Beta B.V."});
    // A task token never manages organizations, whatever it holds.
    let task = s.token("acme", all());
    let r = s.post("/api/v1/organizations/", &task, body.clone()).await;
    assert_eq!(r.status, 403, "{}", r.json());
    let weak = operator(&s, "acme", json!({"openkat.view_organization": {}}));
    let r = s.post("/api/v1/organizations/", &weak, body.clone()).await;
    assert_eq!(r.status, 403);
    assert!(r.json().to_string().contains("openkat.add_organization"));
    assert!(
        s.tasks
            .get_organization(&org("beta"))
            .await
            .unwrap()
            .is_none()
    );

    for (bad, attr) in [
        (json!({"code": "Beta", "name": "x"}), "code"),
        (json!({"code": "", "name": "x"}), "code"),
        (json!({"code": 7, "name": "x"}), "code"),
        (json!({"name": "x"}), "code"),
        (json!({"code": "beta"}), "name"),
        (json!({"code": "beta", "name": "  "}), "name"),
        (json!({"code": "beta", "name": "x".repeat(127)}), "name"),
        (json!({"code": "beta", "name": "x", "tags": []}), "tags"),
    ] {
        let r = s.post("/api/v1/organizations/", &admin, bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.attr().as_deref(), Some(attr), "{bad}");
    }
    let r = s.post("/api/v1/organizations/", &admin, body.clone()).await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(r.json()["code"], "beta");
    assert_eq!(r.json()["name"], "Beta B.V.");
    let r = s.post("/api/v1/organizations/", &admin, body).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.attr().as_deref(), Some("code"));
    // The new organization's tokens work.
    let b = operator(&s, "beta", all());
    assert_eq!(
        s.post("/api/v1/objects/", &b, hostnames(&["b.example"]))
            .await
            .status,
        201
    );
    assert_eq!(
        s.get("/api/v1/organizations/beta/", &b).await.json()["name"],
        "Beta B.V."
    );
    s.stop().await;
}

#[tokio::test]
async fn deleting_an_organization_refuses_its_tokens_and_deletes_its_data() {
    for backend in [Backend::Memory, Backend::Sled] {
        deleting_an_organization(backend).await;
    }
}

async fn deleting_an_organization(backend: Backend) {
    let s = start(Options {
        backend,
        ..Options::default()
    })
    .await;
    load_plugins(&s).await;
    let admin = operator(&s, "acme", all());
    assert_eq!(
        s.post(
            "/api/v1/organizations/",
            &admin,
            json!({"code": "beta", "name": "Beta"})
        )
        .await
        .status,
        201
    );
    // Both organizations get the same kinds of data.
    let mut tokens = Vec::new();
    for code in ["acme", "beta"] {
        let op = operator(&s, code, all());
        let task = s.token(code, all());
        let host = format!("{code}.example");
        assert_eq!(
            s.post("/api/v1/objects/", &op, hostnames(&[&host]))
                .await
                .status,
            201
        );
        let r = s
            .upload(
                &task,
                "/api/v1/file/",
                &[
                    ("type", None, b"test-plugin"),
                    ("file", Some("out"), b"data"),
                ],
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        let r = s
            .post(
                "/api/v1/tasks/",
                &op,
                json!({"type": "plugin", "data": {"plugin_id": "dns", "input_data": format!("internet|{host}")}}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        let r = s
            .post(
                "/api/v1/object-sets/",
                &op,
                json!({"name": "hosts", "object_type": "hostname"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        let set = r.json()["id"].to_string();
        let r = s
            .post(
                "/api/v1/schedules/",
                &op,
                json!({"plugin_id": "dns", "object_set_id": set}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        assert_eq!(
            s.call("POST", "/api/v1/plugins/dns/disable/", Some(&op), None)
                .await
                .status,
            200
        );
        tokens.push((op, task));
    }
    // Deleting needs the permission, and is never a task token's.
    let weak = operator(&s, "acme", json!({"openkat.add_organization": {}}));
    assert_eq!(
        s.delete("/api/v1/organizations/beta/", &weak).await.status,
        403
    );
    let task = s.token("acme", all());
    assert_eq!(
        s.delete("/api/v1/organizations/beta/", &task).await.status,
        403
    );
    assert_eq!(
        s.delete("/api/v1/organizations/nope/", &admin).await.status,
        404
    );

    let r = s.delete("/api/v1/organizations/beta/", &admin).await;
    assert_eq!(r.status, 204, "{:?}", r.bytes);
    assert_eq!(
        s.delete("/api/v1/organizations/beta/", &admin).await.status,
        404
    );

    // Every token of beta is refused at once: operator and task tokens, reads and writes.
    let (beta_op, beta_task) = &tokens[1];
    for t in [beta_op, beta_task] {
        assert_eq!(s.get("/api/v1/objects/hostname/", t).await.status, 401);
        assert_eq!(
            s.post("/api/v1/objects/", t, hostnames(&["late.example"]))
                .await
                .status,
            401
        );
        let r = s
            .upload(
                t,
                "/api/v1/file/",
                &[("type", None, b"test-plugin"), ("file", Some("late"), b"x")],
            )
            .await;
        assert_eq!(r.status, 401);
    }
    // Nothing of beta is left.
    let beta = org("beta");
    assert_eq!(s.count("beta", ObjectType::Hostname).await, 0);
    assert_eq!(s.count("beta", ObjectType::Network).await, 0);
    assert_eq!(
        s.files
            .query(&FileQuery::new(beta.clone()))
            .await
            .unwrap()
            .count,
        0
    );
    let q = TaskQuery {
        org: Some(beta.clone()),
        ..TaskQuery::default()
    };
    assert_eq!(s.tasks.list_tasks(&q).await.unwrap().count, 0);
    assert!(
        s.tasks
            .list_schedules(Some(&beta))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.tasks
            .list_object_sets(Some(&beta))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.tasks.plugin_overrides(&beta).await.unwrap().is_empty());

    // acme is untouched, and its tokens still work.
    let (acme_op, acme_task) = &tokens[0];
    let acme = org("acme");
    assert_eq!(s.count("acme", ObjectType::Hostname).await, 1);
    assert_eq!(
        s.files
            .query(&FileQuery::new(acme.clone()))
            .await
            .unwrap()
            .count,
        1
    );
    let q = TaskQuery {
        org: Some(acme.clone()),
        ..TaskQuery::default()
    };
    assert_eq!(s.tasks.list_tasks(&q).await.unwrap().count, 1);
    assert_eq!(s.tasks.list_schedules(Some(&acme)).await.unwrap().len(), 1);
    assert_eq!(
        s.tasks.list_object_sets(Some(&acme)).await.unwrap().len(),
        1
    );
    assert_eq!(s.tasks.plugin_overrides(&acme).await.unwrap().len(), 1);
    assert_eq!(
        s.get("/api/v1/objects/hostname/", acme_op).await.status,
        200
    );
    assert_eq!(
        s.get("/api/v1/objects/hostname/", acme_task).await.status,
        200
    );

    // A new organization with the same code does not bring the old tokens back.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        s.post(
            "/api/v1/organizations/",
            &admin,
            json!({"code": "beta", "name": "Beta again"})
        )
        .await
        .status,
        201
    );
    for t in [beta_op, beta_task] {
        assert_eq!(s.get("/api/v1/objects/hostname/", t).await.status, 401);
    }
    let fresh = operator(&s, "beta", all());
    let r = s.get("/api/v1/objects/hostname/", &fresh).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["count"], 0, "the new beta starts empty");
    s.stop().await;
}

#[tokio::test]
async fn disabling_a_plugin_is_per_organization() {
    let s = start(Options::default()).await;
    load_plugins(&s).await;
    let a = operator(&s, "org-a", all());
    let b = operator(&s, "org-b", all());
    let r = s
        .call("POST", "/api/v1/plugins/dns/disable/", Some(&a), None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["enabled"], false);
    assert_eq!(r.json()["organization_override"], false);
    assert_eq!(r.json()["enabled_by_default"], true);
    let mine = s.get("/api/v1/plugins/dns/", &a).await.json();
    assert_eq!(mine["enabled"], false);
    let theirs = s.get("/api/v1/plugins/dns/", &b).await.json();
    assert_eq!(theirs["enabled"], true, "{theirs}");
    assert_eq!(theirs["organization_override"], serde_json::Value::Null);
    assert_eq!(
        s.get("/api/v1/plugins/?enabled=false", &a).await.json()["count"],
        1
    );
    assert_eq!(
        s.get("/api/v1/plugins/?enabled=false", &b).await.json()["count"],
        0
    );
    // The catalogue's default is untouched.
    assert!(s.tasks.get_plugin("dns").await.unwrap().unwrap().enabled);
    s.stop().await;
}
