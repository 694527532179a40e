//! The environment of a plugin container: the variables the engine sets and the entrypoint reads
//! (docs/entrypoint-protocol.md §1). The command inherits all of them, so a plugin can read them too.
//!
//! An empty variable counts as unset.
//!
//! ```
//! use kat_protocol::env;
//! // What the engine sets for a task of plugin `dns`:
//! let vars = [
//!     (env::API, "http://127.0.0.1:8000/api/v1"),
//!     (env::TOKEN, "<jwt>"),
//!     (env::TASK_ID, "7f9c..."),
//!     (env::ORGANIZATION_CODE, "acme"),
//!     (env::PLUGIN_ID, "dns"),
//! ];
//! assert_eq!(vars[0].0, "OPENKAT_API");
//! ```

/// The API's base URL, `http://host[:port]/path` (for example `http://127.0.0.1:8000/api/v1`). Downloads are
/// `GET {OPENKAT_API}/file/<id>/download/`; the default upload URL is `{OPENKAT_API}/file/`.
pub const API: &str = "OPENKAT_API";

/// The task's token, sent as `Authorization: Token <jwt>` on every request. Never logged.
pub const TOKEN: &str = "OPENKAT_TOKEN";

/// The task's id. The entrypoint only logs it: the API attributes uploads from the token.
pub const TASK_ID: &str = "OPENKAT_TASK_ID";

/// The code of the task's organization (for plugins; the entrypoint does not read it).
pub const ORGANIZATION_CODE: &str = "OPENKAT_ORGANIZATION_CODE";

/// The plugin's id: the `type` of the uploaded stdout file. Required when the entrypoint uploads.
pub const PLUGIN_ID: &str = "PLUGIN_ID";

/// The id (digits) of a file the entrypoint downloads and streams to every command's stdin (mode 4, and
/// mode 5 without `{file}`).
pub const IN_FILE: &str = "IN_FILE";

/// Mode 3's commands: a JSON array of argv arrays (`[["dig","a.example"],["dig","b.example"]]`). When set
/// it replaces the container's argv and the commands run one after another in one container.
pub const COMMANDS: &str = "KAT_COMMANDS";

/// The id (digits) of a stored file holding mode 3's commands in the form of [`COMMANDS`]: the
/// entrypoint downloads it (with the task's token, like [`IN_FILE`]) before anything runs. The engine
/// uses it instead of [`COMMANDS`] when the commands' JSON is longer than [`COMMANDS_ENV_LIMIT`], because
/// Linux refuses one environment string over 128 KiB (`E2BIG`). At most one of the two may be set.
pub const COMMANDS_FILE: &str = "KAT_COMMANDS_FILE";

/// The longest [`COMMANDS`] value the engine puts in the environment, in bytes (a quarter of Linux's
/// 128 KiB limit for one environment string, leaving room for the rest of the environment and argv).
pub const COMMANDS_ENV_LIMIT: usize = 32 * 1024;

/// The largest commands file the entrypoint reads ([`COMMANDS_FILE`]), in bytes.
pub const COMMANDS_FILE_LIMIT: u64 = 256 * 1024 * 1024;

/// Where outputs are POSTed, used exactly as given. Default `{OPENKAT_API}/file/`;
/// [`PASS_THROUGH`] selects pass-through mode.
pub const UPLOAD_URL: &str = "UPLOAD_URL";

/// The [`UPLOAD_URL`] value that selects pass-through mode: the command writes straight to the entrypoint's
/// stdout and stderr and nothing is uploaded.
pub const PASS_THROUGH: &str = "/dev/null";

/// Most bytes accepted on stdout, and separately on stderr, per command (default
/// [`DEFAULT_OUTPUT_LIMIT`]). Beyond it the command is killed and the run exits
/// [`crate::exit::OUTPUT_LIMIT`].
pub const OUTPUT_LIMIT: &str = "KAT_OUTPUT_LIMIT";

/// The default of [`OUTPUT_LIMIT`]: 4 GiB per stream and command.
pub const DEFAULT_OUTPUT_LIMIT: u64 = 4 << 30;

/// Where the entrypoint makes its work directory (downloads, spooled output); default
/// [`DEFAULT_SPOOL_DIR`], created if missing.
pub const SPOOL_DIR: &str = "KAT_SPOOL_DIR";

/// The default of [`SPOOL_DIR`].
pub const DEFAULT_SPOOL_DIR: &str = "/tmp";

/// Every variable of the protocol, in the order of docs/entrypoint-protocol.md §1.
pub const ALL: [&str; 11] = [
    API,
    TOKEN,
    PLUGIN_ID,
    TASK_ID,
    ORGANIZATION_CODE,
    IN_FILE,
    UPLOAD_URL,
    COMMANDS,
    COMMANDS_FILE,
    OUTPUT_LIMIT,
    SPOOL_DIR,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_plain() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(
                a.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{a}"
            );
            assert!(!ALL[i + 1..].contains(a), "{a} twice");
        }
        assert_eq!(DEFAULT_OUTPUT_LIMIT, 4 * 1024 * 1024 * 1024);
    }
}
