//! The storage contracts: objects ([`ObjectStore`]), file contents ([`FileStore`]) and everything else
//! that must survive a restart, one trait per concern: tasks and schedule claims ([`TaskQueue`]),
//! schedules and object sets ([`ScheduleStore`]), organizations ([`OrgStore`]), the plugin catalogue
//! ([`PluginCatalog`]), revoked tokens ([`RevocationList`]), business rules' state ([`RuleCatalog`](crate::rules::RuleCatalog)) and replicas' heartbeats ([`ReplicaRegistry`]). [`TaskStore`] is all seven at once,
//! implemented for every type that implements them.
//!
//! Checks every backend needs (query validation, empty key lists, the scan-level check, file names and
//! types) are made here, in provided methods ([`ObjectStore::query`], [`ObjectStore::set_scan_profile`],
//! [`FileStore::put`], [`FileStore::query`]) that call the method a backend implements
//! (`query_valid`, `set_scan_profile_valid`, `put_valid`) only with valid input.
//!
//! Implementations: the in-memory reference backends in [`crate::memory`] and `kat-store-sled`. The
//! conformance suites (feature `conformance`) hold every implementation to the same behaviour, one
//! suite per trait.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::str::FromStr;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::Timestamp;
use crate::object::{NaturalKey, Object, ObjectType, ScanLevel, ScanProfile};
use crate::org::{OrgCode, Organization};
use crate::plugin::{PluginRecord, check_file_type};
use crate::replica::ReplicaInfo;
use crate::schedule::{ObjectSet, ObjectSetId, Schedule, ScheduleId};
use crate::task::{ObjectRef, Task, TaskId, TaskPatch, TaskState};
use crate::{Error, Result};

/// A stream of bytes: file contents going in or out, never held whole in memory.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Default page size of lists (the original's `PAGE_SIZE`).
pub const DEFAULT_LIMIT: usize = 100;

/// One page of a list and the total number of matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// How many items match in all.
    pub count: u64,
    /// The items of this page.
    pub items: Vec<T>,
}

/// An ordering: a field, ascending or descending (`-name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ordering {
    /// The field.
    pub field: String,
    /// Highest first.
    pub descending: bool,
}

impl Ordering {
    /// Parse `name` or `-name`.
    pub fn parse(s: &str) -> Self {
        match s.strip_prefix('-') {
            Some(f) => Ordering {
                field: f.to_string(),
                descending: true,
            },
            None => Ordering {
                field: s.to_string(),
                descending: false,
            },
        }
    }
}

/// An object as stored: the object, its organization, scan profile and attribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredObject {
    /// The organization it belongs to.
    pub org: OrgCode,
    /// Its natural key.
    pub key: NaturalKey,
    /// The object.
    pub object: Object,
    /// Its scan profile (networks, hostnames and addresses only): the effective level, declared or
    /// inherited ([`crate::levels`]).
    pub scan: Option<ScanProfile>,
    /// For an inherited level, the object it comes from ([`crate::levels`]); `None` for a declared
    /// level, no level, or a type without levels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited_from: Option<ObjectRef>,
    /// When it was first stored.
    pub created_at: Timestamp,
    /// When it was last written.
    pub last_seen: Timestamp,
    /// The task that first stored it.
    pub created_by: Option<TaskId>,
    /// The task that last wrote it.
    pub last_seen_by: Option<TaskId>,
}

impl StoredObject {
    /// Its type.
    pub fn object_type(&self) -> ObjectType {
        self.object.object_type()
    }

    /// The API's JSON form: `id` (the natural key), the object's fields, the scan level (`scan_level`,
    /// the effective one; `declared`; `inherited_from`, the source of an inherited level as
    /// `{"object_type", "id"}` or `null`), dates and the tasks that created it and last wrote it
    /// (`created_by`, `last_seen_by`).
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), self.key.as_str().into());
        m.extend(self.object.to_json());
        if let Some(p) = &self.scan {
            m.insert("scan_level".into(), p.level.map(ScanLevel::get).into());
            m.insert("declared".into(), p.declared.into());
            m.insert(
                "inherited_from".into(),
                self.inherited_from
                    .as_ref()
                    .map_or(Value::Null, |r| {
                        serde_json::json!({"object_type": r.object_type.as_str(), "id": r.key.as_str()})
                    }),
            );
        }
        m.insert("created_at".into(), self.created_at.to_string().into());
        m.insert("last_seen".into(), self.last_seen.to_string().into());
        m.insert(
            "created_by".into(),
            self.created_by.map(|t| t.to_string()).into(),
        );
        m.insert(
            "last_seen_by".into(),
            self.last_seen_by.map(|t| t.to_string()).into(),
        );
        m
    }

    /// [`StoredObject::to_json`]'s JSON as a [`Serialize`] value, written without building a map of
    /// [`Value`]s for the stored fields first (the API answers with up to thousands of objects at
    /// once), followed by `extra` entries: an entry replaces a field of the same name, as
    /// [`Map::insert`] after `to_json` would. Serialized, it is the same bytes as `to_json` with
    /// `extra` inserted, keys in the same (sorted) order.
    ///
    /// ```
    /// use kat_core::clock::Timestamp;
    /// use kat_core::memory::merge_stored;
    /// use kat_core::object::{Object, ObjectType};
    /// use kat_core::org::OrgCode;
    /// use serde_json::{Value, json};
    ///
    /// let o = Object::from_json(ObjectType::Hostname, &json!({"name": "a.example"})).unwrap();
    /// let org = OrgCode::new("acme").unwrap();
    /// let stored = merge_stored(None, &org, o.natural_key(), o, None, Timestamp::now());
    /// let extra = [("dns_records", json!([]))];
    /// let mut map = stored.to_json();
    /// map.insert("dns_records".into(), json!([]));
    /// assert_eq!(
    ///     serde_json::to_string(&stored.json(&extra)).unwrap(),
    ///     serde_json::to_string(&Value::Object(map)).unwrap(),
    /// );
    /// ```
    pub fn json<'a>(&'a self, extra: &'a [(&'a str, Value)]) -> StoredObjectJson<'a> {
        StoredObjectJson {
            stored: self,
            extra,
        }
    }

    /// A field's value for filtering and ordering, including the stored ones (`id`, `scan_level`,
    /// `declared`, `created_at`, `last_seen`).
    pub fn field(&self, name: &str) -> Option<crate::object::FieldValue> {
        use crate::object::FieldValue;
        match name {
            "id" => Some(FieldValue::Text(self.key.as_str().to_string())),
            "scan_level" => Some(
                self.scan
                    .and_then(|p| p.level)
                    .map_or(FieldValue::Null, |l| FieldValue::Int(i64::from(l.get()))),
            ),
            "declared" => Some(
                self.scan
                    .map_or(FieldValue::Null, |p| FieldValue::Bool(p.declared)),
            ),
            "created_at" => Some(FieldValue::Int(self.created_at.as_millis())),
            "last_seen" => Some(FieldValue::Int(self.last_seen.as_millis())),
            other => self.object.field(other),
        }
    }
}

/// A [`StoredObject`]'s API JSON with extra entries, serialized directly ([`StoredObject::json`]).
#[derive(Debug, Clone, Copy)]
pub struct StoredObjectJson<'a> {
    stored: &'a StoredObject,
    extra: &'a [(&'a str, Value)],
}

/// One value of [`StoredObjectJson`].
enum JsonField<'a> {
    Value(&'a Value),
    Str(&'a str),
    Level(Option<u8>),
    Bool(bool),
    Time(Timestamp),
    Task(Option<TaskId>),
    From(Option<&'a ObjectRef>),
}

impl Serialize for JsonField<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            JsonField::Value(v) => v.serialize(s),
            JsonField::Str(v) => s.serialize_str(v),
            JsonField::Level(Some(l)) => s.serialize_u8(*l),
            JsonField::Bool(b) => s.serialize_bool(*b),
            JsonField::Time(t) => s.collect_str(t),
            JsonField::Task(Some(t)) => s.collect_str(t),
            JsonField::From(Some(r)) => {
                // `{"object_type", "id"}` with its keys in a map's (sorted) order.
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("id", r.key.as_str())?;
                m.serialize_entry("object_type", r.object_type.as_str())?;
                m.end()
            }
            JsonField::Level(None) | JsonField::Task(None) | JsonField::From(None) => {
                s.serialize_unit()
            }
        }
    }
}

/// Add `name` to `fields`, or replace the value of the entry of that name (a map's insert).
fn put_field<'f>(fields: &mut Vec<(&'f str, JsonField<'f>)>, name: &'f str, value: JsonField<'f>) {
    match fields.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = value,
        None => fields.push((name, value)),
    }
}

impl Serialize for StoredObjectJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let o = self.stored;
        let own = o.object.to_json();
        let mut f: Vec<(&str, JsonField<'_>)> =
            Vec::with_capacity(own.len() + 8 + self.extra.len());
        // In `to_json`'s order of insertion: a later entry replaces an earlier one of its name.
        put_field(&mut f, "id", JsonField::Str(o.key.as_str()));
        for (name, value) in &own {
            put_field(&mut f, name, JsonField::Value(value));
        }
        if let Some(p) = &o.scan {
            let level = p.level.map(ScanLevel::get);
            put_field(&mut f, "scan_level", JsonField::Level(level));
            put_field(&mut f, "declared", JsonField::Bool(p.declared));
            let from = o.inherited_from.as_ref();
            put_field(&mut f, "inherited_from", JsonField::From(from));
        }
        put_field(&mut f, "created_at", JsonField::Time(o.created_at));
        put_field(&mut f, "last_seen", JsonField::Time(o.last_seen));
        put_field(&mut f, "created_by", JsonField::Task(o.created_by));
        put_field(&mut f, "last_seen_by", JsonField::Task(o.last_seen_by));
        for (name, value) in self.extra {
            put_field(&mut f, name, JsonField::Value(value));
        }
        // A JSON object's keys in byte order, as `Map` (a `BTreeMap<String, _>`) keeps them.
        f.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut m = s.serialize_map(Some(f.len()))?;
        for (name, value) in &f {
            m.serialize_entry(name, value)?;
        }
        m.end()
    }
}

/// Fields every object query may order by besides the type's own.
pub const COMMON_ORDER_FIELDS: [&str; 4] = ["id", "scan_level", "created_at", "last_seen"];

/// Filters on what a store keeps beside an object's own fields, for types with scan levels
/// ([`ObjectType::has_scan_level`]): the effective scan level (declared or inherited; `null` for
/// none) and whether it is declared (`true`, `false`).
pub const LEVEL_FILTERS: [&str; 2] = ["scan_level", "declared"];

/// Every field a query of `ty` may filter by: [`ObjectType::fields`], and [`LEVEL_FILTERS`] for
/// types with scan levels.
///
/// ```
/// use kat_core::object::ObjectType;
/// use kat_core::store::filter_fields;
/// assert!(filter_fields(ObjectType::IpAddress).contains(&"scan_level"));
/// assert!(!filter_fields(ObjectType::IpPort).contains(&"scan_level"));
/// ```
pub fn filter_fields(ty: ObjectType) -> Vec<&'static str> {
    let mut out = ty.fields().to_vec();
    if ty.has_scan_level() {
        out.extend(LEVEL_FILTERS);
    }
    out
}

/// A query over objects of one type in one organization.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectQuery {
    /// The organization.
    pub org: OrgCode,
    /// The type.
    pub object_type: ObjectType,
    /// Field filters: every listed field must equal one of its values (text form, relations by key);
    /// the fields of [`filter_fields`].
    pub filters: Vec<(String, Vec<String>)>,
    /// Only these keys (the `id` filter, or a token's `pks`).
    pub keys: Option<Vec<NaturalKey>>,
    /// Case-insensitive substring of the natural key.
    pub search: Option<String>,
    /// Only objects whose scan level is at least this.
    pub min_scan_level: Option<ScanLevel>,
    /// The order; by key when `None`.
    pub ordering: Option<Ordering>,
    /// Page size; 0 means no limit (every match).
    pub limit: usize,
    /// Items to skip.
    pub offset: usize,
}

impl ObjectQuery {
    /// All objects of a type, first page.
    pub fn new(org: OrgCode, object_type: ObjectType) -> Self {
        ObjectQuery {
            org,
            object_type,
            filters: Vec::new(),
            keys: None,
            search: None,
            min_scan_level: None,
            ordering: None,
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }

    /// Add a filter (builder style).
    pub fn filter(mut self, field: &str, values: &[&str]) -> Self {
        self.filters.push((
            field.to_string(),
            values.iter().map(|s| s.to_string()).collect(),
        ));
        self
    }

    /// Check that every filter and the ordering name a field of the type.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the unknown field and listing the known ones.
    pub fn validate(&self) -> Result<()> {
        let fields = self.object_type.fields();
        let filters = filter_fields(self.object_type);
        for (f, values) in &self.filters {
            if !filters.contains(&f.as_str()) {
                return Err(Error::invalid(
                    f.as_str(),
                    format!(
                        "unknown filter {f:?} for {}; filters are {}, id, search, ordering, limit and offset",
                        self.object_type,
                        filters.join(", ")
                    ),
                ));
            }
            if values.is_empty() {
                return Err(Error::invalid(
                    f.as_str(),
                    "a filter needs at least one value",
                ));
            }
        }
        if let Some(o) = &self.ordering
            && !fields.contains(&o.field.as_str())
            && !COMMON_ORDER_FIELDS.contains(&o.field.as_str())
        {
            return Err(Error::invalid(
                "ordering",
                format!(
                    "cannot order {} by {:?}; use one of {}, {}",
                    self.object_type,
                    o.field,
                    fields.join(", "),
                    COMMON_ORDER_FIELDS.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Whether a stored object matches the filters, keys, search and scan level (not paging).
    pub fn matches(&self, o: &StoredObject) -> bool {
        if o.org != self.org || o.object_type() != self.object_type {
            return false;
        }
        if let Some(keys) = &self.keys
            && !keys.contains(&o.key)
        {
            return false;
        }
        if let Some(s) = &self.search
            && !o.key.as_str().to_lowercase().contains(&s.to_lowercase())
        {
            return false;
        }
        if let Some(min) = self.min_scan_level
            && !o.scan.is_some_and(|p| p.allows(min))
        {
            return false;
        }
        self.filters.iter().all(|(f, values)| {
            o.field(f)
                .is_some_and(|v| values.iter().any(|want| *want == v.filter_text()))
        })
    }

    /// Sort matches in this query's order (by key when none; ties by key).
    pub fn sort(&self, items: &mut [StoredObject]) {
        match &self.ordering {
            None => items.sort_by(|a, b| a.key.cmp(&b.key)),
            Some(o) => items.sort_by(|a, b| {
                let va = a.field(&o.field).unwrap_or(crate::object::FieldValue::Null);
                let vb = b.field(&o.field).unwrap_or(crate::object::FieldValue::Null);
                let c = va.cmp_for_sort(&vb).then_with(|| a.key.cmp(&b.key));
                if o.descending { c.reverse() } else { c }
            }),
        }
    }
}

/// The scan profile the scan-level gates read for a stored object: its own, or for a URL (which has
/// no level of its own) the profile of its host object, the hostname or IP address of the same
/// network ([`crate::object::UrlRef::host_object`]). `None` when the URL's host is not in the store:
/// such a URL is never scanned.
///
/// # Errors
/// Store errors.
pub async fn scan_of(objects: &dyn ObjectStore, o: &StoredObject) -> Result<Option<ScanProfile>> {
    match &o.object {
        Object::Url(u) => {
            let (ty, key) = u.host_object();
            Ok(objects
                .get(&o.org, ty, &key)
                .await?
                .map(|h| h.scan.unwrap_or_default()))
        }
        _ => Ok(Some(o.scan.unwrap_or_default())),
    }
}

/// [`scan_of`] by type and key: `None` when the object (or a URL's host) is not in the store.
///
/// # Errors
/// Store errors.
pub async fn scan_of_key(
    objects: &dyn ObjectStore,
    org: &OrgCode,
    ty: ObjectType,
    key: &NaturalKey,
) -> Result<Option<ScanProfile>> {
    match objects.get(org, ty, key).await? {
        Some(o) => scan_of(objects, &o).await,
        None => Ok(None),
    }
}

/// A stored finding's rules' part ([`ObjectStore::finding_rules`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingRules {
    /// The finding's natural key.
    pub key: NaturalKey,
    /// The rules that assert it ([`crate::object::Finding::source_rules`]).
    pub source_rules: Vec<String>,
    /// Whether only rules wrote it ([`crate::object::Finding::rule_only`]).
    pub rule_only: bool,
}

/// Stores objects by natural key, per organization.
///
/// Writes are upserts: writing an object whose key exists merges it into the stored one
/// ([`Object::merge_from`]) and keeps its scan profile and creation data. Objects an object refers to
/// (a record's hostname, a port's address, a finding's type) are created too when missing. A bulk
/// write is atomic: all of it is stored or none.
///
/// Every write that changes a relation or a level (an upsert or replace that creates a DNS record
/// or an object, a delete, [`ObjectStore::set_scan_profile`]) brings the inherited scan levels of
/// its organization up to date before it returns ([`crate::levels::update`]), so the next read and
/// the next scheduler tick see them; what a write returns shows the levels after it.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Upsert `objects` into `org`, attributed to `by` (the writing task, from its token). Returns the
    /// stored form of each input object, in input order.
    async fn upsert(
        &self,
        org: &OrgCode,
        objects: Vec<Object>,
        by: Option<TaskId>,
    ) -> Result<Vec<StoredObject>>;

    /// Replace a stored object's non-key fields with `object`'s: a field `object` lacks is cleared and
    /// a list is replaced, not merged (what an explicit `null` in a PATCH asks for). Its dates,
    /// attribution and scan profile are kept, `last_seen` and `last_seen_by` updated, and the writing
    /// task attributed as by [`ObjectStore::upsert`]; the objects it refers to are upserted as usual.
    /// Returns the stored object.
    ///
    /// # Errors
    /// [`Error::NotFound`] when no object of `org` has `object`'s type and key (nothing is written).
    async fn replace(
        &self,
        org: &OrgCode,
        object: Object,
        by: Option<TaskId>,
    ) -> Result<StoredObject>;

    /// One object by type and key.
    async fn get(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        key: &NaturalKey,
    ) -> Result<Option<StoredObject>>;

    /// A page of objects matching `query`, and the total count of matches.
    ///
    /// Provided: checks the query with [`ObjectQuery::validate`], answers an empty key
    /// restriction (`keys: Some(vec![])`) with an empty page, and otherwise asks
    /// [`ObjectStore::query_valid`]; so no backend answers a query with an unknown field or has to
    /// handle an empty key list.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown filter or ordering field, or a filter without values.
    async fn query(&self, query: &ObjectQuery) -> Result<Page<StoredObject>> {
        query.validate()?;
        if query.keys.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Page {
                count: 0,
                items: Vec::new(),
            });
        }
        self.query_valid(query).await
    }

    /// What a backend implements for [`ObjectStore::query`]: a page of objects matching `query`,
    /// which [`ObjectQuery::validate`] accepted and whose key restriction, if any, is not empty,
    /// and the total count of matches. Callers use [`ObjectStore::query`].
    async fn query_valid(&self, query: &ObjectQuery) -> Result<Page<StoredObject>>;

    /// The keys of the objects [`ObjectStore::query`] would return for `query`, in the same order:
    /// what the scheduler needs of an object set, without loading every object.
    ///
    /// Provided: the same checks as [`ObjectStore::query`], then [`ObjectStore::query_keys_valid`].
    ///
    /// # Errors
    /// As [`ObjectStore::query`].
    async fn query_keys(&self, query: &ObjectQuery) -> Result<Vec<NaturalKey>> {
        query.validate()?;
        if query.keys.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        self.query_keys_valid(query).await
    }

    /// What a backend may implement for [`ObjectStore::query_keys`] (a valid query, as for
    /// [`ObjectStore::query_valid`]); by default the keys of [`ObjectStore::query_valid`]'s page. A
    /// backend overrides it when it can answer without decoding the objects.
    async fn query_keys_valid(&self, query: &ObjectQuery) -> Result<Vec<NaturalKey>> {
        Ok(self
            .query_valid(query)
            .await?
            .items
            .into_iter()
            .map(|o| o.key)
            .collect())
    }

    /// For each of `values`, how many objects of `ty` have `field` equal to it, counting at most
    /// `at_most` (in `values`' order): what a business rule's "has at least n" needs, without
    /// loading every match (a name server's NS records can be thousands).
    ///
    /// Provided: one [`ObjectStore::query_keys`] per value, limited to `at_most`. A backend overrides
    /// it when it can stop reading after `at_most` matches and answer all values at once.
    ///
    /// # Errors
    /// As [`ObjectStore::query`].
    async fn count_matching(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        field: &str,
        values: &[String],
        at_most: usize,
    ) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            let mut q = ObjectQuery::new(org.clone(), ty);
            q.filters.push((field.to_string(), vec![v.clone()]));
            q.limit = at_most.max(1);
            out.push(self.query_keys(&q).await?.len().min(at_most));
        }
        Ok(out)
    }

    /// The rules' part of every finding of `org` whose type is one of `finding_types`: its key, the
    /// rules that assert it and whether only rules wrote it. What a full pass of the business rules
    /// compares with what the rules want, without decoding every finding in full.
    ///
    /// Provided: from [`ObjectStore::query`]. A backend overrides it when it can read these parts
    /// alone.
    ///
    /// # Errors
    /// As [`ObjectStore::query`].
    async fn finding_rules(
        &self,
        org: &OrgCode,
        finding_types: &[String],
    ) -> Result<Vec<FindingRules>> {
        if finding_types.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = ObjectQuery::new(org.clone(), ObjectType::Finding);
        q.filters
            .push(("finding_type".into(), finding_types.to_vec()));
        q.limit = 0;
        Ok(self
            .query(&q)
            .await?
            .items
            .into_iter()
            .filter_map(|s| match s.object {
                Object::Finding(f) => Some(FindingRules {
                    key: s.key,
                    source_rules: f.source_rules,
                    rule_only: f.rule_only,
                }),
                _ => None,
            })
            .collect())
    }

    /// Delete objects by key; returns how many existed.
    async fn delete(&self, org: &OrgCode, ty: ObjectType, keys: &[NaturalKey]) -> Result<u64>;

    /// Set the scan profile of a network, hostname or address: a declared level (`declared: true`),
    /// kept as set, or `declared: false` to make the level inherited again (its `level` is then
    /// ignored and computed from the object's sources). The inherited levels that depend on it
    /// follow.
    ///
    /// Provided: checks that `ty` has a scan level, then asks
    /// [`ObjectStore::set_scan_profile_valid`].
    ///
    /// # Errors
    /// [`Error::Invalid`] at `scan_level` for a type without scan levels; [`Error::NotFound`] when
    /// there is no such object.
    async fn set_scan_profile(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        key: &NaturalKey,
        profile: ScanProfile,
    ) -> Result<StoredObject> {
        if !ty.has_scan_level() {
            return Err(Error::invalid(
                "scan_level",
                format!("{ty} objects have no scan level"),
            ));
        }
        self.set_scan_profile_valid(org, ty, key, profile).await
    }

    /// What a backend implements for [`ObjectStore::set_scan_profile`]: set the scan profile of an
    /// object whose type has scan levels ([`ObjectType::has_scan_level`]); [`Error::NotFound`] when
    /// there is no such object. Callers use [`ObjectStore::set_scan_profile`].
    async fn set_scan_profile_valid(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        key: &NaturalKey,
        profile: ScanProfile,
    ) -> Result<StoredObject>;

    /// The tasks that wrote an object (created it or saw it again), oldest first.
    async fn tasks_of(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        key: &NaturalKey,
    ) -> Result<Vec<TaskId>>;

    /// The objects a task wrote.
    async fn objects_of(&self, org: &OrgCode, task: TaskId) -> Result<Vec<crate::task::ObjectRef>>;

    /// Recompute every inherited scan level of `org` (of every organization when `None`) from the
    /// declared levels and the relations ([`crate::levels::recompute`]), and clear the store's
    /// "levels need recomputation" state. Returns how many objects' inherited level or source
    /// changed: 0 when the incremental updates every write makes were complete.
    async fn recompute_levels(&self, org: Option<&OrgCode>) -> Result<u64>;

    /// Whether the inherited levels may be out of date and need [`ObjectStore::recompute_levels`]:
    /// a write was interrupted between storing a relation and updating the levels, or the store
    /// was migrated from a format without levels. A deployment asks at start.
    async fn levels_need_recompute(&self) -> Result<bool>;

    /// A number that is different after any write that changed `org`'s objects or scan levels
    /// (an upsert, a replace, a delete, a scan profile set, a recomputation), and the same when
    /// nothing of `org` was written in between: equal marks at two moments mean that every query
    /// over `org` answers the same. A backend may change it more often (on any write to any
    /// organization, say), never less. The scheduler skips enumerating an object set whose
    /// organization has the mark it had when every target of the set was last claimed.
    ///
    /// `None`, the default, when the backend cannot tell, for example because other processes
    /// write to the same database: callers then assume that anything may have changed.
    ///
    /// ```
    /// use kat_core::memory::MemoryObjectStore;
    /// use kat_core::object::{Object, ObjectType};
    /// use kat_core::org::OrgCode;
    /// use kat_core::store::ObjectStore;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = MemoryObjectStore::default();
    /// let org = OrgCode::new("acme").unwrap();
    /// let before = store.change_mark(&org);
    /// let host = Object::from_json(ObjectType::Hostname, &serde_json::json!({"name": "example.com"})).unwrap();
    /// store.upsert(&org, vec![host], None).await.unwrap();
    /// assert_ne!(store.change_mark(&org), before);
    /// # });
    /// ```
    fn change_mark(&self, org: &OrgCode) -> Option<u64> {
        let _ = org;
        None
    }
}

/// What [`TaskQueue::claim_targets_oldest`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claimed {
    /// The targets claimed now (not claimed since the window's start), in input order.
    pub fresh: Vec<NaturalKey>,
    /// The oldest claim among all the targets, as they are after the call (the fresh ones' is
    /// `now`); `None` when there were no targets or the backend cannot tell.
    pub oldest: Option<Timestamp>,
}

impl Claimed {
    /// A result from its parts (for backends outside this crate).
    #[must_use]
    pub fn new(fresh: Vec<NaturalKey>, oldest: Option<Timestamp>) -> Claimed {
        Claimed { fresh, oldest }
    }
}

/// A file's id: a number, as the original's `{file/<id>}` references need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FileId(pub u64);

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for FileId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        s.parse::<u64>()
            .map(FileId)
            .map_err(|_| Error::invalid("id", format!("not a file id (a whole number): {s:?}")))
    }
}

/// What a new file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    /// Its organization.
    pub org: OrgCode,
    /// Its type (usually the producing plugin's id, or `error`).
    pub file_type: String,
    /// Its name (`stdout`).
    pub name: String,
    /// The task that produced it, from the uploader's token.
    pub task: Option<TaskId>,
    /// The scan level the file carries: the level of the objects its chain started from
    /// ([`crate::chain`]); `None` lets no consumer run on it.
    pub scan_level: Option<ScanLevel>,
    /// Where [`NewFile::scan_level`] came from.
    pub level_from: LevelSource,
}

/// Where a file's carried scan level ([`FileMeta::scan_level`]) came from. See [`crate::chain`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelSource {
    /// Not recorded: the file was stored before files carried a level. The gate then derives it from
    /// the producing task ([`crate::chain::effective_level`]); a file without one carries none.
    #[default]
    Unrecorded,
    /// The lowest level of the producing task's input objects when the file was stored.
    Objects,
    /// The lowest level carried by the producing task's input files (the chain's earlier hops).
    Files,
    /// The producing task had no inputs (a standalone plugin): level 0.
    NoInputs,
    /// Stated by the operator who uploaded the file (the `scan_level` of `POST /file/`).
    Operator,
    /// An engine-internal file (mode 4's stdin); it never chains.
    Engine,
}

impl LevelSource {
    /// The name in the API's JSON (`scan_level_from`).
    ///
    /// ```
    /// use kat_core::store::LevelSource;
    /// assert_eq!(LevelSource::NoInputs.as_str(), "no_inputs");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            LevelSource::Unrecorded => "unrecorded",
            LevelSource::Objects => "objects",
            LevelSource::Files => "files",
            LevelSource::NoInputs => "no_inputs",
            LevelSource::Operator => "operator",
            LevelSource::Engine => "engine",
        }
    }
}

impl NewFile {
    /// Check the type (as [`crate::plugin::check_file_type`]) and the name (1 to 255 bytes, no `/`
    /// or NUL, not `.` or `..`). [`FileStore::put`] calls it before any backend sees the file.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field (`type` or `name`).
    pub fn validate(&self) -> Result<()> {
        check_file_type(&self.file_type).map_err(|m| Error::invalid("type", m))?;
        if self.name.is_empty()
            || self.name.len() > 255
            || self.name.contains(['/', '\0'])
            || self.name == "."
            || self.name == ".."
        {
            return Err(Error::invalid(
                "name",
                "a file name is 1 to 255 characters without '/' (and not \".\" or \"..\")",
            ));
        }
        Ok(())
    }
}

/// A stored file's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Its id.
    pub id: FileId,
    /// Its organization.
    pub org: OrgCode,
    /// Its type.
    pub file_type: String,
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The sha256 of its contents, hex.
    pub sha256: String,
    /// The task that produced it.
    pub task: Option<TaskId>,
    /// When it was stored.
    pub created_at: Timestamp,
    /// The scan level it carries: the level of the objects its chain started from, across every hop
    /// ([`crate::chain`]); `None` lets no consumer run on it. Absent in records written before files
    /// carried a level (then [`FileMeta::level_from`] is [`LevelSource::Unrecorded`]).
    #[serde(default)]
    pub scan_level: Option<ScanLevel>,
    /// Where [`FileMeta::scan_level`] came from.
    #[serde(default)]
    pub level_from: LevelSource,
}

/// A query over files.
#[derive(Debug, Clone, PartialEq)]
pub struct FileQuery {
    /// The organization.
    pub org: OrgCode,
    /// Only this type.
    pub file_type: Option<String>,
    /// Only files produced by this task.
    pub task: Option<TaskId>,
    /// Only these ids (a token's `pks`).
    pub ids: Option<Vec<FileId>>,
    /// Case-insensitive substring of the type or name.
    pub search: Option<String>,
    /// `id`, `created_at`, `type`, `name`, `size`, optionally with `-`; by id when `None`.
    pub ordering: Option<Ordering>,
    /// Page size.
    pub limit: usize,
    /// Items to skip.
    pub offset: usize,
}

impl FileQuery {
    /// All files of an organization, first page.
    pub fn new(org: OrgCode) -> Self {
        FileQuery {
            org,
            file_type: None,
            task: None,
            ids: None,
            search: None,
            ordering: None,
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }

    /// Check the ordering field.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown ordering field.
    pub fn validate(&self) -> Result<()> {
        if let Some(o) = &self.ordering
            && !["id", "created_at", "type", "name", "size"].contains(&o.field.as_str())
        {
            return Err(Error::invalid(
                "ordering",
                format!(
                    "cannot order files by {:?}; use id, created_at, type, name or size",
                    o.field
                ),
            ));
        }
        Ok(())
    }

    /// Whether a file matches (not paging).
    pub fn matches(&self, f: &FileMeta) -> bool {
        f.org == self.org
            && self.file_type.as_ref().is_none_or(|t| *t == f.file_type)
            && self.task.is_none_or(|t| f.task == Some(t))
            && self.ids.as_ref().is_none_or(|ids| ids.contains(&f.id))
            && self.search.as_ref().is_none_or(|s| {
                let s = s.to_lowercase();
                f.file_type.to_lowercase().contains(&s) || f.name.to_lowercase().contains(&s)
            })
    }

    /// Sort in this query's order.
    pub fn sort(&self, items: &mut [FileMeta]) {
        let (field, desc) = self
            .ordering
            .as_ref()
            .map_or(("id", false), |o| (o.field.as_str(), o.descending));
        items.sort_by(|a, b| {
            let c = match field {
                "created_at" => a.created_at.cmp(&b.created_at),
                "type" => a.file_type.cmp(&b.file_type),
                "name" => a.name.cmp(&b.name),
                "size" => a.size.cmp(&b.size),
                _ => std::cmp::Ordering::Equal,
            }
            .then(a.id.cmp(&b.id));
            if desc { c.reverse() } else { c }
        });
    }
}

/// Stores file contents and their metadata.
#[async_trait]
pub trait FileStore: Send + Sync + fmt::Debug {
    /// Store a file from a stream (never collected whole in memory by backends that stream), and
    /// return its metadata. A stream error stores nothing.
    ///
    /// Provided: checks `new` with [`NewFile::validate`], then asks [`FileStore::put_valid`].
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad type or name (nothing is read from `body`).
    async fn put(&self, new: NewFile, body: ByteStream) -> Result<FileMeta> {
        new.validate()?;
        self.put_valid(new, body).await
    }

    /// What a backend implements for [`FileStore::put`]: store a file that [`NewFile::validate`]
    /// accepted. Callers use [`FileStore::put`].
    async fn put_valid(&self, new: NewFile, body: ByteStream) -> Result<FileMeta>;

    /// A file's metadata.
    async fn meta(&self, id: FileId) -> Result<Option<FileMeta>>;

    /// A file's contents as a stream; [`Error::NotFound`] when there is no such file.
    async fn open(&self, id: FileId) -> Result<ByteStream>;

    /// A page of files matching `query`.
    ///
    /// Provided: checks the query with [`FileQuery::validate`], answers an empty id restriction
    /// (`ids: Some(vec![])`) with an empty page, and otherwise asks [`FileStore::query_valid`].
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown ordering field.
    async fn query(&self, query: &FileQuery) -> Result<Page<FileMeta>> {
        query.validate()?;
        if query.ids.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Page {
                count: 0,
                items: Vec::new(),
            });
        }
        self.query_valid(query).await
    }

    /// What a backend implements for [`FileStore::query`]: a page of files matching `query`, which
    /// [`FileQuery::validate`] accepted and whose id restriction, if any, is not empty. Callers use
    /// [`FileStore::query`].
    async fn query_valid(&self, query: &FileQuery) -> Result<Page<FileMeta>>;

    /// Delete a file; returns whether it existed.
    async fn delete(&self, id: FileId) -> Result<bool>;
}

/// A query over tasks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskQuery {
    /// Only this organization (all when `None`).
    pub org: Option<OrgCode>,
    /// Only these states.
    pub states: Option<Vec<TaskState>>,
    /// Only this plugin.
    pub plugin_id: Option<String>,
    /// Only tasks of this schedule.
    pub schedule: Option<ScheduleId>,
    /// Page size (all when 0).
    pub limit: usize,
    /// Items to skip.
    pub offset: usize,
}

impl TaskQuery {
    /// Whether a task matches (not paging).
    pub fn matches(&self, t: &Task) -> bool {
        self.org.as_ref().is_none_or(|o| *o == t.org)
            && self.states.as_ref().is_none_or(|s| s.contains(&t.state))
            && self.plugin_id.as_ref().is_none_or(|p| *p == t.plugin_id)
            && self.schedule.is_none_or(|s| t.schedule == Some(s))
    }
}

/// Tasks and the schedules' dedup claims: the queue the engine's workers take tasks from.
#[async_trait]
pub trait TaskQueue: Send + Sync + fmt::Debug {
    /// Store new tasks, all or none. An id that exists is a [`Error::Conflict`].
    async fn create_tasks(&self, tasks: Vec<Task>) -> Result<()>;

    /// One task.
    async fn get_task(&self, id: TaskId) -> Result<Option<Task>>;

    /// Apply `patch` if the task is in one of the `from` states (atomically); [`Error::Conflict`]
    /// (made by [`wrong_state`]) otherwise, [`Error::NotFound`] when there is no such task.
    async fn transition_task(
        &self,
        id: TaskId,
        from: &[TaskState],
        patch: TaskPatch,
    ) -> Result<Task>;

    /// Tasks matching `query`, newest first.
    async fn list_tasks(&self, query: &TaskQuery) -> Result<Page<Task>>;

    /// Delete every task of an organization (when the organization is deleted); returns how many.
    async fn delete_org_tasks(&self, org: &OrgCode) -> Result<u64>;

    /// Dedup for schedules: of `targets`, return those not claimed for `schedule` at or after `since`,
    /// and claim them at `now`, atomically.
    async fn claim_targets(
        &self,
        schedule: ScheduleId,
        since: Timestamp,
        now: Timestamp,
        targets: Vec<NaturalKey>,
    ) -> Result<Vec<NaturalKey>>;

    /// [`TaskQueue::claim_targets`], and also the oldest claim among all of `targets` after it
    /// ([`Claimed::oldest`]): until a window starts after it, none of them can be claimed again.
    ///
    /// Provided: [`TaskQueue::claim_targets`], with `oldest` known only when every target was
    /// claimed now. A backend that keeps its claims' times overrides it to tell it always.
    ///
    /// # Errors
    /// As [`TaskQueue::claim_targets`].
    async fn claim_targets_oldest(
        &self,
        schedule: ScheduleId,
        since: Timestamp,
        now: Timestamp,
        targets: Vec<NaturalKey>,
    ) -> Result<Claimed> {
        let n = targets.len();
        let fresh = self.claim_targets(schedule, since, now, targets).await?;
        let oldest = (fresh.len() == n && n > 0).then_some(now);
        Ok(Claimed { fresh, oldest })
    }

    /// Claim up to `limit` queued tasks for `worker`, oldest first (by `created_at`, then id),
    /// atomically: each becomes running, started at `now`, with one more attempt and a lease
    /// `{worker, until}` ([`Task::claim`]). Two claimers, also two processes on one database, never
    /// get the same task. Returns the claimed tasks as stored; none when nothing is queued or
    /// `limit` is 0.
    async fn claim_tasks(
        &self,
        worker: &str,
        limit: usize,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<Task>>;

    /// Extend `worker`'s lease on a running task to `until`.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the task is not running, is leased to another worker (or to none),
    /// or the lease ended before `now` ([`Task::check_lease`]): the worker has lost the task (it was
    /// cancelled, or recovered by another worker) and must stop it without writing its end.
    /// [`Error::NotFound`] when there is no such task.
    async fn renew_lease(
        &self,
        id: TaskId,
        worker: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Task>;

    /// Apply `patch` to a running task while `worker` holds an unexpired lease on it, atomically
    /// (the token of the attempt, refused calls, the task's end); a patch to another state than
    /// running clears the lease.
    ///
    /// # Errors
    /// [`Error::Conflict`] as for [`TaskQueue::renew_lease`]; [`Error::NotFound`].
    async fn finish_leased(
        &self,
        id: TaskId,
        worker: &str,
        now: Timestamp,
        patch: TaskPatch,
    ) -> Result<Task>;

    /// Recover up to `limit` running tasks whose worker is gone ([`Task::lease_loss`]): whose
    /// lease ended before `now`, that have no lease (left by a version before leases), or whose
    /// lease belongs to `owner` (a worker restarting: what it held died with it). Tasks of plugins
    /// in `requeue` (the idempotent ones) are queued again, the others failed at `now`; the reason
    /// says why, the lease is cleared ([`Task::recover`]), and the token of the interrupted attempt
    /// ([`Task::token`]) is revoked in the same atomic write (the [`RevocationList`] is the same
    /// store). Each task is recovered exactly once, however many callers race. Returns the
    /// recovered tasks as stored.
    async fn recover_expired(
        &self,
        now: Timestamp,
        requeue: &[String],
        owner: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Task>>;
}

/// The [`Error::Conflict`] of [`TaskQueue::transition_task`] for a task in state `state`, not in one
/// of `from`. Shared by backends, so that the message is the same everywhere.
///
/// ```
/// use kat_core::store::wrong_state;
/// use kat_core::task::{TaskId, TaskState};
/// let e = wrong_state(TaskId::new(), TaskState::Completed, &[TaskState::Queued, TaskState::Running]);
/// assert!(e.to_string().ends_with("is completed, not queued or running"));
/// ```
pub fn wrong_state(id: TaskId, state: TaskState, from: &[TaskState]) -> Error {
    let from = from
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" or ");
    Error::Conflict(format!("task {id} is {state}, not {from}"))
}

/// Schedules and the object sets they run over.
#[async_trait]
pub trait ScheduleStore: Send + Sync + fmt::Debug {
    /// Create or replace a schedule, and return it as stored. A schedule whose
    /// [`Schedule::number`] is 0 keeps the number it has in the store, or gets the next one (1, 2, ...,
    /// unique among schedules and never reused, also across restarts); a schedule with a number keeps it.
    async fn put_schedule(&self, schedule: Schedule) -> Result<Schedule>;
    /// One schedule.
    async fn get_schedule(&self, id: ScheduleId) -> Result<Option<Schedule>>;
    /// Delete a schedule; returns whether it existed.
    async fn delete_schedule(&self, id: ScheduleId) -> Result<bool>;
    /// Schedules of an organization (global ones have `org: None`); all when `org` is `None`.
    async fn list_schedules(&self, org: Option<&OrgCode>) -> Result<Vec<Schedule>>;
    /// Enabled schedules due at `now` (`next_run_at <= now`), soonest first, at most `limit`; the cost
    /// is proportional to what is due, not to the number of schedules.
    async fn due_schedules(&self, now: Timestamp, limit: usize) -> Result<Vec<Schedule>>;

    /// Create or replace an object set, and return it as stored; its [`ObjectSet::number`] is kept or
    /// assigned as for [`ScheduleStore::put_schedule`] (object sets are numbered on their own).
    async fn put_object_set(&self, set: ObjectSet) -> Result<ObjectSet>;
    /// One object set.
    async fn get_object_set(&self, id: ObjectSetId) -> Result<Option<ObjectSet>>;
    /// Delete an object set; returns whether it existed.
    async fn delete_object_set(&self, id: ObjectSetId) -> Result<bool>;
    /// Object sets of an organization; all when `None`.
    async fn list_object_sets(&self, org: Option<&OrgCode>) -> Result<Vec<ObjectSet>>;

    /// Record that objects of `org` were just written (through any replica's API), so that the
    /// schedulers of every process sharing this store run their catch-up pass for it (see
    /// [`ScheduleStore::written_marks`]). The default does nothing: a store that only one process
    /// opens (memory, sled) needs no record beyond the engine's own.
    async fn mark_written(&self, org: &OrgCode) -> Result<()> {
        let _ = org;
        Ok(())
    }

    /// Every organization's write mark: a number that changes whenever
    /// [`ScheduleStore::mark_written`] is called for it, by any process. A scheduler compares them
    /// with the marks it saw last. `None` (the default): this store is not shared between processes.
    async fn written_marks(&self) -> Result<Option<Vec<(OrgCode, i64)>>> {
        Ok(None)
    }
}

/// Organizations.
#[async_trait]
pub trait OrgStore: Send + Sync + fmt::Debug {
    /// Create or replace an organization.
    async fn put_organization(&self, org: Organization) -> Result<()>;
    /// One organization.
    async fn get_organization(&self, code: &OrgCode) -> Result<Option<Organization>>;
    /// All organizations, by code.
    async fn list_organizations(&self) -> Result<Vec<Organization>>;
    /// Delete an organization; returns whether it existed.
    async fn delete_organization(&self, code: &OrgCode) -> Result<bool>;
}

/// The plugin catalogue: the stored plugin records with their enabled flags.
#[async_trait]
pub trait PluginCatalog: Send + Sync + fmt::Debug {
    /// Write plugin records (the output of [`crate::plugin::sync`], or an enable/disable).
    async fn put_plugins(&self, records: Vec<PluginRecord>) -> Result<()>;
    /// One plugin record.
    async fn get_plugin(&self, plugin_id: &str) -> Result<Option<PluginRecord>>;
    /// All plugin records, by id.
    async fn list_plugins(&self) -> Result<Vec<PluginRecord>>;

    /// Set (`Some`) or clear (`None`) an organization's override of a plugin's enabled flag: what
    /// `POST /plugins/<id>/enable/` and `/disable/` write. The record's own `enabled` is the
    /// catalogue's default for organizations without an override.
    async fn set_plugin_override(
        &self,
        org: &OrgCode,
        plugin_id: &str,
        enabled: Option<bool>,
    ) -> Result<()>;

    /// An organization's overrides, by plugin id.
    async fn plugin_overrides(&self, org: &OrgCode) -> Result<BTreeMap<String, bool>>;

    /// Forget every override of an organization (when the organization is deleted).
    ///
    /// Provided: clears each of [`PluginCatalog::plugin_overrides`].
    async fn clear_plugin_overrides(&self, org: &OrgCode) -> Result<()> {
        for id in self.plugin_overrides(org).await?.into_keys() {
            self.set_plugin_override(org, &id, None).await?;
        }
        Ok(())
    }

    /// A plugin record and whether it runs for `org` ([`PluginRecord::enabled_with`] its override);
    /// `None` when there is no such plugin.
    ///
    /// Provided: [`PluginCatalog::get_plugin`] and [`PluginCatalog::plugin_overrides`].
    async fn plugin_for(
        &self,
        org: &OrgCode,
        plugin_id: &str,
    ) -> Result<Option<(PluginRecord, bool)>> {
        let Some(rec) = self.get_plugin(plugin_id).await? else {
            return Ok(None);
        };
        let ov = self.plugin_overrides(org).await?.get(plugin_id).copied();
        let enabled = rec.enabled_with(ov);
        Ok(Some((rec, enabled)))
    }
}

/// The token denylist: revoked token ids (`jti`) until their tokens expire.
#[async_trait]
pub trait RevocationList: Send + Sync + fmt::Debug {
    /// Revoke a token id until `exp` (unix seconds).
    async fn revoke_token(&self, jti: &str, exp: i64) -> Result<()>;
    /// Whether a token id is revoked.
    async fn is_token_revoked(&self, jti: &str) -> Result<bool>;
    /// Forget revocations whose token expired before `now` (unix seconds); returns how many.
    async fn purge_revoked(&self, now: i64) -> Result<u64>;
}

/// The replicas' heartbeats ([`ReplicaInfo`]): which processes share the database, what they
/// run, and when each was last heard of.
#[async_trait]
pub trait ReplicaRegistry: Send + Sync + fmt::Debug {
    /// Create or replace the replica's record (by [`ReplicaInfo::id`]).
    async fn heartbeat(&self, info: ReplicaInfo) -> Result<()>;
    /// Every replica's last heartbeat, by id.
    async fn list_replicas(&self) -> Result<Vec<ReplicaInfo>>;
    /// Forget replicas last seen before `before`; returns how many.
    async fn purge_replicas(&self, before: Timestamp) -> Result<u64>;
}

/// Everything else the engine keeps: tasks ([`TaskQueue`]), schedules and object sets
/// ([`ScheduleStore`]), organizations ([`OrgStore`]), the plugin catalogue ([`PluginCatalog`]),
/// the token denylist ([`RevocationList`]), business rules' state
/// ([`RuleCatalog`](crate::rules::RuleCatalog): enablement per organization, processed objects)
/// and the replicas' heartbeats ([`ReplicaRegistry`]).
///
/// A backend implements the seven traits (and can be tested against each one's conformance suite on
/// its own); this one follows from them. The engine and kat-http take an `Arc<dyn TaskStore>`; a
/// part that needs one concern takes its trait, and an `Arc<dyn TaskStore>` converts into it:
///
/// ```
/// use std::sync::Arc;
/// use kat_core::memory::MemoryTaskStore;
/// use kat_core::store::{RevocationList, TaskStore};
/// let store: Arc<dyn TaskStore> = Arc::new(MemoryTaskStore::default());
/// let denylist: Arc<dyn RevocationList> = store;
/// # let _ = denylist;
/// ```
pub trait TaskStore:
    TaskQueue
    + ScheduleStore
    + OrgStore
    + PluginCatalog
    + RevocationList
    + crate::rules::RuleCatalog
    + ReplicaRegistry
{
}

impl<T> TaskStore for T where
    T: TaskQueue
        + ScheduleStore
        + OrgStore
        + PluginCatalog
        + RevocationList
        + crate::rules::RuleCatalog
        + ReplicaRegistry
        + ?Sized
{
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `json` writes exactly what `to_json` with the extra entries inserted serializes to, for every
    /// object type, with and without levels, their source, the writing tasks, and extra entries
    /// that add a field or replace one.
    #[test]
    fn json_is_to_json_written_directly() {
        let org = OrgCode::new("acme").expect("org");
        let task = TaskId::new();
        let from = ObjectRef {
            object_type: ObjectType::IpAddress,
            key: "internet|10.0.0.1".parse().expect("key"),
        };
        let extras: [Vec<(&str, Value)>; 4] = [
            vec![],
            vec![("dns_records", serde_json::json!([{"id": "r", "ttl": 60}]))],
            vec![("id", Value::Null), ("name", serde_json::json!(1.5))],
            vec![
                ("zz", Value::Bool(true)),
                ("created_at", serde_json::json!("x\"y")),
            ],
        ];
        let mut checked = 0;
        for object in crate::object::tests::sample_objects() {
            let key = object.natural_key();
            for variant in 0..4 {
                let mut s = crate::memory::merge_stored(
                    None,
                    &org,
                    key.clone(),
                    object.clone(),
                    (variant % 2 == 1).then_some(task),
                    Timestamp::from_millis(1_700_000_000_123 + variant),
                );
                // Every stored field its own value: a swapped pair would show.
                s.last_seen = Timestamp::from_millis(1_800_000_000_456 + variant);
                s.last_seen_by = (variant >= 2).then(TaskId::new);
                if let Some(p) = &mut s.scan {
                    p.level = (variant > 1).then(|| ScanLevel::new(2).expect("level"));
                    p.declared = variant == 2;
                    s.inherited_from = (variant == 3).then(|| from.clone());
                }
                for extra in &extras {
                    let mut expected = s.to_json();
                    for (name, value) in extra {
                        expected.insert((*name).to_string(), value.clone());
                    }
                    let expected = serde_json::to_string(&Value::Object(expected)).expect("json");
                    let direct = serde_json::to_string(&s.json(extra)).expect("json");
                    assert_eq!(direct, expected, "{} {variant}", s.object_type());
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, (ObjectType::ALL.len() + 1) * 4 * 4);
    }

    /// A backend that must never be reached: the provided methods refuse invalid input first.
    #[derive(Debug)]
    struct Unreachable;

    #[async_trait]
    impl ObjectStore for Unreachable {
        async fn upsert(
            &self,
            _: &OrgCode,
            _: Vec<Object>,
            _: Option<TaskId>,
        ) -> Result<Vec<StoredObject>> {
            unreachable!()
        }
        async fn replace(&self, _: &OrgCode, _: Object, _: Option<TaskId>) -> Result<StoredObject> {
            unreachable!()
        }
        async fn get(
            &self,
            _: &OrgCode,
            _: ObjectType,
            _: &NaturalKey,
        ) -> Result<Option<StoredObject>> {
            unreachable!()
        }
        async fn query_valid(&self, _: &ObjectQuery) -> Result<Page<StoredObject>> {
            panic!("an invalid object query reached the backend")
        }
        async fn delete(&self, _: &OrgCode, _: ObjectType, _: &[NaturalKey]) -> Result<u64> {
            unreachable!()
        }
        async fn set_scan_profile_valid(
            &self,
            _: &OrgCode,
            _: ObjectType,
            _: &NaturalKey,
            _: ScanProfile,
        ) -> Result<StoredObject> {
            panic!("a scan profile for a type without scan levels reached the backend")
        }
        async fn tasks_of(
            &self,
            _: &OrgCode,
            _: ObjectType,
            _: &NaturalKey,
        ) -> Result<Vec<TaskId>> {
            unreachable!()
        }
        async fn objects_of(&self, _: &OrgCode, _: TaskId) -> Result<Vec<crate::task::ObjectRef>> {
            unreachable!()
        }
        async fn recompute_levels(&self, _: Option<&OrgCode>) -> Result<u64> {
            unreachable!()
        }
        async fn levels_need_recompute(&self) -> Result<bool> {
            unreachable!()
        }
    }

    #[async_trait]
    impl FileStore for Unreachable {
        async fn put_valid(&self, _: NewFile, _: ByteStream) -> Result<FileMeta> {
            panic!("an invalid new file reached the backend")
        }
        async fn meta(&self, _: FileId) -> Result<Option<FileMeta>> {
            unreachable!()
        }
        async fn open(&self, _: FileId) -> Result<ByteStream> {
            unreachable!()
        }
        async fn query_valid(&self, _: &FileQuery) -> Result<Page<FileMeta>> {
            panic!("an invalid file query reached the backend")
        }
        async fn delete(&self, _: FileId) -> Result<bool> {
            unreachable!()
        }
    }

    fn invalid<T: fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(Error::Invalid { at, .. }) => at,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn provided_methods_check_before_the_backend() {
        let org = OrgCode::new("acme").unwrap();
        let objects: &dyn ObjectStore = &Unreachable;
        let q = ObjectQuery::new(org.clone(), ObjectType::Hostname).filter("colour", &["red"]);
        assert_eq!(invalid(objects.query(&q).await), "colour");
        let mut q = ObjectQuery::new(org.clone(), ObjectType::Hostname);
        q.ordering = Some(Ordering::parse("-colour"));
        assert_eq!(invalid(objects.query(&q).await), "ordering");
        let mut q = ObjectQuery::new(org.clone(), ObjectType::Hostname);
        q.keys = Some(Vec::new());
        assert_eq!(
            objects.query(&q).await.unwrap().count,
            0,
            "no keys, no matches"
        );
        let key = NaturalKey::from_parts(["CVE-1"]);
        let e = objects
            .set_scan_profile(&org, ObjectType::FindingType, &key, ScanProfile::default())
            .await;
        assert_eq!(invalid(e), "scan_level");

        let files: &dyn FileStore = &Unreachable;
        let mut q = FileQuery::new(org.clone());
        q.ordering = Some(Ordering::parse("colour"));
        assert_eq!(invalid(files.query(&q).await), "ordering");
        let mut q = FileQuery::new(org.clone());
        q.ids = Some(Vec::new());
        assert_eq!(
            files.query(&q).await.unwrap().count,
            0,
            "no ids, no matches"
        );
        let new = NewFile {
            org,
            file_type: "dns".into(),
            name: "a/b".into(),
            task: None,
            scan_level: None,
            level_from: LevelSource::Operator,
        };
        let body: ByteStream = Box::pin(futures::stream::empty());
        assert_eq!(invalid(files.put(new, body).await), "name");
    }
}
