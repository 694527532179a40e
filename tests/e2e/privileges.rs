//! Privileges are the operator's policy: a plugin asking to run as root (or with capabilities) is
//! refused without a grant, and runs as it asked with one.

use serde_json::{Value, json};

use kat::core::policy::Policy;

use crate::harness::{plugin, start_with};

/// A plugin that prints the uid it runs as, asking for root; and a plain one beside it.
fn catalogue() -> Value {
    let mut root = plugin("whoami-root", 0, json!([]), json!(["id", "-u"]));
    root["user"] = json!("0:0");
    json!([root, plugin("whoami", 0, json!([]), json!(["id", "-u"]))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_asking_for_root_without_a_grant_is_refused_and_never_runs() {
    let Some(k) = start_with(catalogue(), |_| {}).await else {
        return;
    };
    assert!(k.d.sync_report().refused.contains_key("whoami-root"));
    let p = k.get("/plugins/whoami-root/").await;
    let why = p["refused"].as_str().unwrap_or_default();
    assert!(
        why.contains("plugin \"whoami-root\": user: asks for \"0:0\"")
            && why.contains("only the default user"),
        "{p}"
    );
    let (s, v) = k
        .post(
            "/tasks/",
            json!({"type": "plugin", "data": {"plugin_id": "whoami-root", "input_data": null}}),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(v.to_string().contains("asks for \\\"0:0\\\""), "{v}");
    assert!(k.tasks_of("whoami-root").await.is_empty(), "no task");
    // The rest of the catalogue serves, as the default user.
    assert_eq!(k.get("/plugins/whoami/").await["refused"], Value::Null);
    let id = k.submit("whoami", &[]).await[0];
    let t = k.wait(id).await;
    assert_eq!(t["state"], "completed", "{t}");
    let out = k.files_of(id).await;
    assert_eq!(k.content(&out[0]).await.trim(), "65534");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_granted_root_by_the_policy_runs_as_uid_0() {
    let policy = Policy::parse(
        r#"{"plugins": {"whoami-root": {"user": "0:0"}}}"#,
        "policy.json",
    )
    .expect("policy");
    let Some(k) = start_with(catalogue(), |cfg| cfg.policy = policy).await else {
        return;
    };
    assert!(k.d.sync_report().refused.is_empty());
    assert_eq!(k.get("/plugins/whoami-root/").await["refused"], Value::Null);
    let id = k.submit("whoami-root", &[]).await[0];
    let t = k.wait(id).await;
    assert_eq!(t["state"], "completed", "{t}");
    let out = k.files_of(id).await;
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        k.content(&out[0]).await.trim(),
        "0",
        "uid inside the container"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writable_path_is_a_tmpfs_only_when_the_policy_grants_it() {
    let mut scratch = plugin(
        "scratch",
        0,
        json!([]),
        json!([
            "sh",
            "-c",
            "echo kept > /var/cache/kat/x && cat /var/cache/kat/x && id -u"
        ]),
    );
    scratch["writable_paths"] = json!(["/var/cache/kat"]);
    let Some(k) = start_with(json!([scratch.clone()]), |_| {}).await else {
        return;
    };
    let why = k.get("/plugins/scratch/").await["refused"].clone();
    assert!(
        why.as_str()
            .unwrap_or_default()
            .contains("plugin \"scratch\": writable_paths: asks for /var/cache/kat"),
        "{why}"
    );
    let policy = Policy::parse(
        r#"{"plugins": {"scratch": {"writable_paths": ["/var/cache"]}}}"#,
        "policy.json",
    )
    .expect("policy");
    let Some(k) = start_with(json!([scratch]), |cfg| cfg.policy = policy).await else {
        return;
    };
    let id = k.submit("scratch", &[]).await[0];
    let t = k.wait(id).await;
    assert_eq!(t["state"], "completed", "{t}");
    let out = k.files_of(id).await;
    assert_eq!(
        k.content(&out[0]).await,
        "kept\n65534\n",
        "written as nobody under a read-only root"
    );
}

/// A plugin written for OpenKAT knows nothing of users or capabilities: it asks for nothing, and the
/// operator's grant alone gives it uid 0 and NET_RAW (and nothing else); without the grant it runs as
/// nobody with no capability.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_asking_for_nothing_gets_uid_0_and_net_raw_from_the_policy_alone() {
    let probe = plugin(
        "raw-probe",
        0,
        json!([]),
        json!(["sh", "-c", "id -u; grep CapEff /proc/self/status"]),
    );
    let policy = Policy::parse(
        r#"{"plugins": {"raw-probe": {"user": "0:0", "cap_add": ["NET_RAW"]}}}"#,
        "policy.json",
    )
    .expect("policy");
    for (granted, want) in [
        (true, "0\nCapEff:\t0000000000002000\n"),
        (false, "65534\nCapEff:\t0000000000000000\n"),
    ] {
        let p = if granted {
            policy.clone()
        } else {
            Policy::default()
        };
        let Some(k) = start_with(json!([probe.clone()]), |cfg| cfg.policy = p).await else {
            return;
        };
        assert_eq!(k.get("/plugins/raw-probe/").await["refused"], Value::Null);
        let id = k.submit("raw-probe", &[]).await[0];
        let t = k.wait(id).await;
        assert_eq!(t["state"], "completed", "{t}");
        let out = k.files_of(id).await;
        assert_eq!(k.content(&out[0]).await, want, "granted: {granted}");
    }
}

/// The capability sets of the plugin's process, as `/proc/self/status` shows them (hex masks).
async fn caps_of(k: &crate::harness::Kat, plugin: &str) -> std::collections::BTreeMap<String, u64> {
    let id = k.submit(plugin, &[]).await[0];
    let t = k.wait(id).await;
    assert_eq!(t["state"], "completed", "{t}");
    let out = k.files_of(id).await;
    assert_eq!(out.len(), 1, "{out:?}");
    k.content(&out[0])
        .await
        .lines()
        .filter_map(|l| {
            let (name, mask) = l.split_once(':')?;
            Some((
                name.trim().to_string(),
                u64::from_str_radix(mask.trim(), 16).ok()?,
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_capability_is_the_only_one_a_plugin_gets() {
    // CAP_NET_RAW is bit 13.
    const NET_RAW: u64 = 1 << 13;
    let mut root = plugin(
        "caps-root",
        0,
        json!([]),
        json!(["grep", "^Cap", "/proc/self/status"]),
    );
    root["user"] = json!("0:0");
    root["cap_add"] = json!(["NET_RAW"]);
    let mut nobody = plugin(
        "caps-nobody",
        0,
        json!([]),
        json!(["grep", "^Cap", "/proc/self/status"]),
    );
    nobody["cap_add"] = json!(["NET_RAW"]);
    let policy = Policy::parse(
        r#"{"plugins": {"caps-root": {"user": "0:0", "cap_add": ["NET_RAW"]},
                        "caps-nobody": {"cap_add": ["NET_RAW"]}}}"#,
        "policy.json",
    )
    .expect("policy");
    let Some(k) = start_with(json!([root, nobody]), |cfg| cfg.policy = policy).await else {
        return;
    };
    // As root: exactly the granted capability, effective, on both engines.
    let caps = caps_of(&k, "caps-root").await;
    assert_eq!(caps.get("CapEff"), Some(&NET_RAW), "{caps:?}");
    assert_eq!(caps.get("CapBnd"), Some(&NET_RAW), "{caps:?}");
    assert_eq!(caps.get("CapAmb"), Some(&0), "{caps:?}");
    // As nobody: the granted capability bounds the process and nothing else is there.
    let caps = caps_of(&k, "caps-nobody").await;
    assert_eq!(caps.get("CapBnd"), Some(&NET_RAW), "{caps:?}");
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        let mask = caps.get(set).copied().unwrap_or(u64::MAX);
        assert_eq!(mask & !NET_RAW, 0, "{set}: {caps:?}");
    }
    eprintln!(
        "{:?}: caps of a non-root plugin granted NET_RAW: {caps:?}",
        crate::harness::engine()
    );
}
