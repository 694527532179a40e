//! `katd rules` against a real `katd serve` (memory store, Docker, the shipped plugins and, beside
//! them, the shipped business rules), and a bad rules file refused at start.

#![cfg(feature = "docker")]

mod support;

use std::path::Path;
use std::process::{Output, Stdio};

use support::{VOLUME, docker_ready, free_port, katd, wait_up};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn shipped(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins")
        .join(file)
}

fn rules(api: &str, token: &str, args: &[&str]) -> Output {
    katd()
        .arg("rules")
        .args(args)
        .env("KAT_API", api)
        .env("KAT_TOKEN", token)
        .output()
        .expect("katd runs")
}

#[tokio::test]
async fn list_disable_enable_and_run_through_the_api() {
    let Some(entrypoint) = docker_ready().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    let port = free_port();
    let mut child = katd()
        .args([
            "serve",
            "--store",
            "memory",
            "--runtime",
            "docker",
            "--org",
            "acme",
        ])
        .args(["--tick", "3600", "--data"])
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--plugins")
        .arg(shipped("plugins.json"))
        .arg("--token-out")
        .arg(&token_file)
        .arg("--entrypoint")
        .arg(&entrypoint)
        .env("ENTRYPOINT_VOLUME", VOLUME)
        .env("KAT_JWT_SECRET", "rules-test-secret-rules-test-secret!!")
        .env_remove("KAT_RULES")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("katd starts");
    wait_up(port, &token_file).await;
    let token = std::fs::read_to_string(&token_file).expect("token");
    let api = format!("http://127.0.0.1:{port}/api/v1");

    let out = rules(&api, &token, &["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = text(&out.stdout);
    assert_eq!(
        list.lines().count(),
        20,
        "a header and the 19 shipped rules: {list}"
    );
    assert!(
        list.lines().any(|l| l.starts_with("missing_spf ")
            && l.contains(" yes ")
            && l.contains("KAT-NO-SPF")
            && l.ends_with("dns")),
        "{list}"
    );

    let out = rules(&api, &token, &["disable", "missing_spf"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("missing_spf "),
        "{}",
        text(&out.stdout)
    );
    let list = text(&rules(&api, &token, &["list"]).stdout);
    assert!(
        list.lines()
            .any(|l| l.starts_with("missing_spf ") && l.contains(" no ")),
        "{list}"
    );
    let out = rules(&api, &token, &["enable", "missing_spf"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = rules(&api, &token, &["run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("0 subjects evaluated"),
        "{}",
        text(&out.stdout)
    );

    let out = rules(&api, &token, &["enable", "no_such_rule"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("HTTP 404"),
        "{}",
        text(&out.stderr)
    );
    let out = rules(&api, "not-a-token", &["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("HTTP 401"),
        "{}",
        text(&out.stderr)
    );

    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_bad_rules_file_stops_serve_naming_the_file_the_rule_and_the_field_before_anything_is_written()
{
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("rules.json");
    std::fs::write(
        &bad,
        r#"[{"name": "odd", "object_type": "hostname", "finding_type": "KAT-X",
            "condition": {"has": {"type": "dnstxtrecord", "where": {"colour": {"eq": "red"}}}}}]"#,
    )
    .expect("write");
    let data = dir.path().join("data");
    let out = katd()
        .args(["serve", "--store", "memory", "--data"])
        .arg(&data)
        .arg("--rules")
        .arg(&bad)
        .env("KAT_JWT_SECRET", "rules-test-secret-rules-test-secret!!")
        .env_remove("KAT_RUNTIME")
        .output()
        .expect("katd runs");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}[0]: rule \"odd\": condition.has.where.colour",
            bad.display()
        )),
        "{err}"
    );
    assert!(!data.exists(), "nothing written for a bad rules file");
    // A rule that requires a plugin the catalogue lacks is refused too.
    std::fs::write(
        &bad,
        r#"[{"name": "odd", "object_type": "hostname", "finding_type": "KAT-X", "requires": ["nmap-x"],
            "condition": {"not": {"has": {"type": "dnscaarecord"}}}}]"#,
    )
    .expect("write");
    let out = katd()
        .args(["serve", "--store", "memory", "--data"])
        .arg(&data)
        .arg("--plugins")
        .arg(shipped("plugins.json"))
        .env("KAT_RULES", &bad)
        .env("KAT_JWT_SECRET", "rules-test-secret-rules-test-secret!!")
        .output()
        .expect("katd runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("rule \"odd\": requires[0]"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn rules_run_on_a_store_directly_needs_a_rules_file_and_reports_each_organization() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let out = katd()
        .args(["sync", "--data"])
        .arg(&data)
        .arg("--plugins")
        .arg(shipped("plugins.json"))
        .output()
        .expect("katd runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = katd()
        .args(["rules", "run", "--data"])
        .arg(&data)
        .output()
        .expect("katd runs");
    assert_eq!(out.status.code(), Some(2), "clap: --data requires --rules");
    let out = katd()
        .args(["rules", "run", "--data"])
        .arg(&data)
        .arg("--rules")
        .arg(shipped("business_rules.json"))
        .output()
        .expect("katd runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).is_empty(),
        "no organizations yet: {}",
        text(&out.stdout)
    );
    // The store opened with a page cache of its own size, and a bad size refused.
    for (mib, ok) in [("64", true), ("0", false)] {
        let out = katd()
            .args(["rules", "run", "--data"])
            .arg(&data)
            .arg("--rules")
            .arg(shipped("business_rules.json"))
            .args(["--sled-cache-mib", mib])
            .env_remove("KAT_SLED_CACHE_MIB")
            .output()
            .expect("katd runs");
        assert_eq!(out.status.success(), ok, "{mib}: {}", text(&out.stderr));
        if !ok {
            assert!(
                text(&out.stderr).contains("invalid input at --sled-cache-mib: \"0\""),
                "{}",
                text(&out.stderr)
            );
        }
    }
}
