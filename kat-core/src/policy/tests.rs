use serde_json::json;

use super::*;
use crate::plugin::{PluginRecord, sync_with_policy};

fn plugin(extra: serde_json::Value) -> PluginDef {
    let mut v = json!({"plugin_id": "tool", "oci_image": "i", "oci_arguments": ["run"]});
    if let (Some(m), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        m.extend(e);
    }
    PluginDef::from_json(&v, "plugins.json[0]").unwrap()
}

fn parse_err(text: &str) -> String {
    Policy::parse(text, "policy.json").unwrap_err().to_string()
}

#[test]
fn a_policy_parses_grants_per_plugin() {
    let p = Policy::parse(
        r#"{"plugins": {
            "tool": {"user": "0:0", "cap_add": ["CAP_NET_RAW", "SYS_ADMIN"],
                     "writable_paths": ["/var/cache/tool"],
                     "extra_permissions": {"objects.add_hostname": {}}},
            "other": {}
        }}"#,
        "policy.json",
    )
    .unwrap();
    let g = p.grant("tool").unwrap();
    assert_eq!(g.user.as_deref(), Some("0:0"));
    assert_eq!(
        g.cap_add.iter().map(String::as_str).collect::<Vec<_>>(),
        ["NET_RAW", "SYS_ADMIN"]
    );
    assert_eq!(g.writable_paths, ["/var/cache/tool"]);
    assert_eq!(g.extra_permissions.0.len(), 1);
    assert_eq!(p.grant("other"), Some(&Grant::default()));
    assert_eq!(p.grant("nobody-named"), None);
    assert_eq!(Policy::parse("{}", "p.json").unwrap(), Policy::default());
}

#[test]
fn parse_errors_name_the_file_the_plugin_and_the_field() {
    let e = parse_err("[");
    assert!(
        e.contains("policy.json") && e.contains("not valid JSON"),
        "{e}"
    );
    let e = parse_err("[]");
    assert!(
        e.contains("policy.json") && e.contains("JSON object"),
        "{e}"
    );
    let e = parse_err(r#"{"plugin": {}}"#);
    assert!(
        e.contains("policy.json: plugin") && e.contains("unknown field"),
        "{e}"
    );
    let e = parse_err(r#"{"plugins": []}"#);
    assert!(e.contains("policy.json: plugins"), "{e}");
    let e = parse_err(r#"{"plugins": {"Bad Id": {}}}"#);
    assert!(e.contains("plugin \"Bad Id\""), "{e}");
    let e = parse_err(r#"{"plugins": {"tool": {"users": "0:0"}}}"#);
    assert!(
        e.contains("policy.json: plugin \"tool\": users") && e.contains("unknown field"),
        "{e}"
    );
    let e = parse_err(r#"{"plugins": {"tool": {"user": ""}}}"#);
    assert!(e.contains("plugin \"tool\": user"), "{e}");
    let e = parse_err(r#"{"plugins": {"tool": {"user": 0}}}"#);
    assert!(e.contains("plugin \"tool\": user"), "{e}");
    let e = parse_err(r#"{"plugins": {"tool": {"cap_add": ["net raw"]}}}"#);
    assert!(
        e.contains("plugin \"tool\": cap_add[0]") && e.contains("\"net raw\""),
        "{e}"
    );
    let e = parse_err(r#"{"plugins": {"tool": {"cap_add": "NET_RAW"}}}"#);
    assert!(e.contains("plugin \"tool\": cap_add"), "{e}");
    let e = parse_err(r#"{"plugins": {"tool": {"cap_add": [1]}}}"#);
    assert!(e.contains("cap_add[0]"), "{e}");
    for bad in ["relative", "/", "/a/../etc", "/a/./b"] {
        let e = parse_err(&json!({"plugins": {"tool": {"writable_paths": [bad]}}}).to_string());
        assert!(
            e.contains("plugin \"tool\": writable_paths[0]"),
            "{bad}: {e}"
        );
    }
    let e = parse_err(r#"{"plugins": {"tool": {"extra_permissions": {"no.such": {}}}}}"#);
    assert!(e.contains("plugin \"tool\": extra_permissions"), "{e}");
}

#[test]
fn a_policy_file_that_cannot_be_read_is_named() {
    let e = Policy::load(Path::new("/nonexistent/policy.json"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/policy.json") && e.contains("cannot read"),
        "{e}"
    );
}

#[test]
fn the_hardened_default_needs_no_grant() {
    let none = Policy::default();
    assert_eq!(none.refusal(&plugin(json!({}))), None);
    assert_eq!(
        none.refusal(&plugin(json!({"user": DEFAULT_USER}))),
        None,
        "asking for the default user is asking for nothing"
    );
}

#[test]
fn without_a_grant_a_user_or_capabilities_are_refused_naming_plugin_field_ask_and_allowance() {
    let none = Policy::default();
    let why = none.refusal(&plugin(json!({"user": "0:0"}))).unwrap();
    assert_eq!(
        why,
        "plugin \"tool\": user: asks for \"0:0\", the operator policy allows only the default user \"65534:65534\""
    );
    for user in ["0", "root", "1000:1000"] {
        assert!(
            none.refusal(&plugin(json!({ "user": user }))).is_some(),
            "{user}"
        );
    }
    let why = none
        .refusal(&plugin(json!({"cap_add": ["SYS_ADMIN"]})))
        .unwrap();
    assert!(
        why.contains("plugin \"tool\": cap_add: asks for SYS_ADMIN") && why.contains("allows none"),
        "{why}"
    );
    let why = none.refusal(&plugin(json!({"cap_add": ["ALL"]}))).unwrap();
    assert!(why.contains("ALL"), "{why}");
    let e = none.check(&plugin(json!({"user": "0:0"}))).unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
}

#[test]
fn a_grant_allows_exactly_what_it_names() {
    let p = Policy::parse(
        r#"{"plugins": {"tool": {"user": "0:0", "cap_add": ["NET_RAW"]}}}"#,
        "policy.json",
    )
    .unwrap();
    assert_eq!(p.refusal(&plugin(json!({"user": "0:0"}))), None);
    assert_eq!(
        p.refusal(&plugin(json!({"user": "0:0", "cap_add": ["CAP_NET_RAW"]}))),
        None,
        "CAP_ prefixes compare as bare names"
    );
    let why = p.refusal(&plugin(json!({"user": "0"}))).unwrap();
    assert!(
        why.contains("asks for \"0\"") && why.contains("only user \"0:0\""),
        "users compare exactly: {why}"
    );
    let why = p
        .refusal(&plugin(json!({"cap_add": ["NET_RAW", "SYS_ADMIN"]})))
        .unwrap();
    assert!(
        why.contains("allows only NET_RAW") && why.contains("not granted: SYS_ADMIN"),
        "{why}"
    );
    // A grant for one plugin is no grant for another.
    let mut other = plugin(json!({"user": "0:0"}));
    other.plugin_id = "other".into();
    assert!(p.refusal(&other).is_some());
    // ALL grants every capability.
    let all = Policy::parse(r#"{"plugins": {"tool": {"cap_add": ["ALL"]}}}"#, "p").unwrap();
    assert_eq!(
        all.refusal(&plugin(json!({"cap_add": ["SYS_ADMIN", "ALL"]}))),
        None
    );
}

#[test]
fn sync_keeps_a_refused_plugin_marked_and_clears_the_mark_when_the_policy_grants_it() {
    let defs = vec![plugin(json!({"user": "0:0"}))];
    let (writes, report) = sync_with_policy(&[], &defs, true, &Policy::default());
    assert_eq!(report.added, ["tool"]);
    assert!(report.refused["tool"].contains("user"));
    assert!(writes[0].enabled, "refusal is not the enabled flag");
    assert!(writes[0].refused.as_deref().unwrap().contains("\"0:0\""));
    let cat: Vec<PluginRecord> = writes;
    // The same policy again changes nothing.
    let (again, report) = sync_with_policy(&cat, &defs, true, &Policy::default());
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(report.unchanged, ["tool"]);
    // A policy granting it updates the record.
    let grant = Policy::parse(r#"{"plugins": {"tool": {"user": "0:0"}}}"#, "p").unwrap();
    let (writes, report) = sync_with_policy(&cat, &defs, true, &grant);
    assert_eq!(report.updated, ["tool"]);
    assert!(report.refused.is_empty());
    assert_eq!(writes[0].refused, None);
}

#[test]
fn writable_paths_are_granted_with_what_lies_below_them() {
    let p = Policy::parse(
        r#"{"plugins": {"tool": {"writable_paths": ["/var/cache/tool"]}}}"#,
        "policy.json",
    )
    .unwrap();
    for ok in ["/var/cache/tool", "/var/cache/tool/sub"] {
        assert_eq!(
            p.refusal(&plugin(json!({ "writable_paths": [ok] }))),
            None,
            "{ok}"
        );
    }
    for bad in ["/var/cache", "/var/cache/toolbox", "/etc"] {
        let why = p
            .refusal(&plugin(json!({ "writable_paths": [bad] })))
            .unwrap();
        assert!(
            why.contains("plugin \"tool\": writable_paths: asks for")
                && why.contains("allows only /var/cache/tool (and below)")
                && why.contains(&format!("not granted: {bad}")),
            "{why}"
        );
    }
    let why = Policy::default()
        .refusal(&plugin(json!({"writable_paths": ["/data"]})))
        .unwrap();
    assert!(why.contains("allows none"), "{why}");
}

#[test]
fn plugins_and_policies_never_name_reserved_or_odd_writable_paths() {
    for bad in [
        "/plugin",
        "/plugin/entrypoint",
        "/proc/x",
        "/tmp",
        "/dev",
        "/a//b",
        "/a/",
        "/a,b",
        "/a:b",
    ] {
        let e = PluginDef::from_json(
            &json!({"plugin_id": "tool", "oci_image": "i", "writable_paths": [bad]}),
            "plugins.json[0]",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("plugin \"tool\": writable_paths[0]"),
            "{bad}: {e}"
        );
        let e = parse_err(&json!({"plugins": {"tool": {"writable_paths": [bad]}}}).to_string());
        assert!(e.contains("writable_paths[0]"), "{bad}: {e}");
    }
    assert!(
        check_writable_path("/tmpfoo").is_ok(),
        "a sibling of /tmp is not /tmp"
    );
}

#[test]
fn privileges_are_what_the_plugin_asks_else_its_grant() {
    let p = Policy::parse(
        r#"{"plugins": {"tool": {"user": "0:0", "cap_add": ["NET_RAW", "NET_ADMIN"],
            "writable_paths": ["/var/cache"], "extra_permissions": {"objects.add_ipport": {}}}}}"#,
        "policy.json",
    )
    .unwrap();
    // Asks for nothing: the grant, whole.
    let got = p.privileges(&plugin(json!({}))).unwrap();
    assert_eq!(got.user, "0:0");
    assert_eq!(got.cap_add, ["NET_ADMIN", "NET_RAW"]);
    assert_eq!(got.writable_paths, ["/var/cache"]);
    assert_eq!(got.extra_permissions.0.len(), 1);
    // Asks for part of it: that part, field by field.
    let got = p
        .privileges(&plugin(json!({"user": "65534:65534", "cap_add": ["NET_RAW"], "writable_paths": ["/var/cache/t"]})))
        .unwrap();
    assert_eq!(got.user, "65534:65534");
    assert_eq!(got.cap_add, ["NET_RAW"]);
    assert_eq!(got.writable_paths, ["/var/cache/t"]);
    // Asks for more: refused, as before.
    let e = p
        .privileges(&plugin(json!({"cap_add": ["SYS_ADMIN"]})))
        .unwrap_err();
    assert!(e.to_string().contains("cap_add"), "{e}");
    // Another plugin, or no policy: the hardened default.
    for (policy, def) in [
        (p.clone(), plugin(json!({"plugin_id": "other"}))),
        (Policy::default(), plugin(json!({}))),
    ] {
        let got = policy.privileges(&def).unwrap();
        assert_eq!(got.user, DEFAULT_USER);
        assert!(got.cap_add.is_empty() && got.writable_paths.is_empty());
        assert!(got.extra_permissions.0.is_empty());
    }
}

#[test]
fn a_grant_cannot_give_a_task_the_right_to_change_scan_levels() {
    let e = parse_err(
        r#"{"plugins": {"tool": {"extra_permissions": {"objects.can_set_scan_level": {}}}}}"#,
    );
    assert!(
        e.contains("policy.json: plugin \"tool\": extra_permissions.objects.can_set_scan_level"),
        "{e}"
    );
}
