//! Whose rights a plugin runs with, and that a plugin's writes never change a scan level: a real
//! deployment (sled, a container engine, the API over TCP) and plugin containers using their own tokens.

use std::time::Duration;

use kat::core::object::{ObjectType, ScanLevel, ScanProfile};
use kat::core::store::TaskQuery;
use serde_json::json;

use crate::harness::{plugin, post_json, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_lends_no_permissions_and_a_plugin_cannot_raise_a_level() {
    // `raiser` declares what the original's dns does (add and change hostnames) and tries to raise
    // a.example to level 4 with its task token; if that is refused it writes b.example without a
    // level, and a.example again with `scan_level: null` (what a GET of a level-less object gives).
    let raise = post_json(
        "/objects/",
        r#"{\"hostname\": [{\"network\": \"internet\", \"name\": \"a.example\", \"scan_level\": 4}]}"#,
    );
    let plain = post_json(
        "/objects/",
        r#"{\"hostname\": [{\"network\": \"internet\", \"name\": \"b.example\"}, {\"network\": \"internet\", \"name\": \"a.example\", \"scan_level\": null}]}"#,
    );
    let mut raiser = plugin(
        "raiser",
        1,
        json!(["type:hostname"]),
        json!([
            "sh",
            "-c",
            format!("if {raise}; then echo raised >&2; exit 3; fi; {plain} >/dev/null")
        ]),
    );
    raiser["permissions"] = json!({"objects.add_hostname": {}, "objects.change_hostname": {}});
    let Some(k) = start(json!([raiser])).await else {
        return;
    };
    k.declare("hostname", &["a.example"], Some(1)).await;

    // A token with tasks.add_task but not the plugin's permissions: 403 naming them, nothing queued.
    let weak = kat::http::mint_operator_token(
        k.d.tokens().as_ref(),
        "intern",
        k.org.clone(),
        kat::core::permission::Permissions::from_json(&json!({"tasks.add_task": {}}), "test")
            .expect("permissions"),
        Duration::from_secs(600),
    )
    .expect("token");
    let r = k
        .http
        .post(k.url("/tasks/"))
        .header("Authorization", format!("Token {weak}"))
        .json(
            &json!({"type": "plugin", "data": {"plugin_id": "raiser", "input_data": "a.example"}}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 403);
    let body = r.text().await.expect("body");
    assert!(
        body.contains("objects.add_hostname") && body.contains("objects.change_hostname"),
        "{body}"
    );
    let none =
        k.d.tasks()
            .list_tasks(&TaskQuery::default())
            .await
            .expect("tasks");
    assert_eq!(none.count, 0, "nothing queued");

    // The operator holds them: the task runs, and its attempt to raise the level is refused.
    let id = k.submit("raiser", &["a.example"]).await[0];
    let t = k.wait(id).await;
    assert_eq!(t["state"], "completed", "{t}");
    let get = |name: &str| {
        let key = ObjectType::Hostname
            .parse_key(&format!("internet|{name}"))
            .expect("key");
        let objects = k.d.objects().clone();
        let org = k.org.clone();
        async move {
            objects
                .get(&org, ObjectType::Hostname, &key)
                .await
                .expect("get")
        }
    };
    let a = get("a.example").await.expect("a.example");
    assert_eq!(
        a.scan,
        Some(ScanProfile::declared(ScanLevel::new(1).expect("level"))),
        "the level is unchanged"
    );
    let b = get("b.example")
        .await
        .expect("the plugin's level-less write");
    assert_eq!(b.scan.and_then(|s| s.level), None);
}
