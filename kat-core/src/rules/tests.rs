use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::memory::{MemoryObjectStore, MemoryTaskStore};
use crate::object::{NaturalKey, Object, ObjectType};
use crate::org::OrgCode;
use crate::store::{ObjectQuery, ObjectStore};
use crate::task::{ObjectRef, Task, TaskId, TaskInput, TaskState};

const SHIPPED: &str = include_str!("../../../plugins/business_rules.json");
const FINDING_TYPES: &str = include_str!("../../../plugins/finding_types.json");

#[test]
fn the_shipped_rules_load_and_name_known_finding_types() {
    let set = RuleSet::parse(SHIPPED, "business_rules.json").expect("shipped rules");
    assert_eq!(set.len(), 19, "12 rules and 7 software detections");
    let types = crate::finding::FindingTypes::parse(FINDING_TYPES, "finding_types.json").unwrap();
    for r in set.iter() {
        assert!(
            types.get(&r.finding_type).is_some(),
            "{} -> {}",
            r.name,
            r.finding_type
        );
        assert!(r.enabled);
    }
    let detections: Vec<&Rule> = set
        .iter()
        .filter(|r| r.name.ends_with("_detection"))
        .collect();
    assert_eq!(detections.len(), 7);
    assert!(
        detections
            .iter()
            .all(|r| r.finding_type == "KAT-EXPOSED-SOFTWARE")
    );
    set.check_plugins("business_rules.json", &["dns"])
        .expect("requires only dns");
    let e = set
        .check_plugins("business_rules.json", &["portscan"])
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("business_rules.json: rule \"ipv6_nameservers\": requires[0]"),
        "{e}"
    );
}

fn rule_with(patch: Value) -> Value {
    let mut r = json!({"name": "r1", "description": "d", "object_type": "hostname",
        "finding_type": "KAT-NO-CAA", "condition": {"not": {"has": {"type": "dnscaarecord"}}}});
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            r.as_object_mut().unwrap().remove(k);
        } else {
            r[k] = v.clone();
        }
    }
    r
}

/// Every kind of mistake is a load error naming the file, the rule and the field.
#[test]
fn a_bad_rule_is_an_error_naming_file_rule_and_field() {
    let at = |text: String| -> String {
        match RuleSet::parse(&text, "ops.json") {
            Err(crate::Error::Invalid { at, .. }) => at,
            other => panic!("expected Invalid for {text}, got {other:?}"),
        }
    };
    let one = |patch: Value| at(Value::Array(vec![rule_with(patch)]).to_string());
    assert_eq!(at("{".into()), "ops.json");
    assert_eq!(at("{}".into()), "ops.json");
    assert_eq!(at("[3]".into()), "ops.json[0]");
    assert_eq!(one(json!({"name": null})), "ops.json[0]: name");
    assert_eq!(
        one(json!({"name": "Bad Name"})),
        "ops.json[0]: rule \"Bad Name\": name"
    );
    assert_eq!(
        one(json!({"colour": "red"})),
        "ops.json[0]: rule \"r1\": colour"
    );
    assert_eq!(
        one(json!({"enabled": "yes"})),
        "ops.json[0]: rule \"r1\": enabled"
    );
    assert_eq!(
        one(json!({"description": 1})),
        "ops.json[0]: rule \"r1\": description"
    );
    assert_eq!(
        one(json!({"object_type": "ipport"})),
        "ops.json[0]: rule \"r1\": object_type"
    );
    assert_eq!(
        one(json!({"finding_type": "KAT NO"})),
        "ops.json[0]: rule \"r1\": finding_type"
    );
    assert_eq!(
        one(json!({"finding_type": null})),
        "ops.json[0]: rule \"r1\": finding_type"
    );
    assert_eq!(
        one(json!({"requires": "dns"})),
        "ops.json[0]: rule \"r1\": requires"
    );
    assert_eq!(
        one(json!({"requires": ["dns", 3]})),
        "ops.json[0]: rule \"r1\": requires[1]"
    );
    assert_eq!(
        one(json!({"condition": null})),
        "ops.json[0]: rule \"r1\": condition"
    );
    let c = |cond: Value| one(json!({ "condition": cond }));
    let p = "ops.json[0]: rule \"r1\": condition";
    assert_eq!(c(json!({"maybe": []})), format!("{p}.maybe"));
    assert_eq!(c(json!({"all": [], "any": []})), p);
    assert_eq!(c(json!({"all": []})), format!("{p}.all"));
    assert_eq!(c(json!({"any": [{"not": 1}]})), format!("{p}.any[0].not"));
    assert_eq!(
        c(json!({"where": {"colour": {"eq": 1}}})),
        format!("{p}.where.colour")
    );
    assert_eq!(
        c(json!({"where": {"name": {"like": "x"}}})),
        format!("{p}.where.name.like")
    );
    assert_eq!(
        c(json!({"where": {"name": {"in": []}}})),
        format!("{p}.where.name.in")
    );
    assert_eq!(
        c(json!({"where": {"name": {"contains": ""}}})),
        format!("{p}.where.name.contains")
    );
    assert_eq!(
        c(json!({"has": {"type": "hostname"}})),
        format!("{p}.has.type")
    );
    assert_eq!(
        c(json!({"has": {"type": "nothing"}})),
        format!("{p}.has.type")
    );
    assert_eq!(
        c(json!({"has": {"type": "ipport"}})),
        format!("{p}.has.via"),
        "a port is not a hostname's"
    );
    assert_eq!(
        c(json!({"has": {"type": "dnsnsrecord", "via": "ttl"}})),
        format!("{p}.has.via")
    );
    assert_eq!(
        c(json!({"has": {"type": "dnsnsrecord", "via": "nope"}})),
        format!("{p}.has.via")
    );
    assert_eq!(
        c(json!({"has": {"type": "dnstxtrecord", "colour": 1}})),
        format!("{p}.has.colour")
    );
    assert_eq!(
        c(json!({"has": {"type": "dnstxtrecord", "where": {"port": {"eq": 1}}}})),
        format!("{p}.has.where.port")
    );
    assert_eq!(
        c(json!({"has": {"type": "dnstxtrecord", "target": {"where": {}}}})),
        format!("{p}.has.target")
    );
    assert_eq!(
        c(json!({"has": {"type": "dnstxtrecord", "software": {"name": {"eq": "x"}}}})),
        format!("{p}.has.software")
    );
    assert_eq!(
        c(json!({"has": {"type": "dnsnsrecord", "target": {"where": {"address": {"eq": "x"}}}}})),
        format!("{p}.has.target.where.address")
    );
    assert_eq!(
        c(json!({"has": {"type": "dnstxtrecord", "scope": "parents"}})),
        format!("{p}.has.scope")
    );
    assert_eq!(
        c(json!({"has": {"type": "dnstxtrecord", "at_least": 0}})),
        format!("{p}.has.at_least")
    );
    let ip = |cond: Value| one(json!({"object_type": "ipaddress", "condition": cond}));
    assert_eq!(
        ip(json!({"has": {"type": "ipport", "scope": "self_or_parents"}})),
        format!("{p}.has.scope")
    );
    assert_eq!(
        ip(json!({"has": {"type": "ipport", "software": {"cpe": {"eq": "x"}}}})),
        format!("{p}.has.software.cpe")
    );
    let dup = Value::Array(vec![rule_with(json!({})), rule_with(json!({}))]).to_string();
    assert_eq!(at(dup), "ops.json[1]: rule \"r1\": name");
    let missing = RuleSet::load(std::path::Path::new("/nonexistent/business_rules.json"));
    assert!(
        missing
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/business_rules.json")
    );
}

struct World {
    objects: Arc<MemoryObjectStore>,
    tasks: Arc<MemoryTaskStore>,
    runner: RuleRunner,
    org: OrgCode,
}

fn world() -> World {
    let objects = Arc::new(MemoryObjectStore::default());
    let tasks = Arc::new(MemoryTaskStore::default());
    let rules = Arc::new(RuleSet::parse(SHIPPED, "business_rules.json").unwrap());
    let runner = RuleRunner::new(rules, objects.clone(), tasks.clone());
    World {
        objects,
        tasks,
        runner,
        org: OrgCode::new("acme").unwrap(),
    }
}

fn obj(ty: ObjectType, v: Value) -> Object {
    Object::from_json(ty, &v).unwrap()
}

fn host(name: &str) -> Object {
    obj(ObjectType::Hostname, json!({ "name": name }))
}

impl World {
    /// Write objects as the API does: upsert, then the hook.
    async fn write(&self, objects: Vec<Object>) -> PassReport {
        self.objects
            .upsert(&self.org, objects.clone(), None)
            .await
            .unwrap();
        self.runner
            .objects_written(&self.org, &objects)
            .await
            .unwrap()
    }

    async fn delete(&self, o: Object) {
        let n = self
            .objects
            .delete(&self.org, o.object_type(), &[o.natural_key()])
            .await
            .unwrap();
        assert_eq!(n, 1);
        self.runner.objects_written(&self.org, &[o]).await.unwrap();
    }

    async fn processed_by_dns(&self, names: &[&str]) {
        let mut t = Task::queued(
            self.org.clone(),
            "dns",
            TaskInput {
                objects: names
                    .iter()
                    .map(|n| ObjectRef {
                        object_type: ObjectType::Hostname,
                        key: host(n).natural_key(),
                    })
                    .collect(),
                files: Vec::new(),
            },
        );
        t.state = TaskState::Completed;
        self.runner.task_ended(&t).await.unwrap();
    }

    /// Every stored finding, with its key.
    async fn stored_findings(&self) -> Vec<(NaturalKey, crate::object::Finding)> {
        let mut q = ObjectQuery::new(self.org.clone(), ObjectType::Finding);
        q.limit = 0;
        self.objects
            .query(&q)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|s| match s.object {
                Object::Finding(f) => (s.key, f),
                _ => unreachable!(),
            })
            .collect()
    }

    /// Findings by key: their source rules.
    async fn findings(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        self.stored_findings()
            .await
            .into_iter()
            .map(|(k, f)| (k.into_string(), f.source_rules))
            .collect()
    }

    async fn finding(&self, key: &str) -> Option<Vec<String>> {
        self.findings().await.get(key).cloned()
    }
}

#[tokio::test]
async fn a_finding_appears_when_its_rule_holds_and_goes_when_it_stops() {
    let w = world();
    w.write(vec![host("example.com")]).await;
    assert_eq!(
        w.finding("KAT-NO-SPF|internet|example.com").await,
        None,
        "dns has not run yet"
    );
    w.processed_by_dns(&["example.com"]).await;
    assert_eq!(
        w.finding("KAT-NO-SPF|internet|example.com").await,
        Some(vec!["missing_spf".to_string()]),
        "asserted once dns processed the hostname"
    );
    let json = w
        .objects
        .get(
            &w.org,
            ObjectType::Finding,
            &"KAT-NO-SPF|internet|example.com".parse().unwrap(),
        )
        .await
        .unwrap()
        .unwrap()
        .to_json();
    assert_eq!(json["source_rules"], json!(["missing_spf"]));
    assert_eq!(json["created_by"], Value::Null);
    let spf = obj(
        ObjectType::DnsTxtRecord,
        json!({"hostname": "example.com", "value": "v=spf1 -all"}),
    );
    w.write(vec![spf.clone()]).await;
    assert_eq!(
        w.finding("KAT-NO-SPF|internet|example.com").await,
        None,
        "the inverse"
    );
    w.delete(spf).await;
    assert!(
        w.finding("KAT-NO-SPF|internet|example.com").await.is_some(),
        "a deletion counts too"
    );
    // A TXT record under another prefix is no SPF policy of the host.
    w.write(vec![obj(
        ObjectType::DnsTxtRecord,
        json!({"hostname": "example.com", "prefix": "_x", "value": "v=spf1 -all"}),
    )])
    .await;
    assert!(w.finding("KAT-NO-SPF|internet|example.com").await.is_some());
    let report = w.runner.run_org(&w.org).await.unwrap();
    assert_eq!(
        (report.created, report.updated, report.deleted),
        (0, 0, 0),
        "a full pass agrees"
    );
    // The subject goes: so do the findings only rules wrote about it.
    w.delete(host("example.com")).await;
    assert!(w.findings().await.is_empty(), "{:?}", w.findings().await);
}

#[tokio::test]
async fn requires_counts_only_completed_tasks_of_the_plugin() {
    let w = world();
    w.write(vec![host("example.com")]).await;
    let target = ObjectRef {
        object_type: ObjectType::Hostname,
        key: host("example.com").natural_key(),
    };
    for (plugin, state) in [
        ("dns", TaskState::Failed),
        ("portscan", TaskState::Completed),
    ] {
        let mut t = Task::queued(
            w.org.clone(),
            plugin,
            TaskInput {
                objects: vec![target.clone()],
                files: vec![],
            },
        );
        t.state = state;
        w.runner.task_ended(&t).await.unwrap();
    }
    w.runner.run_org(&w.org).await.unwrap();
    assert!(w.finding("KAT-NO-CAA|internet|example.com").await.is_none());
    w.processed_by_dns(&["example.com"]).await;
    assert!(w.finding("KAT-NO-CAA|internet|example.com").await.is_some());
}

/// The original's seven `*_detection` rules share KAT-EXPOSED-SOFTWARE and delete each other's
/// findings; here each retracts only its own assertion.
#[tokio::test]
async fn detection_rules_sharing_a_finding_type_never_delete_each_others_findings() {
    let w = world();
    let port = |n: u16, sw: &[&str]| {
        obj(
            ObjectType::IpPort,
            json!({"address": "192.0.2.1", "protocol": "TCP", "port": n, "software": sw}),
        )
    };
    let sw = |name: &str| obj(ObjectType::Software, json!({ "name": name }));
    w.write(vec![
        sw("mysql"),
        sw("OpenSSH"),
        port(3306, &["mysql"]),
        port(22, &["OpenSSH"]),
    ])
    .await;
    let key = "KAT-EXPOSED-SOFTWARE||internet|192.0.2.1";
    assert_eq!(
        w.finding(key).await,
        Some(vec![
            "mysql_detection".to_string(),
            "openssh_detection".to_string()
        ])
    );
    for _ in 0..2 {
        let r = w.runner.run_org(&w.org).await.unwrap();
        assert_eq!((r.created, r.updated, r.deleted), (0, 0, 0));
        assert_eq!(
            w.finding(key).await.map(|v| v.len()),
            Some(2),
            "a full pass keeps both"
        );
    }
    // MySQL goes from its port: only its rule retracts.
    let bare = port(3306, &[]);
    w.objects.replace(&w.org, bare.clone(), None).await.unwrap();
    w.runner.objects_written(&w.org, &[bare]).await.unwrap();
    assert_eq!(
        w.finding(key).await,
        Some(vec!["openssh_detection".to_string()])
    );
    w.runner.run_org(&w.org).await.unwrap();
    assert_eq!(
        w.finding(key).await,
        Some(vec!["openssh_detection".to_string()])
    );
    // Port findings as well: 3306 and 22 are common, 22 a sysadmin port.
    assert!(
        w.finding("KAT-OPEN-SYSADMIN-PORT||internet|192.0.2.1")
            .await
            .is_some()
    );
    assert!(
        w.finding("KAT-OPEN-DATABASE-PORT||internet|192.0.2.1")
            .await
            .is_some()
    );
    assert!(
        w.finding("KAT-UNCOMMON-OPEN-PORT||internet|192.0.2.1")
            .await
            .is_none()
    );
    w.delete(port(22, &["OpenSSH"])).await;
    assert_eq!(w.finding(key).await, None, "the last rule retracted it");
    assert!(
        w.finding("KAT-OPEN-SYSADMIN-PORT||internet|192.0.2.1")
            .await
            .is_none()
    );
    assert!(
        w.finding("KAT-OPEN-DATABASE-PORT||internet|192.0.2.1")
            .await
            .is_some()
    );
}

#[tokio::test]
async fn a_finding_a_task_wrote_stays_when_the_rule_retracts() {
    let w = world();
    w.write(vec![host("example.com")]).await;
    let task = TaskId::new();
    let f = obj(
        ObjectType::Finding,
        json!({"finding_type": "KAT-NO-CAA", "hostname": "example.com", "description": "seen by a plugin"}),
    );
    w.objects
        .upsert(&w.org, vec![f.clone()], Some(task))
        .await
        .unwrap();
    w.runner.objects_written(&w.org, &[f]).await.unwrap();
    w.processed_by_dns(&["example.com"]).await;
    let key = "KAT-NO-CAA|internet|example.com";
    assert_eq!(w.finding(key).await, Some(vec!["missing_caa".to_string()]));
    w.write(vec![obj(
        ObjectType::DnsCaaRecord,
        json!({"hostname": "example.com", "flags": 0, "tag": "issue", "value": "ca.example"}),
    )])
    .await;
    let kept = w
        .objects
        .get(&w.org, ObjectType::Finding, &key.parse().unwrap())
        .await
        .unwrap()
        .expect("the task's finding stays");
    assert_eq!(kept.created_by, Some(task));
    match kept.object {
        Object::Finding(f) => {
            assert!(f.source_rules.is_empty());
            assert_eq!(f.description.as_deref(), Some("seen by a plugin"));
        }
        _ => unreachable!(),
    }
    // An operator writing a rule's finding makes it theirs too.
    let spf = "KAT-NO-SPF|internet|example.com";
    assert!(w.finding(spf).await.is_some());
    w.write(vec![obj(
        ObjectType::Finding,
        json!({"finding_type": "KAT-NO-SPF", "hostname": "example.com"}),
    )])
    .await;
    w.write(vec![obj(
        ObjectType::DnsTxtRecord,
        json!({"hostname": "example.com", "value": "v=spf1 -all"}),
    )])
    .await;
    assert_eq!(w.finding(spf).await, Some(vec![]), "retracted, not deleted");
}

#[tokio::test]
async fn a_deleted_subject_is_not_brought_back_by_the_findings_on_it() {
    let w = world();
    w.processed_by_dns(&["example.com"]).await;
    let ip = obj(ObjectType::IpAddress, json!({"address": "192.0.2.7"}));
    let port = obj(
        ObjectType::IpPort,
        json!({"address": "192.0.2.7", "protocol": "TCP", "port": 22}),
    );
    w.write(vec![host("example.com"), port]).await;
    let caa = "KAT-NO-CAA|internet|example.com";
    let ssh = "KAT-OPEN-SYSADMIN-PORT||internet|192.0.2.7";
    assert_eq!(w.finding(caa).await, Some(vec!["missing_caa".to_string()]));
    assert_eq!(
        w.finding(ssh).await,
        Some(vec!["open_sysadmin_port".to_string()])
    );
    // A plugin reports the same findings: they are the task's now, and the rules' too.
    let reported = vec![
        obj(
            ObjectType::Finding,
            json!({"finding_type": "KAT-NO-CAA", "hostname": "example.com"}),
        ),
        obj(
            ObjectType::Finding,
            json!({"finding_type": "KAT-OPEN-SYSADMIN-PORT", "address": "192.0.2.7"}),
        ),
    ];
    w.objects
        .upsert(&w.org, reported.clone(), Some(TaskId::new()))
        .await
        .unwrap();
    w.runner.objects_written(&w.org, &reported).await.unwrap();
    let before = w.findings().await;
    let stored = |ty: ObjectType, o: Object| {
        let w = &w;
        async move {
            w.objects
                .get(&w.org, ty, &o.natural_key())
                .await
                .unwrap()
                .is_some()
        }
    };
    for (subject, kept) in [(host("example.com"), caa), (ip.clone(), ssh)] {
        let ty = subject.object_type();
        let rules = before[kept].clone();
        let n = w
            .objects
            .delete(&w.org, ty, &[subject.natural_key()])
            .await
            .unwrap();
        assert_eq!(n, 1);
        let r = w
            .runner
            .objects_written(&w.org, std::slice::from_ref(&subject))
            .await
            .unwrap();
        assert!(!stored(ty, subject.clone()).await, "{ty:?} stays deleted");
        assert_eq!(r.updated, 0, "{ty:?}: the task's finding is not written");
        assert_eq!(
            w.finding(kept).await,
            Some(rules),
            "the task's finding keeps its rules while its subject is gone"
        );
        let r = w.runner.run_org(&w.org).await.unwrap();
        assert_eq!((r.created, r.updated, r.deleted), (0, 0, 0));
        assert!(
            !stored(ty, subject).await,
            "a full pass does not bring it back"
        );
    }
    let left = w.findings().await;
    assert_eq!(
        left.keys().collect::<Vec<_>>(),
        vec![caa, ssh],
        "the rules' own findings go, the tasks' stay: {left:?}"
    );
    // The subjects come back: so do the rules' findings, as they were.
    w.write(vec![host("example.com"), ip]).await;
    assert_eq!(w.findings().await, before);
}

#[tokio::test]
async fn a_name_servers_records_reach_the_hostnames_it_serves() {
    let w = world();
    let ns = |n: &str| {
        obj(
            ObjectType::DnsNsRecord,
            json!({"hostname": "example.com", "name_server": n}),
        )
    };
    let aaaa = |h: &str, a: &str| {
        obj(
            ObjectType::DnsAaaaRecord,
            json!({"hostname": h, "ip_address": a}),
        )
    };
    w.write(vec![
        host("example.com"),
        ns("ns1.example.net"),
        ns("ns2.example.net"),
    ])
    .await;
    w.processed_by_dns(&["example.com", "ns1.example.net", "ns2.example.net"])
        .await;
    let two = "KAT-NAMESERVER-NO-TWO-IPV6|internet|example.com";
    assert!(w.finding(two).await.is_some());
    assert!(
        w.finding("KAT-NAMESERVER-NO-IPV6|internet|ns1.example.net")
            .await
            .is_some()
    );
    assert!(
        w.finding("KAT-WEBSERVER-NO-IPV6|internet|ns1.example.net")
            .await
            .is_none(),
        "a name server"
    );
    assert!(
        w.finding("KAT-WEBSERVER-NO-IPV6|internet|example.com")
            .await
            .is_some()
    );
    w.write(vec![aaaa("ns1.example.net", "2001:db8::1")]).await;
    assert!(w.finding(two).await.is_some(), "one is not two");
    assert!(
        w.finding("KAT-NAMESERVER-NO-IPV6|internet|ns1.example.net")
            .await
            .is_none()
    );
    w.write(vec![aaaa("ns2.example.net", "2001:db8::2")]).await;
    assert!(
        w.finding(two).await.is_none(),
        "the AAAA record of a name server reaches the hostname it serves"
    );
    w.delete(aaaa("ns2.example.net", "2001:db8::2")).await;
    assert!(w.finding(two).await.is_some());
    // Domain ownership pending: the verification name servers.
    w.write(vec![obj(
        ObjectType::DnsNsRecord,
        json!({"hostname": "example.com", "name_server": "ns1.registrant-verification.ispapi.net"}),
    )])
    .await;
    assert!(
        w.finding("KAT-DOMAIN-OWNERSHIP-PENDING|internet|example.com")
            .await
            .is_some()
    );
    let r = w.runner.run_org(&w.org).await.unwrap();
    assert_eq!((r.created, r.updated, r.deleted), (0, 0, 0), "{r:?}");
}

#[tokio::test]
async fn dmarc_of_the_parent_domain_counts_for_its_subdomains() {
    let w = world();
    w.write(vec![
        host("example.com"),
        host("www.example.com"),
        host("www.example.com.au"),
    ])
    .await;
    w.processed_by_dns(&["example.com", "www.example.com", "www.example.com.au"])
        .await;
    for h in ["example.com", "www.example.com", "www.example.com.au"] {
        assert!(
            w.finding(&format!("KAT-NO-DMARC|internet|{h}"))
                .await
                .is_some(),
            "{h}"
        );
    }
    w.write(vec![obj(
        ObjectType::DnsTxtRecord,
        json!({"hostname": "example.com", "prefix": "_dmarc", "value": "v=DMARC1; p=reject"}),
    )])
    .await;
    assert!(
        w.finding("KAT-NO-DMARC|internet|example.com")
            .await
            .is_none()
    );
    assert!(
        w.finding("KAT-NO-DMARC|internet|www.example.com")
            .await
            .is_none(),
        "the parent's record counts"
    );
    assert!(
        w.finding("KAT-NO-DMARC|internet|www.example.com.au")
            .await
            .is_some(),
        "not a subdomain"
    );
}

#[tokio::test]
async fn rules_are_enabled_per_organization() {
    let w = world();
    let other = OrgCode::new("other").unwrap();
    for org in [&w.org, &other] {
        w.objects
            .upsert(org, vec![host("example.com")], None)
            .await
            .unwrap();
        let mut t = Task::queued(
            org.clone(),
            "dns",
            TaskInput {
                objects: vec![ObjectRef {
                    object_type: ObjectType::Hostname,
                    key: host("example.com").natural_key(),
                }],
                files: vec![],
            },
        );
        t.state = TaskState::Completed;
        w.runner.task_ended(&t).await.unwrap();
    }
    let caa: NaturalKey = "KAT-NO-CAA|internet|example.com".parse().unwrap();
    let r = w
        .runner
        .set_enabled(&w.org, "missing_caa", Some(false))
        .await
        .unwrap();
    assert_eq!(r.deleted, 1);
    assert!(
        w.objects
            .get(&w.org, ObjectType::Finding, &caa)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        w.objects
            .get(&other, ObjectType::Finding, &caa)
            .await
            .unwrap()
            .is_some()
    );
    w.write(vec![host("example.com")]).await;
    assert!(
        w.finding(caa.as_str()).await.is_none(),
        "stays off for incremental passes"
    );
    w.runner
        .set_enabled(&w.org, "missing_caa", None)
        .await
        .unwrap();
    assert!(
        w.finding(caa.as_str()).await.is_some(),
        "back to the default"
    );
    assert!(matches!(
        w.runner.set_enabled(&w.org, "nope", Some(true)).await,
        Err(crate::Error::NotFound { .. })
    ));
    use crate::rules::RuleCatalog;
    assert!(w.tasks.rule_overrides(&w.org).await.unwrap().is_empty());
}

/// A small deterministic generator for the randomized test below.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Random objects of every kind the shipped rules look at, over a few hostnames and addresses.
fn random_objects(g: &mut Lcg, n: usize) -> Vec<Object> {
    let names = [
        "a.example",
        "b.example",
        "c.a.example",
        "example",
        "ns.example",
    ];
    let addrs = ["192.0.2.1", "192.0.2.2", "2001:db8::1"];
    let mut out = Vec::new();
    for _ in 0..n {
        let h = names[g.below(names.len() as u64) as usize];
        let a = addrs[g.below(addrs.len() as u64) as usize];
        let o = match g.below(9) {
            0 => host(h),
            1 => obj(
                ObjectType::DnsARecord,
                json!({"hostname": h, "ip_address": addrs[g.below(2) as usize]}),
            ),
            2 => obj(
                ObjectType::DnsAaaaRecord,
                json!({"hostname": h, "ip_address": "2001:db8::1"}),
            ),
            3 => obj(
                ObjectType::DnsNsRecord,
                json!({"hostname": h, "name_server": names[g.below(5) as usize]}),
            ),
            4 => {
                let v = if g.below(2) == 0 {
                    json!({"hostname": h, "value": "v=spf1 -all"})
                } else {
                    json!({"hostname": h, "prefix": "_dmarc", "value": "v=DMARC1; p=none"})
                };
                obj(ObjectType::DnsTxtRecord, v)
            }
            5 => obj(
                ObjectType::DnsCaaRecord,
                json!({"hostname": h, "flags": 0, "tag": "issue", "value": "ca.example"}),
            ),
            6 => {
                let name = ["mysql", "OpenSSH", "pgsql"][g.below(3) as usize];
                obj(ObjectType::Software, json!({ "name": name }))
            }
            7 => {
                let port = [22, 443, 3306, 3389, 8080][g.below(5) as usize];
                // Several detection rules share KAT-EXPOSED-SOFTWARE.
                let sw: &[&str] =
                    [&[][..], &["mysql"], &["mysql", "OpenSSH"], &["pgsql"]][g.below(4) as usize];
                obj(
                    ObjectType::IpPort,
                    json!({"address": a, "protocol": "TCP", "port": port, "software": sw}),
                )
            }
            _ => obj(ObjectType::IpAddress, json!({ "address": a })),
        };
        out.push(o);
    }
    out
}

#[tokio::test]
async fn incremental_passes_and_a_full_pass_agree_on_random_worlds() {
    for seed in 0..40u64 {
        let mut g = Lcg(seed);
        let w = world();
        // b.example always, so that a rule asserts the finding a task wrote there (merged).
        let processed: Vec<&str> = ["a.example", "c.a.example", "example", "ns.example"]
            .into_iter()
            .filter(|_| g.below(4) != 0)
            .chain(["b.example"])
            .collect();
        w.processed_by_dns(&processed).await;
        // A finding a task wrote, on a subject a rule also asserts it on.
        let task_finding = obj(
            ObjectType::Finding,
            json!({"finding_type": "KAT-NO-CAA", "hostname": "b.example"}),
        );
        w.objects
            .upsert(&w.org, vec![task_finding.clone()], Some(TaskId::new()))
            .await
            .unwrap();
        w.runner
            .objects_written(&w.org, &[task_finding])
            .await
            .unwrap();
        let mut written: Vec<Object> = Vec::new();
        // A rule with a finding type of its own, or one of those sharing one.
        let off = [
            "missing_caa",
            "open_sysadmin_port",
            "mysql_detection",
            "openssh_detection",
        ][g.below(4) as usize];
        for step in 0..6 {
            if step == 3 {
                w.runner
                    .set_enabled(&w.org, off, Some(false))
                    .await
                    .unwrap();
            }
            let n = 1 + g.below(6) as usize;
            let batch = random_objects(&mut g, n);
            written.extend(batch.iter().cloned());
            w.write(batch).await;
            if step % 2 == 1 && !written.is_empty() {
                let gone = written.swap_remove(g.below(written.len() as u64) as usize);
                let n = w
                    .objects
                    .delete(&w.org, gone.object_type(), &[gone.natural_key()])
                    .await
                    .unwrap();
                if n == 1 {
                    w.runner.objects_written(&w.org, &[gone]).await.unwrap();
                }
            }
            let incremental = w.findings().await;
            let r = w.runner.run_org(&w.org).await.unwrap();
            let full = w.findings().await;
            assert_eq!(
                incremental, full,
                "seed {seed} step {step}: a full pass changed what the incremental ones left ({r:?})"
            );
            assert_eq!(
                (r.created, r.updated, r.deleted),
                (0, 0, 0),
                "seed {seed} step {step}"
            );
        }
        // A full pass from none of the rules' own findings reaches the same findings.
        let before = w.findings().await;
        let rules_own: Vec<NaturalKey> = w
            .stored_findings()
            .await
            .into_iter()
            .filter(|(_, f)| f.rule_only)
            .map(|(k, _)| k)
            .collect();
        w.objects
            .delete(&w.org, ObjectType::Finding, &rules_own)
            .await
            .unwrap();
        let r = w.runner.run_org(&w.org).await.unwrap();
        assert_eq!(w.findings().await, before, "seed {seed}");
        assert_eq!(r.created, rules_own.len(), "seed {seed}");
        // Rule findings no rule wants any more, and one whose rules are wrong: a full pass deletes
        // the first two and puts the right rules back on the third.
        let rule_finding = |v: Value, rule: &str| match obj(ObjectType::Finding, v) {
            Object::Finding(mut f) => {
                f.rule_only = true;
                f.source_rules = vec![rule.to_string()];
                Object::Finding(f)
            }
            _ => unreachable!(),
        };
        let orphan = rule_finding(
            json!({"finding_type": "KAT-NO-SPF", "hostname": "orphan.example"}),
            "missing_spf",
        );
        let wrong_type = rule_finding(
            json!({"finding_type": "KAT-NO-CAA", "address": "192.0.2.9"}),
            "missing_caa",
        );
        w.objects
            .upsert(&w.org, vec![orphan, wrong_type], None)
            .await
            .unwrap();
        w.objects
            .delete(
                &w.org,
                ObjectType::Hostname,
                &[host("orphan.example").natural_key()],
            )
            .await
            .unwrap();
        let wrong_rules = w
            .stored_findings()
            .await
            .into_iter()
            .find_map(|(_, mut f)| {
                (f.rule_only && !f.source_rules.is_empty()).then(|| {
                    f.source_rules = vec!["zz_not_a_rule".into()];
                    Object::Finding(f)
                })
            });
        if let Some(f) = &wrong_rules {
            w.objects.replace(&w.org, f.clone(), None).await.unwrap();
        }
        assert_eq!(w.findings().await.len(), before.len() + 2, "seed {seed}");
        let r = w.runner.run_org(&w.org).await.unwrap();
        assert_eq!(w.findings().await, before, "seed {seed}");
        assert_eq!(
            (r.created, r.updated, r.deleted),
            (0, usize::from(wrong_rules.is_some()), 2),
            "seed {seed}"
        );
    }
}
