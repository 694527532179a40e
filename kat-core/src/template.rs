//! Argument templating: which parts of a plugin's `oci_arguments` are placeholders.
//!
//! The placeholders are exactly `{hostname}`, `{ipaddress}`, `{mail_server}`, `{url}` and `{file}`
//! (matched without regard to case, so `{HOSTNAME}` is a placeholder and is substituted, where the
//! original detected it but never replaced it), and `{file/<id>}`, a file that the entrypoint downloads
//! and replaces by a local path. Every other brace text is literal: `jq '{a:.b}'`, `${VAR}`,
//! `grep "{.*}"`, `awk '{print}'`. Names that look like a mistaken placeholder (`{ipport}`, `{network}`,
//! `{ip}`, `{file/abc}`) are errors when the plugin is loaded, instead of silently never being replaced.
//!
//! A value always becomes part of exactly one argument: nothing is split or passed through a shell.
//!
//! ```
//! use kat_core::template::CommandTemplate;
//! let t = CommandTemplate::parse(&["sh", "-c", "dig {hostname} | jq '{a:.b}' > {file/12}"]).unwrap();
//! assert_eq!(
//!     t.render(Some("a b.example")),
//!     vec!["sh", "-c", "dig a b.example | jq '{a:.b}' > {file/12}"],
//! );
//! assert_eq!(t.file_refs().into_iter().collect::<Vec<_>>(), vec![12]);
//! ```

use std::collections::BTreeSet;
use std::fmt;

use crate::object::ObjectType;
use crate::{Error, Result};

/// A placeholder that receives the task's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Placeholder {
    /// `{hostname}`
    Hostname,
    /// `{ipaddress}`
    IpAddress,
    /// `{mail_server}`
    MailServer,
    /// `{url}`
    Url,
    /// `{file}`: the input file's id.
    File,
}

impl Placeholder {
    /// Every placeholder.
    pub const ALL: [Placeholder; 5] = [
        Placeholder::Hostname,
        Placeholder::IpAddress,
        Placeholder::MailServer,
        Placeholder::Url,
        Placeholder::File,
    ];

    /// The name between the braces.
    pub fn name(self) -> &'static str {
        match self {
            Placeholder::Hostname => "hostname",
            Placeholder::IpAddress => "ipaddress",
            Placeholder::MailServer => "mail_server",
            Placeholder::Url => "url",
            Placeholder::File => "file",
        }
    }

    /// The object type whose objects fill this placeholder, if any.
    pub fn object_type(self) -> Option<ObjectType> {
        match self {
            Placeholder::Hostname | Placeholder::MailServer => Some(ObjectType::Hostname),
            Placeholder::IpAddress => Some(ObjectType::IpAddress),
            Placeholder::Url => Some(ObjectType::Url),
            Placeholder::File => None,
        }
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.name())
    }
}

/// One piece of an argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Text kept as it is.
    Literal(String),
    /// A placeholder for the target.
    Placeholder(Placeholder),
    /// `{file/<id>}`: downloaded by the entrypoint.
    FileRef(u64),
}

/// Names that are refused inside braces because they look like a placeholder that does not exist.
fn is_near_miss(name: &str) -> bool {
    const OTHERS: [&str; 12] = [
        "ip",
        "ip_address",
        "ipv4",
        "ipv6",
        "address",
        "host",
        "host_name",
        "domain",
        "mailserver",
        "mail-server",
        "target",
        "port",
    ];
    OTHERS.contains(&name) || ObjectType::ALL.iter().any(|t| t.as_str() == name)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// One argument, parsed into segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgTemplate(pub Vec<Segment>);

impl ArgTemplate {
    /// Parse one argument.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown placeholder-like name or a malformed `{file/<id>}`.
    pub fn parse(arg: &str) -> Result<Self> {
        let mut segs = Vec::new();
        let mut lit = String::new();
        let mut rest = arg;
        while let Some(open) = rest.find('{') {
            let before = &rest[..open];
            lit.push_str(before);
            let after = &rest[open + 1..];
            let preceded_by_dollar =
                before.ends_with('$') || (before.is_empty() && lit.ends_with('$'));
            let Some(close) = after.find('}') else {
                lit.push('{');
                rest = after;
                continue;
            };
            let inner = &after[..close];
            let lower = inner.to_ascii_lowercase();
            let token = if preceded_by_dollar {
                None
            } else if let Some(p) = Placeholder::ALL.iter().find(|p| p.name() == lower) {
                Some(Segment::Placeholder(*p))
            } else if let Some(id) = lower.strip_prefix("file/") {
                match id.parse::<u64>() {
                    Ok(n) if !id.starts_with('+') => Some(Segment::FileRef(n)),
                    _ => {
                        return Err(Error::invalid(
                            "",
                            format!(
                                "{{{inner}}}: a file reference needs a numeric id, like {{file/123}}"
                            ),
                        ));
                    }
                }
            } else if is_identifier(inner) && is_near_miss(&lower) {
                return Err(Error::invalid(
                    "",
                    format!(
                        "unknown placeholder {{{inner}}}; the placeholders are {{hostname}}, {{ipaddress}}, {{mail_server}}, {{url}}, {{file}} and {{file/<id>}}"
                    ),
                ));
            } else {
                None
            };
            match token {
                Some(t) => {
                    if !lit.is_empty() {
                        segs.push(Segment::Literal(std::mem::take(&mut lit)));
                    }
                    segs.push(t);
                    rest = &after[close + 1..];
                }
                None => {
                    lit.push('{');
                    rest = after;
                }
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() || segs.is_empty() {
            segs.push(Segment::Literal(lit));
        }
        Ok(ArgTemplate(segs))
    }

    /// Render with `value` for every placeholder (`None` leaves placeholders as written).
    pub fn render(&self, value: Option<&str>) -> String {
        let mut out = String::new();
        for s in &self.0 {
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Placeholder(p) => match value {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&p.to_string()),
                },
                Segment::FileRef(id) => {
                    out.push_str("{file/");
                    out.push_str(&id.to_string());
                    out.push('}');
                }
            }
        }
        out
    }
}

/// A plugin's whole argument list, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandTemplate(pub Vec<ArgTemplate>);

impl CommandTemplate {
    /// Parse every argument; errors say which one (`[3]`).
    ///
    /// # Errors
    /// [`Error::Invalid`] at `[index]`.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self> {
        args.iter()
            .enumerate()
            .map(|(i, a)| ArgTemplate::parse(a.as_ref()).map_err(|e| e.within(&format!("[{i}]"))))
            .collect::<Result<Vec<_>>>()
            .map(CommandTemplate)
    }

    /// The placeholders used.
    pub fn placeholders(&self) -> BTreeSet<Placeholder> {
        self.segments()
            .filter_map(|s| match s {
                Segment::Placeholder(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    /// The static `{file/<id>}` references.
    pub fn file_refs(&self) -> BTreeSet<u64> {
        self.segments()
            .filter_map(|s| match s {
                Segment::FileRef(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// Whether any argument takes the target.
    pub fn has_placeholder(&self) -> bool {
        self.segments()
            .any(|s| matches!(s, Segment::Placeholder(_)))
    }

    /// Render every argument with `value` for every placeholder.
    pub fn render(&self, value: Option<&str>) -> Vec<String> {
        self.0.iter().map(|a| a.render(value)).collect()
    }

    fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.0.iter().flat_map(|a| a.0.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(args: &[&str]) -> CommandTemplate {
        CommandTemplate::parse(args).unwrap()
    }

    /// The original's `test_arguments` table (tests/test_plugins.py), row by row, with what kat-rs
    /// does. Rows where the original is buggy say so and pin the fix instead.
    #[test]
    fn original_test_arguments_table() {
        // {hostname} -> Hostname: same.
        assert_eq!(
            parse(&["nslookup", "{hostname}"]).placeholders(),
            [Placeholder::Hostname].into()
        );
        // {HOSTNAME} -> Hostname: same detection; and here it is also substituted (original bug 7).
        let t = parse(&["nslookup", "{HOSTNAME}"]);
        assert_eq!(t.placeholders(), [Placeholder::Hostname].into());
        assert_eq!(t.render(Some("a.nl")), vec!["nslookup", "a.nl"]);
        // {ipaddress} -> IPAddress: same.
        assert_eq!(
            parse(&["nmap", "{ipaddress}"]).placeholders(),
            [Placeholder::IpAddress].into()
        );
        // {ipport} -> IPPort in the original, never substituted (bug): refused at load time here.
        assert!(CommandTemplate::parse(&["x", "{ipport}"]).is_err());
        // {bla} -> "bla" in the original (brace false positive, bug 6): literal here.
        let t = parse(&["echo", "{bla}"]);
        assert!(!t.has_placeholder());
        assert_eq!(t.render(Some("v")), vec!["echo", "{bla}"]);
        // {file} -> no type, but it is a placeholder (mode 5): same.
        let t = parse(&["parse", "{file}"]);
        assert_eq!(t.placeholders(), [Placeholder::File].into());
        assert_eq!(Placeholder::File.object_type(), None);
        // {file/123} -> files_in_arguments = [123]: a static reference, not a target placeholder.
        let t = parse(&["cat", "{file/123}"]);
        assert_eq!(t.file_refs(), [123].into());
        assert!(!t.has_placeholder());
        // {mail_server} -> the mail_server object set (hostnames): a hostname target here.
        assert_eq!(
            Placeholder::MailServer.object_type(),
            Some(ObjectType::Hostname)
        );
    }

    #[test]
    fn shell_and_jq_braces_are_literal() {
        for arg in [
            "grep \"{.*}\"",
            "echo ${VAR}",
            "echo ${hostname}",
            "jq '{a:.b}'",
            "awk '{print $1}'",
            "awk '{print}'",
            "f() { x; }",
            "{a,b}",
            "{",
            "}",
            "{}",
            "{{",
            "a{b",
            "jq '[.\"extracted-results\"[], .host] | @tsv'",
        ] {
            let t = parse(&[arg]);
            assert!(!t.has_placeholder(), "{arg}");
            assert_eq!(t.render(Some("X")), vec![arg.to_string()], "{arg}");
        }
    }

    #[test]
    fn several_placeholders_and_refs_in_one_argument() {
        let t = parse(&["{hostname}:{hostname}@{file/1}+{file/22}/{url}"]);
        assert_eq!(t.render(Some("h")), vec!["h:h@{file/1}+{file/22}/h"]);
        assert_eq!(t.file_refs(), [1, 22].into());
    }

    #[test]
    fn nested_braces_around_a_placeholder() {
        let t = parse(&["{{hostname}}"]);
        assert_eq!(t.render(Some("a.nl")), vec!["{a.nl}"]);
        let t = parse(&["jq '{host: \"{hostname}\"}'"]);
        assert_eq!(t.render(Some("a.nl")), vec!["jq '{host: \"a.nl\"}'"]);
    }

    #[test]
    fn errors_say_which_argument() {
        let e = CommandTemplate::parse(&["a", "b", "x{network}"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[2]") && e.contains("{network}"), "{e}");
        let e = CommandTemplate::parse(&["cat", "{file/abc}"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[1]") && e.contains("numeric id"), "{e}");
        assert!(CommandTemplate::parse(&["{file/-1}"]).is_err());
        assert!(CommandTemplate::parse(&["{file/+1}"]).is_err());
        assert!(CommandTemplate::parse(&["{file/99999999999999999999999}"]).is_err());
        assert!(CommandTemplate::parse(&["{IP}"]).is_err());
        assert!(CommandTemplate::parse(&["{dnsarecord}"]).is_err());
    }

    #[test]
    fn unrendered_placeholders_are_kept() {
        let t = parse(&["x", "{ipaddress}"]);
        assert_eq!(t.render(None), vec!["x", "{ipaddress}"]);
        assert_eq!(parse(&[""]).render(None), vec![""]);
    }

    proptest! {
        /// A value is inserted verbatim and as part of exactly one argument, whatever it contains.
        #[test]
        fn values_stay_in_one_argument(value in "\\PC*|[ \"'$(){}`;|&\n\t\\\\]*", prefix in "[a-z =-]{0,5}") {
            let t = parse(&["tool", "--flag", &format!("{prefix}{{hostname}}")]);
            let out = t.render(Some(&value));
            prop_assert_eq!(out.len(), 3);
            prop_assert_eq!(&out[2], &format!("{prefix}{value}"));
        }

        /// Text without braces parses to itself.
        #[test]
        fn brace_free_text_is_literal(s in "[^{}]*") {
            let t = parse(&[&s]);
            prop_assert!(!t.has_placeholder());
            prop_assert_eq!(t.render(Some("x")), vec![s.clone()]);
        }

        /// Rendering without a value reproduces an argument's placeholders in canonical form, and
        /// parsing is total (never panics) on arbitrary text.
        #[test]
        fn parse_is_total(s in "\\PC*") {
            if let Ok(t) = CommandTemplate::parse(&[&s]) {
                let again = CommandTemplate::parse(&t.render(None)).unwrap();
                prop_assert_eq!(again.placeholders(), t.placeholders());
                prop_assert_eq!(again.file_refs(), t.file_refs());
            }
        }
    }
}
