//! `parse-nmap <file-id>`: the normalizer for nmap XML (from nmap itself, or from `portscan`).
//!
//! It stores each scanned host's address, its open ports (with the service and software nmap saw) and
//! the findings of the original's port rules on the address: KAT-OPEN-DATABASE-PORT,
//! KAT-OPEN-SYSADMIN-PORT, KAT-REMOTE-DESKTOP-PORT and KAT-UNCOMMON-OPEN-PORT.
//!
//! Stale ports are removed by explicit id only (`DELETE /objects/ipport/?id=<key>&id=<key>`; the
//! original sent `?pk=`, which its API read as "delete every port"): a stored port of a host that
//! nmap reports up is stale when its protocol's scanned port list (`<scaninfo services=...>`) covers
//! it and nmap did not find it open. A port finding is removed only when a stale port was what
//! justified it and no remaining port still does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_json::{Map, Value, json};

use crate::api::ApiClient;
use crate::cli::Args;
use crate::findings::{
    Finding, OPEN_DATABASE_PORT, OPEN_SYSADMIN_PORT, REMOTE_DESKTOP_PORT, UNCOMMON_OPEN_PORT,
};
use crate::names::{NETWORK, Subject, canonical_ip, encode_component, ip_key};
use crate::{Error, Result};

/// System administration ports (FTP, SSH, Telnet, VNC): the original's `SA_TCP_PORTS`.
pub const SYSADMIN_TCP_PORTS: [u16; 4] = [21, 22, 23, 5900];
/// Database ports: the original's `DB_TCP_PORTS` (MS SQL 1433/1434, Interbase/Firebird 3050, MySQL
/// 3306, PostgreSQL 5432) plus Oracle 1521, CouchDB 5984, Redis 6379, Cassandra 9042, Elasticsearch
/// 9200 and MongoDB 27017.
pub const DATABASE_TCP_PORTS: [u16; 11] = [
    1433, 1434, 1521, 3050, 3306, 5432, 5984, 6379, 9042, 9200, 27017,
];
/// Remote desktop (RDP): the original's `MICROSOFT_RDP_PORTS`.
pub const RDP_TCP_PORTS: [u16; 1] = [3389];
/// Common web, mail and DNS ports: the original's `COMMON_TCP_PORTS`.
pub const COMMON_TCP_PORTS: [u16; 10] = [25, 53, 80, 110, 143, 443, 465, 587, 993, 995];
/// Common UDP ports: the original's `COMMON_UDP_PORTS`.
pub const COMMON_UDP_PORTS: [u16; 1] = [53];

/// A transport protocol nmap reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    fn parse(s: &str) -> Option<Proto> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            _ => None,
        }
    }

    /// `TCP` or `UDP`, as the API spells it.
    pub fn api(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }

    /// `tcp` or `udp`, as nmap spells it.
    pub fn nmap(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// What nmap says about a port's service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Service {
    /// `ssh`, `http`, ...
    pub name: Option<String>,
    /// `OpenSSH`, `nginx`, ...
    pub product: Option<String>,
    /// `9.2p1 Debian 2+deb12u3`
    pub version: Option<String>,
    /// `protocol 2.0`
    pub extrainfo: Option<String>,
    /// `ssl` when the service is wrapped in TLS.
    pub tunnel: Option<String>,
    /// CPE names.
    pub cpes: Vec<String>,
}

/// One port of a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// TCP or UDP.
    pub protocol: Proto,
    /// The number.
    pub port: u16,
    /// `open`, `closed`, `filtered`, `open|filtered`, ...
    pub state: String,
    /// The service, if nmap named one.
    pub service: Option<Service>,
}

/// One scanned host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Its address (canonical).
    pub address: IpAddr,
    /// Whether nmap reports it up (a host without a `<status>` counts as up).
    pub up: bool,
    /// Its listed ports (every state).
    pub ports: Vec<Port>,
}

/// A parsed nmap run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// The scanner (`nmap`, `masscan`, `kat-portscan`).
    pub scanner: String,
    /// Hosts with an IP address.
    pub hosts: Vec<Host>,
    /// The ports scanned per protocol, from `<scaninfo services=...>` (absent: unknown).
    pub scanned: BTreeMap<Proto, Vec<(u16, u16)>>,
    /// Things skipped while parsing, for the summary.
    pub warnings: Vec<String>,
}

impl Scan {
    /// Whether `port` of `protocol` was among the scanned ports.
    pub fn was_scanned(&self, protocol: Proto, port: u16) -> bool {
        self.scanned
            .get(&protocol)
            .is_some_and(|ranges| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&port)))
    }
}

/// Parse nmap's port list syntax (`1-1024,3306,5432`) into inclusive ranges.
///
/// # Errors
/// A message naming the bad element.
pub fn parse_port_ranges(s: &str) -> std::result::Result<Vec<(u16, u16)>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |x: &str| -> std::result::Result<u16, String> {
            match x.trim().parse::<u32>() {
                Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
                _ => Err(format!("not a port number (1 to 65535): {x:?}")),
            }
        };
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(part)?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(format!("range {part:?} runs backwards"));
        }
        out.push((lo, hi));
    }
    Ok(out)
}

fn attr(n: roxmltree::Node<'_, '_>, name: &str) -> Option<String> {
    n.attribute(name)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Parse nmap XML (`-oX`), as written by nmap, masscan or `portscan`.
///
/// # Errors
/// When the text is not well-formed XML or its root is not `<nmaprun>`.
pub fn parse(xml: &str) -> Result<Scan> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(xml, opts)
        .map_err(|e| Error::new(format!("not well-formed XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "nmaprun" {
        return Err(Error::new(format!(
            "not nmap XML: the root element is <{}>, expected <nmaprun>",
            root.tag_name().name()
        )));
    }
    let mut scan = Scan {
        scanner: attr(root, "scanner").unwrap_or_else(|| "nmap".into()),
        ..Scan::default()
    };
    for info in root.children().filter(|n| n.has_tag_name("scaninfo")) {
        let Some(proto) = info.attribute("protocol").and_then(Proto::parse) else {
            continue;
        };
        let Some(services) = info.attribute("services") else {
            continue;
        };
        match parse_port_ranges(services) {
            Ok(r) => scan.scanned.entry(proto).or_default().extend(r),
            Err(e) => scan
                .warnings
                .push(format!("scaninfo services of {}: {e}", proto.nmap())),
        }
    }
    for host in root.descendants().filter(|n| n.has_tag_name("host")) {
        let address = host
            .children()
            .filter(|n| n.has_tag_name("address"))
            .filter(|n| matches!(n.attribute("addrtype"), Some("ipv4" | "ipv6") | None))
            .find_map(|n| n.attribute("addr").and_then(canonical_ip));
        let Some(address) = address else {
            scan.warnings
                .push("a <host> without an IPv4 or IPv6 address was skipped".into());
            continue;
        };
        let up = host
            .children()
            .find(|n| n.has_tag_name("status"))
            .and_then(|s| s.attribute("state"))
            .is_none_or(|s| s != "down");
        let mut ports = Vec::new();
        for p in host
            .children()
            .filter(|n| n.has_tag_name("ports"))
            .flat_map(|n| n.children())
            .filter(|n| n.has_tag_name("port"))
        {
            let protocol = match p.attribute("protocol").and_then(Proto::parse) {
                Some(x) => x,
                None => {
                    scan.warnings.push(format!(
                        "{address}: port {:?} with protocol {:?} skipped (only tcp and udp are stored)",
                        p.attribute("portid").unwrap_or(""),
                        p.attribute("protocol").unwrap_or("")
                    ));
                    continue;
                }
            };
            let port = match p.attribute("portid").map(str::trim).map(str::parse::<u32>) {
                Some(Ok(n)) if (1..=65535).contains(&n) => n as u16,
                _ => {
                    scan.warnings.push(format!(
                        "{address}: port with portid {:?} skipped",
                        p.attribute("portid").unwrap_or("")
                    ));
                    continue;
                }
            };
            let state = p
                .children()
                .find(|n| n.has_tag_name("state"))
                .and_then(|s| attr(s, "state"))
                .unwrap_or_else(|| "unknown".into());
            let service = p
                .children()
                .find(|n| n.has_tag_name("service"))
                .map(|s| Service {
                    name: attr(s, "name"),
                    product: attr(s, "product"),
                    version: attr(s, "version"),
                    extrainfo: attr(s, "extrainfo"),
                    tunnel: attr(s, "tunnel"),
                    cpes: s
                        .children()
                        .filter(|n| n.has_tag_name("cpe"))
                        .filter_map(|n| n.text())
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string)
                        .collect(),
                });
            ports.push(Port {
                protocol,
                port,
                state,
                service,
            });
        }
        scan.hosts.push(Host { address, up, ports });
    }
    Ok(scan)
}

/// A port as stored in the API (for stale-port removal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPort {
    /// Its natural key (`internet|127.0.0.1|TCP|22`).
    pub id: String,
    /// Its protocol.
    pub protocol: Proto,
    /// Its number.
    pub port: u16,
    /// Its service name.
    pub service: Option<String>,
}

impl StoredPort {
    /// Read a port object as the API returns it.
    pub fn from_json(v: &Value) -> Option<StoredPort> {
        Some(StoredPort {
            id: v.get("id")?.as_str()?.to_string(),
            protocol: Proto::parse(v.get("protocol")?.as_str()?)?,
            port: u16::try_from(v.get("port")?.as_u64()?).ok()?,
            service: v.get("service").and_then(Value::as_str).map(str::to_string),
        })
    }
}

/// An open port with what a finding needs to name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct OpenPort {
    protocol: Proto,
    port: u16,
    service: Option<String>,
}

impl OpenPort {
    fn label(&self) -> String {
        match &self.service {
            Some(s) if !s.is_empty() && s != "unknown" => {
                format!("{}/{} ({s})", self.port, self.protocol.nmap())
            }
            _ => format!("{}/{}", self.port, self.protocol.nmap()),
        }
    }
}

/// The port rules: which finding a port triggers, if any.
pub fn rule_for(protocol: Proto, port: u16) -> Option<&'static str> {
    match protocol {
        Proto::Tcp if DATABASE_TCP_PORTS.contains(&port) => Some(OPEN_DATABASE_PORT),
        Proto::Tcp if SYSADMIN_TCP_PORTS.contains(&port) => Some(OPEN_SYSADMIN_PORT),
        Proto::Tcp if RDP_TCP_PORTS.contains(&port) => Some(REMOTE_DESKTOP_PORT),
        Proto::Tcp if COMMON_TCP_PORTS.contains(&port) => None,
        Proto::Udp if COMMON_UDP_PORTS.contains(&port) => None,
        _ => Some(UNCOMMON_OPEN_PORT),
    }
}

fn rule_title(code: &str) -> &'static str {
    match code {
        OPEN_DATABASE_PORT => "database",
        OPEN_SYSADMIN_PORT => "system administration",
        REMOTE_DESKTOP_PORT => "remote desktop",
        _ => "uncommon",
    }
}

/// The findings the port rules give for these open ports of `ip`, one per code, each naming its ports.
fn port_findings(ip: IpAddr, open: &BTreeSet<OpenPort>) -> Vec<Finding> {
    let mut by_code: BTreeMap<&'static str, Vec<&OpenPort>> = BTreeMap::new();
    for p in open {
        if let Some(code) = rule_for(p.protocol, p.port) {
            by_code.entry(code).or_default().push(p);
        }
    }
    by_code
        .into_iter()
        .map(|(code, ports)| {
            let labels: Vec<String> = ports.iter().map(|p| p.label()).collect();
            let plural = if ports.len() == 1 { "port" } else { "ports" };
            Finding::new(
                code,
                Subject::Address(ip),
                format!(
                    "Open {} {plural} on {ip}: {}.",
                    rule_title(code),
                    labels.join(", ")
                ),
            )
        })
        .collect()
}

/// Text the API accepts: no control characters, at most `max` bytes.
fn clean(s: &str, max: usize) -> Option<String> {
    let mut t: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string();
    if t.len() > max {
        let mut end = max;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t.truncate(end);
    }
    (!t.is_empty()).then_some(t)
}

/// What [`normalize`] decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The body of `POST /objects/`: `ipaddress`, `ipport`, `software` and `finding` lists (only the
    /// non-empty ones).
    pub payload: Map<String, Value>,
    /// The findings in the payload.
    pub findings: Vec<Finding>,
    /// Ids of stored ports that are no longer open.
    pub stale_ports: Vec<String>,
    /// Ids of port findings that no longer apply.
    pub stale_findings: Vec<String>,
}

/// Map a scan (and, for stale-port removal, what the API holds about its hosts' ports) to the objects
/// and findings to write and the ids to remove.
pub fn normalize(scan: &Scan, stored: &BTreeMap<IpAddr, Vec<StoredPort>>) -> Plan {
    let mut ipaddress = Vec::new();
    let mut ipport = Vec::new();
    let mut software: BTreeMap<(String, Option<String>), Value> = BTreeMap::new();
    let mut plan = Plan::default();
    let mut seen_hosts = BTreeSet::new();
    // Merge hosts listed twice (several scans in one file).
    let mut hosts: BTreeMap<IpAddr, (bool, Vec<&Port>)> = BTreeMap::new();
    for h in &scan.hosts {
        let e = hosts.entry(h.address).or_insert((false, Vec::new()));
        e.0 |= h.up;
        e.1.extend(h.ports.iter());
    }
    for (ip, (up, ports)) in &hosts {
        let ip = *ip;
        let mut open: BTreeSet<OpenPort> = BTreeSet::new();
        let mut open_keys: BTreeSet<(Proto, u16)> = BTreeSet::new();
        for p in ports.iter().filter(|p| p.state == "open") {
            if !open_keys.insert((p.protocol, p.port)) {
                continue;
            }
            let svc = p.service.as_ref();
            let name = svc
                .and_then(|s| s.name.as_deref())
                .and_then(|n| clean(n, 256));
            let mut obj = json!({
                "address": ip_key(&ip),
                "protocol": p.protocol.api(),
                "port": p.port,
            });
            if let Value::Object(m) = &mut obj {
                if let Some(n) = &name {
                    m.insert("service".into(), Value::String(n.clone()));
                }
                if svc.and_then(|s| s.tunnel.as_deref()) == Some("ssl") {
                    m.insert("tls".into(), Value::Bool(true));
                }
                if let Some(product) = svc
                    .and_then(|s| s.product.as_deref())
                    .and_then(|x| clean(x, 256))
                {
                    let version = svc
                        .and_then(|s| s.version.as_deref())
                        .and_then(|v| clean(v, 256));
                    let mut sw = json!({"name": product});
                    if let (Value::Object(sm), Some(v)) = (&mut sw, &version) {
                        sm.insert("version".into(), Value::String(v.clone()));
                    }
                    m.insert("software".into(), Value::Array(vec![sw.clone()]));
                    let cpe = svc
                        .into_iter()
                        .flat_map(|s| s.cpes.iter())
                        .find(|c| c.starts_with("cpe:/a:") || c.starts_with("cpe:2.3:a:"))
                        .and_then(|c| clean(c, 1024));
                    if let (Value::Object(sm), Some(c)) = (&mut sw, cpe) {
                        sm.insert("cpe".into(), Value::String(c));
                    }
                    software.entry((product, version)).or_insert(sw);
                }
            }
            ipport.push(obj);
            open.insert(OpenPort {
                protocol: p.protocol,
                port: p.port,
                service: name,
            });
        }
        // Stale ports: stored, covered by the scanned list, and not open now (only for hosts seen up).
        let mut stale: Vec<&StoredPort> = Vec::new();
        let mut remaining = open.clone();
        for s in stored.get(&ip).map(Vec::as_slice).unwrap_or_default() {
            if open_keys.contains(&(s.protocol, s.port)) {
                continue;
            }
            if *up && scan.was_scanned(s.protocol, s.port) {
                stale.push(s);
            } else {
                remaining.insert(OpenPort {
                    protocol: s.protocol,
                    port: s.port,
                    service: s.service.clone(),
                });
            }
        }
        let found = port_findings(ip, &remaining);
        for s in &stale {
            plan.stale_ports.push(s.id.clone());
            if let Some(code) = rule_for(s.protocol, s.port) {
                let key = Subject::Address(ip).finding_key(code);
                if !found.iter().any(|f| f.code == code) && !plan.stale_findings.contains(&key) {
                    plan.stale_findings.push(key);
                }
            }
        }
        if seen_hosts.insert(ip) {
            ipaddress.push(json!({"network": NETWORK, "address": ip.to_string()}));
        }
        plan.findings.extend(found);
    }
    let mut put = |k: &str, v: Vec<Value>| {
        if !v.is_empty() {
            plan.payload.insert(k.to_string(), Value::Array(v));
        }
    };
    put("ipaddress", ipaddress);
    put("ipport", ipport);
    put("software", software.into_values().collect());
    let finding_json: Vec<Value> = plan.findings.iter().map(Finding::to_json).collect();
    if !finding_json.is_empty() {
        plan.payload
            .insert("finding".into(), Value::Array(finding_json));
    }
    plan
}

/// `parse-nmap <file-id> [--file PATH] [--no-cleanup]`.
///
/// # Errors
/// Bad arguments, a failed download, XML that is not nmap's, or a failing API request.
pub fn run(args: &[String]) -> Result<Value> {
    let a = Args::parse(args, &["file"], &["no-cleanup"])?;
    let api = ApiClient::from_env()?;
    let (source, bytes) = match a.option("file") {
        Some(path) => {
            if !a.positional.is_empty() {
                return Err(Error::usage("give a file id or --file PATH, not both"));
            }
            (
                format!("file {path}"),
                std::fs::read(path).map_err(|e| Error::new(format!("cannot read {path}: {e}")))?,
            )
        }
        None => {
            let id = a.one_positional("file id")?;
            (
                format!("file {id}"),
                api.download_file(id)
                    .map_err(|e| e.context(format!("downloading file {id}")))?,
            )
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let scan = parse(&text).map_err(|e| e.context(&source))?;
    for w in &scan.warnings {
        eprintln!("kat-plugins parse-nmap: warning: {w}");
    }
    let cleanup = !a.flag("no-cleanup");
    let mut stored = BTreeMap::new();
    if cleanup {
        for h in scan.hosts.iter().filter(|h| h.up) {
            if stored.contains_key(&h.address) || scan.scanned.is_empty() {
                continue;
            }
            let items = api.list_all(
                "/objects/ipport/",
                &format!("address={}", encode_component(&ip_key(&h.address))),
            )?;
            stored.insert(
                h.address,
                items
                    .iter()
                    .filter_map(StoredPort::from_json)
                    .collect::<Vec<_>>(),
            );
        }
    }
    let plan = normalize(&scan, &stored);
    if !plan.payload.is_empty() {
        api.post_json("/objects/", &Value::Object(plan.payload.clone()))?;
    }
    let removed_ports = if plan.stale_ports.is_empty() {
        0
    } else {
        api.delete_by("/objects/ipport/", "id", &plan.stale_ports)?
    };
    let removed_findings = if plan.stale_findings.is_empty() {
        0
    } else {
        api.delete_by("/objects/finding/", "id", &plan.stale_findings)?
    };
    let count = |k: &str| {
        plan.payload
            .get(k)
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    let hosts: Vec<Value> = scan
        .hosts
        .iter()
        .map(|h| {
            json!({
                "address": h.address.to_string(),
                "up": h.up,
                "open": h.ports.iter().filter(|p| p.state == "open")
                    .map(|p| format!("{}/{}", p.port, p.protocol.nmap())).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({
        "plugin": "parse-nmap",
        "source": source,
        "scanner": scan.scanner,
        "hosts": hosts,
        "posted": {
            "ipaddress": count("ipaddress"),
            "ipport": count("ipport"),
            "software": count("software"),
            "finding": count("finding"),
        },
        "findings": plan.findings.iter().map(|f| json!({"finding_type": f.code, "id": f.key(), "description": f.description})).collect::<Vec<_>>(),
        "cleanup": cleanup,
        "stale_ports": plan.stale_ports,
        "removed_ports": removed_ports,
        "stale_findings": plan.stale_findings,
        "removed_findings": removed_findings,
        "warnings": scan.warnings,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(
            parse_port_ranges("1-1024,3306, 5432").unwrap(),
            vec![(1, 1024), (3306, 3306), (5432, 5432)]
        );
        assert!(parse_port_ranges("0").is_err());
        assert!(parse_port_ranges("10-1").is_err());
        assert!(parse_port_ranges("1-70000").is_err());
        assert_eq!(parse_port_ranges("").unwrap(), vec![]);
    }

    #[test]
    fn rules_follow_the_original() {
        assert_eq!(rule_for(Proto::Tcp, 3306), Some(OPEN_DATABASE_PORT));
        assert_eq!(rule_for(Proto::Tcp, 6379), Some(OPEN_DATABASE_PORT));
        assert_eq!(rule_for(Proto::Tcp, 22), Some(OPEN_SYSADMIN_PORT));
        assert_eq!(rule_for(Proto::Tcp, 5900), Some(OPEN_SYSADMIN_PORT));
        assert_eq!(rule_for(Proto::Tcp, 3389), Some(REMOTE_DESKTOP_PORT));
        assert_eq!(rule_for(Proto::Tcp, 443), None);
        assert_eq!(rule_for(Proto::Tcp, 8080), Some(UNCOMMON_OPEN_PORT));
        assert_eq!(rule_for(Proto::Udp, 53), None);
        assert_eq!(rule_for(Proto::Udp, 3306), Some(UNCOMMON_OPEN_PORT));
    }

    #[test]
    fn not_nmap() {
        assert!(
            parse("<html/>")
                .unwrap_err()
                .message()
                .contains("<nmaprun>")
        );
        assert!(parse("<nmaprun>").unwrap_err().message().contains("XML"));
        assert!(parse("").is_err());
    }

    fn scan_with(ports: &[(u16, &str)], scanned: &str) -> Scan {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        Scan {
            scanner: "nmap".into(),
            hosts: vec![Host {
                address: ip,
                up: true,
                ports: ports
                    .iter()
                    .map(|(p, s)| Port {
                        protocol: Proto::Tcp,
                        port: *p,
                        state: (*s).into(),
                        service: None,
                    })
                    .collect(),
            }],
            scanned: [(Proto::Tcp, parse_port_ranges(scanned).unwrap())].into(),
            warnings: vec![],
        }
    }

    fn stored(ports: &[u16]) -> BTreeMap<IpAddr, Vec<StoredPort>> {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        [(
            ip,
            ports
                .iter()
                .map(|p| StoredPort {
                    id: format!("internet|192.0.2.7|TCP|{p}"),
                    protocol: Proto::Tcp,
                    port: *p,
                    service: None,
                })
                .collect(),
        )]
        .into()
    }

    #[test]
    fn stale_ports_only_within_the_scanned_range() {
        // 3306 was open before and is closed now; 31337 is outside the scanned range and stays.
        let scan = scan_with(&[(22, "open"), (3306, "closed")], "1-1024,3306");
        let plan = normalize(&scan, &stored(&[22, 3306, 31337]));
        assert_eq!(plan.stale_ports, vec!["internet|192.0.2.7|TCP|3306"]);
        assert_eq!(
            plan.stale_findings,
            vec!["KAT-OPEN-DATABASE-PORT||internet|192.0.2.7"]
        );
        let codes: Vec<&str> = plan.findings.iter().map(|f| f.code).collect();
        // 31337 is still known open, so KAT-UNCOMMON-OPEN-PORT stays justified.
        assert_eq!(codes, vec![OPEN_SYSADMIN_PORT, UNCOMMON_OPEN_PORT]);
        // A stored database port outside the scan keeps the database finding alive.
        let plan = normalize(&scan_with(&[], "3306"), &stored(&[3306, 5432]));
        assert_eq!(plan.stale_ports, vec!["internet|192.0.2.7|TCP|3306"]);
        assert!(plan.stale_findings.is_empty());
        assert_eq!(plan.findings[0].code, OPEN_DATABASE_PORT);
        assert!(plan.findings[0].description.contains("5432/tcp"));
    }

    #[test]
    fn no_cleanup_without_scaninfo_or_for_down_hosts() {
        let mut scan = scan_with(&[], "1-1024");
        scan.scanned.clear();
        assert!(normalize(&scan, &stored(&[22])).stale_ports.is_empty());
        let mut scan = scan_with(&[], "1-1024");
        scan.hosts[0].up = false;
        assert!(normalize(&scan, &stored(&[22])).stale_ports.is_empty());
    }
}
