//! Plugin definitions: every field of the manual, loaded from one or more JSON files (`plugins.json`,
//! `nuclei_plugins.json`), validated with errors that name the file, the plugin and the field, and
//! synced into a catalogue idempotently (changed plugins updated, removed ones disabled, never deleted).
//!
//! ```
//! use kat_core::plugin::PluginDef;
//! let defs = PluginDef::parse_file(r#"[{
//!     "plugin_id": "dns", "name": "DNS", "scan_level": 1, "consumes": ["type:hostname"],
//!     "oci_image": "kat-plugins:latest", "oci_arguments": ["kat-plugins", "dns", "{hostname}"],
//!     "permissions": {"objects.add_dnsarecord": {}}
//! }]"#, "plugins.json").unwrap();
//! assert_eq!(defs[0].plugin_id, "dns");
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::object::{ObjectType, ScanLevel};
use crate::permission::{PermissionName, Permissions};
use crate::policy::Policy;
use crate::schedule::Interval;
use crate::template::{CommandTemplate, Placeholder};
use crate::{Error, Result};

/// The batch size when a plugin sets none (the original's `BATCH_SIZE`).
pub const DEFAULT_BATCH_SIZE: u32 = 50;

/// What a plugin takes as input.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Consumes {
    /// Objects of a type (`type:hostname`).
    Type(ObjectType),
    /// Files of a type, usually another plugin's output (`file:nmap`).
    File(String),
}

impl FromStr for Consumes {
    type Err = Error;
    /// Parse by prefix (`type:` or `file:`), not by stripping characters as the original did
    /// (`"file:ipscan".lstrip("file:")` is `"pscan"`).
    fn from_str(s: &str) -> Result<Self> {
        if let Some(t) = s.strip_prefix("type:") {
            let ty: ObjectType = t
                .parse()
                .map_err(|_| Error::invalid("", format!("{s:?}: unknown object type {t:?}")))?;
            if !matches!(
                ty,
                ObjectType::Hostname | ObjectType::IpAddress | ObjectType::Url
            ) {
                return Err(Error::invalid(
                    "",
                    format!(
                        "{s:?}: only hostname, ipaddress and url objects can be plugin targets"
                    ),
                ));
            }
            Ok(Consumes::Type(ty))
        } else if let Some(f) = s.strip_prefix("file:") {
            check_file_type(f).map_err(|e| Error::invalid("", format!("{s:?}: {e}")))?;
            Ok(Consumes::File(f.to_string()))
        } else {
            Err(Error::invalid(
                "",
                format!("{s:?} must start with \"type:\" or \"file:\""),
            ))
        }
    }
}

impl fmt::Display for Consumes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Consumes::Type(t) => write!(f, "type:{t}"),
            Consumes::File(t) => write!(f, "file:{t}"),
        }
    }
}

impl Serialize for Consumes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Consumes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Check a file type (`nmap`, `error`, `nuclei-tls-version`): 1 to 128 characters of letters, digits,
/// `.`, `_`, `:` and `-`.
///
/// # Errors
/// A message saying what is wrong.
pub fn check_file_type(t: &str) -> std::result::Result<(), String> {
    if t.is_empty() || t.len() > 128 {
        return Err("a file type is 1 to 128 characters".into());
    }
    match t
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        Some(c) => Err(format!("character {c:?} is not allowed in a file type")),
        None => Ok(()),
    }
}

pub(crate) fn check_plugin_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!("plugin_id {id:?} must be 1 to 64 characters"));
    }
    let mut chars = id.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !first_ok
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "plugin_id {id:?} must be lower-case letters, digits, '-', '_' and '.', starting with a letter or digit"
        ));
    }
    Ok(())
}

/// One plugin, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginDef {
    /// Unique id (`dns`).
    pub plugin_id: String,
    /// Display name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The minimum scan level of its targets.
    pub scan_level: ScanLevel,
    /// Declared inputs.
    pub consumes: Vec<Consumes>,
    /// The image.
    pub oci_image: String,
    /// The command, with placeholders.
    pub oci_arguments: Vec<String>,
    /// What its token may do besides uploading files and reading its inputs.
    pub permissions: Permissions,
    /// How many targets one task takes: `None` for the global default, `Some(0)` for no batching.
    pub batch_size: Option<u32>,
    /// How often a new schedule of it runs by default.
    pub recurrences: Option<Interval>,
    /// The user its container runs as (kat-rs extension; default: nobody). Any other user must be
    /// granted by the operator's [`Policy`].
    pub user: Option<String>,
    /// Capabilities added to its container (kat-rs extension; default: none), each granted by the
    /// operator's [`Policy`].
    pub cap_add: Vec<String>,
    /// Paths inside its container it needs writable (kat-rs extension; default: none besides `/tmp`),
    /// each an empty tmpfs, granted by the operator's [`Policy`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writable_paths: Vec<String>,
    /// Whether a task of it may be retried after a crash (kat-rs extension; default false).
    pub idempotent: bool,
    /// Its timeout in seconds (kat-rs extension; default `PLUGIN_TIMEOUT`).
    pub timeout_seconds: Option<u64>,
}

const FIELDS: [&str; 15] = [
    "plugin_id",
    "name",
    "description",
    "scan_level",
    "consumes",
    "oci_image",
    "oci_arguments",
    "permissions",
    "batch_size",
    "recurrences",
    "user",
    "cap_add",
    "writable_paths",
    "idempotent",
    "timeout_seconds",
];

impl PluginDef {
    /// The parsed command.
    pub fn command(&self) -> CommandTemplate {
        // Validated when the plugin was loaded; a definition built by hand that does not parse has
        // an empty template and is refused by the planner.
        CommandTemplate::parse(&self.oci_arguments).unwrap_or_default()
    }

    /// The object types it takes: its `type:` consumes plus those implied by its placeholders
    /// (`{hostname}` and `{mail_server}` take hostnames, `{ipaddress}` addresses), as the original
    /// derives them.
    pub fn consumed_types(&self) -> BTreeSet<ObjectType> {
        let mut out: BTreeSet<ObjectType> = self
            .consumes
            .iter()
            .filter_map(|c| match c {
                Consumes::Type(t) => Some(*t),
                Consumes::File(_) => None,
            })
            .collect();
        out.extend(
            self.command()
                .placeholders()
                .iter()
                .filter_map(|p| p.object_type()),
        );
        out
    }

    /// The file types it takes.
    pub fn consumed_files(&self) -> BTreeSet<&str> {
        self.consumes
            .iter()
            .filter_map(|c| match c {
                Consumes::File(t) => Some(t.as_str()),
                Consumes::Type(_) => None,
            })
            .collect()
    }

    /// Its batch size, falling back to `default`; `None` means no batching.
    pub fn effective_batch_size(&self, default: u32) -> Option<u32> {
        match self.batch_size {
            Some(0) => None,
            Some(n) => Some(n),
            None if default == 0 => None,
            None => Some(default),
        }
    }

    /// Validate one plugin from its JSON form; `at` names the file and index in errors.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `at`, the plugin and the field.
    pub fn from_json(v: &Value, at: &str) -> Result<PluginDef> {
        let Value::Object(m) = v else {
            return Err(Error::invalid(at, "a plugin must be a JSON object"));
        };
        let id = match m.get("plugin_id") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(Error::invalid(
                    format!("{at}: plugin_id"),
                    "must be a string",
                ));
            }
            None => {
                return Err(Error::invalid(
                    format!("{at}: plugin_id"),
                    "this field is required",
                ));
            }
        };
        let at = format!("{at}: plugin {id:?}");
        let field_err = |field: &str, msg: String| Error::invalid(format!("{at}: {field}"), msg);
        check_plugin_id(&id).map_err(|m| field_err("plugin_id", m))?;
        if let Some(unknown) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(field_err(
                unknown,
                format!("unknown field; the fields are {}", FIELDS.join(", ")),
            ));
        }
        let f = Reader { m, at: &at };
        let name = f.opt_str("name")?.unwrap_or_else(|| id.clone());
        let description = f.opt_str("description")?.unwrap_or_default();
        let scan_level = match f.opt_u64("scan_level", 0, 4)? {
            Some(l) => {
                ScanLevel::new(l as u8).map_err(|e| field_err("scan_level", e.to_string()))?
            }
            None => ScanLevel::new(1).map_err(|e| field_err("scan_level", e.to_string()))?,
        };
        let consumes_raw = f.opt_str_list("consumes")?.unwrap_or_default();
        let mut consumes = Vec::new();
        for (i, c) in consumes_raw.iter().enumerate() {
            let parsed: Consumes = c
                .parse()
                .map_err(|e: Error| field_err(&format!("consumes[{i}]"), error_message(e)))?;
            if !consumes.contains(&parsed) {
                consumes.push(parsed);
            }
        }
        let oci_image = f
            .opt_str("oci_image")?
            .ok_or_else(|| field_err("oci_image", "this field is required".into()))?;
        if oci_image.trim().is_empty() || oci_image.chars().any(char::is_whitespace) {
            return Err(field_err(
                "oci_image",
                format!("{oci_image:?} is not an image reference"),
            ));
        }
        let oci_arguments = f.opt_str_list("oci_arguments")?.unwrap_or_default();
        let command = CommandTemplate::parse(&oci_arguments).map_err(|e| match e {
            Error::Invalid { at: idx, message } => {
                field_err(&format!("oci_arguments{idx}"), message)
            }
            other => other,
        })?;
        let permissions = match m.get("permissions") {
            None | Some(Value::Null) => Permissions::new(),
            Some(v) => Permissions::from_json(v, &format!("{at}: permissions"))?,
        };
        if permissions.has(&PermissionName::SET_SCAN_LEVEL) {
            return Err(field_err(
                &format!("permissions.{}", PermissionName::SET_SCAN_LEVEL),
                "a plugin may not declare the permission to change scan levels; only operators hold it".into(),
            ));
        }
        let batch_size = f.opt_u64("batch_size", 0, 100_000)?.map(|n| n as u32);
        let recurrences = f
            .opt_str("recurrences")?
            .map(|s| {
                s.parse::<Interval>()
                    .map_err(|e| field_err("recurrences", error_message(e)))
            })
            .transpose()?;
        let user = f.opt_str("user")?;
        let cap_add = f.opt_str_list("cap_add")?.unwrap_or_default();
        for (i, c) in cap_add.iter().enumerate() {
            if crate::policy::capability_name(c).is_none() {
                return Err(field_err(
                    &format!("cap_add[{i}]"),
                    format!("{c:?} is not a capability name like NET_RAW"),
                ));
            }
        }
        let writable_paths = f.opt_str_list("writable_paths")?.unwrap_or_default();
        for (i, p) in writable_paths.iter().enumerate() {
            crate::policy::check_writable_path(p)
                .map_err(|m| field_err(&format!("writable_paths[{i}]"), m))?;
        }
        let idempotent = f.opt_bool("idempotent")?.unwrap_or(false);
        let timeout_seconds = f.opt_u64("timeout_seconds", 1, 7 * 86_400)?;

        // Cross-field rules.
        let placeholders = command.placeholders();
        if placeholders.contains(&Placeholder::File)
            && !consumes.iter().any(|c| matches!(c, Consumes::File(_)))
        {
            return Err(field_err(
                "consumes",
                "oci_arguments use {file} but the plugin consumes no \"file:<type>\", so it would never get a file".into(),
            ));
        }
        let target_placeholders: Vec<_> = placeholders
            .iter()
            .filter(|p| **p != Placeholder::File)
            .collect();
        if placeholders.contains(&Placeholder::File) && !target_placeholders.is_empty() {
            return Err(field_err(
                "oci_arguments",
                format!(
                    "{{file}} cannot be combined with {}: a task has either objects or a file as input",
                    target_placeholders[0]
                ),
            ));
        }
        Ok(PluginDef {
            plugin_id: id,
            name,
            description,
            scan_level,
            consumes,
            oci_image,
            oci_arguments,
            permissions,
            batch_size,
            recurrences,
            user,
            cap_add,
            writable_paths,
            idempotent,
            timeout_seconds,
        })
    }

    /// Parse a whole file (a JSON list of plugins); `origin` names it in errors.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the file, the plugin and the field; duplicate ids within the file too.
    pub fn parse_file(text: &str, origin: &str) -> Result<Vec<PluginDef>> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(origin, format!("not valid JSON: {e}")))?;
        let Value::Array(items) = v else {
            return Err(Error::invalid(origin, "expected a JSON list of plugins"));
        };
        let mut out: Vec<PluginDef> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let def = PluginDef::from_json(item, &format!("{origin}[{i}]"))?;
            if out.iter().any(|d| d.plugin_id == def.plugin_id) {
                return Err(Error::invalid(
                    format!("{origin}[{i}]: plugin {:?}: plugin_id", def.plugin_id),
                    "duplicate plugin_id",
                ));
            }
            out.push(def);
        }
        Ok(out)
    }

    /// Load several files; a plugin id defined in two files is an error naming both.
    ///
    /// # Errors
    /// [`Error::Invalid`] as [`PluginDef::parse_file`], or when a file cannot be read.
    pub fn load_files<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<PluginDef>> {
        let mut out: Vec<PluginDef> = Vec::new();
        let mut origin_of: BTreeMap<String, String> = BTreeMap::new();
        for p in paths {
            let p = p.as_ref();
            let origin = p.display().to_string();
            let text = std::fs::read_to_string(p)
                .map_err(|e| Error::invalid(&origin, format!("cannot read: {e}")))?;
            for def in PluginDef::parse_file(&text, &origin)? {
                if let Some(first) = origin_of.get(&def.plugin_id) {
                    return Err(Error::invalid(
                        format!("{origin}: plugin {:?}: plugin_id", def.plugin_id),
                        format!("duplicate plugin_id, already defined in {first}"),
                    ));
                }
                origin_of.insert(def.plugin_id.clone(), origin.clone());
                out.push(def);
            }
        }
        Ok(out)
    }
}

fn error_message(e: Error) -> String {
    match e {
        Error::Invalid { message, .. } => message,
        other => other.to_string(),
    }
}

struct Reader<'a> {
    m: &'a Map<String, Value>,
    at: &'a str,
}

impl Reader<'_> {
    fn err(&self, field: &str, msg: &str) -> Error {
        Error::invalid(format!("{}: {field}", self.at), msg)
    }

    fn opt_str(&self, field: &str) -> Result<Option<String>> {
        match self.m.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.err(field, "must be a string")),
        }
    }

    fn opt_bool(&self, field: &str) -> Result<Option<bool>> {
        match self.m.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.err(field, "must be true or false")),
        }
    }

    fn opt_u64(&self, field: &str, lo: u64, hi: u64) -> Result<Option<u64>> {
        match self.m.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if (lo..=hi).contains(&v) => Ok(Some(v)),
                _ => Err(self.err(
                    field,
                    &format!("must be a whole number from {lo} to {hi}, got {n}"),
                )),
            },
            Some(_) => Err(self.err(field, &format!("must be a whole number from {lo} to {hi}"))),
        }
    }

    fn opt_str_list(&self, field: &str) -> Result<Option<Vec<String>>> {
        match self.m.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(self.err(&format!("{field}[{i}]"), "must be a string")),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(_) => Err(self.err(field, "must be a list of strings")),
        }
    }
}

/// A plugin as the catalogue keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// The definition.
    pub def: PluginDef,
    /// Whether it runs (schedules, chaining, manual tasks).
    pub enabled: bool,
    /// Whether the last sync found it in the source files; a removed plugin stays, disabled.
    pub in_source: bool,
    /// Why the operator's policy refuses it, as of the last sync (it asks for a user or capabilities
    /// the policy does not grant); a refused plugin never runs, whether enabled or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl PluginRecord {
    /// Whether it runs for an organization whose override is `org_override`
    /// ([`crate::store::PluginCatalog::plugin_overrides`]): the override when there is one (an
    /// enabling override only while the plugin is in the source files), else the catalogue's
    /// `enabled`.
    pub fn enabled_with(&self, org_override: Option<bool>) -> bool {
        match org_override {
            Some(true) => self.in_source,
            Some(false) => false,
            None => self.enabled,
        }
    }
}

/// What a sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// New plugins.
    pub added: Vec<String>,
    /// Plugins whose definition changed.
    pub updated: Vec<String>,
    /// Plugins that were the same.
    pub unchanged: Vec<String>,
    /// Plugins no longer in the source, now disabled.
    pub removed: Vec<String>,
    /// Plugins in the source that the policy refuses, with the reason (also in their records).
    pub refused: BTreeMap<String, String>,
}

/// Sync loaded definitions into the catalogue under the default policy (nothing beyond the hardened
/// default): [`sync_with_policy`] with [`Policy::default`].
///
/// ```
/// use kat_core::plugin::{sync, PluginDef};
/// let defs = PluginDef::parse_file(r#"[{"plugin_id": "a", "oci_image": "img"}]"#, "p.json").unwrap();
/// let (writes, report) = sync(&[], &defs, true);
/// assert_eq!(report.added, vec!["a"]);
/// let (again, report) = sync(&writes, &defs, true);
/// assert!(again.is_empty());
/// assert_eq!(report.unchanged, vec!["a"]);
/// ```
pub fn sync(
    existing: &[PluginRecord],
    loaded: &[PluginDef],
    enable_new: bool,
) -> (Vec<PluginRecord>, SyncReport) {
    sync_with_policy(existing, loaded, enable_new, &Policy::default())
}

/// Sync loaded definitions into the catalogue: returns the records to write (only those that
/// changed) and a report. New plugins are enabled when `enable_new`; changed ones keep their enabled
/// flag; removed ones are disabled and kept. Every loaded plugin is checked against `policy`: one
/// asking for more than its grant is kept with the reason in [`PluginRecord::refused`] (and in the
/// report) and never runs, while the others sync as usual. Running it twice changes nothing the second
/// time.
///
/// ```
/// use kat_core::plugin::{sync_with_policy, PluginDef};
/// use kat_core::policy::Policy;
/// let defs = PluginDef::parse_file(
///     r#"[{"plugin_id": "a", "oci_image": "img"}, {"plugin_id": "b", "oci_image": "img", "cap_add": ["SYS_ADMIN"]}]"#,
///     "p.json",
/// ).unwrap();
/// let (writes, report) = sync_with_policy(&[], &defs, true, &Policy::default());
/// assert_eq!(report.added, vec!["a", "b"]);
/// assert!(report.refused["b"].contains("SYS_ADMIN"));
/// assert!(writes[0].refused.is_none() && writes[1].refused.is_some());
/// ```
pub fn sync_with_policy(
    existing: &[PluginRecord],
    loaded: &[PluginDef],
    enable_new: bool,
    policy: &Policy,
) -> (Vec<PluginRecord>, SyncReport) {
    let mut writes = Vec::new();
    let mut report = SyncReport::default();
    let by_id: BTreeMap<&str, &PluginRecord> = existing
        .iter()
        .map(|r| (r.def.plugin_id.as_str(), r))
        .collect();
    let loaded_ids: BTreeSet<&str> = loaded.iter().map(|d| d.plugin_id.as_str()).collect();
    for def in loaded {
        let refused = policy.refusal(def);
        if let Some(why) = &refused {
            report.refused.insert(def.plugin_id.clone(), why.clone());
        }
        match by_id.get(def.plugin_id.as_str()) {
            None => {
                report.added.push(def.plugin_id.clone());
                writes.push(PluginRecord {
                    def: def.clone(),
                    enabled: enable_new,
                    in_source: true,
                    refused,
                });
            }
            Some(old) if old.def == *def && old.in_source && old.refused == refused => {
                report.unchanged.push(def.plugin_id.clone())
            }
            Some(old) => {
                report.updated.push(def.plugin_id.clone());
                writes.push(PluginRecord {
                    def: def.clone(),
                    enabled: old.enabled,
                    in_source: true,
                    refused,
                });
            }
        }
    }
    for old in existing {
        if !loaded_ids.contains(old.def.plugin_id.as_str()) && (old.in_source || old.enabled) {
            report.removed.push(old.def.plugin_id.clone());
            writes.push(PluginRecord {
                def: old.def.clone(),
                enabled: false,
                in_source: false,
                refused: old.refused.clone(),
            });
        }
    }
    (writes, report)
}

#[cfg(test)]
mod tests;
