//! The katd binary without an engine: its subcommands, a bad `--runtime` / `KAT_RUNTIME` or `--store` /
//! `KAT_STORE` (refused before anything is opened, naming the value and the valid ones), and `plan`.

mod support;

use std::path::Path;
use std::process::Output;

use support::katd;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_lists_every_subcommand() {
    let out = katd().arg("--help").output().expect("katd runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in [
        "serve", "token", "declare", "run", "tasks", "objects", "report", "files", "levels",
        "sync", "plan", "rules",
    ] {
        assert!(help.contains(&format!("  {sub} ")), "{sub} in {help}");
    }
}

#[test]
fn serve_help_names_the_runtime_and_store_flags_and_variables() {
    let out = katd()
        .args(["serve", "--help"])
        .output()
        .expect("katd runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for s in [
        "--runtime",
        "KAT_RUNTIME",
        "--store",
        "KAT_STORE",
        "podman",
        "memory",
        "--sled-cache-mib",
        "KAT_SLED_CACHE_MIB",
    ] {
        assert!(help.contains(s), "{s} in {help}");
    }
}

#[test]
fn an_unknown_runtime_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let out = katd()
        .args(["serve", "--runtime", "lxc", "--data"])
        .arg(&data)
        .env_remove("KAT_JWT_SECRET")
        .env_remove("KAT_STORE")
        .output()
        .expect("katd runs");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("katd: error: invalid input at runtime: unknown runtime \"lxc\""),
        "{err}"
    );
    if cfg!(all(feature = "docker", feature = "podman")) {
        assert!(err.contains("valid: docker, podman"), "{err}");
    }
    assert!(!data.exists(), "nothing written for a refused runtime");
}

#[cfg(feature = "sled")]
#[test]
fn a_bad_sled_cache_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    for (args, env, why) in [
        (&["--sled-cache-mib", "0"][..], None, "from 1 to"),
        (&[][..], Some("lots"), "from 1 to"),
        (
            &["--sled-cache-mib", "512", "--store", "memory"][..],
            None,
            "not sled",
        ),
    ] {
        let mut cmd = katd();
        cmd.args(["serve", "--data"]).arg(&data).args(args);
        cmd.env_remove("KAT_RUNTIME")
            .env_remove("KAT_STORE")
            .env_remove("KAT_JWT_SECRET")
            .env_remove("KAT_SLED_CACHE_MIB");
        if let Some(v) = env {
            cmd.env("KAT_SLED_CACHE_MIB", v);
        }
        let out = cmd.output().expect("katd runs");
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(
            err.starts_with("katd: error: invalid input at --sled-cache-mib: ")
                && err.contains(why),
            "{err}"
        );
        assert!(!data.exists(), "nothing written for a refused cache size");
    }
}

#[test]
fn an_unknown_runtime_from_the_environment_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = katd()
        .args(["serve", "--data"])
        .arg(dir.path())
        .env("KAT_RUNTIME", "containerd")
        .env_remove("KAT_STORE")
        .output()
        .expect("katd runs");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("unknown runtime \"containerd\""), "{err}");
}

#[test]
fn an_unknown_store_is_refused_with_the_valid_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (flag, env) in [(Some("postgres"), None), (None, Some("redis://x"))] {
        let mut cmd = katd();
        cmd.args(["serve", "--data"]).arg(dir.path());
        cmd.env_remove("KAT_RUNTIME").env_remove("KAT_STORE");
        if let Some(v) = flag {
            cmd.args(["--store", v]);
        }
        if let Some(v) = env {
            cmd.env("KAT_STORE", v);
        }
        let out = cmd.output().expect("katd runs");
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        let bad = flag.or(env).unwrap_or_default();
        assert!(
            err.contains(&format!("invalid input at store: unknown store {bad:?}")),
            "{err}"
        );
        if cfg!(feature = "sled") {
            assert!(
                err.contains("valid: sled (in the data directory), sled:<path>, memory"),
                "{err}"
            );
        }
    }
}

#[test]
fn plan_validates_the_first_party_plugins() {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/plugins.json");
    let out = katd()
        .args([
            "plan",
            "--target",
            "example.com",
            "--target",
            "192.0.2.1",
            "--plugins",
        ])
        .arg(&plugins)
        .output()
        .expect("katd runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("loaded "), "{text}");
    assert!(text.contains("plugin dns "), "{text}");
    assert!(text.contains("argv[0]: "), "{text}");
}

#[test]
fn a_token_needs_admin_or_permissions() {
    let out = katd()
        .args(["token", "--org", "acme"])
        .env("KAT_JWT_SECRET", "cli-test-secret-cli-test-secret-cli!!")
        .output()
        .expect("katd runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("give --admin or --permissions"),
        "{}",
        stderr(&out)
    );
    let out = katd()
        .args(["token", "--org", "acme", "--admin", "--no-check"])
        .env("KAT_JWT_SECRET", "cli-test-secret-cli-test-secret-cli!!")
        .output()
        .expect("katd runs");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).split('.').count(), 3);
}

#[test]
fn plan_shows_a_plugin_the_policy_refuses_and_runs_it_when_granted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins.json");
    std::fs::write(
        &plugins,
        r#"[{"plugin_id": "as-root", "oci_image": "i", "oci_arguments": ["id", "-u"], "user": "0:0"},
            {"plugin_id": "raw", "oci_image": "i", "oci_arguments": ["ping"], "cap_add": ["NET_RAW"]}]"#,
    )
    .expect("write plugins");
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"plugins": {"as-root": {"user": "0:0"}}}"#).expect("write");
    let plan = |policy: Option<&Path>| {
        let mut cmd = katd();
        cmd.args(["plan", "--plugins"]).arg(&plugins);
        cmd.env_remove("KAT_POLICY");
        if let Some(p) = policy {
            cmd.arg("--policy").arg(p);
        }
        let out = cmd.output().expect("katd runs");
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = plan(None);
    assert!(
        text.contains(
            "refused by the policy (will not run): plugin \"as-root\": user: asks for \"0:0\""
        ),
        "{text}"
    );
    assert!(
        text.contains("plugin \"raw\": cap_add: asks for NET_RAW, the operator policy allows none"),
        "{text}"
    );
    let text = plan(Some(&policy));
    assert!(text.contains("argv[0]: [\"id\",\"-u\"]"), "{text}");
    assert!(text.contains("plugin \"raw\": cap_add"), "{text}");
}

#[test]
fn a_bad_policy_is_refused_naming_the_file_the_plugin_and_the_field_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"plugins": {"as-root": {"usr": "0:0"}}}"#).expect("write");
    let data = dir.path().join("data");
    let out = katd()
        .args(["serve", "--store", "memory", "--data"])
        .arg(&data)
        .env("KAT_POLICY", &policy)
        .env_remove("KAT_RUNTIME")
        .output()
        .expect("katd runs");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "invalid input at {}: plugin \"as-root\": usr: unknown field",
            policy.display()
        )),
        "{err}"
    );
    assert!(!data.exists(), "nothing written for a bad policy");
}

#[test]
fn a_token_is_not_minted_when_the_organization_cannot_be_checked() {
    let out = katd()
        .args(["token", "--org", "acme", "--admin"])
        .args(["--api", "http://127.0.0.1:1/api/v1"])
        .env("KAT_JWT_SECRET", "cli-test-secret-cli-test-secret-cli!!")
        .output()
        .expect("katd runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no token is printed");
    assert!(
        stderr(&out).contains("cannot check that organization \"acme\" exists"),
        "{}",
        stderr(&out)
    );
}
