//! `dns <hostname>`: resolve a hostname's A, AAAA, CNAME, MX, NS, TXT (and `_dmarc` TXT), CAA and the
//! usual SRV records, store them with the hostnames and addresses they name, and remove the records of
//! that hostname that are no longer there.
//!
//! Removal is careful: only record kinds whose query was answered (records, no data, or NXDOMAIN) are
//! compared; a query that timed out or failed (SERVFAIL, REFUSED) leaves the stored records of its kind
//! alone. Stale records are removed by explicit id:
//! `DELETE /objects/hostname/<key>/dnsrecord/?record_id=<key>&record_id=<key>`.
//!
//! Unlike the original, MX, NS and CNAME targets are lowercased (and validated): a record whose
//! owner or target is not a valid hostname is skipped and named in the summary, instead of failing
//! the whole write.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use hickory_resolver::{ResolveError, Resolver, TokioResolver};
use serde_json::{Map, Value, json};

use crate::api::ApiClient;
use crate::cli::Args;
use crate::names::{
    NETWORK, canonical_hostname, canonical_ip, encode_component, hostname_key, ip_key,
};
use crate::{Error, Result};

/// The SRV names asked for: `(service, proto)`.
pub const SRV_NAMES: [(&str, &str); 6] = [
    ("_sip", "_tls"),
    ("_sipfederationtls", "_tcp"),
    ("_xmpp-client", "_tcp"),
    ("_xmpp-server", "_tcp"),
    ("_autodiscover", "_tcp"),
    ("_submissions", "_tcp"),
];

/// The CAA tags the API accepts.
pub const CAA_TAGS: [&str; 7] = [
    "contactemail",
    "contactphone",
    "iodef",
    "issue",
    "issuemail",
    "issuevmc",
    "issuewild",
];

/// The record types (API names) this plugin writes and keeps up to date.
pub const RECORD_TYPES: [&str; 8] = [
    "dnsarecord",
    "dnsaaaarecord",
    "dnscnamerecord",
    "dnsmxrecord",
    "dnsnsrecord",
    "dnstxtrecord",
    "dnscaarecord",
    "dnssrvrecord",
];

/// One question asked about the hostname.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Query {
    /// A of the name.
    A,
    /// AAAA of the name.
    Aaaa,
    /// CNAME of the name.
    Cname,
    /// MX of the name.
    Mx,
    /// NS of the name.
    Ns,
    /// TXT of the name.
    Txt,
    /// TXT of `_dmarc.<name>` (stored on the name with prefix `_dmarc`).
    Dmarc,
    /// CAA of the name.
    Caa,
    /// SRV of `<service>.<proto>.<name>`.
    Srv(&'static str, &'static str),
}

impl Query {
    /// The questions asked, SRV ones included when `srv`.
    pub fn all(srv: bool) -> Vec<Query> {
        let mut v = vec![
            Query::A,
            Query::Aaaa,
            Query::Cname,
            Query::Mx,
            Query::Ns,
            Query::Txt,
            Query::Dmarc,
            Query::Caa,
        ];
        if srv {
            v.extend(SRV_NAMES.iter().map(|(s, p)| Query::Srv(s, p)));
        }
        v
    }

    /// The name asked about (fully qualified) and the record type.
    pub fn question(&self, hostname: &str) -> (String, RecordType) {
        match self {
            Query::A => (format!("{hostname}."), RecordType::A),
            Query::Aaaa => (format!("{hostname}."), RecordType::AAAA),
            Query::Cname => (format!("{hostname}."), RecordType::CNAME),
            Query::Mx => (format!("{hostname}."), RecordType::MX),
            Query::Ns => (format!("{hostname}."), RecordType::NS),
            Query::Txt => (format!("{hostname}."), RecordType::TXT),
            Query::Dmarc => (format!("_dmarc.{hostname}."), RecordType::TXT),
            Query::Caa => (format!("{hostname}."), RecordType::CAA),
            Query::Srv(s, p) => (format!("{s}.{p}.{hostname}."), RecordType::SRV),
        }
    }

    /// A short label for the summary (`A`, `TXT _dmarc`, `SRV _sip._tls`).
    pub fn label(&self) -> String {
        match self {
            Query::A => "A".into(),
            Query::Aaaa => "AAAA".into(),
            Query::Cname => "CNAME".into(),
            Query::Mx => "MX".into(),
            Query::Ns => "NS".into(),
            Query::Txt => "TXT".into(),
            Query::Dmarc => "TXT _dmarc".into(),
            Query::Caa => "CAA".into(),
            Query::Srv(s, p) => format!("SRV {s}.{p}"),
        }
    }

    /// The query a stored record of the hostname belongs to (which answer can show it is stale), or
    /// `None` for records this plugin does not manage.
    pub fn of_stored(record_type: &str, record: &Value) -> Option<Query> {
        let field = |k: &str| record.get(k).and_then(Value::as_str).unwrap_or("");
        Some(match record_type {
            "dnsarecord" => Query::A,
            "dnsaaaarecord" => Query::Aaaa,
            "dnscnamerecord" => Query::Cname,
            "dnsmxrecord" => Query::Mx,
            "dnsnsrecord" => Query::Ns,
            "dnscaarecord" => Query::Caa,
            "dnstxtrecord" => match field("prefix") {
                "" => Query::Txt,
                "_dmarc" => Query::Dmarc,
                _ => return None,
            },
            "dnssrvrecord" => {
                let (s, p) = SRV_NAMES
                    .iter()
                    .find(|(s, p)| *s == field("service") && *p == field("proto"))?;
                Query::Srv(s, p)
            }
            _ => return None,
        })
    }
}

/// A record as received (owner name as the server spelled it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Owner name (`www.example.com.`).
    pub owner: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// Data.
    pub data: RecordData,
}

/// The data of the record types this plugin stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    /// An IPv4 or IPv6 address (A or AAAA).
    Address(IpAddr),
    /// CNAME target.
    Cname(String),
    /// MX preference and exchange (`.` for a null MX).
    Mx(u16, String),
    /// NS name server.
    Ns(String),
    /// TXT character strings.
    Txt(Vec<Vec<u8>>),
    /// CAA flags, tag and raw value.
    Caa(u8, String, Vec<u8>),
    /// SRV priority, weight, port and target.
    Srv(u16, u16, u16, String),
    /// Anything else (ignored).
    Other(String),
}

impl Answer {
    /// Convert a hickory record.
    pub fn from_record(r: &Record) -> Answer {
        let data = match r.data() {
            RData::A(a) => RecordData::Address(IpAddr::V4(a.0)),
            RData::AAAA(a) => RecordData::Address(IpAddr::V6(a.0)),
            RData::CNAME(c) => RecordData::Cname(c.0.to_ascii()),
            RData::MX(m) => RecordData::Mx(m.preference(), m.exchange().to_ascii()),
            RData::NS(n) => RecordData::Ns(n.0.to_ascii()),
            RData::TXT(t) => RecordData::Txt(t.txt_data().iter().map(|b| b.to_vec()).collect()),
            RData::CAA(c) => RecordData::Caa(
                c.flags(),
                c.tag().as_str().to_ascii_lowercase(),
                c.raw_value().to_vec(),
            ),
            RData::SRV(s) => {
                RecordData::Srv(s.priority(), s.weight(), s.port(), s.target().to_ascii())
            }
            other => RecordData::Other(other.record_type().to_string()),
        };
        Answer {
            owner: r.name().to_ascii(),
            ttl: r.ttl(),
            data,
        }
    }
}

/// How a query went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The answer's records (with any CNAME chain).
    Records(Vec<Answer>),
    /// NOERROR without records of the type.
    NoData,
    /// The name does not exist.
    NxDomain,
    /// No usable answer (timeout, SERVFAIL, REFUSED, ...): stored records of this kind are kept.
    Failed(String),
}

impl Outcome {
    /// Whether the answer says what exists (so stored records it lacks are stale).
    pub fn answered(&self) -> bool {
        !matches!(self, Outcome::Failed(_))
    }

    fn from_error(e: &ResolveError) -> Outcome {
        if let Some(p) = e.proto()
            && let ProtoErrorKind::NoRecordsFound { response_code, .. } = p.kind()
        {
            return match *response_code {
                ResponseCode::NoError => Outcome::NoData,
                ResponseCode::NXDomain => Outcome::NxDomain,
                other => Outcome::Failed(format!("{other}")),
            };
        }
        Outcome::Failed(e.to_string())
    }
}

/// What to write, from the answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    /// The body of `POST /objects/`: `hostname`, `ipaddress` and `dns*record` lists (non-empty ones).
    pub body: Map<String, Value>,
    /// Records left out, and why.
    pub skipped: Vec<String>,
}

fn host_or_skip(raw: &str, what: &str, skipped: &mut Vec<String>) -> Option<String> {
    match canonical_hostname(raw) {
        Ok(h) => Some(h),
        Err(e) => {
            skipped.push(format!("{what}: {e}"));
            None
        }
    }
}

fn text_or_skip(bytes: &[u8], what: &str, skipped: &mut Vec<String>) -> Option<String> {
    let s = String::from_utf8_lossy(bytes).to_string();
    if s.chars().any(|c| c.is_control() && c != '\t') {
        skipped.push(format!("{what}: the value holds control characters"));
        return None;
    }
    if s.len() > 65_535 {
        skipped.push(format!("{what}: the value is longer than 65535 bytes"));
        return None;
    }
    Some(s)
}

/// Map the answers about `hostname` (canonical) to the objects to write: every record of the asked
/// type (attributed to its owner name, so a CNAME chain's target gets the addresses), the CNAMEs on
/// the way, `_dmarc` TXT values on the hostname with prefix `_dmarc`, SRV records on the hostname with
/// their service and protocol, and the hostnames and addresses they name.
pub fn build_payload(hostname: &str, results: &[(Query, Outcome)]) -> Payload {
    let mut skipped = Vec::new();
    let mut hostnames: BTreeSet<String> = BTreeSet::from([hostname.to_string()]);
    let mut ips: BTreeSet<IpAddr> = BTreeSet::new();
    // Per type, records keyed by their identity (everything but the TTL).
    let mut records: BTreeMap<&'static str, BTreeMap<String, Value>> = BTreeMap::new();
    let mut add = |ty: &'static str, mut v: Value, ttl: u32| {
        let id = v.to_string();
        if let Value::Object(m) = &mut v {
            m.insert("ttl".into(), Value::from(ttl));
        }
        records.entry(ty).or_default().entry(id).or_insert(v);
    };
    for (query, outcome) in results {
        let Outcome::Records(answers) = outcome else {
            continue;
        };
        for a in answers {
            let what = format!("{} record of {}", query.label(), a.owner);
            match (query, &a.data) {
                (Query::Dmarc, RecordData::Txt(parts)) => {
                    if let Some(value) = text_or_skip(&parts.concat(), &what, &mut skipped) {
                        add(
                            "dnstxtrecord",
                            json!({"hostname": hostname_key(hostname), "prefix": "_dmarc", "value": value}),
                            a.ttl,
                        );
                    }
                }
                (Query::Srv(service, proto), RecordData::Srv(priority, weight, port, _target)) => {
                    add(
                        "dnssrvrecord",
                        json!({"hostname": hostname_key(hostname), "proto": proto, "service": service,
                               "priority": priority, "weight": weight, "port": port}),
                        a.ttl,
                    );
                }
                (Query::Dmarc | Query::Srv(..), _) => {}
                (_, data) => {
                    let expected = match query {
                        Query::A | Query::Aaaa => matches!(data, RecordData::Address(_)),
                        Query::Mx => matches!(data, RecordData::Mx(..)),
                        Query::Ns => matches!(data, RecordData::Ns(_)),
                        Query::Txt => matches!(data, RecordData::Txt(_)),
                        Query::Caa => matches!(data, RecordData::Caa(..)),
                        _ => false,
                    };
                    if !expected && !matches!(data, RecordData::Cname(_)) {
                        continue;
                    }
                    let Some(owner) = host_or_skip(&a.owner, &what, &mut skipped) else {
                        continue;
                    };
                    let h = hostname_key(&owner);
                    match data {
                        RecordData::Address(ip) => {
                            let Some(ip) = canonical_ip(&ip.to_string()) else {
                                continue;
                            };
                            let ty = match (query, ip) {
                                (Query::A, IpAddr::V4(_)) => "dnsarecord",
                                (Query::Aaaa, IpAddr::V6(_)) => "dnsaaaarecord",
                                _ => {
                                    skipped.push(format!(
                                        "{what}: {ip} is not an address of this record type"
                                    ));
                                    continue;
                                }
                            };
                            ips.insert(ip);
                            add(ty, json!({"hostname": h, "ip_address": ip_key(&ip)}), a.ttl);
                        }
                        RecordData::Cname(t) => {
                            let Some(t) =
                                host_or_skip(t, &format!("CNAME target of {owner}"), &mut skipped)
                            else {
                                continue;
                            };
                            add(
                                "dnscnamerecord",
                                json!({"hostname": h, "target": hostname_key(&t)}),
                                a.ttl,
                            );
                            hostnames.insert(t);
                        }
                        RecordData::Mx(pref, exchange) => {
                            let ex = exchange.trim_end_matches('.');
                            if ex.is_empty() {
                                // A null MX ("."): the name accepts no mail.
                                add(
                                    "dnsmxrecord",
                                    json!({"hostname": h, "preference": pref}),
                                    a.ttl,
                                );
                            } else if let Some(m) =
                                host_or_skip(exchange, &format!("MX of {owner}"), &mut skipped)
                            {
                                add(
                                    "dnsmxrecord",
                                    json!({"hostname": h, "preference": pref, "mail_server": hostname_key(&m)}),
                                    a.ttl,
                                );
                                hostnames.insert(m);
                            }
                        }
                        RecordData::Ns(ns) => {
                            if let Some(ns) =
                                host_or_skip(ns, &format!("NS of {owner}"), &mut skipped)
                            {
                                add(
                                    "dnsnsrecord",
                                    json!({"hostname": h, "name_server": hostname_key(&ns)}),
                                    a.ttl,
                                );
                                hostnames.insert(ns);
                            }
                        }
                        RecordData::Txt(parts) => {
                            if let Some(value) = text_or_skip(&parts.concat(), &what, &mut skipped)
                            {
                                add(
                                    "dnstxtrecord",
                                    json!({"hostname": h, "prefix": "", "value": value}),
                                    a.ttl,
                                );
                            }
                        }
                        RecordData::Caa(flags, tag, value) => {
                            if !CAA_TAGS.contains(&tag.as_str()) {
                                skipped.push(format!(
                                    "{what}: CAA tag {tag:?} is not one the API stores"
                                ));
                                continue;
                            }
                            if let Some(value) = text_or_skip(value, &what, &mut skipped) {
                                add(
                                    "dnscaarecord",
                                    json!({"hostname": h, "flags": flags, "tag": tag, "value": value}),
                                    a.ttl,
                                );
                            }
                        }
                        RecordData::Srv(..) | RecordData::Other(_) => continue,
                    }
                    hostnames.insert(owner);
                }
            }
        }
    }
    let mut body = Map::new();
    body.insert(
        "hostname".into(),
        Value::Array(
            hostnames
                .iter()
                .map(|n| json!({"network": NETWORK, "name": n}))
                .collect(),
        ),
    );
    if !ips.is_empty() {
        body.insert(
            "ipaddress".into(),
            Value::Array(
                ips.iter()
                    .map(|ip| json!({"network": NETWORK, "address": ip.to_string()}))
                    .collect(),
            ),
        );
    }
    for ty in RECORD_TYPES {
        if let Some(r) = records.remove(ty) {
            body.insert(ty.into(), Value::Array(r.into_values().collect()));
        }
    }
    Payload { body, skipped }
}

/// The ids of the stored records of `hostname` that are stale: managed by a query that was answered,
/// and not among the ids written now.
pub fn stale_ids(
    results: &[(Query, Outcome)],
    stored: &BTreeMap<String, Vec<Value>>,
    written: &BTreeSet<String>,
) -> Vec<String> {
    let answered: BTreeSet<Query> = results
        .iter()
        .filter(|(_, o)| o.answered())
        .map(|(q, _)| *q)
        .collect();
    let mut out = Vec::new();
    for (ty, items) in stored {
        for r in items {
            let Some(id) = r.get("id").and_then(Value::as_str) else {
                continue;
            };
            let Some(q) = Query::of_stored(ty, r) else {
                continue;
            };
            if answered.contains(&q) && !written.contains(id) && !out.iter().any(|x| x == id) {
                out.push(id.to_string());
            }
        }
    }
    out
}

/// Build the resolver: the given name server, or the system's (`/etc/resolv.conf`); the hosts file is
/// used for addresses either way, and `localhost` never leaves the machine.
///
/// # Errors
/// When the system configuration cannot be read.
pub fn resolver(nameserver: Option<SocketAddr>, timeout: Duration) -> Result<TokioResolver> {
    let mut builder = match nameserver {
        Some(ns) => Resolver::builder_with_config(
            ResolverConfig::from_parts(
                None,
                vec![],
                NameServerConfigGroup::from_ips_clear(&[ns.ip()], ns.port(), true),
            ),
            TokioConnectionProvider::default(),
        ),
        None => Resolver::builder_tokio().map_err(|e| {
            Error::new(format!(
                "cannot read the system's DNS configuration (/etc/resolv.conf): {e}; give --nameserver IP:PORT or KAT_DNS_NAMESERVER"
            ))
        })?,
    };
    let o = builder.options_mut();
    o.timeout = timeout;
    o.attempts = 2;
    o.use_hosts_file = ResolveHosts::Always;
    o.edns0 = true;
    o.preserve_intermediates = true;
    o.cache_size = 64;
    o.ndots = 0;
    Ok(builder.build())
}

/// Ask every query about `hostname` (concurrently).
///
/// # Errors
/// When the runtime cannot be built.
pub fn resolve(
    nameserver: Option<SocketAddr>,
    timeout: Duration,
    hostname: &str,
    queries: &[Query],
) -> Result<Vec<(Query, Outcome)>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::new(format!("cannot start the resolver: {e}")))?;
    rt.block_on(async {
        let r = resolver(nameserver, timeout)?;
        let mut set = tokio::task::JoinSet::new();
        for (i, q) in queries.iter().enumerate() {
            let r = r.clone();
            let q = *q;
            let (name, rtype) = q.question(hostname);
            set.spawn(async move {
                // An overall bound on top of the resolver's own per-try timeout.
                let limit = timeout * 6 + Duration::from_secs(1);
                let outcome = match tokio::time::timeout(limit, r.lookup(name.as_str(), rtype))
                    .await
                {
                    Ok(Ok(l)) => {
                        Outcome::Records(l.records().iter().map(Answer::from_record).collect())
                    }
                    Ok(Err(e)) => Outcome::from_error(&e),
                    Err(_) => Outcome::Failed(format!("no answer within {} s", limit.as_secs())),
                };
                (i, q, outcome)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.map_err(|e| Error::new(format!("a DNS query task failed: {e}")))?);
        }
        out.sort_by_key(|(i, _, _)| *i);
        Ok(out.into_iter().map(|(_, q, o)| (q, o)).collect())
    })
}

/// `dns <hostname> [--nameserver IP:PORT] [--timeout SECS] [--no-srv] [--no-cleanup]`.
///
/// # Errors
/// Bad arguments, no query answered at all, or a failing API request.
pub fn run(args: &[String]) -> Result<Value> {
    let a = Args::parse(args, &["nameserver", "timeout"], &["no-srv", "no-cleanup"])?;
    let hostname = canonical_hostname(a.one_positional("hostname")?).map_err(Error::usage)?;
    let ns_text = a.option("nameserver").map(str::to_string).or_else(|| {
        std::env::var("KAT_DNS_NAMESERVER")
            .ok()
            .filter(|s| !s.trim().is_empty())
    });
    let nameserver = match ns_text {
        None => None,
        Some(t) => Some(parse_nameserver(&t)?),
    };
    let timeout = a.seconds("timeout", Duration::from_secs(5), 60.0)?;
    let api = ApiClient::from_env()?;
    let queries = Query::all(!a.flag("no-srv"));
    let results = resolve(nameserver, timeout, &hostname, &queries)?;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(q, o)| match o {
            Outcome::Failed(e) => Some(format!("{}: {e}", q.label())),
            _ => None,
        })
        .collect();
    if failed.len() == results.len() {
        return Err(Error::new(format!(
            "no DNS query about {hostname} was answered ({}); nothing was written",
            failed.join("; ")
        )));
    }
    for f in &failed {
        eprintln!(
            "kat-plugins dns: warning: {hostname}: {f} (stored records of this kind are kept)"
        );
    }
    let payload = build_payload(&hostname, &results);
    for s in &payload.skipped {
        eprintln!("kat-plugins dns: skipped {s}");
    }
    let answer = api.post_json("/objects/", &Value::Object(payload.body.clone()))?;
    let mut written = BTreeSet::new();
    let mut missing_ids = false;
    for ty in RECORD_TYPES {
        for obj in answer
            .get(ty)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match obj.get("id").and_then(Value::as_str) {
                Some(id) => {
                    written.insert(id.to_string());
                }
                None => missing_ids = true,
            }
        }
    }
    let cleanup = !a.flag("no-cleanup");
    let mut stale = Vec::new();
    let mut removed = 0;
    if cleanup && missing_ids {
        eprintln!(
            "kat-plugins dns: warning: the API's answer lacks record ids; stale records are not removed"
        );
    } else if cleanup {
        let answered: BTreeSet<Query> = results
            .iter()
            .filter(|(_, o)| o.answered())
            .map(|(q, _)| *q)
            .collect();
        let key = hostname_key(&hostname);
        let mut stored = BTreeMap::new();
        for ty in RECORD_TYPES {
            // Only ask about kinds an answered query manages.
            let relevant = answered.iter().any(|q| match q {
                Query::A => ty == "dnsarecord",
                Query::Aaaa => ty == "dnsaaaarecord",
                Query::Cname => ty == "dnscnamerecord",
                Query::Mx => ty == "dnsmxrecord",
                Query::Ns => ty == "dnsnsrecord",
                Query::Txt | Query::Dmarc => ty == "dnstxtrecord",
                Query::Caa => ty == "dnscaarecord",
                Query::Srv(..) => ty == "dnssrvrecord",
            });
            if relevant {
                let items = api.list_all(
                    &format!("/objects/{ty}/"),
                    &format!("hostname={}", encode_component(&key)),
                )?;
                stored.insert(ty.to_string(), items);
            }
        }
        stale = stale_ids(&results, &stored, &written);
        if !stale.is_empty() {
            removed = api.delete_by(
                &format!("/objects/hostname/{}/dnsrecord/", encode_component(&key)),
                "record_id",
                &stale,
            )?;
        }
    }
    let queries_json: Map<String, Value> = results
        .iter()
        .map(|(q, o)| {
            let v = match o {
                Outcome::Records(r) => json!({"status": "answered", "records": r.len()}),
                Outcome::NoData => json!({"status": "no data"}),
                Outcome::NxDomain => json!({"status": "nxdomain"}),
                Outcome::Failed(e) => json!({"status": "failed", "error": e}),
            };
            (q.label(), v)
        })
        .collect();
    let posted: Map<String, Value> = payload
        .body
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_array().map_or(0, Vec::len))))
        .collect();
    Ok(json!({
        "plugin": "dns",
        "hostname": hostname,
        "nameserver": nameserver.map_or_else(|| "system".to_string(), |n| n.to_string()),
        "queries": queries_json,
        "posted": posted,
        "objects": payload.body,
        "skipped": payload.skipped,
        "cleanup": cleanup,
        "stale_records": stale,
        "removed_records": removed,
    }))
}

/// `IP:PORT`, `[IPv6]:PORT` or a bare IP (port 53).
///
/// # Errors
/// A usage error for anything else.
pub fn parse_nameserver(s: &str) -> Result<SocketAddr> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(ip) = canonical_ip(s) {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(Error::usage(format!(
        "the name server must be IP, IP:PORT or [IPv6]:PORT, got {s:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers() {
        assert_eq!(
            parse_nameserver("127.0.0.1:5353").unwrap().to_string(),
            "127.0.0.1:5353"
        );
        assert_eq!(parse_nameserver("::1").unwrap().to_string(), "[::1]:53");
        assert_eq!(
            parse_nameserver("[::1]:54").unwrap().to_string(),
            "[::1]:54"
        );
        assert!(parse_nameserver("dns.example:53").is_err());
    }

    #[test]
    fn stored_records_map_to_their_queries() {
        assert_eq!(Query::of_stored("dnsarecord", &json!({})), Some(Query::A));
        assert_eq!(
            Query::of_stored("dnstxtrecord", &json!({"prefix": ""})),
            Some(Query::Txt)
        );
        assert_eq!(
            Query::of_stored("dnstxtrecord", &json!({"prefix": "_dmarc"})),
            Some(Query::Dmarc)
        );
        assert_eq!(
            Query::of_stored("dnstxtrecord", &json!({"prefix": "_other"})),
            None
        );
        assert_eq!(
            Query::of_stored("dnssrvrecord", &json!({"service": "_sip", "proto": "_tls"})),
            Some(Query::Srv("_sip", "_tls"))
        );
        assert_eq!(
            Query::of_stored("dnssrvrecord", &json!({"service": "_x", "proto": "_tcp"})),
            None
        );
        assert_eq!(Query::of_stored("dnsptrrecord", &json!({})), None);
    }

    #[test]
    fn failed_queries_keep_their_records() {
        let results = vec![
            (Query::A, Outcome::NoData),
            (Query::Mx, Outcome::Failed("SERVFAIL".into())),
            (Query::Txt, Outcome::NxDomain),
        ];
        let stored: BTreeMap<String, Vec<Value>> = [
            (
                "dnsarecord".to_string(),
                vec![json!({"id": "a1"}), json!({"id": "a2"})],
            ),
            ("dnsmxrecord".to_string(), vec![json!({"id": "mx1"})]),
            (
                "dnstxtrecord".to_string(),
                vec![
                    json!({"id": "t1", "prefix": ""}),
                    json!({"id": "t2", "prefix": "_dmarc"}),
                ],
            ),
        ]
        .into();
        let written: BTreeSet<String> = ["a2".to_string()].into();
        // mx1 stays (its query failed), t2 stays (the _dmarc query was not asked), a2 was written now.
        assert_eq!(stale_ids(&results, &stored, &written), vec!["a1", "t1"]);
    }
}
