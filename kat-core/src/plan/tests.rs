use super::*;
use crate::plugin::PluginDef;
use kat_protocol::env::{COMMANDS as ENV_COMMANDS, PLUGIN_ID as ENV_PLUGIN_ID};
use proptest::prelude::*;
use serde_json::json;

fn plugin(args: serde_json::Value, consumes: serde_json::Value) -> PluginDef {
    let v = json!([{"plugin_id": "p", "oci_image": "img", "oci_arguments": args, "consumes": consumes,
                    "permissions": {"objects.add_hostname": {}}}]);
    PluginDef::parse_file(&v.to_string(), "test.json")
        .unwrap()
        .remove(0)
}

fn targets(vs: &[&str]) -> PlanInput {
    PlanInput::Objects(vs.iter().map(|v| Target::value(*v)).collect())
}

/// Awkward values: spaces, quotes, command substitution, newlines, unicode, shell metacharacters.
const AWKWARD: [&str; 8] = [
    "a b c",
    "it's \"quoted\"",
    "$(rm -rf /)",
    "`id`; echo pwned | cat && true",
    "line1\nline2",
    "bücher.例え.テスト",
    "{hostname}",
    "",
];

// ---- mode 1 and 3: placeholders -------------------------------------------------------------

#[test]
fn direct_one_target() {
    let p = plugin(json!(["nslookup", "{hostname}"]), json!([]));
    let plan = plan(&p, &targets(&["example.com"])).unwrap();
    assert_eq!(plan.mode, Mode::Direct);
    assert_eq!(plan.commands, vec![vec!["nslookup", "example.com"]]);
    assert_eq!(plan.argv(), ["nslookup", "example.com"]);
    assert_eq!(plan.stdin, Stdin::None);
    assert!(!plan.env.contains_key(ENV_COMMANDS));
    assert_eq!(plan.env[ENV_PLUGIN_ID], "p");
}

#[test]
fn sequential_several_targets_in_one_container() {
    let p = plugin(
        json!(["tool", "--target={ipaddress}", "{ipaddress}"]),
        json!([]),
    );
    let plan = plan(&p, &targets(&["192.0.2.1", "192.0.2.2", "2001:db8::1"])).unwrap();
    assert_eq!(plan.mode, Mode::Sequential);
    assert_eq!(
        plan.commands,
        vec![
            vec!["tool", "--target=192.0.2.1", "192.0.2.1"],
            vec!["tool", "--target=192.0.2.2", "192.0.2.2"],
            vec!["tool", "--target=2001:db8::1", "2001:db8::1"],
        ]
    );
    let listed: Vec<Vec<String>> = serde_json::from_str(&plan.env[ENV_COMMANDS]).unwrap();
    assert_eq!(listed, plan.commands, "the entrypoint gets every command");
    assert_eq!(plan.argv(), plan.commands[0].as_slice());
}

#[test]
fn placeholder_plugins_with_zero_targets_are_refused() {
    let p = plugin(json!(["nslookup", "{hostname}"]), json!([]));
    for input in [targets(&[]), PlanInput::None] {
        let e = plan(&p, &input).unwrap_err().to_string();
        assert!(e.contains("{hostname}") && e.contains("none"), "{e}");
    }
}

#[test]
fn awkward_values_stay_one_argument_in_direct_and_sequential() {
    let p = plugin(json!(["/bin/echo", "{hostname}"]), json!([]));
    for v in AWKWARD {
        let one = plan(&p, &targets(&[v])).unwrap();
        assert_eq!(
            one.commands,
            vec![vec!["/bin/echo".to_string(), v.to_string()]],
            "{v:?}"
        );
    }
    let all = plan(&p, &targets(&AWKWARD)).unwrap();
    assert_eq!(all.mode, Mode::Sequential);
    for (cmd, v) in all.commands.iter().zip(AWKWARD) {
        assert_eq!(cmd, &vec!["/bin/echo".to_string(), v.to_string()]);
    }
    // The JSON list carries newlines and quotes intact.
    let listed: Vec<Vec<String>> = serde_json::from_str(&all.env[ENV_COMMANDS]).unwrap();
    assert_eq!(listed[4][1], "line1\nline2");
}

#[test]
fn a_target_inside_a_shell_script_is_substituted_but_not_split() {
    let p = plugin(
        json!([
            "sh",
            "-c",
            "run () { dig $1; }; run {hostname} | jq '{a:.b}' | grep \"{.*}\""
        ]),
        json!([]),
    );
    let plan = plan(&p, &targets(&["a.example"])).unwrap();
    assert_eq!(plan.commands[0].len(), 3);
    assert_eq!(
        plan.commands[0][2],
        "run () { dig $1; }; run a.example | jq '{a:.b}' | grep \"{.*}\""
    );
}

#[test]
fn every_placeholder_spelling_is_substituted() {
    let p = plugin(
        json!(["x", "{HOSTNAME}", "{Mail_Server}", "{url}", "{IPAddress}"]),
        json!([]),
    );
    let plan = plan(&p, &targets(&["v"])).unwrap();
    assert_eq!(plan.commands, vec![vec!["x", "v", "v", "v", "v"]]);
}

// ---- mode 2: standalone ---------------------------------------------------------------------

#[test]
fn standalone_runs_arguments_verbatim() {
    let p = plugin(
        json!([
            "/duckdb",
            "-c",
            "copy(select {a: 1}) to '/dev/stdout';",
            "${HOME}"
        ]),
        json!([]),
    );
    for input in [PlanInput::None, targets(&[]), PlanInput::Files(vec![])] {
        let plan = plan(&p, &input).unwrap();
        assert_eq!(plan.mode, Mode::Standalone);
        assert_eq!(
            plan.commands,
            vec![vec![
                "/duckdb",
                "-c",
                "copy(select {a: 1}) to '/dev/stdout';",
                "${HOME}"
            ]]
        );
        assert_eq!(plan.stdin, Stdin::None);
        assert!(plan.readable_files.is_empty());
    }
}

// ---- mode 4: bulk stdin ---------------------------------------------------------------------

#[test]
fn bulk_stdin_joins_targets_without_trailing_newline() {
    let p = plugin(
        json!(["subfinder", "-silent", "-json"]),
        json!(["type:hostname"]),
    );
    let plan = plan(&p, &targets(&["a.example", "b.example", "c.example"])).unwrap();
    assert_eq!(plan.mode, Mode::BulkStdin);
    assert_eq!(plan.commands, vec![vec!["subfinder", "-silent", "-json"]]);
    assert_eq!(
        plan.stdin,
        Stdin::Targets("a.example\nb.example\nc.example".into())
    );
    let one = super::plan(&p, &targets(&["a.example"])).unwrap();
    assert_eq!(
        one.mode,
        Mode::BulkStdin,
        "one target without placeholders still goes to stdin"
    );
    assert_eq!(one.stdin, Stdin::Targets("a.example".into()));
}

#[test]
fn bulk_stdin_keeps_awkward_values_and_refuses_line_breaks() {
    let p = plugin(
        json!(["xargs", "-I", "%", "tool", "%"]),
        json!(["type:hostname"]),
    );
    let safe: Vec<&str> = AWKWARD
        .iter()
        .copied()
        .filter(|v| !v.contains('\n'))
        .collect();
    let plan = plan(&p, &targets(&safe)).unwrap();
    assert_eq!(plan.stdin, Stdin::Targets(safe.join("\n")));
    assert_eq!(
        plan.commands,
        vec![vec!["xargs", "-I", "%", "tool", "%"]],
        "braces-free args untouched"
    );
    let e = super::plan(&p, &targets(&["ok.example", "line1\nline2"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("input[1]") && e.contains("line break"), "{e}");
    let e = super::plan(&p, &targets(&["a\rb"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("line break"), "{e}");
}

#[test]
fn bulk_stdin_with_zero_targets_is_standalone() {
    let p = plugin(json!(["rpki"]), json!(["type:ipaddress"]));
    assert_eq!(plan(&p, &targets(&[])).unwrap().mode, Mode::Standalone);
}

// ---- mode 5: files ---------------------------------------------------------------------------

#[test]
fn file_placeholder_gets_the_id_and_the_token_may_read_it() {
    let p = plugin(json!(["parse-nmap", "{file}"]), json!(["file:nmap"]));
    let one = plan(&p, &PlanInput::Files(vec![FileId(42)])).unwrap();
    assert_eq!(one.mode, Mode::File);
    assert_eq!(one.commands, vec![vec!["parse-nmap", "42"]]);
    assert_eq!(one.readable_files, [FileId(42)].into());
    let several = plan(&p, &PlanInput::Files(vec![FileId(1), FileId(2)])).unwrap();
    assert_eq!(
        several.commands,
        vec![vec!["parse-nmap", "1"], vec!["parse-nmap", "2"]]
    );
    assert!(several.env.contains_key(ENV_COMMANDS));
    assert_eq!(several.readable_files, [FileId(1), FileId(2)].into());
    // Zero files for a {file} plugin is refused, as is an object target.
    assert!(plan(&p, &PlanInput::Files(vec![])).is_err());
    assert!(plan(&p, &PlanInput::None).is_err());
    let e = plan(&p, &targets(&["a.example"])).unwrap_err().to_string();
    assert!(e.contains("{file}"), "{e}");
}

#[test]
fn static_file_references_are_left_for_the_entrypoint_and_granted() {
    let p = plugin(
        json!(["/bin/cat", "{file/7}", "--and={file/9}{file/7}"]),
        json!([]),
    );
    let plan = plan(&p, &PlanInput::None).unwrap();
    assert_eq!(plan.mode, Mode::File);
    assert_eq!(
        plan.commands,
        vec![vec!["/bin/cat", "{file/7}", "--and={file/9}{file/7}"]]
    );
    assert_eq!(plan.readable_files, [FileId(7), FileId(9)].into());
    // With a target too, the references stay and are still granted.
    let p = plugin(json!(["grep", "-f", "{file/3}", "{hostname}"]), json!([]));
    let plan = super::plan(&p, &targets(&["a b"])).unwrap();
    assert_eq!(plan.commands, vec![vec!["grep", "-f", "{file/3}", "a b"]]);
    assert_eq!(plan.readable_files, [FileId(3)].into());
}

#[test]
fn a_file_consumer_without_placeholder_reads_the_content_on_stdin() {
    // The original gave such a plugin the file *id* on stdin (bug 11); here it gets the content.
    let p = plugin(json!(["/bin/cat"]), json!(["file:txt"]));
    let plan = plan(&p, &PlanInput::Files(vec![FileId(5)])).unwrap();
    assert_eq!(plan.mode, Mode::File);
    assert_eq!(plan.stdin, Stdin::File(FileId(5)));
    assert_eq!(plan.readable_files, [FileId(5)].into());
    let e = super::plan(&p, &PlanInput::Files(vec![FileId(5), FileId(6)]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("one file per task"), "{e}");
}

#[test]
fn files_for_a_target_plugin_are_refused() {
    let p = plugin(json!(["dig", "{hostname}"]), json!([]));
    let e = plan(&p, &PlanInput::Files(vec![FileId(1)]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("objects") && e.contains("files"), "{e}");
}

#[test]
fn a_plugin_without_a_command_is_refused() {
    let p = plugin(json!([]), json!([]));
    let e = plan(&p, &PlanInput::None).unwrap_err().to_string();
    assert!(e.contains("oci_arguments"), "{e}");
}

// ---- permissions ----------------------------------------------------------------------------

#[test]
fn token_permissions_for_a_plan() {
    use crate::permission::{Access, Decision};
    let v = json!([{"plugin_id": "rpki", "oci_image": "img", "oci_arguments": ["rpki"], "consumes": ["type:ipaddress"],
        "permissions": {"files.view_file": {"search": ["bgp-download"], "limit": 1}, "objects.add_finding": {}}}]);
    let p = PluginDef::parse_file(&v.to_string(), "t.json")
        .unwrap()
        .remove(0);
    let plan = plan(&p, &targets(&["192.0.2.1"])).unwrap();
    let perms = plan.permissions(&p, &[FileId(11)]);
    let view = "files.view_file".parse().unwrap();
    // The temp stdin file is readable, other files are not (by id), and the plugin's own search scope
    // still works: the original replaced the input grant with the plugin's entry.
    assert_eq!(perms.check(&view, &Access::Object("11")), Decision::Allow);
    assert_eq!(
        perms.check(
            &view,
            &Access::List {
                search: Some("bgp-download"),
                limit: Some(1)
            }
        ),
        Decision::Allow
    );
    assert_eq!(
        perms.check(
            &view,
            &Access::List {
                search: None,
                limit: None
            }
        ),
        Decision::AllowOnly(["11".to_string()].into())
    );
    assert!(perms.has(&"files.add_file".parse().unwrap()));
    assert!(perms.has(&"objects.add_finding".parse().unwrap()));
    assert!(!perms.has(&"objects.add_hostname".parse().unwrap()));
    // A plugin with no file inputs and no declared file permission cannot read files at all.
    let q = plugin(json!(["dig", "{hostname}"]), json!([]));
    let qp = super::plan(&q, &targets(&["a"]))
        .unwrap()
        .permissions(&q, &[]);
    assert_eq!(qp.check(&view, &Access::Object("1")), Decision::Deny);
}

#[test]
fn no_task_token_can_set_a_scan_level() {
    // Loading refuses a plugin that declares it; a definition that reached the catalogue some other
    // way (built in code) still never passes it to its token.
    let mut p = plugin(json!(["dig", "{hostname}"]), json!([]));
    p.permissions.grant(
        crate::permission::PermissionName::SET_SCAN_LEVEL,
        crate::permission::Scope::unrestricted(),
    );
    let perms = plan(&p, &targets(&["a"])).unwrap().permissions(&p, &[]);
    assert!(!perms.has(&crate::permission::PermissionName::SET_SCAN_LEVEL));
    assert!(perms.has(&"objects.add_hostname".parse().unwrap()));
}

// ---- batching -------------------------------------------------------------------------------

#[test]
fn batches_follow_the_original() {
    let items: Vec<u32> = (0..200).collect();
    assert_eq!(
        batches(&items, Some(50)).len(),
        4,
        "200 inputs, batch 50: 4 tasks"
    );
    assert_eq!(batches(&items, None), vec![items.clone()]);
    assert_eq!(batches(&items, Some(0)), vec![items.clone()]);
    assert_eq!(batches::<u32>(&[], Some(50)), vec![Vec::<u32>::new()]);
    assert_eq!(batches(&items, Some(500)).len(), 1);
}

proptest! {
    /// Batches keep every input once, in order, none larger than the size, all but the last full.
    #[test]
    fn batching_partitions_inputs(n in 0usize..500, size in 1u32..80) {
        let items: Vec<usize> = (0..n).collect();
        let b = batches(&items, Some(size));
        let flat: Vec<usize> = b.iter().flatten().copied().collect();
        prop_assert_eq!(flat, items);
        prop_assert!(b.iter().all(|x| x.len() <= size as usize));
        if n > 0 {
            prop_assert_eq!(b.len(), n.div_ceil(size as usize));
            prop_assert!(b[..b.len() - 1].iter().all(|x| x.len() == size as usize));
        }
    }

    /// Mode selection depends only on the counts and the command's placeholders.
    #[test]
    fn mode_selection(values in proptest::collection::vec("[a-z0-9.-]{1,20}", 0..6), placeholder in any::<bool>()) {
        let args = if placeholder { json!(["t", "{hostname}"]) } else { json!(["t"]) };
        let p = plugin(args, json!(["type:hostname"]));
        let input = PlanInput::Objects(values.iter().map(Target::value).collect());
        match (values.len(), placeholder) {
            (0, true) => prop_assert!(plan(&p, &input).is_err()),
            (0, false) => prop_assert_eq!(plan(&p, &input).unwrap().mode, Mode::Standalone),
            (1, true) => prop_assert_eq!(plan(&p, &input).unwrap().mode, Mode::Direct),
            (_, true) => {
                let pl = plan(&p, &input).unwrap();
                prop_assert_eq!(pl.mode, Mode::Sequential);
                prop_assert_eq!(pl.commands.len(), values.len());
            }
            (_, false) => {
                let pl = plan(&p, &input).unwrap();
                prop_assert_eq!(pl.mode, Mode::BulkStdin);
                prop_assert_eq!(pl.stdin, Stdin::Targets(values.join("\n")));
            }
        }
    }

    /// Any value lands intact in one argument of one command per target.
    #[test]
    fn substitution_is_exact(values in proptest::collection::vec("\\PC{0,30}", 1..5)) {
        let p = plugin(json!(["echo", "<{hostname}>"]), json!([]));
        let input = PlanInput::Objects(values.iter().map(Target::value).collect());
        let pl = plan(&p, &input).unwrap();
        prop_assert_eq!(pl.commands.len(), values.len());
        for (c, v) in pl.commands.iter().zip(&values) {
            prop_assert_eq!(c.len(), 2);
            prop_assert_eq!(&c[1], &format!("<{v}>"));
        }
    }
}
