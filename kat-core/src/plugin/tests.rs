use super::*;
use serde_json::json;

/// The original's catalogue entries (OpenKAT v2's `plugins.json` and the manual's examples), in their JSON shape: all must load.
fn original_catalogue() -> Value {
    json!([
        {"plugin_id": "dns", "name": "DNS", "description": "Fetch the DNS record(s) of a hostname.", "scan_level": 1,
         "consumes": ["type:hostname"], "oci_image": "ghcr.io/minvws/openkat/plugins:0.1.0",
         "oci_arguments": ["uv", "run", "kat_dns/main.py", "{hostname}"],
         "permissions": {"objects.view_hostname": {}, "objects.add_hostname": {}, "objects.add_ipaddress": {},
                         "objects.add_dnsarecord": {}, "objects.delete_dnsarecord": {}, "objects.view_dnsarecord": {}}},
        {"plugin_id": "dns-sec", "name": "DNSSEC", "scan_level": 1, "oci_image": "noamblitz/drill:latest",
         "oci_arguments": ["sh", "-c", "run () { D=$(drill -DT $1 $2); echo \"$D\"; }; run {hostname} A || run {hostname} AAAA"]},
        {"plugin_id": "nmap", "name": "Nmap", "scan_level": 2, "oci_image": "instrumentisto/nmap",
         "oci_arguments": ["nmap", "--open", "--top-ports", "250", "-T4", "-Pn", "-r", "-v10", "-sV", "-sS", "-oX", "-", "{ipaddress}"]},
        {"plugin_id": "parse-nmap", "name": "Parse NMAP XML", "scan_level": 2, "consumes": ["file:nmap", "file:masscan"],
         "oci_image": "ghcr.io/minvws/openkat/plugins:0.1.0", "oci_arguments": ["uv", "run", "kat_nmap/main.py", "{file}"]},
        {"plugin_id": "rpki-download", "name": "RPKI download", "scan_level": 1, "oci_image": "datacatering/duckdb:v1.3.2",
         "oci_arguments": ["/duckdb", "-c", "copy(select x.asn from (select unnest(roas) as x from read_json('https://x/vrps.json'))) to '/dev/stdout' (format parquet);"]},
        {"plugin_id": "rpki", "name": "RPKI", "scan_level": 1, "consumes": ["type:ipaddress"], "batch_size": 500,
         "oci_image": "ghcr.io/minvws/openkat/plugins:0.1.0", "oci_arguments": ["uv", "run", "kat_rpki/main.py"],
         "permissions": {"files.view_file": {"search": ["bgp-download", "rpki-download"], "limit": 1},
                         "objects.add_finding": {}, "objects.delete_finding": {}}},
        {"plugin_id": "subfinder", "name": "Subfinder", "scan_level": 1, "consumes": ["type:hostname"],
         "oci_image": "projectdiscovery/subfinder:v2.6.6", "oci_arguments": ["subfinder", "-silent", "-active", "-rate-limit", "0", "-json"]},
        {"plugin_id": "parse-subfinder", "name": "Parse subfinder", "consumes": ["file:subfinder"],
         "oci_image": "ghcr.io/minvws/openkat/plugins:0.1.0", "oci_arguments": ["sh", "-c", "uv run cat.py {file} | jq .host -r | uv run store.py -h"]},
        {"plugin_id": "parse-nuclei-tls-version", "name": "Parse nuclei TLS", "consumes": ["file:nuclei-tls-version"],
         "oci_image": "ghcr.io/minvws/openkat/plugins:0.1.0",
         "oci_arguments": ["sh", "-c", "uv run cat.py {file} | grep \"{.*}\" | jq '[.\"extracted-results\"[], .host] | @tsv' -r | grep KAT | uv run store.py -f -t hostname"]},
        {"plugin_id": "nuclei-expired-ssl", "name": "Nuclei expired SSL", "scan_level": 2, "oci_image": "projectdiscovery/nuclei:v3.4.10",
         "oci_arguments": ["nuclei", "-t", "ssl/expired-ssl.yaml", "-j", "-u", "{hostname}"]}
    ])
}

fn load(v: Value) -> Result<Vec<PluginDef>> {
    PluginDef::parse_file(&v.to_string(), "plugins.json")
}

#[test]
fn the_original_catalogue_loads() {
    let defs = load(original_catalogue()).unwrap();
    assert_eq!(defs.len(), 10);
    let by: BTreeMap<&str, &PluginDef> = defs.iter().map(|d| (d.plugin_id.as_str(), d)).collect();
    // scan_level defaults to 1 when absent, as the original's sync().
    assert_eq!(by["parse-subfinder"].scan_level.get(), 1);
    assert_eq!(by["nmap"].scan_level.get(), 2);
    // consumed types are derived from placeholders when consumes is absent.
    assert_eq!(by["nmap"].consumed_types(), [ObjectType::IpAddress].into());
    assert_eq!(
        by["dns-sec"].consumed_types(),
        [ObjectType::Hostname].into()
    );
    assert!(by["rpki-download"].consumed_types().is_empty());
    assert_eq!(
        by["parse-nmap"].consumed_files(),
        ["nmap", "masscan"].into()
    );
    // The shell braces of parse-nuclei-tls-version are not placeholders (original bug 6).
    assert_eq!(
        by["parse-nuclei-tls-version"].command().placeholders(),
        [Placeholder::File].into()
    );
    assert_eq!(
        by["rpki"].effective_batch_size(DEFAULT_BATCH_SIZE),
        Some(500)
    );
    assert_eq!(by["dns"].effective_batch_size(DEFAULT_BATCH_SIZE), Some(50));
    assert!(
        by["rpki"]
            .permissions
            .has(&"files.view_file".parse().unwrap())
    );
}

fn base() -> Value {
    json!({"plugin_id": "p", "oci_image": "img:1", "oci_arguments": ["x", "{hostname}"]})
}

fn with(field: &str, v: Value) -> Value {
    let mut b = base();
    b[field] = v;
    json!([b])
}

#[test]
fn each_kind_of_mistake_names_file_plugin_and_field() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            with("oci_arguments", json!(["x", "{ipport}"])),
            "oci_arguments[1]",
            "unknown placeholder",
        ),
        (
            with("oci_arguments", json!(["cat", "{file/abc}"])),
            "oci_arguments[1]",
            "numeric id",
        ),
        (
            with("oci_arguments", json!("x {hostname}")),
            "oci_arguments",
            "list of strings",
        ),
        (
            with("oci_arguments", json!(["x", 3])),
            "oci_arguments[1]",
            "must be a string",
        ),
        (
            with("consumes", json!(["hostname"])),
            "consumes[0]",
            "must start with",
        ),
        (
            with("consumes", json!(["type:ipport"])),
            "consumes[0]",
            "targets",
        ),
        (
            with("consumes", json!(["type:frob"])),
            "consumes[0]",
            "unknown object type",
        ),
        (
            with("consumes", json!(["file:a b"])),
            "consumes[0]",
            "not allowed",
        ),
        (
            with(
                "permissions",
                json!({"objects.change_hostname": {}, "objects.can_set_scan_level": {}}),
            ),
            "permissions.objects.can_set_scan_level",
            "only operators",
        ),
        (with("scan_level", json!(5)), "scan_level", "0 to 4"),
        (with("scan_level", json!(-1)), "scan_level", "0 to 4"),
        (with("scan_level", json!("2")), "scan_level", "whole number"),
        (
            with("permissions", json!({"objects.add_ipservices": {}})),
            "permissions",
            "unknown permission",
        ),
        (
            with("permissions", json!({"files.view_file": {"limit": "many"}})),
            "permissions.files.view_file",
            "limit",
        ),
        (with("batch_size", json!(-5)), "batch_size", "whole number"),
        (with("batch_size", json!(1.5)), "batch_size", "whole number"),
        (
            with("batch_size", json!(1_000_000)),
            "batch_size",
            "0 to 100000",
        ),
        (
            with("recurrences", json!("daily")),
            "recurrences",
            "ISO 8601",
        ),
        (with("colour", json!("red")), "colour", "unknown field"),
        (with("oci_image", json!("")), "oci_image", "not an image"),
        (with("oci_image", json!(null)), "oci_image", "required"),
        (
            with("plugin_id", json!("Bad Id")),
            "plugin_id",
            "lower-case",
        ),
        (
            with("cap_add", json!(["net raw"])),
            "cap_add[0]",
            "capability",
        ),
        (
            with("idempotent", json!("yes")),
            "idempotent",
            "true or false",
        ),
        (
            json!([{"plugin_id": "p", "oci_image": "i", "oci_arguments": ["{file}"]}]),
            "consumes",
            "{file}",
        ),
        (
            json!([{"plugin_id": "p", "oci_image": "i", "consumes": ["file:x"], "oci_arguments": ["{file}", "{hostname}"]}]),
            "oci_arguments",
            "cannot be combined",
        ),
    ];
    for (v, field, needle) in cases {
        let e = load(v.clone()).expect_err(&v.to_string());
        let Error::Invalid { at, message } = &e else {
            panic!("{e}")
        };
        assert!(at.starts_with("plugins.json[0]"), "{v}: {at}");
        assert!(
            at.contains("plugin \"p\"") || at.contains("plugin \"Bad Id\""),
            "{v}: {at}"
        );
        assert!(
            at.ends_with(field),
            "{v}: at {at:?}, expected field {field:?}"
        );
        assert!(message.contains(needle), "{v}: {message}");
    }
}

#[test]
fn file_level_mistakes() {
    let e = PluginDef::parse_file("{not json", "plugins.json")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("plugins.json") && e.contains("not valid JSON"),
        "{e}"
    );
    let e = PluginDef::parse_file("{}", "plugins.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("list"), "{e}");
    let e = load(json!([base(), base()])).unwrap_err().to_string();
    assert!(
        e.contains("plugins.json[1]") && e.contains("duplicate"),
        "{e}"
    );
    let e = load(json!([{"oci_image": "i"}])).unwrap_err().to_string();
    assert!(
        e.contains("plugins.json[0]: plugin_id") && e.contains("required"),
        "{e}"
    );
    let e = load(json!(["dns"])).unwrap_err().to_string();
    assert!(e.contains("JSON object"), "{e}");
}

#[test]
fn duplicates_across_files_name_both() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("plugins.json");
    let b = dir.path().join("nuclei_plugins.json");
    std::fs::write(&a, json!([base()]).to_string()).unwrap();
    std::fs::write(&b, json!([base()]).to_string()).unwrap();
    let e = PluginDef::load_files(&[&a, &b]).unwrap_err().to_string();
    assert!(
        e.contains("nuclei_plugins.json")
            && e.contains("already defined in")
            && e.contains("plugins.json"),
        "{e}"
    );
    let e = PluginDef::load_files(&[dir.path().join("missing.json")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing.json") && e.contains("cannot read"),
        "{e}"
    );
    std::fs::write(
        &b,
        json!([{"plugin_id": "q", "oci_image": "i"}]).to_string(),
    )
    .unwrap();
    assert_eq!(PluginDef::load_files(&[&a, &b]).unwrap().len(), 2);
}

#[test]
fn consumes_parse_by_prefix() {
    // The original's lstrip("file:") turns "file:ipscan" into "pscan".
    assert_eq!(
        "file:ipscan".parse::<Consumes>().unwrap(),
        Consumes::File("ipscan".into())
    );
    assert_eq!(
        "type:hostname".parse::<Consumes>().unwrap(),
        Consumes::Type(ObjectType::Hostname)
    );
    assert_eq!(
        "file:file:x".parse::<Consumes>().unwrap(),
        Consumes::File("file:x".into())
    );
    assert!("TYPE:hostname".parse::<Consumes>().is_err());
    let c: Consumes = serde_json::from_str("\"file:nmap\"").unwrap();
    assert_eq!(serde_json::to_string(&c).unwrap(), "\"file:nmap\"");
}

#[test]
fn batch_sizes() {
    let mut d = load(json!([base()])).unwrap().remove(0);
    assert_eq!(d.effective_batch_size(50), Some(50));
    assert_eq!(d.effective_batch_size(0), None);
    d.batch_size = Some(0);
    assert_eq!(d.effective_batch_size(50), None);
    d.batch_size = Some(7);
    assert_eq!(d.effective_batch_size(50), Some(7));
}

#[test]
fn definitions_serialize_and_come_back() {
    for d in load(original_catalogue()).unwrap() {
        let s = serde_json::to_string(&d).unwrap();
        let back: PluginDef = serde_json::from_str(&s).unwrap();
        assert_eq!(back, d);
    }
}

#[test]
fn sync_is_idempotent_and_keeps_removed_plugins_disabled() {
    let v1 = load(original_catalogue()).unwrap();
    let (writes, report) = sync(&[], &v1, true);
    assert_eq!(report.added.len(), 10);
    assert!(writes.iter().all(|r| r.enabled && r.in_source));
    let mut catalogue: BTreeMap<String, PluginRecord> = writes
        .into_iter()
        .map(|r| (r.def.plugin_id.clone(), r))
        .collect();
    let apply = |cat: &mut BTreeMap<String, PluginRecord>, w: Vec<PluginRecord>| {
        for r in w {
            cat.insert(r.def.plugin_id.clone(), r);
        }
    };
    let current = |cat: &BTreeMap<String, PluginRecord>| cat.values().cloned().collect::<Vec<_>>();

    // Same input again: nothing to write.
    let (writes, report) = sync(&current(&catalogue), &v1, true);
    assert!(writes.is_empty());
    assert_eq!(report.unchanged.len(), 10);

    // The operator disables nmap; then a new version changes nmap's image and drops dns-sec.
    catalogue.get_mut("nmap").unwrap().enabled = false;
    let mut v2: Vec<PluginDef> = v1
        .iter()
        .filter(|d| d.plugin_id != "dns-sec")
        .cloned()
        .collect();
    v2.iter_mut()
        .find(|d| d.plugin_id == "nmap")
        .unwrap()
        .oci_image = "instrumentisto/nmap:7.95".into();
    let (writes, report) = sync(&current(&catalogue), &v2, true);
    assert_eq!(report.updated, vec!["nmap"]);
    assert_eq!(report.removed, vec!["dns-sec"]);
    apply(&mut catalogue, writes);
    assert!(
        !catalogue["nmap"].enabled,
        "an update keeps the operator's choice"
    );
    assert_eq!(catalogue["nmap"].def.oci_image, "instrumentisto/nmap:7.95");
    assert!(
        !catalogue["dns-sec"].enabled && !catalogue["dns-sec"].in_source,
        "removed: kept, disabled"
    );
    assert_eq!(catalogue.len(), 10, "nothing is deleted");

    // Syncing v2 again changes nothing, and the removed plugin stays disabled.
    let (writes, _) = sync(&current(&catalogue), &v2, true);
    assert!(writes.is_empty());

    // When it comes back it is in the source again but still disabled.
    let (writes, report) = sync(&current(&catalogue), &v1, true);
    assert_eq!(report.updated, vec!["dns-sec", "nmap"]);
    apply(&mut catalogue, writes);
    assert!(catalogue["dns-sec"].in_source && !catalogue["dns-sec"].enabled);
}

#[test]
fn sync_can_add_new_plugins_disabled() {
    let v1 = load(json!([base()])).unwrap();
    let (writes, _) = sync(&[], &v1, false);
    assert!(!writes[0].enabled);
}
