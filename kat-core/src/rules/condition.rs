//! The condition language of business rules: what a rule's `condition` says, parsed from JSON and
//! evaluated on one subject (a hostname or an IP address) over a [`Snapshot`] of related objects.
//!
//! A condition is a JSON object with exactly one of these keys:
//!
//! | key | value | holds when |
//! | --- | --- | --- |
//! | `all` | a non-empty list of conditions | every one holds |
//! | `any` | a non-empty list of conditions | at least one holds |
//! | `not` | a condition | it does not hold |
//! | `where` | `{field: predicate, ...}` | every named field of the subject itself matches |
//! | `has` | a relation (below) | at least `at_least` related objects match |
//!
//! A relation (`has`) names the related objects: `type` (an object type: a DNS record type or
//! `ipport`) and `via` (the field of that type that refers to the subject: by default a record's
//! `hostname` or a port's `address`; `name_server` of `dnsnsrecord` makes "is a name server").
//! Optional: `where` (field predicates on the related object), `software` (predicates on the name
//! and version of a port's listed software; some listed software must match), `target` (a condition
//! on the object at the other end of a record: the name server of an NS record found by its
//! `hostname`, the address of an A record, the owner of a record found by its `name_server`, ...),
//! `scope` (`self`, the default, or `self_or_parents`: records of the hostname or of any of its
//! parent domains, e.g. a `_dmarc` record of the registered domain) and `at_least` (default 1).
//!
//! A predicate is an object with exactly one key: `eq` (a string, number, boolean or null), `in`
//! and `not_in` (lists of those), or `contains`, `starts_with`, `ends_with` (a string, compared
//! without regard to case). Values compare by their text form (`80`, `TCP`, `internet|example.com`):
//! what the objects API's filters compare.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{Map, Value};

use crate::object::{DnsData, NaturalKey, Object, ObjectType};
use crate::{Error, Result};

/// A field predicate.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// The value's text equals this.
    Eq(String),
    /// The value's text is one of these.
    In(Vec<String>),
    /// The value's text is none of these.
    NotIn(Vec<String>),
    /// The value's text contains this, ignoring case.
    Contains(String),
    /// The value's text starts with this, ignoring case.
    StartsWith(String),
    /// The value's text ends with this, ignoring case.
    EndsWith(String),
}

impl Predicate {
    /// Whether a value (its text form, `None` for a field the object lacks) matches.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let v = value.unwrap_or("null");
        match self {
            Predicate::Eq(x) => v == x,
            Predicate::In(xs) => xs.iter().any(|x| x == v),
            Predicate::NotIn(xs) => !xs.iter().any(|x| x == v),
            Predicate::Contains(x) => v.to_lowercase().contains(x.as_str()),
            Predicate::StartsWith(x) => v.to_lowercase().starts_with(x.as_str()),
            Predicate::EndsWith(x) => v.to_lowercase().ends_with(x.as_str()),
        }
    }

    fn parse(v: &Value, at: &str) -> Result<Predicate> {
        let (op, arg) = single_key(
            v,
            at,
            "a predicate: {\"eq\"|\"in\"|\"not_in\"|\"contains\"|\"starts_with\"|\"ends_with\": value}",
        )?;
        let at = format!("{at}.{op}");
        let text = |v: &Value| -> Result<String> {
            match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                Value::Null => Ok("null".into()),
                _ => Err(Error::invalid(
                    &at,
                    "expected a string, number, boolean or null",
                )),
            }
        };
        let list = |v: &Value| -> Result<Vec<String>> {
            let Value::Array(items) = v else {
                return Err(Error::invalid(&at, "expected a list of values"));
            };
            if items.is_empty() {
                return Err(Error::invalid(&at, "expected at least one value"));
            }
            items.iter().map(text).collect()
        };
        let lower = |v: &Value| -> Result<String> {
            match v {
                Value::String(s) if !s.is_empty() => Ok(s.to_lowercase()),
                _ => Err(Error::invalid(&at, "expected a non-empty string")),
            }
        };
        Ok(match op {
            "eq" => Predicate::Eq(text(arg)?),
            "in" => Predicate::In(list(arg)?),
            "not_in" => Predicate::NotIn(list(arg)?),
            "contains" => Predicate::Contains(lower(arg)?),
            "starts_with" => Predicate::StartsWith(lower(arg)?),
            "ends_with" => Predicate::EndsWith(lower(arg)?),
            other => {
                return Err(Error::invalid(
                    at,
                    format!(
                        "unknown predicate {other:?}; use eq, in, not_in, contains, starts_with or ends_with"
                    ),
                ));
            }
        })
    }
}

/// Field predicates, all of which must match.
pub type Predicates = Vec<(String, Predicate)>;

/// Which hostnames' records a relation looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The subject's own.
    Own,
    /// The subject's and those of each of its parent domains of two labels or more.
    SelfOrParents,
}

/// Related objects that must exist (`has`).
#[derive(Debug, Clone, PartialEq)]
pub struct Has {
    /// Their type.
    pub object_type: ObjectType,
    /// Their field that refers to the subject.
    pub via: &'static str,
    /// Predicates on them.
    pub filter: Predicates,
    /// Predicates on a port's listed software (`name`, `version`).
    pub software: Option<Predicates>,
    /// A condition on the object at the other end of each (see [`other_end`]).
    pub target: Option<Box<Condition>>,
    /// Whose records count.
    pub scope: Scope,
    /// How many must match.
    pub at_least: u32,
}

/// A condition on a subject.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Every one holds.
    All(Vec<Condition>),
    /// At least one holds.
    Any(Vec<Condition>),
    /// It does not hold.
    Not(Box<Condition>),
    /// The subject's own fields match.
    Where(Predicates),
    /// Related objects exist.
    Has(Has),
}

fn single_key<'a>(v: &'a Value, at: &str, what: &str) -> Result<(&'a str, &'a Value)> {
    match v {
        Value::Object(m) if m.len() == 1 => {
            let (k, v) = m.iter().next().ok_or_else(|| Error::invalid(at, "empty"))?;
            Ok((k.as_str(), v))
        }
        _ => Err(Error::invalid(
            at,
            format!("expected {what}, an object with exactly one key"),
        )),
    }
}

/// The type a relation field of `ty` refers to (`hostname` of a record: a hostname).
pub fn relation_target(ty: ObjectType, field: &str) -> Option<ObjectType> {
    use ObjectType as T;
    match (ty, field) {
        (t, "hostname") if t.is_dns_record() => Some(T::Hostname),
        (T::DnsARecord | T::DnsAaaaRecord | T::DnsPtrRecord, "ip_address") => Some(T::IpAddress),
        (T::DnsCnameRecord, "target")
        | (T::DnsNsRecord, "name_server")
        | (T::DnsMxRecord, "mail_server") => Some(T::Hostname),
        (T::IpPort, "address") => Some(T::IpAddress),
        _ => None,
    }
}

/// The field at the other end of a record found by `via` (`name_server` for an NS record found by
/// its `hostname`, `hostname` for one found by its `name_server`); `None` for records with one end.
pub fn other_field(ty: ObjectType, via: &str) -> Option<&'static str> {
    use ObjectType as T;
    let far = match ty {
        T::DnsARecord | T::DnsAaaaRecord | T::DnsPtrRecord => "ip_address",
        T::DnsCnameRecord => "target",
        T::DnsNsRecord => "name_server",
        T::DnsMxRecord => "mail_server",
        _ => return None,
    };
    if via == "hostname" {
        Some(far)
    } else if via == far {
        Some("hostname")
    } else {
        None
    }
}

/// The object at the other end of `record`, found by its field `via`.
pub fn other_end(record: &Object, via: &str) -> Option<Object> {
    let Object::Dns(r) = record else {
        return None;
    };
    if via != "hostname" {
        return Some(Object::Hostname(r.hostname.clone()));
    }
    match &r.data {
        DnsData::A(ip) | DnsData::Aaaa(ip) | DnsData::Ptr(ip) => {
            Some(Object::IpAddress(ip.clone()))
        }
        DnsData::Cname(t) | DnsData::Ns(t) => Some(Object::Hostname(t.clone())),
        DnsData::Mx {
            mail_server: Some(m),
            ..
        } => Some(Object::Hostname(m.clone())),
        _ => None,
    }
}

fn parse_predicates(v: &Value, at: &str, fields: &[&str], on: &str) -> Result<Predicates> {
    let Value::Object(m) = v else {
        return Err(Error::invalid(
            at,
            "expected an object of {field: predicate}",
        ));
    };
    if m.is_empty() {
        return Err(Error::invalid(at, "expected at least one field"));
    }
    let mut out = Vec::new();
    for (field, p) in m {
        if !fields.contains(&field.as_str()) {
            return Err(Error::invalid(
                format!("{at}.{field}"),
                format!(
                    "{on} has no field {field:?}; its fields are {}",
                    fields.join(", ")
                ),
            ));
        }
        out.push((
            field.clone(),
            Predicate::parse(p, &format!("{at}.{field}"))?,
        ));
    }
    Ok(out)
}

impl Condition {
    /// Parse a condition on a subject of type `subject`; `at` names where it is in errors.
    ///
    /// ```
    /// use kat_core::object::ObjectType;
    /// use kat_core::rules::condition::Condition;
    /// let c = Condition::parse(&serde_json::json!({"not": {"has": {"type": "dnscaarecord"}}}),
    ///     ObjectType::Hostname, "condition").unwrap();
    /// assert!(matches!(c, Condition::Not(_)));
    /// let e = Condition::parse(&serde_json::json!({"has": {"type": "ipport"}}), ObjectType::Hostname, "condition");
    /// assert!(e.unwrap_err().to_string().contains("condition.has.via"));
    /// ```
    ///
    /// # Errors
    /// [`Error::Invalid`] at the path of the offending part.
    pub fn parse(v: &Value, subject: ObjectType, at: &str) -> Result<Condition> {
        let (op, arg) = single_key(
            v,
            at,
            "a condition: {\"all\"|\"any\"|\"not\"|\"where\"|\"has\": ...}",
        )?;
        let at = format!("{at}.{op}");
        let list = |arg: &Value| -> Result<Vec<Condition>> {
            let Value::Array(items) = arg else {
                return Err(Error::invalid(&at, "expected a list of conditions"));
            };
            if items.is_empty() {
                return Err(Error::invalid(&at, "expected at least one condition"));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, c)| Condition::parse(c, subject, &format!("{at}[{i}]")))
                .collect()
        };
        Ok(match op {
            "all" => Condition::All(list(arg)?),
            "any" => Condition::Any(list(arg)?),
            "not" => Condition::Not(Box::new(Condition::parse(arg, subject, &at)?)),
            "where" => Condition::Where(parse_predicates(
                arg,
                &at,
                subject.fields(),
                subject.as_str(),
            )?),
            "has" => Condition::Has(Has::parse(arg, subject, &at)?),
            other => {
                return Err(Error::invalid(
                    at,
                    format!("unknown condition {other:?}; use all, any, not, where or has"),
                ));
            }
        })
    }

    /// Every relation in this condition, nested ones included.
    pub fn relations(&self) -> Vec<&Has> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Has>) {
        match self {
            Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| c.collect(out)),
            Condition::Not(c) => c.collect(out),
            Condition::Where(_) => {}
            Condition::Has(h) => {
                out.push(h);
                if let Some(t) = &h.target {
                    t.collect(out);
                }
            }
        }
    }

    /// Evaluate on `subject` (a hostname or an address, with its key) over `snap`. `None` when
    /// `snap` lacks something the answer depends on; that is then added to `needs`.
    pub fn eval(
        &self,
        subject: &Object,
        key: &NaturalKey,
        snap: &Snapshot,
        needs: &mut Needs,
    ) -> Option<bool> {
        match self {
            Condition::All(cs) => {
                let mut unknown = false;
                for c in cs {
                    match c.eval(subject, key, snap, needs) {
                        Some(false) => return Some(false),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                (!unknown).then_some(true)
            }
            Condition::Any(cs) => {
                let mut unknown = false;
                for c in cs {
                    match c.eval(subject, key, snap, needs) {
                        Some(true) => return Some(true),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                (!unknown).then_some(false)
            }
            Condition::Not(c) => c.eval(subject, key, snap, needs).map(|b| !b),
            Condition::Where(ps) => Some(fields_match(subject, ps)),
            Condition::Has(h) => h.eval(subject, key, snap, needs),
        }
    }
}

fn fields_match(o: &Object, ps: &Predicates) -> bool {
    ps.iter().all(|(f, p)| {
        let v = o.field(f).map(|v| v.filter_text());
        p.matches(v.as_deref())
    })
}

/// The keys of `h`'s hostname and its parents of two labels or more, own key first.
fn scope_keys(subject: &Object, key: &NaturalKey, scope: Scope) -> Vec<NaturalKey> {
    let mut out = vec![key.clone()];
    if scope == Scope::SelfOrParents
        && let Object::Hostname(h) = subject
    {
        let labels: Vec<&str> = h.name.split('.').collect();
        for i in 1..labels.len().saturating_sub(1) {
            let parent = labels[i..].join(".");
            out.push(NaturalKey::from_parts([
                h.network.as_str(),
                parent.as_str(),
            ]));
        }
    }
    out
}

impl Has {
    fn parse(v: &Value, subject: ObjectType, at: &str) -> Result<Has> {
        let Value::Object(m) = v else {
            return Err(Error::invalid(at, "expected an object with \"type\""));
        };
        const KEYS: [&str; 7] = [
            "type", "via", "where", "software", "target", "scope", "at_least",
        ];
        for k in m.keys() {
            if !KEYS.contains(&k.as_str()) {
                return Err(Error::invalid(
                    format!("{at}.{k}"),
                    format!("unknown field {k:?}; a relation has {}", KEYS.join(", ")),
                ));
            }
        }
        let field = |k: &str| format!("{at}.{k}");
        let ty_name = m
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid(field("type"), "expected an object type name"))?;
        let object_type: ObjectType = ty_name.parse().map_err(|_| {
            Error::invalid(field("type"), format!("unknown object type {ty_name:?}"))
        })?;
        if !(object_type.is_dns_record() || object_type == ObjectType::IpPort) {
            return Err(Error::invalid(
                field("type"),
                format!("a relation is to DNS records or ports, not {object_type}"),
            ));
        }
        let via: &'static str = match m.get("via") {
            None => {
                if object_type == ObjectType::IpPort {
                    "address"
                } else {
                    "hostname"
                }
            }
            Some(Value::String(s)) => object_type
                .fields()
                .iter()
                .copied()
                .find(|f| *f == s)
                .ok_or_else(|| {
                    Error::invalid(field("via"), format!("{object_type} has no field {s:?}"))
                })?,
            Some(_) => return Err(Error::invalid(field("via"), "expected a field name")),
        };
        match relation_target(object_type, via) {
            Some(t) if t == subject => {}
            Some(t) => {
                return Err(Error::invalid(
                    field("via"),
                    format!("{object_type}.{via} refers to a {t}, not to the subject, a {subject}"),
                ));
            }
            None => {
                return Err(Error::invalid(
                    field("via"),
                    format!("{object_type}.{via} does not refer to another object"),
                ));
            }
        }
        let filter = match m.get("where") {
            Some(w) => parse_predicates(
                w,
                &field("where"),
                object_type.fields(),
                object_type.as_str(),
            )?,
            None => Vec::new(),
        };
        let software = match m.get("software") {
            None => None,
            Some(_) if object_type != ObjectType::IpPort => {
                return Err(Error::invalid(
                    field("software"),
                    "only ports list software",
                ));
            }
            Some(s) => Some(parse_predicates(
                s,
                &field("software"),
                &["name", "version"],
                "software",
            )?),
        };
        let target = match m.get("target") {
            None => None,
            Some(t) => {
                let far = other_field(object_type, via).ok_or_else(|| {
                    Error::invalid(
                        field("target"),
                        format!("{object_type} found by {via} has no other end"),
                    )
                })?;
                let far_ty = relation_target(object_type, far)
                    .ok_or_else(|| Error::invalid(field("target"), "no other end"))?;
                Some(Box::new(Condition::parse(t, far_ty, &field("target"))?))
            }
        };
        let scope = match m.get("scope").map(|s| s.as_str()) {
            None | Some(Some("self")) => Scope::Own,
            Some(Some("self_or_parents")) if subject == ObjectType::Hostname => {
                Scope::SelfOrParents
            }
            Some(Some("self_or_parents")) => {
                return Err(Error::invalid(
                    field("scope"),
                    "self_or_parents needs a hostname subject",
                ));
            }
            _ => {
                return Err(Error::invalid(
                    field("scope"),
                    "expected \"self\" or \"self_or_parents\"",
                ));
            }
        };
        let at_least = match m.get("at_least") {
            None => 1,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    Error::invalid(field("at_least"), "expected a whole number from 1 to 1000")
                })? as u32,
        };
        Ok(Has {
            object_type,
            via,
            filter,
            software,
            target,
            scope,
            at_least,
        })
    }

    /// Whether only the number of related objects matters: no `where`, `software` or `target`.
    pub fn is_plain(&self) -> bool {
        self.filter.is_empty() && self.software.is_none() && self.target.is_none()
    }

    fn eval(
        &self,
        subject: &Object,
        key: &NaturalKey,
        snap: &Snapshot,
        needs: &mut Needs,
    ) -> Option<bool> {
        let mut count = 0u32;
        let mut unknown = false;
        let plain = self.is_plain();
        for k in scope_keys(subject, key, self.scope) {
            if plain
                && snap
                    .related(self.object_type, self.via, k.as_str())
                    .is_none()
            {
                // Only how many there are matters: a count, when one was read.
                match snap.count(self.object_type, self.via, k.as_str()) {
                    Some(n) if n >= self.at_least as usize => return Some(true),
                    Some(n) => count += n as u32,
                    None => {
                        needs
                            .counts
                            .insert((self.object_type, self.via, k.into_string()));
                        unknown = true;
                    }
                }
                if count >= self.at_least {
                    return Some(true);
                }
                continue;
            }
            let Some(related) = snap.related(self.object_type, self.via, k.as_str()) else {
                needs
                    .related
                    .insert((self.object_type, self.via, k.into_string()));
                unknown = true;
                continue;
            };
            for r in related {
                if !fields_match(r, &self.filter) {
                    continue;
                }
                if let Some(sw) = &self.software
                    && !software_matches(r, sw)
                {
                    continue;
                }
                if let Some(t) = &self.target {
                    let Some(far) = other_end(r, self.via) else {
                        continue;
                    };
                    let far_key = far.natural_key();
                    match t.eval(&far, &far_key, snap, needs) {
                        Some(true) => {}
                        Some(false) => continue,
                        None => {
                            unknown = true;
                            continue;
                        }
                    }
                }
                count += 1;
                if count >= self.at_least {
                    return Some(true);
                }
            }
        }
        (!unknown).then_some(false)
    }
}

/// Whether some software a port lists matches: by its key, `name` or `name|version`.
fn software_matches(port: &Object, ps: &Predicates) -> bool {
    let Object::IpPort(p) = port else {
        return false;
    };
    p.software.iter().any(|k| {
        let parts = k.parts();
        ps.iter().all(|(f, pred)| {
            let v = match f.as_str() {
                "name" => parts.first().map(String::as_str),
                "version" => parts.get(1).map(String::as_str),
                _ => None,
            };
            pred.matches(v)
        })
    })
}

/// What an evaluation needs and a [`Snapshot`] lacks: related objects by `(type, via, key)`.
#[derive(Debug, Default)]
pub struct Needs {
    /// Lookups of related objects of a type whose field `via` is a key.
    pub related: BTreeSet<(ObjectType, &'static str, String)>,
    /// Counts of related objects of a type whose field `via` is a key (for a relation whose
    /// objects need not be looked at, [`Has::is_plain`]).
    pub counts: BTreeSet<(ObjectType, &'static str, String)>,
}

impl Needs {
    /// Whether nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.related.is_empty() && self.counts.is_empty()
    }
}

/// The related objects an evaluation looks at: everything of the types the rules use (a full
/// pass), or what was loaded for the subjects at hand (an incremental pass).
#[derive(Debug, Default)]
pub struct Snapshot {
    complete: HashSet<(ObjectType, &'static str)>,
    related: HashMap<(ObjectType, &'static str), HashMap<String, Vec<Object>>>,
    counts: HashMap<(ObjectType, &'static str), HashMap<String, usize>>,
}

impl Snapshot {
    /// How many objects of `ty` have `via` equal to `key` (capped at what was asked for when read
    /// with [`Snapshot::load_counts`]), or `None` when unknown.
    pub fn count(&self, ty: ObjectType, via: &'static str, key: &str) -> Option<usize> {
        if let Some(r) = self.related(ty, via, key) {
            return Some(r.len());
        }
        self.counts
            .get(&(ty, via))
            .and_then(|m| m.get(key))
            .copied()
    }

    /// Record how many objects of `ty` have `via` equal to each of `keys` (`counts` in the same
    /// order), each capped at no less than any relation on them asks for.
    pub fn load_counts(
        &mut self,
        ty: ObjectType,
        via: &'static str,
        keys: &[String],
        counts: &[usize],
    ) {
        let m = self.counts.entry((ty, via)).or_default();
        for (k, n) in keys.iter().zip(counts) {
            m.insert(k.clone(), *n);
        }
    }

    /// Objects of `ty` whose `via` is `key`, or `None` when not loaded.
    pub fn related(&self, ty: ObjectType, via: &'static str, key: &str) -> Option<&[Object]> {
        let m = self.related.get(&(ty, via));
        match m.and_then(|m| m.get(key)) {
            Some(v) => Some(v.as_slice()),
            None if self.complete.contains(&(ty, via)) => Some(&[]),
            None => None,
        }
    }

    /// Record every object of `ty` (all of them): lookups by `via` miss nothing from now on.
    pub fn load_all(&mut self, ty: ObjectType, via: &'static str, objects: &[Object]) {
        let m = self.related.entry((ty, via)).or_default();
        for o in objects {
            if let Some(v) = o.field(via) {
                m.entry(v.filter_text()).or_default().push(o.clone());
            }
        }
        self.complete.insert((ty, via));
    }

    /// Record the objects of `ty` whose `via` is one of `keys` (each key gets an entry, empty when
    /// none matched).
    pub fn load_some(
        &mut self,
        ty: ObjectType,
        via: &'static str,
        keys: &[String],
        objects: Vec<Object>,
    ) {
        let m = self.related.entry((ty, via)).or_default();
        for k in keys {
            m.entry(k.clone()).or_default();
        }
        for o in objects {
            if let Some(v) = o.field(via) {
                m.entry(v.filter_text()).or_default().push(o);
            }
        }
    }
}

/// Parse the fields of a JSON object into a map, for callers that check unknown keys.
pub(crate) fn object_of<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(Error::invalid(at, "expected a JSON object")),
    }
}
