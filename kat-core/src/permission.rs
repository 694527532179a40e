//! Scoped permissions: Django-style names (`objects.add_hostname`, `files.view_file`) each with a scope
//! that restricts it (`{}` unrestricted, `{"pks": [...]}`, `{"search": [...]}`, `{"limit": n}`).
//!
//! One check, [`Permissions::check`], is used by the HTTP API on every request and by the runner when
//! it builds a task's token, so both agree. Unlike the original: a `pks` scope restricts lists too, a
//! missing `limit` parameter is a denial (never a crash), and `pks` compare as strings whatever their
//! JSON type.
//!
//! ```
//! use kat_core::permission::{Access, Decision, Permissions};
//! let p: Permissions = serde_json::from_value(serde_json::json!({
//!     "files.view_file": {"pks": [12]},
//!     "objects.add_hostname": {},
//! })).unwrap();
//! assert_eq!(p.check(&"files.view_file".parse().unwrap(), &Access::Object("12")), Decision::Allow);
//! assert_eq!(p.check(&"files.view_file".parse().unwrap(), &Access::Object("13")), Decision::Deny);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::object::ObjectType;
use crate::{Error, Result};

/// What a permission allows: Django's four actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Read (GET).
    View,
    /// Create (POST).
    Add,
    /// Modify (PUT, PATCH).
    Change,
    /// Remove (DELETE).
    Delete,
    /// Set a scan level: only in [`PermissionName::SET_SCAN_LEVEL`] (`objects.can_set_scan_level`), a
    /// custom permission in the style of the original's `can_set_clearance_level`.
    CanSet,
}

impl Action {
    /// The Django codename prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::Add => "add",
            Action::Change => "change",
            Action::Delete => "delete",
            Action::CanSet => "can_set",
        }
    }
}

/// What a permission is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// Objects of one type (`objects.<action>_<type>`).
    Object(ObjectType),
    /// Files (`files.<action>_file`).
    File,
    /// Tasks (`tasks.<action>_task`).
    Task,
    /// Schedules (`tasks.<action>_schedule`).
    Schedule,
    /// Object sets (`tasks.<action>_objectset`).
    ObjectSet,
    /// Plugins (`plugins.<action>_plugin`).
    Plugin,
    /// Business rules (`plugins.<action>_businessrule`: the original keeps the model in its `plugins`
    /// app).
    BusinessRule,
    /// Organizations (`openkat.<action>_organization`).
    Organization,
    /// Objects' scan levels: only in [`PermissionName::SET_SCAN_LEVEL`].
    ScanLevel,
}

impl Resource {
    fn app_and_model(self) -> (&'static str, &'static str) {
        match self {
            Resource::Object(t) => ("objects", t.as_str()),
            Resource::File => ("files", "file"),
            Resource::Task => ("tasks", "task"),
            Resource::Schedule => ("tasks", "schedule"),
            Resource::ObjectSet => ("tasks", "objectset"),
            Resource::Plugin => ("plugins", "plugin"),
            Resource::BusinessRule => ("plugins", "businessrule"),
            Resource::Organization => ("openkat", "organization"),
            Resource::ScanLevel => ("objects", "scan_level"),
        }
    }
}

/// A permission name such as `objects.add_hostname`.
///
/// ```
/// use kat_core::permission::{Action, PermissionName, Resource};
/// use kat_core::object::ObjectType;
/// let p: PermissionName = "objects.delete_dnsarecord".parse().unwrap();
/// assert_eq!(p, PermissionName::new(Action::Delete, Resource::Object(ObjectType::DnsARecord)));
/// // The manual's names for models kat-rs calls otherwise are aliases, read as ours.
/// let alias: PermissionName = "objects.add_ipservice".parse().unwrap();
/// assert_eq!(alias.to_string(), "objects.add_ipport");
/// assert!("objects.add_ipservices".parse::<PermissionName>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PermissionName {
    /// The action.
    pub action: Action,
    /// The resource.
    pub resource: Resource,
}

impl PermissionName {
    /// `objects.can_set_scan_level`: change an object's scan level (`scan_level` or `declared` in a
    /// `PATCH`, or an object write that carries a level). Operators may hold it; a task's token never
    /// does ([`crate::plan::ExecutionPlan::permissions`] strips it and a plugin that declares it is
    /// refused at load), so a plugin can never raise or lower a level.
    ///
    /// ```
    /// use kat_core::permission::PermissionName;
    /// assert_eq!(PermissionName::SET_SCAN_LEVEL.to_string(), "objects.can_set_scan_level");
    /// assert_eq!("objects.can_set_scan_level".parse::<PermissionName>().unwrap(), PermissionName::SET_SCAN_LEVEL);
    /// ```
    pub const SET_SCAN_LEVEL: PermissionName = PermissionName {
        action: Action::CanSet,
        resource: Resource::ScanLevel,
    };

    /// A permission name.
    pub fn new(action: Action, resource: Resource) -> Self {
        PermissionName { action, resource }
    }

    /// Every valid permission name.
    pub fn all() -> Vec<PermissionName> {
        let mut resources: Vec<Resource> = ObjectType::ALL
            .iter()
            .map(|t| Resource::Object(*t))
            .collect();
        resources.extend([
            Resource::File,
            Resource::Task,
            Resource::Schedule,
            Resource::ObjectSet,
            Resource::Plugin,
            Resource::BusinessRule,
            Resource::Organization,
        ]);
        let mut out = Vec::new();
        for r in resources {
            for a in [Action::View, Action::Add, Action::Change, Action::Delete] {
                out.push(PermissionName::new(a, r));
            }
        }
        out.push(PermissionName::SET_SCAN_LEVEL);
        out
    }
}

impl fmt::Display for PermissionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (app, model) = self.resource.app_and_model();
        write!(f, "{app}.{}_{model}", self.action.as_str())
    }
}

/// Permission models named in OpenKAT's manual that kat-rs calls otherwise: `(alias, ours)`. A name
/// `<app>.<action>_<alias>` parses as `<app>.<action>_<ours>` (so tokens, checks and the JSON we write
/// carry only our names). The manual's parse-nmap example declares `objects.add_ipservice`: the
/// original's `IPPort` carries the service (its `service` field), there is no service model.
pub const MODEL_ALIASES: [(&str, &str, &str); 1] = [("objects", "ipservice", "ipport")];

impl FromStr for PermissionName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Some((app, codename)) = s.split_once('.')
            && let Some((action, model)) = codename.split_once('_')
            && let Some((_, _, ours)) = MODEL_ALIASES
                .iter()
                .find(|(a, alias, _)| *a == app && *alias == model)
        {
            return format!("{app}.{action}_{ours}").parse();
        }
        let unknown = || {
            Error::invalid(
                "permissions",
                format!(
                    "unknown permission {s:?}; expected <app>.<view|add|change|delete>_<model>, such as objects.add_hostname or files.view_file, or objects.can_set_scan_level"
                ),
            )
        };
        if s == "objects.can_set_scan_level" {
            return Ok(PermissionName::SET_SCAN_LEVEL);
        }
        let (app, codename) = s.split_once('.').ok_or_else(unknown)?;
        let (action, model) = codename.split_once('_').ok_or_else(unknown)?;
        let action = match action {
            "view" => Action::View,
            "add" => Action::Add,
            "change" => Action::Change,
            "delete" => Action::Delete,
            _ => return Err(unknown()),
        };
        let resource = match (app, model) {
            ("objects", m) => Resource::Object(m.parse().map_err(|_| unknown())?),
            ("files", "file") => Resource::File,
            ("tasks", "task") => Resource::Task,
            ("tasks", "schedule") => Resource::Schedule,
            ("tasks", "objectset") => Resource::ObjectSet,
            ("plugins", "plugin") => Resource::Plugin,
            ("plugins", "businessrule") => Resource::BusinessRule,
            ("openkat", "organization") => Resource::Organization,
            _ => return Err(unknown()),
        };
        // Reject case variants such as objects.add_HostName: names are exact.
        let p = PermissionName::new(action, resource);
        if p.to_string() != s {
            return Err(unknown());
        }
        Ok(p)
    }
}

impl Serialize for PermissionName {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PermissionName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

/// One scope of a permission. An empty scope is unrestricted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Scope {
    /// Only these objects (natural keys) or files (ids), on every route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pks: Option<BTreeSet<String>>,
    /// Lists only with a `search` parameter equal to one of these.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<BTreeSet<String>>,
    /// Lists only with a `limit` parameter equal to this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

impl Scope {
    /// The unrestricted scope.
    pub fn unrestricted() -> Self {
        Scope::default()
    }

    /// A scope restricted to these pks.
    pub fn pks<I, S>(pks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Scope {
            pks: Some(pks.into_iter().map(Into::into).collect()),
            ..Scope::default()
        }
    }

    /// Whether the scope has no restriction.
    pub fn is_unrestricted(&self) -> bool {
        self.pks.is_none() && self.search.is_none() && self.limit.is_none()
    }

    /// Whether this one scope allows everything `other` allows (see [`Permissions::covers`]): its
    /// `pks`, `search` and `limit` are each absent or no narrower than `other`'s. An absent `pks` or
    /// `search` is wider than any list; an absent `limit` is wider than any value. When `other` has an
    /// empty `search` (it admits no list), only `pks` are compared.
    ///
    /// ```
    /// use kat_core::permission::Scope;
    /// assert!(Scope::unrestricted().covers(&Scope::pks(["a"])));
    /// assert!(Scope::pks(["a", "b"]).covers(&Scope::pks(["a"])));
    /// assert!(!Scope::pks(["a"]).covers(&Scope::unrestricted()));
    /// ```
    pub fn covers(&self, other: &Scope) -> bool {
        fn wider(mine: &Option<BTreeSet<String>>, theirs: &Option<BTreeSet<String>>) -> bool {
            match (mine, theirs) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(m), Some(t)) => t.is_subset(m),
            }
        }
        if other.search.as_ref().is_some_and(BTreeSet::is_empty) {
            // `other` admits no list at all: only the objects it allows matter.
            return wider(&self.pks, &other.pks);
        }
        wider(&self.pks, &other.pks)
            && wider(&self.search, &other.search)
            && self.limit.is_none_or(|n| other.limit == Some(n))
    }

    /// The scope split into scopes of one pk and one search value each (an absent or empty list stays
    /// as it is); the union of the parts allows exactly what the scope allows.
    fn atoms(&self) -> Vec<Scope> {
        fn split(set: &Option<BTreeSet<String>>) -> Vec<Option<BTreeSet<String>>> {
            match set {
                Some(s) if s.len() > 1 => s
                    .iter()
                    .map(|v| Some(BTreeSet::from([v.clone()])))
                    .collect(),
                other => vec![other.clone()],
            }
        }
        let mut out = Vec::new();
        for pks in split(&self.pks) {
            for search in split(&self.search) {
                out.push(Scope {
                    pks: pks.clone(),
                    search,
                    limit: self.limit,
                });
            }
        }
        out
    }

    fn from_json(v: &Value) -> std::result::Result<Scope, String> {
        let m = match v {
            // The original treats any non-dict value (null, true) as unrestricted.
            Value::Null | Value::Bool(true) => return Ok(Scope::default()),
            Value::Object(m) => m,
            other => return Err(format!("a scope must be an object, got {other}")),
        };
        let mut scope = Scope::default();
        for (k, v) in m {
            match k.as_str() {
                "pks" => {
                    let Value::Array(items) = v else {
                        return Err("pks must be a list".into());
                    };
                    let mut set = BTreeSet::new();
                    for it in items {
                        set.insert(match it {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            other => {
                                return Err(format!(
                                    "a pk must be a string or a number, got {other}"
                                ));
                            }
                        });
                    }
                    scope.pks = Some(set);
                }
                "search" => {
                    let Value::Array(items) = v else {
                        return Err("search must be a list of strings".into());
                    };
                    let mut set = BTreeSet::new();
                    for it in items {
                        let Value::String(s) = it else {
                            return Err("search must be a list of strings".into());
                        };
                        set.insert(s.clone());
                    }
                    scope.search = Some(set);
                }
                "limit" => {
                    let n = match v {
                        Value::Number(n) => n.as_u64(),
                        Value::String(s) => s.parse().ok(),
                        _ => None,
                    };
                    scope.limit = Some(n.ok_or("limit must be a whole number")?);
                }
                other => {
                    return Err(format!(
                        "unknown scope key {other:?}; expected pks, search or limit"
                    ));
                }
            }
        }
        Ok(scope)
    }
}

/// How a request uses a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// One object or file, by its pk (natural key or file id): retrieve, update, delete, download,
    /// and creating an object with this key.
    Object(&'a str),
    /// A list, with the request's `search` and `limit` parameters (`None` when absent).
    List {
        /// The `search` parameter.
        search: Option<&'a str>,
        /// The `limit` parameter.
        limit: Option<u64>,
    },
}

/// The result of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed without restriction.
    Allow,
    /// A list that is allowed, but only over these pks.
    AllowOnly(BTreeSet<String>),
    /// Not allowed.
    Deny,
}

impl Decision {
    /// Whether anything is allowed.
    pub fn allowed(&self) -> bool {
        !matches!(self, Decision::Deny)
    }
}

/// A set of permissions with their scopes. A permission may hold several scopes (for example the
/// runner's grant of a task's input file and the plugin's own `search`-scoped grant); access is
/// allowed when any scope allows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions(pub BTreeMap<PermissionName, Vec<Scope>>);

impl Permissions {
    /// No permissions.
    pub fn new() -> Self {
        Permissions::default()
    }

    /// Add a scope to a permission (an unrestricted scope absorbs the others).
    pub fn grant(&mut self, name: PermissionName, scope: Scope) -> &mut Self {
        let scopes = self.0.entry(name).or_default();
        if scopes.iter().any(Scope::is_unrestricted) {
            return self;
        }
        if scope.is_unrestricted() {
            scopes.clear();
            scopes.push(scope);
        } else if !scopes.contains(&scope) {
            scopes.push(scope);
        }
        self
    }

    /// Add every grant of `other`.
    pub fn merge(&mut self, other: &Permissions) -> &mut Self {
        for (name, scopes) in &other.0 {
            for s in scopes {
                self.grant(*name, s.clone());
            }
        }
        self
    }

    /// Whether the permission is held at all.
    pub fn has(&self, name: &PermissionName) -> bool {
        self.0.contains_key(name)
    }

    /// Check one use of one permission.
    ///
    /// - [`Access::Object`]: allowed when a scope has no `pks` or lists this pk (`search` and `limit`
    ///   only restrict lists, as in the original).
    /// - [`Access::List`]: a scope admits the list when its `search` (if any) contains the request's
    ///   search and its `limit` (if any) equals the request's limit (a missing parameter does not
    ///   match). An admitting scope without `pks` allows everything; otherwise the list is restricted to
    ///   the union of the admitting scopes' `pks`.
    pub fn check(&self, name: &PermissionName, access: &Access<'_>) -> Decision {
        let Some(scopes) = self.0.get(name) else {
            return Decision::Deny;
        };
        match access {
            Access::Object(pk) => {
                let ok = scopes
                    .iter()
                    .any(|s| s.pks.as_ref().is_none_or(|pks| pks.contains(*pk)));
                if ok { Decision::Allow } else { Decision::Deny }
            }
            Access::List { search, limit } => {
                let mut only: Option<BTreeSet<String>> = None;
                for s in scopes {
                    let search_ok = s
                        .search
                        .as_ref()
                        .is_none_or(|allowed| search.is_some_and(|q| allowed.contains(q)));
                    let limit_ok = s.limit.is_none_or(|n| *limit == Some(n));
                    if !(search_ok && limit_ok) {
                        continue;
                    }
                    match &s.pks {
                        None => return Decision::Allow,
                        Some(pks) => only
                            .get_or_insert_with(BTreeSet::new)
                            .extend(pks.iter().cloned()),
                    }
                }
                match only {
                    Some(set) => Decision::AllowOnly(set),
                    None => Decision::Deny,
                }
            }
        }
    }

    /// Whether these permissions allow everything `required` allows: [`Permissions::missing`] is
    /// empty. This is how a submitter's rights are compared with a plugin's declared permissions
    /// (docs/decisions.md, "Plugin permissions are the submitter's").
    ///
    /// ```
    /// use kat_core::permission::Permissions;
    /// let p = |v| Permissions::from_json(&v, "x").unwrap();
    /// let held = p(serde_json::json!({"objects.add_hostname": {"pks": ["internet|a.example"]}}));
    /// assert!(held.covers(&p(serde_json::json!({"objects.add_hostname": {"pks": ["internet|a.example"]}}))));
    /// // A pks-scoped grant does not cover an unrestricted one.
    /// assert!(!held.covers(&p(serde_json::json!({"objects.add_hostname": {}}))));
    /// ```
    pub fn covers(&self, required: &Permissions) -> bool {
        required.0.is_empty() || self.missing(required).0.is_empty()
    }

    /// The grants of `required` that these permissions do not cover, scope by scope.
    ///
    /// A required scope is covered when every part of it is covered by one held scope of the same
    /// permission ([`Scope::covers`]), the parts being the scope split into one pk and one `search`
    /// value each (a required `{"pks": ["a", "b"]}` is covered by held `{"pks": ["a"]}` plus
    /// `{"pks": ["b"]}`). So:
    ///
    /// - an unrestricted held scope covers every scope of that permission;
    /// - a required unrestricted scope (`{}`) is covered only by an unrestricted held scope;
    /// - `pks` and `search`: held absent, or a superset of the required list (across held scopes
    ///   with the same other restrictions); a required absent list is covered only by a held absent
    ///   one;
    /// - `limit`: held absent, or equal to the required one.
    ///
    /// The relation is exact for what [`Permissions::check`] decides: it holds exactly when every
    /// access `required` allows, these allow too (`Allow` where `required` allows, and a list
    /// restricted to at least the same pks).
    pub fn missing(&self, required: &Permissions) -> Permissions {
        let mut out = Permissions::new();
        for (name, scopes) in &required.0 {
            let held = self.0.get(name).map(Vec::as_slice).unwrap_or(&[]);
            for scope in scopes {
                let covered = scope
                    .atoms()
                    .iter()
                    .all(|atom| held.iter().any(|h| h.covers(atom)));
                if !covered {
                    out.grant(*name, scope.clone());
                }
            }
        }
        out
    }

    /// Every permission, unrestricted: the rights of an operator tool that calls the engine directly
    /// (and of `katd token --admin`).
    pub fn all() -> Permissions {
        let mut p = Permissions::new();
        for name in PermissionName::all() {
            p.grant(name, Scope::unrestricted());
        }
        p
    }

    /// Remove a permission with all its scopes; returns whether it was held.
    pub fn remove(&mut self, name: &PermissionName) -> bool {
        self.0.remove(name).is_some()
    }

    /// The names with their scopes as `name {scope}` items, for messages.
    pub fn describe(&self) -> String {
        let mut items = Vec::new();
        for (name, scopes) in &self.0 {
            for s in scopes {
                let scope = serde_json::to_string(s).unwrap_or_default();
                items.push(format!("{name} {scope}"));
            }
        }
        items.join(", ")
    }

    /// Parse the JSON form; `at` names the source in errors.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the permission and what is wrong.
    pub fn from_json(v: &Value, at: &str) -> Result<Self> {
        let Value::Object(m) = v else {
            return Err(Error::invalid(at, "permissions must be a JSON object"));
        };
        let mut out = Permissions::new();
        for (k, v) in m {
            let name: PermissionName = k.parse().map_err(|e: Error| e.within(at))?;
            let scopes: Vec<&Value> = match v {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            for s in scopes {
                let scope =
                    Scope::from_json(s).map_err(|m| Error::invalid(format!("{at}.{k}"), m))?;
                out.grant(name, scope);
            }
        }
        Ok(out)
    }

    /// The JSON form: a permission with one scope maps to that scope, several to a list.
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (name, scopes) in &self.0 {
            let v = if scopes.len() == 1 {
                serde_json::to_value(&scopes[0]).unwrap_or(Value::Null)
            } else {
                Value::Array(
                    scopes
                        .iter()
                        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
                        .collect(),
                )
            };
            m.insert(name.to_string(), v);
        }
        Value::Object(m)
    }
}

impl Serialize for Permissions {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Permissions::from_json(&v, "permissions").map_err(D::Error::custom)
    }
}

/// The permission a request needs, from its HTTP method and resource, as in the original
/// (`GET` view, `POST` add, `PUT`/`PATCH` change, `DELETE` delete).
///
/// ```
/// use kat_core::permission::{required_for, Resource};
/// assert_eq!(required_for("PATCH", Resource::File).unwrap().to_string(), "files.change_file");
/// ```
pub fn required_for(method: &str, resource: Resource) -> Option<PermissionName> {
    let action = match method {
        "GET" | "HEAD" | "OPTIONS" => Action::View,
        "POST" => Action::Add,
        "PUT" | "PATCH" => Action::Change,
        "DELETE" => Action::Delete,
        _ => return None,
    };
    Some(PermissionName::new(action, resource))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn perms(v: Value) -> Permissions {
        Permissions::from_json(&v, "test").unwrap()
    }
    fn name(s: &str) -> PermissionName {
        s.parse().unwrap()
    }
    fn list<'a>(search: Option<&'a str>, limit: Option<u64>) -> Access<'a> {
        Access::List { search, limit }
    }

    fn arb_set(values: &'static [&'static str]) -> impl Strategy<Value = Option<BTreeSet<String>>> {
        proptest::option::of(proptest::collection::btree_set(
            proptest::sample::select(values).prop_map(str::to_string),
            0..3,
        ))
    }

    fn arb_scope() -> impl Strategy<Value = Scope> {
        (
            arb_set(&["a", "b"]),
            arb_set(&["x", "y"]),
            proptest::option::of(1u64..3),
        )
            .prop_map(|(pks, search, limit)| Scope { pks, search, limit })
    }

    #[test]
    fn the_manuals_model_names_are_aliases_of_ours() {
        for action in ["view", "add", "change", "delete"] {
            let p = name(&format!("objects.{action}_ipservice"));
            assert_eq!(p.to_string(), format!("objects.{action}_ipport"));
        }
        // Declared by a plugin: the token and the checks carry our name, and our name covers it.
        let declared = perms(json!({"objects.add_ipservice": {"pks": ["k"]}}));
        assert_eq!(
            declared.to_json(),
            json!({"objects.add_ipport": {"pks": ["k"]}})
        );
        assert!(
            perms(json!({"objects.add_ipport": {}}))
                .covers(&perms(json!({"objects.add_ipservice": {}})))
        );
        for bad in [
            "objects.add_IPService",
            "objects.add_ipservices",
            "files.add_ipservice",
            "objects.grant_ipservice",
            "objects_ipservice",
        ] {
            assert!(bad.parse::<PermissionName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_name_round_trips() {
        let all = PermissionName::all();
        assert_eq!(all.len(), (ObjectType::ALL.len() + 7) * 4 + 1);
        assert!(all.contains(&PermissionName::SET_SCAN_LEVEL));
        for p in all {
            assert_eq!(p.to_string().parse::<PermissionName>().unwrap(), p);
        }
    }

    #[test]
    fn the_scan_level_permission_is_one_name() {
        let p = name("objects.can_set_scan_level");
        assert_eq!(p, PermissionName::SET_SCAN_LEVEL);
        for bad in [
            "objects.can_set_hostname",
            "objects.view_scan_level",
            "objects.can_set_Scan_level",
            "files.can_set_scan_level",
            "objects.set_scan_level",
        ] {
            assert!(bad.parse::<PermissionName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn covers_compares_scopes() {
        let held = perms(json!({
            "objects.add_hostname": {"pks": ["a", "b"]},
            "objects.delete_hostname": {},
            "files.view_file": [{"search": ["x"], "limit": 1}, {"pks": ["7"]}],
        }));
        let covered = [
            json!({}),
            json!({"objects.add_hostname": {"pks": ["a"]}}),
            json!({"objects.add_hostname": {"pks": ["a", "b"]}}),
            json!({"objects.add_hostname": {"pks": ["a"], "search": ["q"]}}),
            json!({"objects.add_hostname": {"pks": ["b"], "limit": 3}}),
            json!({"objects.delete_hostname": {"pks": ["z"]}}),
            json!({"objects.delete_hostname": {}}),
            json!({"files.view_file": {"search": ["x"], "limit": 1}}),
            json!({"files.view_file": {"search": ["x"], "limit": 1, "pks": ["9"]}}),
            json!({"files.view_file": {"pks": ["7"]}}),
        ];
        for r in covered {
            assert!(held.covers(&perms(r.clone())), "{r}");
        }
        let not_covered = [
            json!({"objects.add_hostname": {}}),
            json!({"objects.add_hostname": {"pks": ["a", "c"]}}),
            json!({"objects.add_hostname": {"search": ["a"]}}),
            json!({"objects.change_hostname": {}}),
            json!({"files.view_file": {"search": ["x"]}}),
            json!({"files.view_file": {"search": ["x", "y"], "limit": 1}}),
            json!({"files.view_file": {"search": ["x"], "limit": 2}}),
            json!({"files.view_file": {"pks": ["7", "8"]}}),
        ];
        for r in not_covered {
            assert!(!held.covers(&perms(r.clone())), "{r}");
        }
        // The scopes of two grants together cover a list that spans them.
        let two = perms(json!({"objects.add_hostname": [{"pks": ["a"]}, {"pks": ["b"]}]}));
        assert!(two.covers(&perms(json!({"objects.add_hostname": {"pks": ["a", "b"]}}))));
        // What is missing is named scope by scope.
        let m = held.missing(&perms(json!({
            "objects.add_hostname": [{"pks": ["a"]}, {}],
            "objects.change_hostname": {},
        })));
        assert_eq!(
            m.describe(),
            "objects.add_hostname {}, objects.change_hostname {}"
        );
    }

    #[test]
    fn unknown_names_are_refused() {
        for bad in [
            "objects.add_ipservices",
            "objects.add_HOSTNAME",
            "objects.frob_hostname",
            "files.view_files",
            "add_hostname",
            "objects.addhostname",
            "tasks.add_tasks",
            "",
        ] {
            let e = bad.parse::<PermissionName>().unwrap_err().to_string();
            assert!(e.contains("unknown permission"), "{bad}: {e}");
        }
    }

    #[test]
    fn unrestricted_allows_everything() {
        let p = perms(
            json!({"files.view_file": {}, "objects.view_hostname": null, "objects.add_hostname": true}),
        );
        for n in [
            "files.view_file",
            "objects.view_hostname",
            "objects.add_hostname",
        ] {
            assert_eq!(p.check(&name(n), &Access::Object("x")), Decision::Allow);
            assert_eq!(p.check(&name(n), &list(None, None)), Decision::Allow);
        }
        assert_eq!(
            p.check(&name("files.add_file"), &list(None, None)),
            Decision::Deny
        );
    }

    #[test]
    fn pks_restrict_objects_and_lists() {
        // The original let a pks token list every file; here the list is restricted.
        let p = perms(json!({"files.view_file": {"pks": [1, "2"]}}));
        let n = name("files.view_file");
        assert_eq!(p.check(&n, &Access::Object("1")), Decision::Allow);
        assert_eq!(p.check(&n, &Access::Object("2")), Decision::Allow);
        assert_eq!(p.check(&n, &Access::Object("3")), Decision::Deny);
        assert_eq!(
            p.check(&n, &list(None, None)),
            Decision::AllowOnly(["1".to_string(), "2".to_string()].into())
        );
    }

    #[test]
    fn search_and_limit_must_match_exactly() {
        let p = perms(json!({"files.view_file": {"pks": [1], "search": ["ab"], "limit": "1"}}));
        let n = name("files.view_file");
        assert!(p.check(&n, &list(Some("ab"), Some(1))).allowed());
        assert_eq!(p.check(&n, &list(Some("ab"), Some(2))), Decision::Deny);
        assert_eq!(p.check(&n, &list(Some("ef"), Some(1))), Decision::Deny);
        // A missing parameter is a denial, not the original's 500.
        assert_eq!(p.check(&n, &list(Some("ab"), None)), Decision::Deny);
        assert_eq!(p.check(&n, &list(None, Some(1))), Decision::Deny);
        assert_eq!(p.check(&n, &Access::Object("1")), Decision::Allow);
    }

    #[test]
    fn search_without_pks_allows_listing_and_retrieval() {
        let p = perms(
            json!({"files.view_file": {"search": ["bgp-download", "rpki-download"], "limit": 1}}),
        );
        let n = name("files.view_file");
        assert_eq!(
            p.check(&n, &list(Some("bgp-download"), Some(1))),
            Decision::Allow
        );
        assert_eq!(p.check(&n, &list(Some("other"), Some(1))), Decision::Deny);
        assert_eq!(p.check(&n, &Access::Object("99")), Decision::Allow);
    }

    #[test]
    fn several_scopes_are_a_union() {
        let mut p = perms(json!({"files.view_file": {"search": ["bgp-download"], "limit": 1}}));
        p.grant(name("files.view_file"), Scope::pks(["7"]));
        let n = name("files.view_file");
        assert_eq!(
            p.check(&n, &list(Some("bgp-download"), Some(1))),
            Decision::Allow
        );
        assert_eq!(
            p.check(&n, &list(None, None)),
            Decision::AllowOnly(["7".to_string()].into())
        );
        assert_eq!(p.check(&n, &Access::Object("7")), Decision::Allow);
        // JSON round trip keeps both scopes.
        let again = Permissions::from_json(&p.to_json(), "x").unwrap();
        assert_eq!(again, p);
        assert!(p.to_json()["files.view_file"].is_array());
    }

    #[test]
    fn unrestricted_absorbs_scopes() {
        let mut p = Permissions::new();
        p.grant(name("files.view_file"), Scope::pks(["1"]));
        p.grant(name("files.view_file"), Scope::unrestricted());
        p.grant(name("files.view_file"), Scope::pks(["2"]));
        assert_eq!(p.0[&name("files.view_file")], vec![Scope::unrestricted()]);
    }

    #[test]
    fn bad_scopes_are_named() {
        for (v, needle) in [
            (
                json!({"files.view_file": {"pks": "1"}}),
                "pks must be a list",
            ),
            (json!({"files.view_file": {"limit": "x"}}), "limit"),
            (json!({"files.view_file": {"search": [1]}}), "search"),
            (json!({"files.view_file": {"color": 1}}), "color"),
            (json!({"files.view_file": 3}), "must be an object"),
            (json!({"files.view_file": {"pks": [[1]]}}), "a pk"),
            (json!(["files.view_file"]), "JSON object"),
        ] {
            let e = Permissions::from_json(&v, "plugins.json: plugin \"x\": permissions")
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{v}: {e}");
            assert!(e.contains("plugin \"x\""), "{e}");
        }
    }

    #[test]
    fn required_permission_follows_the_method() {
        let h = Resource::Object(ObjectType::Hostname);
        assert_eq!(
            required_for("GET", h).unwrap().to_string(),
            "objects.view_hostname"
        );
        assert_eq!(
            required_for("POST", h).unwrap().to_string(),
            "objects.add_hostname"
        );
        assert_eq!(
            required_for("PUT", h).unwrap().to_string(),
            "objects.change_hostname"
        );
        assert_eq!(
            required_for("DELETE", h).unwrap().to_string(),
            "objects.delete_hostname"
        );
        assert!(required_for("TRACE", h).is_none());
    }

    proptest! {
        #[test]
        fn pks_scope_allows_exactly_its_pks(pks in proptest::collection::btree_set("[a-z0-9|.]{1,10}", 0..6), probe in "[a-z0-9|.]{1,10}") {
            let mut p = Permissions::new();
            let n = name("objects.view_hostname");
            p.grant(n, Scope::pks(pks.iter().cloned()));
            prop_assert_eq!(p.check(&n, &Access::Object(&probe)).allowed(), pks.contains(&probe));
            prop_assert_eq!(p.check(&n, &list(None, None)), Decision::AllowOnly(pks.clone()));
        }

        /// `covers` is sound and complete for `check`: held covers required exactly when every access
        /// required allows, held allows at least as widely.
        #[test]
        fn covers_agrees_with_check(
            held in proptest::collection::vec(arb_scope(), 0..3),
            required in arb_scope(),
        ) {
            let n = name("objects.add_hostname");
            let mut h = Permissions::new();
            for s in &held {
                h.grant(n, s.clone());
            }
            let mut r = Permissions::new();
            r.grant(n, required.clone());
            let mut widens = h.has(&n);
            for pk in ["a", "b", "c"] {
                if r.check(&n, &Access::Object(pk)).allowed() && !h.check(&n, &Access::Object(pk)).allowed() {
                    widens = false;
                }
            }
            for search in [None, Some("x"), Some("y"), Some("z")] {
                for limit in [None, Some(1), Some(2), Some(3)] {
                    let a = list(search, limit);
                    let ok = match (r.check(&n, &a), h.check(&n, &a)) {
                        (Decision::Deny, _) | (_, Decision::Allow) => true,
                        (Decision::Allow, _) | (_, Decision::Deny) => false,
                        (Decision::AllowOnly(want), Decision::AllowOnly(got)) => want.is_subset(&got),
                    };
                    widens &= ok;
                }
            }
            // The probes cover every value the scopes use but one (`c`, `z` and limit 3 stand for
            // "any other"), so agreement is exact.
            prop_assert_eq!(h.covers(&r), widens, "held {:?} required {:?}", held, required);
        }

        #[test]
        fn serde_round_trip(pks in proptest::collection::btree_set("[0-9]{1,4}", 0..4), search in proptest::option::of(proptest::collection::btree_set("[a-z-]{1,8}", 1..3)), limit in proptest::option::of(0u64..100)) {
            let mut p = Permissions::new();
            p.grant(name("files.view_file"), Scope { pks: Some(pks), search, limit });
            p.grant(name("files.add_file"), Scope::unrestricted());
            let s = serde_json::to_string(&p).unwrap();
            let back: Permissions = serde_json::from_str(&s).unwrap();
            prop_assert_eq!(back, p);
        }
    }
}
