//! URLs: web addresses that plugins such as nuclei scan (`type:url`, `{url}`).
//!
//! A URL is an absolute `http` or `https` URL whose host is a valid hostname or an IP literal, without
//! user information. It is stored in a canonical form, so that two spellings of the same address are
//! one object:
//!
//! - the WHATWG URL rules (the `url` crate): scheme and host lowercased, an internationalised host in
//!   its ASCII (punycode) form, the scheme's default port removed (`:80` for `http`, `:443` for
//!   `https`), an empty path written `/`, `.` and `..` segments resolved, characters that may not
//!   appear in a URL percent-encoded, IPv4 hosts in dotted decimal and IPv6 hosts in RFC 5952 form;
//! - then the fragment (`#...`) removed (a client never sends it), a trailing dot of the host
//!   removed, and an IPv4-mapped IPv6 host (`[::ffff:192.0.2.1]`) written as the IPv4 address.
//!
//! Whitespace and control characters anywhere in the text are refused rather than silently removed
//! (the WHATWG parser drops tabs and line breaks), and so is a URL longer than [`MAX_URL_LEN`] bytes.
//!
//! A URL has no scan level of its own: it is scanned at the level of its host object (the hostname
//! or IP address of the same network), see [`UrlRef::host_object`].
//!
//! ```
//! use kat_core::object::canonical_url;
//! assert_eq!(canonical_url("HTTPS://WWW.Example.COM.:443/a/../b#top").unwrap(), "https://www.example.com/b");
//! assert_eq!(canonical_url("http://[::FFFF:192.0.2.1]:8080").unwrap(), "http://192.0.2.1:8080/");
//! assert!(canonical_url("ftp://example.com/").is_err());
//! assert!(canonical_url("https://user:pw@example.com/").is_err());
//! assert!(canonical_url("/relative").is_err());
//! ```

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{HostnameRef, IpRef, NaturalKey, Object, ObjectType, canonical_hostname, canonical_ip};
use crate::{Error, Result};

/// The longest URL accepted, in bytes (after canonicalisation).
pub const MAX_URL_LEN: usize = 4096;

/// The host of a URL: a hostname or an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlHost {
    /// A canonical hostname.
    Name(String),
    /// An IP address.
    Ip(IpAddr),
}

/// Validate and canonicalise a URL, returning its canonical text and its host (see the module docs).
///
/// # Errors
/// [`Error::Invalid`] saying what is wrong.
pub fn parse_url(raw: &str) -> Result<(String, UrlHost)> {
    let bad = |why: &str| Error::invalid("", format!("not a valid URL {raw:?}: {why}"));
    if raw.is_empty() {
        return Err(bad("it is empty"));
    }
    if raw.len() > MAX_URL_LEN {
        return Err(bad(&format!("a URL is at most {MAX_URL_LEN} bytes")));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains whitespace or a control character"));
    }
    let mut url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("only http and https URLs can be objects"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("a URL object cannot carry a user name or password"));
    }
    let host = match url.host() {
        None => return Err(bad("it has no host")),
        Some(url::Host::Domain(d)) => UrlHost::Name(
            canonical_hostname(d).map_err(|e| bad(&e.to_string().replace("\"", "'")))?,
        ),
        Some(url::Host::Ipv4(a)) => UrlHost::Ip(IpAddr::V4(a)),
        Some(url::Host::Ipv6(a)) => UrlHost::Ip(
            canonical_ip(&a.to_string()).map_err(|e| bad(&e.to_string().replace("\"", "'")))?,
        ),
    };
    let host_text = match &host {
        UrlHost::Name(n) => n.clone(),
        UrlHost::Ip(IpAddr::V4(a)) => a.to_string(),
        UrlHost::Ip(IpAddr::V6(a)) => format!("[{a}]"),
    };
    url.set_host(Some(&host_text))
        .map_err(|e| bad(&e.to_string()))?;
    url.set_fragment(None);
    let text = String::from(url);
    if text.len() > MAX_URL_LEN {
        return Err(bad(&format!("a URL is at most {MAX_URL_LEN} bytes")));
    }
    Ok((text, host))
}

/// Validate and canonicalise a URL (see the module docs).
///
/// # Errors
/// [`Error::Invalid`] saying what is wrong.
pub fn canonical_url(raw: &str) -> Result<String> {
    parse_url(raw).map(|(u, _)| u)
}

/// A URL in a network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UrlRef {
    /// The network's name.
    pub network: String,
    /// The canonical URL.
    pub url: String,
}

impl UrlRef {
    /// Validate and canonicalise.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad network or URL.
    pub fn new(network: &str, url: &str) -> Result<Self> {
        Ok(UrlRef {
            network: super::canonical_network(network).map_err(|e| e.within("network"))?,
            url: canonical_url(url).map_err(|e| e.within("url"))?,
        })
    }

    /// The URL's natural key: `network|url` (a `|` or `%` in the URL escaped as in every key).
    pub fn key(&self) -> NaturalKey {
        NaturalKey::from_parts([&self.network, &self.url])
    }

    /// The host: a hostname or an address, in the URL's network.
    pub fn host(&self) -> Object {
        match parse_url(&self.url) {
            Ok((_, UrlHost::Ip(a))) => Object::IpAddress(IpRef {
                network: self.network.clone(),
                address: a,
            }),
            Ok((_, UrlHost::Name(n))) => Object::Hostname(HostnameRef {
                network: self.network.clone(),
                name: n,
            }),
            // A stored URL is canonical, so this does not happen; a bare name keeps the type total.
            Err(_) => Object::Hostname(HostnameRef {
                network: self.network.clone(),
                name: String::new(),
            }),
        }
    }

    /// The object whose scan level the URL is scanned at: its host's type and key.
    ///
    /// ```
    /// use kat_core::object::{ObjectType, UrlRef};
    /// let u = UrlRef::new("internet", "https://Example.com:8443/x").unwrap();
    /// assert_eq!(u.key().as_str(), "internet|https://example.com:8443/x");
    /// let (ty, key) = u.host_object();
    /// assert_eq!((ty, key.as_str()), (ObjectType::Hostname, "internet|example.com"));
    /// let (ty, key) = UrlRef::new("internet", "http://[2001:db8::1]/").unwrap().host_object();
    /// assert_eq!((ty, key.as_str()), (ObjectType::IpAddress, "internet|2001:db8::1"));
    /// ```
    pub fn host_object(&self) -> (ObjectType, NaturalKey) {
        let h = self.host();
        (h.object_type(), h.natural_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        for (raw, want) in [
            ("http://example.com", "http://example.com/"),
            ("HTTP://EXAMPLE.COM:80/", "http://example.com/"),
            ("https://example.com:443/a?b=c", "https://example.com/a?b=c"),
            ("https://example.com:8443/a", "https://example.com:8443/a"),
            ("https://example.com./", "https://example.com/"),
            ("https://example.com/a/./b/../c", "https://example.com/a/c"),
            ("https://example.com/#frag", "https://example.com/"),
            ("https://bücher.example/", "https://xn--bcher-kva.example/"),
            ("https://example.com/ä", "https://example.com/%C3%A4"),
            ("http://192.0.2.1:8080/x", "http://192.0.2.1:8080/x"),
            ("http://[2001:DB8::1]/", "http://[2001:db8::1]/"),
            ("http://[::ffff:192.0.2.1]/", "http://192.0.2.1/"),
            ("https://example.com/a|b", "https://example.com/a|b"),
        ] {
            assert_eq!(canonical_url(raw).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn refused() {
        for (raw, why) in [
            ("", "empty"),
            ("example.com", "relative URL"),
            ("/a", "relative URL"),
            ("ftp://example.com/", "only http and https"),
            ("file:///etc/passwd", "only http and https"),
            ("javascript:alert(1)", "only http and https"),
            ("https://user@example.com/", "user name"),
            ("https://:pw@example.com/", "user name"),
            ("https://exa mple.com/", "whitespace"),
            ("https://example.com/\n", "whitespace"),
            ("https://exa\tmple.com/", "whitespace"),
            ("https://-bad.example/", "hostname"),
            ("https://under_score.example/", "hostname"),
            ("https://example.123/", "invalid IPv4"),
            ("https://[::1/", "invalid"),
            ("https://example.com:99999/", "invalid port"),
        ] {
            let e = canonical_url(raw).unwrap_err().to_string();
            assert!(e.contains(why), "{raw}: {e}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(
            canonical_url(&long)
                .unwrap_err()
                .to_string()
                .contains("at most")
        );
    }

    #[test]
    fn keys_round_trip_and_hosts() {
        let u = UrlRef::new("internet", "https://example.com/a|b%7C").unwrap();
        let k = u.key();
        assert_eq!(k.parts()[1], u.url);
        assert_eq!(
            ObjectType::Url.parse_key(k.as_str()).unwrap(),
            k,
            "a canonical key parses to itself"
        );
        let (ty, host) = u.host_object();
        assert_eq!(
            (ty, host.as_str()),
            (ObjectType::Hostname, "internet|example.com")
        );
        let u = UrlRef::new("lab", "http://10.0.0.1:81/").unwrap();
        assert_eq!(u.host_object().1.as_str(), "lab|10.0.0.1");
    }
}
