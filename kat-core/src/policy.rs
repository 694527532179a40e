//! The operator's privilege policy: what a plugin may get beyond the hardened default.
//!
//! Every plugin container runs hardened (see [`Hardening`](crate::runtime::Hardening)): as the
//! non-root user [`DEFAULT_USER`], with every capability dropped, `no-new-privileges`, and a read-only
//! root filesystem with a tmpfs on `/tmp`. A plugin definition may *ask* for more (`user`, `cap_add`),
//! but only the operator's policy *grants* it: a plugin asking for more than its grant is refused when
//! the catalogue is synced (it is kept, marked [`refused`](crate::plugin::PluginRecord::refused), and
//! never runs) and again by the engine before it creates a container (so a policy tightened after a
//! sync still holds).
//!
//! The policy file is a JSON object (unknown fields are errors):
//!
//! ```json
//! {
//!   "plugins": {
//!     "raw-scanner": { "cap_add": ["NET_RAW"] },
//!     "legacy-tool": { "user": "0:0", "cap_add": ["CHOWN", "DAC_OVERRIDE"] }
//!   }
//! }
//! ```
//!
//! Per plugin id, a grant may hold:
//! - `user`: the one user (as the engine takes it: `uid:gid`, `uid` or a name) the plugin may run as
//!   besides the default; a plugin's own `user` must equal it exactly.
//! - `cap_add`: capability names (`NET_RAW` or `CAP_NET_RAW`, as in plugin definitions) the plugin may
//!   add; `ALL` grants every capability.
//! - `writable_paths`: absolute paths inside the container the plugin may get writable; a plugin's
//!   `writable_paths` must each be one of them or below one. Each becomes an empty tmpfs (`noexec`,
//!   `nosuid`, `nodev`, the size of `/tmp`'s) that goes with the container.
//! - `extra_permissions`: API permissions (the JSON form of plugin `permissions`) the plugin's task
//!   tokens get on top of what it declares; the submitter need not hold them (the operator grants
//!   them). `objects.can_set_scan_level` cannot be granted.
//!
//! A grant is both what a plugin *gets when it asks for nothing* and the most it may ask for, field by
//! field ([`Policy::privileges`]): a plugin written for OpenKAT, which knows none of these fields, runs
//! with its grant's `user`, `cap_add` and `writable_paths` unchanged; a plugin that names a field gets
//! what it names, if the grant allows it. `extra_permissions` always apply.
//! No policy, or a plugin the policy does not name, means nothing beyond the default.
//!
//! ```
//! use kat_core::plugin::PluginDef;
//! use kat_core::policy::Policy;
//! let defs = PluginDef::parse_file(r#"[{"plugin_id": "legacy", "oci_image": "i", "user": "0:0"}]"#, "p.json").unwrap();
//! assert!(Policy::default().check(&defs[0]).is_err());
//! let policy = Policy::parse(r#"{"plugins": {"legacy": {"user": "0:0"}}}"#, "policy.json").unwrap();
//! assert!(policy.check(&defs[0]).is_ok());
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::permission::Permissions;
use crate::plugin::PluginDef;
use crate::runtime::DEFAULT_USER;
use crate::{Error, Result};

/// The fields of a policy file.
pub const POLICY_FIELDS: [&str; 1] = ["plugins"];
/// The fields of one plugin's grant.
pub const GRANT_FIELDS: [&str; 4] = ["user", "cap_add", "writable_paths", "extra_permissions"];
/// The capability name that grants every capability.
pub const ALL_CAPABILITIES: &str = "ALL";

/// Paths inside a container that can never be made writable: the entrypoint's mount and the kernel's
/// filesystems. `/tmp` is writable already.
pub const RESERVED_PATHS: [&str; 5] = ["/plugin", "/proc", "/sys", "/dev", "/tmp"];

/// Check a path a plugin may get writable: absolute, normalized (no `.`, `..` or empty parts, no
/// trailing `/`), without control characters, `,` or `:`, and not `/` or in [`RESERVED_PATHS`].
///
/// ```
/// use kat_core::policy::check_writable_path;
/// assert!(check_writable_path("/var/cache/tool").is_ok());
/// assert!(check_writable_path("var/cache").is_err());
/// assert!(check_writable_path("/plugin/x").is_err());
/// assert!(check_writable_path("/a/../etc").is_err());
/// ```
///
/// # Errors
/// A message saying what is wrong.
pub fn check_writable_path(p: &str) -> std::result::Result<(), String> {
    let normal = p.len() > 1
        && p.len() <= 4096
        && p.starts_with('/')
        && p[1..]
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
        && !p.chars().any(|c| c.is_control() || c == ',' || c == ':');
    if !normal {
        return Err(format!(
            "{p:?} must be an absolute path below / without ., .. or empty parts, ',' or ':'"
        ));
    }
    if let Some(r) = RESERVED_PATHS.iter().find(|r| {
        p == **r
            || p.strip_prefix(**r)
                .is_some_and(|rest| rest.starts_with('/'))
    }) {
        return Err(format!("{p:?} is in {r}, which cannot be made writable"));
    }
    Ok(())
}

/// Whether `path` is `granted` or below it.
fn covers(granted: &str, path: &str) -> bool {
    path == granted
        || path
            .strip_prefix(granted)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A capability name without its `CAP_` prefix, when it is one (upper-case letters and `_`).
///
/// ```
/// use kat_core::policy::capability_name;
/// assert_eq!(capability_name("CAP_NET_RAW"), Some("NET_RAW"));
/// assert_eq!(capability_name("NET_RAW"), Some("NET_RAW"));
/// assert_eq!(capability_name("net raw"), None);
/// ```
pub fn capability_name(c: &str) -> Option<&str> {
    let bare = c.strip_prefix("CAP_").unwrap_or(c);
    (!bare.is_empty() && bare.chars().all(|c| c.is_ascii_uppercase() || c == '_')).then_some(bare)
}

/// What the policy grants one plugin beyond the hardened default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// The user it may run as besides [`DEFAULT_USER`].
    pub user: Option<String>,
    /// Capabilities it may add (bare names, `ALL` for every one).
    pub cap_add: BTreeSet<String>,
    /// Paths it may get writable (each one and the paths below it).
    pub writable_paths: Vec<String>,
    /// API permissions its task tokens get beyond what it declares (never
    /// [`PermissionName::SET_SCAN_LEVEL`](crate::permission::PermissionName::SET_SCAN_LEVEL)).
    pub extra_permissions: Permissions,
}

/// What one plugin's containers and task tokens get under a policy: the plugin's own requests where
/// it makes them, the grant's where it does not ([`Policy::privileges`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privileges {
    /// The user its containers run as ([`DEFAULT_USER`] unless granted).
    pub user: String,
    /// The capabilities its containers add (names as the plugin or the policy wrote them).
    pub cap_add: Vec<String>,
    /// The paths its containers get writable.
    pub writable_paths: Vec<String>,
    /// API permissions its task tokens get on top of what it declares.
    pub extra_permissions: Permissions,
}

impl Grant {
    /// Whether it grants capability `cap` (a bare name).
    pub fn allows_capability(&self, cap: &str) -> bool {
        self.cap_add.contains(ALL_CAPABILITIES) || self.cap_add.contains(cap)
    }

    /// Whether it grants writing `path` (a granted path or below one).
    pub fn allows_writable(&self, path: &str) -> bool {
        self.writable_paths.iter().any(|g| covers(g, path))
    }
}

/// The operator's policy: a grant per plugin id. The default grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The grants, by plugin id.
    pub plugins: BTreeMap<String, Grant>,
}

impl Policy {
    /// Parse a policy file's text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the file, the plugin and the field (unknown fields included).
    pub fn parse(text: &str, origin: &str) -> Result<Policy> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(origin, format!("not valid JSON: {e}")))?;
        let Value::Object(top) = v else {
            return Err(Error::invalid(
                origin,
                "a policy is a JSON object like {\"plugins\": {...}}",
            ));
        };
        if let Some(unknown) = top.keys().find(|k| !POLICY_FIELDS.contains(&k.as_str())) {
            return Err(Error::invalid(
                format!("{origin}: {unknown}"),
                format!("unknown field; the fields are {}", POLICY_FIELDS.join(", ")),
            ));
        }
        let mut policy = Policy::default();
        let plugins = match top.get("plugins") {
            None | Some(Value::Null) => return Ok(policy),
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(Error::invalid(
                    format!("{origin}: plugins"),
                    "must be a JSON object from plugin id to grant",
                ));
            }
        };
        for (id, g) in plugins {
            let at = format!("{origin}: plugin {id:?}");
            crate::plugin::check_plugin_id(id).map_err(|m| Error::invalid(&at, m))?;
            policy.plugins.insert(id.clone(), Grant::from_json(g, &at)?);
        }
        Ok(policy)
    }

    /// Read and parse a policy file.
    ///
    /// # Errors
    /// [`Error::Invalid`] as [`Policy::parse`], or naming the file when it cannot be read.
    pub fn load(path: &Path) -> Result<Policy> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(&origin, format!("cannot read: {e}")))?;
        Policy::parse(&text, &origin)
    }

    /// The grant of a plugin, when the policy names it.
    pub fn grant(&self, plugin_id: &str) -> Option<&Grant> {
        self.plugins.get(plugin_id)
    }

    /// Why the policy refuses a plugin (naming the plugin, the field, what it asks and what the policy
    /// allows), or `None` when the plugin asks for nothing beyond its grant.
    pub fn refusal(&self, plugin: &PluginDef) -> Option<String> {
        let id = &plugin.plugin_id;
        let grant = self.grant(id);
        if let Some(user) = plugin.user.as_deref()
            && user != DEFAULT_USER
            && grant.and_then(|g| g.user.as_deref()) != Some(user)
        {
            let allowed = match grant.and_then(|g| g.user.as_deref()) {
                Some(g) => format!("only user {g:?} besides the default {DEFAULT_USER:?}"),
                None => format!("only the default user {DEFAULT_USER:?}"),
            };
            return Some(format!(
                "plugin {id:?}: user: asks for {user:?}, the operator policy allows {allowed}"
            ));
        }
        let denied: Vec<&str> = plugin
            .cap_add
            .iter()
            .map(|c| capability_name(c).unwrap_or(c))
            .filter(|c| !grant.is_some_and(|g| g.allows_capability(c)))
            .collect();
        if !denied.is_empty() {
            let allowed = match grant.map(|g| &g.cap_add).filter(|c| !c.is_empty()) {
                Some(caps) => format!(
                    "only {}",
                    caps.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
                None => "none".into(),
            };
            return Some(format!(
                "plugin {id:?}: cap_add: asks for {}, the operator policy allows {allowed} (not granted: {})",
                plugin.cap_add.join(", "),
                denied.join(", ")
            ));
        }
        let denied: Vec<&str> = plugin
            .writable_paths
            .iter()
            .map(String::as_str)
            .filter(|p| !grant.is_some_and(|g| g.allows_writable(p)))
            .collect();
        if !denied.is_empty() {
            let allowed = match grant.map(|g| &g.writable_paths).filter(|w| !w.is_empty()) {
                Some(paths) => format!("only {} (and below)", paths.join(", ")),
                None => "none".into(),
            };
            return Some(format!(
                "plugin {id:?}: writable_paths: asks for {}, the operator policy allows {allowed} (not granted: {})",
                plugin.writable_paths.join(", "),
                denied.join(", ")
            ));
        }
        None
    }

    /// What a plugin gets: for each of `user`, `cap_add` and `writable_paths`, what the plugin asks
    /// for when it asks (which the grant must allow), else the grant's (nothing beyond the hardened
    /// default without a grant); plus the grant's `extra_permissions`.
    ///
    /// ```
    /// use kat_core::plugin::PluginDef;
    /// use kat_core::policy::Policy;
    /// // The original's nmap entry knows nothing of users or capabilities.
    /// let defs = PluginDef::parse_file(
    ///     r#"[{"plugin_id": "nmap", "oci_image": "instrumentisto/nmap", "oci_arguments": ["-sS", "{ipaddress}"]}]"#,
    ///     "plugins.json",
    /// ).unwrap();
    /// let none = Policy::default().privileges(&defs[0]).unwrap();
    /// assert_eq!((none.user.as_str(), none.cap_add.len()), ("65534:65534", 0));
    /// let policy = Policy::parse(
    ///     r#"{"plugins": {"nmap": {"user": "0:0", "cap_add": ["NET_RAW"]}}}"#,
    ///     "policy.json",
    /// ).unwrap();
    /// let p = policy.privileges(&defs[0]).unwrap();
    /// assert_eq!((p.user.as_str(), p.cap_add.as_slice()), ("0:0", &["NET_RAW".to_string()][..]));
    /// ```
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] with the [`refusal`](Policy::refusal) when the plugin asks for more
    /// than its grant.
    pub fn privileges(&self, plugin: &PluginDef) -> Result<Privileges> {
        self.check(plugin)?;
        let grant = self.grant(&plugin.plugin_id);
        let user = plugin
            .user
            .clone()
            .or_else(|| grant.and_then(|g| g.user.clone()))
            .unwrap_or_else(|| DEFAULT_USER.to_string());
        let cap_add = if plugin.cap_add.is_empty() {
            grant
                .map(|g| g.cap_add.iter().cloned().collect())
                .unwrap_or_default()
        } else {
            plugin.cap_add.clone()
        };
        let writable_paths = if plugin.writable_paths.is_empty() {
            grant.map(|g| g.writable_paths.clone()).unwrap_or_default()
        } else {
            plugin.writable_paths.clone()
        };
        let mut extra_permissions = grant
            .map(|g| g.extra_permissions.clone())
            .unwrap_or_default();
        extra_permissions.remove(&crate::permission::PermissionName::SET_SCAN_LEVEL);
        Ok(Privileges {
            user,
            cap_add,
            writable_paths,
            extra_permissions,
        })
    }

    /// Check a plugin against the policy.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] with the [`refusal`](Policy::refusal).
    pub fn check(&self, plugin: &PluginDef) -> Result<()> {
        match self.refusal(plugin) {
            None => Ok(()),
            Some(why) => Err(Error::PermissionDenied(why)),
        }
    }
}

impl Grant {
    fn from_json(v: &Value, at: &str) -> Result<Grant> {
        let Value::Object(m) = v else {
            return Err(Error::invalid(at, "a grant must be a JSON object"));
        };
        let err = |field: &str, msg: String| Error::invalid(format!("{at}: {field}"), msg);
        if let Some(unknown) = m.keys().find(|k| !GRANT_FIELDS.contains(&k.as_str())) {
            return Err(err(
                unknown,
                format!("unknown field; the fields are {}", GRANT_FIELDS.join(", ")),
            ));
        }
        let mut g = Grant::default();
        match m.get("user") {
            None | Some(Value::Null) => {}
            Some(Value::String(u))
                if !u.is_empty() && !u.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                g.user = Some(u.clone());
            }
            Some(_) => {
                return Err(err(
                    "user",
                    "must be a user name or uid[:gid] like \"0:0\"".into(),
                ));
            }
        }
        for (i, c) in str_list(m.get("cap_add"), &format!("{at}: cap_add"))?
            .iter()
            .enumerate()
        {
            let name = capability_name(c).ok_or_else(|| {
                err(
                    &format!("cap_add[{i}]"),
                    format!("{c:?} is not a capability name like NET_RAW"),
                )
            })?;
            g.cap_add.insert(name.to_string());
        }
        for (i, p) in str_list(m.get("writable_paths"), &format!("{at}: writable_paths"))?
            .into_iter()
            .enumerate()
        {
            check_writable_path(&p).map_err(|m| err(&format!("writable_paths[{i}]"), m))?;
            g.writable_paths.push(p);
        }
        if let Some(v) = m.get("extra_permissions").filter(|v| !v.is_null()) {
            g.extra_permissions = Permissions::from_json(v, &format!("{at}: extra_permissions"))?;
            let set = crate::permission::PermissionName::SET_SCAN_LEVEL;
            if g.extra_permissions.has(&set) {
                return Err(err(
                    &format!("extra_permissions.{set}"),
                    "a task's token never changes scan levels; only operators do".into(),
                ));
            }
        }
        Ok(g)
    }
}

fn str_list(v: Option<&Value>, at: &str) -> Result<Vec<String>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(Error::invalid(format!("{at}[{i}]"), "must be a string")),
            })
            .collect(),
        Some(_) => Err(Error::invalid(at, "must be a list of strings")),
    }
}

#[cfg(test)]
mod tests;
