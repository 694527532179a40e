//! `katd report`: what was found, read through the API: findings with their risk and who found each (a
//! plugin's task, or the business rules that hold it), the hostnames and addresses with a scan level
//! (declared, or inherited and from where) with the plugins that scanned them, and the objects plugins
//! wrote, each with the plugin and task that found it.

use std::collections::HashMap;

use kat::core::Error;
use serde_json::Value;

use crate::ReportArgs;
use crate::client::Client;

/// The object types whose plugin-written objects the report lists, in this order.
const WRITTEN_TYPES: [&str; 10] = [
    "hostname",
    "ipaddress",
    "ipport",
    "software",
    "dnsarecord",
    "dnsaaaarecord",
    "dnscnamerecord",
    "dnsmxrecord",
    "dnsnsrecord",
    "dnstxtrecord",
];

/// Risks from the most to the least severe; anything else sorts last.
const RISK_ORDER: [&str; 5] = ["critical", "high", "medium", "low", "recommendation"];

/// Print the findings, the scan levels, then the objects plugins wrote.
pub(crate) async fn run(args: ReportArgs) -> Result<(), Error> {
    let c = Client::new(&args.api.api, &args.api.token)?;
    let mut found_by = FoundBy::new(&c);
    print_findings(&c, &mut found_by).await?;
    println!();
    print_levels(&c).await?;
    println!();
    print_written_objects(&c, &mut found_by).await
}

/// Every query of the report asks for up to 1,000 results.
fn all() -> [(String, String); 1] {
    [("limit".to_string(), "1000".to_string())]
}

/// Who found something: `declared`, or the plugin of the task that last saw it and the task's short id
/// (each task is looked up once).
struct FoundBy<'a> {
    client: &'a Client,
    plugin_of: HashMap<String, String>,
}

impl<'a> FoundBy<'a> {
    fn new(client: &'a Client) -> Self {
        FoundBy {
            client,
            plugin_of: HashMap::new(),
        }
    }

    /// `declared` for no task, else `<plugin> (task <first 8 of the id>)`.
    async fn describe(&mut self, task: &Value) -> String {
        let Some(id) = task.as_str() else {
            return "declared".into();
        };
        if !self.plugin_of.contains_key(id) {
            let p = match self.client.get(&format!("/tasks/{id}/"), &[]).await {
                Ok(t) => t["plugin_id"].as_str().unwrap_or("?").to_string(),
                Err(_) => "?".into(),
            };
            self.plugin_of.insert(id.to_string(), p);
        }
        format!("{} (task {})", self.plugin_of[id], &id[..8.min(id.len())])
    }
}

/// The findings, most severe first: risk, finding type, what it is about, who found it.
async fn print_findings(c: &Client, found_by: &mut FoundBy<'_>) -> Result<(), Error> {
    let findings = c.get("/objects/finding/", &all()).await?;
    let types = c.get("/objects/findingtype/", &all()).await?;
    let list = findings["results"].as_array().cloned().unwrap_or_default();
    println!("Findings ({}):", list.len());
    println!(
        "  {:<14}  {:<32}  {:<28}  found by",
        "risk", "finding type", "about"
    );
    let mut rows = Vec::new();
    for f in &list {
        let code = f["finding_type"].as_str().unwrap_or("?");
        let about = f["hostname"]
            .as_str()
            .or(f["address"].as_str())
            .unwrap_or("?");
        rows.push((
            risk_of(&types, code),
            code.to_string(),
            about.to_string(),
            finding_source(f, found_by.describe(&f["last_seen_by"]).await),
        ));
    }
    rows.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then(a.1.cmp(&b.1)));
    for (risk, code, about, by) in rows {
        println!("  {risk:<14}  {code:<32}  {about:<28}  {by}");
    }
    Ok(())
}

/// Who found a finding: the rules that hold it (`rule missing_spf`), the task that last wrote it, or
/// both; `by_task` is the task's description (`declared` when no task wrote it).
fn finding_source(f: &Value, by_task: String) -> String {
    let rules: Vec<&str> = f["source_rules"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match (rules.is_empty(), f["last_seen_by"].is_null()) {
        (true, _) => by_task,
        (false, true) => format!("rule {}", rules.join(", ")),
        (false, false) => format!("{by_task}; rule {}", rules.join(", ")),
    }
}

/// The hostnames and IP addresses with a scan level: declared by an operator, or inherited along DNS
/// records (and from which object), with the plugins whose tasks had each as a target.
async fn print_levels(c: &Client) -> Result<(), Error> {
    let tasks = c.get("/tasks/", &all()).await?;
    let mut scanned_by: HashMap<String, Vec<String>> = HashMap::new();
    for t in tasks["results"].as_array().cloned().unwrap_or_default() {
        let plugin = t["plugin_id"].as_str().unwrap_or("?").to_string();
        for o in t["input"]["objects"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let key = format!(
                "{}/{}",
                o["object_type"].as_str().unwrap_or("?"),
                o["key"].as_str().unwrap_or("?")
            );
            let plugins = scanned_by.entry(key).or_default();
            if !plugins.contains(&plugin) {
                plugins.push(plugin.clone());
            }
        }
    }
    println!("Scan levels (declared by an operator, or inherited along DNS records):");
    println!(
        "  {:<10}  {:<32}  {:<5}  {:<44}  scanned by",
        "type", "object", "level", "why"
    );
    for ty in ["hostname", "ipaddress"] {
        let page = c.get(&format!("/objects/{ty}/"), &all()).await?;
        for o in page["results"].as_array().cloned().unwrap_or_default() {
            let Some(level) = o["scan_level"].as_u64() else {
                continue;
            };
            let id = o["id"].as_str().unwrap_or("?");
            let mut plugins = scanned_by
                .get(&format!("{ty}/{id}"))
                .cloned()
                .unwrap_or_default();
            plugins.sort();
            println!(
                "  {ty:<10}  {id:<32}  {level:<5}  {:<44}  {}",
                level_reason(&o),
                if plugins.is_empty() {
                    "-".to_string()
                } else {
                    plugins.join(", ")
                }
            );
        }
    }
    Ok(())
}

/// Why an object has its level: `declared`, or `inherited from <type> <id>`.
fn level_reason(o: &Value) -> String {
    if o["declared"] == Value::Bool(true) {
        return "declared".into();
    }
    match (
        o["inherited_from"]["object_type"].as_str(),
        o["inherited_from"]["id"].as_str(),
    ) {
        (Some(ty), Some(id)) => format!("inherited from {ty} {id}"),
        _ => "inherited".into(),
    }
}

/// The risk of a finding type, from the page of finding types (`?` when unknown).
fn risk_of(types: &Value, code: &str) -> String {
    types["results"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["code"] == code))
        .and_then(|t| t["risk"].as_str())
        .unwrap_or("?")
        .to_string()
}

/// Where a risk sorts.
fn rank(risk: &str) -> usize {
    RISK_ORDER.iter().position(|x| *x == risk).unwrap_or(9)
}

/// The objects a plugin created or saw (declared ones are left out), with who found them.
async fn print_written_objects(c: &Client, found_by: &mut FoundBy<'_>) -> Result<(), Error> {
    println!("Objects written by plugins:");
    for ty in WRITTEN_TYPES {
        let page = c.get(&format!("/objects/{ty}/"), &all()).await?;
        for o in page["results"].as_array().cloned().unwrap_or_default() {
            if o["created_by"].is_null() && o["last_seen_by"].is_null() {
                continue;
            }
            let mut extra = String::new();
            if ty == "ipport" {
                extra = format!(
                    " service={} software={}",
                    o["service"].as_str().unwrap_or("-"),
                    o["software"]
                );
            }
            println!(
                "  {ty:<14}  {:<44}  {}{extra}",
                o["id"].as_str().unwrap_or("?"),
                found_by.describe(&o["last_seen_by"]).await
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn risks_sort_from_critical_to_recommendation_then_unknown() {
        let mut risks = vec!["?", "low", "critical", "recommendation", "high", "medium"];
        risks.sort_by_key(|r| rank(r));
        assert_eq!(
            risks,
            ["critical", "high", "medium", "low", "recommendation", "?"]
        );
    }

    #[test]
    fn a_finding_names_its_rules_beside_or_instead_of_its_task() {
        let by_task = || "portscan (task 1234abcd)".to_string();
        let rule_only = json!({"source_rules": ["missing_spf"], "last_seen_by": null});
        assert_eq!(
            finding_source(&rule_only, "declared".into()),
            "rule missing_spf"
        );
        let both = json!({"source_rules": ["a", "b"], "last_seen_by": "1234abcd-0000"});
        assert_eq!(
            finding_source(&both, by_task()),
            "portscan (task 1234abcd); rule a, b"
        );
        let task_only = json!({"source_rules": [], "last_seen_by": "1234abcd-0000"});
        assert_eq!(finding_source(&task_only, by_task()), by_task());
    }

    #[test]
    fn a_level_says_whether_it_is_declared_or_where_it_comes_from() {
        assert_eq!(
            level_reason(&json!({"declared": true, "inherited_from": null})),
            "declared"
        );
        assert_eq!(
            level_reason(
                &json!({"declared": false, "inherited_from": {"object_type": "hostname", "id": "internet|localhost"}})
            ),
            "inherited from hostname internet|localhost"
        );
    }

    #[test]
    fn a_finding_type_s_risk_comes_from_its_object() {
        let types = json!({"results": [{"code": "KAT-A", "risk": "high"}, {"code": "KAT-B"}]});
        assert_eq!(risk_of(&types, "KAT-A"), "high");
        assert_eq!(risk_of(&types, "KAT-B"), "?");
        assert_eq!(risk_of(&types, "KAT-C"), "?");
    }
}
