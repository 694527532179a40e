//! A tiny argument parser (no clap: the binary stays small): positional arguments, `--name value`,
//! `--name=value` and boolean `--flag`s, each subcommand declaring which it takes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::{Error, Result};

/// Parsed arguments of one subcommand.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Args {
    /// Positional arguments, in order.
    pub positional: Vec<String>,
    options: BTreeMap<String, String>,
    flags: BTreeSet<String>,
}

impl Args {
    /// Parse `args` (without the program and subcommand names). `valued` are the options that take a
    /// value, `flags` the boolean ones; anything else starting with `--` is a usage error. `--` ends
    /// the options.
    ///
    /// # Errors
    /// A usage error naming the unknown option or the option missing its value.
    pub fn parse(args: &[String], valued: &[&str], flags: &[&str]) -> Result<Args> {
        let mut out = Args::default();
        let mut it = args.iter();
        let mut only_positional = false;
        while let Some(a) = it.next() {
            if only_positional || !a.starts_with("--") || a == "-" {
                out.positional.push(a.clone());
                continue;
            }
            if a == "--" {
                only_positional = true;
                continue;
            }
            let body = &a[2..];
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            if valued.contains(&name) {
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| Error::usage(format!("--{name} needs a value")))?,
                };
                if out.options.insert(name.to_string(), value).is_some() {
                    return Err(Error::usage(format!("--{name} given more than once")));
                }
            } else if flags.contains(&name) {
                if inline.is_some() {
                    return Err(Error::usage(format!("--{name} takes no value")));
                }
                out.flags.insert(name.to_string());
            } else {
                let mut known: Vec<String> =
                    valued.iter().map(|v| format!("--{v} VALUE")).collect();
                known.extend(flags.iter().map(|f| format!("--{f}")));
                return Err(Error::usage(format!(
                    "unknown option --{name}{}",
                    if known.is_empty() {
                        String::from(" (this subcommand takes none)")
                    } else {
                        format!(" (known: {})", known.join(", "))
                    }
                )));
            }
        }
        Ok(out)
    }

    /// The value of `--name`, if given.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }

    /// Whether `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(name)
    }

    /// Exactly one positional argument, named `what` in the error.
    ///
    /// # Errors
    /// A usage error when there are none or several.
    pub fn one_positional(&self, what: &str) -> Result<&str> {
        match self.positional.as_slice() {
            [one] => Ok(one),
            [] => Err(Error::usage(format!("missing argument: {what}"))),
            more => Err(Error::usage(format!(
                "expected one {what}, got {} arguments: {}",
                more.len(),
                more.join(" ")
            ))),
        }
    }

    /// `--name` as a number in `lo..=hi`, or `default`.
    ///
    /// # Errors
    /// A usage error for anything else.
    pub fn number(&self, name: &str, default: u64, lo: u64, hi: u64) -> Result<u64> {
        match self.option(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if (lo..=hi).contains(&n) => Ok(n),
                _ => Err(Error::usage(format!(
                    "--{name} must be a whole number from {lo} to {hi}, got {v:?}"
                ))),
            },
        }
    }

    /// `--name` in seconds (fractions allowed) from 0.01 to `max_secs`, or `default`.
    ///
    /// # Errors
    /// A usage error for anything else.
    pub fn seconds(&self, name: &str, default: Duration, max_secs: f64) -> Result<Duration> {
        match self.option(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<f64>() {
                Ok(s) if s.is_finite() && (0.01..=max_secs).contains(&s) => {
                    Ok(Duration::from_secs_f64(s))
                }
                _ => Err(Error::usage(format!(
                    "--{name} must be a number of seconds from 0.01 to {max_secs}, got {v:?}"
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_flags_and_positionals() {
        let a = Args::parse(
            &s(&["x", "--ports", "1-10", "--timeout=2.5", "--no-banner", "y"]),
            &["ports", "timeout"],
            &["no-banner"],
        )
        .unwrap();
        assert_eq!(a.positional, s(&["x", "y"]));
        assert_eq!(a.option("ports"), Some("1-10"));
        assert_eq!(
            a.seconds("timeout", Duration::from_secs(1), 60.0).unwrap(),
            Duration::from_millis(2500)
        );
        assert!(a.flag("no-banner"));
        assert!(!a.flag("other"));
    }

    #[test]
    fn errors_are_usage_errors() {
        let e = Args::parse(&s(&["--bogus"]), &["ports"], &[]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message().contains("--bogus") && e.message().contains("--ports"));
        let e = Args::parse(&s(&["--ports"]), &["ports"], &[]).unwrap_err();
        assert!(e.message().contains("needs a value"));
        let e = Args::parse(&s(&["--a", "1", "--a", "2"]), &["a"], &[]).unwrap_err();
        assert!(e.message().contains("more than once"));
        let a = Args::parse(&s(&["--", "--not-an-option"]), &[], &[]).unwrap();
        assert_eq!(a.one_positional("x").unwrap(), "--not-an-option");
        let a = Args::parse(&s(&[]), &["n"], &[]).unwrap();
        assert!(a.one_positional("hostname").is_err());
        let a = Args::parse(&s(&["--n", "0"]), &["n"], &[]).unwrap();
        assert!(a.number("n", 5, 1, 10).is_err());
        assert_eq!(
            Args::parse(&s(&[]), &["n"], &[])
                .unwrap()
                .number("n", 5, 1, 10)
                .unwrap(),
            5
        );
    }
}
