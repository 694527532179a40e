//! The five execution modes, as a pure function from a plugin and its input to an execution plan:
//! which mode, the argv per command, the environment, what goes to stdin, and which files the task's
//! token must be allowed to read.
//!
//! The environment variables named here are the entrypoint's ([`kat_protocol::env`]; the whole contract is
//! `docs/entrypoint-protocol.md`).
//!
//! | mode | input | command | what runs |
//! |---|---|---|---|
//! | 1 Direct | one target | has a placeholder | the command once, placeholders substituted |
//! | 2 Standalone | none | no placeholder | the command as written |
//! | 3 Sequential | several targets | has a placeholder | one command per target, all in ONE container (`KAT_COMMANDS`) |
//! | 4 Bulk stdin | one or more targets | no placeholder | the command once, targets newline-separated on stdin (`IN_FILE`) |
//! | 5 File | input files, or `{file/<id>}` references | `{file}` or none | `{file}` gets the id (one command per file); without `{file}` the file is streamed to stdin |
//!
//! ```
//! use kat_core::plan::{plan, Mode, PlanInput, Target};
//! use kat_core::plugin::PluginDef;
//! let p = PluginDef::parse_file(r#"[{"plugin_id": "dig", "oci_image": "busybox",
//!     "oci_arguments": ["nslookup", "{hostname}"]}]"#, "plugins.json").unwrap().remove(0);
//! let two = PlanInput::Objects(vec![Target::value("a.example"), Target::value("b.example")]);
//! let plan = plan(&p, &two).unwrap();
//! assert_eq!(plan.mode, Mode::Sequential);
//! assert_eq!(plan.commands, vec![vec!["nslookup", "a.example"], vec!["nslookup", "b.example"]]);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kat_protocol::env as protocol_env;
use serde::{Deserialize, Serialize};

use crate::permission::{Action, PermissionName, Permissions, Resource, Scope};
use crate::plugin::PluginDef;
use crate::store::FileId;
use crate::task::ObjectRef;
use crate::template::Placeholder;
use crate::{Error, Result};

/// An execution mode (numbered as in RFD 0009).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Mode 1: one target, substituted.
    Direct,
    /// Mode 2: no input.
    Standalone,
    /// Mode 3: several targets, one command each, one container.
    Sequential,
    /// Mode 4: targets on stdin.
    BulkStdin,
    /// Mode 5: files.
    File,
}

impl Mode {
    /// The RFD's number.
    pub fn number(self) -> u8 {
        match self {
            Mode::Direct => 1,
            Mode::Standalone => 2,
            Mode::Sequential => 3,
            Mode::BulkStdin => 4,
            Mode::File => 5,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Mode::Direct => "direct",
            Mode::Standalone => "standalone",
            Mode::Sequential => "sequential",
            Mode::BulkStdin => "bulk stdin",
            Mode::File => "file",
        };
        write!(f, "mode {} ({name})", self.number())
    }
}

/// One target: the value placeholders receive, and the object it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// What `{hostname}` and the other placeholders become (a hostname's name, an address).
    pub value: String,
    /// The object, when the target is one.
    pub object: Option<ObjectRef>,
}

impl Target {
    /// A target that is only a value.
    pub fn value(v: impl Into<String>) -> Self {
        Target {
            value: v.into(),
            object: None,
        }
    }
}

/// What a task runs over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanInput {
    /// No input (mode 2, or mode 5 with `{file/<id>}` references).
    None,
    /// Target objects.
    Objects(Vec<Target>),
    /// Input files.
    Files(Vec<FileId>),
}

/// What goes to the command's stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stdin {
    /// Nothing.
    None,
    /// These bytes (mode 4's newline-separated targets); the engine stores them as a temporary file,
    /// sets `IN_FILE`, grants the token read access, and deletes the file when the task ends.
    Targets(String),
    /// An existing file, streamed as it is.
    File(FileId),
}

/// How to run one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionPlan {
    /// The mode.
    pub mode: Mode,
    /// The commands, in order; one except in modes 3 and 5 with several inputs.
    pub commands: Vec<Vec<String>>,
    /// The plan's environment ([`PLUGIN_ID`](kat_protocol::env::PLUGIN_ID), and
    /// [`KAT_COMMANDS`](kat_protocol::env::COMMANDS) with several commands); the engine adds the API, token,
    /// task, organization and [`IN_FILE`](kat_protocol::env::IN_FILE).
    pub env: BTreeMap<String, String>,
    /// Stdin.
    pub stdin: Stdin,
    /// Files the task's token may read: input files and `{file/<id>}` references.
    pub readable_files: BTreeSet<FileId>,
}

impl ExecutionPlan {
    /// The container's command: the first command (with several, the entrypoint runs `KAT_COMMANDS`).
    pub fn argv(&self) -> &[String] {
        self.commands.first().map_or(&[], Vec::as_slice)
    }

    /// The token's permissions for this plan (docs/decisions.md, D5): `files.add_file`, read access to
    /// exactly the plan's readable files (plus `extra_files`, such as the temporary stdin file), and the
    /// plugin's declared permissions. Declared scopes are added next to the granted ones, never replacing them
    /// (the original's plugin entries replaced the input grant).
    /// [`PermissionName::SET_SCAN_LEVEL`] is never in a task's token, even if a plugin declares it
    /// (loading refuses such a plugin; this holds for definitions that reached the catalogue otherwise).
    pub fn permissions(&self, plugin: &PluginDef, extra_files: &[FileId]) -> Permissions {
        let mut p = Permissions::new();
        p.grant(
            PermissionName::new(Action::Add, Resource::File),
            Scope::unrestricted(),
        );
        let files: BTreeSet<String> = self
            .readable_files
            .iter()
            .chain(extra_files)
            .map(|f| f.to_string())
            .collect();
        if !files.is_empty() {
            p.grant(
                PermissionName::new(Action::View, Resource::File),
                Scope::pks(files),
            );
        }
        p.merge(&plugin.permissions);
        p.remove(&PermissionName::SET_SCAN_LEVEL);
        p
    }
}

fn ensure_args(plugin: &PluginDef) -> Result<()> {
    if plugin.oci_arguments.is_empty() {
        return Err(Error::invalid(
            format!("plugin {:?}: oci_arguments", plugin.plugin_id),
            "the plugin has no command to run",
        ));
    }
    Ok(())
}

/// Plan a task of `plugin` over `input`.
///
/// # Errors
/// [`Error::Invalid`] when the input does not fit the plugin: objects for a `{file}` plugin, files for
/// an object plugin, no target for a placeholder, a stdin target with a line break, several files for a
/// plugin that reads one from stdin, or a plugin without a command.
pub fn plan(plugin: &PluginDef, input: &PlanInput) -> Result<ExecutionPlan> {
    ensure_args(plugin)?;
    let cmd = plugin.command();
    let placeholders = cmd.placeholders();
    let takes_file = placeholders.contains(&Placeholder::File);
    let takes_target = placeholders.iter().any(|p| *p != Placeholder::File);
    let mut readable: BTreeSet<FileId> = cmd.file_refs().into_iter().map(FileId).collect();
    let at = |what: &str| format!("plugin {:?}: {what}", plugin.plugin_id);
    let mut env = BTreeMap::new();
    env.insert(
        protocol_env::PLUGIN_ID.to_string(),
        plugin.plugin_id.clone(),
    );

    let (mode, commands, stdin) = match input {
        PlanInput::None | PlanInput::Objects(_) if takes_file => {
            return Err(Error::invalid(
                at("input"),
                "the plugin takes a file ({file}) but the task has none",
            ));
        }
        PlanInput::None => {
            if takes_target {
                return Err(Error::invalid(
                    at("input"),
                    format!(
                        "the plugin's arguments need a target for {} but the task has none",
                        placeholders
                            .iter()
                            .next()
                            .map_or(String::new(), ToString::to_string)
                    ),
                ));
            }
            let mode = if readable.is_empty() {
                Mode::Standalone
            } else {
                Mode::File
            };
            (mode, vec![cmd.render(None)], Stdin::None)
        }
        PlanInput::Objects(targets) if targets.is_empty() => {
            return plan(plugin, &PlanInput::None);
        }
        PlanInput::Objects(targets) if takes_target => {
            let commands: Vec<Vec<String>> =
                targets.iter().map(|t| cmd.render(Some(&t.value))).collect();
            let mode = if commands.len() == 1 {
                Mode::Direct
            } else {
                Mode::Sequential
            };
            (mode, commands, Stdin::None)
        }
        PlanInput::Objects(targets) => {
            if let Some((i, t)) = targets
                .iter()
                .enumerate()
                .find(|(_, t)| t.value.contains(['\n', '\r']))
            {
                return Err(Error::invalid(
                    at(&format!("input[{i}]")),
                    format!(
                        "target {:?} has a line break, which stdin input (one target per line) cannot carry",
                        t.value
                    ),
                ));
            }
            let lines: Vec<&str> = targets.iter().map(|t| t.value.as_str()).collect();
            (
                Mode::BulkStdin,
                vec![cmd.render(None)],
                Stdin::Targets(lines.join("\n")),
            )
        }
        PlanInput::Files(files) if files.is_empty() => {
            return plan(plugin, &PlanInput::None);
        }
        PlanInput::Files(_) if takes_target => {
            return Err(Error::invalid(
                at("input"),
                "the plugin takes objects (its arguments have a target placeholder) but the task has files",
            ));
        }
        PlanInput::Files(files) => {
            readable.extend(files.iter().copied());
            if takes_file {
                let commands = files
                    .iter()
                    .map(|f| cmd.render(Some(&f.to_string())))
                    .collect();
                (Mode::File, commands, Stdin::None)
            } else if files.len() == 1 {
                (Mode::File, vec![cmd.render(None)], Stdin::File(files[0]))
            } else {
                return Err(Error::invalid(
                    at("input"),
                    format!(
                        "{} files for a plugin that reads one file from stdin; give one file per task",
                        files.len()
                    ),
                ));
            }
        }
    };
    if commands.len() > 1 {
        env.insert(
            protocol_env::COMMANDS.to_string(),
            serde_json::to_string(&commands)
                .map_err(|e| Error::backend_source("plan", e, false))?,
        );
    }
    Ok(ExecutionPlan {
        mode,
        commands,
        env,
        stdin,
        readable_files: readable,
    })
}

/// How many input files one task of `plugin` takes: its batch size, as for objects, when its command
/// has `{file}` (mode 5 runs one command per file), else one (the file goes to stdin). `None`: no limit.
///
/// ```
/// use kat_core::plan::files_per_task;
/// use kat_core::plugin::PluginDef;
/// let defs = PluginDef::parse_file(r#"[
///   {"plugin_id": "parse", "oci_image": "i", "consumes": ["file:nmap"], "oci_arguments": ["p", "{file}"], "batch_size": 20},
///   {"plugin_id": "stdin", "oci_image": "i", "consumes": ["file:nmap"], "oci_arguments": ["cat"]}
/// ]"#, "p.json").unwrap();
/// assert_eq!(files_per_task(&defs[0], 50), Some(20));
/// assert_eq!(files_per_task(&defs[1], 50), Some(1));
/// ```
pub fn files_per_task(plugin: &PluginDef, default_batch_size: u32) -> Option<u32> {
    if plugin.command().placeholders().contains(&Placeholder::File) {
        plugin.effective_batch_size(default_batch_size)
    } else {
        Some(1)
    }
}

/// Split inputs into batches of at most `size` (all in one batch when `None`). An empty input is one
/// empty batch (one standalone task).
///
/// ```
/// use kat_core::plan::batches;
/// let b = batches(&(0..120).collect::<Vec<_>>(), Some(50));
/// assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![50, 50, 20]);
/// ```
pub fn batches<T: Clone>(items: &[T], size: Option<u32>) -> Vec<Vec<T>> {
    match size {
        _ if items.is_empty() => vec![Vec::new()],
        Some(n) if n > 0 => items.chunks(n as usize).map(<[T]>::to_vec).collect(),
        _ => vec![items.to_vec()],
    }
}

#[cfg(test)]
mod tests;
