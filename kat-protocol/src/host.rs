//! Hostnames and IP addresses in their canonical form: the form natural keys carry, so that the engine, the API
//! and every plugin name the same host with the same key.
//!
//! ```
//! use kat_protocol::host::{canonical_hostname, canonical_ip, HostnameError};
//! assert_eq!(canonical_hostname(" Mail.Example.COM. ").unwrap(), "mail.example.com");
//! assert_eq!(canonical_hostname("a_b.example"), Err(HostnameError::Character('_')));
//! assert_eq!(canonical_ip("::ffff:192.0.2.1").unwrap().to_string(), "192.0.2.1");
//! ```

use std::fmt;
use std::net::{AddrParseError, IpAddr};

/// The longest hostname accepted, in characters (after the trailing dot is stripped).
pub const MAX_HOSTNAME_LEN: usize = 253;

/// The longest label of a hostname, in characters.
pub const MAX_LABEL_LEN: usize = 63;

/// Why a hostname is refused. Its `Display` is the reason alone (`character '_' is not allowed`); callers
/// add the name and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostnameError {
    /// Nothing is left after trimming and stripping the trailing dot.
    Empty,
    /// Longer than [`MAX_HOSTNAME_LEN`].
    TooLong,
    /// Two dots in a row, or a leading dot.
    EmptyLabel,
    /// A label longer than [`MAX_LABEL_LEN`].
    LabelTooLong,
    /// A character other than an ASCII letter, digit, `-` or `.`.
    Character(char),
    /// A label that starts or ends with `-`.
    Hyphen,
    /// The last label is all digits: an IP address is not a hostname.
    NumericLastLabel,
}

impl fmt::Display for HostnameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostnameError::Empty => f.write_str("it is empty"),
            HostnameError::TooLong => write!(f, "longer than {MAX_HOSTNAME_LEN} characters"),
            HostnameError::EmptyLabel => f.write_str("empty label"),
            HostnameError::LabelTooLong => {
                write!(f, "a label is longer than {MAX_LABEL_LEN} characters")
            }
            HostnameError::Character(c) => write!(f, "character {c:?} is not allowed"),
            HostnameError::Hyphen => f.write_str("a label starts or ends with '-'"),
            HostnameError::NumericLastLabel => {
                f.write_str("the last label is all digits (an IP address is not a hostname)")
            }
        }
    }
}

impl std::error::Error for HostnameError {}

/// Validate and canonicalise a hostname: trimmed, lowercased, one trailing dot stripped, RFC 1123 (labels of
/// 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen, at most 253 characters in all).
/// A name whose last label is all digits (such as an IP address) is refused.
///
/// ```
/// use kat_protocol::host::canonical_hostname;
/// assert_eq!(canonical_hostname("WWW.Example.COM.").unwrap(), "www.example.com");
/// assert!(canonical_hostname("-bad.example").is_err());
/// ```
///
/// # Errors
/// The first rule the name breaks.
pub fn canonical_hostname(raw: &str) -> Result<String, HostnameError> {
    let trimmed = raw.trim();
    let name = trimmed
        .strip_suffix('.')
        .unwrap_or(trimmed)
        .to_ascii_lowercase();
    if name.is_empty() {
        return Err(HostnameError::Empty);
    }
    if name.len() > MAX_HOSTNAME_LEN {
        return Err(HostnameError::TooLong);
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err(HostnameError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(HostnameError::LabelTooLong);
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(HostnameError::Character(c));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(HostnameError::Hyphen);
        }
        last = label;
    }
    if last.chars().all(|c| c.is_ascii_digit()) {
        return Err(HostnameError::NumericLastLabel);
    }
    Ok(name)
}

/// Validate and canonicalise an IP address: RFC 5952 text for IPv6, and an IPv4-mapped IPv6 address
/// (`::ffff:192.0.2.1`) unpacked to IPv4, as the original does.
///
/// ```
/// use kat_protocol::host::canonical_ip;
/// assert_eq!(canonical_ip("2001:DB8:0:0::1").unwrap().to_string(), "2001:db8::1");
/// assert_eq!(canonical_ip("::ffff:192.0.2.1").unwrap().to_string(), "192.0.2.1");
/// ```
///
/// # Errors
/// When the text (trimmed) is not an IP address.
pub fn canonical_ip(raw: &str) -> Result<IpAddr, AddrParseError> {
    let ip: IpAddr = raw.trim().parse()?;
    Ok(match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert_eq!(canonical_hostname("Example.COM").unwrap(), "example.com");
        assert_eq!(canonical_hostname("example.com.").unwrap(), "example.com");
        assert_eq!(canonical_hostname(" localhost ").unwrap(), "localhost");
        assert_eq!(
            canonical_hostname("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(canonical_hostname("a-b.c1.io").unwrap(), "a-b.c1.io");
        for bad in [
            "",
            ".",
            "a..b",
            "-a.com",
            "a-.com",
            "a_b.com",
            "a b.com",
            "ex\u{e4}mple.com",
            "192.0.2.1",
            "a.123",
            "example.com..",
        ] {
            assert!(
                canonical_hostname(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert!(canonical_hostname(&format!("{}.com", "a".repeat(64))).is_err());
        assert!(canonical_hostname(&format!("{}.com", "a".repeat(63))).is_ok());
        let long = vec!["abcdefghi"; 26].join("."); // 259 characters
        assert!(canonical_hostname(&long).is_err());
    }

    #[test]
    fn ips() {
        assert_eq!(canonical_ip("127.0.0.1").unwrap().to_string(), "127.0.0.1");
        assert_eq!(
            canonical_ip("2001:0db8::0001").unwrap().to_string(),
            "2001:db8::1"
        );
        assert_eq!(
            canonical_ip("::ffff:10.0.0.1").unwrap().to_string(),
            "10.0.0.1"
        );
        assert_eq!(canonical_ip("::1").unwrap().to_string(), "::1");
        for bad in [
            "",
            "256.0.0.1",
            "1.2.3",
            "fe80::1%eth0",
            "example.com",
            "1.2.3.4/24",
        ] {
            assert!(canonical_ip(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn each_rule_has_its_reason() {
        let why = |raw: &str| canonical_hostname(raw).unwrap_err().to_string();
        assert_eq!(why(" . "), "it is empty");
        assert_eq!(why(&"a.".repeat(128)), "longer than 253 characters");
        assert_eq!(why("a..b"), "empty label");
        assert_eq!(
            why(&format!("{}.com", "a".repeat(64))),
            "a label is longer than 63 characters"
        );
        assert_eq!(why("a_b.com"), "character '_' is not allowed");
        assert_eq!(why("a-.com"), "a label starts or ends with '-'");
        assert_eq!(
            why("1.2.3.4"),
            "the last label is all digits (an IP address is not a hostname)"
        );
    }
}
