//! Natural keys: an object's identity, its parts joined by `|` (`internet|example.com`,
//! `internet|192.0.2.1|TCP|80`), the original's format, so that keys written by OpenKAT v2 plugins stay valid.
//!
//! Unlike the original, a part that itself contains `|` or `%` is escaped (`%7C`, `%25`) so that every value
//! round-trips. A `/` needs no escaping in a key: HTTP paths percent-encode the whole key instead. A related
//! object's key is one component of a key, already escaped (a finding about a hostname:
//! `CODE|internet|example.com`); which parts make up which type's key is `kat_core::object`'s business.
//!
//! ```
//! use kat_protocol::key::{escape_part, join_parts, unescape_part, DEFAULT_NETWORK};
//! assert_eq!(join_parts([DEFAULT_NETWORK, "v=spf1 a|b 100%"]), "internet|v=spf1 a%7Cb 100%25");
//! assert_eq!(unescape_part(&escape_part("a|b%")), "a|b%");
//! ```

/// What separates the parts of a key.
pub const SEPARATOR: char = '|';

/// The network of objects on the public internet: the first part of most keys (`internet|example.com`).
pub const DEFAULT_NETWORK: &str = "internet";

/// Escape one key part: `%` becomes `%25` and `|` becomes `%7C`.
///
/// ```
/// assert_eq!(kat_protocol::key::escape_part("a|b%c"), "a%7Cb%25c");
/// ```
pub fn escape_part(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    push_escaped_part(&mut out, part);
    out
}

/// Append `part` to `out`, escaped as [`escape_part`] does.
///
/// ```
/// let mut key = String::from("internet|");
/// kat_protocol::key::push_escaped_part(&mut key, "a|b");
/// assert_eq!(key, "internet|a%7Cb");
/// ```
pub fn push_escaped_part(out: &mut String, part: &str) {
    let mut rest = part;
    while let Some(at) = rest.bytes().position(|b| b == b'%' || b == b'|') {
        out.push_str(&rest[..at]);
        out.push_str(if rest.as_bytes()[at] == b'%' {
            "%25"
        } else {
            "%7C"
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

/// Join raw (unescaped) parts into a key: each part escaped, separated by `|`.
///
/// ```
/// assert_eq!(kat_protocol::key::join_parts(["internet", "x.com", "", "k=a/b"]), "internet|x.com||k=a/b");
/// ```
pub fn join_parts<I, S>(parts: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    // Room for most keys (a network and a name), so that building one rarely grows it.
    let mut out = String::with_capacity(64);
    for (i, p) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        push_escaped_part(&mut out, p.as_ref());
    }
    out
}

/// Undo [`escape_part`]. Other `%` sequences are kept as they are (`%7c` is read as `|` too).
///
/// ```
/// assert_eq!(kat_protocol::key::unescape_part("a%7Cb%25c"), "a|b%c");
/// ```
pub fn unescape_part(part: &str) -> String {
    if !part.contains('%') {
        return part.to_string();
    }
    let mut out = String::with_capacity(part.len());
    let mut rest = part;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        // Compared as bytes: the two after `%` may be part of a multibyte character.
        if tail
            .as_bytes()
            .get(..3)
            .is_some_and(|b| b.eq_ignore_ascii_case(b"%7C"))
        {
            out.push('|');
            rest = &tail[3..];
        } else if let Some(after) = tail.strip_prefix("%25") {
            out.push('%');
            rest = after;
        } else {
            out.push('%');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_percent_sequences_survive() {
        assert_eq!(unescape_part("50%off%2"), "50%off%2");
        assert_eq!(unescape_part("%7c"), "|");
    }

    #[test]
    fn a_percent_before_a_multibyte_character_is_kept() {
        assert_eq!(unescape_part("%a\u{e9}"), "%a\u{e9}");
        assert_eq!(unescape_part("%\u{e9}"), "%\u{e9}");
        assert_eq!(unescape_part("x%7\u{1f600}"), "x%7\u{1f600}");
    }

    #[test]
    fn joined_parts_split_back() {
        let parts = ["internet", "a|b", "", "100%", "x/y", "%7C"];
        let key = join_parts(parts);
        assert_eq!(key, "internet|a%7Cb||100%25|x/y|%257C");
        let back: Vec<String> = key.split(SEPARATOR).map(unescape_part).collect();
        assert_eq!(back, parts);
    }
}
