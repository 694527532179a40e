//! Business rules: declarative checks over the inventory that turn it into findings (KAT-NO-SPF on
//! a hostname without an SPF record, KAT-OPEN-DATABASE-PORT on an address with port 5432 open, ...),
//! the way the original's `business_rules.py` does, without its SQL.
//!
//! - A rule ([`Rule`]) is loaded from a JSON list (`plugins/business_rules.json`): its `name`,
//!   `description`, `enabled` default, `object_type` (`hostname` or `ipaddress`, the subject),
//!   `condition` ([`condition`]: the condition language), `finding_type` and `requires` (plugin
//!   ids). [`RuleSet::parse`] and [`RuleSet::load`] refuse a bad rule naming the file, the rule
//!   and the field.
//! - A rule asserts its finding on every subject the condition holds for, and retracts its own
//!   assertion when the condition stops holding (the inverse). A finding lists the rules asserting
//!   it (`source_rules`, [`crate::object::Finding::source_rules`]); a rule retracts only its own
//!   name, and only a finding that rules alone ever wrote is deleted when its last rule retracts
//!   it. A finding a task or an operator wrote stays.
//! - `requires`: the rule applies only to subjects that a completed task of each required plugin
//!   had as its target ([`RuleCatalog::mark_processed`]).
//! - Evaluation ([`RuleRunner`]): incremental on the objects a write touched and the subjects they
//!   affect ([`RuleRunner::objects_written`]), or a full pass over an organization
//!   ([`RuleRunner::run_org`]). Enablement is per organization ([`RuleCatalog`], like plugin
//!   overrides).
//!
//! ```
//! use kat_core::rules::RuleSet;
//! let rules = RuleSet::parse(r#"[{"name": "missing_caa", "description": "No CAA record",
//!     "object_type": "hostname", "finding_type": "KAT-NO-CAA", "requires": ["dns"],
//!     "condition": {"not": {"has": {"type": "dnscaarecord"}}}}]"#, "business_rules.json").unwrap();
//! assert_eq!(rules.get("missing_caa").unwrap().finding_type, "KAT-NO-CAA");
//! let bad = RuleSet::parse(r#"[{"name": "x", "object_type": "hostname", "finding_type": "KAT-X",
//!     "condition": {"has": {"type": "dnstxtrecord", "where": {"colour": {"eq": "red"}}}}}]"#, "f.json");
//! assert!(bad.unwrap_err().to_string().contains("f.json[0]: rule \"x\": condition.has.where.colour"));
//! ```

pub mod condition;
mod runner;
mod store;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::object::ObjectType;
use crate::{Error, Result};

pub use condition::Condition;
pub use runner::{PassReport, RuleRunner};
pub use store::RuleCatalog;

/// One business rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its name: `[a-z0-9_-]`, 1 to 64 characters, unique in the set.
    pub name: String,
    /// What it checks, in words.
    pub description: String,
    /// Whether it runs for an organization without an override.
    pub enabled: bool,
    /// The subject type: hostname or ipaddress.
    pub object_type: ObjectType,
    /// When it holds for a subject.
    pub condition: Condition,
    /// The code of the finding it asserts.
    pub finding_type: String,
    /// Plugins that must have processed a subject (a completed task had it as a target).
    pub requires: Vec<String>,
    /// The condition as written, for listing.
    pub condition_json: Value,
}

/// A rule as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleView {
    /// Its name.
    pub name: String,
    /// What it checks.
    pub description: String,
    /// The subject type.
    pub object_type: &'static str,
    /// The finding type it asserts.
    pub finding_type: String,
    /// Required plugins.
    pub requires: Vec<String>,
    /// The file's default.
    pub enabled_by_default: bool,
    /// Whether it runs for the organization asking.
    pub enabled: bool,
    /// The condition as written.
    pub condition: Value,
}

impl Rule {
    /// The API's view of this rule for an organization whose override is `org_override`.
    pub fn view(&self, org_override: Option<bool>) -> RuleView {
        RuleView {
            name: self.name.clone(),
            description: self.description.clone(),
            object_type: self.object_type.as_str(),
            finding_type: self.finding_type.clone(),
            requires: self.requires.clone(),
            enabled_by_default: self.enabled,
            enabled: org_override.unwrap_or(self.enabled),
            condition: self.condition_json.clone(),
        }
    }

    /// Parse one rule; `at` names it in errors (`file[3]`).
    ///
    /// # Errors
    /// [`Error::Invalid`] at `<at>: rule "<name>": <field>`.
    pub fn from_json(v: &Value, at: &str) -> Result<Rule> {
        let m = condition::object_of(v, at)?;
        let name = match m.get("name") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(Error::invalid(
                    format!("{at}: name"),
                    "expected the rule's name, a string",
                ));
            }
        };
        let at = format!("{at}: rule {name:?}");
        let field = |f: &str| format!("{at}: {f}");
        if !check_name(&name) {
            return Err(Error::invalid(
                field("name"),
                "a rule name is 1 to 64 characters of a-z, 0-9, _ and -",
            ));
        }
        const KEYS: [&str; 7] = [
            "name",
            "description",
            "enabled",
            "object_type",
            "condition",
            "finding_type",
            "requires",
        ];
        for k in m.keys() {
            if !KEYS.contains(&k.as_str()) {
                return Err(Error::invalid(
                    field(k),
                    format!("unknown field; a rule has {}", KEYS.join(", ")),
                ));
            }
        }
        let description = match m.get("description") {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(Error::invalid(field("description"), "expected a string")),
        };
        let enabled = match m.get("enabled") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Error::invalid(field("enabled"), "expected true or false")),
        };
        let object_type = match m.get("object_type") {
            Some(Value::String(s)) => match s.parse::<ObjectType>() {
                Ok(t @ (ObjectType::Hostname | ObjectType::IpAddress)) => t,
                _ => {
                    return Err(Error::invalid(
                        field("object_type"),
                        format!("{s:?} is not a rule subject; use hostname or ipaddress"),
                    ));
                }
            },
            _ => {
                return Err(Error::invalid(
                    field("object_type"),
                    "expected hostname or ipaddress",
                ));
            }
        };
        let finding_type = match m.get("finding_type") {
            Some(Value::String(s)) => {
                crate::object::check_code(s).map_err(|e| match e {
                    Error::Invalid { message, .. } => {
                        Error::invalid(field("finding_type"), message)
                    }
                    other => other,
                })?;
                s.clone()
            }
            _ => {
                return Err(Error::invalid(
                    field("finding_type"),
                    "expected a finding type code (KAT-NO-SPF)",
                ));
            }
        };
        let requires = match m.get("requires") {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, r) in items.iter().enumerate() {
                    match r.as_str() {
                        Some(s) if !s.is_empty() => out.push(s.to_string()),
                        _ => {
                            return Err(Error::invalid(
                                field(&format!("requires[{i}]")),
                                "expected a plugin id",
                            ));
                        }
                    }
                }
                out
            }
            Some(_) => {
                return Err(Error::invalid(
                    field("requires"),
                    "expected a list of plugin ids",
                ));
            }
        };
        let condition_json = m
            .get("condition")
            .cloned()
            .ok_or_else(|| Error::invalid(field("condition"), "a rule needs a condition"))?;
        let condition = Condition::parse(&condition_json, object_type, &field("condition"))?;
        Ok(Rule {
            name,
            description,
            enabled,
            object_type,
            condition,
            finding_type,
            requires,
            condition_json,
        })
    }
}

fn check_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The rules of a deployment, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSet {
    rules: BTreeMap<String, Rule>,
}

impl RuleSet {
    /// Parse a rules file (a JSON list of rules); `origin` names it in errors.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the file, the rule and the field; a name used twice too.
    pub fn parse(text: &str, origin: &str) -> Result<RuleSet> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(origin, format!("not valid JSON: {e}")))?;
        let Value::Array(items) = v else {
            return Err(Error::invalid(origin, "expected a JSON list of rules"));
        };
        let mut rules = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{origin}[{i}]");
            let rule = Rule::from_json(item, &at)?;
            if rules.contains_key(&rule.name) {
                return Err(Error::invalid(
                    format!("{at}: rule {:?}: name", rule.name),
                    "duplicate rule name",
                ));
            }
            rules.insert(rule.name.clone(), rule);
        }
        Ok(RuleSet { rules })
    }

    /// Read and parse a rules file.
    ///
    /// # Errors
    /// As [`RuleSet::parse`], or [`Error::Invalid`] naming a file that cannot be read.
    pub fn load(path: &Path) -> Result<RuleSet> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(&origin, format!("cannot read: {e}")))?;
        Self::parse(&text, &origin)
    }

    /// Check that every required plugin is one of `plugin_ids`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the file, the rule and the unknown plugin.
    pub fn check_plugins(&self, origin: &str, plugin_ids: &[&str]) -> Result<()> {
        for r in self.rules.values() {
            for (i, p) in r.requires.iter().enumerate() {
                if !plugin_ids.contains(&p.as_str()) {
                    return Err(Error::invalid(
                        format!("{origin}: rule {:?}: requires[{i}]", r.name),
                        format!("no plugin {p:?} in the catalogue"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// One rule.
    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.get(name)
    }

    /// Every rule, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.values()
    }

    /// How many rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules that run for an organization with these overrides.
    pub fn enabled_for<'a>(&'a self, overrides: &'a BTreeMap<String, bool>) -> Vec<&'a Rule> {
        self.rules
            .values()
            .filter(|r| overrides.get(&r.name).copied().unwrap_or(r.enabled))
            .collect()
    }
}

#[cfg(test)]
mod tests;
