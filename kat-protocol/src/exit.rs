//! The entrypoint's exit codes (docs/entrypoint-protocol.md §5).
//!
//! The entrypoint exits with the command's own code (mode 3: the first failing command's), or with one of
//! the codes below. A command can itself exit with one of these numbers; the entrypoint's log line tells them
//! apart. With several outcomes in one run the code is chosen in this order: [`UPLOAD`] (an output was lost),
//! 128+N (a forwarded signal skipped commands), [`OUTPUT_LIMIT`], the first failing command's code (including
//! [`NOT_EXECUTABLE`] and [`NOT_FOUND`]), 0. [`IO`], [`CONFIG`] and [`DOWNLOAD`] end the run at once.
//!
//! ```
//! use kat_protocol::exit;
//! assert_eq!(exit::CONFIG, 121);
//! assert_eq!(exit::describe(123), "exit 123: the output upload failed after retries");
//! assert_eq!(exit::describe(143), "exit 143: killed by signal 15");
//! assert_eq!(exit::describe(2), "exit 2");
//! ```

/// A local I/O error: work directory, spool file, disk full, waiting for the command, reading `IN_FILE`.
pub const IO: i32 = 120;

/// A configuration error: a missing or invalid variable, an empty command, a bad `KAT_COMMANDS` or
/// commands file (`KAT_COMMANDS_FILE`).
pub const CONFIG: i32 = 121;

/// An input file (`{file/<id>}` or `IN_FILE`) could not be downloaded; no command was started.
pub const DOWNLOAD: i32 = 122;

/// An upload failed after the retries: the output is lost, whatever the command's code.
pub const UPLOAD: i32 = 123;

/// stdout or stderr exceeded `KAT_OUTPUT_LIMIT`: the command was killed and nothing of it uploaded.
pub const OUTPUT_LIMIT: i32 = 124;

/// The command exists but could not be executed (permission denied, bad format).
pub const NOT_EXECUTABLE: i32 = 126;

/// The command was not found.
pub const NOT_FOUND: i32 = 127;

/// A command killed by signal N, or a run stopped by a forwarded signal N, exits `SIGNAL_BASE + N`
/// (SIGKILL: 137, SIGTERM: 143).
pub const SIGNAL_BASE: i32 = 128;

/// What one of the codes above means, in words for a task's failure reason; `None` for any other code.
///
/// ```
/// assert_eq!(kat_protocol::exit::meaning(121), Some("the entrypoint's configuration was invalid"));
/// assert_eq!(kat_protocol::exit::meaning(1), None);
/// ```
pub fn meaning(code: i64) -> Option<&'static str> {
    Some(match i32::try_from(code).ok()? {
        IO => "the entrypoint hit a local I/O error",
        CONFIG => "the entrypoint's configuration was invalid",
        DOWNLOAD => "an input file could not be downloaded",
        UPLOAD => "the output upload failed after retries",
        OUTPUT_LIMIT => "the output exceeded its limit",
        NOT_EXECUTABLE => "the command could not be executed",
        NOT_FOUND => "the command was not found in the image",
        _ => return None,
    })
}

/// The signal a code above [`SIGNAL_BASE`] stands for (129 to 159: signals 1 to 31); `None` otherwise.
///
/// ```
/// assert_eq!(kat_protocol::exit::signal(137), Some(9));
/// assert_eq!(kat_protocol::exit::signal(128), None);
/// ```
pub fn signal(code: i64) -> Option<i64> {
    let base = i64::from(SIGNAL_BASE);
    (code > base && code < base + 32).then(|| code - base)
}

/// An exit code in words: `exit N: <meaning>` for the codes above, `exit N: killed by signal S` for
/// 128+S, else `exit N`.
pub fn describe(code: i64) -> String {
    match (meaning(code), signal(code)) {
        (Some(m), _) => format!("exit {code}: {m}"),
        (None, Some(s)) => format!("exit {code}: killed by signal {s}"),
        (None, None) => format!("exit {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_numbers() {
        assert_eq!(
            [
                IO,
                CONFIG,
                DOWNLOAD,
                UPLOAD,
                OUTPUT_LIMIT,
                NOT_EXECUTABLE,
                NOT_FOUND
            ],
            [120, 121, 122, 123, 124, 126, 127]
        );
    }

    #[test]
    fn every_code_has_words() {
        for code in [120, 121, 122, 123, 124, 126, 127] {
            assert!(meaning(code).is_some(), "{code}");
            assert!(describe(code).starts_with(&format!("exit {code}: ")));
        }
        for code in [0, 1, 119, 125, 128, 255, -1, i64::MAX] {
            assert_eq!(meaning(code), None, "{code}");
        }
        assert_eq!(signal(159), Some(31));
        assert_eq!(signal(160), None);
        assert_eq!(describe(160), "exit 160");
    }
}
