//! plugins.json, examples.json and finding_types.json, read by kat-core as the engine reads them.

use kat_core::finding::FindingTypes;
use kat_core::object::canonical_hostname;
use kat_core::plan::{PlanInput, Target, plan};
use kat_plugins::findings::ALL_CODES;

use crate::common::{catalogue, plugins_dir, run};

const OURS: [(&str, &str); 5] = [
    ("dns", "dns"),
    ("portscan", "portscan"),
    ("parse-nmap", "parse-nmap"),
    ("tls", "tls"),
    ("http-headers", "http-headers"),
];

#[test]
fn every_code_the_plugins_emit_is_a_known_finding_type() {
    let types = FindingTypes::load(&plugins_dir().join("finding_types.json")).unwrap();
    for code in ALL_CODES {
        let t = types
            .get(code)
            .unwrap_or_else(|| panic!("{code} is not in plugins/finding_types.json"));
        assert!(!t.name.is_empty() && !t.description.is_empty(), "{code}");
    }
}

#[test]
fn our_plugins_are_in_the_catalogue_and_run_our_binary() {
    let all = catalogue();
    for (id, sub) in OURS {
        let p = all
            .iter()
            .find(|p| p.plugin_id == id)
            .unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(p.oci_image, "kat-plugins:latest", "{id}");
        assert_eq!(p.oci_arguments[0], "/kat-plugins", "{id}");
        assert_eq!(p.oci_arguments[1], sub, "{id}");
        let desc = plugins_dir().join(id).join("description.md");
        let text =
            std::fs::read_to_string(&desc).unwrap_or_else(|e| panic!("{}: {e}", desc.display()));
        assert!(
            text.contains("Scan level") && text.contains("Permissions"),
            "{id}"
        );
        // The binary knows the subcommand (its --help answers 0, an unknown one 2).
        assert_eq!(run(&[sub, "--help"], &[]).code, 0, "{id}");
        // Plans over example targets work as the engine would make them.
        let input = if p.consumed_files().is_empty() {
            let target = if id == "portscan" {
                "127.0.0.1"
            } else {
                "localhost"
            };
            PlanInput::Objects(vec![Target::value(target)])
        } else {
            PlanInput::Files(vec![kat_core::store::FileId(7)])
        };
        let pl = plan(p, &input).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(pl.argv()[0], "/kat-plugins");
    }
    assert_eq!(run(&["no-such-plugin"], &[]).code, 2);
}

#[test]
fn hostname_rules_match_kat_core() {
    for name in [
        "example.com",
        "Example.COM.",
        "localhost",
        "a-b.c1.io",
        "xn--bcher-kva.example",
        "",
        ".",
        "a..b",
        "-a.com",
        "a-.com",
        "a_b.com",
        "_dmarc.example.com",
        "a b.com",
        "192.0.2.1",
        "a.123",
        "example.com..",
        &format!("{}.com", "a".repeat(64)),
        &format!("{}.com", "a".repeat(63)),
        &vec!["abcdefghi"; 26].join("."),
    ] {
        assert_eq!(
            kat_plugins::names::canonical_hostname(name).ok(),
            canonical_hostname(name).ok(),
            "{name:?}"
        );
    }
}
