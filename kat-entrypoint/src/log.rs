//! One line per event on stderr, with the task token redacted from every line.

use std::fmt;
use std::io::Write;
use std::sync::OnceLock;

/// The secret that must never reach a log line (the task's token).
static SECRET: OnceLock<String> = OnceLock::new();

/// What replaces the secret wherever it would appear.
pub(crate) const REDACTED: &str = "[redacted]";

/// Registers the secret to redact. Only the first call has an effect; an empty secret is ignored.
pub(crate) fn set_secret(secret: &str) {
    if !secret.is_empty() {
        let _ = SECRET.set(secret.to_owned());
    }
}

/// Replaces every occurrence of the registered secret in `text`.
pub(crate) fn redact(text: &str) -> String {
    match SECRET.get() {
        Some(secret) if text.contains(secret.as_str()) => text.replace(secret.as_str(), REDACTED),
        _ => text.to_owned(),
    }
}

/// Formats one log line: the prefix, the message with the secret redacted, line breaks and other control
/// characters replaced by spaces, and a final newline.
pub(crate) fn format_line(args: fmt::Arguments<'_>) -> String {
    let text = redact(&args.to_string());
    let mut out = String::with_capacity(text.len() + 17);
    out.push_str("kat-entrypoint: ");
    out.extend(text.chars().map(|c| if c.is_control() { ' ' } else { c }));
    out.push('\n');
    out
}

/// Writes one log line to stderr in a single write. Logging never fails the run.
pub(crate) fn line(args: fmt::Arguments<'_>) {
    let text = format_line(args);
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// `log!("...", args)`: one line to stderr, see [`line()`].
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!($($arg)*))
    };
}
pub(crate) use log;

/// A short, printable, redacted excerpt of a response body for an error message.
pub(crate) fn snippet(body: &[u8]) -> String {
    const MAX_CHARS: usize = 200;
    // Redact before truncating so that a truncated token cannot slip through.
    let text = redact(&String::from_utf8_lossy(body));
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_CHARS)
        .collect();
    if text.chars().count() > MAX_CHARS {
        out.push_str("...");
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_single_and_prefixed() {
        let line = format_line(format_args!("a\nb\r{}", 1));
        assert_eq!(line, "kat-entrypoint: a b 1\n");
    }

    #[test]
    fn snippet_truncates_and_cleans() {
        let body = "x".repeat(500);
        let s = snippet(body.as_bytes());
        assert_eq!(s.len(), 203);
        assert!(s.ends_with("..."));
    }

    /// The only test that registers a secret (it is process-wide).
    #[test]
    fn the_secret_is_redacted_even_when_a_snippet_would_cut_it() {
        let secret = "unit-test-secret-0123456789";
        set_secret(secret);
        let line = format_line(format_args!("token {secret} and again {secret}"));
        assert_eq!(
            line,
            "kat-entrypoint: token [redacted] and again [redacted]\n"
        );
        // The secret straddles the 200-character cut.
        let body = format!("{}{secret}", "x".repeat(190));
        let cut = snippet(body.as_bytes());
        assert!(!cut.contains("unit-test"), "{cut}");
        assert_eq!(
            snippet(b"  {\"detail\":\n\"nope\"}  "),
            "{\"detail\": \"nope\"}"
        );
    }
}
