//! Objects: the inventory that plugins scan and produce (networks, hostnames, IP addresses, ports,
//! software, DNS records, finding types and findings), each identified by its [`NaturalKey`].
//!
//! Objects arrive as JSON in the original's shapes and are validated into [`Object`]:
//!
//! ```
//! use kat_core::object::{Object, ObjectType};
//! let o = Object::from_json(
//!     ObjectType::DnsARecord,
//!     &serde_json::json!({"hostname": "internet|example.com", "ip_address": "internet|192.0.2.1", "ttl": 3600}),
//! ).unwrap();
//! assert_eq!(o.natural_key().as_str(), "internet|example.com|internet|192.0.2.1");
//! ```

mod key;
mod url;
mod validate;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use key::{MAX_KEY_BYTES, NaturalKey, escape_part, unescape_part};
pub use url::{MAX_URL_LEN, UrlHost, UrlRef, canonical_url, parse_url};
pub use validate::{canonical_hostname, canonical_ip, canonical_network, check_code, check_text};

use crate::{Error, Result};

/// The network that bare hostnames and addresses belong to when none is named.
pub const DEFAULT_NETWORK: &str = kat_protocol::key::DEFAULT_NETWORK;

/// Longest free-text value (TXT and CAA values, descriptions) accepted, in bytes.
pub const MAX_TEXT: usize = 65_535;

/// Every kind of object, named as in the API (`/api/v1/objects/<type>/`) and in permission names
/// (`objects.add_<type>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectType {
    /// A network (`internet`).
    Network,
    /// A hostname in a network.
    Hostname,
    /// An IP address in a network.
    #[serde(rename = "ipaddress")]
    IpAddress,
    /// A port of an IP address.
    #[serde(rename = "ipport")]
    IpPort,
    /// A piece of software, optionally versioned.
    Software,
    /// A kind of finding, with its risk and advice.
    #[serde(rename = "findingtype")]
    FindingType,
    /// A finding about a hostname or an IP address.
    Finding,
    /// A DNS A record.
    #[serde(rename = "dnsarecord")]
    DnsARecord,
    /// A DNS AAAA record.
    #[serde(rename = "dnsaaaarecord")]
    DnsAaaaRecord,
    /// A DNS CNAME record.
    #[serde(rename = "dnscnamerecord")]
    DnsCnameRecord,
    /// A DNS MX record.
    #[serde(rename = "dnsmxrecord")]
    DnsMxRecord,
    /// A DNS NS record.
    #[serde(rename = "dnsnsrecord")]
    DnsNsRecord,
    /// A DNS PTR record.
    #[serde(rename = "dnsptrrecord")]
    DnsPtrRecord,
    /// A DNS TXT record.
    #[serde(rename = "dnstxtrecord")]
    DnsTxtRecord,
    /// A DNS CAA record.
    #[serde(rename = "dnscaarecord")]
    DnsCaaRecord,
    /// A DNS SRV record.
    #[serde(rename = "dnssrvrecord")]
    DnsSrvRecord,
    /// A web URL (`https://example.com/login`), scanned at its host's scan level.
    Url,
}

impl ObjectType {
    /// Every object type, in the order a bulk write processes them (referenced types first).
    pub const ALL: [ObjectType; 17] = [
        ObjectType::Network,
        ObjectType::Hostname,
        ObjectType::IpAddress,
        ObjectType::IpPort,
        ObjectType::Software,
        ObjectType::FindingType,
        ObjectType::Finding,
        ObjectType::DnsARecord,
        ObjectType::DnsAaaaRecord,
        ObjectType::DnsCnameRecord,
        ObjectType::DnsMxRecord,
        ObjectType::DnsNsRecord,
        ObjectType::DnsPtrRecord,
        ObjectType::DnsTxtRecord,
        ObjectType::DnsCaaRecord,
        ObjectType::DnsSrvRecord,
        ObjectType::Url,
    ];

    /// The DNS record types.
    pub const DNS_RECORDS: [ObjectType; 9] = [
        ObjectType::DnsARecord,
        ObjectType::DnsAaaaRecord,
        ObjectType::DnsCnameRecord,
        ObjectType::DnsMxRecord,
        ObjectType::DnsNsRecord,
        ObjectType::DnsPtrRecord,
        ObjectType::DnsTxtRecord,
        ObjectType::DnsCaaRecord,
        ObjectType::DnsSrvRecord,
    ];

    /// The type's API name (`hostname`, `dnsarecord`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::Network => "network",
            ObjectType::Hostname => "hostname",
            ObjectType::IpAddress => "ipaddress",
            ObjectType::IpPort => "ipport",
            ObjectType::Software => "software",
            ObjectType::FindingType => "findingtype",
            ObjectType::Finding => "finding",
            ObjectType::DnsARecord => "dnsarecord",
            ObjectType::DnsAaaaRecord => "dnsaaaarecord",
            ObjectType::DnsCnameRecord => "dnscnamerecord",
            ObjectType::DnsMxRecord => "dnsmxrecord",
            ObjectType::DnsNsRecord => "dnsnsrecord",
            ObjectType::DnsPtrRecord => "dnsptrrecord",
            ObjectType::DnsTxtRecord => "dnstxtrecord",
            ObjectType::DnsCaaRecord => "dnscaarecord",
            ObjectType::DnsSrvRecord => "dnssrvrecord",
            ObjectType::Url => "url",
        }
    }

    /// Whether objects of this type carry a scan level (networks, hostnames and IP addresses).
    pub fn has_scan_level(self) -> bool {
        matches!(
            self,
            ObjectType::Network | ObjectType::Hostname | ObjectType::IpAddress
        )
    }

    /// Whether this is a DNS record type.
    pub fn is_dns_record(self) -> bool {
        Self::DNS_RECORDS.contains(&self)
    }

    /// The fields that can filter and order a query of this type. Relations filter by the related
    /// object's natural key (`?address=internet|127.0.0.1`).
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            ObjectType::Network => &["name"],
            ObjectType::Hostname => &["network", "name"],
            ObjectType::IpAddress => &["network", "address"],
            ObjectType::IpPort => &["address", "protocol", "port", "tls", "service"],
            ObjectType::Software => &["name", "version", "cpe"],
            ObjectType::FindingType => &["code", "risk", "score"],
            ObjectType::Finding => &["finding_type", "hostname", "address"],
            ObjectType::DnsARecord | ObjectType::DnsAaaaRecord | ObjectType::DnsPtrRecord => {
                &["hostname", "ip_address", "ttl"]
            }
            ObjectType::DnsCnameRecord => &["hostname", "target", "ttl"],
            ObjectType::DnsMxRecord => &["hostname", "mail_server", "preference", "ttl"],
            ObjectType::DnsNsRecord => &["hostname", "name_server", "ttl"],
            ObjectType::DnsTxtRecord => &["hostname", "prefix", "value", "ttl"],
            ObjectType::DnsCaaRecord => &["hostname", "flags", "tag", "value", "ttl"],
            ObjectType::DnsSrvRecord => &[
                "hostname", "proto", "service", "priority", "weight", "port", "ttl",
            ],
            ObjectType::Url => &["network", "url"],
        }
    }

    /// Check a natural key against this type's shape (number of parts and their values) and return
    /// it in canonical form: hostnames lowercased, addresses in RFC 5952 form, protocols upper-case, so
    /// that `internet|Example.COM` finds `internet|example.com`.
    ///
    /// ```
    /// use kat_core::object::ObjectType;
    /// assert_eq!(ObjectType::Hostname.parse_key("internet|Example.COM.").unwrap().as_str(), "internet|example.com");
    /// assert_eq!(ObjectType::IpPort.parse_key("internet|2001:DB8::1|tcp|80").unwrap().as_str(), "internet|2001:db8::1|TCP|80");
    /// assert!(ObjectType::Hostname.parse_key("internet|-bad").is_err());
    /// assert!(ObjectType::IpAddress.parse_key("internet").is_err());
    /// ```
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the problem.
    pub fn parse_key(self, raw: &str) -> Result<NaturalKey> {
        let key = NaturalKey::parse(raw)?;
        let parts = key.parts();
        let n = parts.len();
        let bad = |why: String| Error::invalid("id", format!("not a {self} key {raw:?}: {why}"));
        let expect = |lo: usize, hi: usize| -> Result<()> {
            if n < lo || n > hi {
                let want = if lo == hi {
                    format!("{lo}")
                } else {
                    format!("{lo} to {hi}")
                };
                Err(bad(format!("expected {want} '|'-separated parts, got {n}")))
            } else {
                Ok(())
            }
        };
        match self {
            ObjectType::Network => {
                expect(1, 1)?;
                let n = canonical_network(&parts[0]).map_err(|e| bad(e.to_string()))?;
                return Ok(NaturalKey::from_parts([n]));
            }
            ObjectType::Hostname => {
                expect(2, 2)?;
                let h = HostnameRef::new(&parts[0], &parts[1]).map_err(|e| bad(e.to_string()))?;
                return Ok(h.key());
            }
            ObjectType::IpAddress => {
                expect(2, 2)?;
                let a = IpRef::new(&parts[0], &parts[1]).map_err(|e| bad(e.to_string()))?;
                return Ok(a.key());
            }
            ObjectType::Url => {
                expect(2, 2)?;
                let u = UrlRef::new(&parts[0], &parts[1]).map_err(|e| bad(e.to_string()))?;
                return Ok(u.key());
            }
            ObjectType::IpPort => {
                expect(4, 4)?;
                let a = IpRef::new(&parts[0], &parts[1]).map_err(|e| bad(e.to_string()))?;
                let proto = parts[2]
                    .parse::<Protocol>()
                    .map_err(|e| bad(e.to_string()))?;
                let port = parse_port(&parts[3]).map_err(|e| bad(e.to_string()))?;
                return Ok(NaturalKey::from_escaped_components([
                    a.key().into_string(),
                    proto.as_str().to_string(),
                    port.to_string(),
                ]));
            }
            ObjectType::Software => expect(1, 2)?,
            ObjectType::FindingType => {
                expect(1, 1)?;
                check_code(&parts[0]).map_err(|e| bad(e.to_string()))?;
            }
            ObjectType::Finding => expect(3, 5)?,
            ObjectType::DnsARecord
            | ObjectType::DnsAaaaRecord
            | ObjectType::DnsPtrRecord
            | ObjectType::DnsCnameRecord
            | ObjectType::DnsNsRecord => expect(4, 4)?,
            ObjectType::DnsMxRecord => expect(3, 5)?,
            ObjectType::DnsTxtRecord => expect(3, 4)?,
            ObjectType::DnsCaaRecord => expect(5, 5)?,
            ObjectType::DnsSrvRecord => expect(7, 7)?,
        }
        Ok(key)
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ObjectType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        ObjectType::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == lower)
            .ok_or_else(|| {
                Error::invalid(
                    "type",
                    format!(
                        "unknown object type {s:?}; known types: {}",
                        ObjectType::ALL.map(ObjectType::as_str).join(", ")
                    ),
                )
            })
    }
}

/// A scan level: how intrusive a scan may be on an object, from 0 (none) to 4 (intrusive).
///
/// ```
/// use kat_core::object::ScanLevel;
/// assert!(ScanLevel::new(4).is_ok());
/// assert!(ScanLevel::new(5).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct ScanLevel(u8);

impl ScanLevel {
    /// The highest level.
    pub const MAX: ScanLevel = ScanLevel(4);

    /// Level 1, the most a name server, a mail server or a PTR name inherits
    /// ([`crate::levels`]).
    pub const ONE: ScanLevel = ScanLevel(1);

    /// A level from 0 to 4.
    ///
    /// # Errors
    /// [`Error::Invalid`] for anything above 4.
    pub fn new(level: u8) -> Result<Self> {
        if level <= 4 {
            Ok(ScanLevel(level))
        } else {
            Err(Error::invalid(
                "scan_level",
                format!("scan level must be 0 to 4, got {level}"),
            ))
        }
    }

    /// The level as a number.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for ScanLevel {
    type Error = Error;
    fn try_from(v: u8) -> Result<Self> {
        ScanLevel::new(v)
    }
}

impl From<ScanLevel> for u8 {
    fn from(l: ScanLevel) -> u8 {
        l.0
    }
}

impl fmt::Display for ScanLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}", self.0)
    }
}

/// The scan level of an object and whether it was declared by a person or inherited from related
/// objects. `level: None` means no scanning at all is allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanProfile {
    /// The level, if any.
    pub level: Option<ScanLevel>,
    /// `true` when a person set it; inherited levels never overwrite a declared one.
    pub declared: bool,
}

impl ScanProfile {
    /// A declared level.
    pub fn declared(level: ScanLevel) -> Self {
        ScanProfile {
            level: Some(level),
            declared: true,
        }
    }

    /// Whether a plugin that needs `required` may scan an object with this profile.
    ///
    /// ```
    /// use kat_core::object::{ScanLevel, ScanProfile};
    /// let p = ScanProfile::declared(ScanLevel::new(2).unwrap());
    /// assert!(p.allows(ScanLevel::new(1).unwrap()));
    /// assert!(!p.allows(ScanLevel::new(3).unwrap()));
    /// assert!(!ScanProfile::default().allows(ScanLevel::new(0).unwrap()));
    /// ```
    pub fn allows(&self, required: ScanLevel) -> bool {
        self.level.is_some_and(|l| l >= required)
    }
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
}

impl Protocol {
    /// `TCP` or `UDP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            _ => Err(Error::invalid(
                "protocol",
                format!("protocol must be TCP or UDP, got {s:?}"),
            )),
        }
    }
}

fn parse_port(s: &str) -> Result<u16> {
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(Error::invalid(
            "port",
            format!("port must be 1 to 65535, got {s:?}"),
        )),
    }
}

/// The tags a CAA record may carry.
pub const CAA_TAGS: [&str; 7] = [
    "contactemail",
    "contactphone",
    "iodef",
    "issue",
    "issuemail",
    "issuevmc",
    "issuewild",
];

/// A reference to a hostname: its network and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HostnameRef {
    /// The network's name.
    pub network: String,
    /// The canonical hostname.
    pub name: String,
}

impl HostnameRef {
    /// Validate and canonicalise.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad network or hostname.
    pub fn new(network: &str, name: &str) -> Result<Self> {
        Ok(HostnameRef {
            network: canonical_network(network).map_err(|e| e.within("network"))?,
            name: canonical_hostname(name).map_err(|e| e.within("name"))?,
        })
    }

    /// Parse `network|name`, or a bare name in the default network.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed reference.
    pub fn parse(s: &str) -> Result<Self> {
        let (net, name) = s.split_once('|').unwrap_or((DEFAULT_NETWORK, s));
        Ok(HostnameRef {
            network: canonical_network(net)?,
            name: canonical_hostname(name)?,
        })
    }

    /// The hostname's natural key.
    pub fn key(&self) -> NaturalKey {
        NaturalKey::from_parts([&self.network, &self.name])
    }
}

/// A reference to an IP address: its network and address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IpRef {
    /// The network's name.
    pub network: String,
    /// The canonical address.
    pub address: IpAddr,
}

impl IpRef {
    /// Validate and canonicalise.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad network or address.
    pub fn new(network: &str, address: &str) -> Result<Self> {
        Ok(IpRef {
            network: canonical_network(network).map_err(|e| e.within("network"))?,
            address: canonical_ip(address).map_err(|e| e.within("address"))?,
        })
    }

    /// Parse `network|address`, or a bare address in the default network.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed reference.
    pub fn parse(s: &str) -> Result<Self> {
        // An IPv6 address has no '|', so the first '|' separates the network.
        let (net, addr) = s.split_once('|').unwrap_or((DEFAULT_NETWORK, s));
        Ok(IpRef {
            network: canonical_network(net)?,
            address: canonical_ip(addr)?,
        })
    }

    /// The address's natural key.
    pub fn key(&self) -> NaturalKey {
        NaturalKey::from_parts([self.network.clone(), self.address.to_string()])
    }
}

/// A port on an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpPort {
    /// The address.
    pub address: IpRef,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// 1 to 65535.
    pub port: u16,
    /// Whether the port speaks TLS, if known.
    pub tls: Option<bool>,
    /// The service name, if known (`http`, `ssh`).
    pub service: Option<String>,
    /// Natural keys of the software seen on this port.
    pub software: Vec<NaturalKey>,
}

/// A piece of software.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Software {
    /// Its name.
    pub name: String,
    /// Its version, if known.
    pub version: Option<String>,
    /// Its CPE, if known.
    pub cpe: Option<String>,
}

impl Software {
    /// The software's natural key: `name` or `name|version`.
    pub fn key(&self) -> NaturalKey {
        match &self.version {
            Some(v) => NaturalKey::from_parts([&self.name, v]),
            None => NaturalKey::from_parts([&self.name]),
        }
    }
}

/// A finding type as an object (see [`crate::finding::FindingTypeDef`] for the catalogue entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingTypeObject {
    /// Its code, the natural key (`KAT-NO-SPF`).
    pub code: String,
    /// The catalogue entry, when known.
    #[serde(flatten)]
    pub def: Option<crate::finding::FindingTypeDef>,
}

/// A finding about a hostname or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The finding type's code.
    pub finding_type: String,
    /// The hostname it is about.
    pub hostname: Option<HostnameRef>,
    /// The address it is about.
    pub address: Option<IpRef>,
    /// Free text from the plugin.
    pub description: Option<String>,
    /// The business rules that asserted this finding when its subject was last evaluated
    /// ([`crate::rules`]), sorted; empty for a finding only tasks or operators wrote. A finding a
    /// task wrote keeps them while its subject is deleted (writing it would bring the subject
    /// back). Shown as `source_rules`; never taken from input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_rules: Vec<String>,
    /// Whether only rules ever wrote it: a rule created it and no task or operator wrote it since.
    /// Such a finding is deleted when its last rule retracts it; any other finding stays.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rule_only: bool,
}

/// The type-specific part of a DNS record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DnsData {
    /// A: the address.
    A(IpRef),
    /// AAAA: the address.
    Aaaa(IpRef),
    /// PTR: the address the name points back to.
    Ptr(IpRef),
    /// CNAME: the canonical name.
    Cname(HostnameRef),
    /// MX: preference and mail server (none for a null MX).
    Mx {
        /// Lower is preferred.
        preference: u16,
        /// The mail server.
        mail_server: Option<HostnameRef>,
    },
    /// NS: the name server.
    Ns(HostnameRef),
    /// TXT: an optional prefix label (`_dmarc`) and the value.
    Txt {
        /// The owner-name prefix, empty for none.
        prefix: String,
        /// The text.
        value: String,
    },
    /// CAA: flags, tag and value.
    Caa {
        /// 0 to 255.
        flags: u8,
        /// One of [`CAA_TAGS`].
        tag: String,
        /// The value.
        value: String,
    },
    /// SRV: protocol, service, priority, weight and port.
    Srv {
        /// `_tcp`, `_udp`, ...
        proto: String,
        /// `_sip`, lowercased.
        service: String,
        /// Priority.
        priority: u16,
        /// Weight.
        weight: u16,
        /// Port.
        port: u16,
    },
}

/// A DNS record of a hostname.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// The owner.
    pub hostname: HostnameRef,
    /// Time to live; not part of the key.
    pub ttl: Option<u32>,
    /// The record's data.
    pub data: DnsData,
}

/// A validated object of any type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Object {
    /// A network.
    Network {
        /// Its name.
        name: String,
    },
    /// A hostname.
    Hostname(HostnameRef),
    /// An IP address.
    IpAddress(IpRef),
    /// A port.
    IpPort(IpPort),
    /// Software.
    Software(Software),
    /// A finding type.
    FindingType(FindingTypeObject),
    /// A finding.
    Finding(Finding),
    /// A DNS record.
    Dns(DnsRecord),
    /// A URL.
    Url(UrlRef),
}

/// A field's value, typed for ordering and rendered as text for filtering.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum FieldValue {
    /// No value.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// Text, or a related object's natural key.
    Text(String),
}

impl FieldValue {
    /// The text a filter parameter is compared with (`null`, `true`, `80`, `internet|127.0.0.1`).
    pub fn filter_text(&self) -> String {
        match self {
            FieldValue::Null => "null".into(),
            FieldValue::Bool(b) => b.to_string(),
            FieldValue::Int(i) => i.to_string(),
            FieldValue::Float(f) => f.to_string(),
            FieldValue::Text(s) => s.clone(),
        }
    }

    /// Total order for sorting: nulls first, then by value.
    pub fn cmp_for_sort(&self, other: &FieldValue) -> std::cmp::Ordering {
        use FieldValue::*;
        use std::cmp::Ordering::*;
        match (self, other) {
            (Null, Null) => Equal,
            (Null, _) => Less,
            (_, Null) => Greater,
            (Int(a), Int(b)) => a.cmp(b),
            (Float(a), Float(b)) => a.total_cmp(b),
            (Bool(a), Bool(b)) => a.cmp(b),
            (Text(a), Text(b)) => a.cmp(b),
            (a, b) => a.filter_text().cmp(&b.filter_text()),
        }
    }
}

impl Object {
    /// The object's type.
    pub fn object_type(&self) -> ObjectType {
        match self {
            Object::Network { .. } => ObjectType::Network,
            Object::Hostname(_) => ObjectType::Hostname,
            Object::IpAddress(_) => ObjectType::IpAddress,
            Object::IpPort(_) => ObjectType::IpPort,
            Object::Software(_) => ObjectType::Software,
            Object::FindingType(_) => ObjectType::FindingType,
            Object::Finding(_) => ObjectType::Finding,
            Object::Url(_) => ObjectType::Url,
            Object::Dns(r) => match r.data {
                DnsData::A(_) => ObjectType::DnsARecord,
                DnsData::Aaaa(_) => ObjectType::DnsAaaaRecord,
                DnsData::Ptr(_) => ObjectType::DnsPtrRecord,
                DnsData::Cname(_) => ObjectType::DnsCnameRecord,
                DnsData::Mx { .. } => ObjectType::DnsMxRecord,
                DnsData::Ns(_) => ObjectType::DnsNsRecord,
                DnsData::Txt { .. } => ObjectType::DnsTxtRecord,
                DnsData::Caa { .. } => ObjectType::DnsCaaRecord,
                DnsData::Srv { .. } => ObjectType::DnsSrvRecord,
            },
        }
    }

    /// The object's natural key, in the original's format.
    ///
    /// ```
    /// use kat_core::object::{Object, ObjectType};
    /// let f = Object::from_json(ObjectType::Finding,
    ///     &serde_json::json!({"finding_type": "KAT-NO-RPKI", "address": "internet|192.0.2.1"})).unwrap();
    /// assert_eq!(f.natural_key().as_str(), "KAT-NO-RPKI||internet|192.0.2.1");
    /// ```
    pub fn natural_key(&self) -> NaturalKey {
        let c = |k: NaturalKey| k.into_string();
        let e = |s: &str| escape_part(s);
        match self {
            Object::Network { name } => NaturalKey::from_parts([name]),
            Object::Hostname(h) => h.key(),
            Object::IpAddress(ip) => ip.key(),
            Object::Url(u) => u.key(),
            Object::IpPort(p) => NaturalKey::from_escaped_components([
                c(p.address.key()),
                p.protocol.as_str().to_string(),
                p.port.to_string(),
            ]),
            Object::Software(s) => s.key(),
            Object::FindingType(f) => NaturalKey::from_parts([&f.code]),
            Object::Finding(f) => {
                let mut parts = vec![e(&f.finding_type)];
                match (&f.hostname, &f.address) {
                    (Some(h), None) => parts.push(c(h.key())),
                    (None, Some(a)) => {
                        parts.push(String::new());
                        parts.push(c(a.key()));
                    }
                    (Some(h), Some(a)) => {
                        parts.push(c(h.key()));
                        parts.push(c(a.key()));
                    }
                    (None, None) => {}
                }
                NaturalKey::from_escaped_components(parts)
            }
            Object::Dns(r) => {
                let h = c(r.hostname.key());
                let parts: Vec<String> = match &r.data {
                    DnsData::A(ip) | DnsData::Aaaa(ip) | DnsData::Ptr(ip) => vec![h, c(ip.key())],
                    DnsData::Cname(t) | DnsData::Ns(t) => vec![h, c(t.key())],
                    DnsData::Mx {
                        preference,
                        mail_server,
                    } => {
                        let mut v = vec![h, preference.to_string()];
                        if let Some(m) = mail_server {
                            v.push(c(m.key()));
                        }
                        v
                    }
                    DnsData::Txt { prefix, value } => vec![h, e(prefix), e(value)],
                    DnsData::Caa { flags, tag, value } => {
                        vec![h, flags.to_string(), e(tag), e(value)]
                    }
                    DnsData::Srv {
                        proto,
                        service,
                        priority,
                        weight,
                        port,
                    } => vec![
                        h,
                        e(proto),
                        e(service),
                        priority.to_string(),
                        weight.to_string(),
                        port.to_string(),
                    ],
                };
                NaturalKey::from_escaped_components(parts)
            }
        }
    }

    /// The value of one of [`ObjectType::fields`], or `None` for a field this type does not have.
    pub fn field(&self, name: &str) -> Option<FieldValue> {
        use FieldValue::*;
        let text = |s: &str| Text(s.to_string());
        let opt_text = |s: &Option<String>| s.as_deref().map_or(Null, text);
        let key = |k: NaturalKey| Text(k.into_string());
        Some(match (self, name) {
            (Object::Network { name }, "name") => text(name),
            (Object::Hostname(h), "network") => text(&h.network),
            (Object::Hostname(h), "name") => text(&h.name),
            (Object::IpAddress(ip), "network") => text(&ip.network),
            (Object::IpAddress(ip), "address") => Text(ip.address.to_string()),
            (Object::Url(u), "network") => text(&u.network),
            (Object::Url(u), "url") => text(&u.url),
            (Object::IpPort(p), "address") => key(p.address.key()),
            (Object::IpPort(p), "protocol") => text(p.protocol.as_str()),
            (Object::IpPort(p), "port") => Int(i64::from(p.port)),
            (Object::IpPort(p), "tls") => p.tls.map_or(Null, Bool),
            (Object::IpPort(p), "service") => opt_text(&p.service),
            (Object::Software(s), "name") => text(&s.name),
            (Object::Software(s), "version") => opt_text(&s.version),
            (Object::Software(s), "cpe") => opt_text(&s.cpe),
            (Object::FindingType(f), "code") => text(&f.code),
            (Object::FindingType(f), "risk") => {
                f.def.as_ref().map_or(Null, |d| text(d.risk.as_str()))
            }
            (Object::FindingType(f), "score") => {
                f.def.as_ref().map_or(Null, |d| Float(d.risk.score()))
            }
            (Object::Finding(f), "finding_type") => text(&f.finding_type),
            (Object::Finding(f), "hostname") => f.hostname.as_ref().map_or(Null, |h| key(h.key())),
            (Object::Finding(f), "address") => f.address.as_ref().map_or(Null, |a| key(a.key())),
            (Object::Dns(r), "hostname") => key(r.hostname.key()),
            (Object::Dns(r), "ttl") => r.ttl.map_or(Null, |t| Int(i64::from(t))),
            (Object::Dns(r), field) => match (&r.data, field) {
                (DnsData::A(ip) | DnsData::Aaaa(ip) | DnsData::Ptr(ip), "ip_address") => {
                    key(ip.key())
                }
                (DnsData::Cname(t), "target") => key(t.key()),
                (DnsData::Ns(t), "name_server") => key(t.key()),
                (DnsData::Mx { preference, .. }, "preference") => Int(i64::from(*preference)),
                (DnsData::Mx { mail_server, .. }, "mail_server") => {
                    mail_server.as_ref().map_or(Null, |m| key(m.key()))
                }
                (DnsData::Txt { prefix, .. }, "prefix") => text(prefix),
                (DnsData::Txt { value, .. } | DnsData::Caa { value, .. }, "value") => text(value),
                (DnsData::Caa { flags, .. }, "flags") => Int(i64::from(*flags)),
                (DnsData::Caa { tag, .. }, "tag") => text(tag),
                (DnsData::Srv { proto, .. }, "proto") => text(proto),
                (DnsData::Srv { service, .. }, "service") => text(service),
                (DnsData::Srv { priority, .. }, "priority") => Int(i64::from(*priority)),
                (DnsData::Srv { weight, .. }, "weight") => Int(i64::from(*weight)),
                (DnsData::Srv { port, .. }, "port") => Int(i64::from(*port)),
                _ => return None,
            },
            _ => return None,
        })
    }

    /// The objects this one refers to, as `(type, key)`: a record's hostname and address, a port's
    /// address, a finding's subject. A bulk write creates missing referenced objects.
    pub fn references(&self) -> Vec<Object> {
        let host = |h: &HostnameRef| Object::Hostname(h.clone());
        let ip = |a: &IpRef| Object::IpAddress(a.clone());
        let net = |n: &str| Object::Network {
            name: n.to_string(),
        };
        match self {
            Object::Network { .. } | Object::Software(_) | Object::FindingType(_) => vec![],
            Object::Hostname(h) => vec![net(&h.network)],
            Object::IpAddress(a) => vec![net(&a.network)],
            Object::Url(u) => vec![u.host()],
            Object::IpPort(p) => vec![ip(&p.address)],
            Object::Finding(f) => {
                let mut v = vec![Object::FindingType(FindingTypeObject {
                    code: f.finding_type.clone(),
                    def: None,
                })];
                v.extend(f.hostname.iter().map(host));
                v.extend(f.address.iter().map(ip));
                v
            }
            Object::Dns(r) => {
                let mut v = vec![host(&r.hostname)];
                match &r.data {
                    DnsData::A(a) | DnsData::Aaaa(a) | DnsData::Ptr(a) => v.push(ip(a)),
                    DnsData::Cname(t) | DnsData::Ns(t) => v.push(host(t)),
                    DnsData::Mx {
                        mail_server: Some(m),
                        ..
                    } => v.push(host(m)),
                    _ => {}
                }
                v
            }
        }
    }

    /// Merge a newer sighting of the same object into this one: attributes that are not part of the
    /// key (TTL, TLS, service, software, descriptions, catalogue data) take the newer value when it has
    /// one; absent values never erase known ones.
    pub fn merge_from(&mut self, newer: Object) {
        match (self, newer) {
            (Object::IpPort(old), Object::IpPort(new)) => {
                old.tls = new.tls.or(old.tls);
                old.service = new.service.or(old.service.take());
                for s in new.software {
                    if !old.software.contains(&s) {
                        old.software.push(s);
                    }
                }
            }
            (Object::Software(old), Object::Software(new)) => {
                old.cpe = new.cpe.or(old.cpe.take());
            }
            (Object::FindingType(old), Object::FindingType(new)) => {
                old.def = new.def.or(old.def.take());
            }
            (Object::Finding(old), Object::Finding(new)) => {
                old.description = new.description.or(old.description.take());
                for r in new.source_rules {
                    if let Err(at) = old.source_rules.binary_search(&r) {
                        old.source_rules.insert(at, r);
                    }
                }
                old.rule_only = old.rule_only && new.rule_only;
            }
            (Object::Dns(old), Object::Dns(new)) => {
                old.ttl = new.ttl.or(old.ttl.take());
            }
            _ => {}
        }
    }

    /// Validate an object of type `ty` from its JSON form. Fields that only appear in responses
    /// (`id`, `scan_level`, `declared`, `object_type`, ...) are accepted and ignored, so what a GET
    /// returns can be posted back; any other unknown field is an error naming it. An `id` that does not
    /// match the computed natural key is an error too. What the original's own plugins send and its
    /// API drops is tolerated: `value` (a string, ignored) on DNS records other than TXT and CAA, whose
    /// `value` is a real field.
    ///
    /// # Errors
    /// [`Error::Invalid`] with the path of the offending field.
    pub fn from_json(ty: ObjectType, value: &Value) -> Result<Object> {
        let Value::Object(map) = value else {
            return Err(Error::invalid(
                "",
                format!(
                    "expected a JSON object for a {ty}, got {}",
                    json_kind(value)
                ),
            ));
        };
        let mut f = Fields::new(map);
        let obj = match ty {
            ObjectType::Network => Object::Network {
                name: canonical_network(&f.req_str("name")?).map_err(|e| e.within("name"))?,
            },
            ObjectType::Hostname => {
                let network = f.opt_str("network")?;
                let name = f.req_str("name")?;
                Object::Hostname(HostnameRef::new(
                    network.as_deref().unwrap_or(DEFAULT_NETWORK),
                    &name,
                )?)
            }
            ObjectType::IpAddress => {
                let network = f.opt_str("network")?;
                let address = f.req_str("address")?;
                Object::IpAddress(IpRef::new(
                    network.as_deref().unwrap_or(DEFAULT_NETWORK),
                    &address,
                )?)
            }
            ObjectType::Url => {
                let network = f.opt_str("network")?;
                let url = f.req_str("url")?;
                Object::Url(UrlRef::new(
                    network.as_deref().unwrap_or(DEFAULT_NETWORK),
                    &url,
                )?)
            }
            ObjectType::IpPort => {
                let network = f.opt_str("network")?;
                let address = f.req_str("address")?;
                let address = if address.contains('|') {
                    IpRef::parse(&address)
                } else {
                    IpRef::new(network.as_deref().unwrap_or(DEFAULT_NETWORK), &address)
                }
                .map_err(|e| e.within("address"))?;
                let protocol = match f.opt_str("protocol")? {
                    Some(p) => p.parse()?,
                    None => Protocol::Tcp,
                };
                let port = f.req_int("port", 1, 65535)? as u16;
                let tls = f.opt_bool("tls")?;
                let service = f.opt_text("service", 256)?;
                let software = f.software_list("software")?;
                Object::IpPort(IpPort {
                    address,
                    protocol,
                    port,
                    tls,
                    service,
                    software,
                })
            }
            ObjectType::Software => {
                let name = f.req_text("name", 256)?;
                if name.is_empty() {
                    return Err(Error::invalid("name", "software needs a name"));
                }
                Object::Software(Software {
                    name,
                    version: f.opt_text("version", 256)?.filter(|v| !v.is_empty()),
                    cpe: f.opt_text("cpe", 1024)?,
                })
            }
            ObjectType::FindingType => {
                let code = f.req_str("code")?;
                check_code(&code).map_err(|e| e.within("code"))?;
                let mut def = crate::finding::FindingTypeDef::default();
                let mut any = false;
                for (field, slot) in [
                    ("name", &mut def.name),
                    ("description", &mut def.description),
                    ("source", &mut def.source),
                    ("impact", &mut def.impact),
                    ("recommendation", &mut def.recommendation),
                ] {
                    if let Some(v) = f.opt_text(field, MAX_TEXT)? {
                        *slot = v;
                        any = true;
                    }
                }
                if let Some(r) = f.opt_str("risk")? {
                    def.risk = r.parse()?;
                    any = true;
                }
                f.ignore("score");
                Object::FindingType(FindingTypeObject {
                    code,
                    def: any.then_some(def),
                })
            }
            ObjectType::Finding => {
                let code = match f.opt_str("finding_type")? {
                    Some(c) => c,
                    None => f.req_str("finding_type_code")?,
                };
                check_code(&code).map_err(|e| e.within("finding_type"))?;
                let mut hostname = f
                    .opt_str("hostname")?
                    .map(|h| HostnameRef::parse(&h).map_err(|e| e.within("hostname")))
                    .transpose()?;
                let mut address = match f.opt_str("address")? {
                    Some(a) => Some(a),
                    None => f.opt_str("ipaddress")?,
                }
                .map(|a| IpRef::parse(&a).map_err(|e| e.within("address")))
                .transpose()?;
                if let Some(raw) = f.opt_str("object")? {
                    if hostname.is_some() || address.is_some() {
                        return Err(Error::invalid(
                            "object",
                            "give the finding's subject once: object, or hostname and address",
                        ));
                    }
                    match finding_subject(&raw).map_err(|e| e.within("object"))? {
                        Object::Hostname(h) => hostname = Some(h),
                        Object::IpAddress(a) => address = Some(a),
                        _ => {}
                    }
                }
                if hostname.is_none() && address.is_none() {
                    return Err(Error::invalid(
                        "",
                        "a finding needs a hostname or an address",
                    ));
                }
                Object::Finding(Finding {
                    finding_type: code,
                    hostname,
                    address,
                    description: f.opt_text("description", MAX_TEXT)?,
                    source_rules: Vec::new(),
                    rule_only: false,
                })
            }
            dns => {
                let hostname = HostnameRef::parse(&f.req_str("hostname")?)
                    .map_err(|e| e.within("hostname"))?;
                let ttl = f.opt_int("ttl", 0, i64::from(u32::MAX))?.map(|t| t as u32);
                let ip = |f: &mut Fields<'_>| -> Result<IpRef> {
                    IpRef::parse(&f.req_str("ip_address")?).map_err(|e| e.within("ip_address"))
                };
                let host = |f: &mut Fields<'_>, field: &'static str| -> Result<HostnameRef> {
                    HostnameRef::parse(&f.req_str(field)?).map_err(|e| e.within(field))
                };
                let data = match dns {
                    ObjectType::DnsARecord => {
                        let a = ip(&mut f)?;
                        if !a.address.is_ipv4() {
                            return Err(Error::invalid(
                                "ip_address",
                                "an A record needs an IPv4 address",
                            ));
                        }
                        DnsData::A(a)
                    }
                    ObjectType::DnsAaaaRecord => {
                        let a = ip(&mut f)?;
                        if !a.address.is_ipv6() {
                            return Err(Error::invalid(
                                "ip_address",
                                "an AAAA record needs an IPv6 address",
                            ));
                        }
                        DnsData::Aaaa(a)
                    }
                    ObjectType::DnsPtrRecord => DnsData::Ptr(ip(&mut f)?),
                    ObjectType::DnsCnameRecord => DnsData::Cname(host(&mut f, "target")?),
                    ObjectType::DnsNsRecord => DnsData::Ns(host(&mut f, "name_server")?),
                    ObjectType::DnsMxRecord => DnsData::Mx {
                        preference: f.opt_int("preference", 0, 65535)?.unwrap_or(0) as u16,
                        mail_server: f
                            .opt_str("mail_server")?
                            .filter(|m| !m.is_empty() && m != ".")
                            .map(|m| HostnameRef::parse(&m).map_err(|e| e.within("mail_server")))
                            .transpose()?,
                    },
                    ObjectType::DnsTxtRecord => DnsData::Txt {
                        prefix: f.opt_text("prefix", 255)?.unwrap_or_default(),
                        value: f.req_text("value", MAX_TEXT)?,
                    },
                    ObjectType::DnsCaaRecord => {
                        let flags = f.opt_int("flags", 0, 255)?.unwrap_or(0) as u8;
                        let tag = f.req_str("tag")?.to_ascii_lowercase();
                        if !CAA_TAGS.contains(&tag.as_str()) {
                            return Err(Error::invalid(
                                "tag",
                                format!(
                                    "unknown CAA tag {tag:?}; known tags: {}",
                                    CAA_TAGS.join(", ")
                                ),
                            ));
                        }
                        DnsData::Caa {
                            flags,
                            tag,
                            value: f.req_text("value", MAX_TEXT)?,
                        }
                    }
                    ObjectType::DnsSrvRecord => DnsData::Srv {
                        proto: f.req_text("proto", 63)?.to_ascii_lowercase(),
                        service: f.req_text("service", 63)?.to_ascii_lowercase(),
                        priority: f.req_int("priority", 0, 65535)? as u16,
                        weight: f.req_int("weight", 0, 65535)? as u16,
                        port: f.req_int("port", 0, 65535)? as u16,
                    },
                    _ => unreachable_type(dns)?,
                };
                if !matches!(dns, ObjectType::DnsTxtRecord | ObjectType::DnsCaaRecord) {
                    // The original's dns plugin sends every record's text form as `value`, which its
                    // API drops; accepted (a string) and ignored on the record types without one.
                    let _ = f.opt_text("value", MAX_TEXT)?;
                }
                Object::Dns(DnsRecord {
                    hostname,
                    ttl,
                    data,
                })
            }
        };
        let id = f.opt_str("id")?;
        f.finish()?;
        if let Some(id) = id {
            let key = obj.natural_key();
            if id != key.as_str() {
                return Err(Error::invalid(
                    "id",
                    format!("id {id:?} does not match the object's natural key {key:?}"),
                ));
            }
        }
        Ok(obj)
    }

    /// The object's JSON form (without `id` and scan level, which the store adds).
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let key = |k: NaturalKey| Value::String(k.into_string());
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        match self {
            Object::Network { name } => put("name", name.clone().into()),
            Object::Hostname(h) => {
                put("network", h.network.clone().into());
                put("name", h.name.clone().into());
            }
            Object::IpAddress(a) => {
                put("network", a.network.clone().into());
                put("address", a.address.to_string().into());
            }
            Object::Url(u) => {
                put("network", u.network.clone().into());
                put("url", u.url.clone().into());
            }
            Object::IpPort(p) => {
                put("address", key(p.address.key()));
                put("protocol", p.protocol.as_str().into());
                put("port", p.port.into());
                put("tls", p.tls.into());
                put("service", p.service.clone().into());
                put(
                    "software",
                    p.software.iter().map(|s| key(s.clone())).collect(),
                );
            }
            Object::Software(s) => {
                put("name", s.name.clone().into());
                put("version", s.version.clone().into());
                put("cpe", s.cpe.clone().into());
            }
            Object::FindingType(t) => {
                put("code", t.code.clone().into());
                if let Some(d) = &t.def {
                    put("name", d.name.clone().into());
                    put("description", d.description.clone().into());
                    put("source", d.source.clone().into());
                    put("risk", d.risk.as_str().into());
                    put("impact", d.impact.clone().into());
                    put("recommendation", d.recommendation.clone().into());
                    put("score", d.risk.score().into());
                }
            }
            Object::Finding(f) => {
                put("finding_type", f.finding_type.clone().into());
                put("hostname", f.hostname.as_ref().map(|h| key(h.key())).into());
                put("address", f.address.as_ref().map(|a| key(a.key())).into());
                put("description", f.description.clone().into());
                put("source_rules", f.source_rules.clone().into());
            }
            Object::Dns(r) => {
                put("hostname", key(r.hostname.key()));
                put("ttl", r.ttl.into());
                match &r.data {
                    DnsData::A(a) | DnsData::Aaaa(a) | DnsData::Ptr(a) => {
                        put("ip_address", key(a.key()))
                    }
                    DnsData::Cname(t) => put("target", key(t.key())),
                    DnsData::Ns(t) => put("name_server", key(t.key())),
                    DnsData::Mx {
                        preference,
                        mail_server,
                    } => {
                        put("preference", (*preference).into());
                        put(
                            "mail_server",
                            mail_server.as_ref().map(|m| key(m.key())).into(),
                        );
                    }
                    DnsData::Txt { prefix, value } => {
                        put("prefix", prefix.clone().into());
                        put("value", value.clone().into());
                    }
                    DnsData::Caa { flags, tag, value } => {
                        put("flags", (*flags).into());
                        put("tag", tag.clone().into());
                        put("value", value.clone().into());
                    }
                    DnsData::Srv {
                        proto,
                        service,
                        priority,
                        weight,
                        port,
                    } => {
                        put("proto", proto.clone().into());
                        put("service", service.clone().into());
                        put("priority", (*priority).into());
                        put("weight", (*weight).into());
                        put("port", (*port).into());
                    }
                }
                put("object_type", self.object_type().as_str().into());
            }
        }
        m
    }

    /// The value a plugin argument placeholder receives for this object: a hostname's name, an
    /// address's text, a URL's canonical text; other types have none.
    pub fn target_value(&self) -> Option<String> {
        match self {
            Object::Hostname(h) => Some(h.name.clone()),
            Object::IpAddress(a) => Some(a.address.to_string()),
            Object::Url(u) => Some(u.url.clone()),
            _ => None,
        }
    }
}

/// The subject named by a finding's `object` field (the manual's ssl-checker example posts
/// `"object": "internet|<host>"`): the natural key of a hostname or an IP address, or a bare name or
/// address in the default network. The part after the network decides: an IP address is an address,
/// anything else must be a valid hostname. A key of another type (a port, a DNS record) is refused.
///
/// ```
/// use kat_core::object::{Object, ObjectType, finding_subject};
/// assert_eq!(finding_subject("internet|Example.COM").unwrap().natural_key().as_str(), "internet|example.com");
/// assert_eq!(finding_subject("192.0.2.1").unwrap().object_type(), ObjectType::IpAddress);
/// assert!(finding_subject("internet|192.0.2.1|TCP|443").is_err());
/// ```
///
/// # Errors
/// [`Error::Invalid`] saying what the value is not.
pub fn finding_subject(raw: &str) -> Result<Object> {
    let (net, rest) = raw.split_once('|').unwrap_or((DEFAULT_NETWORK, raw));
    if rest.contains('|') {
        return Err(Error::invalid(
            "",
            format!(
                "{raw:?} is not the key of a hostname or an IP address (network|name or network|address)"
            ),
        ));
    }
    if let Ok(a) = IpRef::new(net, rest) {
        return Ok(Object::IpAddress(a));
    }
    HostnameRef::new(net, rest)
        .map(Object::Hostname)
        .map_err(|e| {
            Error::invalid(
                "",
                format!("{raw:?} is not the key of a hostname or an IP address: {e}"),
            )
        })
}

fn unreachable_type(ty: ObjectType) -> Result<DnsData> {
    Err(Error::invalid("", format!("{ty} is not a DNS record type")))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads typed fields out of a JSON object and remembers which were read, so that leftovers can be
/// reported as unknown.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    seen: Vec<&'a str>,
}

/// Response-only fields accepted (and ignored) on input.
const READ_ONLY: [&str; 12] = [
    "scan_level",
    "declared",
    "inherited_from",
    "object_type",
    "organizations",
    "last_seen",
    "created_at",
    "created_by",
    "last_seen_by",
    "dns_records",
    "root",
    "source_rules",
];

impl<'a> Fields<'a> {
    fn new(map: &'a Map<String, Value>) -> Self {
        Fields {
            map,
            seen: Vec::new(),
        }
    }

    fn get(&mut self, name: &str) -> Option<&'a Value> {
        let (k, v) = self.map.get_key_value(name)?;
        self.seen.push(k.as_str());
        if v.is_null() { None } else { Some(v) }
    }

    fn ignore(&mut self, name: &str) {
        let _ = self.get(name);
    }

    fn opt_str(&mut self, name: &str) -> Result<Option<String>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(Error::invalid(
                name,
                format!("expected a string, got {}", json_kind(v)),
            )),
        }
    }

    fn req_str(&mut self, name: &str) -> Result<String> {
        self.opt_str(name)?
            .ok_or_else(|| Error::invalid(name, "this field is required"))
    }

    fn opt_text(&mut self, name: &str, max: usize) -> Result<Option<String>> {
        let v = self.opt_str(name)?;
        if let Some(s) = &v {
            check_text(s, max).map_err(|e| e.within(name))?;
        }
        Ok(v)
    }

    fn req_text(&mut self, name: &str, max: usize) -> Result<String> {
        self.opt_text(name, max)?
            .ok_or_else(|| Error::invalid(name, "this field is required"))
    }

    fn opt_int(&mut self, name: &str, lo: i64, hi: i64) -> Result<Option<i64>> {
        let v = match self.get(name) {
            None => return Ok(None),
            Some(Value::Number(n)) => n.as_i64(),
            // Numbers as strings are common in scanner output; accept them when they are whole numbers.
            Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
            Some(v) => {
                return Err(Error::invalid(
                    name,
                    format!("expected a whole number, got {}", json_kind(v)),
                ));
            }
        };
        match v {
            Some(i) if (lo..=hi).contains(&i) => Ok(Some(i)),
            _ => Err(Error::invalid(
                name,
                format!("expected a whole number from {lo} to {hi}"),
            )),
        }
    }

    fn req_int(&mut self, name: &str, lo: i64, hi: i64) -> Result<i64> {
        self.opt_int(name, lo, hi)?
            .ok_or_else(|| Error::invalid(name, "this field is required"))
    }

    fn opt_bool(&mut self, name: &str) -> Result<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Error::invalid(
                name,
                format!("expected true or false, got {}", json_kind(v)),
            )),
        }
    }

    /// A port's software: a list of keys (`"nginx|1.2"`) or objects (`{"name","version"}`).
    fn software_list(&mut self, name: &str) -> Result<Vec<NaturalKey>> {
        let Some(v) = self.get(name) else {
            return Ok(vec![]);
        };
        let Value::Array(items) = v else {
            return Err(Error::invalid(
                name,
                format!("expected a list, got {}", json_kind(v)),
            ));
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{name}[{i}]");
            let key = match item {
                Value::String(s) => NaturalKey::parse(s).map_err(|e| e.within(&at))?,
                Value::Object(_) => match Object::from_json(ObjectType::Software, item)
                    .map_err(|e| e.within(&at))?
                {
                    Object::Software(s) => s.key(),
                    _ => return Err(Error::invalid(at, "expected software")),
                },
                v => {
                    return Err(Error::invalid(
                        at,
                        format!("expected a software key or object, got {}", json_kind(v)),
                    ));
                }
            };
            if !out.contains(&key) {
                out.push(key);
            }
        }
        Ok(out)
    }

    fn finish(self) -> Result<()> {
        let unknown: Vec<&str> = self
            .map
            .keys()
            .map(String::as_str)
            .filter(|k| !self.seen.contains(k) && !READ_ONLY.contains(k) && *k != "id")
            .collect();
        if let Some(first) = unknown.first() {
            return Err(Error::invalid(
                *first,
                format!("unknown field(s): {}", unknown.join(", ")),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
