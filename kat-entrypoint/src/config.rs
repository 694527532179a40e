//! The run's configuration, read and validated from argv and the environment before anything else happens.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use kat_protocol::env;

use crate::http::{Url, UrlError};
use crate::placeholder;

/// Where the command's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Output {
    /// Spool stdout and stderr and upload them to this URL per the protocol.
    Upload(Url),
    /// `UPLOAD_URL=/dev/null`: the command writes straight to our stdout and stderr; nothing is uploaded.
    PassThrough,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// `OPENKAT_API` (needed for downloads and for the default upload URL).
    pub(crate) api: Option<Url>,
    /// `OPENKAT_TOKEN` (required whenever an HTTP request is made).
    pub(crate) token: Option<String>,
    /// `PLUGIN_ID` (required in upload mode: it is the uploaded file's `type`).
    pub(crate) plugin_id: Option<String>,
    /// `OPENKAT_TASK_ID`, for log lines only (the server attributes uploads from the token).
    pub(crate) task_id: Option<String>,
    /// `IN_FILE`: id of the file streamed to every command's stdin.
    pub(crate) in_file: Option<String>,
    /// Where output goes.
    pub(crate) output: Output,
    /// The commands, run one after another (one unless `KAT_COMMANDS` is set). None empty; never
    /// empty unless `commands_file` is set (then the runner reads them from that file).
    pub(crate) commands: Vec<Vec<OsString>>,
    /// `KAT_COMMANDS_FILE`: id of a stored file holding the commands in `KAT_COMMANDS`' form.
    pub(crate) commands_file: Option<String>,
    /// `KAT_OUTPUT_LIMIT`: most bytes accepted on stdout, and on stderr, per command.
    pub(crate) output_limit: u64,
    /// `KAT_SPOOL_DIR`: where the work directory is created.
    pub(crate) spool_dir: PathBuf,
    /// Whether `KAT_COMMANDS` (or `KAT_COMMANDS_FILE`) replaced a non-empty argv (for a log line).
    pub(crate) ignored_argv: usize,
}

/// A configuration problem (exit code 121).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConfigError {
    /// No command at all.
    #[error(
        "no command to run: the container's command (argv) is empty and neither KAT_COMMANDS nor KAT_COMMANDS_FILE is set"
    )]
    NoCommand,
    /// A required variable is missing or empty.
    #[error("{name} is not set ({why})")]
    Missing {
        /// The variable.
        name: &'static str,
        /// Why it is needed.
        why: &'static str,
    },
    /// A URL variable could not be used.
    #[error("{name} {source}: {value:?}")]
    BadUrl {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        source: UrlError,
    },
    /// Any other invalid value.
    #[error("{name} {problem}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        problem: String,
    },
}

fn text(name: &'static str, value: Option<OsString>) -> Result<Option<String>, ConfigError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v.into_string().map(Some).map_err(|_| ConfigError::Invalid {
            name,
            problem: "is not valid UTF-8".into(),
        }),
    }
}

fn no_control(name: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.chars().any(char::is_control) {
        return Err(ConfigError::Invalid {
            name,
            problem: "contains control characters".into(),
        });
    }
    Ok(())
}

/// Parses `KAT_COMMANDS`: a non-empty JSON array of non-empty arrays of strings without NUL.
pub(crate) fn parse_commands(json: &str) -> Result<Vec<Vec<OsString>>, ConfigError> {
    parse_commands_of(env::COMMANDS, json)
}

/// As [`parse_commands`], naming `name` (the variable the JSON came through) in errors.
pub(crate) fn parse_commands_of(
    name: &'static str,
    json: &str,
) -> Result<Vec<Vec<OsString>>, ConfigError> {
    let invalid = |problem: String| ConfigError::Invalid { name, problem };
    let commands: Vec<Vec<String>> = serde_json::from_str(json).map_err(|e| {
        invalid(format!(
            "is not a JSON array of argv arrays (of strings): {e}"
        ))
    })?;
    if commands.is_empty() {
        return Err(invalid("is an empty array".into()));
    }
    commands
        .into_iter()
        .enumerate()
        .map(|(i, argv)| {
            if argv.is_empty() {
                return Err(invalid(format!("command {} is an empty array", i + 1)));
            }
            if argv.iter().any(|a| a.contains('\0')) {
                return Err(invalid(format!("command {} contains a NUL byte", i + 1)));
            }
            Ok(argv.into_iter().map(OsString::from).collect())
        })
        .collect()
}

impl Config {
    /// Reads the configuration from `args` (argv without argv\[0\]) and the variables given by `var`.
    pub(crate) fn from_parts(
        args: Vec<OsString>,
        var: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Config, ConfigError> {
        let api = match text(env::API, var(env::API))? {
            None => None,
            Some(value) => {
                let url = Url::parse(&value).map_err(|source| ConfigError::BadUrl {
                    name: env::API,
                    value: value.clone(),
                    source,
                })?;
                if url.has_query() {
                    return Err(ConfigError::Invalid {
                        name: env::API,
                        problem: format!("must not have a query string: {value:?}"),
                    });
                }
                Some(url)
            }
        };
        let token = text(env::TOKEN, var(env::TOKEN))?;
        if let Some(token) = &token {
            no_control(env::TOKEN, token)?;
        }
        let plugin_id = text(env::PLUGIN_ID, var(env::PLUGIN_ID))?;
        if let Some(id) = &plugin_id {
            no_control(env::PLUGIN_ID, id)?;
        }
        let task_id = text(env::TASK_ID, var(env::TASK_ID))?;
        if let Some(id) = &task_id {
            no_control(env::TASK_ID, id)?;
        }
        let in_file = text(env::IN_FILE, var(env::IN_FILE))?;
        if let Some(id) = &in_file
            && !id.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ConfigError::Invalid {
                name: env::IN_FILE,
                problem: format!("must be a file id (digits only), got {id:?}"),
            });
        }

        let commands_file = text(env::COMMANDS_FILE, var(env::COMMANDS_FILE))?;
        if let Some(id) = &commands_file
            && !id.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ConfigError::Invalid {
                name: env::COMMANDS_FILE,
                problem: format!("must be a file id (digits only), got {id:?}"),
            });
        }
        let (commands, ignored_argv) =
            match (text(env::COMMANDS, var(env::COMMANDS))?, &commands_file) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::Invalid {
                        name: env::COMMANDS_FILE,
                        problem: "is set together with KAT_COMMANDS; set one of them".into(),
                    });
                }
                (Some(json), None) => (parse_commands(&json)?, args.len()),
                (None, Some(_)) => (Vec::new(), args.len()),
                (None, None) if args.is_empty() => return Err(ConfigError::NoCommand),
                (None, None) => (vec![args], 0),
            };

        let output = match text(env::UPLOAD_URL, var(env::UPLOAD_URL))? {
            Some(v) if v == env::PASS_THROUGH => Output::PassThrough,
            Some(v) => Output::Upload(Url::parse(&v).map_err(|source| ConfigError::BadUrl {
                name: env::UPLOAD_URL,
                value: v.clone(),
                source,
            })?),
            None => match &api {
                Some(api) => Output::Upload(api.join("/file/")),
                None => {
                    return Err(ConfigError::Missing {
                        name: env::API,
                        why: "the default UPLOAD_URL is {OPENKAT_API}/file/",
                    });
                }
            },
        };

        let downloads = in_file.is_some()
            || commands_file.is_some()
            || !placeholder::file_ids(commands.iter().flatten().map(|a| a.as_bytes())).is_empty();
        if downloads && api.is_none() {
            return Err(ConfigError::Missing {
                name: env::API,
                why: "IN_FILE, KAT_COMMANDS_FILE or a {file/<id>} argument needs it to download files",
            });
        }
        let uploads = matches!(output, Output::Upload(_));
        if (downloads || uploads) && token.is_none() {
            return Err(ConfigError::Missing {
                name: env::TOKEN,
                why: "every API request is authenticated with it",
            });
        }
        if uploads && plugin_id.is_none() {
            return Err(ConfigError::Missing {
                name: env::PLUGIN_ID,
                why: "it is the type of the uploaded output",
            });
        }

        let output_limit = match text(env::OUTPUT_LIMIT, var(env::OUTPUT_LIMIT))? {
            None => env::DEFAULT_OUTPUT_LIMIT,
            Some(v) => v.parse::<u64>().map_err(|_| ConfigError::Invalid {
                name: env::OUTPUT_LIMIT,
                problem: format!("must be a number of bytes, got {v:?}"),
            })?,
        };
        let spool_dir = match var(env::SPOOL_DIR) {
            Some(dir) if !dir.is_empty() => PathBuf::from(OsString::from_vec(dir.into_vec())),
            _ => PathBuf::from(env::DEFAULT_SPOOL_DIR),
        };

        Ok(Config {
            api,
            token,
            plugin_id,
            task_id,
            in_file,
            output,
            commands,
            commands_file,
            output_limit,
            spool_dir,
            ignored_argv,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(*v)))
            .collect();
        Config::from_parts(args.iter().map(OsString::from).collect(), |k| {
            vars.get(k).cloned()
        })
    }

    const BASE: [(&str, &str); 3] = [
        ("OPENKAT_API", "http://api:8000/api/v1/"),
        ("OPENKAT_TOKEN", "tok"),
        ("PLUGIN_ID", "dns"),
    ];

    #[test]
    fn defaults() {
        let c = config(&["echo", "hi"], &BASE).expect("valid");
        assert_eq!(
            c.output,
            Output::Upload(Url::parse("http://api:8000/api/v1/file/").expect("url"))
        );
        assert_eq!(c.output_limit, 4 * 1024 * 1024 * 1024);
        assert_eq!(c.spool_dir, PathBuf::from("/tmp"));
        assert_eq!(
            c.commands,
            vec![vec![OsString::from("echo"), OsString::from("hi")]]
        );
    }

    #[test]
    fn a_commands_file_is_an_id_needs_the_api_and_excludes_kat_commands() {
        let mut vars = BASE.to_vec();
        vars.push(("KAT_COMMANDS_FILE", "42"));
        let c = config(&["ignored"], &vars).expect("valid");
        assert_eq!(c.commands_file.as_deref(), Some("42"));
        assert!(c.commands.is_empty());
        assert_eq!(c.ignored_argv, 1);
        let c = config(&[], &vars).expect("no argv needed");
        assert_eq!(c.commands_file.as_deref(), Some("42"));
        let mut bad = BASE.to_vec();
        bad.push(("KAT_COMMANDS_FILE", "4x"));
        assert!(matches!(
            config(&["a"], &bad),
            Err(ConfigError::Invalid {
                name: "KAT_COMMANDS_FILE",
                ..
            })
        ));
        let mut both = vars.clone();
        both.push(("KAT_COMMANDS", r#"[["a"]]"#));
        let e = config(&["a"], &both).expect_err("both");
        assert!(e.to_string().contains("set one of them"), "{e}");
        let no_api: Vec<(&str, &str)> = vars
            .iter()
            .copied()
            .filter(|(k, _)| *k != "OPENKAT_API")
            .chain([("UPLOAD_URL", "/dev/null")])
            .collect();
        assert!(matches!(
            config(&["a"], &no_api),
            Err(ConfigError::Missing {
                name: "OPENKAT_API",
                ..
            })
        ));
    }

    #[test]
    fn kat_commands_replace_argv() {
        let mut vars = BASE.to_vec();
        vars.push(("KAT_COMMANDS", r#"[["a","x y"],["b"]]"#));
        let c = config(&["ignored"], &vars).expect("valid");
        assert_eq!(c.commands.len(), 2);
        assert_eq!(c.commands[0][1], OsString::from("x y"));
        assert_eq!(c.ignored_argv, 1);
    }

    #[test]
    fn bad_kat_commands() {
        for bad in [
            "[]",
            "[[]]",
            "[\"a\"]",
            "{}",
            "[[1]]",
            "[[\"a\\u0000\"]]",
            "nope",
        ] {
            let mut vars = BASE.to_vec();
            vars.push(("KAT_COMMANDS", bad));
            let err = config(&[], &vars).expect_err(bad);
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        name: "KAT_COMMANDS",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn pass_through_needs_no_api() {
        let c = config(&["true"], &[("UPLOAD_URL", "/dev/null")]).expect("valid");
        assert_eq!(c.output, Output::PassThrough);
        let err = config(&["cat", "{file/1}"], &[("UPLOAD_URL", "/dev/null")]).expect_err("api");
        assert!(matches!(
            err,
            ConfigError::Missing {
                name: "OPENKAT_API",
                ..
            }
        ));
    }

    #[test]
    fn errors() {
        assert_eq!(
            config(&[], &BASE).expect_err("argv"),
            ConfigError::NoCommand
        );
        let mut vars = BASE.to_vec();
        vars[0] = ("OPENKAT_API", "localhost:8000");
        assert!(matches!(
            config(&["x"], &vars).expect_err("url"),
            ConfigError::BadUrl {
                name: "OPENKAT_API",
                source: UrlError::Scheme,
                ..
            }
        ));
        let missing = |var: &str| {
            let vars: Vec<_> = BASE.iter().copied().filter(|(k, _)| *k != var).collect();
            config(&["x"], &vars).expect_err(var)
        };
        assert!(matches!(
            missing("OPENKAT_TOKEN"),
            ConfigError::Missing {
                name: "OPENKAT_TOKEN",
                ..
            }
        ));
        assert!(matches!(
            missing("PLUGIN_ID"),
            ConfigError::Missing {
                name: "PLUGIN_ID",
                ..
            }
        ));
        assert!(matches!(
            missing("OPENKAT_API"),
            ConfigError::Missing {
                name: "OPENKAT_API",
                ..
            }
        ));
        for (var, value) in [
            ("IN_FILE", "12a"),
            ("KAT_OUTPUT_LIMIT", "1G"),
            ("PLUGIN_ID", "a\r\nb"),
            ("OPENKAT_TOKEN", "a\nb"),
        ] {
            let mut vars = BASE.to_vec();
            vars.push((var, value));
            vars.retain(|(k, v)| *k != var || *v == value);
            assert!(
                matches!(
                    config(&["x"], &vars).expect_err(var),
                    ConfigError::Invalid { .. }
                ),
                "{var}"
            );
        }
    }
}
