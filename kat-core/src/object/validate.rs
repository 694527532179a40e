//! Validation and canonical forms of the values objects are made of.

use std::net::IpAddr;

use kat_protocol::host;

use crate::{Error, Result};

/// Validate and canonicalise a hostname: trimmed, lowercased, one trailing dot stripped, RFC 1123
/// (labels of 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen, at most 253
/// characters in all). A name whose last label is all digits (such as an IP address) is refused. The rule
/// is [`kat_protocol::host::canonical_hostname`]'s, shared with the plugins.
///
/// ```
/// use kat_core::object::canonical_hostname;
/// assert_eq!(canonical_hostname("WWW.Example.COM.").unwrap(), "www.example.com");
/// assert!(canonical_hostname("-bad.example").is_err());
/// ```
///
/// # Errors
/// [`Error::Invalid`] saying which rule the name breaks.
pub fn canonical_hostname(raw: &str) -> Result<String> {
    host::canonical_hostname(raw)
        .map_err(|why| Error::invalid("", format!("not a valid hostname {raw:?}: {why}")))
}

/// Validate and canonicalise an IP address: RFC 5952 text for IPv6, and an IPv4-mapped IPv6 address
/// (`::ffff:192.0.2.1`) unpacked to IPv4, as the original does ([`kat_protocol::host::canonical_ip`]).
///
/// ```
/// use kat_core::object::canonical_ip;
/// assert_eq!(canonical_ip("2001:DB8:0:0::1").unwrap().to_string(), "2001:db8::1");
/// assert_eq!(canonical_ip("::ffff:192.0.2.1").unwrap().to_string(), "192.0.2.1");
/// ```
///
/// # Errors
/// [`Error::Invalid`] when the text is not an IP address.
pub fn canonical_ip(raw: &str) -> Result<IpAddr> {
    host::canonical_ip(raw)
        .map_err(|_| Error::invalid("", format!("not a valid IP address: {raw:?}")))
}

/// Validate a network name: lowercased, 1 to 64 characters of letters, digits, `.`, `_` and `-`.
///
/// # Errors
/// [`Error::Invalid`] when the name is empty, too long or has another character.
pub fn canonical_network(raw: &str) -> Result<String> {
    let name = raw.trim().to_ascii_lowercase();
    if name.is_empty() || name.len() > 64 {
        return Err(Error::invalid(
            "",
            format!("not a valid network name {raw:?}: must be 1 to 64 characters"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::invalid(
            "",
            format!("not a valid network name {raw:?}: character {c:?} is not allowed"),
        ));
    }
    Ok(name)
}

/// Validate a free-text value that becomes part of a key or a record (no control characters but tab,
/// at most `max` bytes).
///
/// # Errors
/// [`Error::Invalid`] when the text is too long or has control characters.
pub fn check_text(raw: &str, max: usize) -> Result<()> {
    if raw.len() > max {
        return Err(Error::invalid(
            "",
            format!("longer than {max} bytes ({} bytes)", raw.len()),
        ));
    }
    if raw.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Error::invalid("", "control characters are not allowed"));
    }
    Ok(())
}

/// Validate a finding-type code: 1 to 128 characters of letters, digits, `-`, `_` and `.`.
///
/// # Errors
/// [`Error::Invalid`] when the code is empty, too long or has another character.
pub fn check_code(raw: &str) -> Result<()> {
    if raw.is_empty() || raw.len() > 128 {
        return Err(Error::invalid(
            "",
            format!("not a valid code {raw:?}: must be 1 to 128 characters"),
        ));
    }
    if let Some(c) = raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(Error::invalid(
            "",
            format!("not a valid code {raw:?}: character {c:?} is not allowed"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostname_errors_say_why() {
        let e = canonical_hostname("a_b.com").unwrap_err().to_string();
        assert!(e.contains("'_'"), "{e}");
        let e = canonical_hostname("1.2.3.4").unwrap_err().to_string();
        assert!(e.contains("IP address"), "{e}");
    }

    #[test]
    fn networks_and_codes() {
        assert_eq!(canonical_network("Internet").unwrap(), "internet");
        assert!(canonical_network("").is_err());
        assert!(canonical_network("a|b").is_err());
        assert!(canonical_network("a/b").is_err());
        assert!(check_code("KAT-NO-SPF").is_ok());
        assert!(check_code("KAT NO").is_err());
        assert!(check_code("").is_err());
        assert!(check_text("v=spf1 -all", 100).is_ok());
        assert!(check_text("a\u{0}b", 100).is_err());
        assert!(check_text("abc", 2).is_err());
    }

    proptest! {
        #[test]
        fn canonical_hostnames_are_fixed_points(
            labels in proptest::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?", 1..5),
            tld in "[a-zA-Z]{2,6}",
        ) {
            let raw = format!("{}.{}", labels.join("."), tld);
            let c = canonical_hostname(&raw).unwrap();
            prop_assert_eq!(canonical_hostname(&c).unwrap(), c.clone());
            prop_assert_eq!(c, raw.to_ascii_lowercase());
        }

        #[test]
        fn ipv4_round_trip(a: u8, b: u8, c: u8, d: u8) {
            let s = format!("{a}.{b}.{c}.{d}");
            prop_assert_eq!(canonical_ip(&s).unwrap().to_string(), s);
        }

        #[test]
        fn ipv6_canonical_is_fixed_point(bits: u128) {
            let ip = std::net::Ipv6Addr::from(bits);
            let c = canonical_ip(&ip.to_string()).unwrap();
            prop_assert_eq!(canonical_ip(&c.to_string()).unwrap(), c);
        }

        #[test]
        fn hostname_never_panics(s in "\\PC*") {
            let _ = canonical_hostname(&s);
        }
    }
}
