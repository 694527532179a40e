//! Natural keys: the identity of every object, built from the values that make it what it is.
//!
//! A key is its parts joined by `|` (`internet|example.com`, `internet|192.0.2.1|TCP|80`), the original's
//! format, so keys written by OpenKAT v2 plugins stay valid. Unlike the original, a part that itself
//! contains `|` or `%` is escaped (`%7C`, `%25`) so that every value round-trips; a `/` needs no escaping
//! in a key (HTTP paths percent-encode the whole key instead). The joining and escaping rules are
//! [`kat_protocol::key`]'s, shared with the plugins; this module adds the key type and its checks.

use std::fmt;

use kat_protocol::key;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The escaping of one key part (`%` and `|`), as every writer of keys applies it.
pub use kat_protocol::key::{escape_part, unescape_part};

/// The longest natural key accepted by [`NaturalKey::parse`]: room for the longest TXT or CAA value
/// ([`crate::object::MAX_TEXT`]) escaped, plus its hostname.
pub const MAX_KEY_BYTES: usize = 3 * crate::object::MAX_TEXT + 1024;

/// The natural key of an object: its parts joined by `|`, each part escaped.
///
/// ```
/// use kat_core::object::NaturalKey;
/// let k = NaturalKey::from_parts(["internet", "a|b"]);
/// assert_eq!(k.as_str(), "internet|a%7Cb");
/// assert_eq!(k.parts(), vec!["internet".to_string(), "a|b".to_string()]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NaturalKey(String);

impl NaturalKey {
    /// Build a key from raw (unescaped) parts.
    pub fn from_parts<I, S>(parts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        NaturalKey(key::join_parts(parts))
    }

    /// Build a key from components that are already escaped (a related object's key is one component).
    pub fn from_escaped_components<I, S>(components: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = String::new();
        for (i, c) in components.into_iter().enumerate() {
            if i > 0 {
                out.push(key::SEPARATOR);
            }
            out.push_str(c.as_ref());
        }
        NaturalKey(out)
    }

    /// Take a key string as given (for example from a URL). It is checked when it is resolved against a
    /// type with [`crate::object::ObjectType::parse_key`].
    ///
    /// # Errors
    /// An empty key, or one with control characters, is invalid.
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Err(Error::invalid("id", "a natural key cannot be empty"));
        }
        if s.len() > MAX_KEY_BYTES {
            return Err(Error::invalid(
                "id",
                format!("a natural key is at most {MAX_KEY_BYTES} bytes"),
            ));
        }
        if s.chars().any(|c| c.is_control() && c != '\t') {
            return Err(Error::invalid(
                "id",
                "a natural key cannot contain control characters",
            ));
        }
        Ok(NaturalKey(s.to_string()))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's parts, unescaped.
    pub fn parts(&self) -> Vec<String> {
        self.0.split(key::SEPARATOR).map(unescape_part).collect()
    }

    /// The key's parts, still escaped.
    pub fn raw_parts(&self) -> Vec<&str> {
        self.0.split(key::SEPARATOR).collect()
    }

    /// Consume the key, giving its string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for NaturalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for NaturalKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        NaturalKey::parse(s)
    }
}

impl AsRef<str> for NaturalKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ObjectType;
    use proptest::prelude::*;

    #[test]
    fn plain_parts_are_unchanged() {
        let k = NaturalKey::from_parts(["internet", "example.com"]);
        assert_eq!(k.as_str(), "internet|example.com");
    }

    #[test]
    fn pipes_and_percents_are_escaped() {
        let k = NaturalKey::from_parts(["internet", "v=spf1 a|b 100%"]);
        assert_eq!(k.as_str(), "internet|v=spf1 a%7Cb 100%25");
        assert_eq!(k.parts()[1], "v=spf1 a|b 100%");
    }

    #[test]
    fn slashes_stay_in_keys() {
        let k = NaturalKey::from_parts(["internet", "x.com", "", "k=rsa; p=MII/+ab=="]);
        assert_eq!(k.as_str(), "internet|x.com||k=rsa; p=MII/+ab==");
        assert_eq!(k.parts()[3], "k=rsa; p=MII/+ab==");
    }

    #[test]
    fn keys_from_urls_with_a_stray_percent_resolve() {
        // A `%` followed by a multibyte character used to panic in `parts`.
        let k = ObjectType::Software
            .parse_key("50%\u{e9}t\u{e9}|1.0")
            .unwrap();
        assert_eq!(
            k.parts(),
            vec!["50%\u{e9}t\u{e9}".to_string(), "1.0".to_string()]
        );
    }

    #[test]
    fn parse_rejects_empty_and_control() {
        assert!(NaturalKey::parse("").is_err());
        assert!(NaturalKey::parse("a\nb").is_err());
        assert!(NaturalKey::parse(&"x".repeat(5000)).is_ok());
        assert!(NaturalKey::parse(&"x".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert_eq!(
            NaturalKey::parse("internet|a.com").unwrap().as_str(),
            "internet|a.com"
        );
    }

    proptest! {
        #[test]
        fn parts_round_trip(parts in proptest::collection::vec(".*", 1..6)) {
            let k = NaturalKey::from_parts(&parts);
            prop_assert_eq!(k.parts(), parts.clone());
            prop_assert_eq!(k.raw_parts().len(), parts.len());
        }

        #[test]
        fn escape_round_trip(s in ".*") {
            prop_assert_eq!(unescape_part(&escape_part(&s)), s.clone());
            prop_assert!(!escape_part(&s).contains('|'));
        }
    }
}
