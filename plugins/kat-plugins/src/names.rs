//! Names, addresses and natural keys as the API expects them. The rules themselves are the crate
//! `kat-protocol`'s, which kat-core applies too; this module adds the plugins' targets, subjects and
//! URL encoding.

use std::net::IpAddr;

use kat_protocol::{host, key};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// The network every object of these plugins belongs to.
pub const NETWORK: &str = key::DEFAULT_NETWORK;

/// Canonicalise a hostname ([`kat_protocol::host::canonical_hostname`]): trimmed, lowercased, one trailing
/// dot stripped, RFC 1123 labels (letters, digits and inner hyphens, 1 to 63 characters), at most 253
/// characters, and a last label that is not all digits (an IP address is not a hostname).
///
/// # Errors
/// Why the name is refused.
pub fn canonical_hostname(raw: &str) -> Result<String, String> {
    host::canonical_hostname(raw).map_err(|why| format!("not a valid hostname {raw:?}: {why}"))
}

/// Parse an IP address into its canonical form ([`kat_protocol::host::canonical_ip`]: RFC 5952 for
/// IPv6; an IPv4-mapped IPv6 address is unpacked to IPv4, as the API does).
pub fn canonical_ip(raw: &str) -> Option<IpAddr> {
    host::canonical_ip(raw).ok()
}

/// Escape one natural-key part: `%` becomes `%25` and `|` becomes `%7C`.
pub use kat_protocol::key::escape_part;

/// A hostname's natural key: `internet|<name>`.
pub fn hostname_key(name: &str) -> String {
    format!("{NETWORK}|{}", escape_part(name))
}

/// An address's natural key: `internet|<ip>`.
pub fn ip_key(ip: &IpAddr) -> String {
    format!("{NETWORK}|{ip}")
}

/// What a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// A hostname (canonical).
    Hostname(String),
    /// An IP address.
    Address(IpAddr),
}

impl Subject {
    /// A hostname or, when `raw` is an IP address, an address.
    ///
    /// # Errors
    /// Why `raw` is neither.
    pub fn parse(raw: &str) -> Result<Subject, String> {
        match canonical_ip(raw) {
            Some(ip) => Ok(Subject::Address(ip)),
            None => canonical_hostname(raw).map(Subject::Hostname),
        }
    }

    /// The host part of a URL or a socket address: the name, or the address (IPv6 in brackets when
    /// `bracket_v6`).
    pub fn host(&self, bracket_v6: bool) -> String {
        match self {
            Subject::Hostname(h) => h.clone(),
            Subject::Address(IpAddr::V6(v6)) if bracket_v6 => format!("[{v6}]"),
            Subject::Address(ip) => ip.to_string(),
        }
    }

    /// The field and value a finding about this subject carries:
    /// `("hostname", "internet|example.com")` or `("address", "internet|192.0.2.1")`.
    pub fn finding_field(&self) -> (&'static str, String) {
        match self {
            Subject::Hostname(h) => ("hostname", hostname_key(h)),
            Subject::Address(ip) => ("address", ip_key(ip)),
        }
    }

    /// The natural key of a finding of type `code` about this subject (`CODE|internet|host` or
    /// `CODE||internet|ip`).
    pub fn finding_key(&self, code: &str) -> String {
        match self {
            Subject::Hostname(h) => format!("{}|{}", escape_part(code), hostname_key(h)),
            Subject::Address(ip) => format!("{}||{}", escape_part(code), ip_key(ip)),
        }
    }
}

/// Parse a target `host`, `host:port`, `IP`, `IPv4:port` or `[IPv6]:port` into its subject and port
/// (`default_port` when none is given).
///
/// # Errors
/// Why the target is refused.
pub fn parse_target(raw: &str, default_port: u16) -> Result<(Subject, u16), String> {
    let raw = raw.trim();
    let port_of = |p: &str| -> Result<u16, String> {
        match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            _ => Err(format!("not a port number (1 to 65535): {p:?}")),
        }
    };
    if let Some(rest) = raw.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("missing ']' in {raw:?}"))?;
        let ip =
            canonical_ip(ip).ok_or_else(|| format!("not an IP address in brackets: {raw:?}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => port_of(p)?,
            None if after.is_empty() => default_port,
            None => return Err(format!("unexpected text after ']' in {raw:?}")),
        };
        return Ok((Subject::Address(ip), port));
    }
    if let Some(ip) = canonical_ip(raw) {
        return Ok((Subject::Address(ip), default_port));
    }
    match raw.rsplit_once(':') {
        Some((host, port)) => Ok((Subject::parse(host)?, port_of(port)?)),
        None => Ok((Subject::parse(raw)?, default_port)),
    }
}

/// Characters kept as they are in a path segment or a query value: RFC 3986 unreserved.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encode a path segment or a query value (everything but RFC 3986 unreserved characters).
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// A query string `name=v1&name=v2...` for repeated parameters, each value encoded.
pub fn repeated_query(name: &str, values: &[String]) -> String {
    values
        .iter()
        .map(|v| format!("{name}={}", encode_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Split `values` into groups whose `repeated_query` stays under `max_len` bytes (a value longer than
/// that on its own gets a group of its own).
pub fn chunk_query(name: &str, values: &[String], max_len: usize) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut len = 0usize;
    for v in values {
        let add = name.len() + 2 + encode_component(v).len();
        if !cur.is_empty() && len + add > max_len {
            out.push(std::mem::take(&mut cur));
            len = 0;
        }
        len += add;
        cur.push(v.clone());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert_eq!(
            canonical_hostname("WWW.Example.COM.").unwrap(),
            "www.example.com"
        );
        assert_eq!(canonical_hostname("localhost").unwrap(), "localhost");
        for bad in [
            "",
            ".",
            "a..b",
            "-a.com",
            "a_b.com",
            "192.0.2.1",
            "_dmarc.example.com",
        ] {
            assert!(canonical_hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ips_and_keys() {
        assert_eq!(
            canonical_ip("::ffff:10.0.0.1").unwrap().to_string(),
            "10.0.0.1"
        );
        assert_eq!(
            canonical_ip("2001:DB8::0:1").unwrap().to_string(),
            "2001:db8::1"
        );
        assert!(canonical_ip("example.com").is_none());
        let ip = canonical_ip("192.0.2.1").unwrap();
        assert_eq!(ip_key(&ip), "internet|192.0.2.1");
        assert_eq!(hostname_key("a.example"), "internet|a.example");
        assert_eq!(escape_part("a|b%c"), "a%7Cb%25c");
        assert_eq!(
            Subject::Address(ip).finding_key("KAT-X"),
            "KAT-X||internet|192.0.2.1"
        );
        assert_eq!(
            Subject::Hostname("a.example".into()).finding_key("KAT-X"),
            "KAT-X|internet|a.example"
        );
        assert_eq!(Subject::parse("::1").unwrap().host(true), "[::1]");
        assert_eq!(
            Subject::parse("Example.com").unwrap().host(true),
            "example.com"
        );
    }

    #[test]
    fn targets() {
        let t = |s: &str| parse_target(s, 443).map(|(subj, p)| (subj.host(true), p));
        assert_eq!(t("Example.com").unwrap(), ("example.com".into(), 443));
        assert_eq!(t("example.com:8443").unwrap(), ("example.com".into(), 8443));
        assert_eq!(t("127.0.0.1:80").unwrap(), ("127.0.0.1".into(), 80));
        assert_eq!(t("::1").unwrap(), ("[::1]".into(), 443));
        assert_eq!(t("[::1]:8443").unwrap(), ("[::1]".into(), 8443));
        assert!(t("example.com:0").is_err());
        assert!(t("example.com:x").is_err());
        assert!(t("[::1").is_err());
        assert!(t("a_b.example").is_err());
    }

    #[test]
    fn encoding_and_chunks() {
        assert_eq!(encode_component("internet|a.b"), "internet%7Ca.b");
        assert_eq!(encode_component("v=spf1 a/b&c"), "v%3Dspf1%20a%2Fb%26c");
        assert_eq!(
            repeated_query("id", &["a|b".into(), "c".into()]),
            "id=a%7Cb&id=c"
        );
        let vals: Vec<String> = (0..100).map(|i| format!("value-{i:03}")).collect();
        let chunks = chunk_query("id", &vals, 200);
        assert!(chunks.len() > 1);
        assert_eq!(chunks.concat(), vals);
        for c in &chunks {
            assert!(repeated_query("id", c).len() <= 200);
        }
        let big = vec!["x".repeat(500)];
        assert_eq!(chunk_query("id", &big, 100), vec![big.clone()]);
    }
}
